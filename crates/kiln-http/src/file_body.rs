//! A byte range of a file as an HTTP body.
//!
//! One blocking reader per response `pread`s into a few reused buffers and hands each to hyper
//! as `Bytes` without copying; a buffer returns to its response's pool when hyper has written it.
//! Compared with `tokio::fs` + `ReaderStream` this saves one copy of every byte, a fresh
//! (page-faulting) allocation per chunk, and a thread hand-off per read: it is what keeps
//! multi-GiB image downloads near nginx's `sendfile` speed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use bytes::Bytes;
use tokio::sync::mpsc;

/// Read size: large reads keep syscalls off the profile.
const CHUNK: usize = 256 * 1024;
/// Chunks queued ahead of the socket.
const DEPTH: usize = 4;
/// Buffers kept for reuse per response (queued + one in hyper's hands + one being filled).
const POOL: usize = DEPTH + 2;

type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// A filled buffer; dropping it (after hyper wrote it) puts the buffer back in the pool.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
    pool: Pool,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < POOL
        {
            pool.push(buf);
        }
    }
}

/// `count` bytes of `file` from `start`, streamed; counted as bytes of the served `root`.
pub(crate) fn file_body(file: File, start: u64, count: u64, root: &'static str) -> Body {
    let (tx, rx) = mpsc::channel(DEPTH);
    let sent = metrics::counter!("kiln_http_file_bytes_total", "root" => root);
    tokio::task::spawn_blocking(move || read_range(&file, start, count, &tx, &sent));
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

fn read_range(
    file: &File,
    start: u64,
    count: u64,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    sent: &metrics::Counter,
) {
    let pool: Pool = Arc::new(Mutex::new(Vec::with_capacity(POOL)));
    let (mut offset, end) = (start, start + count);
    while offset < end {
        let mut buf = pool
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_else(|| vec![0; CHUNK]);
        let want = usize::try_from(end - offset).map_or(CHUNK, |n| n.min(CHUNK));
        let read = match file.read_at(&mut buf[..want], offset) {
            // The file shrank under us: end the body early rather than pad it; the client
            // sees a short response against Content-Length and retries.
            Ok(0) => {
                let _ = tx.blocking_send(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being served",
                )));
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        offset += read as u64;
        let chunk = Chunk {
            buf,
            len: read,
            pool: Arc::clone(&pool),
        };
        if tx.blocking_send(Ok(Bytes::from_owner(chunk))).is_err() {
            return; // the client went away
        }
        sent.increment(read as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Write;

    async fn collect(file: File, start: u64, count: u64) -> Result<Vec<u8>, String> {
        let body = file_body(file, start, count, "test");
        body.collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn streams_exact_ranges_across_chunk_boundaries() {
        let data: Vec<u8> = (0..(CHUNK * 3 + 1234))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        for (start, count) in [
            (0, data.len()),
            (1, CHUNK),
            (CHUNK - 1, CHUNK + 2),
            (data.len() - 1, 1),
        ] {
            let got = collect(f.try_clone().unwrap(), start as u64, count as u64)
                .await
                .unwrap();
            assert_eq!(got, &data[start..start + count], "range {start}+{count}");
        }
    }

    #[tokio::test]
    async fn a_file_that_shrank_ends_in_an_error_not_padding() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1; 1000]).unwrap();
        let err = collect(f, 0, 5000).await.unwrap_err();
        assert!(err.contains("shrank"), "{err}");
    }
}
