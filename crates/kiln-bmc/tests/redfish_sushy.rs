//! Acceptance tests of the Redfish driver against the real sushy-tools emulator.
//!
//! The emulator runs `tests/e2e/sushy_qemu.py` (sushy-emulator with a chassis-control backend) on
//! 127.0.0.1. It binds port 0 itself and writes the port it got to a file in the test's own temp
//! dir once it listens (`--port-file`): picking a "free" port here and handing the number over let
//! two parallel tests get the same port, one emulator fail to bind, and its test talk to the other
//! test's emulator until that one went away ("Connection refused" mid-test). Its control program
//! here is a small shell script that keeps power and boot state in files, so every change kiln
//! makes is visible outside the emulator too.
//!
//! Needs sushy-tools in a venv: `python3 -m venv /opt/kiln-venv && /opt/kiln-venv/bin/pip install
//! sushy-tools` (what .ci/run does), or `KILN_SUSHY_EMULATOR=/path/to/sushy-emulator`; and curl.

mod common;

use common::{ChassisControl, set_mode, stdout_of};
use kiln_bmc::{
    Bmc, BmcAddress, BmcError, BootDevice, BootMode, BootOverride, ChosenBy, ErrorKind,
    PowerAction, PowerState, RedfishAuth, RedfishBmc, RedfishOptions,
};
use kiln_model::Secret;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_EMULATOR: &str = "/opt/kiln-venv/bin/sushy-emulator";
const UUID: &str = "27946b59-9e44-4fa7-8e91-f3527a1ef094";
const UUID2: &str = "48295aa5-3d1c-4c53-9d2f-0c3ee0a1d2b7";
/// The NICs of the two systems (sushy names each interface by its MAC).
const MAC1: &str = "52:54:00:aa:00:01";
const MAC2: &str = "52:54:00:aa:00:02";
const USER: &str = "admin";
const PASSWORD: &str = "s3cret-Pa55";

/// The chassis control program: sushy_qemu.py speaks OpenIPMI's protocol to it.
const CONTROL: ChassisControl = ChassisControl {
    default_boot: "none",
    power_seconds: 0,
};

fn emulator_path() -> PathBuf {
    let path = std::env::var_os("KILN_SUSHY_EMULATOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_EMULATOR));
    assert!(
        path.is_file(),
        "sushy-emulator not found at {}: install it with `python3 -m venv /opt/kiln-venv && \
         /opt/kiln-venv/bin/pip install sushy-tools` (as .ci/run does) or set KILN_SUSHY_EMULATOR",
        path.display()
    );
    path
}

/// The Python that runs sushy-emulator (its shebang), so sushy_qemu.py sees the same packages.
fn emulator_python() -> PathBuf {
    let script = emulator_path();
    let text = std::fs::read_to_string(&script)
        .unwrap_or_else(|e| panic!("reading {}: {e}", script.display()));
    let interpreter = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{} has no #! line", script.display()));
    PathBuf::from(interpreter)
}

/// A port on 127.0.0.1 that refuses connections while the returned socket lives: bound, never
/// listening (so no other test can be given it meanwhile).
fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

#[derive(Default)]
struct Setup {
    basic_auth: bool,
    /// (certificate PEM, key PEM): serve HTTPS.
    tls: Option<(String, String)>,
    second_system: bool,
}

/// A running emulator, killed (by PID) when dropped.
struct Emulator {
    child: Child,
    port: u16,
    https: bool,
    dir: tempfile::TempDir,
}

impl Emulator {
    fn start(setup: Setup) -> Emulator {
        let python = emulator_python();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let control = d.join("chassis-control");
        CONTROL.install(&control);
        // Each system with its NIC, so a machine's MAC can choose it behind a shared BMC.
        let mut systems = format!(
            "{{'uuid': '{UUID}', 'name': 'vm1', 'power_state': 'Off', 'nics': [{{'mac': '{MAC1}'}}]}}"
        );
        if setup.second_system {
            // A second machine behind the same BMC, with its own state directory.
            let other = d.join("other");
            std::fs::create_dir(&other).unwrap();
            let other_control = other.join("chassis-control");
            CONTROL.install(&other_control);
            systems.push_str(&format!(
                ", {{'uuid': '{UUID2}', 'name': 'vm2', 'power_state': 'Off', \
                 'nics': [{{'mac': '{MAC2}'}}], 'chassis_control': '{}'}}",
                other_control.display()
            ));
        }
        let mut conf = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = 0\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_STATE_DIR = '{state}'\n\
             KILN_CHASSIS_CONTROL = '{control}'\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [{systems}]\n",
            state = d.join("sushy-state").display(),
            control = control.display(),
        );
        if setup.basic_auth {
            let hash = stdout_of(
                Command::new(&python).args([
                    "-c",
                    "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())",
                    PASSWORD,
                ]),
                "the venv's python, for bcrypt",
            );
            let htpasswd = d.join("htpasswd");
            std::fs::write(
                &htpasswd,
                format!("{USER}:{}", String::from_utf8(hash).unwrap().trim()),
            )
            .unwrap();
            set_mode(&htpasswd, 0o600);
            conf.push_str(&format!(
                "SUSHY_EMULATOR_AUTH_FILE = '{}'\n",
                htpasswd.display()
            ));
        }
        if let Some((cert, key)) = &setup.tls {
            let (cert_path, key_path) = (d.join("cert.pem"), d.join("key.pem"));
            std::fs::write(&cert_path, cert).unwrap();
            std::fs::write(&key_path, key).unwrap();
            set_mode(&key_path, 0o600);
            conf.push_str(&format!(
                "SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n",
                cert_path.display(),
                key_path.display()
            ));
        }
        let conf_path = d.join("sushy.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(d.join("emulator.log")).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/sushy_qemu.py");
        let child = Command::new(&python)
            .arg(&script)
            .arg("--config")
            .arg(&conf_path)
            .arg("--port-file")
            .arg(d.join("port"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} {}: {e}", python.display(), script.display()));
        let mut emu = Emulator {
            child,
            port: 0,
            https: setup.tls.is_some(),
            dir,
        };
        emu.port = emu.wait_listening();
        emu
    }

    /// The port this emulator listens on, once its port file appears. The file is in this test's
    /// temp dir and written by this child only after its socket listens, so the port is its own
    /// (no connect probe, which any process on that port would answer).
    fn wait_listening(&mut self) -> u16 {
        let path = self.dir.path().join("port");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return text
                    .trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("{}: {text:?} is not a port: {e}", path.display()));
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sushy emulator exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sushy emulator not listening after 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }

    fn base_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn address(&self) -> BmcAddress {
        let scheme = if self.https {
            "redfish+https"
        } else {
            "redfish+http"
        };
        BmcAddress::parse(&format!("{scheme}://127.0.0.1:{}", self.port)).unwrap()
    }

    fn bmc(&self, options: RedfishOptions) -> RedfishBmc {
        self.bmc_as(PASSWORD, options)
    }

    fn bmc_as(&self, password: &str, options: RedfishOptions) -> RedfishBmc {
        RedfishBmc::new(&self.address(), USER, Secret::new(password), options).unwrap()
    }

    /// The system as a plain `curl` sees it.
    fn curl_system(&self) -> Value {
        self.curl_system_id(UUID)
    }

    fn curl_system_id(&self, id: &str) -> Value {
        let url = format!("{}/redfish/v1/Systems/{id}", self.base_url());
        let credentials = format!("{USER}:{PASSWORD}");
        let out = stdout_of(
            Command::new("curl").args(["-sS", "-k", "--fail", "-u", &credentials, &url]),
            &format!("curl {url} (curl is needed for these tests; CI installs it)"),
        );
        serde_json::from_slice(&out).unwrap()
    }

    /// Asserts the system's boot override as curl reads it.
    #[track_caller]
    fn assert_boot(&self, target: &str, enabled: &str, mode: &str) {
        let b = &self.curl_system()["Boot"];
        assert_eq!(b["BootSourceOverrideTarget"], target, "{b}");
        assert_eq!(b["BootSourceOverrideEnabled"], enabled, "{b}");
        assert_eq!(b["BootSourceOverrideMode"], mode, "{b}");
    }

    /// A state file written by the control program.
    fn state(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("state").join(name))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The control program's `set ...` calls so far.
    fn sets(&self) -> Vec<String> {
        self.state("log")
            .lines()
            .filter(|l| l.starts_with("set "))
            .map(str::to_string)
            .collect()
    }

    /// Runs a power action and returns the `set ...` calls it made of the control program.
    async fn sets_during(&self, bmc: &RedfishBmc, action: PowerAction) -> Vec<String> {
        let before = self.sets().len();
        bmc.power(action).await.unwrap();
        self.sets()[before..].to_vec()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn options() -> RedfishOptions {
    RedfishOptions {
        request_timeout: Duration::from_secs(20),
        power_timeout: Duration::from_secs(30),
        poll_interval: Duration::from_millis(200),
        ..RedfishOptions::default()
    }
}

fn boot(device: BootDevice, persistent: bool, mode: BootMode) -> BootOverride {
    BootOverride {
        device,
        persistent,
        mode,
    }
}

#[tokio::test]
async fn discovers_the_one_system_and_identifies_it() {
    let emu = Emulator::start(Setup::default());
    let bmc = emu.bmc(options());
    let info = bmc.identify().await.unwrap();
    assert_eq!(info.protocol, "redfish");
    assert_eq!(info.vendor, "Sushy Emulator");
    assert_eq!(info.model, "chassis-control");
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    // sushy-tools has no SessionService: Auto fell back to Basic; Session-only says so.
    let session_only = emu.bmc(RedfishOptions {
        auth: RedfishAuth::Session,
        ..options()
    });
    let err = session_only.power_state().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("sessions"), "{err}");
    bmc.close().await.unwrap();
}

/// What one driver learnt lets the next go straight to the system (sushy-tools: Basic, the
/// system under its UUID after the name redirect); both read and change the same machine.
#[tokio::test]
async fn a_hint_from_one_driver_serves_the_next() {
    let emu = Emulator::start(Setup::default());
    let first = emu.bmc(options());
    assert_eq!(first.power_state().await.unwrap(), PowerState::Off);
    let hint = first.hint().expect("the first call leaves a hint");
    assert_eq!(hint.system, format!("/redfish/v1/Systems/{UUID}"));
    assert_eq!(hint.sessions, None, "sushy-tools has no SessionService");
    first.close().await.unwrap();

    let second = emu.bmc(RedfishOptions {
        hint: Some(hint.clone()),
        ..options()
    });
    assert_eq!(second.power_state().await.unwrap(), PowerState::Off);
    second.power(PowerAction::On).await.unwrap();
    assert_eq!(emu.curl_system()["PowerState"], "On");
    assert_eq!(second.hint(), Some(hint));
    second.close().await.unwrap();
}

#[tokio::test]
async fn the_machines_mac_chooses_its_system_behind_a_shared_bmc() {
    let emu = Emulator::start(Setup {
        second_system: true,
        ..Setup::default()
    });
    // The MAC as hardware.csv may spell it (upper case): vm2's NIC.
    let vm2 = emu.bmc(RedfishOptions {
        mac: Some(MAC2.to_uppercase()),
        ..options()
    });
    vm2.power(PowerAction::On).await.unwrap();
    assert_eq!(emu.curl_system_id(UUID2)["PowerState"], "On");
    assert_eq!(emu.curl_system()["PowerState"], "Off", "vm1 untouched");
    let hint = vm2.hint().unwrap();
    assert!(hint.system.ends_with(UUID2), "{hint:?}");
    assert!(
        matches!(hint.chosen, Some(ChosenBy::Mac { .. })),
        "{hint:?}"
    );
    vm2.close().await.unwrap();

    // With the hint, the next driver goes straight to vm2.
    let again = emu.bmc(RedfishOptions {
        mac: Some(MAC2.into()),
        hint: Some(hint),
        ..options()
    });
    assert_eq!(again.power_state().await.unwrap(), PowerState::On);

    // A MAC no system lists: an error naming every system with its MACs; nothing changes.
    let stranger = emu.bmc(RedfishOptions {
        mac: Some("52:54:00:cc:00:09".into()),
        ..options()
    });
    let err = stranger.power(PowerAction::Off).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let text = err.to_string();
    for needle in [UUID, UUID2, MAC1, MAC2] {
        assert!(
            text.to_lowercase().contains(needle),
            "{needle} missing: {text}"
        );
    }
    assert_eq!(emu.curl_system_id(UUID2)["PowerState"], "On");
}

#[tokio::test]
async fn chooses_among_several_systems_by_id_name_or_path() {
    let emu = Emulator::start(Setup {
        second_system: true,
        ..Setup::default()
    });
    let err = emu.bmc(options()).power_state().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let text = err.to_string();
    assert!(text.contains(UUID) && text.contains(UUID2), "{text}");

    // By Id: drives vm2 only.
    let vm2 = emu.bmc(RedfishOptions {
        system: Some(UUID2.into()),
        ..options()
    });
    vm2.power(PowerAction::On).await.unwrap();
    assert_eq!(emu.curl_system_id(UUID2)["PowerState"], "On");
    assert_eq!(emu.curl_system()["PowerState"], "Off");
    assert_eq!(
        std::fs::read_to_string(emu.dir.path().join("other/state/power"))
            .unwrap()
            .trim(),
        "1"
    );

    // By name: sushy-tools redirects /Systems/vm1 to /Systems/<uuid>; the driver follows.
    let vm1 = emu.bmc(RedfishOptions {
        system: Some("vm1".into()),
        ..options()
    });
    assert_eq!(vm1.power_state().await.unwrap(), PowerState::Off);
    vm1.power(PowerAction::On).await.unwrap();
    assert_eq!(emu.state("power"), "1");

    // By path.
    let by_path = emu.bmc(RedfishOptions {
        system: Some(format!("/redfish/v1/Systems/{UUID}")),
        ..options()
    });
    assert_eq!(by_path.power_state().await.unwrap(), PowerState::On);

    let missing = emu.bmc(RedfishOptions {
        system: Some("vm9".into()),
        ..options()
    });
    let err = missing.power_state().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(
        err.to_string().contains("vm9") && err.to_string().contains(UUID2),
        "{err}"
    );
}

#[tokio::test]
async fn power_on_off_cycle_reset_soft_off_agree_with_curl() {
    let emu = Emulator::start(Setup::default());
    let bmc = emu.bmc(options());

    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    assert_eq!(emu.curl_system()["PowerState"], "On");
    assert_eq!(emu.state("power"), "1");

    // Already on: nothing is sent (many BMCs refuse "On" for a running host).
    let sent = emu.sets_during(&bmc, PowerAction::On).await;
    assert!(sent.is_empty(), "{sent:?}");

    bmc.power(PowerAction::Off).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(emu.curl_system()["PowerState"], "Off");
    assert_eq!(emu.state("power"), "0");

    // Cycle of an off machine: just on.
    assert_eq!(
        emu.sets_during(&bmc, PowerAction::Cycle).await,
        ["set power 1"]
    );
    assert_eq!(emu.curl_system()["PowerState"], "On");

    // Cycle of a running machine: PowerCycle, i.e. off then on.
    assert_eq!(
        emu.sets_during(&bmc, PowerAction::Cycle).await,
        ["set power 0", "set power 1"]
    );
    assert_eq!(emu.curl_system()["PowerState"], "On");

    assert_eq!(
        emu.sets_during(&bmc, PowerAction::Reset).await,
        ["set reset 1"]
    );
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);

    assert_eq!(
        emu.sets_during(&bmc, PowerAction::SoftOff).await,
        ["set shutdown 1"]
    );
    assert_eq!(emu.curl_system()["PowerState"], "Off");
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
}

#[tokio::test]
async fn boot_override_pxe_once_then_disk_continuous() {
    let emu = Emulator::start(Setup::default());
    let bmc = emu.bmc(options());

    bmc.set_boot(boot(BootDevice::Pxe, false, BootMode::Uefi))
        .await
        .unwrap();
    emu.assert_boot("Pxe", "Once", "UEFI");
    assert_eq!(emu.state("boot"), "pxe");

    // The one-time override is spent by the next boot.
    bmc.power(PowerAction::On).await.unwrap();
    let b = &emu.curl_system()["Boot"];
    assert_eq!(b["BootSourceOverrideEnabled"], "Disabled", "{b}");
    assert_eq!(emu.state("boot"), "none");

    bmc.set_boot(boot(BootDevice::Disk, true, BootMode::Legacy))
        .await
        .unwrap();
    emu.assert_boot("Hdd", "Continuous", "Legacy");
    assert_eq!(emu.state("boot"), "default");
    assert_eq!(emu.state("bootmode"), "legacy");

    // Continuous survives a reboot.
    bmc.power(PowerAction::Reset).await.unwrap();
    assert_eq!(emu.curl_system()["Boot"]["BootSourceOverrideTarget"], "Hdd");

    bmc.set_boot(boot(BootDevice::Bios, false, BootMode::Legacy))
        .await
        .unwrap();
    assert_eq!(
        emu.curl_system()["Boot"]["BootSourceOverrideTarget"],
        "BiosSetup"
    );
    assert_eq!(emu.state("boot"), "bios");
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_at_once() {
    let emu = Emulator::start(Setup {
        basic_auth: true,
        ..Setup::default()
    });
    // The right password works.
    assert_eq!(
        emu.bmc(options()).power_state().await.unwrap(),
        PowerState::Off
    );

    let wrong = "not-the-Pa55word";
    let bmc = emu.bmc_as(wrong, options());
    let log_before = emu.log().lines().filter(|l| l.contains(" 401 ")).count();
    let err = bmc.power(PowerAction::On).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(matches!(err, BmcError::Auth { .. }));
    let text = format!("{err} {err:?} {bmc:?}");
    assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
    // One refused request, no retries, and nothing was powered.
    let refused = emu.log().lines().filter(|l| l.contains(" 401 ")).count() - log_before;
    assert_eq!(refused, 1, "{}", emu.log());
    assert_eq!(emu.state("power"), "");
}

#[tokio::test]
async fn closed_port_is_unreachable_promptly() {
    let (_held, port) = refusing_port();
    let address = BmcAddress::parse(&format!("redfish+http://127.0.0.1:{port}")).unwrap();
    let bmc = RedfishBmc::new(&address, USER, Secret::new(PASSWORD), options()).unwrap();
    let started = Instant::now();
    let err = bmc.power(PowerAction::On).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    // Refused at once: no waiting for the 20 s request timeout, no polling.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it (PEMs: CA, leaf, leaf key).
fn test_pki() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kiln test BMC CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

#[tokio::test]
async fn https_untrusted_certificate_refused_unless_opted_out_or_ca_given() {
    let (ca_pem, cert_pem, key_pem) = test_pki();
    let emu = Emulator::start(Setup {
        tls: Some((cert_pem, key_pem)),
        ..Setup::default()
    });

    let err = emu.bmc(options()).power_state().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("certificate") && text.contains("insecure_skip_verify"),
        "{text}"
    );

    let insecure = emu.bmc(RedfishOptions {
        insecure_skip_verify: true,
        ..options()
    });
    assert_eq!(insecure.power_state().await.unwrap(), PowerState::Off);
    insecure.power(PowerAction::On).await.unwrap();
    assert_eq!(emu.curl_system()["PowerState"], "On");

    // Verification on, with the site CA that signed the BMC certificate.
    let with_ca = emu.bmc(RedfishOptions {
        ca_pem: Some(ca_pem),
        ..options()
    });
    assert_eq!(with_ca.power_state().await.unwrap(), PowerState::On);
}
