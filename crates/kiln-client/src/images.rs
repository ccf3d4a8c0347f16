//! `kiln image import`: a URL is downloaded by the server (its progress followed here); a
//! local file is uploaded to it. Either way the server converts it once to raw + zstd.

use std::path::Path;
use std::time::Duration;

use kiln_api::images::{UploadQuery, check_name, default_name, parse_sha256};
use kiln_api::routes::path;
use kiln_api::{ImageImport, ImportPhase, ImportRequest, ImportState};

use crate::progress::{Progress, Reading};
use crate::{Client, ClientError};

/// What to import and how.
pub struct ImportArgs {
    /// A file, or an http(s) URL the server downloads.
    pub source: String,
    pub name: Option<String>,
    pub replace: bool,
    /// Expected sha256 of the source as given.
    pub sha256: Option<String>,
    pub level: i32,
}

/// Imports `args.source` (a URL or a file), showing progress on stderr; the import as it ended.
pub fn import(client: &Client, args: ImportArgs) -> Result<ImageImport, ClientError> {
    if kiln_api::images::is_url(&args.source) {
        import_url(client, args)
    } else {
        import_file(client, args)
    }
}

/// Asks the server to download `args.source` and follows the import until it ends.
fn import_url(client: &Client, args: ImportArgs) -> Result<ImageImport, ClientError> {
    let req = ImportRequest {
        url: args.source.clone(),
        name: args.name,
        sha256: args.sha256,
        replace: args.replace,
        zstd_level: args.level,
    };
    let started: ImageImport = client.send("POST", &path("images", None, ""), &req)?;
    let status = path("images/imports", Some(&started.id), "");
    let mut progress = Progress::new(&args.source, started.bytes_total, true);
    loop {
        let now: ImageImport = client.get(&status)?;
        progress.total = now.bytes_total;
        if now.state != ImportState::Running || now.phase != ImportPhase::Receiving {
            if now.state != ImportState::Failed || now.bytes_done > 0 {
                progress.finish(now.bytes_done);
            }
        } else {
            progress.advance(now.bytes_done);
        }
        if now.state != ImportState::Running {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Uploads the file `args.source` to the server, which imports it.
fn import_file(client: &Client, args: ImportArgs) -> Result<ImageImport, ClientError> {
    let file_path = Path::new(&args.source);
    let name = args.name.unwrap_or_else(|| default_name(&args.source));
    // Refused before a long upload, not after.
    check_name(&name).map_err(|e| ClientError::Input(format!("{e} (give one with --name)")))?;
    let sha256 = args
        .sha256
        .as_deref()
        .map(parse_sha256)
        .transpose()
        .map_err(ClientError::Input)?;
    let unreadable =
        |e: std::io::Error| ClientError::Input(format!("opening {}: {e}", file_path.display()));
    let file = std::fs::File::open(file_path).map_err(unreadable)?;
    let len = file.metadata().map_err(unreadable)?.len();
    let mut query = UploadQuery {
        sha256,
        replace: args.replace,
        zstd_level: args.level,
        source: Some(args.source.clone()),
        dry_run: true,
    };
    let target = |q: &UploadQuery| crate::upload_path(&name, q);
    // Refusals (token, name taken, bad level) come back now, not as a connection the server
    // closed in the middle of a large upload it would not read.
    let () = client.put_stream(&target(&query), &mut std::io::empty(), 0)?;
    query.dry_run = false;
    let mut body = Reading {
        inner: file,
        done: 0,
        progress: Progress::new(&args.source, Some(len), false),
    };
    let ended = client.put_stream(&target(&query), &mut body, len)?;
    // The client may stop reading at the announced length, before the reader's end.
    body.progress.finish(body.done);
    Ok(ended)
}
