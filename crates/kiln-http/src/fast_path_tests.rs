//! The served connection loop over real loopback sockets: the sendfile path, the hand-over
//! to hyper on the same connection, keep-alive rules, disconnects and shutdown.

use kiln_model::EventKind;
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
        .filter(|e| e.kind == EventKind::HttpArtifact)
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

// ---- Limits: caps and timeouts (virtual time: `start_paused` advances the clock whenever
// every task waits, and real loopback sockets deliver at once, so each wait below ends by
// the server's timer or the client's own pace, never by wall-clock luck).

/// A server under `limits` serving `app`.
async fn start_limited(app: axum::Router, limits: crate::HttpLimits) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::serve_with_limits(
        listener,
        app,
        limits,
        None,
        async move {
            let _ = rx.await;
        },
    ));
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

fn limits() -> crate::HttpLimits {
    crate::HttpLimits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(30),
        send_timeout: Duration::from_secs(20),
        max_connections: 100,
        max_per_source: 10,
    }
}

impl Client {
    /// A connection from `source` (any 127.0.0.0/8 address works on loopback).
    async fn connect_from(addr: SocketAddr, source: [u8; 4]) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        Client {
            stream: socket.connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// True when the server ended the connection: end of stream or a reset, after
    /// whatever it had sent (kept in `buf`).
    async fn ended(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk).await {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(e) => panic!("reading: {e}"),
            }
        }
    }

    /// True when a response head arrives, false when the connection ends first.
    async fn answered(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        while !self.buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match self.stream.read(&mut chunk).await {
                Ok(0) => return false,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return false,
                Err(e) => panic!("reading: {e}"),
            }
        }
        true
    }

    /// True while the server keeps the connection open (nothing to read, no end).
    fn open(&self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// A connection whose receive buffer is small, so the server's send waits on the
    /// client's reads rather than on a few MiB of kernel buffer.
    async fn connect_small_window(addr: SocketAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 << 10).unwrap();
        Client {
            stream: socket.connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// Read one response's head and `len` body bytes, `chunk` bytes per `pause`.
    async fn slow_body(&mut self, len: usize, chunk: usize, pause: Duration) -> Vec<u8> {
        let a = self.answer(true).await; // head only; the body is read below
        assert_eq!(a.status(), 200, "{a:?}");
        let mut body = std::mem::take(&mut self.buf);
        let mut piece = vec![0u8; chunk];
        while body.len() < len {
            tokio::time::sleep(pause).await;
            let want = chunk.min(len - body.len());
            let got = self.stream.read_exact(&mut piece[..want]).await;
            assert!(
                got.is_ok(),
                "cut after {} of {len} bytes: {got:?}",
                body.len()
            );
            body.extend_from_slice(&piece[..want]);
        }
        body
    }
}

/// Counters seen by the metrics macros on this thread (the test runtime is single-threaded).
#[derive(Default, Clone)]
struct Counters(std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>);

struct CounterCell(String, Counters);

impl metrics::CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        *self.1.0.lock().unwrap().entry(self.0.clone()).or_default() += value;
    }
    fn absolute(&self, value: u64) {
        self.1.0.lock().unwrap().insert(self.0.clone(), value);
    }
}

impl metrics::Recorder for Counters {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        metrics::Counter::from_arc(std::sync::Arc::new(CounterCell(name, self.clone())))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

impl Counters {
    fn get(&self, name: &str) -> u64 {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_a_whole_head_is_closed_after_the_header_timeout() {
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let f = fixture();
    let server = start_limited(f.app.clone(), limits()).await;

    // Silent.
    let mut silent = Client::connect(server.addr).await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(silent.open(), "closed before the header timeout");
    assert!(silent.ended().await);
    assert!(silent.buf.is_empty());

    // Slow loris: a byte every 2 s keeps coming, the head never completes.
    let mut loris = Client::connect(server.addr).await;
    loris
        .stream
        .write_all(b"GET /artifacts/vmlinuz HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut sent = 0;
    while loris.open() && sent < 100 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if loris.stream.write_all(b"X").await.is_err() {
            break;
        }
        sent += 1;
    }
    assert!(
        sent < 50,
        "a head dribbled for {} s was still read",
        sent * 2
    );
    assert!(loris.ended().await);

    // The same on a connection hyper serves (its head went to hyper, a second one dribbles).
    let mut handed = Client::connect(server.addr).await;
    assert_eq!(handed.ask(&get("/healthz", "")).await.status(), 200);
    handed
        .stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(handed.open());
    assert!(handed.ended().await);
    assert!(
        handed.buf.is_empty(),
        "no answer to a head that never completed"
    );

    assert_eq!(counters.get("kiln_http_timeouts_total{phase=header}"), 3);
    server.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_on_both_paths() {
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let f = fixture();
    let server = start_limited(f.app.clone(), limits()).await;
    for (name, path) in [("sendfile", "/artifacts/vmlinuz"), ("hyper", "/healthz")] {
        let mut c = Client::connect(server.addr).await;
        assert_eq!(c.ask(&get(path, "")).await.status(), 200, "{name}");
        // Idle past the header timeout but within the idle timeout: still served.
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert!(c.open(), "{name}: idle connection closed early");
        assert_eq!(c.ask(&get(path, "")).await.status(), 200, "{name}");
        tokio::time::sleep(Duration::from_secs(50)).await;
        assert!(c.open(), "{name}: the idle clock did not restart");
        assert!(c.ended().await, "{name}");
        assert!(c.buf.is_empty(), "{name}");
    }
    assert_eq!(counters.get("kiln_http_timeouts_total{phase=idle}"), 2);
    server.shut_down().await;
}

fn echo_app() -> axum::Router {
    axum::Router::new().route(
        "/echo",
        axum::routing::post(|body: bytes::Bytes| async move { body }),
    )
}

#[tokio::test(start_paused = true)]
async fn a_request_body_that_does_not_arrive_whole_in_time_ends_its_connection() {
    let server = start_limited(echo_app(), limits()).await;
    let post =
        |len: usize| format!("POST /echo HTTP/1.1\r\nHost: kiln\r\nContent-Length: {len}\r\n\r\n");

    // A whole body is echoed, and the connection stays.
    let mut c = Client::connect(server.addr).await;
    let a = c.ask(&(post(5) + "hello")).await;
    assert_eq!((a.status(), &a.body[..]), (200, &b"hello"[..]));

    // A body that stops.
    c.stream
        .write_all((post(100) + "0123456789").as_bytes())
        .await
        .unwrap();
    assert!(c.ended().await, "a stalled body must end the connection");

    // A body that drips a byte every 5 s (each gap far below every timeout).
    let c = Client::connect(server.addr).await;
    let (mut r, mut w) = c.stream.into_split();
    let dripper = tokio::spawn(async move {
        w.write_all(post(100).as_bytes()).await.unwrap();
        for sent in 0..100 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if w.write_all(b"x").await.is_err() {
                return sent;
            }
        }
        100
    });
    let mut answer = Vec::new();
    let _ = r.read_to_end(&mut answer).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Writes fail once the server has closed; the body was far from whole by then.
    assert!(
        dripper.await.unwrap() < 50,
        "a dripped body was read on and on"
    );
    server.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn one_address_holds_at_most_max_per_source_connections() {
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let f = fixture();
    let l = crate::HttpLimits {
        max_per_source: 3,
        ..limits()
    };
    let server = start_limited(f.app.clone(), l).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(server.addr).await;
        assert_eq!(c.ask(&get("/healthz", "")).await.status(), 200);
        held.push(c);
    }
    let mut over = Client::connect(server.addr).await;
    assert!(
        over.ended().await,
        "the 4th connection from one address is closed"
    );
    assert!(over.buf.is_empty());
    // Another address is not affected.
    let mut other = Client::connect_from(server.addr, [127, 0, 0, 2]).await;
    assert_eq!(other.ask(&get("/healthz", "")).await.status(), 200);
    assert_eq!(
        counters.get("kiln_http_connections_refused_total{reason=per_source}"),
        1
    );

    // One held connection closes: its place is free again.
    drop(held.pop());
    let mut admitted = false;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(10)).await; // the server sees the close
        let mut c = Client::connect(server.addr).await;
        c.stream
            .write_all(get("/healthz", "").as_bytes())
            .await
            .unwrap();
        if c.answered().await {
            admitted = true;
            break;
        }
    }
    assert!(admitted, "a freed place was not given to a new connection");
    for c in &held {
        assert!(c.open(), "held connections are untouched");
    }
    server.shut_down().await;
}

#[tokio::test(start_paused = true)]
async fn all_addresses_together_hold_at_most_max_connections() {
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let f = fixture();
    let l = crate::HttpLimits {
        max_connections: 3,
        ..limits()
    };
    let server = start_limited(f.app.clone(), l).await;
    let mut held = Vec::new();
    for i in 1..=3 {
        let mut c = Client::connect_from(server.addr, [127, 0, 0, i]).await;
        assert_eq!(c.ask(&get("/artifacts/vmlinuz", "")).await.status(), 200);
        held.push(c);
    }
    let mut over = Client::connect_from(server.addr, [127, 0, 0, 4]).await;
    assert!(over.ended().await, "the 4th connection in all is closed");
    assert_eq!(
        counters.get("kiln_http_connections_refused_total{reason=total}"),
        1
    );
    assert_eq!(
        counters.get("kiln_http_connections_refused_total{reason=per_source}"),
        0
    );
    // The held ones still work.
    for c in &mut held {
        assert_eq!(c.ask(&get("/healthz", "")).await.status(), 200);
    }
    server.shut_down().await;
}

/// `mib` MiB of a pattern under artifacts/big.
fn big_file(f: &Fixture, mib: u32) -> Vec<u8> {
    let big: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(f._dir.path().join("artifacts/big"), &big).unwrap();
    big
}

// Real time here: a client reading at its own pace while the kernel moves the bytes does
// not mix with a virtual clock (it jumps ahead of the kernel's wake-ups). The limits are
// short, the client slow: the download outlasts every limit but the send timeout
// several times over, and only the outcome is asserted.
#[tokio::test]
async fn a_download_slower_than_the_idle_and_header_timeouts_completes_on_both_paths() {
    let f = fixture();
    let big = big_file(&f, 16);
    let l = crate::HttpLimits {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        send_timeout: Duration::from_secs(30),
        ..limits()
    };
    let server = start_limited(f.app.clone(), l).await;
    // 256 KiB every 50 ms through a small receive window: about 3 s for 16 MiB, most of
    // them with the server waiting to send.
    let mut sendfile = Client::connect_small_window(server.addr).await;
    sendfile
        .stream
        .write_all(get("/artifacts/big", "").as_bytes())
        .await
        .unwrap();
    let body = sendfile
        .slow_body(big.len(), 256 << 10, Duration::from_millis(50))
        .await;
    assert!(body == big, "sendfile download differs");

    let mut hyper = Client::connect_small_window(server.addr).await;
    assert_eq!(hyper.ask(&get("/healthz", "")).await.status(), 200);
    hyper
        .stream
        .write_all(get("/artifacts/big", "").as_bytes())
        .await
        .unwrap();
    let body = hyper
        .slow_body(big.len(), 256 << 10, Duration::from_millis(50))
        .await;
    assert!(body == big, "hyper download differs");
    server.shut_down().await;
}

// Real time too: hyper's file body reads on a blocking thread, which holds a virtual clock.
#[tokio::test]
async fn a_client_that_takes_nothing_of_its_download_is_dropped_after_the_send_timeout() {
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let f = fixture();
    let big = big_file(&f, 64);
    let l = crate::HttpLimits {
        send_timeout: Duration::from_secs(1),
        ..limits()
    };
    let server = start_limited(f.app.clone(), l).await;
    let mut sendfile = Client::connect(server.addr).await;
    let mut hyper = Client::connect(server.addr).await;
    assert_eq!(hyper.ask(&get("/healthz", "")).await.status(), 200);
    for c in [&mut sendfile, &mut hyper] {
        c.stream
            .write_all(get("/artifacts/big", "").as_bytes())
            .await
            .unwrap();
    }
    // Take nothing for well over the send timeout; then the rest of the file is not there.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (name, c) in [("sendfile", &mut sendfile), ("hyper", &mut hyper)] {
        assert!(c.ended().await, "{name}");
        assert!(c.buf.len() < big.len(), "{name}: the whole file went out");
    }
    assert_eq!(counters.get("kiln_http_timeouts_total{phase=send}"), 2);
    server.shut_down().await;
}
