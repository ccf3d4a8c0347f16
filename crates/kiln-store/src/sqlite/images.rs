//! Imported OS images: one fast format (raw + zstd) with its size and digest.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::{ImageRecord, StoreError};

const COLUMNS: &str = "name, file, raw_size, sha256, created_ms, source_format";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        name: r.get(0)?,
        file: r.get(1)?,
        raw_size: r.get::<_, i64>(2)? as u64,
        sha256: r.get(3)?,
        created_ms: r.get::<_, i64>(4)? as u64,
        source_format: r.get(5)?,
    })
}

impl crate::ImageStore for SqliteStore {
    /// Records `img`, replacing any image of the same name.
    fn put_image(&self, img: &ImageRecord) -> Result<(), StoreError> {
        self.write_image(img, "INSERT OR REPLACE")?;
        Ok(())
    }

    /// Records `img` unless an image of that name exists; `false` then.
    fn add_image(&self, img: &ImageRecord) -> Result<bool, StoreError> {
        Ok(self.write_image(img, "INSERT OR IGNORE")? == 1)
    }

    /// Forgets an image; the record it was, to remove its file (when no other image names
    /// the same file: [`Store::images`] tells).
    fn delete_image(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        let mut conn = self.conn();
        let tx = super::write_tx(&mut conn)?;
        let img = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM images WHERE name = ?1"),
                [name],
                from_row,
            )
            .optional()?;
        tx.execute("DELETE FROM images WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(img)
    }

    fn image(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM images WHERE name = ?1"))?;
        Ok(stmt.query_row([name], from_row).optional()?)
    }

    fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM images ORDER BY name"))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl SqliteStore {
    fn write_image(&self, img: &ImageRecord, verb: &str) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            &format!("{verb} INTO images ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![
                img.name,
                img.file,
                img.raw_size as i64,
                img.sha256,
                img.created_ms as i64,
                img.source_format
            ],
        )?)
    }
}
