//! The served connection loop over real loopback sockets: the sendfile path, the hand-over
//! to hyper on the same connection, keep-alive rules, disconnects and shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::tests::{Fixture, fixture};

/// A server on 127.0.0.1 and the means to stop it.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(f: &Fixture) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::serve(listener, f.app.clone(), async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

impl Running {
    /// Signal shutdown and wait for `serve` to return (bounded, so a hang fails the test).
    async fn shut_down(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("serve returned after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// One client connection that reads responses off a byte stream.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Answer {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn status(&self) -> u16 {
        self.status_line.split(' ').nth(1).unwrap().parse().unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).await.unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Read one response; `head_only` for HEAD requests and 304s (no body follows).
    async fn answer(&mut self, head_only: bool) -> Answer {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill().await > 0,
                "connection closed before a response head"
            );
        };
        let head = String::from_utf8(self.buf.drain(..end).collect()).unwrap();
        let mut lines = head.trim_end().split("\r\n");
        let status_line = lines.next().unwrap().to_string();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        let mut a = Answer {
            status_line,
            headers,
            body: Vec::new(),
        };
        let len: usize = match a.header("content-length") {
            Some(n) if !head_only && a.status() != 304 => n.parse().unwrap(),
            _ => 0,
        };
        while self.buf.len() < len {
            assert!(self.fill().await > 0, "connection closed mid-body");
        }
        a.body = self.buf.drain(..len).collect();
        a
    }

    async fn ask(&mut self, request: &str) -> Answer {
        self.stream.write_all(request.as_bytes()).await.unwrap();
        self.answer(request.starts_with("HEAD ")).await
    }

    /// True when the server closed the connection (nothing more to read).
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && self.fill().await == 0
    }
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: kiln\r\n{extra}\r\n")
}

fn vmlinuz() -> Vec<u8> {
    (0..=255u8).cycle().take(10_000).collect()
}

fn artifact_events(f: &Fixture) -> Vec<String> {
    f.events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == "http.artifact")
        .map(|e| {
            assert_eq!(e.ip, Some([127, 0, 0, 1].into()), "{e:?}");
            e.detail.clone()
        })
        .collect()
}

#[tokio::test]
async fn one_connection_serves_ranges_head_304_416_then_hands_over_to_hyper() {
    let f = fixture();
    let server = start(&f).await;
    let mut c = Client::connect(server.addr).await;
    let file = vmlinuz();

    let a = c.ask(&get("/artifacts/vmlinuz", "")).await;
    assert_eq!(a.status_line, "HTTP/1.1 200 OK");
    assert_eq!(a.body, file);
    assert_eq!(a.header("content-length"), Some("10000"));
    assert_eq!(a.header("accept-ranges"), Some("bytes"));
    assert!(a.header("last-modified").is_some() && a.header("date").is_some());
    let etag = a.header("etag").unwrap().to_string();

    let a = c
        .ask(&get("/artifacts/vmlinuz", "Range: bytes=100-199\r\n"))
        .await;
    assert_eq!(a.status(), 206);
    assert_eq!(a.header("content-range"), Some("bytes 100-199/10000"));
    assert_eq!(a.body, file[100..200]);

    let a = c
        .ask(&get("/artifacts/vmlinuz", "Range: bytes=-10\r\n"))
        .await;
    assert_eq!((a.status(), &a.body[..]), (206, &file[9990..]));

    let a = c
        .ask("HEAD /artifacts/vmlinuz HTTP/1.1\r\nHost: kiln\r\n\r\n")
        .await;
    assert_eq!(a.status(), 200);
    assert_eq!(a.header("content-length"), Some("10000"));
    assert_eq!(a.header("etag"), Some(etag.as_str()));

    let a = c
        .ask(&get(
            "/artifacts/vmlinuz",
            &format!("If-None-Match: {etag}\r\n"),
        ))
        .await;
    assert_eq!(a.status(), 304);

    let a = c
        .ask(&get("/artifacts/vmlinuz", "Range: bytes=20000-\r\n"))
        .await;
    assert_eq!(a.status(), 416);
    assert_eq!(a.header("content-range"), Some("bytes */10000"));

    let a = c
        .ask(&get(
            "/artifacts/vmlinuz",
            "Range: bytes=0-9\r\nIf-Range: \"stale\"\r\n",
        ))
        .await;
    assert_eq!((a.status(), a.body.len()), (200, 10_000));

    let a = c.ask(&get("/artifacts/missing", "")).await;
    assert_eq!((a.status(), &a.body[..]), (404, &b"not found\n"[..]));

    // A request of another route on the same connection: hyper takes over, and keeps
    // serving files (by its streaming body) on it.
    let a = c.ask(&get("/healthz", "")).await;
    assert_eq!((a.status(), &a.body[..]), (200, &b"ok\n"[..]));
    let a = c
        .ask(&get("/artifacts/vmlinuz", "Range: bytes=0-3\r\n"))
        .await;
    assert_eq!((a.status(), &a.body[..]), (206, &file[..4]));

    // Every GET became an event with the peer's address (HEAD did not).
    let events = artifact_events(&f);
    assert_eq!(events.len(), 8, "{events:?}");
    assert_eq!(events[1], "GET /artifacts/vmlinuz 206 bytes=100-199");
    assert_eq!(events[4], "GET /artifacts/vmlinuz 416 bytes=20000-");
    server.shut_down().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let f = fixture();
    let server = start(&f).await;
    let mut c = Client::connect(server.addr).await;
    let two = get("/artifacts/vmlinuz", "Range: bytes=0-1\r\n")
        + &get("/artifacts/vmlinuz", "Range: bytes=2-3\r\n")
        + &get("/healthz", "");
    c.stream.write_all(two.as_bytes()).await.unwrap();
    assert_eq!(c.answer(false).await.body, [0, 1]);
    assert_eq!(c.answer(false).await.body, [2, 3]);
    assert_eq!(c.answer(false).await.body, b"ok\n");
    server.shut_down().await;
}

#[tokio::test]
async fn http_1_0_closes_unless_asked_to_keep_alive() {
    let f = fixture();
    let server = start(&f).await;
    let mut c = Client::connect(server.addr).await;
    let a = c.ask("GET /artifacts/vmlinuz HTTP/1.0\r\n\r\n").await;
    assert_eq!(a.status_line, "HTTP/1.0 200 OK");
    assert_eq!(a.body, vmlinuz());
    assert!(c.closed().await, "HTTP/1.0 without keep-alive must close");

    let mut c = Client::connect(server.addr).await;
    let a = c
        .ask("GET /boot/vmlinuz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    assert_eq!(a.header("connection"), Some("keep-alive"));
    let a = c
        .ask("GET /images/vmlinuz HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!((a.status(), a.header("connection")), (200, Some("close")));
    assert!(c.closed().await);
    server.shut_down().await;
}

#[tokio::test]
async fn traversal_is_refused_on_the_sendfile_path() {
    let f = fixture();
    let server = start(&f).await;
    for path in [
        "/artifacts/../secret.txt",
        "/artifacts/%2e%2e/secret.txt",
        "/artifacts/..%2fsecret.txt",
        "/artifacts/a%00b",
    ] {
        let mut c = Client::connect(server.addr).await;
        let a = c.ask(&get(path, "")).await;
        assert!([400, 403, 404].contains(&a.status()), "{path}: {a:?}");
        assert_ne!(a.body, b"nope", "{path} leaked the file");
    }
    server.shut_down().await;
}

#[tokio::test]
async fn a_client_gone_mid_body_ends_only_its_connection() {
    let f = fixture();
    let big: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(f._dir.path().join("artifacts/big"), &big).unwrap();
    let server = start(&f).await;

    let mut c = Client::connect(server.addr).await;
    c.stream
        .write_all(get("/artifacts/big", "").as_bytes())
        .await
        .unwrap();
    while !c.buf.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(c.fill().await > 0);
    }
    drop(c); // 64 MiB cannot all be in flight: the server is mid-body.

    let mut c = Client::connect(server.addr).await;
    let a = c
        .ask(&get("/artifacts/big", "Range: bytes=1000000-1000099\r\n"))
        .await;
    assert_eq!(a.body, big[1_000_000..1_000_100]);
    // Shutdown returns only when every connection task has ended, the broken one too.
    server.shut_down().await;
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections() {
    let f = fixture();
    let server = start(&f).await;
    let mut idle = Client::connect(server.addr).await;
    assert_eq!(idle.ask(&get("/artifacts/vmlinuz", "")).await.status(), 200);
    let mut handed_over = Client::connect(server.addr).await;
    assert_eq!(handed_over.ask(&get("/healthz", "")).await.status(), 200);
    server.shut_down().await;
    assert!(idle.closed().await);
    assert!(handed_over.closed().await);
}

#[tokio::test]
async fn metrics_and_other_routes_work_first_on_a_connection() {
    let f = fixture();
    let server = start(&f).await;
    let mut c = Client::connect(server.addr).await;
    let a = c.ask(&get("/metrics", "")).await;
    assert_eq!(a.body, b"kiln_up 1\n");
    let a = c.ask(&get("/ipxe/52:54:00:00:00:01/boot.ipxe", "")).await;
    assert!(String::from_utf8(a.body).unwrap().starts_with("#!ipxe"));
    server.shut_down().await;
}
