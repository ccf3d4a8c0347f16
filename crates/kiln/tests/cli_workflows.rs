//! `kiln workflow` and `kiln events` as clients of a running `kiln serve` (a child process,
//! every port 0, DHCP off): located template problems, exit statuses, and `events --follow`
//! reading the server's event stream.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HARDWARE: &str = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
n1,,,,52:54:00:aa:00:01,10.9.0.11,255.255.255.0,10.9.0.1,10.9.0.1,role=cp,/dev/vda
";

const PATIENCE: Duration = Duration::from_secs(20);

/// A `kiln serve` of its own, stopped (by its PID) when dropped.
struct Serve {
    child: Child,
    dir: tempfile::TempDir,
}

impl Serve {
    fn start() -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // kiln serve refuses to start without its artifacts and TFTP directories.
        let (artifacts, tftp_root) = (dir.path().join("artifacts"), dir.path().join("tftp"));
        for d in [&artifacts, &tftp_root] {
            std::fs::create_dir_all(d).unwrap();
        }
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["serve", "--dhcp-mode", "off", "--address", "127.0.0.1"])
            .args([
                "--http-port",
                "0",
                "--agent-tls-port",
                "0",
                "--tftp-port",
                "0",
            ])
            .args(["--api-listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--artifacts")
            .arg(&artifacts)
            .arg("--tftp-root")
            .arg(&tftp_root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let serve = Serve { child, dir };
        let started = Instant::now();
        while !data.join("api.json").exists() {
            assert!(started.elapsed() < PATIENCE, "kiln serve did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        serve
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.args(args).arg("--data-dir").arg(self.data());
        c
    }

    fn kiln(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("kiln exits, not killed")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: Output) -> String {
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn workflow_commands_and_events_follow_go_through_the_server() {
    let s = Serve::start();
    let csv = s.file("hardware.csv", HARDWARE);
    ok(s.kiln(&["enroll", &csv]));

    // The server parses the template; its problems print as before, located, exit 1.
    let bad = s.file(
        "bad.yaml",
        "name: bad\nactions:\n  - name: boot\n    kind: teleport\n",
    );
    let o = s.kiln(&["workflow", "create", "--template", &bad, "--hardware", "n1"]);
    assert_eq!(code(&o), 1);
    let err = text(&o.stderr);
    // FILE:LINE[:COLUMN]: FIELD: MESSAGE
    let located = err.lines().next().unwrap_or("");
    assert!(located.starts_with(&format!("{bad}:4:")), "{err}");
    assert!(located.contains(": actions[0].kind: unknown kind"), "{err}");
    assert!(err.contains("kiln: 1 problem(s) in"), "{err}");

    // Follow n1's events from now on, through the server's event stream (the cancel below
    // comes more than a second after the follower started).
    let mut follower = s
        .command(&["events", "n1", "--last", "0", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let lines = BufReader::new(follower.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        for l in lines.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });

    let t = s.file(
        "t.yaml",
        "name: reach-agent\nactions:\n  - name: boot\n    kind: reboot\n",
    );
    let created = ok(s.kiln(&["workflow", "create", "--template", &t, "--hardware", "n1"]));
    assert!(created.contains("reach-agent"), "{created}");
    let o = s.kiln(&["workflow", "watch", "n1", "--timeout", "1s"]);
    assert_eq!(code(&o), 3, "still running at the timeout");
    ok(s.kiln(&["workflow", "cancel", "n1"]));
    assert_eq!(
        code(&s.kiln(&["workflow", "cancel", "n1"])),
        1,
        "already ended"
    );
    assert_eq!(
        code(&s.kiln(&["workflow", "watch", "n1"])),
        1,
        "it did not succeed"
    );
    let shown = ok(s.kiln(&["workflow", "show", "n1"]));
    assert!(shown.contains("state     failed"), "{shown}");

    let started = Instant::now();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("workflow.cancelled"))
    {
        let left = PATIENCE.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no workflow.cancelled event followed: {seen:?}"),
        }
    }
    assert!(seen.iter().all(|l| l.contains(" n1 ")), "{seen:?}");
    follower.kill().unwrap();
    follower.wait().unwrap();
    reader.join().unwrap();

    // `-o json` carries each event's typed data beside its words.
    let json = ok(s.kiln(&["events", "n1", "-o", "json"]));
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let created = events
        .iter()
        .find(|e| e["kind"] == "workflow.created")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(created["data"]["type"], "workflow_created", "{created}");
    assert_eq!(created["data"]["template"], "reach-agent", "{created}");
    let cancelled = events
        .iter()
        .find(|e| e["kind"] == "workflow.cancelled")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(
        cancelled["data"]["type"], "workflow_cancelled",
        "{cancelled}"
    );
    assert_eq!(
        cancelled["data"]["workflow"], created["data"]["workflow"],
        "{cancelled}"
    );
}
