//! End-to-end tests: a real server on 127.0.0.1 (ephemeral port) and a small
//! TFTP client written here. Timeouts are only upper bounds; nothing sleeps.

use kiln_model::EventKind;
use kiln_model::event::{EventData, TftpOutcome};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kiln_model::{Event, EventSink};
use kiln_tftp::packet::{encode_ack, encode_error, encode_request};
use kiln_tftp::{ErrorCode, Mode, Options, Packet, Request, RequestKind, TftpConfig, TftpServer};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

mod common;

use common::{UPPER_BOUND, get, get_ok, pattern};

#[derive(Default)]
struct Collect(Mutex<Vec<Event>>, tokio::sync::Notify);

impl EventSink for Collect {
    fn emit(&self, event: Event) {
        self.0.lock().unwrap().push(event);
        self.1.notify_waiters();
    }
}

impl Collect {
    fn kinds(&self) -> Vec<EventKind> {
        self.0.lock().unwrap().iter().map(|e| e.kind).collect()
    }
    fn all(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
}

struct TestServer {
    addr: SocketAddr,
    base: PathBuf,
    root: PathBuf,
    events: Arc<Collect>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), kiln_tftp::TftpError>>,
}

impl TestServer {
    async fn start(
        tag: &str,
        tweak: impl FnOnce(&mut TftpConfig),
        files: HashMap<String, Bytes>,
    ) -> Self {
        let base = std::env::temp_dir().join(format!("kiln-tftp-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let mut cfg = TftpConfig::new("127.0.0.1:0".parse().unwrap(), &root);
        tweak(&mut cfg);
        let events = Arc::new(Collect::default());
        let server = TftpServer::bind(cfg, files, events.clone()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(server.serve(rx));
        TestServer {
            addr,
            base,
            root,
            events,
            stop,
            task,
        }
    }

    fn put(&self, name: &str, data: &[u8]) {
        let p = self.root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    /// Stops the server without waiting out running transfers: they are aborted at once.
    async fn stop_promptly(self) {
        self.stop.send(true).unwrap();
        timeout(Duration::from_secs(10), self.task)
            .await
            .expect("prompt shutdown")
            .unwrap()
            .unwrap();
        std::fs::remove_dir_all(&self.base).unwrap();
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        timeout(UPPER_BOUND, self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
        std::fs::remove_dir_all(&self.base).unwrap();
    }
}

/// A fresh client socket that has sent one request for `name`, and the request's bytes (to
/// send it again, or to reuse as the send buffer).
async fn send_request(
    server: SocketAddr,
    kind: RequestKind,
    name: &str,
    options: Options,
) -> (UdpSocket, Vec<u8>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut out = Vec::new();
    let req = Request {
        kind,
        filename: name.into(),
        mode: Mode::Octet,
        options,
    };
    encode_request(&mut out, &req);
    sock.send_to(&out, server).await.unwrap();
    (sock, out)
}

/// The next datagram on `sock` (its length in `buf`, and its sender), within the upper bound.
async fn recv(sock: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
    timeout(UPPER_BOUND, sock.recv_from(buf))
        .await
        .unwrap()
        .unwrap()
}

/// Send one request and return the first reply (from any port).
async fn request_reply(server: SocketAddr, kind: RequestKind, name: &str) -> Packet<'static> {
    let (sock, _) = send_request(server, kind, name, Options::default()).await;
    let mut buf = vec![0u8; 2048];
    let (n, _) = recv(&sock, &mut buf).await;
    match Packet::parse(&buf[..n]).unwrap() {
        Packet::Error { code, message } => Packet::Error { code, message },
        Packet::Data { block, .. } => Packet::Ack { block }, // stand-in: we only need "data came"
        other => panic!("unexpected {other:?}"),
    }
}

fn rt_opts(blksize: Option<u16>, windowsize: Option<u16>, tsize: bool) -> Options {
    Options {
        blksize,
        windowsize,
        tsize: tsize.then_some(0),
        timeout: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_options() {
    let s = TestServer::start("default", |_| {}, HashMap::new()).await;
    let file = pattern(100_000, 1);
    s.put("undionly.kpxe", &file);
    let got = get_ok(s.addr, "undionly.kpxe", Options::default()).await;
    assert_eq!(got.data, file);
    assert_eq!(got.oack, None, "no options asked, no OACK");
    // Exact multiple of 512: ends with an empty block.
    let file = pattern(1024, 2);
    s.put("even", &file);
    assert_eq!(get_ok(s.addr, "even", Options::default()).await.data, file);
    s.put("empty", b"");
    assert_eq!(get_ok(s.addr, "empty", Options::default()).await.data, b"");

    // The server emits its event after the final ACK, maybe just after we return.
    let events = wait_for(&s.events, |k| {
        k.iter().filter(|k| **k == EventKind::TftpSent).count() == 3
    })
    .await;
    let e = events
        .iter()
        .find(|e| matches!(&e.data, Some(EventData::Tftp { file, .. }) if file == "undionly.kpxe"))
        .unwrap();
    assert_eq!(e.ip, Some("127.0.0.1".parse().unwrap()));
    let Some(EventData::Tftp {
        outcome,
        bytes,
        blksize,
        windowsize,
        ..
    }) = &e.data
    else {
        unreachable!()
    };
    assert_eq!(*outcome, TftpOutcome::Sent);
    assert_eq!(
        (*bytes, *blksize, *windowsize),
        (Some(100_000), Some(512), Some(1))
    );
    assert!(
        e.detail.ends_with("blksize=512 windowsize=1"),
        "{}",
        e.detail
    );
    s.stop().await;
}

/// Poll the event sink (bounded) until `ok` holds: events are emitted by the
/// server task after the client has already seen the last packet.
async fn wait_for(events: &Collect, ok: impl Fn(&[EventKind]) -> bool) -> Vec<Event> {
    timeout(UPPER_BOUND, async {
        loop {
            let notified = events.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ok(&events.kinds()) {
                return events.all();
            }
            notified.await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("events: {:?}", events.kinds()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blksize_windowsize_tsize_and_memory_files() {
    let mem = Bytes::from(pattern(300_000, 3));
    let files = HashMap::from([("ipxe.efi".to_string(), mem.clone())]);
    let s = TestServer::start("window", |_| {}, files).await;
    let got = get_ok(s.addr, "ipxe.efi", rt_opts(Some(1468), Some(16), true)).await;
    assert_eq!(got.data, mem);
    let o = got.oack.unwrap();
    assert_eq!(o.blksize, Some(1468));
    assert_eq!(o.windowsize, Some(16));
    assert_eq!(o.tsize, Some(300_000));
    assert_eq!(o.timeout, None, "not asked, not echoed");
    // In-memory names are matched after normalisation too.
    assert_eq!(
        get_ok(s.addr, "./ipxe.efi", Options::default()).await.data,
        mem
    );

    // Asking for more than the server allows is clamped.
    let got = get_ok(s.addr, "ipxe.efi", rt_opts(Some(9000), Some(500), false)).await;
    assert_eq!(got.data, mem);
    let o = got.oack.unwrap();
    assert_eq!(
        (o.blksize, o.windowsize, o.tsize),
        (Some(1468), Some(64), None)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_numbers_roll_over() {
    // 40 MiB at blksize 512 is 81921 blocks: past 65535 the number wraps to 0.
    let file = Bytes::from(pattern(40 << 20, 4));
    let files = HashMap::from([("big".to_string(), file.clone())]);
    let s = TestServer::start("rollover", |_| {}, files).await;
    let got = get_ok(s.addr, "big", rt_opts(Some(512), Some(64), true)).await;
    assert_eq!(got.data.len(), file.len());
    assert!(got.data == file, "contents differ");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_requests_are_refused() {
    let s = TestServer::start("wrq", |_| {}, HashMap::new()).await;
    let reply = request_reply(s.addr, RequestKind::Write, "upload.bin").await;
    assert_eq!(
        reply,
        Packet::Error {
            code: ErrorCode::AccessViolation as u16,
            message: "read-only server".into()
        }
    );
    assert!(!s.root.join("upload.bin").exists());
    assert_eq!(
        std::fs::read_dir(&s.root).unwrap().count(),
        0,
        "nothing written"
    );
    wait_for(&s.events, |k| k == [EventKind::TftpRefused]).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_and_missing_files_are_refused() {
    let s = TestServer::start("traversal", |_| {}, HashMap::new()).await;
    std::fs::write(s.base.join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(s.base.join("secret"), s.root.join("evil")).unwrap();
    // A link out of the root is only refused when someone other than the
    // operator owns it (giving it away needs root; CI is root).
    let untrusted = std::os::unix::fs::lchown(s.root.join("evil"), Some(4242), Some(4242)).is_ok();
    s.put("sub/ok", b"fine");
    let denied = ErrorCode::AccessViolation as u16;
    for name in [
        "../secret",
        "a/../../secret",
        "/etc/passwd",
        "..\\secret",
        "sub/../../secret",
        "evil",
        "C:\\x",
    ] {
        if name == "evil" && !untrusted {
            continue;
        }
        match request_reply(s.addr, RequestKind::Read, name).await {
            Packet::Error { code, .. } => assert_eq!(code, denied, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    match request_reply(s.addr, RequestKind::Read, "missing").await {
        Packet::Error { code, .. } => assert_eq!(code, ErrorCode::FileNotFound as u16),
        other => panic!("{other:?}"),
    }
    // The same directory still serves what is inside it.
    assert_eq!(
        get_ok(s.addr, "sub/ok", Options::default()).await.data,
        b"fine"
    );
    assert_eq!(
        get_ok(s.addr, "sub\\ok", Options::default()).await.data,
        b"fine"
    );
    let events = wait_for(&s.events, |k| {
        k.iter().filter(|k| **k == EventKind::TftpRefused).count() == 8
    })
    .await;
    assert!(events.iter().all(|e| e.kind != EventKind::TftpSent
        || matches!(&e.data, Some(EventData::Tftp { file, .. }) if file.starts_with("sub"))));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_transfers() {
    // 200 clients, all on 127.0.0.1: lift the per-address cap for this test.
    let s = TestServer::start("concurrent", |c| c.max_per_source = 256, HashMap::new()).await;
    let file = Arc::new(pattern(200_000, 5));
    s.put("undionly.kpxe", &file);
    let mut tasks = Vec::new();
    for i in 0..200u16 {
        let addr = s.addr;
        let opts = match i % 3 {
            0 => Options::default(),
            1 => rt_opts(Some(1468), Some(4), true),
            _ => rt_opts(Some(1024), Some(16), false),
        };
        tasks.push(tokio::spawn(async move {
            get(addr, "undionly.kpxe", opts, |_| false).await
        }));
    }
    for t in tasks {
        let got = timeout(UPPER_BOUND, t)
            .await
            .expect("in time")
            .unwrap()
            .expect("transfer");
        assert!(got.data == *file, "contents differ");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acks_are_retransmitted() {
    let s = TestServer::start(
        "lossy",
        |c| c.default_timeout = Duration::from_millis(50),
        HashMap::new(),
    )
    .await;
    let file = pattern(60_000, 6);
    s.put("f", &file);
    // Lock-step, losing every 6th ACK; windows of 4, losing every other one
    // (each loss costs one 50 ms timeout).
    let cases = [
        (Options::default(), 6),
        (rt_opts(Some(1468), Some(4), true), 2),
    ];
    for (opts, every) in cases {
        let got = timeout(
            UPPER_BOUND,
            get(s.addr, "f", opts.clone(), |n| n % every == 0),
        )
        .await
        .unwrap()
        .expect("transfer despite lost ACKs");
        assert!(got.data == file, "contents differ ({opts:?})");
        assert!(got.out_of_order > 0, "the server retransmitted");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranger_packets_do_not_disturb_a_transfer() {
    let s = TestServer::start("tid", |_| {}, HashMap::new()).await;
    let file = pattern(5000, 7);
    s.put("f", &file);
    // Garbage and stray packets at the request port do not stop the server.
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x04\x00\x01",
        b"\x00\x09zz",
        b"\x00\x01name-without-mode",
    ] {
        stranger.send_to(junk, s.addr).await.unwrap();
    }

    // Drive a transfer by hand so the stranger can write to its TID midway.
    let (client, mut out) = send_request(s.addr, RequestKind::Read, "f", Options::default()).await;
    let mut buf = vec![0u8; 1024];
    let mut data = Vec::new();
    let mut tid = None;
    loop {
        let (n, from) = recv(&client, &mut buf).await;
        let tid = *tid.get_or_insert(from);
        let Packet::Data { block, data: d } = Packet::parse(&buf[..n]).unwrap() else {
            panic!()
        };
        data.extend_from_slice(d);
        if block == 2 {
            // Someone else ACKs far ahead and sends an error to our TID.
            encode_ack(&mut out, 9);
            stranger.send_to(&out, tid).await.unwrap();
            encode_error(&mut out, ErrorCode::NotDefined, "go away");
            stranger.send_to(&out, tid).await.unwrap();
        }
        encode_ack(&mut out, block);
        client.send_to(&out, tid).await.unwrap();
        if d.len() < 512 {
            break;
        }
    }
    assert_eq!(data, file);
    wait_for(&s.events, |k| k == [EventKind::TftpSent]).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_request_does_not_start_a_second_transfer() {
    let s = TestServer::start(
        "dup",
        |c| {
            c.default_timeout = Duration::from_millis(200);
            c.retries = 0;
        },
        HashMap::new(),
    )
    .await;
    s.put("f", &pattern(2000, 11));
    let (c, request) = send_request(s.addr, RequestKind::Read, "f", Options::default()).await;
    c.send_to(&request, s.addr).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let (n, tid) = recv(&c, &mut buf).await;
    assert!(matches!(
        Packet::parse(&buf[..n]).unwrap(),
        Packet::Data { block: 1, .. }
    ));
    // We never ACK: the next packet is the one transfer giving up, not a
    // DATA 1 from a second transfer.
    let (n, from) = recv(&c, &mut buf).await;
    assert_eq!(from, tid);
    assert!(matches!(
        Packet::parse(&buf[..n]).unwrap(),
        Packet::Error { .. }
    ));
    wait_for(&s.events, |k| k == [EventKind::TftpFailed]).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_then_shutdown_aborts_transfers() {
    let s = TestServer::start(
        "busy",
        |c| {
            c.max_transfers = 1;
            c.default_timeout = Duration::from_secs(30);
        },
        HashMap::new(),
    )
    .await;
    s.put("f", &pattern(10_000, 8));
    // Client A takes the only slot and then stays silent.
    let (a, _) = send_request(s.addr, RequestKind::Read, "f", Options::default()).await;
    let mut buf = vec![0u8; 1024];
    let (n, _) = recv(&a, &mut buf).await;
    assert!(matches!(
        Packet::parse(&buf[..n]).unwrap(),
        Packet::Data { block: 1, .. }
    ));

    let reply = request_reply(s.addr, RequestKind::Read, "f").await;
    assert_eq!(
        reply,
        Packet::Error {
            code: 0,
            message: "server busy".into()
        }
    );

    // Shutdown does not wait 30 s for A: its transfer is aborted with an ERROR.
    s.stop_promptly().await;
    let (n, _) = recv(&a, &mut buf).await;
    assert_eq!(
        Packet::parse(&buf[..n]).unwrap(),
        Packet::Error {
            code: 0,
            message: "server shutting down".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_slot() {
    let s = TestServer::start(
        "per-source",
        |c| {
            c.max_per_source = 2;
            c.default_timeout = Duration::from_secs(30);
        },
        HashMap::new(),
    )
    .await;
    s.put("f", &pattern(10_000, 8));
    // Two silent clients on 127.0.0.1 hold two transfers...
    let mut buf = vec![0u8; 1024];
    let mut held = Vec::new();
    for _ in 0..2 {
        let (sock, _) = send_request(s.addr, RequestKind::Read, "f", Options::default()).await;
        let (n, _) = recv(&sock, &mut buf).await;
        assert!(matches!(
            Packet::parse(&buf[..n]).unwrap(),
            Packet::Data { block: 1, .. }
        ));
        held.push(sock);
    }
    // ...and a third from the same address is refused, though slots are free.
    let reply = request_reply(s.addr, RequestKind::Read, "f").await;
    assert_eq!(
        reply,
        Packet::Error {
            code: 0,
            message: "too many transfers from this address".into()
        }
    );
    let refused = wait_for(&s.events, |k| k.contains(&EventKind::TftpRefused)).await;
    assert!(
        refused
            .iter()
            .any(|e| matches!(&e.data, Some(EventData::Tftp { reason: Some(r), .. }) if r.contains("too many transfers")))
    );
    drop(held);
    s.stop_promptly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_probe_abort_is_not_a_failure() {
    let s = TestServer::start("probe", |_| {}, HashMap::new()).await;
    s.put("f", &pattern(4000, 9));
    // PXE ROMs: RRQ with tsize, read the OACK, abort with ERROR 8, ask again.
    let (c, mut out) =
        send_request(s.addr, RequestKind::Read, "f", rt_opts(None, None, true)).await;
    let mut buf = vec![0u8; 1024];
    let (n, tid) = recv(&c, &mut buf).await;
    let Packet::Oack(o) = Packet::parse(&buf[..n]).unwrap() else {
        panic!()
    };
    assert_eq!(o.tsize, Some(4000));
    encode_error(&mut out, ErrorCode::OptionRefused, "size probe");
    c.send_to(&out, tid).await.unwrap();
    get_ok(s.addr, "f", rt_opts(Some(1468), None, true)).await;
    let events = wait_for(&s.events, |k| k.contains(&EventKind::TftpSent)).await;
    assert!(
        events.iter().all(|e| e.kind != EventKind::TftpFailed),
        "{events:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_fetches_the_same_bytes() {
    let Ok(v) = std::process::Command::new("curl").arg("--version").output() else {
        eprintln!("note: curl not installed; skipping");
        return;
    };
    let protocols = String::from_utf8_lossy(&v.stdout);
    if !protocols
        .lines()
        .any(|l| l.starts_with("Protocols:") && l.split_whitespace().any(|p| p == "tftp"))
    {
        eprintln!("note: this curl has no tftp support; skipping");
        return;
    }
    let s = TestServer::start("curl", |_| {}, HashMap::new()).await;
    let file = pattern(1_000_000, 10);
    s.put("undionly.kpxe", &file);
    let dest = s.base.join("out");
    let url = format!("tftp://{}/undionly.kpxe", s.addr);
    let args = ["-sS", "--max-time", "60", "--tftp-blksize", "1468", "-o"];
    let dest2 = dest.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(args)
            .arg(&dest2)
            .arg(&url)
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(status.success(), "curl failed: {status}");
    assert!(
        std::fs::read(&dest).unwrap() == file,
        "curl got different bytes"
    );
    let events = wait_for(&s.events, |k| k.contains(&EventKind::TftpSent)).await;
    assert!(
        events.iter().any(|e| matches!(
            e.data,
            Some(EventData::Tftp {
                blksize: Some(1468),
                ..
            })
        )),
        "{events:?}"
    );
    s.stop().await;
}
