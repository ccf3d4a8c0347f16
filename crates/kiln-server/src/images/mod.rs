//! OS images: every import is converted once, on the server, to raw + zstd with its size and
//! sha256 recorded, so agents always stream one fast format. The format is read from the
//! content (magic bytes), never from a name. Sources: an http(s) URL the server downloads,
//! or a file uploaded to the admin API; never a path on the server.

mod convert;
mod download;
pub mod format;
mod imports;

use std::fs::File;
use std::path::Path;

use kiln_api::Image;
use kiln_api::images::{check_name, parse_sha256};
use kiln_store::{ImageRecord, Store, StoreError};

use crate::options::images_dir;
use convert::{HashingWriter, convert, io_err};
use format::hex;
pub use imports::{ImportTask, Imports};

/// Why an image was not imported or deleted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The request or the image's content is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The source's bytes are not the ones the caller named.
    #[error("{0}")]
    Sha256Mismatch(String),
    /// An image of that name exists and replacing it was not asked for.
    #[error("{0}")]
    Exists(String),
    /// An unfinished workflow streams the image's file.
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    NotFound(String),
    /// The URL could not be downloaded (its status, the connection).
    #[error("{0}")]
    Download(String),
    /// The server's own files.
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An image as the API shows it.
pub fn image_resource(rec: &ImageRecord) -> Image {
    Image {
        name: rec.name.clone(),
        file: rec.file.clone(),
        url_path: format!("/images/{}", rec.file),
        raw_size: rec.raw_size,
        sha256: rec.sha256.clone(),
        created: kiln_api::time::rfc3339_ms(rec.created_ms),
        source_format: rec.source_format.clone(),
    }
}

/// How one import goes, checked before any byte is read.
#[derive(Debug, Clone)]
pub struct ImportSpec {
    pub name: String,
    /// Replace an image of the same name.
    pub replace: bool,
    pub level: i32,
    /// What to call the source in messages: the URL, or the uploaded file's name.
    pub label: String,
    /// Expected sha256 of the source's bytes, lower-case hex.
    pub sha256: Option<String>,
}

/// zstd's levels.
const LEVELS: std::ops::RangeInclusive<i32> = 1..=22;

impl ImportSpec {
    /// Checks the name, the level and the digest's form.
    pub fn new(
        name: &str,
        replace: bool,
        level: i32,
        label: &str,
        sha256: Option<&str>,
    ) -> Result<ImportSpec, ImageError> {
        check_name(name).map_err(ImageError::Invalid)?;
        if !LEVELS.contains(&level) {
            return Err(ImageError::Invalid(format!(
                "zstd level {level}: expected {} to {}",
                LEVELS.start(),
                LEVELS.end()
            )));
        }
        let sha256 = sha256
            .map(parse_sha256)
            .transpose()
            .map_err(ImageError::Invalid)?;
        Ok(ImportSpec {
            name: name.into(),
            replace,
            level,
            label: label.into(),
            sha256,
        })
    }

    /// Refuses to go on (before a long download or upload) if the name is taken and
    /// replacing was not asked for.
    pub fn check_free(&self, store: &dyn Store) -> Result<(), ImageError> {
        if !self.replace {
            refuse_existing(store, &self.name)?;
        }
        Ok(())
    }

    /// Refuses bytes whose digest is not the one named.
    pub fn check_digest(&self, got: &str) -> Result<(), ImageError> {
        match &self.sha256 {
            Some(want) if want != got => Err(ImageError::Sha256Mismatch(format!(
                "{}: sha256 is {got}, --sha256 expects {want}",
                self.label
            ))),
            _ => Ok(()),
        }
    }
}

fn refuse_existing(store: &dyn Store, name: &str) -> Result<(), ImageError> {
    if let Some(old) = store.image(name)? {
        return Err(ImageError::Exists(format!(
            "an image named {name:?} exists (sha256 {}, file {}, imported {}): add --replace to replace it, or --name to import under another name",
            old.sha256,
            old.file,
            kiln_api::time::rfc3339_ms(old.created_ms)
        )));
    }
    Ok(())
}

/// An import done: the record stored and the size of its file.
#[derive(Debug, Clone)]
pub struct Imported {
    pub record: ImageRecord,
    pub compressed_size: u64,
}

/// Converts the file `src` (already received, digest already checked) and records it as
/// `spec.name`.
pub fn import_file(
    data_dir: &Path,
    store: &dyn Store,
    src: &Path,
    spec: &ImportSpec,
) -> Result<Imported, ImageError> {
    spec.check_free(store)?;
    let dir = images_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(io_err(format_args!("creating {}", dir.display())))?;
    let work = tempfile::Builder::new()
        .prefix(".import-")
        .tempdir_in(&dir)
        .map_err(io_err(format_args!(
            "a work directory in {}",
            dir.display()
        )))?;
    let staged = work.path().join("image.raw.zst");
    let mut out = HashingWriter::new(File::create(&staged).map_err(io_err(staged.display()))?);
    let converted = convert(src, &spec.label, work.path(), &mut out, spec.level)?;
    // Disks are whole sectors; anything else is likely an error page or an archive.
    if converted.raw_size == 0 || converted.raw_size % 512 != 0 {
        return Err(ImageError::Invalid(format!(
            "{}: {} bytes of {} is not a disk image (not a whole number of 512-byte sectors)",
            spec.label, converted.raw_size, converted.source_format
        )));
    }
    out.inner.sync_all().map_err(io_err(staged.display()))?;
    let sha256 = hex(&sha2::Digest::finalize(out.hash.clone()));
    // Named by content: a URL handed to a workflow keeps its bytes whatever is imported later.
    let file = format::content_file_name(&spec.name, &sha256);
    std::fs::rename(&staged, dir.join(&file)).map_err(io_err(format_args!("storing {file}")))?;
    let record = ImageRecord {
        name: spec.name.clone(),
        file,
        raw_size: converted.raw_size,
        sha256,
        created_ms: kiln_engine::now_ms(),
        source_format: converted.source_format,
    };
    if spec.replace {
        store.put_image(&record)?;
    } else if !store.add_image(&record)? {
        // Imported by someone else meanwhile; the file stays (it is named by content).
        refuse_existing(store, &spec.name)?;
    }
    tracing::info!(
        "image {}: {} ({}) -> {} raw -> {} compressed",
        record.name,
        spec.label,
        record.source_format,
        record.raw_size,
        out.bytes
    );
    Ok(Imported {
        record,
        compressed_size: out.bytes,
    })
}

/// Downloads `url` (telling `task` how far it got), checks its digest and imports it;
/// `spec.label` names the URL in messages (see `kiln_api::images::url_for_display`).
pub fn import_url(
    data_dir: &Path,
    store: &dyn Store,
    url: &str,
    spec: &ImportSpec,
    task: &ImportTask,
) -> Result<Imported, ImageError> {
    if !kiln_api::images::is_url(url) {
        return Err(ImageError::Invalid(format!(
            "url {:?}: only http:// and https:// URLs are downloaded; upload a local file \
             instead (PUT /api/v1/images/NAME, as `kiln image import FILE` does)",
            kiln_api::images::url_for_display(url)
        )));
    }
    spec.check_free(store)?;
    let dir = images_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(io_err(format_args!("creating {}", dir.display())))?;
    let got = download::download(url, &dir, &mut |done, total| {
        task.received(done, total);
        !task.stopping()
    })?;
    spec.check_digest(&got.sha256)?;
    task.converting();
    import_file(data_dir, store, got.file.path(), spec).map_err(|e| match e {
        ImageError::Invalid(m) => ImageError::Invalid(format!(
            "importing {} ({} bytes downloaded): {m}",
            spec.label, got.bytes
        )),
        e => e,
    })
}

/// Forgets the image `name`; removes its file unless another image record names it. Refused
/// while an unfinished workflow would still stream that file (its rendered actions carry
/// the URL `/images/<file>`). Returns the record and whether the file went.
pub fn delete(
    data_dir: &Path,
    store: &dyn Store,
    name: &str,
) -> Result<(ImageRecord, bool), ImageError> {
    let missing = || ImageError::NotFound(format!("no image named {name:?} is imported"));
    let rec = store.image(name)?.ok_or_else(missing)?;
    let shared = |rec: &ImageRecord| -> Result<bool, ImageError> {
        Ok(store
            .images()?
            .iter()
            .any(|i| i.name != rec.name && i.file == rec.file))
    };
    if !shared(&rec)? {
        let served = format!("/images/{}", rec.file);
        let users: Vec<String> = store
            .workflows(true)?
            .into_iter()
            .filter(|wf| {
                wf.actions
                    .iter()
                    .any(|a| a.spec.params.values().any(|v| v.ends_with(&served)))
            })
            .map(|wf| format!("{} ({})", wf.id, wf.hardware))
            .collect();
        if !users.is_empty() {
            return Err(ImageError::InUse(format!(
                "image {name:?} ({}) is streamed by unfinished workflow(s) {}: cancel them or wait for them to end",
                rec.file,
                users.join(", ")
            )));
        }
    }
    let rec = store.delete_image(name)?.ok_or_else(missing)?;
    // A file name from the store, checked anyway: nothing outside the images directory goes.
    let plain = !rec.file.contains('/') && !rec.file.starts_with('.');
    let remove = plain && !shared(&rec)?;
    if remove {
        let path = images_dir(data_dir).join(&rec.file);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::Io(format!("removing {}: {e}", path.display()))),
        }
    }
    tracing::info!(image = %rec.name, file = %rec.file, file_removed = remove, "image deleted");
    Ok((rec, remove))
}

#[cfg(test)]
mod tests;
