//! `kiln demo`: from powered-off (virtual) metal to a Kubernetes cluster on one machine.
//!
//! It builds a private lab (see [`kiln_lab`]): a network namespace with QEMU (TCG) machines behind
//! virtual BMCs (OpenIPMI `ipmi_sim`, sushy-tools Redfish), runs `kiln serve` inside the
//! namespace, enrolls a generated hardware.csv, imports the test OS, creates the cluster (one
//! control plane, the rest workers), follows every machine live, prints the time each phase
//! took, and removes everything on exit, error, Ctrl-C or SIGTERM. It drives Kiln as an
//! operator would: `kiln` commands, run inside the namespace where the server's admin API
//! listens (the live view's reads: see [`watch`]). It never touches the host's interfaces,
//! and it never uses `--data-dir`: its state lives in its work directory.

mod delete;
mod progress;
mod summary;
mod watch;

use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_engine::now_ms;
use serde::Serialize;

use kiln_lab::{self as lab, BmcChoice, BmcKind, Firmware, Lab, Machine, Role, SERVER_IP};
use progress::{MachineView, Phase, human_ms};
use summary::MachineReport;
use watch::Watch;

/// The cluster's name in the demo.
const CLUSTER: &str = "demo";
/// Blank disk per machine (sparse).
const DISK_GIB: u64 = 3;
/// After every workflow ended, how long the cluster may take to say ready or failed.
const CLUSTER_GRACE: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct Args {
    /// Machines: the first is the control plane, the others workers (1 = a single-node,
    /// untainted cluster; 3 = one control plane and two workers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    nodes: u32,
    /// Boot files: agent-os/{vmlinuz,initrd.img} (images/agent/build.sh DIR/agent-os) and
    /// test-os/test-os.raw.zst (images/test-os/build.sh DIR/test-os); tests/demo.sh builds both.
    #[arg(long, default_value = "target/e2e-assets")]
    assets: PathBuf,
    /// Scratch directory for the lab (disks, logs, Kiln's state). Must not exist or be empty.
    /// Default: /var/tmp/kiln-demo-<pid>.
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep the scratch directory (logs, serial consoles, disks, Kiln's data dir and, once the
    /// cluster is ready, the admin kubeconfig Kiln minted: WORK/kubeconfig) at the end.
    /// Processes and the namespace are removed all the same.
    #[arg(long)]
    keep: bool,
    /// Give up (and clean up) after this long: 90s, 30m, 1h.
    #[arg(long, default_value = "30m", value_parser = crate::output::duration_arg)]
    timeout: Duration,
    /// Virtual BMCs: mixed (IPMI for the 1st, 3rd, ... machine, Redfish for the others),
    /// ipmi or redfish.
    #[arg(long, value_enum, default_value_t)]
    bmc: BmcChoice,
    /// The machines' firmware: bios (SeaBIOS) or uefi (OVMF; Debian's ovmf package).
    #[arg(long, value_enum, default_value_t)]
    firmware: Firmware,
    /// Install the machines with this workflow template instead of creating a cluster
    /// (e.g. workflows/debian-test-os.yaml: the same install, without kubeadm).
    #[arg(long)]
    template: Option<PathBuf>,
    /// Kubernetes version in the cluster spec.
    #[arg(long, default_value = "1.31")]
    kubernetes_version: String,
    /// Memory per machine, MiB.
    #[arg(long, default_value_t = 1024)]
    memory: u32,
    /// Python venv holding sushy-tools (the Redfish emulator).
    #[arg(long, env = "KILN_VENV", default_value = "/opt/kiln-venv")]
    venv: PathBuf,
    /// iPXE binaries for TFTP (Debian's ipxe package).
    #[arg(long, default_value = "/usr/lib/ipxe")]
    tftp_root: PathBuf,
    /// Also write the summary (phase times per machine) as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Once the cluster is ready, delete it (`kiln cluster delete`): every node is power
    /// cycled into the agent, its disk wiped and the machine powered off; the BMCs must then
    /// report every machine off.
    #[arg(long, conflicts_with = "template")]
    delete: bool,
}

/// How the demo ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed(String),
    TimedOut,
    Interrupted,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let uid = std::fs::metadata("/proc/self")
        .context("reading /proc/self")?
        .uid();
    if uid != 0 {
        bail!(
            "kiln demo must run as root: it creates a network namespace, tap devices and QEMU machines (try: sudo kiln demo ...)"
        );
    }
    let mut machines = lab::plan(args.nodes, args.bmc);
    for m in &mut machines {
        m.firmware = args.firmware;
    }
    preflight(&args, &machines)?;
    let stop = stop_on_signals()?;
    let exe = std::env::current_exe().context("finding the kiln executable")?;
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/var/tmp/kiln-demo-{}", std::process::id())));
    let clock = Instant::now();
    let mut lab = Lab::new(work, machines, args.keep)?;
    let outcome = match demo(&args, &exe, &mut lab, &stop, clock) {
        Ok(o) => o,
        Err(_) if stop.load(Ordering::SeqCst) => Outcome::Interrupted,
        Err(e) => {
            say(clock, &format!("error: {e:#}"));
            show_logs(&lab);
            Outcome::Failed(format!("{e:#}"))
        }
    };
    say(clock, "cleaning up");
    let t = Instant::now();
    let td = lab.teardown();
    if !td.stopped.is_empty() {
        say(clock, &format!("stopped: {}", td.stopped.join(", ")));
    }
    for p in &td.problems {
        say(clock, &format!("cleanup problem: {p}"));
    }
    match &td.work_kept {
        Some(w) => say(
            clock,
            &format!(
                "kept {} (Kiln's data: --data-dir {}/data)",
                w.display(),
                w.display()
            ),
        ),
        None => say(clock, "work directory removed"),
    }
    say(
        clock,
        &format!("cleanup took {}", human_ms(t.elapsed().as_millis() as u64)),
    );
    Ok(match outcome {
        Outcome::Succeeded => ExitCode::SUCCESS,
        Outcome::Interrupted => {
            say(clock, "interrupted");
            ExitCode::from(130)
        }
        Outcome::TimedOut => {
            say(
                clock,
                &format!(
                    "gave up after --timeout {}",
                    human_ms(args.timeout.as_millis() as u64)
                ),
            );
            ExitCode::from(124)
        }
        Outcome::Failed(why) => {
            say(clock, &format!("FAILED: {why}"));
            ExitCode::FAILURE
        }
    })
}

/// Everything the lab needs, checked before anything is created; all gaps named at once.
fn preflight(args: &Args, machines: &[Machine]) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    let mut tools = vec!["ip", "qemu-system-x86_64", "curl", "kill"];
    if machines.iter().any(|m| m.bmc == BmcKind::Ipmi) {
        tools.push("ipmi_sim");
    }
    for t in tools {
        if !on_path(t) {
            missing.push(format!("{t} (not on PATH)"));
        }
    }
    let agent = args.assets.join("agent-os");
    let mut files = vec![
        agent.join("vmlinuz"),
        agent.join("initrd.img"),
        args.assets.join("test-os/test-os.raw.zst"),
        args.tftp_root.join("undionly.kpxe"),
    ];
    if machines.iter().any(|m| m.firmware == Firmware::Uefi) {
        files.extend([PathBuf::from(lab::OVMF_CODE), PathBuf::from(lab::OVMF_VARS)]);
    }
    for f in &files {
        if !f.is_file() {
            missing.push(f.display().to_string());
        }
    }
    if machines.iter().any(|m| m.bmc == BmcKind::Redfish) {
        let py = args.venv.join("bin/python");
        let ok = Command::new(&py)
            .args(["-c", "import sushy_tools, bcrypt, flask"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            missing.push(format!(
                "sushy-tools in {} (python3 -m venv {0} && {0}/bin/pip install sushy-tools)",
                args.venv.display()
            ));
        }
    }
    if let Some(t) = &args.template
        && !t.is_file()
    {
        missing.push(format!("template {}", t.display()));
    }
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "kiln demo cannot start; missing:\n  {}\n\
         Debian packages: apt-get install qemu-system-x86 ipxe ipxe-qemu seabios ovmf openipmi iproute2 curl procps python3-venv\n\
         Boot files: images/agent/build.sh {}/agent-os and images/test-os/build.sh {}/test-os (tests/demo.sh does all of this)",
        missing.join("\n  "),
        args.assets.display(),
        args.assets.display()
    )
}

/// SIGINT, SIGTERM and SIGHUP set the returned flag instead of killing the process, so
/// that the lab is always taken down.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    // Registered here, before the lab exists: no window in which a signal kills us.
    let mut sigs = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            ))
        })
        .context("installing signal handlers")?;
    let f = flag.clone();
    std::thread::spawn(move || {
        rt.block_on(async move {
            loop {
                let name = tokio::select! {
                    _ = sigs.0.recv() => "SIGINT",
                    _ = sigs.1.recv() => "SIGTERM",
                    _ = sigs.2.recv() => "SIGHUP",
                };
                f.store(true, Ordering::SeqCst);
                let _ = writeln!(
                    std::io::stderr(),
                    "\nkiln demo: {name}: stopping; removing the lab"
                );
            }
        })
    });
    Ok(flag)
}

/// Writes to stdout, ignoring errors: a closed terminal (SIGHUP) must not stop the cleanup.
fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

fn say(clock: Instant, msg: &str) {
    out(&format!(
        "[{:>7}] {msg}\n",
        human_ms(clock.elapsed().as_millis() as u64)
    ));
}

fn interrupted(stop: &AtomicBool) -> anyhow::Result<()> {
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// `kiln ARGS... --data-dir DATA` inside the lab's namespace, where `kiln serve` runs and
/// its admin API listens (found through DATA/api.json).
fn kiln_command(lab: &Lab, exe: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.ns])
        .arg(exe)
        .args(args)
        .arg("--data-dir")
        .arg(&lab.data);
    cmd
}

/// A `kiln` command (a client of the lab's server) to completion; its stdout.
fn kiln(lab: &Lab, exe: &Path, args: &[&str]) -> anyhow::Result<String> {
    lab::run(&mut kiln_command(lab, exe, args))
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("           {l}\n"))
        .collect::<String>()
}

/// The native cluster spec for the lab's machines.
fn cluster_spec(machines: &[Machine], version: &str) -> String {
    let cp = machines
        .iter()
        .find(|m| m.role == Role::ControlPlane)
        .expect("a lab has a control plane");
    let workers = machines.iter().filter(|m| m.role == Role::Worker).count();
    let mut s = format!(
        "# Written by `kiln demo`. The test OS (imported as `test-os`) carries a stand-in\n\
         # kubeadm that records what cloud-init ran: Kubernetes is not downloaded here.\n\
         kind: KilnCluster\n\
         name: {CLUSTER}\n\
         kubernetesVersion: \"{version}\"\n\
         controlPlane:\n  count: 1\n  endpoint: {}\n  selector: {{type: cp, demo: kiln}}\n",
        cp.ip
    );
    if workers > 0 {
        s += &format!(
            "workers:\n  - name: md-0\n    count: {workers}\n    selector: {{type: worker, demo: kiln}}\n"
        );
    }
    s += "network:\n  pods: 192.168.0.0/16\n  services: 10.96.0.0/12\nosFamily: debian\nimage: test-os\n";
    s
}

fn demo(
    args: &Args,
    exe: &Path,
    lab: &mut Lab,
    stop: &AtomicBool,
    clock: Instant,
) -> anyhow::Result<Outcome> {
    let n = lab.machines.len();
    let what = match &args.template {
        Some(t) => format!("install with workflow template {}", t.display()),
        None => format!(
            "Kubernetes cluster {CLUSTER:?}: 1 control plane, {} worker(s)",
            n - 1
        ),
    };
    say(
        clock,
        &format!(
            "kiln demo: {n} QEMU machine(s) (TCG, {}, {} MiB each) behind virtual BMCs; {what}; work dir {}",
            match args.firmware {
                Firmware::Bios => "SeaBIOS",
                Firmware::Uefi => "OVMF UEFI",
            },
            args.memory,
            lab.work.display()
        ),
    );
    lab.prepare_machines(args.memory, DISK_GIB)?;
    // 16 characters: the longest password IPMI 1.5 user slots (and ipmi_sim) hold.
    let password = lab::random_hex(8)?;
    let csv = lab.work.join("hardware.csv");
    lab::write_file(&csv, &lab::hardware_csv(&lab.machines, &password), 0o600)?;
    for m in &lab.machines {
        say(
            clock,
            &format!(
                "  {:<13} {:<13} {} {}  BMC {}",
                m.hostname,
                m.role.name(),
                m.mac,
                m.ip,
                m.bmc_address()
            ),
        );
    }
    interrupted(stop)?;

    lab.create_network()?;
    say(
        clock,
        &format!(
            "network namespace {}: bridge br0 {SERVER_IP}/24, taps {}",
            lab.ns,
            lab.machines
                .iter()
                .map(|m| m.tap.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    lab.start_bmcs(&password, &args.venv)?;
    let ipmi = lab
        .machines
        .iter()
        .filter(|m| m.bmc == BmcKind::Ipmi)
        .count();
    let redfish = n - ipmi;
    let agent_os = args
        .assets
        .join("agent-os")
        .canonicalize()
        .context("resolving the agent OS directory")?;
    lab.start_kiln_serve(exe, &agent_os, &args.tftp_root)?;
    wait_healthz(lab, stop)?;
    say(
        clock,
        &format!(
            "kiln serve is up inside the namespace: DHCP on br0, TFTP, HTTP http://{SERVER_IP}:{} (log {})",
            lab::HTTP_PORT,
            lab.log("kiln-serve.log").display()
        ),
    );
    kiln(lab, exe, &["enroll", &csv.to_string_lossy()])?;
    say(
        clock,
        &format!("enrolled {n} machine(s) from {}", csv.display()),
    );
    interrupted(stop)?;
    let image = args.assets.join("test-os/test-os.raw.zst");
    kiln(
        lab,
        exe,
        &[
            "image",
            "import",
            &image.to_string_lossy(),
            "--name",
            "test-os",
        ],
    )?;
    say(clock, &format!("imported {} as test-os", image.display()));
    interrupted(stop)?;
    let states = wait_bmcs(lab, exe, stop)?;
    say(
        clock,
        &format!(
            "virtual BMCs answer (ipmi_sim x{ipmi}, sushy-tools x{}): {states}",
            redfish.min(1)
        ),
    );
    interrupted(stop)?;

    let watch = Watch::open(&lab.data)?;
    let first_event = watch.last_event_id()?;
    let install_start = now_ms();
    match &args.template {
        Some(t) => {
            let text = kiln(
                lab,
                exe,
                &[
                    "workflow",
                    "create",
                    "--template",
                    &t.to_string_lossy(),
                    "--selector",
                    "demo=kiln",
                ],
            )?;
            say(
                clock,
                &format!("kiln workflow create --template {}", t.display()),
            );
            out(&indent(&text));
        }
        None => {
            let spec = lab.work.join("cluster.kiln.yaml");
            lab::write_file(
                &spec,
                &cluster_spec(&lab.machines, &args.kubernetes_version),
                0o644,
            )?;
            let text = kiln(lab, exe, &["cluster", "create", &spec.to_string_lossy()])?;
            say(clock, &format!("kiln cluster create {}", spec.display()));
            out(&indent(&text));
        }
    }
    let deadline = clock + args.timeout;
    let mut views: Vec<MachineView> = lab
        .machines
        .iter()
        .map(|m| MachineView::new(m.clone(), lab.serial_log(m)))
        .collect();
    let cluster = args.template.is_none().then_some(CLUSTER);
    let (outcome, cluster_state) = follow(
        lab,
        exe,
        &watch,
        &mut views,
        Follow {
            first_event,
            install_start,
            cluster,
            deadline,
            clock,
        },
        stop,
    )?;
    let install_ms = now_ms().saturating_sub(install_start);

    // The summary.
    let reports: Vec<MachineReport> = views.iter().map(report).collect();
    out(&format!("\n{}", summary::render(&reports)));
    let ok = reports.iter().filter(|r| r.result == "succeeded").count();
    let headline = match (cluster, &cluster_state) {
        (Some(c), Some(s)) => format!("cluster {c}: {s}; "),
        (Some(c), None) => format!("cluster {c}: state unknown; "),
        _ => String::new(),
    };
    out(&format!(
        "{headline}{ok}/{n} machine(s) installed; {} from create to the end, {} in all (lab set-up included)\n",
        human_ms(install_ms),
        human_ms(clock.elapsed().as_millis() as u64)
    ));
    let kubeadm: Vec<String> = views
        .iter()
        .filter(|v| !v.kubeadm.is_empty())
        .map(|v| format!("{}: kubeadm {}", v.machine.hostname, v.kubeadm.join(", ")))
        .collect();
    if !kubeadm.is_empty() {
        out(&format!(
            "the installed OS ran (test OS stand-in, see README): {}\n",
            kubeadm.join("; ")
        ));
    }
    if let (Some(c), Some("ready"), true) = (cluster, cluster_state.as_deref(), lab.keep) {
        // Minted by Kiln from the cluster CA; kept in the kept work dir (also after --delete).
        let file = lab.work.join("kubeconfig");
        match kiln(
            lab,
            exe,
            &["cluster", "kubeconfig", c, "--out", &file.to_string_lossy()],
        ) {
            Ok(_) => out(&format!(
                "admin kubeconfig (minted by Kiln from the cluster CA): {}\n",
                file.display()
            )),
            Err(e) => out(&format!("kiln cluster kubeconfig {c}: {e:#}\n")),
        }
    }
    let mut outcome = outcome;
    let mut deleted = None;
    if args.delete && outcome == Outcome::Succeeded {
        let (o, report) = delete::run(lab, exe, &watch, deadline, clock, stop)?;
        outcome = o;
        deleted = Some(report);
    }
    if let Some(path) = &args.summary_json {
        let json = SummaryJson {
            nodes: n,
            mode: if cluster.is_some() {
                "cluster"
            } else {
                "template"
            },
            cluster_state: cluster_state.clone(),
            outcome: format!("{outcome:?}"),
            install_ms,
            wall_ms: clock.elapsed().as_millis() as u64,
            machines: &reports,
            delete: deleted.as_ref(),
        };
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        say(clock, &format!("summary written to {}", path.display()));
    }
    if outcome != Outcome::Succeeded && outcome != Outcome::Interrupted {
        show_logs(lab);
    }
    Ok(outcome)
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    nodes: usize,
    mode: &'static str,
    cluster_state: Option<String>,
    outcome: String,
    install_ms: u64,
    wall_ms: u64,
    machines: &'a [MachineReport],
    /// With --delete: the deprovisioning that followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    delete: Option<&'a delete::DeleteReport>,
}

fn report(v: &MachineView) -> MachineReport {
    let (result, message) = match &v.workflow {
        Some(wf) if wf.state.is_terminal() => (wf.state.to_string(), wf.message.clone()),
        Some(wf) => ("unfinished".to_string(), format!("still {}", wf.state)),
        None => ("unfinished".to_string(), "no workflow".to_string()),
    };
    MachineReport {
        hostname: v.machine.hostname.clone(),
        workflow: v
            .workflow
            .as_ref()
            .map(|w| w.id.clone())
            .unwrap_or_default(),
        role: v.machine.role.name(),
        bmc: v.machine.bmc.name(),
        result,
        message,
        phases_ms: summary::phases(&v.timeline),
        total_ms: summary::total(&v.timeline),
        timeline: v.timeline.clone(),
        image: v.image,
        kubeadm: v.kubeadm.clone(),
    }
}

/// Until `kiln serve` answers /healthz and its admin API is up (it writes DATA/api.json,
/// which the `kiln` commands need, right after the boot services start).
fn wait_healthz(lab: &mut Lab, stop: &AtomicBool) -> anyhow::Result<()> {
    let url = format!("http://{SERVER_IP}:{}/healthz", lab::HTTP_PORT);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if lab.data.join("api.json").is_file()
            && lab
                .ns_run(
                    Path::new("curl"),
                    &[
                        "--noproxy",
                        "*",
                        "-sf",
                        "-o",
                        "/dev/null",
                        "--max-time",
                        "2",
                        &url,
                    ],
                )
                .is_ok()
        {
            return Ok(());
        }
        if let Some(what) = lab.exited() {
            bail!("{what} (log: {})", lab.log("kiln-serve.log").display());
        }
        interrupted(stop)?;
        if Instant::now() > deadline {
            bail!("kiln serve did not answer {url} (or start its admin API) within 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[derive(serde::Deserialize)]
struct BmcRow {
    machine: String,
    ok: bool,
    result: String,
    #[serde(default)]
    error: Option<String>,
}

/// `kiln bmc status` of every lab machine, run inside the namespace (where the emulators
/// listen); no rows when it printed nothing usable.
fn bmc_status(lab: &Lab, exe: &Path) -> anyhow::Result<Vec<BmcRow>> {
    let out = kiln_command(
        lab,
        exe,
        &["bmc", "status", "--selector", "demo=kiln", "-o", "json"],
    )
    .stdin(Stdio::null())
    .stderr(Stdio::null())
    .output()
    .context("running kiln bmc status")?;
    Ok(serde_json::from_slice(&out.stdout).unwrap_or_default())
}

/// Until every virtual BMC answers `kiln bmc status`; "host off, ..." for the log.
fn wait_bmcs(lab: &mut Lab, exe: &Path, stop: &AtomicBool) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = bmc_status(lab, exe)?;
        if !rows.is_empty() && rows.iter().all(|r| r.ok) {
            return Ok(rows
                .iter()
                .map(|r| format!("{} {}", r.machine, r.result))
                .collect::<Vec<_>>()
                .join(", "));
        }
        if let Some(what) = lab.exited() {
            bail!("{what}");
        }
        interrupted(stop)?;
        if Instant::now() > deadline {
            let why: Vec<String> = rows
                .iter()
                .filter(|r| !r.ok)
                .map(|r| {
                    format!(
                        "{}: {} {}",
                        r.machine,
                        r.error.as_deref().unwrap_or(""),
                        r.result
                    )
                })
                .collect();
            bail!(
                "the virtual BMCs did not all answer within 60 s: {} (logs in {})",
                if why.is_empty() {
                    "no reply".to_string()
                } else {
                    why.join("; ")
                },
                lab.log("").display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

struct Follow<'a> {
    first_event: i64,
    install_start: u64,
    cluster: Option<&'a str>,
    deadline: Instant,
    clock: Instant,
}

/// The cluster's state from `kiln cluster status NAME -o json`.
fn cluster_state(lab: &Lab, exe: &Path, name: &str) -> Result<(String, String), String> {
    let out =
        kiln(lab, exe, &["cluster", "status", name, "-o", "json"]).map_err(|e| format!("{e:#}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("kiln cluster status: {e}"))?;
    let state = v["state"].as_str().unwrap_or("unknown").to_string();
    let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
    let phoned = nodes
        .iter()
        .filter(|n| n["phone_home"].as_bool() == Some(true))
        .count();
    let api_server = if v["api_server_confirmed"].as_bool() == Some(true) {
        "API server answered"
    } else {
        "API server not confirmed yet"
    };
    Ok((
        state.clone(),
        format!(
            "cluster {name}: {state}; {phoned}/{} node(s) phoned home; {api_server}",
            nodes.len()
        ),
    ))
}

/// Follows the machines until the install ends; redraws in place on a terminal, prints a
/// line per change otherwise.
fn follow(
    lab: &mut Lab,
    exe: &Path,
    watch: &Watch,
    views: &mut [MachineView],
    f: Follow<'_>,
    stop: &AtomicBool,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let tty = std::io::stdout().is_terminal();
    let width: usize = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(120);
    let mut last_event = f.first_event;
    let mut drawn = 0usize;
    let mut keys: Vec<String> = vec![String::new(); views.len() + 1];
    let mut cluster: Option<(String, String)> = None;
    let mut last_cluster_poll: Option<Instant> = None;
    let mut all_ended_at: Option<Instant> = None;
    let outcome = loop {
        let now = now_ms();
        for (id, event) in watch.events_after(last_event)? {
            last_event = id;
            if let Some(v) = views
                .iter_mut()
                .find(|v| event.machine.as_deref() == Some(v.machine.hostname.as_str()))
            {
                v.on_event(&event);
            }
        }
        // Newest first: the first workflow of each machine since the install began.
        let wfs = watch.workflows()?;
        for v in views.iter_mut() {
            if let Some(wf) = wfs.iter().find(|w| {
                w.hardware == v.machine.hostname && w.created_ms + 1000 >= f.install_start
            }) {
                let ph = watch.phone_home_of(&wf.id)?;
                v.on_workflow(wf.clone(), ph);
            }
            v.poll_serial(now);
        }
        if let Some(name) = f.cluster
            && last_cluster_poll.is_none_or(|t| t.elapsed() >= Duration::from_secs(3))
        {
            last_cluster_poll = Some(Instant::now());
            cluster = Some(match cluster_state(lab, exe, name) {
                Ok(s) => s,
                Err(e) => (
                    "unknown".into(),
                    format!("cluster {name}: status unavailable: {e}"),
                ),
            });
        }

        // Draw.
        let mut lines: Vec<String> = Vec::new();
        if let Some((_, line)) = &cluster {
            lines.push(line.clone());
        }
        lines.extend(views.iter().map(|v| progress::line(v, now)));
        let lines: Vec<String> = lines
            .into_iter()
            .map(|l| l.chars().take(width.saturating_sub(1)).collect())
            .collect();
        if tty {
            let mut frame = String::new();
            if drawn > 0 {
                frame += &format!("\x1b[{drawn}A");
            }
            for l in &lines {
                frame += &format!("\x1b[2K{l}\n");
            }
            out(&frame);
            drawn = lines.len();
        } else {
            let mut new_keys: Vec<String> = Vec::new();
            if let Some((state, line)) = &cluster {
                new_keys.push(format!("{state} {line}"));
            } else {
                new_keys.push(String::new());
            }
            new_keys.extend(views.iter().map(|v| v.phase().key()));
            for (i, k) in new_keys.iter().enumerate() {
                if keys.get(i) != Some(k) {
                    let line = if cluster.is_some() {
                        lines.get(i)
                    } else if i > 0 {
                        lines.get(i - 1)
                    } else {
                        None
                    };
                    if let Some(l) = line {
                        say(f.clock, l);
                    }
                }
            }
            keys = new_keys;
        }

        // Done?
        let all_ended = views
            .iter()
            .all(|v| matches!(v.phase(), Phase::Done(_) | Phase::Failed(_)));
        if all_ended && all_ended_at.is_none() {
            all_ended_at = Some(Instant::now());
        }
        let state = cluster.as_ref().map(|(s, _)| s.as_str());
        let any_failed = views.iter().any(|v| matches!(v.phase(), Phase::Failed(_)));
        match (f.cluster, state) {
            (None, _) if all_ended => {
                break if any_failed {
                    Outcome::Failed("a workflow failed".into())
                } else {
                    Outcome::Succeeded
                };
            }
            (Some(_), Some("ready")) if all_ended => {
                break if any_failed {
                    Outcome::Failed("the cluster is ready but a workflow failed".into())
                } else {
                    Outcome::Succeeded
                };
            }
            (Some(c), Some("failed")) => break Outcome::Failed(format!("cluster {c} failed")),
            (Some(c), s) if all_ended_at.is_some_and(|t| t.elapsed() > CLUSTER_GRACE) => {
                break Outcome::Failed(format!(
                    "every workflow ended but cluster {c} is {} after {} s",
                    s.unwrap_or("unknown"),
                    CLUSTER_GRACE.as_secs()
                ));
            }
            _ => {}
        }
        if let Some(o) = should_stop(lab, f.deadline, stop) {
            break o;
        }
        // About a second between redraws, waking early for a signal.
        for _ in 0..10 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    Ok((outcome, cluster.map(|(s, _)| s)))
}

/// Why following the machines must end now, if it must: a signal, the deadline, or a lab
/// process (kiln serve, an emulator) that died.
fn should_stop(lab: &mut Lab, deadline: Instant, stop: &AtomicBool) -> Option<Outcome> {
    if stop.load(Ordering::SeqCst) {
        return Some(Outcome::Interrupted);
    }
    if Instant::now() > deadline {
        return Some(Outcome::TimedOut);
    }
    lab.exited().map(Outcome::Failed)
}

/// On failure: the tail of kiln serve's log and of each unfinished machine's console.
fn show_logs(lab: &Lab) {
    let mut logs = vec![("kiln serve".to_string(), lab.log("kiln-serve.log"))];
    for m in &lab.machines {
        logs.push((format!("{} console", m.hostname), lab.serial_log(m)));
    }
    for (label, path) in logs {
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let text = clean_console(&String::from_utf8_lossy(&text));
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut text = format!("---- {label} ({}), last lines:\n", path.display());
        for l in &lines[lines.len().saturating_sub(15)..] {
            text += &format!("  {l}\n");
        }
        out(&text);
    }
    if !lab.keep {
        out("(run with --keep to keep every log in the work directory)\n");
    }
}

/// Console text without escape sequences and control characters.
fn clean_console(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final-byte; other escapes: ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => out.push('\n'),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_spec_single_node_has_no_workers() {
        let s = cluster_spec(&lab::plan(1, BmcChoice::Mixed), "1.31");
        assert!(
            s.contains("kind: KilnCluster\nname: demo\nkubernetesVersion: \"1.31\""),
            "{s}"
        );
        assert!(s.contains("endpoint: 10.77.0.11"), "{s}");
        assert!(!s.contains("workers:"), "{s}");
        assert!(s.contains("image: test-os"), "{s}");
    }

    #[test]
    fn cluster_spec_three_nodes_has_two_workers() {
        let s = cluster_spec(&lab::plan(3, BmcChoice::Mixed), "1.31");
        assert!(
            s.contains("workers:\n  - name: md-0\n    count: 2\n"),
            "{s}"
        );
    }

    #[test]
    fn console_is_cleaned() {
        assert_eq!(
            clean_console("\x1b[2J\x1b[01;01HSeaBIOS\r\nok\x07"),
            "SeaBIOS\n\nok"
        );
    }

    #[test]
    fn timeouts_parse() {
        assert_eq!(
            crate::output::duration_arg("30m"),
            Ok(Duration::from_secs(1800))
        );
        assert!(crate::output::duration_arg("soon").is_err());
    }
}
