//! `kiln image import|list|delete`: the server converts every import once to raw + zstd and
//! records its size and sha256. A URL is downloaded by the server (this command follows its
//! progress); a local file is uploaded to it.

mod progress;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use kiln_api::images::{UploadQuery, check_name, default_name, is_url, parse_sha256};
use kiln_api::routes::path;
use kiln_api::{DeletedImage, Image, ImageImport, ImportPhase, ImportRequest, ImportState};

use crate::Ctx;
use crate::client::Client;
use crate::output::{Format, table};
use progress::{Progress, Reading};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Import a disk image from a file or an http(s) URL: raw or qcow2, as it is or
    /// compressed with gzip, xz, zstd or bzip2 (told apart by content, not by name).
    /// A file is uploaded to the server; a URL is downloaded by the server.
    Import {
        /// A file, or an http:// or https:// URL to download.
        source: String,
        /// Name to refer to it by (default: the file name without format suffixes
        /// such as .gz .xz .zst .bz2 .qcow2 .raw .img).
        #[arg(long)]
        name: Option<String>,
        /// Replace an image of the same name. Workflows already created keep the
        /// bytes they were given: each import is stored in a file of its own.
        #[arg(long)]
        replace: bool,
        /// Expected sha256 of the source as given (the file or the downloaded bytes).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// zstd level (higher: smaller and slower to import; decompression speed barely changes).
        #[arg(long, default_value_t = kiln_api::images::DEFAULT_ZSTD_LEVEL)]
        level: i32,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// List imported images.
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Forget an image and remove its file (refused while an unfinished workflow streams it).
    Delete {
        name: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
}

/// What to import and how.
struct ImportArgs {
    source: String,
    name: Option<String>,
    replace: bool,
    sha256: Option<String>,
    level: i32,
}

fn show(imgs: &[Image], output: Format) -> anyhow::Result<()> {
    match output {
        Format::Json => println!("{}", serde_json::to_string_pretty(imgs)?),
        Format::Table => {
            let rows: Vec<Vec<String>> = imgs
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        i.url_path.clone(),
                        if i.source_format.is_empty() {
                            "-".into()
                        } else {
                            i.source_format.clone()
                        },
                        i.raw_size.to_string(),
                        i.sha256.clone(),
                        i.created.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "NAME", "URL PATH", "SOURCE", "RAW SIZE", "SHA256", "IMPORTED"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

/// Asks the server to download `args.source` and follows the import until it ends.
fn import_url(client: &Client, args: ImportArgs) -> anyhow::Result<ImageImport> {
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
        let now: ImageImport = client
            .get(&status)
            .with_context(|| format!("following the import of {}", args.source))?;
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
fn import_file(client: &Client, args: ImportArgs) -> anyhow::Result<ImageImport> {
    let file_path = Path::new(&args.source);
    let name = args.name.unwrap_or_else(|| default_name(&args.source));
    // Refused before a long upload, not after.
    check_name(&name).map_err(|e| anyhow::anyhow!("{e} (give one with --name)"))?;
    let sha256 = args
        .sha256
        .as_deref()
        .map(parse_sha256)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let file = std::fs::File::open(file_path)
        .with_context(|| format!("opening {}", file_path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("reading {}", file_path.display()))?
        .len();
    let mut query = UploadQuery {
        sha256,
        replace: args.replace,
        zstd_level: args.level,
        source: Some(args.source.clone()),
        dry_run: true,
    };
    let target = |q: &UploadQuery| kiln_client::upload_path(&name, q);
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

fn import(ctx: &Ctx, args: ImportArgs, output: Format) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let source = args.source.clone();
    let ended = if is_url(&source) {
        import_url(&client, args)?
    } else {
        import_file(&client, args)?
    };
    let Some(image) = ended
        .image
        .filter(|_| ended.state == ImportState::Succeeded)
    else {
        match ended.error {
            Some(e) => bail!("{e}"),
            None => bail!("importing {source}: the server gave no reason"),
        }
    };
    eprintln!(
        "{}: {} ({}) -> {} raw -> {} compressed",
        image.name,
        source,
        image.source_format,
        image.raw_size,
        ended
            .compressed_size
            .map_or_else(|| "?".to_string(), |n| n.to_string())
    );
    match output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&image)?),
        Format::Table => show(&[image], output)?,
    }
    Ok(())
}

pub fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Import {
            source,
            name,
            replace,
            sha256,
            level,
            output,
        } => {
            let args = ImportArgs {
                source,
                name,
                replace,
                sha256,
                level,
            };
            import(ctx, args, output)?;
        }
        Command::List { output } => {
            let all: Vec<Image> = ctx.client()?.get(&path("images", None, ""))?;
            show(&all, output)?;
        }
        Command::Delete { name, output } => {
            let gone: DeletedImage = ctx.client()?.delete(&path("images", Some(&name), ""))?;
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&gone)?),
                Format::Table if gone.file_removed => {
                    println!(
                        "deleted image {} (file {} removed)",
                        gone.image.name, gone.image.file
                    )
                }
                Format::Table => println!(
                    "deleted image {} (file {} kept: another image names it)",
                    gone.image.name, gone.image.file
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
