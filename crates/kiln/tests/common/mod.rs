//! A `kiln serve` for the CLI's tests: every command but `serve`, `demo` and `token` is a
//! client of its admin API. Loopback only, every port picked by the system, no DHCP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `kiln serve --data-dir DATA`; killed (and reaped) on drop.
pub struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts the server on `data` (made if missing) and waits until it has written
    /// `DATA/api.json`, which the CLI finds with `--data-dir DATA`. Its log, artifacts and
    /// TFTP root go in `DATA/../serve` (keep `data` inside the test's temp dir).
    pub fn start(data: &Path) -> Server {
        let scratch = data
            .parent()
            .expect("a data dir inside the test's temp dir")
            .join("serve");
        let (artifacts, tftp_root) = (scratch.join("artifacts"), scratch.join("tftp"));
        for d in [data, &artifacts, &tftp_root] {
            std::fs::create_dir_all(d).expect("making the server's directories");
        }
        let log = scratch.join("serve.log");
        let out = std::fs::File::create(&log).expect("creating the server log");
        let err = out.try_clone().expect("cloning the log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args(["--dhcp-mode", "off", "--address", "127.0.0.1"])
            .args([
                "--http-port",
                "0",
                "--agent-tls-port",
                "0",
                "--tftp-port",
                "0",
            ])
            .args(["--api-listen", "127.0.0.1:0"])
            .arg("--artifacts")
            .arg(&artifacts)
            .arg("--tftp-root")
            .arg(&tftp_root)
            .env_remove("KILN_DATA_DIR")
            .env_remove("KILN_TOKEN")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting kiln serve");
        let mut server = Server { child, log };
        let ready = data.join("api.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.is_file() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("kiln serve exited ({status}): {}", server.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "kiln serve wrote no {} within 60 s: {}",
                ready.display(),
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
