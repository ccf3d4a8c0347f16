//! IpmiBmc against a real BMC: OpenIPMI's `ipmi_sim` on 127.0.0.1 with a chassis_control program that
//! keeps power and boot device in files, cross-checked with ipmitool. Needs `ipmi_sim` (Debian package
//! openipmi) and `ipmitool`; CI installs both.
//!
//! Each ipmi_sim binds port 0 (any free port) and the test reads the port from that process's own
//! socket (/proc/PID). ipmi_sim sets SO_REUSEADDR, so two of them given the same number both bind
//! it and one silently gets the other's packets: a port picked here and handed over could be
//! picked by a parallel test too.

mod common;

use common::{ChassisControl, set_mode, stdout_of};
use kiln_bmc::{
    Bmc, BmcAddress, BootDevice, BootMode, BootOverride, ErrorKind, IpmiBmc, IpmiConfig,
    PowerAction, PowerState,
};
use kiln_ipmi::client::{Client, ClientConfig};
use kiln_ipmi::{CipherSuite, Credentials, ErrorClass, Password};
use kiln_model::Secret;
use std::net::UdpSocket as StdUdp;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} not found: install the Debian package `{package}` (apt-get install {package}); CI installs it"
    );
}

/// A running ipmi_sim with its own config, chassis program and state in a temp dir; killed on drop.
struct Sim {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sim {
    fn start() -> Sim {
        require("ipmi_sim", "openipmi");
        require("ipmitool", "ipmitool");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // ipmi_sim runs the chassis program for power and boot (see the lab's chassis-ctl.sh); it
        // waits out the second a power change takes.
        let ctl = d.join("chassis-ctl.sh");
        ChassisControl {
            default_boot: "default",
            power_seconds: 1,
        }
        .install(&ctl);
        // Modelled on the lab's bmc/lan.conf; the password file is the config (0600).
        let conf = d.join("lan.conf");
        std::fs::write(
            &conf,
            format!(
                r#"name "kiln-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 0
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{ctl} 0x20"
  user 1 true  ""        "test"     user   10  none md2 md5 straight
  user 2 true  "admin"   "password" admin  10  none md2 md5 straight
"#,
                ctl = ctl.display()
            ),
        )
        .unwrap();
        set_mode(&conf, 0o600);
        let emu = d.join("bmc.emu");
        std::fs::write(
            &emu,
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             sel_enable 0x20 1000 0x0a\n\
             mc_enable 0x20\n",
        )
        .unwrap();
        let state = d.join("ipmi_sim-state");
        std::fs::create_dir(&state).unwrap();
        let log = std::fs::File::create(d.join("ipmi_sim.log")).unwrap();
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(&conf)
            .arg("-f")
            .arg(&emu)
            .arg("-s")
            .arg(&state)
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting ipmi_sim");
        let mut sim = Sim {
            child,
            port: 0,
            dir,
        };
        sim.port = sim.wait_bound();
        sim.wait_ready();
        sim
    }

    /// The UDP port this ipmi_sim (by PID) bound, once it has.
    fn wait_bound(&mut self) -> u16 {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(port) = udp_port_of(self.child.id()) {
                return port;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("ipmi_sim exited ({status}); its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "ipmi_sim bound no UDP port within 10 s; its log:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ipmi_sim.log")).unwrap_or_default()
    }

    /// Until ipmi_sim answers Get Channel Authentication Capabilities.
    fn wait_ready(&self) {
        let probe = StdUdp::bind("127.0.0.1:0").unwrap();
        probe.connect(("127.0.0.1", self.port)).unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let req =
            kiln_ipmi::command::Command::request(&kiln_ipmi::command::GetChannelAuthCapabilities);
        let packet = kiln_ipmi::wire::encode_v15_unauthenticated(&req.encode(1));
        let start = Instant::now();
        let mut buf = [0u8; 512];
        while start.elapsed() < Duration::from_secs(10) {
            let _ = probe.send(&packet);
            if probe.recv(&mut buf).is_ok() {
                return;
            }
        }
        panic!(
            "ipmi_sim did not answer on 127.0.0.1:{} within 10 s; its log:\n{}",
            self.port,
            self.log()
        );
    }

    fn address(&self) -> BmcAddress {
        BmcAddress::parse(&format!("ipmi://127.0.0.1:{}", self.port)).unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Lines the chassis program logged for `set power`/`set reset` (each one a power operation run).
    fn power_ops(&self) -> Vec<String> {
        read_lines(&self.path("state/log"))
            .into_iter()
            .filter(|l| l.starts_with("set power") || l.starts_with("set reset"))
            .collect()
    }

    fn ipmitool(&self, args: &[&str]) -> String {
        let mut command = Command::new("ipmitool");
        command
            .args([
                "-I",
                "lanplus",
                "-C",
                "3",
                "-N",
                "5",
                "-R",
                "2",
                "-H",
                "127.0.0.1",
                "-p",
            ])
            .arg(self.port.to_string())
            .args(["-U", "admin", "-P", "password"])
            .args(args);
        let out = stdout_of(&mut command, &format!("ipmitool {args:?}"));
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The local port of process `pid`'s (first) IPv4 UDP socket: its socket inodes from
/// /proc/PID/fd, looked up in the UDP table of its network namespace.
fn udp_port_of(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.ok()?.path()).ok()?;
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).ok()?;
    // "sl local_address rem_address st ... uid timeout inode": local_address is ADDR:PORT in hex.
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let inode = fields.get(9)?;
        if !inodes.iter().any(|i| i == inode) {
            return None;
        }
        let (_, port) = fields.get(1)?.split_once(':')?;
        u16::from_str_radix(port, 16).ok()
    })
}

/// A UDP port on 127.0.0.1 where datagrams meet no socket (so ICMP port unreachable) while the
/// returned socket lives: it holds the port, connected elsewhere, so it takes nothing sent to it
/// and no other test can bind the port meanwhile.
fn refusing_udp_port() -> (StdUdp, u16) {
    let holder = StdUdp::bind("127.0.0.1:0").unwrap();
    holder.connect("127.0.0.1:9").unwrap();
    let port = holder.local_addr().unwrap().port();
    (holder, port)
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn config() -> IpmiConfig {
    IpmiConfig {
        client: ClientConfig {
            timeout: Duration::from_millis(500),
            attempts: 3,
            power_timeout: Duration::from_secs(5),
            ..ClientConfig::default()
        },
        confirm_timeout: Duration::from_secs(10),
        poll_interval: Duration::from_millis(200),
    }
}

fn bmc(sim: &Sim, password: &str) -> IpmiBmc {
    IpmiBmc::with_config(&sim.address(), "admin", &Secret::new(password), config()).unwrap()
}

#[tokio::test]
async fn suite_3_establishes_and_17_falls_back_to_3() {
    let sim = Sim::start();
    // ipmi_sim 2.0.33 has no HMAC-SHA256: it refuses suite 17 ("invalid authentication algorithm"),
    // and the driver falls back to suite 3 without cipher-suite discovery.
    let b = bmc(&sim, "password");
    assert_eq!(b.cipher_suite().await.unwrap(), CipherSuite::Suite3);
    let info = b.identify().await.unwrap();
    assert_eq!(info.protocol, "ipmi");
    assert_eq!(info.vendor, "MontaVista (OpenIPMI ipmi_sim)");
    assert_eq!(info.firmware, "9.08");
    assert_eq!(info.model, "product 0x0f02");
    b.close().await.unwrap();

    // Suite 3 on its own.
    let creds = Credentials::new("admin", Password::new("password")).unwrap();
    let only3 = ClientConfig {
        suites: vec![CipherSuite::Suite3],
        ..ClientConfig::default()
    };
    let addr = format!("127.0.0.1:{}", sim.port);
    let mut c = Client::connect(&addr, creds.clone(), only3).await.unwrap();
    assert_eq!(c.cipher_suite(), CipherSuite::Suite3);
    assert!(!c.chassis_status().await.unwrap().power_on);
    c.close().await.unwrap();

    // Suite 17 only: a clear "unsupported", not a timeout or an auth failure.
    let only17 = ClientConfig {
        suites: vec![CipherSuite::Suite17],
        ..ClientConfig::default()
    };
    let e = Client::connect(&addr, creds, only17).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Unsupported, "{e}");
    assert!(e.to_string().contains("cipher suite 17"), "{e}");
    let mut cfg = config();
    cfg.client.suites = vec![CipherSuite::Suite17];
    let b17 = IpmiBmc::with_config(&sim.address(), "admin", &Secret::new("password"), cfg).unwrap();
    let e = b17.power_state().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
}

#[tokio::test]
async fn power_on_off_cycle_agree_with_ipmitool_and_run_once() {
    let sim = Sim::start();
    let b = bmc(&sim, "password");
    let status = |s: &Sim| s.ipmitool(&["chassis", "power", "status"]);

    assert_eq!(b.power_state().await.unwrap(), PowerState::Off);
    assert!(status(&sim).contains("Chassis Power is off"));

    b.power(PowerAction::On).await.unwrap();
    assert_eq!(b.power_state().await.unwrap(), PowerState::On);
    assert!(status(&sim).contains("Chassis Power is on"));
    // The power program ran exactly once although it made ipmi_sim wait a second.
    assert_eq!(sim.power_ops(), ["set power 1"]);

    // Already on: nothing is sent.
    b.power(PowerAction::On).await.unwrap();
    assert_eq!(sim.power_ops().len(), 1);

    b.power(PowerAction::Off).await.unwrap();
    assert_eq!(b.power_state().await.unwrap(), PowerState::Off);
    assert!(status(&sim).contains("Chassis Power is off"));
    assert_eq!(sim.power_ops(), ["set power 1", "set power 0"]);

    // Cycle of a machine that is off just powers it on.
    b.power(PowerAction::Cycle).await.unwrap();
    assert_eq!(b.power_state().await.unwrap(), PowerState::On);
    assert!(status(&sim).contains("Chassis Power is on"));
    let before = sim.power_ops().len();
    // Cycle of a running machine: ipmi_sim turns it off and on again, once.
    b.power(PowerAction::Cycle).await.unwrap();
    assert_eq!(b.power_state().await.unwrap(), PowerState::On);
    let cycle_ops = &sim.power_ops()[before..];
    assert!(
        !cycle_ops.is_empty() && cycle_ops.len() <= 2,
        "one cycle ran {cycle_ops:?}"
    );
    assert!(status(&sim).contains("Chassis Power is on"));
    b.close().await.unwrap();
}

#[tokio::test]
async fn boot_overrides_visible_to_ipmitool() {
    let sim = Sim::start();
    let b = bmc(&sim, "password");
    for (device, expect) in [
        (BootDevice::Pxe, "Force PXE"),
        (BootDevice::Disk, "Force Boot from default Hard-Drive"),
        (BootDevice::Pxe, "Force PXE"),
    ] {
        b.set_boot(BootOverride {
            device,
            persistent: false,
            mode: BootMode::Legacy,
        })
        .await
        .unwrap();
        let shown = sim.ipmitool(&["chassis", "bootparam", "get", "5"]);
        assert!(shown.contains(expect), "after {device}: {shown}");
    }
    // UEFI + persistent is accepted (ipmi_sim keeps only the device; the flag bytes are unit-tested).
    b.set_boot(BootOverride {
        device: BootDevice::Disk,
        persistent: true,
        mode: BootMode::Uefi,
    })
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(sim.path("state/boot"))
            .unwrap()
            .trim(),
        "default"
    );
}

/// Forwards datagrams between one client and ipmi_sim, recording the RMCP+ payload type of each
/// client datagram (0x10 Open Session, 0x12 RAKP 1, ...).
async fn relay(upstream_port: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = front.local_addr().unwrap().port();
    let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(("127.0.0.1", upstream_port)).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut client = None;
        let (mut a, mut b) = ([0u8; 2048], [0u8; 2048]);
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut a) => {
                    client = Some(from);
                    if n > 5 && a[4] == 0x06 {
                        log.lock().unwrap().push(a[5] & 0x3F);
                    }
                    let _ = back.send(&a[..n]).await;
                }
                Ok(n) = back.recv(&mut b) => {
                    if let Some(to) = client {
                        let _ = front.send_to(&b[..n], to).await;
                    }
                }
            }
        }
    });
    (port, seen)
}

#[tokio::test]
async fn wrong_password_is_auth_error_promptly_after_one_attempt() {
    let sim = Sim::start();
    let (port, seen) = relay(sim.port).await;
    let address = BmcAddress::parse(&format!("ipmi://127.0.0.1:{port}")).unwrap();
    let b =
        IpmiBmc::with_config(&address, "admin", &Secret::new("Wr0ngPassw0rd"), config()).unwrap();
    let start = Instant::now();
    let e = b.power_state().await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(!e.kind().is_retryable());
    assert!(!e.to_string().contains("Wr0ngPassw0rd"), "{e}");
    assert!(e.to_string().contains("wrong password"), "{e}");
    // Far below one request timeout: the first RAKP 2 decides it.
    assert!(took < Duration::from_millis(500), "took {took:?}");
    let seen = seen.lock().unwrap().clone();
    let rakp1 = seen.iter().filter(|&&t| t == 0x12).count();
    let opens = seen.iter().filter(|&&t| t == 0x10).count();
    // One RAKP 1 (one password attempt); Open Session twice (17 refused, then 3); no RAKP 3 proof.
    assert_eq!(rakp1, 1, "payload types sent: {seen:02x?}");
    assert_eq!(opens, 2, "payload types sent: {seen:02x?}");
    // The only RAKP 3 is the abort notice, and nothing was sent in-session.
    assert!(seen.iter().filter(|&&t| t == 0x14).count() <= 1);
    assert!(!seen.contains(&0x00), "payload types sent: {seen:02x?}");
}

#[tokio::test]
async fn unreachable_bmc_is_unreachable_within_bounded_time() {
    // Nothing listening: the kernel's ICMP port unreachable ends it at once.
    let (_held, closed) = refusing_udp_port();
    let a = BmcAddress::parse(&format!("ipmi://127.0.0.1:{closed}")).unwrap();
    let b = IpmiBmc::with_config(&a, "admin", &Secret::new("password"), config()).unwrap();
    let e = b.power_state().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");

    // A socket that swallows everything: attempts × timeout, then Unreachable.
    let silent = StdUdp::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let a = BmcAddress::parse(&format!("ipmi://127.0.0.1:{port}")).unwrap();
    let b = IpmiBmc::with_config(&a, "admin", &Secret::new("password"), config()).unwrap();
    let start = Instant::now();
    let e = b.power_state().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert!(e.kind().is_retryable());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    drop(silent);
}

#[tokio::test]
async fn garbage_answers_are_protocol_errors() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let mut n = 0u8;
        while let Ok((len, from)) = sock.recv_from(&mut buf).await {
            n = n.wrapping_add(1);
            // Alternate: an RMCP-looking header with nonsense, and plain junk.
            let reply: Vec<u8> = if n.is_multiple_of(2) {
                let mut r = buf[..len.min(20)].to_vec();
                r.iter_mut()
                    .skip(5)
                    .for_each(|b| *b = b.wrapping_mul(31).wrapping_add(n));
                r
            } else {
                b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()
            };
            let _ = sock.send_to(&reply, from).await;
        }
    });
    let a = BmcAddress::parse(&format!("ipmi://127.0.0.1:{port}")).unwrap();
    let b = IpmiBmc::with_config(&a, "admin", &Secret::new("password"), config()).unwrap();
    for _ in 0..3 {
        let e = b.identify().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    }
}
