//! `kiln image import FILE|URL`: convert once on the server to raw + zstd and
//! record size and sha256, so agents always stream one fast format. The format is
//! read from the content (magic bytes), never from the file name.

mod download;
pub mod format;

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode};

use anyhow::{Context, bail};
use kiln_store::{ImageRecord, Store};
use sha2::{Digest, Sha256};

use crate::output::{Format, rfc3339_ms, table};
use download::hex;
use format::{MAGIC_LEN, Magic, detect};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Import a disk image from a file or an http(s) URL: raw or qcow2, as it is or
    /// compressed with gzip, xz, zstd or bzip2 (told apart by content, not by name).
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
        #[arg(long, default_value_t = 10)]
        level: i32,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
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

/// Reads up to [`MAGIC_LEN`] bytes of `r` and gives them back in front of the rest.
fn peek<R: Read>(mut r: R) -> io::Result<(Magic, impl Read)> {
    let mut head = Vec::with_capacity(MAGIC_LEN);
    (&mut r).take(MAGIC_LEN as u64).read_to_end(&mut head)?;
    Ok((detect(&head), io::Cursor::new(head).chain(r)))
}

/// A decoder for one compression, reading every concatenated stream (pigz, pxz, pbzip2).
fn decoder<'a>(compression: Magic, r: impl Read + 'a) -> anyhow::Result<Box<dyn Read + 'a>> {
    let r = BufReader::with_capacity(1 << 20, r);
    Ok(match compression {
        Magic::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Magic::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(r)),
        Magic::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(r)),
        Magic::Zstd => Box::new(zstd::Decoder::with_buffer(r)?),
        Magic::Qcow2 | Magic::Raw => Box::new(r),
    })
}

/// What [`convert`] wrote: the raw size and what it read.
struct Converted {
    raw_size: u64,
    source_format: String,
}

/// Writes `src` as raw + zstd into `out`, decompressing and converting on the way;
/// `work` is a directory for intermediate files (qcow2 needs a seekable file).
fn convert(
    src: &Path,
    work: &Path,
    out: &mut HashingWriter<File>,
    level: i32,
) -> anyhow::Result<Converted> {
    let open = || File::open(src).with_context(|| format!("opening {}", src.display()));
    let (outer, _) = peek(open()?).with_context(|| format!("reading {}", src.display()))?;
    let converted = |raw_size, compression: Option<Magic>, disk| Converted {
        raw_size,
        source_format: format::describe(compression, disk),
    };
    match outer {
        Magic::Raw => {
            let raw_size = compress(open()?, out, level, src)?;
            Ok(converted(raw_size, None, Magic::Raw))
        }
        Magic::Qcow2 => {
            let raw_size = qcow2_to_zstd(src, work, out, level)?;
            Ok(converted(raw_size, None, Magic::Qcow2))
        }
        compression => {
            let broken = |e: io::Error| {
                anyhow::anyhow!(
                    "{}: not a valid {} stream: {e}",
                    src.display(),
                    compression.suffix()
                )
            };
            let (inner, stream) = peek(decoder(compression, open()?)?).map_err(broken)?;
            match inner {
                // Already raw + zstd (say, from an image recipe): kept byte for byte.
                Magic::Raw if compression == Magic::Zstd => {
                    let raw_size = io::copy(&mut decoder(compression, open()?)?, &mut io::sink())
                        .map_err(broken)?;
                    io::copy(&mut open()?, out)
                        .with_context(|| format!("copying {}", src.display()))?;
                    Ok(converted(raw_size, Some(compression), Magic::Raw))
                }
                Magic::Raw => {
                    let raw_size = compress(stream, out, level, src)?;
                    Ok(converted(raw_size, Some(compression), Magic::Raw))
                }
                Magic::Qcow2 => {
                    let qcow2 = work.join("image.qcow2");
                    let mut staged = File::create(&qcow2)?;
                    io::copy(&mut BufReader::with_capacity(1 << 20, stream), &mut staged)
                        .map_err(broken)?;
                    staged.sync_all()?;
                    drop(staged);
                    let raw_size = qcow2_to_zstd(&qcow2, work, out, level)?;
                    std::fs::remove_file(&qcow2)?;
                    Ok(converted(raw_size, Some(compression), Magic::Qcow2))
                }
                twice => bail!(
                    "{}: {} data inside {}: decompress it to a disk image first",
                    src.display(),
                    twice.suffix(),
                    compression.suffix()
                ),
            }
        }
    }
}

/// Compresses a raw disk into `out`; returns its size.
fn compress(
    raw: impl Read,
    out: &mut HashingWriter<File>,
    level: i32,
    src: &Path,
) -> anyhow::Result<u64> {
    let mut enc = zstd::Encoder::new(out, level)?;
    enc.multithread(
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
    )?;
    let raw_size = io::copy(&mut BufReader::with_capacity(4 << 20, raw), &mut enc)
        .with_context(|| format!("reading and compressing {}", src.display()))?;
    enc.finish()?;
    Ok(raw_size)
}

/// Converts a qcow2 file with `qemu-img` to raw in `work`, then compresses that.
/// A qcow2 may name a backing or data file elsewhere on this server: such a file
/// is refused, so an image from a URL cannot pull local files into what is served.
fn qcow2_to_zstd(
    qcow2: &Path,
    work: &Path,
    out: &mut HashingWriter<File>,
    level: i32,
) -> anyhow::Result<u64> {
    let info = Process::new("qemu-img")
        .args(["info", "-f", "qcow2", "--output=json"])
        .arg(qcow2)
        .output()
        .context("running qemu-img (apt-get install qemu-utils)")?;
    if !info.status.success() {
        bail!(
            "qemu-img info {}: {}",
            qcow2.display(),
            String::from_utf8_lossy(&info.stderr).trim()
        );
    }
    let info: serde_json::Value = serde_json::from_slice(&info.stdout)
        .with_context(|| format!("reading qemu-img info of {}", qcow2.display()))?;
    if let Some(other) = info
        .get("backing-filename")
        .or_else(|| info.pointer("/format-specific/data/data-file"))
    {
        bail!(
            "{}: a qcow2 that refers to another file ({other}) is not imported: flatten it first (qemu-img convert -O qcow2)",
            qcow2.display()
        );
    }
    let raw = work.join("image.raw");
    let status = Process::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(qcow2)
        .arg(&raw)
        .status()
        .context("running qemu-img (apt-get install qemu-utils)")?;
    if !status.success() {
        bail!("qemu-img convert failed on {}", qcow2.display());
    }
    let raw_size = compress(File::open(&raw)?, out, level, qcow2)?;
    std::fs::remove_file(&raw)?;
    Ok(raw_size)
}

/// sha256 of a file, for `--sha256` on a local source.
fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut sink = HashingWriter {
        inner: io::sink(),
        hash: Sha256::new(),
        bytes: 0,
    };
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    io::copy(&mut BufReader::with_capacity(1 << 20, file), &mut sink)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&sink.hash.finalize()))
}

/// How an import goes: a name, and whether it may replace an image of that name.
struct Import<'a> {
    name: &'a str,
    replace: bool,
    level: i32,
    /// What to call the source in messages (the URL of a download), if not its path.
    label: Option<&'a str>,
}

fn refuse_existing(store: &Store, name: &str) -> anyhow::Result<()> {
    if let Some(old) = store.image(name)? {
        bail!(
            "an image named {name:?} exists (sha256 {}, file {}, imported {}): add --replace to replace it, or --name to import under another name",
            old.sha256,
            old.file,
            rfc3339_ms(old.created_ms)
        );
    }
    Ok(())
}

/// Imports the local file `src` under `how.name`.
fn import(
    data_dir: &Path,
    store: &Store,
    src: &Path,
    how: &Import<'_>,
) -> anyhow::Result<ImageRecord> {
    format::check_name(how.name).map_err(anyhow::Error::msg)?;
    if !how.replace {
        refuse_existing(store, how.name)?;
    }
    let dir = images_dir(data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".import-")
        .tempdir_in(&dir)?;
    let staged = work.path().join("image.raw.zst");
    let mut out = HashingWriter {
        inner: File::create(&staged)?,
        hash: Sha256::new(),
        bytes: 0,
    };
    let converted = convert(src, work.path(), &mut out, how.level)?;
    // Disks are whole sectors; anything else is likely an error page or an archive.
    if converted.raw_size == 0 || converted.raw_size % 512 != 0 {
        bail!(
            "{}: {} bytes of {} is not a disk image (not a whole number of 512-byte sectors)",
            how.label.unwrap_or(&src.display().to_string()),
            converted.raw_size,
            converted.source_format
        );
    }
    out.inner.sync_all()?;
    let sha256 = hex(&out.hash.finalize());
    // Named by content: a URL handed to a workflow keeps its bytes whatever is imported later.
    let file = format::content_file_name(how.name, &sha256);
    std::fs::rename(&staged, dir.join(&file))?;
    let record = ImageRecord {
        name: how.name.to_string(),
        file,
        raw_size: converted.raw_size,
        sha256,
        created_ms: kiln_engine::now_ms(),
        source_format: converted.source_format,
    };
    if how.replace {
        store.put_image(&record)?;
    } else if !store.add_image(&record)? {
        // Imported by someone else meanwhile; the file stays (it is named by content).
        refuse_existing(store, how.name)?;
    }
    eprintln!(
        "{}: {} ({}) -> {} raw -> {} compressed",
        record.name,
        how.label.unwrap_or(&src.display().to_string()),
        record.source_format,
        record.raw_size,
        out.bytes
    );
    Ok(record)
}

/// Downloads or opens `source`, checks `--sha256`, and imports it.
fn import_source(
    data_dir: &Path,
    store: &Store,
    source: &str,
    name: Option<&str>,
    expect_sha256: Option<&str>,
    replace: bool,
    level: i32,
) -> anyhow::Result<ImageRecord> {
    let expect = expect_sha256
        .map(format::parse_sha256)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let name = name.map_or_else(|| format::default_name(source), str::to_string);
    let mut how = Import {
        name: &name,
        replace,
        level,
        label: None,
    };
    // Refused before a long download, not after.
    format::check_name(how.name).map_err(|e| anyhow::anyhow!("{e} (give one with --name)"))?;
    if !how.replace {
        refuse_existing(store, how.name)?;
    }
    let check = |got: &str| -> anyhow::Result<()> {
        match &expect {
            Some(want) if want != got => {
                bail!("{source}: sha256 is {got}, --sha256 expects {want}")
            }
            _ => Ok(()),
        }
    };
    if download::is_url(source) {
        let dir = images_dir(data_dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let got = download::download(source, &dir)?;
        check(&got.sha256)?;
        how.label = Some(source);
        import(data_dir, store, got.file.path(), &how)
            .with_context(|| format!("importing {source} ({} bytes downloaded)", got.bytes))
    } else {
        let path = Path::new(source);
        if expect.is_some() {
            check(&file_sha256(path)?)?;
        }
        import(data_dir, store, path, &how)
    }
}

/// One image as `-o json` shows it.
#[derive(serde::Serialize)]
struct ImageJson<'a> {
    name: &'a str,
    file: &'a str,
    url_path: String,
    raw_size: u64,
    sha256: &'a str,
    created: String,
    /// What the import read: `raw`, `qcow2`, `raw.gz`, `qcow2.xz`…; empty if imported
    /// before Kiln recorded it.
    source_format: &'a str,
}

fn image_json(i: &ImageRecord) -> ImageJson<'_> {
    ImageJson {
        name: &i.name,
        file: &i.file,
        url_path: format!("/images/{}", i.file),
        raw_size: i.raw_size,
        sha256: &i.sha256,
        created: rfc3339_ms(i.created_ms),
        source_format: &i.source_format,
    }
}

fn show(imgs: &[ImageRecord], output: Format) -> anyhow::Result<()> {
    match output {
        Format::Json => {
            let view: Vec<ImageJson<'_>> = imgs.iter().map(image_json).collect();
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = imgs
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        format!("/images/{}", i.file),
                        if i.source_format.is_empty() {
                            "-".into()
                        } else {
                            i.source_format.clone()
                        },
                        i.raw_size.to_string(),
                        i.sha256.clone(),
                        rfc3339_ms(i.created_ms),
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

pub fn run(data_dir: &Path, cmd: Command) -> anyhow::Result<ExitCode> {
    let store = Store::open(data_dir)
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    match cmd {
        Command::Import {
            source,
            name,
            replace,
            sha256,
            level,
            output,
        } => {
            let rec = import_source(
                data_dir,
                &store,
                &source,
                name.as_deref(),
                sha256.as_deref(),
                replace,
                level,
            )?;
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&image_json(&rec))?),
                Format::Table => show(&[rec], output)?,
            }
        }
        Command::List { output } => show(&store.images()?, output)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Write as _};
    use std::net::TcpListener;
    use std::sync::Arc;

    use super::*;

    /// 1 MiB with runs of zeros and of varied bytes, like a disk.
    fn disk() -> Vec<u8> {
        (0..1u32 << 20)
            .map(|i| if i % 4096 < 2048 { 0 } else { (i % 251) as u8 })
            .collect()
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    fn how(name: &str) -> Import<'_> {
        Import {
            name,
            replace: false,
            level: 3,
            label: None,
        }
    }

    /// The served file of `rec`: its digest is the record's and it decodes to `raw`.
    fn assert_serves(data_dir: &Path, rec: &ImageRecord, raw: &[u8]) {
        let served = std::fs::read(images_dir(data_dir).join(&rec.file)).unwrap();
        assert_eq!(rec.sha256, sha256_hex(&served), "{}", rec.file);
        assert_eq!(rec.raw_size, raw.len() as u64);
        assert!(
            zstd::decode_all(&served[..]).unwrap() == raw,
            "{}",
            rec.file
        );
    }

    fn qemu_img_qcow2(raw: &Path, qcow2: &Path) {
        let status = Process::new("qemu-img")
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(raw)
            .arg(qcow2)
            .status()
            .expect("qemu-img (qemu-utils) is installed");
        assert!(status.success());
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn imports_raw_and_records_digest_of_served_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let raw = dir.path().join("disk.raw");
        let data = disk();
        std::fs::write(&raw, &data).unwrap();
        let rec = import(dir.path(), &store, &raw, &how("disk")).unwrap();
        assert_serves(dir.path(), &rec, &data);
        assert_eq!(rec.source_format, "raw");
        assert_eq!(rec.file, format!("disk-{}.raw.zst", &rec.sha256[..16]));
        assert_eq!(store.images().unwrap(), vec![rec.clone()]);
        assert!(import(dir.path(), &store, &raw, &how("Bad Name")).is_err());
        assert!(import(dir.path(), &store, &raw, &how("../up")).is_err());
        // An image that is already raw+zstd is kept byte for byte.
        let served = std::fs::read(images_dir(dir.path()).join(&rec.file)).unwrap();
        let zst = dir.path().join("again.raw.zst");
        std::fs::write(&zst, &served).unwrap();
        let again = import(dir.path(), &store, &zst, &how("again")).unwrap();
        assert_eq!(
            (again.sha256, again.raw_size, again.source_format.as_str()),
            (rec.sha256.clone(), rec.raw_size, "raw.zst")
        );
    }

    #[test]
    fn every_format_is_told_by_content_and_stored_raw() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = disk();
        let raw = dir.path().join("src.raw");
        std::fs::write(&raw, &data).unwrap();
        let qcow2 = dir.path().join("src.qcow2");
        qemu_img_qcow2(&raw, &qcow2);
        let qcow2_bytes = std::fs::read(&qcow2).unwrap();
        assert_eq!(detect(&qcow2_bytes), Magic::Qcow2);
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let bz2 = {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        // Two gzip members, as pigz and `cat a.gz b.gz` make.
        let two_members = [gzip(&data[..1000]), gzip(&data[1000..])].concat();
        let inputs: Vec<(&str, Vec<u8>, &str)> = [
            ("gzip", gzip(&data), "raw.gz"),
            ("gzip-members", two_members, "raw.gz"),
            ("xz", xz, "raw.xz"),
            ("bzip2", bz2, "raw.bz2"),
            ("qcow2", qcow2_bytes.clone(), "qcow2"),
            ("qcow2-gz", gzip(&qcow2_bytes), "qcow2.gz"),
            (
                "qcow2-zst",
                zstd::encode_all(&qcow2_bytes[..], 1).unwrap(),
                "qcow2.zst",
            ),
        ]
        .into();
        for (name, bytes, source_format) in inputs {
            // File names that say nothing true: only the content decides.
            let path = dir.path().join(format!("{name}.raw"));
            std::fs::write(&path, &bytes).unwrap();
            let rec = import(dir.path(), &store, &path, &how(name))
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(rec.source_format, source_format, "{name}");
            assert_serves(dir.path(), &rec, &data);
        }
        // A damaged stream is an error naming the file and the format, not an image.
        let broken = dir.path().join("broken.gz");
        let mut bytes = gzip(&data);
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&broken, &bytes).unwrap();
        let e = import(dir.path(), &store, &broken, &how("broken")).unwrap_err();
        assert!(format!("{e:#}").contains("broken.gz"), "{e:#}");
        assert!(store.image("broken").unwrap().is_none());
        // An HTML page (say, a login page served instead of the image) is not a disk.
        let page = dir.path().join("page.gz");
        std::fs::write(&page, gzip(b"<html><body>sign in</body></html>\n")).unwrap();
        let e = import(dir.path(), &store, &page, &how("page")).unwrap_err();
        assert!(e.to_string().contains("not a disk image"), "{e}");
        // Compression inside compression is refused rather than stored as a disk.
        let twice = dir.path().join("twice.gz");
        std::fs::write(&twice, gzip(&gzip(&data))).unwrap();
        let e = import(dir.path(), &store, &twice, &how("twice")).unwrap_err();
        assert!(e.to_string().contains("gz data inside gz"), "{e}");
    }

    #[test]
    fn a_qcow2_naming_another_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let secret = dir.path().join("secret.raw");
        std::fs::write(&secret, disk()).unwrap();
        let overlay = dir.path().join("overlay.qcow2");
        let status = Process::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&secret)
            .arg(&overlay)
            .status()
            .unwrap();
        assert!(status.success());
        let e = import(dir.path(), &store, &overlay, &how("overlay")).unwrap_err();
        assert!(e.to_string().contains("refers to another file"), "{e:#}");
        assert!(store.images().unwrap().is_empty());
    }

    #[test]
    fn versioned_names_stay_apart_and_replacing_needs_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (old, new) = (disk(), disk().into_iter().rev().collect::<Vec<u8>>());
        let v130 = dir.path().join("ubuntu-2204-kube-v1.30.gz");
        let v129 = dir.path().join("ubuntu-2204-kube-v1.29.gz");
        std::fs::write(&v130, gzip(&old)).unwrap();
        std::fs::write(&v129, gzip(&new)).unwrap();
        for path in [&v130, &v129] {
            import_source(
                dir.path(),
                &store,
                path.to_str().unwrap(),
                None,
                None,
                false,
                3,
            )
            .unwrap();
        }
        let names: Vec<String> = store
            .images()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["ubuntu-2204-kube-v1.29", "ubuntu-2204-kube-v1.30"]);

        // Importing over a name needs --replace; the error names the image and its digest.
        let first = store.image("ubuntu-2204-kube-v1.30").unwrap().unwrap();
        let other = dir.path().join("other.raw");
        std::fs::write(&other, &new).unwrap();
        let e = import_source(
            dir.path(),
            &store,
            other.to_str().unwrap(),
            Some("ubuntu-2204-kube-v1.30"),
            None,
            false,
            3,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("\"ubuntu-2204-kube-v1.30\"")
                && e.contains(&first.sha256)
                && e.contains("--replace"),
            "{e}"
        );
        assert_eq!(store.image("ubuntu-2204-kube-v1.30").unwrap(), Some(first));
    }

    const TEMPLATE: &str = "name: install\nactions:\n  - name: stream\n    kind: image2disk\n    with:\n      url: '{{ images[\"os-v1.30\"].url }}'\n      sha256: '{{ images[\"os-v1.30\"].sha256 }}'\n";

    #[test]
    fn a_replaced_image_leaves_the_bytes_a_workflow_was_given() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let csv = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
                   m1,,,,52:54:00:00:00:01,10.0.0.11,255.255.255.0,10.0.0.1,10.0.0.1,,/dev/vda\n\
                   m2,,,,52:54:00:00:00:02,10.0.0.12,255.255.255.0,10.0.0.1,10.0.0.1,,/dev/vda\n";
        let hw = kiln_model::csv::parse_hardware_csv("hardware.csv", csv).unwrap();
        store.enroll(&hw).unwrap();
        let template = kiln_model::template::parse_template("t.yaml", TEMPLATE).unwrap();
        let engine = kiln_engine::Engine::new(Arc::clone(&store));
        let server = "http://10.0.0.1:8080";

        let (old, new) = (disk(), disk().into_iter().rev().collect::<Vec<u8>>());
        let src = dir.path().join("src.raw");
        std::fs::write(&src, &old).unwrap();
        let first = import(dir.path(), &store, &src, &how("os-v1.30")).unwrap();
        let wf1 = engine
            .create(&template, &hw[..1], server, false)
            .unwrap()
            .remove(0);

        std::fs::write(&src, &new).unwrap();
        assert!(import(dir.path(), &store, &src, &how("os-v1.30")).is_err());
        let replace = Import {
            replace: true,
            ..how("os-v1.30")
        };
        let second = import(dir.path(), &store, &src, &replace).unwrap();
        assert_ne!(first.file, second.file);
        assert_eq!(store.images().unwrap(), vec![second.clone()]);
        let wf2 = engine
            .create(&template, &hw[1..], server, false)
            .unwrap()
            .remove(0);

        // Each workflow keeps the URL it was rendered with, and that URL's file its bytes.
        for (wf, rec, raw) in [(&wf1, &first, &old), (&wf2, &second, &new)] {
            let stored = store.workflow(&wf.id).unwrap().unwrap();
            let params = &stored.actions[0].spec.params;
            assert_eq!(params["url"], format!("{server}/images/{}", rec.file));
            assert_eq!(params["sha256"], rec.sha256);
            assert_serves(dir.path(), rec, raw);
        }
    }

    /// Serves `body` at `/PATH` (404 elsewhere) on 127.0.0.1, one connection at a time,
    /// for as long as the test runs; returns the base URL.
    fn serve(path: &'static str, body: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = io::BufReader::new(conn.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let asked = request_line.split(' ').nth(1).unwrap_or("");
                let _ = if asked.strip_prefix('/') == Some(path) {
                    write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .and_then(|()| conn.write_all(&body))
                } else {
                    conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                };
            }
        });
        base
    }

    #[test]
    fn imports_from_a_url_checking_status_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = disk();
        let body = gzip(&data);
        let body_sha = sha256_hex(&body);
        let base = serve("ubuntu-2204-kube-v1.30.gz", body);
        let url = format!("{base}/ubuntu-2204-kube-v1.30.gz");

        let wrong = "0".repeat(64);
        let e = import_source(dir.path(), &store, &url, None, Some(&wrong), false, 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&url) && e.contains(&body_sha), "{e}");
        assert!(store.images().unwrap().is_empty());

        let rec = import_source(dir.path(), &store, &url, None, Some(&body_sha), false, 3).unwrap();
        assert_eq!(
            (rec.name.as_str(), rec.source_format.as_str()),
            ("ubuntu-2204-kube-v1.30", "raw.gz")
        );
        assert_serves(dir.path(), &rec, &data);

        let missing = format!("{base}/nope.raw");
        let e = import_source(dir.path(), &store, &missing, None, None, false, 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&missing) && e.contains("HTTP 404"), "{e}");
        // Nothing of the downloads is left behind but the imported image.
        let left: Vec<String> = std::fs::read_dir(images_dir(dir.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [rec.file]);
    }

    #[test]
    fn json_output_names_the_url_path_and_an_rfc3339_time() {
        let rec = ImageRecord {
            name: "os-v1.30".into(),
            file: "os-v1.30-0123456789abcdef.raw.zst".into(),
            raw_size: 42,
            sha256: "ab".repeat(32),
            created_ms: 1_700_000_000_123,
            source_format: "qcow2.xz".into(),
        };
        let v = serde_json::to_value(image_json(&rec)).unwrap();
        assert_eq!(v["url_path"], "/images/os-v1.30-0123456789abcdef.raw.zst");
        assert_eq!(v["created"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["source_format"], "qcow2.xz");
        assert_eq!(v["raw_size"], 42);
    }
}
