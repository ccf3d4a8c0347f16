//! The agent's loop: ask the server for the next action, run it, report.
//! Progress and log lines are best effort; each action's result is reported
//! until the server takes it, so a kiln restart mid-action loses nothing.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln_api::agent::{ActionKind, ActionSpec, DiskWrite};
use kiln_api::agent::{NextAction, ReportKind};
use kiln_api::disk_hint::is_device_path;

use crate::client::{Client, Refused};
use crate::disk_choice::{self, Chosen};
use crate::image2disk::{self, Image2Disk, Options, Progress, ProgressReport};
use crate::installed::{self, MountedRoot};
use crate::inventory;
use crate::kexec;
use crate::wipe;

/// How long an action waits for its disk to appear. The agent OS loads storage drivers in
/// the background while the agent starts, and RAID/SAS controllers can take a while to
/// present their disks.
pub const DISK_WAIT: Duration = Duration::from_secs(120);
/// Written by the agent OS's /init once every driver for the present devices is loaded.
pub const DRIVERS_LOADED: &str = "/run/kiln/drivers-loaded";

/// How the agent leaves the machine when the server has no more work for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// Stay up (the workflow ended, or this machine has none).
    Stay,
    /// Reboot through the firmware.
    Reboot,
    /// Start the installed OS's kernel, already loaded ([`kexec::boot_loaded`]).
    Kexec,
    /// Power the machine off.
    Poweroff,
}

/// Sends image2disk progress and events to the server as they come.
struct Reporter<'a> {
    client: &'a Client,
    index: usize,
    attempt: u32,
    /// Serializes reports from pipeline threads.
    lock: Mutex<()>,
}

impl Reporter<'_> {
    fn log(&self, line: String) {
        println!("kiln-agent: {line}");
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.client.try_report(
            self.index,
            self.attempt,
            ReportKind::Log { lines: vec![line] },
        );
    }
}

impl Progress for Reporter<'_> {
    fn update(&self, report: &ProgressReport) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.client.try_report(
            self.index,
            self.attempt,
            ReportKind::Progress(report.to_model()),
        );
    }

    fn event(&self, message: &str) {
        self.log(message.to_string());
    }

    /// Asks for the next action again, as this run (the server hands the running attempt
    /// back): a server that took the machine over hands it out with its own image URL (the
    /// download compares it with the one that failed). A dead server's call moves the client
    /// on to the next one (see `Client::retrying`).
    fn relocate(&self, _url: &str) -> Option<String> {
        match self.client.next() {
            Ok(NextAction::Run {
                index,
                attempt,
                action,
            }) if index == self.index && attempt == self.attempt => {
                action.params.get("url").cloned()
            }
            _ => None,
        }
    }
}

fn param<'a>(action: &'a ActionSpec, key: &str) -> Result<&'a str, String> {
    action
        .params
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| format!("parameter {key:?} is missing"))
}

/// What [`wait_for_path`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    AlreadyThere,
    Appeared,
    TimedOut,
}

/// Waits until `path` exists, polling every `poll`, for at most `limit`; `waiting` is called
/// once when it has to wait.
pub fn wait_for_path(path: &Path, limit: Duration, poll: Duration, waiting: &dyn Fn()) -> Waited {
    if path.exists() {
        return Waited::AlreadyThere;
    }
    waiting();
    let t0 = Instant::now();
    loop {
        if path.exists() {
            return Waited::Appeared;
        }
        if t0.elapsed() >= limit {
            return Waited::TimedOut;
        }
        std::thread::sleep(poll.min(limit.saturating_sub(t0.elapsed())));
    }
}

/// Waits (up to [`DISK_WAIT`]) for a disk under /dev that is not there yet: its driver may
/// still be loading, or its controller still scanning. Other paths (files) are not waited for.
fn wait_for_disk(disk: &str, rep: &Reporter) -> Result<(), String> {
    if !disk.starts_with("/dev/") {
        return Ok(());
    }
    let waited = wait_for_path(
        Path::new(disk),
        DISK_WAIT,
        Duration::from_millis(100),
        &|| rep.log(format!("waiting for {disk} to appear (drivers loading)")),
    );
    match waited {
        Waited::AlreadyThere => Ok(()),
        Waited::Appeared => {
            rep.log(format!("{disk} is there"));
            Ok(())
        }
        Waited::TimedOut => {
            let present = installed::disks(Path::new("/sys/block"));
            let drivers = if Path::new(DRIVERS_LOADED).exists() {
                "all drivers for the present devices are loaded"
            } else {
                "drivers are still loading"
            };
            Err(format!(
                "disk {disk} did not appear within {} s ({drivers}; disks present: {})",
                DISK_WAIT.as_secs(),
                if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                }
            ))
        }
    }
}

/// Loads the installed OS's kernel for kexec; returns what was loaded.
/// `disk` is the one earlier actions worked on; without it every disk is tried.
fn prepare_kexec(disk: Option<&str>, rep: &Reporter) -> Result<String, String> {
    let disks = match disk {
        Some(d) => vec![d.to_string()],
        None => installed::disks(Path::new("/sys/block")),
    };
    let mut why = Vec::new();
    for disk in &disks {
        let mut root = match MountedRoot::find(disk) {
            Ok(r) => r,
            Err(e) => {
                why.push(e);
                continue;
            }
        };
        if kexec::has_separate_boot(&root.path) {
            root.mount_boot(disk)?;
        }
        let entry = kexec::find_boot_entry(&root.path)?;
        let shown = |p: &Path| format!("/{}", p.strip_prefix(&root.path).unwrap_or(p).display());
        let what = format!(
            "{} on {} with initrd {}, command line \"{}\" (from {})",
            shown(&entry.kernel),
            root.device.display(),
            entry.initrd.as_deref().map_or("none".into(), shown),
            entry.cmdline,
            entry.cmdline_source
        );
        rep.log(format!("kexec: loading {what}"));
        kexec::load(&entry).map_err(|e| format!("kexec_file_load refused {what}: {e}"))?;
        return Ok(what);
    }
    Err(if why.is_empty() {
        "no disk found".to_string()
    } else {
        why.join("; ")
    })
}

/// The disk the action's `disk` parameter names (a path, or a hint resolved against the
/// inventory), checked by the action's wrong-disk guard. Nothing is written before this.
fn choose_disk(param: &str, action: &ActionSpec, rep: &Reporter) -> Result<Chosen, String> {
    if is_device_path(param) {
        wait_for_disk(param, rep)?;
    } else if !param.starts_with('/') {
        // A hint is resolved among the disks present: wait until every driver is loaded.
        wait_for_path(
            Path::new(DRIVERS_LOADED),
            DISK_WAIT,
            Duration::from_millis(100),
            &|| {
                rep.log(format!(
                    "waiting for storage drivers to resolve disk {param:?}"
                ))
            },
        );
    }
    let disks = inventory::collect(Path::new("/")).disks;
    let chosen = disk_choice::choose(param, &disks, action.guard.as_deref())?;
    if chosen.device != param {
        rep.log(format!("disk {param:?} is {}", chosen.device));
    }
    Ok(chosen)
}

/// Runs one action; the message goes into the success or failure report, with
/// how the agent leaves once the server has taken it. `disk` is the one earlier actions
/// worked on (kexec's); an action naming a disk sets it.
fn execute(
    client: &Client,
    index: usize,
    attempt: u32,
    action: &ActionSpec,
    disk: &mut Option<String>,
) -> Result<(String, Leave), String> {
    let rep = Reporter {
        client,
        index,
        attempt,
        lock: Mutex::new(()),
    };
    let mut action = action.clone();
    if let Some(param) = action.params.get("disk").cloned() {
        let chosen = choose_disk(&param, &action, &rep)?;
        if let Some(d) = &chosen.disk
            && action.kind == ActionKind::Image2disk
        {
            rep.log(format!(
                "writing {} ({}); it holds: {}",
                d.device(),
                d.identity(),
                d.signatures_text()
            ));
            client
                .disk_write(&DiskWrite {
                    index,
                    attempt,
                    disk: d.clone(),
                })
                .map_err(|e| format!("the server did not take the disk write: {e:?}"))?;
        }
        if action.kind != ActionKind::Wipe {
            // A wiped disk holds no OS to kexec into.
            *disk = Some(chosen.device.clone());
        }
        action.params.insert("disk".into(), chosen.device);
    }
    let action = &action;
    let disk = disk.as_deref();
    match action.kind {
        ActionKind::Image2disk => run_image2disk(action, &rep),
        ActionKind::CloudInit => write_seed(client, action, &rep),
        ActionKind::Writefile => write_file(action),
        ActionKind::Exec => {
            let mut root = MountedRoot::find(param(action, "disk")?)?;
            root.exec(param(action, "command")?, |line| rep.log(line))?;
            Ok(("command succeeded".into(), Leave::Stay))
        }
        ActionKind::Reboot => {
            // Flush before reporting: once the report is in, the machine may go at any moment.
            let _ = std::process::Command::new("sync").status();
            Ok(("rebooting into the installed OS".into(), Leave::Reboot))
        }
        ActionKind::Wipe => {
            let disk = param(action, "disk")?;
            let out =
                wipe::wipe(Path::new(disk), &|line| rep.log(line)).map_err(|e| e.to_string())?;
            Ok((format!("wiped {disk}: {}", out.summary()), Leave::Stay))
        }
        ActionKind::Poweroff => {
            let _ = std::process::Command::new("sync").status();
            Ok(("powering off".into(), Leave::Poweroff))
        }
        ActionKind::Kexec => {
            let _ = std::process::Command::new("sync").status();
            let disk = action.params.get("disk").map(String::as_str).or(disk);
            Ok(kexec_or_reboot(disk, &rep))
        }
    }
}

fn run_image2disk(action: &ActionSpec, rep: &Reporter<'_>) -> Result<(String, Leave), String> {
    let job = Image2Disk::from_params(&action.params).map_err(|e| e.to_string())?;
    let out = image2disk::image2disk(&job, &Options::default(), rep).map_err(|e| e.to_string())?;
    for w in &out.warnings {
        rep.log(format!("warning: {w}"));
    }
    Ok((
        format!(
            "{} bytes written from {} bytes ({:?}), sha256 {} verified, {} resume(s), {:.1} s",
            out.image_size,
            out.downloaded,
            out.format,
            out.sha256,
            out.resumes,
            out.elapsed.as_secs_f64()
        ),
        Leave::Stay,
    ))
}

/// Writes the server's cloud-init seed into the installed OS (NoCloud).
fn write_seed(
    client: &Client,
    action: &ActionSpec,
    rep: &Reporter<'_>,
) -> Result<(String, Leave), String> {
    let seed = client
        .seed()
        .map_err(|e| format!("fetching the cloud-init seed: {e:?}"))?;
    let files = [
        ("user-data", seed.user_data),
        ("meta-data", seed.meta_data),
        ("network-config", seed.network_config),
    ];
    let root = MountedRoot::find(param(action, "disk")?)?;
    for (name, text) in &files {
        // The seed can hold keys: readable by root only.
        root.write_file(
            &format!("/var/lib/cloud/seed/nocloud/{name}"),
            text.as_bytes(),
            0o600,
        )?;
    }
    rep.log(format!(
        "wrote the NoCloud seed ({} files) into {}",
        files.len(),
        root.path.display()
    ));
    Ok(("NoCloud seed written".into(), Leave::Stay))
}

fn write_file(action: &ActionSpec) -> Result<(String, Leave), String> {
    let path = param(action, "path")?;
    let mode = match action.params.get("mode") {
        Some(m) => u32::from_str_radix(m.trim().trim_start_matches("0o"), 8)
            .map_err(|_| format!("mode {m:?} is not octal"))?,
        None => 0o644,
    };
    let root = MountedRoot::find(param(action, "disk")?)?;
    root.write_file(path, param(action, "content")?.as_bytes(), mode)?;
    Ok((format!("wrote {path}"), Leave::Stay))
}

/// kexec when the installed OS allows it, else a reboot through the firmware.
fn kexec_or_reboot(disk: Option<&str>, rep: &Reporter<'_>) -> (String, Leave) {
    match prepare_kexec(disk, rep) {
        Ok(what) => (format!("kexec into the installed OS: {what}"), Leave::Kexec),
        Err(e) => {
            rep.log(format!(
                "kexec is not possible ({e}); rebooting through the firmware instead"
            ));
            (
                format!("rebooting through the firmware (kexec not possible: {e})"),
                Leave::Reboot,
            )
        }
    }
}

/// Collects the hardware inventory (once the storage drivers are loaded, so every disk is
/// in it) and sends it; a failure is logged, never fatal.
fn report_inventory(client: &Client) {
    wait_for_path(
        Path::new(DRIVERS_LOADED),
        Duration::from_secs(30),
        Duration::from_millis(100),
        &|| println!("kiln-agent: waiting for drivers before the inventory"),
    );
    let inv = inventory::collect(Path::new("/"));
    println!("kiln-agent: inventory: {}", inv.summary());
    for d in &inv.disks {
        println!(
            "kiln-agent: disk {} ({}): {}",
            d.device(),
            d.identity(),
            d.signatures_text()
        );
    }
    if let Err(e) = client.send_inventory(&inv) {
        eprintln!("kiln-agent: the inventory was not taken: {e}");
    }
}

/// Inspection-only mode (`kiln.inspect=1`, a machine that is not enrolled): take a ticket,
/// report the inventory on it, then power off. Powered off rather than halted or rebooted: a
/// machine left running would netboot again at the next reset, and one that is off draws no
/// power until the operator enrols it and its BMC (or a hand) turns it on. It powers off
/// whatever the server answered: inspection is best-effort, and a refusal says why in its
/// events.
pub fn inspect(client: &Client) -> Leave {
    match client.inspect_claim() {
        Ok(()) => {
            wait_for_path(
                Path::new(DRIVERS_LOADED),
                Duration::from_secs(30),
                Duration::from_millis(100),
                &|| println!("kiln-agent: waiting for drivers before the inventory"),
            );
            let inv = inventory::collect(Path::new("/"));
            println!("kiln-agent: inspection: {}", inv.summary());
            match client.send_inspection(&inv) {
                Ok(()) => println!("kiln-agent: inspection reported"),
                Err(e) => eprintln!("kiln-agent: the inspection was refused: {e:?}"),
            }
        }
        Err(e) => eprintln!("kiln-agent: no inspection ticket: {e:?}"),
    }
    Leave::Poweroff
}

/// Runs actions until the workflow is done. Returns how the agent should
/// leave the machine now.
pub fn run(client: &Client) -> Result<Leave, String> {
    // The disk the installed OS is on, from the actions that named it (kexec takes none).
    let mut disk: Option<String> = None;
    client.claim().map_err(|e| match e {
        Refused::Stale(why) => format!(
            "the server refused this machine's credential: {why} (another host claimed it first: \
             see `kiln events` on the server; the operator retries the workflow)"
        ),
        Refused::Forbidden(why) | Refused::NotFound(why) => {
            format!("the server refused this machine's credential: {why}")
        }
        other => format!("claiming this machine's credential: {other:?}"),
    })?;
    report_inventory(client);
    loop {
        let next = match client.next() {
            Ok(n) => n,
            Err(Refused::Unauthorized) => {
                return Err(
                    "the server does not know this agent's credential (workflow gone or revoked)"
                        .into(),
                );
            }
            Err(Refused::Gone) => return Ok(Leave::Stay),
            Err(other) => {
                eprintln!("kiln-agent: the server refused: {other:?}; asking again in 5 s");
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
        };
        match next {
            NextAction::Done { state } => {
                println!("kiln-agent: workflow {state}: nothing more to do");
                return Ok(Leave::Stay);
            }
            NextAction::Wait { seconds } => {
                std::thread::sleep(Duration::from_secs(seconds.clamp(1, 300)))
            }
            NextAction::Run {
                index,
                attempt,
                action,
            } => {
                println!(
                    "kiln-agent: action {index} {} ({}) attempt {attempt}",
                    action.name, action.kind
                );
                let result = execute(client, index, attempt, &action, &mut disk);
                let mut leave = Leave::Stay;
                let kind = match result {
                    Ok((message, how)) => {
                        leave = how;
                        ReportKind::Succeeded { message }
                    }
                    Err(message) => {
                        eprintln!("kiln-agent: {} failed: {message}", action.name);
                        ReportKind::Failed { message }
                    }
                };
                match client.report(index, attempt, kind) {
                    Ok(()) if leave != Leave::Stay => return Ok(leave),
                    Ok(()) | Err(Refused::Stale(_)) => {}
                    Err(Refused::Gone) => return Ok(Leave::Stay),
                    Err(e) => eprintln!("kiln-agent: the report was refused: {e:?}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn waits_only_for_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Cell::new(0);
        let waiting = || calls.set(calls.get() + 1);
        let poll = Duration::from_millis(1);
        assert_eq!(
            wait_for_path(dir.path(), Duration::ZERO, poll, &waiting),
            Waited::AlreadyThere
        );
        assert_eq!(
            calls.get(),
            0,
            "no waiting message for a disk already there"
        );
        let missing = dir.path().join("vda");
        assert_eq!(
            wait_for_path(&missing, Duration::ZERO, poll, &waiting),
            Waited::TimedOut
        );
        assert_eq!(calls.get(), 1);
    }
}
