//! `kiln demo`: from powered-off (virtual) metal to a Kubernetes cluster on one machine.
//!
//! It builds a private lab (see [`Lab`]): a network namespace with QEMU (TCG) machines behind
//! virtual BMCs (OpenIPMI `ipmi_sim`, sushy-tools Redfish), runs `kiln serve` inside the
//! namespace, enrolls a generated hardware.csv, imports the test OS, creates the cluster (one
//! control plane, the rest workers), follows every machine live, prints the time each phase
//! took, and removes everything on exit, error, Ctrl-C or SIGTERM. It drives Kiln as an
//! operator would, through the admin API only ([`api`]): the orchestration runs on a thread
//! that joined the lab's namespace, where the server's admin API listens on loopback. It
//! never touches the host's interfaces, and it never uses `--data-dir`: its state lives in
//! its work directory.

mod api;
mod checks;
mod console;
mod delete;
mod follow;
mod progress;
mod summary;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::{self as lab, BmcChoice, BmcKind, Firmware, Lab, Machine, Role, SERVER_IP};
use api::Kiln;
use console::{indent, out, say, show_logs};
use progress::{MachineView, human_ms};
use summary::MachineReport;

/// The cluster's name in the demo.
const CLUSTER: &str = "demo";
/// The label every lab machine carries (hardware.csv), to select them all.
const SELECTOR: &str = "demo=kiln";
/// Blank disk per machine (sparse).
const DISK_GIB: u64 = 3;

/// What `kiln demo` was asked to do (its flags).
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Machines: the first is the control plane, the others workers (1 = a single-node,
    /// untainted cluster; 3 = one control plane and two workers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub nodes: u32,
    /// Boot files: agent-os/{vmlinuz,initrd.img} (images/agent/build.sh DIR/agent-os) and
    /// test-os/test-os.raw.zst (images/test-os/build.sh DIR/test-os); tests/demo.sh builds both.
    #[arg(long, default_value = "target/e2e-assets")]
    pub assets: PathBuf,
    /// Scratch directory for the lab (disks, logs, Kiln's state). Must not exist or be empty.
    /// Default: /var/tmp/kiln-demo-<pid>.
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Keep the scratch directory (logs, serial consoles, disks, Kiln's data dir and, once the
    /// cluster is ready, the admin kubeconfig Kiln minted: WORK/kubeconfig) at the end.
    /// Processes and the namespace are removed all the same.
    #[arg(long)]
    pub keep: bool,
    /// Give up (and clean up) after this long: 90s, 30m, 1h.
    #[arg(long, default_value = "30m", value_parser = kiln_model::template::parse_duration)]
    pub timeout: Duration,
    /// Virtual BMCs: mixed (IPMI for the 1st, 3rd, ... machine, Redfish for the others),
    /// ipmi or redfish.
    #[arg(long, value_enum, default_value_t)]
    pub bmc: BmcChoice,
    /// The machines' firmware: bios (SeaBIOS) or uefi (OVMF; Debian's ovmf package).
    #[arg(long, value_enum, default_value_t)]
    pub firmware: Firmware,
    /// Install the machines with this workflow template instead of creating a cluster
    /// (e.g. workflows/debian-test-os.yaml: the same install, without kubeadm).
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Kubernetes version in the cluster spec.
    #[arg(long, default_value = "1.31")]
    pub kubernetes_version: String,
    /// Memory per machine, MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Python venv holding sushy-tools (the Redfish emulator).
    #[arg(long, env = "KILN_VENV", default_value = "/opt/kiln-venv")]
    pub venv: PathBuf,
    /// iPXE binaries for TFTP (Debian's ipxe package).
    #[arg(long, default_value = "/usr/lib/ipxe")]
    pub tftp_root: PathBuf,
    /// Also write the summary (phase times per machine) as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Once the cluster is ready, delete it (`kiln cluster delete`): every node is power
    /// cycled into the agent, its disk wiped and the machine powered off; the BMCs must then
    /// report every machine off.
    #[arg(long, conflicts_with = "template")]
    pub delete: bool,
    /// The `kiln` binary that runs as `kiln serve` inside the namespace.
    #[arg(skip)]
    pub kiln: PathBuf,
}

/// How the demo ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed(String),
    TimedOut,
    Interrupted,
}

/// Builds the lab, runs the demo on it, takes it down and says how it went.
pub fn run(opts: &Options) -> anyhow::Result<Outcome> {
    checks::require_root()?;
    let mut machines = lab::plan(opts.nodes, opts.bmc);
    for m in &mut machines {
        m.firmware = opts.firmware;
    }
    checks::preflight(opts, &machines)?;
    let stop = checks::stop_on_signals()?;
    let work = opts
        .work
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/var/tmp/kiln-demo-{}", std::process::id())));
    let clock = Instant::now();
    let mut lab = Lab::new(work, machines, opts.keep)?;
    // Its own thread: that thread joins the lab's namespace (a per-thread setting), the
    // caller's stays on the host for the teardown.
    let result = std::thread::scope(|s| {
        let mut demo = Demo {
            opts,
            lab: &mut lab,
            stop: &stop,
            clock,
        };
        match s.spawn(move || demo.run()).join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    let outcome = match result {
        Ok(o) => o,
        Err(_) if stop.load(Ordering::SeqCst) => Outcome::Interrupted,
        Err(e) => {
            say(clock, &format!("error: {e:#}"));
            show_logs(&lab);
            Outcome::Failed(format!("{e:#}"))
        }
    };
    tear_down(&mut lab, clock);
    closing(&outcome, opts.timeout, clock);
    Ok(outcome)
}

fn tear_down(lab: &mut Lab, clock: Instant) {
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
}

/// The last line, unless it succeeded.
fn closing(outcome: &Outcome, timeout: Duration, clock: Instant) {
    match outcome {
        Outcome::Succeeded => {}
        Outcome::Interrupted => say(clock, "interrupted"),
        Outcome::TimedOut => say(
            clock,
            &format!(
                "gave up after --timeout {}",
                human_ms(timeout.as_millis() as u64)
            ),
        ),
        Outcome::Failed(why) => say(clock, &format!("FAILED: {why}")),
    }
}

/// Milliseconds since the Unix epoch (the server's event and workflow times).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn interrupted(stop: &AtomicBool) -> anyhow::Result<()> {
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
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

/// One run of the demo on a lab that exists but holds nothing yet.
struct Demo<'a> {
    opts: &'a Options,
    lab: &'a mut Lab,
    stop: &'a AtomicBool,
    clock: Instant,
}

/// What the install ended with, for the closing lines and `--summary-json`.
struct Installed {
    outcome: Outcome,
    cluster_state: Option<String>,
    install_ms: u64,
    reports: Vec<MachineReport>,
    deadline: Instant,
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

impl Demo<'_> {
    fn say(&self, msg: &str) {
        say(self.clock, msg);
    }

    fn cluster(&self) -> Option<&'static str> {
        self.opts.template.is_none().then_some(CLUSTER)
    }

    fn run(&mut self) -> anyhow::Result<Outcome> {
        let password = self.prepare()?;
        interrupted(self.stop)?;
        self.lab.create_network()?;
        crate::netns::enter(&self.lab.ns)?;
        self.say(&format!(
            "network namespace {}: bridge br0 {SERVER_IP}/24, taps {}",
            self.lab.ns,
            self.lab
                .machines
                .iter()
                .map(|m| m.tap.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        let kiln = self.start_services(&password)?;
        self.enroll(&kiln)?;
        let installed = self.install(&kiln)?;
        self.finish(&kiln, installed)
    }

    /// Machines, disks and hardware.csv; returns the BMC password.
    fn prepare(&mut self) -> anyhow::Result<String> {
        let (opts, n) = (self.opts, self.lab.machines.len());
        let what = match &opts.template {
            Some(t) => format!("install with workflow template {}", t.display()),
            None => format!(
                "Kubernetes cluster {CLUSTER:?}: 1 control plane, {} worker(s)",
                n - 1
            ),
        };
        self.say(&format!(
            "kiln demo: {n} QEMU machine(s) (TCG, {}, {} MiB each) behind virtual BMCs; {what}; work dir {}",
            match opts.firmware {
                Firmware::Bios => "SeaBIOS",
                Firmware::Uefi => "OVMF UEFI",
            },
            opts.memory,
            self.lab.work.display()
        ));
        self.lab.prepare_machines(opts.memory, DISK_GIB)?;
        // 16 characters: the longest password IPMI 1.5 user slots (and ipmi_sim) hold.
        let password = lab::random_hex(8)?;
        let csv = self.lab.work.join("hardware.csv");
        lab::write_file(
            &csv,
            &lab::hardware_csv(&self.lab.machines, &password),
            0o600,
        )?;
        for m in &self.lab.machines {
            self.say(&format!(
                "  {:<13} {:<13} {} {}  BMC {}",
                m.hostname,
                m.role.name(),
                m.mac,
                m.ip,
                m.bmc_address()
            ));
        }
        Ok(password)
    }

    /// The BMC emulators and `kiln serve`; the admin API's client once it is up.
    fn start_services(&mut self, password: &str) -> anyhow::Result<Kiln> {
        self.lab.start_bmcs(password, &self.opts.venv)?;
        let agent_os = self
            .opts
            .assets
            .join("agent-os")
            .canonicalize()
            .context("resolving the agent OS directory")?;
        self.lab
            .start_kiln_serve(&self.opts.kiln, &agent_os, &self.opts.tftp_root)?;
        self.lab.wait_healthz(self.stop)?;
        self.say(&format!(
            "kiln serve is up inside the namespace: DHCP on br0, TFTP, HTTP http://{SERVER_IP}:{} (log {})",
            lab::HTTP_PORT,
            self.lab.log("kiln-serve.log").display()
        ));
        Kiln::connect(&self.lab.data)
    }

    /// Enrols the machines, imports the test OS, waits for every BMC to answer.
    fn enroll(&mut self, kiln: &Kiln) -> anyhow::Result<()> {
        let csv = self.lab.work.join("hardware.csv");
        kiln.enroll(&csv)?;
        self.say(&format!(
            "enrolled {} machine(s) from {}",
            self.lab.machines.len(),
            csv.display()
        ));
        interrupted(self.stop)?;
        let image = self.opts.assets.join("test-os/test-os.raw.zst");
        kiln.import_image(&image, "test-os")?;
        self.say(&format!("imported {} as test-os", image.display()));
        interrupted(self.stop)?;
        let states = self.wait_bmcs(kiln)?;
        let ipmi = self
            .lab
            .machines
            .iter()
            .filter(|m| m.bmc == BmcKind::Ipmi)
            .count();
        let redfish = self.lab.machines.len() - ipmi;
        self.say(&format!(
            "virtual BMCs answer (ipmi_sim x{ipmi}, sushy-tools x{}): {states}",
            redfish.min(1)
        ));
        interrupted(self.stop)
    }

    /// Until every virtual BMC answers; "host off, ..." for the log.
    fn wait_bmcs(&mut self, kiln: &Kiln) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rows = kiln.bmc_status(SELECTOR).unwrap_or_default();
            if !rows.is_empty() && rows.iter().all(|r| r.ok) {
                return Ok(rows
                    .iter()
                    .map(|r| format!("{} {}", r.machine, r.result))
                    .collect::<Vec<_>>()
                    .join(", "));
            }
            if let Some(what) = self.lab.exited() {
                bail!("{what}");
            }
            interrupted(self.stop)?;
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
                    self.lab.log("").display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Creates the workflows (or the cluster) and follows the machines to the end.
    fn install(&mut self, kiln: &Kiln) -> anyhow::Result<Installed> {
        let first_event = kiln.last_event_id()?;
        let install_start = now_ms();
        self.create(kiln)?;
        let deadline = self.clock + self.opts.timeout;
        let mut views: Vec<MachineView> = self
            .lab
            .machines
            .iter()
            .map(|m| MachineView::new(m.clone(), self.lab.serial_log(m)))
            .collect();
        let (outcome, cluster_state) = follow::follow(
            self.lab,
            kiln,
            &mut views,
            follow::Follow {
                first_event,
                install_start,
                cluster: self.cluster(),
                deadline,
                clock: self.clock,
            },
            self.stop,
        )?;
        Ok(Installed {
            outcome,
            cluster_state,
            install_ms: now_ms().saturating_sub(install_start),
            reports: views.iter().map(report).collect(),
            deadline,
        })
    }

    fn create(&mut self, kiln: &Kiln) -> anyhow::Result<()> {
        match &self.opts.template {
            Some(t) => {
                let created = kiln.create_workflows(t, SELECTOR)?;
                self.say(&format!("kiln workflow create --template {}", t.display()));
                out(&indent(&kiln_client::render::workflow::created(&created)));
            }
            None => {
                let spec = self.lab.work.join("cluster.kiln.yaml");
                lab::write_file(
                    &spec,
                    &cluster_spec(&self.lab.machines, &self.opts.kubernetes_version),
                    0o644,
                )?;
                let created = kiln.create_cluster(&spec)?;
                self.say(&format!("kiln cluster create {}", spec.display()));
                out(&indent(&kiln_client::render::cluster::created(&created)));
            }
        }
        Ok(())
    }

    /// The summary, the kubeconfig, `--delete`, `--summary-json`.
    fn finish(&mut self, kiln: &Kiln, done: Installed) -> anyhow::Result<Outcome> {
        self.print_summary(&done);
        let cluster = self.cluster();
        if let (Some(c), Some("ready"), true) =
            (cluster, done.cluster_state.as_deref(), self.lab.keep)
        {
            // Minted by Kiln from the cluster CA; kept in the kept work dir (also after --delete).
            let file = self.lab.work.join("kubeconfig");
            match kiln.kubeconfig(c, &file) {
                Ok(()) => out(&format!(
                    "admin kubeconfig (minted by Kiln from the cluster CA): {}\n",
                    file.display()
                )),
                Err(e) => out(&format!("kiln cluster kubeconfig {c}: {e:#}\n")),
            }
        }
        let mut outcome = done.outcome.clone();
        let mut deleted = None;
        if self.opts.delete && outcome == Outcome::Succeeded {
            let (o, report) = delete::run(self, kiln, done.deadline)?;
            outcome = o;
            deleted = Some(report);
        }
        if let Some(path) = &self.opts.summary_json {
            let json = SummaryJson {
                nodes: self.lab.machines.len(),
                mode: if cluster.is_some() {
                    "cluster"
                } else {
                    "template"
                },
                cluster_state: done.cluster_state.clone(),
                outcome: format!("{outcome:?}"),
                install_ms: done.install_ms,
                wall_ms: self.clock.elapsed().as_millis() as u64,
                machines: &done.reports,
                delete: deleted.as_ref(),
            };
            std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            self.say(&format!("summary written to {}", path.display()));
        }
        if outcome != Outcome::Succeeded && outcome != Outcome::Interrupted {
            show_logs(self.lab);
        }
        Ok(outcome)
    }

    fn print_summary(&self, done: &Installed) {
        let reports = &done.reports;
        out(&format!("\n{}", summary::render(reports)));
        let ok = reports.iter().filter(|r| r.result == "succeeded").count();
        let headline = match (self.cluster(), &done.cluster_state) {
            (Some(c), Some(s)) => format!("cluster {c}: {s}; "),
            (Some(c), None) => format!("cluster {c}: state unknown; "),
            _ => String::new(),
        };
        out(&format!(
            "{headline}{ok}/{} machine(s) installed; {} from create to the end, {} in all (lab set-up included)\n",
            self.lab.machines.len(),
            human_ms(done.install_ms),
            human_ms(self.clock.elapsed().as_millis() as u64)
        ));
        let kubeadm: Vec<String> = reports
            .iter()
            .filter(|r| !r.kubeadm.is_empty())
            .map(|r| format!("{}: kubeadm {}", r.hostname, r.kubeadm.join(", ")))
            .collect();
        if !kubeadm.is_empty() {
            out(&format!(
                "the installed OS ran (test OS stand-in, see README): {}\n",
                kubeadm.join("; ")
            ));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_spec_single_node_has_no_workers() {
        let s = cluster_spec(&crate::plan(1, crate::BmcChoice::Mixed), "1.31");
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
        let s = cluster_spec(&crate::plan(3, crate::BmcChoice::Mixed), "1.31");
        assert!(
            s.contains("workers:\n  - name: md-0\n    count: 2\n"),
            "{s}"
        );
    }
}
