//! Throughput, separate from the functional tests and ignored by default.
//! Run by hand in release mode, ideally in a throw-away network namespace
//! with a realistic round trip on `lo` (netem delays each direction):
//!
//! ```sh
//! unshare -n sh -c 'ip link set lo up && tc qdisc add dev lo root netem delay 500us &&
//!   cargo test -p kiln-tftp --release --test perf -- --ignored --nocapture'
//! ```
//!
//! To measure another server with the same client, set
//! `KILN_TFTP_PERF_PEER=127.0.0.1:69` and `KILN_TFTP_PERF_PEER_ROOT=<its root>`
//! (the test writes `perf.bin` there). `KILN_TFTP_PERF_BYTES` sets the size.
//! Where netem is missing, `KILN_TFTP_PERF_ACK_DELAY_US=1000` makes the client
//! hold each ACK back instead (a 1 ms round trip, near enough).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{get_with, pattern};
use kiln_model::NullSink;
use kiln_tftp::{Options, TftpConfig, TftpServer};
use tokio::sync::watch;

const CASES: [(u16, u16); 5] = [(512, 1), (1468, 1), (1468, 4), (1468, 16), (1468, 64)];

async fn measure(label: &str, addr: SocketAddr, file: &[u8], ack_delay: Duration) {
    for (blksize, windowsize) in CASES {
        let opts = Options {
            blksize: Some(blksize),
            windowsize: Some(windowsize),
            ..Options::default()
        };
        let t = Instant::now();
        let got = get_with(addr, "perf.bin", opts, |_| false, ack_delay)
            .await
            .expect("transfer");
        let secs = t.elapsed().as_secs_f64();
        assert!(got.data == file, "{label}: contents differ");
        let granted = got.oack.as_ref().and_then(|o| o.windowsize).unwrap_or(1);
        println!(
            "{label:>8} blksize={blksize:<5} windowsize={windowsize:<3} (granted {granted:<3}) {:>8.2} MB/s  {secs:.3} s",
            file.len() as f64 / secs / 1e6
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "performance: run by hand with --release --ignored --nocapture"]
async fn throughput() {
    let size = std::env::var("KILN_TFTP_PERF_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4 << 20);
    let file = Bytes::from(pattern(size, 42));
    let ack_delay = Duration::from_micros(
        std::env::var("KILN_TFTP_PERF_ACK_DELAY_US")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    );

    let root = std::env::temp_dir().join(format!("kiln-tftp-perf-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let cfg = TftpConfig::new("127.0.0.1:0".parse().unwrap(), &root);
    let files = HashMap::from([("perf.bin".to_string(), file.clone())]);
    let server = TftpServer::bind(cfg, files, Arc::new(NullSink))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(server.serve(rx));
    measure("kiln", addr, &file, ack_delay).await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    std::fs::remove_dir_all(&root).unwrap();

    if let (Ok(peer), Ok(peer_root)) = (
        std::env::var("KILN_TFTP_PERF_PEER"),
        std::env::var("KILN_TFTP_PERF_PEER_ROOT"),
    ) {
        std::fs::write(std::path::Path::new(&peer_root).join("perf.bin"), &file).unwrap();
        measure("peer", peer.parse().unwrap(), &file, ack_delay).await;
    }
}
