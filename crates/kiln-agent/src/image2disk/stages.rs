//! Stages 2 and 3: decompress (by magic bytes) and write (skipping zeros when safe).

use std::fmt;
use std::io::{self, BufRead, Read};
use std::sync::mpsc::{Receiver, Sender, SyncSender};

use super::download::Up;
use super::format::{Format, MAGIC_LEN};
use super::target::{AlignedBuf, Target, ZERO_BLOCK, plan_writes};
use super::{Ctx, Error, StageError};

/// Size of the write buffers (decompressed data).
pub(super) const WRITE_BUF: usize = 4 << 20;

/// Decompress → write messages. A channel that closes without `End` means an earlier stage
/// stopped.
pub(super) enum Down {
    /// First message: what the stream is and the image size, when known.
    Start {
        image_size: Option<u64>,
    },
    Data(AlignedBuf, usize),
    End,
}

/// The download stopped before `End`: not the decompressor's fault.
#[derive(Debug)]
struct UpstreamStopped;

impl fmt::Display for UpstreamStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the download stopped")
    }
}

impl std::error::Error for UpstreamStopped {}

/// Reads the download's chunks as one stream, handing used chunks back for reuse.
pub(super) struct ChannelReader {
    rx: Receiver<Up>,
    free: Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    len: usize,
    ended: bool,
}

impl ChannelReader {
    pub(super) fn new(rx: Receiver<Up>, free: Sender<Vec<u8>>) -> ChannelReader {
        ChannelReader {
            rx,
            free,
            cur: Vec::new(),
            pos: 0,
            len: 0,
            ended: false,
        }
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.len && !self.ended {
            match self.rx.recv() {
                Ok(Up::Data(buf, len)) => {
                    let used = std::mem::replace(&mut self.cur, buf);
                    if used.capacity() > 0 {
                        let _ = self.free.send(used);
                    }
                    self.pos = 0;
                    self.len = len;
                }
                Ok(Up::End) => self.ended = true,
                Err(_) => return Err(io::Error::other(UpstreamStopped)),
            }
        }
        Ok(&self.cur[self.pos..self.len])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.len);
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

fn read_error(format: Format, e: io::Error) -> StageError {
    if e.get_ref()
        .is_some_and(|inner| inner.is::<UpstreamStopped>())
    {
        StageError::Aborted
    } else {
        StageError::Failed(Error::Decompress(format!("{format} stream: {e}")))
    }
}

/// Detects the format, then decompresses into aligned write buffers. `declared_size` is the
/// image size given by the caller (`--size`); for a raw stream Content-Length is used.
pub(super) fn run(
    mut input: ChannelReader,
    declared_size: Option<u64>,
    ctx: &Ctx<'_>,
    tx: SyncSender<Down>,
    free: Receiver<AlignedBuf>,
) -> Result<Format, StageError> {
    let mut magic = [0u8; MAGIC_LEN];
    let mut n = 0;
    while n < MAGIC_LEN {
        match input.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(Format::Raw, e)),
        }
    }
    let format = Format::detect(&magic[..n]);
    let image_size = match format {
        Format::Raw => declared_size.or(ctx.download_total()),
        _ => declared_size,
    };
    ctx.set_format(format, image_size);
    tx.send(Down::Start { image_size })
        .map_err(|_| StageError::Aborted)?;

    let input = io::Cursor::new(magic[..n].to_vec()).chain(input);
    let mut reader: Box<dyn Read> = match format {
        Format::Raw => Box::new(input),
        Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Format::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(input)),
        Format::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(input).map_err(|e| read_error(format, e))?,
        ),
    };
    loop {
        let mut buf = free
            .try_recv()
            .unwrap_or_else(|_| AlignedBuf::new(WRITE_BUF));
        let mut len = 0;
        let space = buf.as_mut_slice();
        while len < space.len() {
            match reader.read(&mut space[len..]) {
                Ok(0) => break,
                Ok(k) => len += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(format, e)),
            }
        }
        let eof = len < buf.len();
        if len > 0 {
            tx.send(Down::Data(buf, len))
                .map_err(|_| StageError::Aborted)?;
        }
        if eof {
            break;
        }
    }
    tx.send(Down::End).map_err(|_| StageError::Aborted)?;
    Ok(format)
}

pub(super) struct Written {
    pub bytes: u64,
    pub skipped: u64,
}

/// Checks the size, then writes. The target is claimed (from then on a failure wipes it, and
/// the download can no longer start over) just before the first write.
pub(super) fn write(
    target: &Target,
    ctx: &Ctx<'_>,
    rx: Receiver<Down>,
    free: Sender<AlignedBuf>,
) -> Result<Written, StageError> {
    let image_size = match rx.recv() {
        Ok(Down::Start { image_size }) => image_size,
        Ok(_) => unreachable!("the decompressor sends Start first"),
        Err(_) => return Err(StageError::Aborted),
    };
    if let Some((needed, capacity)) = image_size.zip(target.capacity()).filter(|(n, c)| n > c) {
        return Err(StageError::Failed(Error::DiskTooSmall {
            path: target.path().to_owned(),
            needed,
            capacity,
        }));
    }
    let claim = || {
        if !ctx.claim_write() {
            return Err(StageError::Aborted);
        }
        let (zeros_until, note) = target.prepare(image_size);
        ctx.event(&note);
        Ok(zeros_until)
    };
    let mut zeros_until = None;
    let min_skip = target.min_zero_skip();
    let mut offset = 0u64;
    let mut skipped = 0u64;
    loop {
        let (buf, len) = match rx.recv() {
            Ok(Down::Data(buf, len)) => (buf, len),
            Ok(Down::End) => break,
            Ok(Down::Start { .. }) => unreachable!("Start comes once"),
            Err(_) => return Err(StageError::Aborted),
        };
        let end = offset + len as u64;
        check_fits(target, image_size, end)?;
        let zeros_until = match zeros_until {
            Some(z) => z,
            None => *zeros_until.insert(claim()?),
        };
        let skippable = zeros_until.saturating_sub(offset).min(len as u64) as usize;
        let data = &buf.as_slice()[..len];
        let written = write_chunk(target, data, offset, skippable, min_skip)?;
        skipped += (len - written) as u64;
        offset = end;
        ctx.set_written(offset, skipped);
        let _ = free.send(buf);
    }
    if zeros_until.is_none() {
        claim()?;
    }
    target.finish(offset).map_err(|e| {
        StageError::Failed(Error::Write(format!(
            "flush {}: {e}",
            target.path().display()
        )))
    })?;
    Ok(Written {
        bytes: offset,
        skipped,
    })
}

/// An image that runs to `end` must stay within its declared size and the target.
fn check_fits(target: &Target, image_size: Option<u64>, end: u64) -> Result<(), StageError> {
    if let Some(size) = image_size.filter(|&size| end > size) {
        // Before the first write nothing is claimed: the target stays untouched.
        return Err(StageError::Failed(Error::Verify(format!(
            "the image is longer than its declared size of {size} bytes"
        ))));
    }
    if let Some(capacity) = target.capacity().filter(|&capacity| end > capacity) {
        // Before the first write nothing is claimed: the target stays untouched.
        return Err(StageError::Failed(Error::Write(format!(
            "the image does not fit: {} holds {capacity} bytes",
            target.path().display()
        ))));
    }
    Ok(())
}

/// Writes `data` at `offset`, skipping zero blocks in its first `skippable` bytes;
/// returns the bytes written.
fn write_chunk(
    target: &Target,
    data: &[u8],
    offset: u64,
    skippable: usize,
    min_skip: usize,
) -> Result<usize, StageError> {
    let mut written = 0;
    for r in plan_writes(data, skippable, ZERO_BLOCK, min_skip) {
        let at = offset + r.start as u64;
        target.write_at(&data[r.clone()], at).map_err(|e| {
            StageError::Failed(Error::Write(format!(
                "{} at byte {at}: {e}",
                target.path().display()
            )))
        })?;
        written += r.len();
    }
    Ok(written)
}
