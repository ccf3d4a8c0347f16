//! `kiln image import FILE`: convert once on the server to raw + zstd and
//! record size and sha256, so agents always stream one fast format.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode};

use anyhow::{Context, bail};
use kiln_store::{ImageRecord, Store};
use sha2::{Digest, Sha256};

use crate::output::{Format, rfc3339_ms, table};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Import a raw or qcow2 disk image.
    Import {
        file: PathBuf,
        /// Name to refer to it by (default: the file name without extensions).
        #[arg(long)]
        name: Option<String>,
        /// zstd level (higher: smaller and slower to import; decompression speed barely changes).
        #[arg(long, default_value_t = 10)]
        level: i32,
    },
    /// List imported images.
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
}

/// Where imported images live; `kiln serve` serves this directory at /images/.
pub fn images_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images")
}

/// Counts and hashes what passes through to the inner writer.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum InputFormat {
    Raw,
    Qcow2,
    /// Already raw + zstd (say, from an image recipe): kept byte for byte.
    RawZstd,
}

fn input_format(path: &Path) -> anyhow::Result<InputFormat> {
    let mut magic = [0u8; 4];
    let n = File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .read(&mut magic)?;
    Ok(match &magic[..n] {
        b"QFI\xfb" => InputFormat::Qcow2,
        [0x28, 0xb5, 0x2f, 0xfd] => InputFormat::RawZstd,
        _ => InputFormat::Raw,
    })
}

/// Size of the raw image inside a zstd stream (decoded once, discarded).
fn zstd_raw_size(path: &Path) -> anyhow::Result<u64> {
    let mut dec = zstd::Decoder::new(File::open(path)?)?;
    io::copy(&mut dec, &mut io::sink())
        .with_context(|| format!("{} is not a valid zstd stream", path.display()))
}

fn default_name(path: &Path) -> String {
    let base = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    base.split('.').next().unwrap_or("image").to_string()
}

fn import(
    data_dir: &Path,
    store: &Store,
    file: &Path,
    name: &str,
    level: i32,
) -> anyhow::Result<ImageRecord> {
    if !kiln_model::labels::is_dns_label(name) {
        bail!("image name {name:?} must be lower-case letters, digits and '-'");
    }
    let dir = images_dir(data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".import-")
        .tempdir_in(&dir)?;
    let format = input_format(file)?;
    let staged = tmp.path().join("image.raw.zst");
    let mut out = HashingWriter {
        inner: File::create(&staged)?,
        hash: Sha256::new(),
        bytes: 0,
    };
    if format == InputFormat::RawZstd {
        let raw_size = zstd_raw_size(file)?;
        io::copy(&mut File::open(file)?, &mut out)?;
        return finish(&dir, store, name, staged, out, raw_size);
    }
    // qcow2 is converted with qemu-img first; raw is read as it is.
    let raw = if format == InputFormat::Qcow2 {
        let out = tmp.path().join("image.raw");
        let status = Process::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(file)
            .arg(&out)
            .status()
            .context("running qemu-img (apt-get install qemu-utils)")?;
        if !status.success() {
            bail!("qemu-img convert failed on {}", file.display());
        }
        out
    } else {
        file.to_path_buf()
    };
    let raw_size = std::fs::metadata(&raw)?.len();
    {
        let mut enc = zstd::Encoder::new(&mut out, level)?;
        enc.multithread(
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
        )?;
        let mut reader = BufReader::with_capacity(4 << 20, File::open(&raw)?);
        io::copy(&mut reader, &mut enc)
            .with_context(|| format!("compressing {}", raw.display()))?;
        enc.finish()?;
    }
    finish(&dir, store, name, staged, out, raw_size)
}

/// Syncs the staged file, moves it into place and records it.
fn finish(
    dir: &Path,
    store: &Store,
    name: &str,
    staged: PathBuf,
    out: HashingWriter<File>,
    raw_size: u64,
) -> anyhow::Result<ImageRecord> {
    out.inner.sync_all()?;
    let sha256: String = out
        .hash
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let file_name = format!("{name}.raw.zst");
    std::fs::rename(&staged, dir.join(&file_name))?;
    let record = ImageRecord {
        name: name.to_string(),
        file: file_name,
        raw_size,
        sha256,
        created_ms: kiln_engine::now_ms(),
    };
    store.put_image(&record)?;
    eprintln!("{}: {} raw -> {} compressed", name, raw_size, out.bytes);
    Ok(record)
}

pub fn run(data_dir: &Path, cmd: Command) -> anyhow::Result<ExitCode> {
    let store = Store::open(data_dir)
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    let show = |imgs: &[ImageRecord], output: Format| -> anyhow::Result<()> {
        match output {
            Format::Json => println!("{}", serde_json::to_string_pretty(imgs)?),
            Format::Table => {
                let rows: Vec<Vec<String>> = imgs
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            format!("/images/{}", i.file),
                            i.raw_size.to_string(),
                            i.sha256.clone(),
                            rfc3339_ms(i.created_ms),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["NAME", "URL PATH", "RAW SIZE", "SHA256", "IMPORTED"],
                        &rows
                    )
                );
            }
        }
        Ok(())
    };
    match cmd {
        Command::Import { file, name, level } => {
            let name = name.unwrap_or_else(|| default_name(&file));
            let rec = import(data_dir, &store, &file, &name, level)?;
            show(&[rec], Format::Table)?;
        }
        Command::List { output } => show(&store.images()?, output)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_raw_and_records_digest_of_served_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let raw = dir.path().join("disk.raw");
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| if i % 4096 < 2048 { 0 } else { (i % 251) as u8 })
            .collect();
        std::fs::write(&raw, &data).unwrap();
        let rec = import(dir.path(), &store, &raw, "disk", 3).unwrap();
        assert_eq!(rec.raw_size, data.len() as u64);
        let served = std::fs::read(images_dir(dir.path()).join(&rec.file)).unwrap();
        let digest: String = Sha256::digest(&served)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(rec.sha256, digest);
        assert_eq!(zstd::decode_all(&served[..]).unwrap(), data);
        assert_eq!(store.images().unwrap(), vec![rec.clone()]);
        assert!(import(dir.path(), &store, &raw, "Bad Name", 3).is_err());
        // An image that is already raw+zstd is kept byte for byte.
        let zst = dir.path().join("again.raw.zst");
        std::fs::write(&zst, &served).unwrap();
        let again = import(dir.path(), &store, &zst, "again", 3).unwrap();
        assert_eq!(
            (again.sha256, again.raw_size),
            (rec.sha256.clone(), rec.raw_size)
        );
    }
}
