//! Test fixtures: a tiny HTTP/1.1 file server with Range, If-Range, ETag and fault injection,
//! and generated disk images.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// A port on 127.0.0.1 that refuses connections while the returned socket lives: bound, never
/// listening, so no parallel test can be given the port meanwhile (a port bound and dropped can).
pub fn refusing_port() -> (std::os::fd::OwnedFd, u16) {
    use rustix::net::{AddressFamily, SocketType};
    let socket = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    rustix::net::bind(
        &socket,
        &std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0),
    )
    .unwrap();
    let bound = rustix::net::getsockname(&socket).unwrap();
    let port = std::net::SocketAddrV4::try_from(bound).unwrap().port();
    (socket, port)
}

#[derive(Clone)]
pub struct Served {
    pub body: Arc<Vec<u8>>,
    pub etag: String,
}

/// How the server misbehaves.
#[derive(Clone, Default)]
pub struct Faults {
    /// Cut the connection after this many body bytes, for the first `cut_times` responses.
    pub cut_after: u64,
    pub cut_times: usize,
    /// Stop sending (but keep the connection open) at this byte of the file, forever.
    pub stall_after: Option<u64>,
    /// After the first request, replace this path's file (a new version with a new ETag).
    pub replace_after_first: Option<(String, Served)>,
    /// Answer no request after the first until this holds (checked every 10 ms, for at most
    /// 30 s): a test waits for what the client does, not for a fixed time.
    pub hold_after_first_until: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

struct State {
    files: Mutex<HashMap<String, Served>>,
    faults: Mutex<Faults>,
    cuts: AtomicUsize,
    requests: Mutex<Vec<String>>,
}

pub struct Server {
    pub addr: std::net::SocketAddr,
    state: Arc<State>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            files: Mutex::new(HashMap::new()),
            faults: Mutex::new(Faults::default()),
            cuts: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                thread::spawn(move || serve(conn, &st));
            }
        });
        Server { addr, state }
    }

    pub fn add(&self, path: &str, body: Vec<u8>) -> String {
        let etag = format!("\"{}\"", &hex(&sha256(&body))[..16]);
        self.state.files.lock().unwrap().insert(
            path.to_string(),
            Served {
                body: Arc::new(body),
                etag,
            },
        );
        self.url(path)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_faults(&self, f: Faults) {
        *self.state.faults.lock().unwrap() = f;
        self.state.cuts.store(0, Ordering::SeqCst);
    }

    /// Request lines with their Range and If-Range headers, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }
}

pub fn served(body: Vec<u8>, etag: &str) -> Served {
    Served {
        body: Arc::new(body),
        etag: format!("\"{etag}\""),
    }
}

fn serve(conn: TcpStream, st: &State) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let index = {
        let mut log = st.requests.lock().unwrap();
        log.push(format!(
            "{} range={:?} if-range={:?}",
            line.trim(),
            headers.get("range"),
            headers.get("if-range")
        ));
        log.len() - 1
    };
    let faults = st.faults.lock().unwrap().clone();
    if let Some(ready) = faults
        .hold_after_first_until
        .as_ref()
        .filter(|_| index >= 1)
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !ready() && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
    if let Some((p, new)) = faults.replace_after_first.as_ref().filter(|_| index >= 1) {
        st.files.lock().unwrap().insert(p.clone(), new.clone());
    }
    let file = st.files.lock().unwrap().get(&path).cloned();
    let mut out = conn;
    let Some(file) = file else {
        let _ = out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        );
        return;
    };
    let len = file.body.len() as u64;
    let range_start = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok());
    let if_range_ok = headers.get("if-range").is_none_or(|v| *v == file.etag);
    let (status, start) = match range_start {
        Some(s) if if_range_ok && s >= len => {
            let _ = write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return;
        }
        Some(s) if if_range_ok => (206, s),
        _ => (200, 0),
    };
    let mut head = format!(
        "HTTP/1.1 {}\r\nContent-Length: {}\r\nETag: {}\r\nAccept-Ranges: bytes\r\n\
         Content-Type: application/octet-stream\r\nConnection: close\r\n",
        if status == 206 {
            "206 Partial Content"
        } else {
            "200 OK"
        },
        len - start,
        file.etag
    );
    if status == 206 {
        head += &format!("Content-Range: bytes {start}-{}/{len}\r\n", len - 1);
    }
    head += "\r\n";
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    let body = &file.body[start as usize..];
    let mut limit = body.len();
    let cut = faults.cut_times > 0 && st.cuts.fetch_add(1, Ordering::SeqCst) < faults.cut_times;
    if cut {
        limit = limit.min(faults.cut_after as usize);
    }
    if let Some(stall) = faults.stall_after {
        limit = limit.min(stall.saturating_sub(start) as usize);
    }
    for piece in body[..limit].chunks(64 * 1024) {
        if out.write_all(piece).is_err() {
            return;
        }
    }
    if faults.stall_after.is_some() && limit < body.len() {
        thread::sleep(Duration::from_secs(20));
    }
    let _ = out.flush();
    let _ = out.shutdown(Shutdown::Both);
}

pub fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A ~6 MiB "disk image": an MBR-ish header, random runs, zero runs, text, an unaligned tail.
pub fn image() -> Vec<u8> {
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMAGE.get_or_init(make_image).clone()
}

/// The test image compressed (gzip, xz, zstd), computed once per test binary.
pub fn compressed() -> &'static [Vec<u8>; 3] {
    static ENCODED: std::sync::OnceLock<[Vec<u8>; 3]> = std::sync::OnceLock::new();
    ENCODED.get_or_init(|| {
        let img = image();
        let (g, (x, z)) = std::thread::scope(|s| {
            let g = s.spawn(|| gzip(&img));
            let x = s.spawn(|| xz(&img));
            let z = zstd(&img);
            (g.join().unwrap(), (x.join().unwrap(), z))
        });
        [g, x, z]
    })
}

fn make_image() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&[0xeb, 0x63, 0x90]);
    v.extend(random(1 << 20, 1));
    v.extend(vec![0u8; 2 << 20]);
    v.extend(random(300 * 1024 + 7, 2));
    v.extend(vec![0u8; 64 * 1024]);
    let text = b"kiln provisions bare metal; the agent streams images to disk.\n";
    while v.len() < (5 << 20) {
        v.extend_from_slice(text);
    }
    v.extend(vec![0u8; (1 << 20) + 123]);
    v.push(0x55);
    v
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

pub fn xz(b: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

pub fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 3).unwrap()
}

/// A fresh scratch directory under the target dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("kiln-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file filled with a recognisable pattern, standing in for a disk with old contents.
pub fn patterned_file(path: &std::path::Path, len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| 0xe0 | (i % 16) as u8).collect();
    std::fs::write(path, &data).unwrap();
    data
}
