//! `kiln image import|list|delete`: the server converts every import once to raw + zstd and
//! records its size and sha256. A URL is downloaded by the server (this command follows its
//! progress); a local file is uploaded to it.

use std::process::ExitCode;

use anyhow::bail;
use kiln_api::routes::path;
use kiln_api::{DeletedImage, Image, ImportState};
use kiln_client::images::ImportArgs;
use kiln_client::render::image as render;

use crate::Ctx;
use crate::output::Format;

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

fn import(ctx: &Ctx, args: ImportArgs, output: Format) -> anyhow::Result<()> {
    let source = args.source.clone();
    let ended = kiln_client::images::import(&ctx.client()?, args)?;
    let Some(image) = ended
        .image
        .as_ref()
        .filter(|_| ended.state == ImportState::Succeeded)
    else {
        match ended.error {
            Some(e) => bail!("{e}"),
            None => bail!("importing {source}: the server gave no reason"),
        }
    };
    eprintln!("{}", render::imported(image, &source, &ended));
    output.print(image, |i| render::list(std::slice::from_ref(i)))
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
            output.print(&all, |a| render::list(a))?;
        }
        Command::Delete { name, output } => {
            let gone: DeletedImage = ctx.client()?.delete(&path("images", Some(&name), ""))?;
            output.print(&gone, render::deleted)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
