//! `kiln-rack`: N simulated machines behind simulated Redfish BMCs, provisioned by a real
//! `kiln serve` in a namespace of their own (kiln-lab's: bridge br0 = 10.77.0.1), through the
//! operator's path: hardware.csv with the BMC addresses, `kiln enroll`, `kiln image import`,
//! `kiln workflow create`; Kiln's BMC job powers the machines on. The machines reach br0
//! through a veth pair (sim0 in the namespace, sim0p a bridge port); sim0 holds every
//! machine's reserved address, so each machine's HTTP comes from its own address.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_api::WorkflowView;
use serde::Serialize;

use crate::dhcp_port::DhcpPort;
use crate::ipmi::SimIpmi;
use crate::machine::{Counters, Firmware, Rack, SimMachine};
use crate::redfish::{SimBmc, SimSystem};
use crate::servers::{self, Place, Server, ServerFigures};
use crate::stats::{Measure, Samples, Summary};

/// Each machine's BMC listens on a port of its own from here (Kiln takes turns reading the
/// power of machines behind one BMC address, as it should with a chassis manager; a rack has
/// one BMC per machine): Redfish on TCP, IPMI on UDP.
const BMC_BASE_PORT: u16 = 20000;

/// Which BMCs the simulated machines have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BmcKind {
    #[default]
    Redfish,
    /// IPMI 2.0 over LAN (RMCP+, cipher suites 17 and 3), as ipmi_sim answers.
    Ipmi,
    /// IPMI for the 1st, 3rd, ... machine, Redfish for the others.
    Mixed,
}

impl BmcKind {
    /// Whether machine `i` has an IPMI BMC.
    pub fn ipmi(self, i: usize) -> bool {
        match self {
            BmcKind::Redfish => false,
            BmcKind::Ipmi => true,
            BmcKind::Mixed => i.is_multiple_of(2),
        }
    }
}
const BMC_USER: &str = "admin";
const SIM_IF: &str = "sim0";
/// The simulated BMC's address (on sim0) and the machines' network.
const BMC_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const MACHINE_NET: &str = "10.77.0.0/16";

#[derive(Debug, Clone)]
pub struct Options {
    pub machines: u32,
    pub kiln: PathBuf,
    pub template: PathBuf,
    /// A work directory of its own (made; removed at the end unless `keep`).
    pub work: PathBuf,
    pub keep: bool,
    /// The image the workflows stream: imported as `test-os` (the template's name for it).
    pub image: PathBuf,
    /// Sizes of the fake agent kernel and initrd the machines fetch.
    pub kernel_bytes: u64,
    pub initrd_bytes: u64,
    /// Give up on machines not done after this long.
    pub timeout: Duration,
    /// Before provisioning: every machine's DHCP at once (the boot storm).
    pub storm: bool,
    /// See [`Rack::reboot_delay`] and [`Rack::os_boot_delay`].
    pub reboot_delay: Duration,
    pub os_boot_delay: Duration,
    /// Extra `kiln serve` flags.
    pub serve_args: Vec<String>,
    pub bmc: BmcKind,
    pub firmware: Firmware,
    /// 1, or 2: an HA pair on the rack's segment (needs a PostgreSQL `--store` in
    /// `serve_args`; see [`crate::servers`]).
    pub servers: u32,
    /// Each server capped at this many CPUs (see [`crate::cpu_cap`]); `None`: no cap.
    pub server_cpu: Option<f64>,
}

/// The figures of one run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub machines: u32,
    pub succeeded: usize,
    pub failed: Vec<String>,
    /// From `workflow create` to the end of the last workflow that succeeded.
    pub provision_seconds: f64,
    pub machines_per_minute: f64,
    /// From `workflow create` until every simulated BMC was told to power on.
    pub power_on_seconds: Option<f64>,
    pub latency: std::collections::BTreeMap<Measure, Summary>,
    pub dhcp_resent: u64,
    pub boot_bytes: u64,
    pub image_bytes: u64,
    /// All servers' CPU seconds, and the largest peak RSS among them.
    pub server_cpu_seconds: f64,
    pub server_max_rss_mib: f64,
    pub server_pid: u32,
    /// The CPU cap of each server (`--server-cpu`), if any.
    pub server_cpu_cap: Option<f64>,
    pub servers: Vec<ServerFigures>,
    /// kiln-rack's own CPU seconds (the simulated machines and BMCs share the server's CPUs).
    pub generator_cpu_seconds: f64,
    pub events_file: Option<PathBuf>,
    pub storm: Option<Storm>,
}

/// The boot storm: N DORAs started together.
#[derive(Debug, Serialize)]
pub struct Storm {
    pub machines: usize,
    /// From the first DISCOVER sent to the last ACK received.
    pub seconds: f64,
    /// Exchanges that needed a packet sent again (an answer lost or later than 4 s).
    pub resent: u64,
    /// Exchanges that got no lease after every try.
    pub failed: usize,
}

/// Every machine's DORA at once, as udhcpc sends it (no netboot options: nothing is booted).
async fn storm(rack: &Rack, machines: &[Arc<SimMachine>]) -> Storm {
    let t0 = Instant::now();
    let runs = machines.iter().map(|m| {
        let (dhcp, mac) = (Arc::clone(&rack.dhcp), m.mac);
        tokio::spawn(async move { dhcp.dora(mac, crate::dhcp::Asker::Plain).await })
    });
    let runs: Vec<_> = runs.collect();
    let (mut resent, mut failed) = (0, 0);
    for r in runs {
        match r.await {
            Ok(Ok(d)) => {
                resent += u64::from(d.resent);
                rack.samples.add(Measure::StormOffer, d.offer_after);
                rack.samples.add(Measure::StormAck, d.ack_after);
            }
            _ => failed += 1,
        }
    }
    Storm {
        machines: machines.len(),
        seconds: t0.elapsed().as_secs_f64(),
        resent,
        failed,
    }
}

/// Machine `i`: hostname, MAC, reserved address (10.77.1.10 on: /16 leaves room for 1000s).
pub fn machine_plan(i: u32) -> (String, [u8; 6], Ipv4Addr) {
    let mac = [0x52, 0x54, 0x00, 0x5a, (i >> 8) as u8, i as u8];
    let ip = Ipv4Addr::new(10, 77, 1 + (i / 200) as u8, 10 + (i % 200) as u8);
    (format!("sim-{:04}", i + 1), mac, ip)
}

/// hardware.csv of the rack: each machine's BMC on a port of its own (a Redfish system by its
/// path, or IPMI). Holds the BMC password: written 0600.
pub fn hardware_csv(machines: &[Arc<SimMachine>], password: &str, bmc: BmcKind) -> String {
    let mut out = String::from(
        "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n",
    );
    for (i, m) in machines.iter().enumerate() {
        let port = BMC_BASE_PORT as usize + i;
        let address = if bmc.ipmi(i) {
            format!("ipmi://{BMC_IP}:{port}")
        } else {
            format!(
                "redfish+http://{BMC_IP}:{port}/redfish/v1/Systems/{}",
                m.hostname
            )
        };
        let _ = writeln!(
            out,
            "{host},{address},{BMC_USER},{password},{mac},{ip},255.255.0.0,{gw},{gw},type=sim|kiln.dev/boot-mode=legacy,/dev/vda",
            host = m.hostname,
            mac = m.mac_text(),
            ip = m.ip,
            gw = kiln_lab::SERVER_IP,
        );
    }
    out
}

fn ip(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    kiln_lab::run(Command::new("ip").arg("-n").arg(ns).args(args))
}

/// The machines' own namespace, deleted on drop.
struct SimNamespace(String);

impl Drop for SimNamespace {
    fn drop(&mut self) {
        if let Err(e) = kiln_lab::run(Command::new("ip").args(["netns", "del", &self.0])) {
            eprintln!("kiln-rack: {e:#}");
        }
    }
}

/// The machines' namespace: sim0 holds the BMC address and every machine's reserved address;
/// its peer sim0p is a port of the server namespace's br0, which routes the machines' /16.
/// (Apart from the server: a packet that comes in with one of the server's own addresses as
/// its source is dropped as a martian, and only a link between namespaces really crosses the
/// bridge.)
fn wire_machines(server_ns: &str, machines: &[Arc<SimMachine>]) -> anyhow::Result<SimNamespace> {
    let ns = format!("kiln-rack-{}", std::process::id());
    kiln_lab::run(Command::new("ip").args(["netns", "add", &ns]))?;
    let guard = SimNamespace(ns.clone());
    ip(&ns, &["link", "set", "lo", "up"])?;
    ip(
        server_ns,
        &[
            "link", "add", "sim0p", "type", "veth", "peer", "name", SIM_IF, "netns", &ns,
        ],
    )?;
    ip(server_ns, &["link", "set", "sim0p", "master", "br0"])?;
    ip(server_ns, &["link", "set", "sim0p", "up"])?;
    ip(
        server_ns,
        &[
            "route",
            "add",
            MACHINE_NET,
            "dev",
            "br0",
            "src",
            &kiln_lab::SERVER_IP.to_string(),
        ],
    )?;
    grow_neighbour_table(&ns);
    grow_neighbour_table(server_ns);
    ip(&ns, &["link", "set", SIM_IF, "up"])?;
    ip(
        &ns,
        &["addr", "add", &format!("{BMC_IP}/24"), "dev", SIM_IF],
    )?;
    let mut batch = String::new();
    for m in machines {
        let _ = writeln!(batch, "addr add {}/32 dev {SIM_IF}", m.ip);
    }
    let mut child = Command::new("ip")
        .args(["-n", &ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("ip -batch")?;
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .context("ip -batch stdin")?
            .write_all(batch.as_bytes())?;
    }
    if !child.wait()?.success() {
        bail!("adding the machines' addresses to {SIM_IF} failed");
    }
    Ok(guard)
}

/// A thousand machines fill a namespace's default neighbour table (gc_thresh3 1024): a server
/// would drop answers to some of them.
pub(crate) fn grow_neighbour_table(ns: &str) {
    for (k, v) in [
        ("gc_thresh1", "4096"),
        ("gc_thresh2", "8192"),
        ("gc_thresh3", "16384"),
    ] {
        let _ = kiln_lab::run(Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            &format!("net.ipv4.neigh.default.{k}={v}"),
        ]));
    }
}

/// The namespace this process started in.
static HOME: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

fn leave_to_home() -> anyhow::Result<()> {
    let home = HOME.get().context("no home namespace recorded")?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(home),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .context("going back to our own namespace")
}

/// Moves this thread (and the threads it starts later: the runtime's) into `ns`.
fn enter(ns: &str) -> anyhow::Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("opening namespace {ns}"))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&f),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("entering namespace {ns}"))?;
    Ok(())
}

/// `kiln ARGS --data-dir DATA` inside the server's namespace (where its admin API listens);
/// its stdout.
fn kiln(opts: &Options, ns: &str, data: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&opts.kiln)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", opts.kiln.display()))?;
    if !out.status.success() {
        bail!(
            "kiln {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A test image of `bytes` bytes that does not compress to nothing.
pub fn write_image(path: &Path, bytes: u64) -> anyhow::Result<()> {
    fake_file(path, bytes)
}

/// The report as text.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} machines: {} succeeded in {:.1} s ({:.1} machines/minute); power-on of all BMCs {}",
        r.machines,
        r.succeeded,
        r.provision_seconds,
        r.machines_per_minute,
        r.power_on_seconds
            .map_or("not reached".to_string(), |s| format!(
                "{s:.1} s after workflow create"
            ))
    );
    for (m, s) in &r.latency {
        let _ = writeln!(
            out,
            "  {:<12} n={:<6} p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
            serde_json::to_value(m)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            s.count,
            s.p50_ms,
            s.p99_ms,
            s.max_ms
        );
    }
    let _ = writeln!(
        out,
        "  DHCP requests resent: {}; boot files {} MiB, images {} MiB\n  kiln serve (pid {}): CPU {:.1} s, max RSS {:.0} MiB",
        r.dhcp_resent,
        r.boot_bytes >> 20,
        r.image_bytes >> 20,
        r.server_pid,
        r.server_cpu_seconds,
        r.server_max_rss_mib
    );
    if r.servers.len() > 1 {
        for s in &r.servers {
            let _ = writeln!(
                out,
                "    {} ({}, pid {}): CPU {:.1} s, max RSS {:.0} MiB, {} netboots",
                s.id, s.address, s.pid, s.cpu_seconds, s.max_rss_mib, s.netboots
            );
        }
    }
    if let Some(s) = &r.storm {
        let _ = writeln!(
            out,
            "  boot storm: {} DORAs at once done in {:.2} s, {} resent, {} without a lease",
            s.machines, s.seconds, s.resent, s.failed
        );
    }
    for f in r.failed.iter().take(20) {
        let _ = writeln!(out, "  not succeeded: {f}");
    }
    out
}

/// `bytes` of pseudo-random data (xorshift): nothing on the way can compress or skip it.
fn fake_file(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut left = bytes;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = left.min(8) as usize;
        std::io::Write::write_all(&mut f, &x.to_le_bytes()[..n])?;
        left -= n as u64;
    }
    std::io::Write::flush(&mut f)?;
    Ok(())
}

/// utime + stime (s) and the peak RSS (MiB) of `pid`.
pub fn proc_usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3; utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let cpu = f.get(11).zip(f.get(12)).map_or(0.0, |(u, s)| {
        (u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0)) / ticks
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, hwm_kib / 1024.0)
}

/// Runs the rack; tears the namespace down whatever happens.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let mut lab = kiln_lab::Lab::new(opts.work.clone(), Vec::new(), opts.keep)?;
    let home = std::fs::File::open("/proc/thread-self/ns/net").context("opening our namespace")?;
    HOME.set(home).ok();
    let out = run_in(&mut lab, opts);
    if let Err(e) = leave_to_home() {
        eprintln!("kiln-rack: {e:#}");
    }
    let td = lab.teardown();
    for p in td.problems {
        eprintln!("kiln-rack: teardown: {p}");
    }
    out
}

fn run_in(lab: &mut kiln_lab::Lab, opts: &Options) -> anyhow::Result<Report> {
    let n = opts.machines;
    let machines: Vec<Arc<SimMachine>> = (0..n)
        .map(|i| {
            let (host, mac, ip) = machine_plan(i);
            SimMachine::new(&host, mac, ip)
        })
        .collect();
    std::fs::create_dir_all(lab.work.join("logs"))?;
    lab.create_network()?;
    let sim_ns = wire_machines(&lab.ns, &machines)?;
    let (started, _second_ns) = start_servers(lab, opts)?;
    let _caps = match opts.server_cpu {
        Some(cpus) => started
            .iter()
            .map(|s| {
                let group = format!("kiln-rack-{}-{}", std::process::id(), s.id);
                crate::cpu_cap::CpuCap::apply(&group, s.pid, cpus)
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let log = started[0].log.clone();
    let data = lab.data.clone();

    // The runtime's threads start in the machines' namespace.
    enter(&sim_ns.0)?;
    // Each machine holds a connection or two to the server: more than the default 1024 files.
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(65536),
            maximum: Some(65536),
        },
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // 16 hex digits: within IPMI 2.0's 20-byte limit (64 bits of secret).
    let password = kiln_lab::random_hex(8)?;
    let rack = runtime.block_on(start_rack(opts, &machines, &password))?;

    let csv = lab.work.join("hardware.csv");
    kiln_lab::write_file(&csv, &hardware_csv(&machines, &password, opts.bmc), 0o600)?;
    kiln(opts, &lab.ns, &data, &["enroll", &csv.to_string_lossy()])?;
    let image = opts.image.to_string_lossy();
    let import = ["image", "import", &image, "--name", "test-os"];
    kiln(opts, &lab.ns, &data, &import)?;
    let storm = if opts.storm {
        // the server must know the machines first (its inventory follows the store)
        std::thread::sleep(Duration::from_secs(2));
        Some(runtime.block_on(storm(&rack, &machines)))
    } else {
        None
    };
    let t0 = Instant::now();
    let template = opts.template.to_string_lossy();
    let create = [
        "workflow",
        "create",
        "--template",
        &template,
        "--selector",
        "type=sim",
    ];
    kiln(opts, &lab.ns, &data, &create)?;
    let (ended, power_on) = wait_for_workflows(lab, opts, &machines, t0, &log)?;
    let by_server = rack
        .counters
        .netboots_by_server
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let per_server = servers::figures(&started, &by_server);
    let events = lab.work.join("events.json");
    let all_events = ["events", "--last", "1000000", "-o", "json"];
    if let Ok(text) = kiln(opts, &lab.ns, &data, &all_events) {
        let _ = std::fs::write(&events, text);
    }
    let mut report = summarize(&machines, &ended, &rack);
    report.power_on_seconds = power_on;
    report.server_cpu_seconds = per_server.iter().map(|s| s.cpu_seconds).sum();
    report.server_max_rss_mib = per_server.iter().map(|s| s.max_rss_mib).fold(0.0, f64::max);
    report.server_pid = started[0].pid;
    report.server_cpu_cap = opts.server_cpu;
    report.servers = per_server;
    report.generator_cpu_seconds = proc_usage(std::process::id()).0;
    report.events_file = opts.keep.then_some(events);
    report.storm = storm;
    runtime.shutdown_timeout(Duration::from_secs(1));
    // back home before sim_ns deletes the namespace (run() restores it as well, on errors)
    leave_to_home()?;
    drop(sim_ns);
    Ok(report)
}

/// The server(s), with fake boot files in their artifacts: the first in the lab's namespace on
/// br0, a second (an HA pair) in a namespace of its own, returned to be kept until the end.
fn start_servers(
    lab: &mut kiln_lab::Lab,
    opts: &Options,
) -> anyhow::Result<(Vec<Server>, Option<servers::ServerNamespace>)> {
    if opts.servers > 2 || opts.servers == 0 {
        bail!("--servers takes 1 or 2, not {}", opts.servers);
    }
    let shared_store = opts.serve_args.iter().any(|a| a.contains("postgres"));
    if opts.servers == 2 && !shared_store {
        bail!("two servers share one state on PostgreSQL: add `-- --store postgresql://…`");
    }
    let artifacts = lab.work.join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    fake_file(&artifacts.join("vmlinuz"), opts.kernel_bytes)?;
    fake_file(&artifacts.join("initrd.img"), opts.initrd_bytes)?;
    // The TFTP root too: iPXE's binaries as a PXE ROM fetches them (about their real size).
    for ipxe in ["undionly.kpxe", "ipxe.efi", "snponly.efi"] {
        fake_file(&artifacts.join(ipxe), 96 << 10)?;
    }
    let (lab_ns, data) = (lab.ns.clone(), lab.data.clone());
    let first = Place {
        ns: &lab_ns,
        interface: "br0",
        address: kiln_lab::SERVER_IP,
        data: &data,
    };
    let mut started = vec![servers::start(lab, opts, 0, &first, &artifacts)?];
    if opts.servers < 2 {
        return Ok((started, None));
    }
    let ns = servers::wire_second(&lab_ns)?;
    let data2 = lab.work.join("data-2");
    // The second server hands out image URLs naming itself: it serves the first one's image
    // files (README "Several servers": share DATA_DIR/images).
    let images = data.join("images");
    std::fs::create_dir_all(&images)?;
    std::fs::create_dir_all(&data2)?;
    std::os::unix::fs::symlink(&images, data2.join("images"))?;
    let second = Place {
        ns: &ns.0,
        interface: "srv2",
        address: servers::SECOND_SERVER_IP,
        data: &data2,
    };
    started.push(servers::start(lab, opts, 1, &second, &artifacts)?);
    Ok((started, Some(ns)))
}

/// The shared DHCP port, a BMC per machine (a port each, as a rack has), and every machine's
/// life started (powered off until its BMC says otherwise).
async fn start_rack(
    opts: &Options,
    machines: &[Arc<SimMachine>],
    password: &str,
) -> anyhow::Result<Arc<Rack>> {
    let dhcp = DhcpPort::bind(SIM_IF, 68, 67).context("binding UDP :68 on sim0")?;
    let rack = Arc::new(Rack {
        dhcp,
        firmware: opts.firmware,
        samples: Samples::default(),
        arch: 0,
        counters: Counters::default(),
        reboot_delay: opts.reboot_delay,
        os_boot_delay: opts.os_boot_delay,
    });
    for (i, m) in machines.iter().enumerate() {
        let port = BMC_BASE_PORT + i as u16;
        if opts.bmc.ipmi(i) {
            SimIpmi::new(m.chassis.clone(), BMC_USER, password)
                .spawn((BMC_IP, port).into())
                .await
                .with_context(|| format!("binding a simulated IPMI BMC on {BMC_IP}:{port}"))?;
            continue;
        }
        let system = Arc::new(SimSystem::new(
            &m.hostname,
            &m.hostname,
            &m.mac_text(),
            m.chassis.clone(),
        ));
        let bmc = SimBmc::new(vec![system], BMC_USER, password);
        let listener = tokio::net::TcpListener::bind((BMC_IP, port))
            .await
            .with_context(|| format!("binding a simulated Redfish BMC on {BMC_IP}:{port}"))?;
        tokio::spawn(async move { axum::serve(listener, bmc.router()).await });
    }
    for m in machines {
        tokio::spawn(Arc::clone(m).run(Arc::clone(&rack)));
    }
    Ok(rack)
}

/// Polls the workflows until every machine's has ended (or the timeout): the ended ones, and
/// when the last machine was powered on (seconds after `t0`).
fn wait_for_workflows(
    lab: &mut kiln_lab::Lab,
    opts: &Options,
    machines: &[Arc<SimMachine>],
    t0: Instant,
    log: &std::path::Path,
) -> anyhow::Result<(Vec<WorkflowView>, Option<f64>)> {
    let mut power_on = None;
    let deadline = t0 + opts.timeout;
    let mut listed = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if power_on.is_none() && machines.iter().all(|m| m.powered_on.get().is_some()) {
            let last = machines.iter().filter_map(|m| m.powered_on.get()).max();
            power_on = last.map(|l| l.duration_since(t0).as_secs_f64());
        }
        // Listing every workflow costs the server under test CPU: ask only once every machine
        // says it is through (phoned home, or failed), and every 15 s for those that never do.
        let through = machines.iter().all(|m| {
            let s = m.status.lock().unwrap_or_else(|e| e.into_inner());
            s.as_str() == "installed OS: phoned home" || s.starts_with("failed")
        });
        if !through && listed.elapsed() < Duration::from_secs(15) && Instant::now() < deadline {
            continue;
        }
        listed = Instant::now();
        let list = ["workflow", "list", "--all", "-o", "json"];
        let text = kiln(opts, &lab.ns, &lab.data, &list)?;
        let wfs: Vec<WorkflowView> = serde_json::from_str(&text).context("workflow list")?;
        let ended: Vec<WorkflowView> = wfs.into_iter().filter(|w| w.state.is_terminal()).collect();
        if ended.len() >= machines.len() || Instant::now() > deadline {
            return Ok((ended, power_on));
        }
        if let Some(why) = lab.exited() {
            bail!("{why}; see {}", log.display());
        }
    }
}

/// What the run did: results, rates, latencies and the rack's counters (the server's figures
/// are filled in by the caller).
fn summarize(machines: &[Arc<SimMachine>], ended: &[WorkflowView], rack: &Rack) -> Report {
    let succeeded_wf = |w: &&WorkflowView| w.state == kiln_api::agent::WorkflowState::Succeeded;
    // All workflows are made by one `workflow create`: the longest one is the rack's time.
    let provision = ended
        .iter()
        .filter(succeeded_wf)
        .map(|w| w.duration_seconds)
        .fold(0.0, f64::max);
    let succeeded = ended.iter().filter(succeeded_wf).count();
    let mut failed: Vec<String> = ended
        .iter()
        .filter(|w| !succeeded_wf(w))
        .map(|w| format!("{}: {} ({})", w.machine, w.state, w.message))
        .collect();
    for m in machines {
        if !ended.iter().any(|w| w.machine == m.hostname) {
            let s = m.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
            failed.push(format!("{}: not done ({s})", m.hostname));
        }
    }
    let c = &rack.counters;
    let load = std::sync::atomic::Ordering::Relaxed;
    Report {
        machines: machines.len() as u32,
        succeeded,
        failed,
        provision_seconds: provision,
        machines_per_minute: succeeded as f64 * 60.0 / provision.max(1e-9),
        power_on_seconds: None,
        latency: rack.samples.summary(),
        dhcp_resent: c.dhcp_resent.load(load),
        boot_bytes: c.boot_bytes.load(load),
        image_bytes: c.image_bytes.load(load),
        server_cpu_seconds: 0.0,
        server_max_rss_mib: 0.0,
        server_pid: 0,
        server_cpu_cap: None,
        servers: Vec::new(),
        generator_cpu_seconds: 0.0,
        events_file: None,
        storm: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_machines_get_distinct_macs_and_addresses() {
        let plan: Vec<_> = (0..1000).map(machine_plan).collect();
        let mut macs: Vec<_> = plan.iter().map(|p| p.1).collect();
        let mut ips: Vec<_> = plan.iter().map(|p| p.2).collect();
        macs.sort();
        macs.dedup();
        ips.sort();
        ips.dedup();
        assert_eq!((macs.len(), ips.len()), (1000, 1000));
        assert!(
            ips.iter()
                .all(|ip| ip.octets()[3] >= 10 && ip.octets()[2] >= 1)
        );
        assert!(!ips.contains(&kiln_lab::SERVER_IP));
    }

    #[test]
    fn the_hardware_csv_enrols() {
        let ms: Vec<_> = (0..3)
            .map(|i| {
                let (h, m, ip) = machine_plan(i);
                SimMachine::new(&h, m, ip)
            })
            .collect();
        let csv = hardware_csv(&ms, "pw-0123456789", BmcKind::Mixed);
        let hw = kiln_model::csv::parse_hardware_csv("hardware.csv", &csv).unwrap();
        assert_eq!(hw.len(), 3);
        let bmc = |i: usize| hw[i].bmc.as_ref().unwrap().address.clone();
        assert_eq!(bmc(0), "ipmi://10.77.0.2:20000");
        assert_eq!(
            bmc(1),
            "redfish+http://10.77.0.2:20001/redfish/v1/Systems/sim-0002"
        );
        assert_eq!(hw[1].hostname, "sim-0002");
        assert_eq!(hw[1].mac.to_string(), "52:54:00:5a:00:01");
        assert_eq!(hw[1].labels.get("type").map(String::as_str), Some("sim"));
    }
}
