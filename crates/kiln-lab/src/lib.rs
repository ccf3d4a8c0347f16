//! Kiln's lab, the virtual rack `kiln demo` runs on (and the one home of helpers the demo and
//! tests share): a private network namespace (bridge `br0` = 10.77.0.1/24, one tap per
//! machine), virtual BMCs (OpenIPMI `ipmi_sim`, sushy-tools) whose chassis are QEMU (TCG)
//! machines, and `kiln serve` inside the namespace. Nothing touches the host's interfaces.
//!
//! [`demo`] is `kiln demo` itself: the lab set up, Kiln driven through its admin API
//! (`kiln-client`, from a thread that joined the lab's namespace, see [`netns`]), the live
//! view, the summary and `--delete`.
//!
//! Every process the lab starts is recorded (children by handle, QEMU by the pid file its
//! chassis program writes) and stopped by [`Lab::teardown`], which also runs on drop.
//!
//! Two demos can run at once: the namespace (`kiln-demo-<pid>`) and the default work directory
//! carry the PID, and the fixed ports, bridge, tap names and MACs below exist only inside that
//! namespace (its own loopback and links), so they never meet another run's.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write as _};
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

pub mod demo;
pub mod netns;

/// Kiln's address on the lab network (the bridge inside the namespace).
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const HTTP_PORT: u16 = 8080;
const REDFISH_PORT: u16 = 8000;
const IPMI_BASE_PORT: u16 = 9001;
const BMC_USER: &str = "admin";
/// Kernel command line of the netbooted agent OS: its console on the serial port.
const AGENT_KERNEL_ARGS: &str = "console=ttyS0,115200 panic=-1 quiet";

// The chassis program and the Redfish back end of the e2e suite, compiled in so that
// `kiln demo` needs no source checkout: they are written into the work directory.
const VM_POWER_SH: &str = include_str!("../../../tests/e2e/vm-power.sh");
const SUSHY_QEMU_PY: &str = include_str!("../../../tests/e2e/sushy_qemu.py");

/// Which virtual BMCs the machines get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BmcChoice {
    /// IPMI (ipmi_sim) for the 1st, 3rd, ... machine, Redfish (sushy-tools) for the others.
    #[default]
    Mixed,
    Ipmi,
    Redfish,
}

/// The machines' firmware.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS: legacy boot overrides (label kiln.dev/boot-mode=legacy).
    #[default]
    Bios,
    /// OVMF (UEFI): UEFI boot overrides.
    Uefi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BmcKind {
    Ipmi,
    Redfish,
}

impl BmcKind {
    pub fn name(self) -> &'static str {
        match self {
            BmcKind::Ipmi => "ipmi",
            BmcKind::Redfish => "redfish",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
}

/// One machine of the lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub hostname: String,
    pub role: Role,
    pub bmc: BmcKind,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub tap: String,
    /// ipmi_sim's UDP port, or the Redfish emulator's TCP port (shared by all Redfish machines).
    pub bmc_port: u16,
    /// The Redfish system id.
    pub uuid: String,
    pub firmware: Firmware,
}

impl Machine {
    pub fn bmc_address(&self) -> String {
        match self.bmc {
            BmcKind::Ipmi => format!("ipmi://127.0.0.1:{}", self.bmc_port),
            BmcKind::Redfish => format!("redfish+http://127.0.0.1:{}", self.bmc_port),
        }
    }
}

/// The machines of an `nodes`-machine lab: the first is the control plane, the rest workers.
pub fn plan(nodes: u32, choice: BmcChoice) -> Vec<Machine> {
    (0..nodes)
        .map(|i| {
            let role = if i == 0 {
                Role::ControlPlane
            } else {
                Role::Worker
            };
            let bmc = match choice {
                BmcChoice::Ipmi => BmcKind::Ipmi,
                BmcChoice::Redfish => BmcKind::Redfish,
                BmcChoice::Mixed if i % 2 == 0 => BmcKind::Ipmi,
                BmcChoice::Mixed => BmcKind::Redfish,
            };
            let (hostname, ip) = match role {
                Role::ControlPlane => ("demo-cp1".to_string(), Ipv4Addr::new(10, 77, 0, 11)),
                Role::Worker => (
                    format!("demo-worker{i}"),
                    Ipv4Addr::new(10, 77, 0, 20 + i as u8),
                ),
            };
            Machine {
                hostname,
                role,
                bmc,
                mac: format!("52:54:00:de:00:{:02x}", i + 1),
                ip,
                tap: format!("tap{i}"),
                bmc_port: match bmc {
                    BmcKind::Ipmi => IPMI_BASE_PORT + i as u16,
                    BmcKind::Redfish => REDFISH_PORT,
                },
                uuid: format!("d3e0c0de-0000-4000-8000-{:012x}", i + 1),
                firmware: Firmware::Bios,
            }
        })
        .collect()
}

/// The lab's hardware.csv (EKS Anywhere format). It holds the BMC password: write it 0600.
pub fn hardware_csv(machines: &[Machine], password: &str) -> String {
    let mut out = String::from(
        "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n",
    );
    for m in machines {
        let kind = match m.role {
            Role::ControlPlane => "cp",
            Role::Worker => "worker",
        };
        // The boot overrides' mode follows the firmware the VM was given (without a label Kiln
        // would leave a Redfish system's mode as it reads).
        let boot_mode = match m.firmware {
            Firmware::Bios => "|kiln.dev/boot-mode=legacy",
            Firmware::Uefi => "|kiln.dev/boot-mode=uefi",
        };
        let _ = writeln!(
            out,
            "{},{},{BMC_USER},{password},{},{},255.255.255.0,{SERVER_IP},{SERVER_IP},type={kind}|demo=kiln{boot_mode},/dev/vda",
            m.hostname,
            m.bmc_address(),
            m.mac,
            m.ip
        );
    }
    out
}

/// ipmi_sim's LAN configuration: one BMC on 127.0.0.1:port whose chassis is `chassis`.
/// ipmi_sim appends only the operation ("get power boot"): the MC address is part of the command.
pub fn ipmi_sim_config(m: &Machine, password: &str, chassis: &Path) -> String {
    format!(
        r#"name "{host}"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid {guid}
  endlan
  chassis_control "{chassis} 0x20"
  user 2 true "{BMC_USER}" "{password}" admin 10 none md2 md5 straight
"#,
        host = m.hostname,
        port = m.bmc_port,
        guid = m.uuid.replace('-', ""),
        chassis = chassis.display(),
    )
}

/// ipmi_sim's emulator commands: a BMC management controller, nothing else.
const IPMI_SIM_EMU: &str = "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n";

/// sushy-tools' configuration: one fake system per Redfish machine, each driven by its
/// chassis program (see tests/e2e/sushy_qemu.py).
pub fn sushy_config(machines: &[(&Machine, PathBuf)], state_dir: &Path, htpasswd: &Path) -> String {
    let mut systems = String::new();
    for (m, chassis) in machines {
        let _ = writeln!(
            systems,
            "    {{'uuid': '{}', 'name': '{}', 'power_state': 'Off', 'chassis_control': '{}',\n     'nics': [{{'mac': '{}', 'ip': '{}'}}]}},",
            m.uuid,
            m.hostname,
            chassis.display(),
            m.mac,
            m.ip
        );
    }
    format!(
        "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
         SUSHY_EMULATOR_LISTEN_PORT = {REDFISH_PORT}\n\
         SUSHY_EMULATOR_FAKE_DRIVER = True\n\
         SUSHY_EMULATOR_STATE_DIR = '{}'\n\
         SUSHY_EMULATOR_AUTH_FILE = '{}'\n\
         SUSHY_EMULATOR_FAKE_SYSTEMS = [\n{systems}]\n",
        state_dir.display(),
        htpasswd.display()
    )
}

/// OVMF's code and variables template (Debian's ovmf package), for UEFI machines.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// A machine's chassis program: tests/e2e/vm-power.sh with the machine's settings.
fn chassis_script(
    vm_power: &Path,
    vm_dir: &Path,
    m: &Machine,
    disk: &Path,
    mem_mib: u32,
) -> String {
    // UEFI: the NIC's iPXE ROM is the network boot; OVMF's own PXE and HTTP boot stacks would
    // each time out (minutes under TCG) before the disk is tried.
    let firmware = match m.firmware {
        Firmware::Bios => "FW=bios".to_string(),
        Firmware::Uefi => {
            format!("FW=uefi OVMF_CODE='{OVMF_CODE}' OVMF_VARS='{OVMF_VARS}' UEFI_NETSTACK=none")
        }
    };
    format!(
        "#!/bin/sh\n# Chassis of {host} for its virtual BMC (ipmi_sim / sushy-tools chassis_control).\n\
         export VMDIR='{vm}' TAP='{tap}' MAC='{mac}' {firmware} DISK='{disk}' MEM='{mem_mib}'\n\
         exec '{prog}' \"$@\"\n",
        host = m.hostname,
        vm = vm_dir.display(),
        tap = m.tap,
        mac = m.mac,
        disk = disk.display(),
        prog = vm_power.display(),
    )
}

/// Random hex: the lab's BMC password and nothing else.
pub fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs a short command to completion; an error names it and carries its stderr.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let what = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Writes `text` to a new file with `mode`.
pub fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// The htpasswd line (bcrypt) sushy-tools reads for the BMC user, made by the venv's Python;
/// the password goes in on stdin, not argv.
fn bcrypt_htpasswd(python: &Path, password: &str) -> anyhow::Result<String> {
    let mut child = Command::new(python)
        .args([
            "-c",
            "import bcrypt,sys; pw=sys.stdin.read().encode(); print(sys.argv[1] + ':' + bcrypt.hashpw(pw, bcrypt.gensalt(rounds=4)).decode())",
            BMC_USER,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", python.display()))?;
    {
        let mut stdin = child.stdin.take().context("python stdin")?;
        stdin.write_all(password.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "hashing the Redfish password with {} (bcrypt) failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A process the lab started (its own process group, so a terminal's Ctrl-C reaches only
/// `kiln demo`, which then stops everything in order).
struct Proc {
    what: String,
    child: Child,
}

/// What teardown did, for the closing report.
#[derive(Debug, Default)]
pub struct Teardown {
    pub stopped: Vec<String>,
    pub problems: Vec<String>,
    pub work_kept: Option<PathBuf>,
}

pub struct Lab {
    pub work: PathBuf,
    pub data: PathBuf,
    pub ns: String,
    pub machines: Vec<Machine>,
    ns_created: bool,
    pub keep: bool,
    procs: Vec<Proc>,
    torn_down: bool,
}

impl Lab {
    /// A new, empty work directory (0700; it must not exist yet, or be empty).
    pub fn new(work: PathBuf, machines: Vec<Machine>, keep: bool) -> anyhow::Result<Lab> {
        if work
            .to_string_lossy()
            .contains(|c: char| c.is_whitespace() || c == '\'' || c == '"')
        {
            bail!(
                "work directory {} has spaces or quotes: the BMC emulators' configs cannot hold it",
                work.display()
            );
        }
        if work.exists() {
            let empty = fs::read_dir(&work)
                .with_context(|| format!("reading {}", work.display()))?
                .next()
                .is_none();
            if !empty {
                bail!(
                    "work directory {} exists and is not empty (kiln demo removes it at the end, so it must be its own)",
                    work.display()
                );
            }
        }
        fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        fs::set_permissions(&work, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {}", work.display()))?;
        let work = work
            .canonicalize()
            .with_context(|| format!("resolving {}", work.display()))?;
        Ok(Lab {
            data: work.join("data"),
            work,
            ns: format!("kiln-demo-{}", std::process::id()),
            machines,
            ns_created: false,
            keep,
            procs: Vec::new(),
            torn_down: false,
        })
    }

    pub fn vm_dir(&self, m: &Machine) -> PathBuf {
        self.work.join("vm").join(&m.hostname)
    }

    pub fn serial_log(&self, m: &Machine) -> PathBuf {
        self.vm_dir(m).join("serial.log")
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.work.join("logs").join(name)
    }

    /// Scripts, machine directories with blank disks (sparse, `disk_gib` GiB) and chassis programs.
    pub fn prepare_machines(&self, mem_mib: u32, disk_gib: u64) -> anyhow::Result<()> {
        let bin = self.work.join("bin");
        fs::create_dir_all(&bin)?;
        fs::create_dir_all(self.work.join("logs"))?;
        let vm_power = bin.join("vm-power.sh");
        write_file(&vm_power, VM_POWER_SH, 0o755)?;
        write_file(&bin.join("sushy_qemu.py"), SUSHY_QEMU_PY, 0o644)?;
        for m in &self.machines {
            let dir = self.vm_dir(m);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let disk = dir.join("disk.raw");
            File::create(&disk)
                .and_then(|f| f.set_len(disk_gib << 30))
                .with_context(|| format!("creating the blank disk {}", disk.display()))?;
            write_file(
                &dir.join("chassis.sh"),
                &chassis_script(&vm_power, &dir, m, &disk, mem_mib),
                0o755,
            )?;
        }
        Ok(())
    }

    /// The namespace: lo, bridge br0 with Kiln's address, an in-namespace veth as a
    /// permanent bridge port (a carrier before any QEMU opens its tap), one tap per machine.
    pub fn create_network(&mut self) -> anyhow::Result<()> {
        let ns = self.ns.clone();
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        self.ns_created = true;
        let ipn = |args: &[&str]| run(Command::new("ip").arg("-n").arg(&ns).args(args));
        ipn(&["link", "set", "lo", "up"])?;
        ipn(&["link", "add", "br0", "type", "bridge"])?;
        ipn(&[
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        ipn(&["link", "add", "sw0", "type", "veth", "peer", "name", "sw0p"])?;
        run(Command::new("ip").args([
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.sw0p.disable_ipv6=1",
        ]))?;
        ipn(&["link", "set", "sw0", "master", "br0"])?;
        ipn(&["link", "set", "sw0", "up"])?;
        ipn(&["link", "set", "sw0p", "up"])?;
        for m in &self.machines {
            ipn(&["tuntap", "add", "dev", &m.tap, "mode", "tap"])?;
            ipn(&["link", "set", &m.tap, "master", "br0"])?;
            ipn(&["link", "set", &m.tap, "up"])?;
        }
        ipn(&["addr", "add", &format!("{SERVER_IP}/24"), "dev", "br0"])?;
        ipn(&["link", "set", "br0", "up"])?;
        // Router advertisements need br0's link-local address, usable once DAD is done.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = ipn(&["-6", "addr", "show", "dev", "br0"])?;
            if out.contains("inet6 fe80") && !out.contains("tentative") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "br0's IPv6 link-local address in namespace {ns} is still tentative after 10 s"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts `program args...` inside the namespace, output to `log`; returns its pid.
    pub fn spawn(
        &mut self,
        what: &str,
        program: &Path,
        args: &[&str],
        log: &Path,
    ) -> anyhow::Result<u32> {
        let ns = self.ns.clone();
        self.spawn_in(&ns, what, program, args, log)
    }

    /// As [`Lab::spawn`], inside namespace `ns` (one the caller made): stopped at teardown
    /// like the lab's own processes.
    pub fn spawn_in(
        &mut self,
        ns: &str,
        what: &str,
        program: &Path,
        args: &[&str],
        log: &Path,
    ) -> anyhow::Result<u32> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        // `ip netns exec` execs the program: the child's pid is the program's.
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {what} ({})", program.display()))?;
        let pid = child.id();
        self.procs.push(Proc {
            what: what.to_string(),
            child,
        });
        Ok(pid)
    }

    /// The first started process that has exited, with its status.
    pub fn exited(&mut self) -> Option<String> {
        self.procs
            .iter_mut()
            .find_map(|p| match p.child.try_wait() {
                Ok(Some(status)) => Some(format!("{} exited ({status})", p.what)),
                _ => None,
            })
    }

    /// Runs a command inside the namespace to completion.
    pub fn ns_run(&self, program: &Path, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(program)
            .args(args))
    }

    /// The BMC emulators: one ipmi_sim per IPMI machine, one sushy-tools for all Redfish ones.
    pub fn start_bmcs(&mut self, password: &str, venv: &Path) -> anyhow::Result<()> {
        let machines = self.machines.clone();
        let mut redfish = Vec::new();
        for m in &machines {
            let chassis = self.vm_dir(m).join("chassis.sh");
            match m.bmc {
                BmcKind::Ipmi => self.start_ipmi_sim(m, password, &chassis)?,
                BmcKind::Redfish => redfish.push((m, chassis)),
            }
        }
        if redfish.is_empty() {
            return Ok(());
        }
        self.start_sushy(&redfish, password, venv)
    }

    /// OpenIPMI's `ipmi_sim` for machine `m`, its chassis program `chassis`.
    fn start_ipmi_sim(
        &mut self,
        m: &Machine,
        password: &str,
        chassis: &Path,
    ) -> anyhow::Result<()> {
        let dir = self.work.join("bmc").join(&m.hostname);
        fs::create_dir_all(dir.join("state"))?;
        let conf = dir.join("lan.conf");
        write_file(&conf, &ipmi_sim_config(m, password, chassis), 0o600)?;
        let emu = dir.join("bmc.emu");
        write_file(&emu, IPMI_SIM_EMU, 0o644)?;
        let state = dir.join("state");
        let log = self.log(&format!("ipmi_sim-{}.log", m.hostname));
        self.spawn(
            &format!("ipmi_sim ({})", m.hostname),
            Path::new("ipmi_sim"),
            &[
                "-c",
                &conf.to_string_lossy(),
                "-f",
                &emu.to_string_lossy(),
                "-s",
                &state.to_string_lossy(),
                "-n",
            ],
            &log,
        )?;
        Ok(())
    }

    /// One sushy-tools (Redfish) for every Redfish machine, behind basic auth.
    fn start_sushy(
        &mut self,
        redfish: &[(&Machine, PathBuf)],
        password: &str,
        venv: &Path,
    ) -> anyhow::Result<()> {
        let dir = self.work.join("sushy");
        fs::create_dir_all(dir.join("state"))?;
        let htpasswd = dir.join("htpasswd");
        let python = venv.join("bin/python");
        write_file(&htpasswd, &bcrypt_htpasswd(&python, password)?, 0o600)?;
        let conf = dir.join("sushy.conf");
        write_file(
            &conf,
            &sushy_config(redfish, &dir.join("state"), &htpasswd),
            0o600,
        )?;
        let script = self.work.join("bin/sushy_qemu.py");
        let log = self.log("sushy.log");
        self.spawn(
            "sushy-tools (Redfish)",
            &python,
            &[
                &script.to_string_lossy(),
                "--config",
                &conf.to_string_lossy(),
            ],
            &log,
        )?;
        Ok(())
    }

    /// `kiln serve` inside the namespace on br0.
    pub fn start_kiln_serve(
        &mut self,
        exe: &Path,
        agent_os: &Path,
        tftp_root: &Path,
    ) -> anyhow::Result<()> {
        let data = self.data.to_string_lossy().into_owned();
        let log = self.log("kiln-serve.log");
        self.spawn(
            "kiln serve",
            exe,
            &[
                "serve",
                "--data-dir",
                &data,
                "--interface",
                "br0",
                "--address",
                &SERVER_IP.to_string(),
                "--http-port",
                &HTTP_PORT.to_string(),
                "--tftp-root",
                &tftp_root.to_string_lossy(),
                "--artifacts",
                &agent_os.to_string_lossy(),
                "--kernel-args",
                AGENT_KERNEL_ARGS,
            ],
            &log,
        )?;
        Ok(())
    }

    /// Until `kiln serve` answers /healthz and its admin API is up (it writes DATA/api.json,
    /// which the API's clients need, right after the boot services start).
    pub fn wait_healthz(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let url = format!("http://{SERVER_IP}:{HTTP_PORT}/healthz");
        let deadline = Instant::now() + Duration::from_secs(30);
        let curl = [
            "--noproxy",
            "*",
            "-sf",
            "-o",
            "/dev/null",
            "--max-time",
            "2",
            &url,
        ];
        loop {
            if self.data.join("api.json").is_file() && self.ns_run(Path::new("curl"), &curl).is_ok()
            {
                return Ok(());
            }
            if let Some(what) = self.exited() {
                bail!("{what} (log: {})", self.log("kiln-serve.log").display());
            }
            if stop.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            if Instant::now() > deadline {
                bail!("kiln serve did not answer {url} (or start its admin API) within 30 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops everything, newest first: kiln serve (no more BMC commands), the BMC
    /// emulators, the QEMU machines (by their pid files), whatever is left inside the
    /// namespace (only this lab's processes can be there); then the namespace and,
    /// unless kept, the work directory. Safe to call twice.
    pub fn teardown(&mut self) -> Teardown {
        let mut report = Teardown::default();
        if self.torn_down {
            return report;
        }
        self.torn_down = true;
        while let Some(mut p) = self.procs.pop() {
            if let Err(e) = stop_child(&mut p.child) {
                report.problems.push(format!("{}: {e}", p.what));
            }
            report.stopped.push(p.what);
        }
        // Twice: a chassis program may have been starting a machine as its BMC went away.
        for _ in 0..2 {
            for m in self.machines.clone() {
                let dir = self.vm_dir(&m);
                if let Some(pid) = qemu_pid(&dir) {
                    match stop_pid(pid) {
                        Ok(()) => report
                            .stopped
                            .push(format!("QEMU {} (pid {pid})", m.hostname)),
                        Err(e) => report
                            .problems
                            .push(format!("QEMU {} (pid {pid}): {e}", m.hostname)),
                    }
                }
            }
        }
        if self.ns_created {
            if let Ok(out) = run(Command::new("ip").args(["netns", "pids", &self.ns])) {
                for pid in out.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
                    match stop_pid(pid) {
                        Ok(()) => report
                            .stopped
                            .push(format!("pid {pid} left in {}", self.ns)),
                        Err(e) => report
                            .problems
                            .push(format!("pid {pid} in {}: {e}", self.ns)),
                    }
                }
            }
            match run(Command::new("ip").args(["netns", "del", &self.ns])) {
                Ok(_) => report.stopped.push(format!("namespace {}", self.ns)),
                Err(e) => report.problems.push(format!("{e:#}")),
            }
            self.ns_created = false;
        }
        if self.keep {
            report.work_kept = Some(self.work.clone());
        } else if let Err(e) = fs::remove_dir_all(&self.work) {
            report
                .problems
                .push(format!("removing {}: {e}", self.work.display()));
        }
        report
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let r = self.teardown();
        for p in r.problems {
            // Not eprintln!: it panics when stderr is gone, and this runs while unwinding too.
            let _ = writeln!(std::io::stderr(), "kiln demo: cleanup: {p}");
        }
    }
}

/// The pid in `dir`/qemu.pid, if that process is alive and is this machine's QEMU
/// (its command line names the machine's directory), so a recycled pid is never hit.
fn qemu_pid(dir: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(dir.join("qemu.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    (cmdline.contains("qemu-system") && cmdline.contains(&*dir.to_string_lossy())).then_some(pid)
}

fn alive(pid: u32) -> bool {
    // A zombie has exited: only its parent's wait is missing.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, up to 5 s, then SIGKILL (a process that is not our child).
fn stop_pid(pid: u32) -> anyhow::Result<()> {
    if !alive(pid) {
        return Ok(());
    }
    signal(pid, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(pid) {
        signal(pid, "-KILL");
        std::thread::sleep(Duration::from_millis(200));
        if alive(pid) {
            bail!("still running after SIGKILL");
        }
    }
    Ok(())
}

/// SIGTERM, up to 5 s, then SIGKILL; reaped.
fn stop_child(child: &mut Child) -> anyhow::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    signal(child.id(), "-TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_mixes_bmcs_and_roles() {
        let ms = plan(3, BmcChoice::Mixed);
        let summary: Vec<_> = ms
            .iter()
            .map(|m| (m.hostname.as_str(), m.role, m.bmc, m.bmc_address()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "demo-cp1",
                    Role::ControlPlane,
                    BmcKind::Ipmi,
                    "ipmi://127.0.0.1:9001".to_string()
                ),
                (
                    "demo-worker1",
                    Role::Worker,
                    BmcKind::Redfish,
                    "redfish+http://127.0.0.1:8000".to_string()
                ),
                (
                    "demo-worker2",
                    Role::Worker,
                    BmcKind::Ipmi,
                    "ipmi://127.0.0.1:9003".to_string()
                ),
            ]
        );
        assert_eq!(ms[2].mac, "52:54:00:de:00:03");
        assert_eq!(ms[2].ip, Ipv4Addr::new(10, 77, 0, 22));
        assert_eq!(ms[2].tap, "tap2");
        assert!(
            plan(2, BmcChoice::Redfish)
                .iter()
                .all(|m| m.bmc == BmcKind::Redfish)
        );
    }

    #[test]
    fn hardware_csv_enrols() {
        let csv = hardware_csv(&plan(3, BmcChoice::Mixed), "s3cret");
        let parsed = kiln_model::csv::parse_hardware_csv("hardware.csv", &csv);
        let hw = match parsed {
            Ok(hw) => hw,
            Err(e) => panic!("{e:?}\n{csv}"),
        };
        assert_eq!(hw.len(), 3);
        assert!(
            csv.contains(
                "demo-cp1,ipmi://127.0.0.1:9001,admin,s3cret,52:54:00:de:00:01,10.77.0.11,"
            )
        );
        assert!(csv.contains("type=worker|demo=kiln|kiln.dev/boot-mode=legacy,/dev/vda"));
    }

    #[test]
    fn emulator_configs_name_the_chassis_and_port() {
        let ms = plan(2, BmcChoice::Mixed);
        let ipmi = ipmi_sim_config(&ms[0], "pw", Path::new("/w/vm/demo-cp1/chassis.sh"));
        assert!(ipmi.contains("addr 127.0.0.1 9001"), "{ipmi}");
        assert!(
            ipmi.contains("chassis_control \"/w/vm/demo-cp1/chassis.sh 0x20\""),
            "{ipmi}"
        );
        assert!(
            ipmi.contains("user 2 true \"admin\" \"pw\" admin"),
            "{ipmi}"
        );
        let sushy = sushy_config(
            &[(&ms[1], PathBuf::from("/w/vm/demo-worker1/chassis.sh"))],
            Path::new("/w/sushy/state"),
            Path::new("/w/sushy/htpasswd"),
        );
        assert!(
            sushy.contains("'uuid': 'd3e0c0de-0000-4000-8000-000000000002'"),
            "{sushy}"
        );
        assert!(
            sushy.contains("'chassis_control': '/w/vm/demo-worker1/chassis.sh'"),
            "{sushy}"
        );
        assert!(
            sushy.contains("SUSHY_EMULATOR_LISTEN_PORT = 8000"),
            "{sushy}"
        );
    }

    #[test]
    fn chassis_script_exports_the_machine() {
        let m = &plan(1, BmcChoice::Ipmi)[0];
        let s = chassis_script(
            Path::new("/w/bin/vm-power.sh"),
            Path::new("/w/vm/demo-cp1"),
            m,
            Path::new("/w/vm/demo-cp1/disk.raw"),
            1024,
        );
        assert!(s.contains("export VMDIR='/w/vm/demo-cp1' TAP='tap0' MAC='52:54:00:de:00:01' FW=bios DISK='/w/vm/demo-cp1/disk.raw' MEM='1024'"), "{s}");
        assert!(s.contains("exec '/w/bin/vm-power.sh' \"$@\""), "{s}");
        let uefi = Machine {
            firmware: Firmware::Uefi,
            ..m.clone()
        };
        let s = chassis_script(
            Path::new("/w/bin/vm-power.sh"),
            Path::new("/w/vm/demo-cp1"),
            &uefi,
            Path::new("/w/vm/demo-cp1/disk.raw"),
            1024,
        );
        assert!(
            s.contains(&format!(
                "FW=uefi OVMF_CODE='{OVMF_CODE}' OVMF_VARS='{OVMF_VARS}' UEFI_NETSTACK=none DISK="
            )),
            "{s}"
        );
    }

    #[test]
    fn uefi_machines_get_uefi_boot_overrides() {
        let mut ms = plan(2, BmcChoice::Mixed);
        ms[1].firmware = Firmware::Uefi;
        let csv = hardware_csv(&ms, "pw");
        let hw = kiln_model::csv::parse_hardware_csv("hardware.csv", &csv).unwrap();
        let mode = |h: &kiln_model::Hardware| kiln_bmc::boot_mode(h);
        assert_eq!(mode(&hw[0]), kiln_bmc::BootMode::Legacy, "{csv}");
        assert_eq!(mode(&hw[1]), kiln_bmc::BootMode::Uefi, "{csv}");
    }
}
