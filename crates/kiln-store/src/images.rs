//! Imported OS images: one fast format (raw + zstd) with its size and digest.

use rusqlite::params;

use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    pub name: String,
    /// File name under the images directory.
    pub file: String,
    /// Size of the raw (uncompressed) image: agents check the disk against it.
    pub raw_size: u64,
    /// sha256 of the served (compressed) file.
    pub sha256: String,
    pub created_ms: u64,
}

impl Store {
    pub fn put_image(&self, img: &ImageRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO images (name, file, raw_size, sha256, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![img.name, img.file, img.raw_size as i64, img.sha256, img.created_ms as i64],
        )?;
        Ok(())
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT name, file, raw_size, sha256, created_ms FROM images ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ImageRecord {
                name: r.get(0)?,
                file: r.get(1)?,
                raw_size: r.get::<_, i64>(2)? as u64,
                sha256: r.get(3)?,
                created_ms: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
