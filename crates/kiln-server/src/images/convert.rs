//! Any accepted source (raw or qcow2, as it is or in gzip, xz, zstd or bzip2) to raw + zstd,
//! told apart by content. qcow2 goes through `qemu-img`, which needs a seekable file.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::process::Command as Process;

use sha2::{Digest, Sha256};

use super::ImageError;
use super::format::{self, MAGIC_LEN, Magic, detect};

/// Counts and hashes what passes through to the inner writer.
pub(super) struct HashingWriter<W> {
    pub inner: W,
    pub hash: Sha256,
    pub bytes: u64,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }
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

/// An I/O error of the server's own files.
pub(super) fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ImageError {
    move |e| ImageError::Io(format!("{what}: {e}"))
}

/// An error reading the source: its content when the data is bad, the server otherwise.
fn read_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ImageError {
    move |e| match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            ImageError::Invalid(format!("{what}: {e}"))
        }
        _ => ImageError::Io(format!("{what}: {e}")),
    }
}

/// Reads up to [`MAGIC_LEN`] bytes of `r` and gives them back in front of the rest.
fn peek<R: Read>(mut r: R) -> io::Result<(Magic, impl Read)> {
    let mut head = Vec::with_capacity(MAGIC_LEN);
    (&mut r).take(MAGIC_LEN as u64).read_to_end(&mut head)?;
    Ok((detect(&head), io::Cursor::new(head).chain(r)))
}

/// A decoder for one compression, reading every concatenated stream (pigz, pxz, pbzip2).
fn decoder<'a>(compression: Magic, r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
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
pub(super) struct Converted {
    pub raw_size: u64,
    pub source_format: String,
}

/// Writes `src` as raw + zstd into `out`, decompressing and converting on the way;
/// `work` is a directory for intermediate files (qcow2 needs a seekable file). `label`
/// names the source in messages (the URL, the uploaded file's name, the path).
pub(super) fn convert(
    src: &Path,
    label: &str,
    work: &Path,
    out: &mut HashingWriter<File>,
    level: i32,
) -> Result<Converted, ImageError> {
    let open = || File::open(src).map_err(io_err(format_args!("opening {}", src.display())));
    let (outer, _) = peek(open()?).map_err(read_err(format_args!("reading {label}")))?;
    let converted = |raw_size, compression: Option<Magic>, disk| Converted {
        raw_size,
        source_format: format::describe(compression, disk),
    };
    match outer {
        Magic::Raw => {
            let raw_size = compress(open()?, out, level, label)?;
            Ok(converted(raw_size, None, Magic::Raw))
        }
        Magic::Qcow2 => {
            let raw_size = qcow2_to_zstd(src, label, work, out, level)?;
            Ok(converted(raw_size, None, Magic::Qcow2))
        }
        compression => {
            let broken = |e: io::Error| {
                ImageError::Invalid(format!(
                    "{label}: not a valid {} stream: {e}",
                    compression.suffix()
                ))
            };
            let (inner, stream) =
                peek(decoder(compression, open()?).map_err(broken)?).map_err(broken)?;
            match inner {
                // Already raw + zstd (say, from an image recipe): kept byte for byte.
                Magic::Raw if compression == Magic::Zstd => {
                    let mut check = decoder(compression, open()?).map_err(broken)?;
                    let raw_size = io::copy(&mut check, &mut io::sink()).map_err(broken)?;
                    io::copy(&mut open()?, out).map_err(io_err(format_args!("copying {label}")))?;
                    Ok(converted(raw_size, Some(compression), Magic::Raw))
                }
                Magic::Raw => {
                    let raw_size = compress(stream, out, level, label)?;
                    Ok(converted(raw_size, Some(compression), Magic::Raw))
                }
                Magic::Qcow2 => {
                    let qcow2 = work.join("image.qcow2");
                    let staged = || -> io::Result<()> {
                        let mut staged = File::create(&qcow2)?;
                        io::copy(&mut BufReader::with_capacity(1 << 20, stream), &mut staged)?;
                        staged.sync_all()
                    };
                    staged().map_err(broken)?;
                    let raw_size = qcow2_to_zstd(&qcow2, label, work, out, level)?;
                    std::fs::remove_file(&qcow2).map_err(io_err(qcow2.display()))?;
                    Ok(converted(raw_size, Some(compression), Magic::Qcow2))
                }
                twice => Err(ImageError::Invalid(format!(
                    "{label}: {} data inside {}: decompress it to a disk image first",
                    twice.suffix(),
                    compression.suffix()
                ))),
            }
        }
    }
}

/// Compresses a raw disk into `out`; returns its size.
fn compress(
    raw: impl Read,
    out: &mut HashingWriter<File>,
    level: i32,
    label: &str,
) -> Result<u64, ImageError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let mut enc = zstd::Encoder::new(out, level)
        .and_then(|mut e| e.multithread(threads).map(|()| e))
        .map_err(|e| ImageError::Invalid(format!("zstd level {level}: {e}")))?;
    let raw_size = io::copy(&mut BufReader::with_capacity(4 << 20, raw), &mut enc)
        .map_err(read_err(format_args!("reading and compressing {label}")))?;
    enc.finish()
        .map_err(io_err("writing the compressed image"))?;
    Ok(raw_size)
}

/// Converts a qcow2 file with `qemu-img` to raw in `work`, then compresses that.
/// A qcow2 may name a backing or data file elsewhere on this server: such a file
/// is refused, so an image from a URL cannot pull local files into what is served.
fn qcow2_to_zstd(
    qcow2: &Path,
    label: &str,
    work: &Path,
    out: &mut HashingWriter<File>,
    level: i32,
) -> Result<u64, ImageError> {
    let info = Process::new("qemu-img")
        .args(["info", "-f", "qcow2", "--output=json"])
        .arg(qcow2)
        .output()
        .map_err(io_err("running qemu-img (apt-get install qemu-utils)"))?;
    if !info.status.success() {
        return Err(ImageError::Invalid(format!(
            "{label}: qemu-img info: {}",
            String::from_utf8_lossy(&info.stderr).trim()
        )));
    }
    let info: serde_json::Value = serde_json::from_slice(&info.stdout)
        .map_err(|e| ImageError::Io(format!("reading qemu-img info of {label}: {e}")))?;
    if let Some(other) = info
        .get("backing-filename")
        .or_else(|| info.pointer("/format-specific/data/data-file"))
    {
        return Err(ImageError::Invalid(format!(
            "{label}: a qcow2 that refers to another file ({other}) is not imported: flatten it first (qemu-img convert -O qcow2)"
        )));
    }
    let raw = work.join("image.raw");
    let status = Process::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(qcow2)
        .arg(&raw)
        .status()
        .map_err(io_err("running qemu-img (apt-get install qemu-utils)"))?;
    if !status.success() {
        return Err(ImageError::Invalid(format!(
            "{label}: qemu-img convert failed"
        )));
    }
    let file = File::open(&raw).map_err(io_err(raw.display()))?;
    let raw_size = compress(file, out, level, label)?;
    std::fs::remove_file(&raw).map_err(io_err(raw.display()))?;
    Ok(raw_size)
}
