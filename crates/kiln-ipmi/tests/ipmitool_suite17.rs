//! Cipher suite 17 checked against an independent implementation. The lab BMC (ipmi_sim 2.0.33) has
//! no HMAC-SHA256, so: ipmitool (`-C 17` and `-C 3`) talks to `kiln_ipmi::responder` — which only
//! works if our RAKP 2 code, RAKP 4 ICV, K1 integrity and K2 AES agree with ipmitool's — and then our
//! client talks to the same responder. Also the client's rules for lost power-command replies.
//! Needs `ipmitool` (CI installs it).

use kiln_ipmi::client::{Client, ClientConfig, ControlOutcome};
use kiln_ipmi::responder::Responder;
use kiln_ipmi::{BootDevice, BootFlags, ChassisControl, CipherSuite, Credentials, Error, Password};
use std::net::UdpSocket;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Serves a responder on 127.0.0.1 from a thread; returns its port and a handle on its state.
fn serve(suites: &[CipherSuite]) -> (u16, Arc<Mutex<Responder>>) {
    let mut r = Responder::new(suites);
    r.add_user("admin", "password");
    let r = Arc::new(Mutex::new(r));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let state = r.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let reply = state.lock().unwrap().handle(&buf[..n]);
            if let Some(reply) = reply {
                let _ = sock.send_to(&reply, from);
            }
        }
    });
    (port, r)
}

fn ipmitool(port: u16, suite: &str, password: &str, args: &[&str]) -> Result<String, String> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("ipmitool").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "ipmitool not found: install the Debian package `ipmitool`; CI installs it"
    );
    let out = Command::new("ipmitool")
        .args([
            "-I",
            "lanplus",
            "-C",
            suite,
            "-N",
            "1",
            "-R",
            "1",
            "-H",
            "127.0.0.1",
            "-p",
        ])
        .arg(port.to_string())
        .args(["-U", "admin", "-P", password])
        .args(args)
        .output()
        .expect("running ipmitool");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn ipmitool_accepts_our_suite_17_and_3_crypto() {
    let (port, bmc) = serve(&[CipherSuite::Suite3, CipherSuite::Suite17]);
    for suite in ["17", "3"] {
        bmc.lock().unwrap().chassis.power_on = false;
        let half_open = bmc.lock().unwrap().session_count();
        let s = ipmitool(port, suite, "password", &["chassis", "power", "status"]).unwrap();
        assert!(s.contains("Chassis Power is off"), "-C {suite}: {s}");
        ipmitool(port, suite, "password", &["chassis", "power", "on"]).unwrap();
        assert!(bmc.lock().unwrap().chassis.power_on, "-C {suite}");
        ipmitool(port, suite, "password", &["chassis", "bootdev", "pxe"]).unwrap();
        assert_eq!(bmc.lock().unwrap().chassis.boot_flags[..2], [0x80, 0x04]);
        let s = ipmitool(
            port,
            suite,
            "password",
            &["chassis", "bootparam", "get", "5"],
        )
        .unwrap();
        assert!(s.contains("Force PXE"), "-C {suite}: {s}");
        let s = ipmitool(port, suite, "password", &["mc", "info"]).unwrap();
        assert!(
            s.contains("Manufacturer ID           : 4753"),
            "-C {suite}: {s}"
        );
        // ipmitool closed its sessions (Close Session inside our integrity/AES framing).
        assert_eq!(bmc.lock().unwrap().session_count(), half_open, "-C {suite}");
        // ipmitool rejects our RAKP 2 when its password differs: our HMAC is what it checks.
        let e = ipmitool(port, suite, "wrong", &["-v", "chassis", "power", "status"]).unwrap_err();
        assert!(e.contains("RAKP 2 HMAC is invalid"), "-C {suite}: {e}");
    }
}

fn creds(password: &str) -> Credentials {
    Credentials::new("admin", Password::new(password)).unwrap()
}

fn quick() -> ClientConfig {
    ClientConfig {
        timeout: Duration::from_millis(300),
        attempts: 2,
        power_timeout: Duration::from_millis(600),
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn client_prefers_suite_17_and_falls_back_to_3() {
    let (port, bmc) = serve(&[CipherSuite::Suite3, CipherSuite::Suite17]);
    let addr = format!("127.0.0.1:{port}");
    let mut c = Client::connect(&addr, creds("password"), quick())
        .await
        .unwrap();
    assert_eq!(c.cipher_suite(), CipherSuite::Suite17);
    assert_eq!(c.device_id().await.unwrap().manufacturer_id, 4753);
    let flags = BootFlags {
        valid: true,
        persistent: true,
        efi: true,
        device: BootDevice::Disk,
    };
    c.set_boot_flags(flags).await.unwrap();
    assert_eq!(c.boot_flags().await.unwrap(), flags);
    assert_eq!(
        bmc.lock().unwrap().chassis.boot_flags,
        [0xE0, 0x08, 0, 0, 0]
    );
    c.close().await.unwrap();
    assert_eq!(bmc.lock().unwrap().session_count(), 0);

    let (port3, _) = serve(&[CipherSuite::Suite3]);
    let c = Client::connect(&format!("127.0.0.1:{port3}"), creds("password"), quick())
        .await
        .unwrap();
    assert_eq!(c.cipher_suite(), CipherSuite::Suite3);

    // Dropping a client closes its session too.
    let (port, bmc) = serve(&[CipherSuite::Suite17]);
    let c = Client::connect(&format!("127.0.0.1:{port}"), creds("password"), quick())
        .await
        .unwrap();
    assert_eq!(bmc.lock().unwrap().session_count(), 1);
    drop(c);
    for _ in 0..50 {
        if bmc.lock().unwrap().session_count() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(bmc.lock().unwrap().session_count(), 0);
}

#[tokio::test]
async fn wrong_password_fails_once_without_fallback() {
    let (port, bmc) = serve(&[CipherSuite::Suite3, CipherSuite::Suite17]);
    let e = Client::connect(&format!("127.0.0.1:{port}"), creds("nope"), quick())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Auth(_)), "{e}");
    // The abort RAKP 3 freed the half-open session on the BMC.
    for _ in 0..50 {
        if bmc.lock().unwrap().session_count() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(bmc.lock().unwrap().session_count(), 0);
}

#[tokio::test]
async fn lost_power_reply_is_never_resent_blindly() {
    let (port, bmc) = serve(&[CipherSuite::Suite17]);
    let mut c = Client::connect(&format!("127.0.0.1:{port}"), creds("password"), quick())
        .await
        .unwrap();

    // Power on runs, its reply is lost: the status shows "on", so it is done — sent once.
    bmc.lock().unwrap().drop_next_control_reply = true;
    let r = c.chassis_control(ChassisControl::PowerUp).await.unwrap();
    assert_eq!(r, ControlOutcome::ConfirmedByStatus);
    assert_eq!(bmc.lock().unwrap().chassis.controls, [1]);

    // A cycle whose reply is lost cannot be read back: reported, not repeated.
    bmc.lock().unwrap().drop_next_control_reply = true;
    let e = c
        .chassis_control(ChassisControl::PowerCycle)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unconfirmed { .. }), "{e}");
    assert_eq!(bmc.lock().unwrap().chassis.controls, [1, 2]);

    // Acknowledged normally.
    let r = c.chassis_control(ChassisControl::PowerDown).await.unwrap();
    assert_eq!(r, ControlOutcome::Acknowledged);
    assert!(!c.chassis_status().await.unwrap().power_on);
    assert_eq!(bmc.lock().unwrap().chassis.controls, [1, 2, 0]);
}
