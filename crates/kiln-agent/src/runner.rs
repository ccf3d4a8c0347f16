//! The agent's loop: ask the server for the next action, run it, report.
//! Progress and log lines are best effort; each action's result is reported
//! until the server takes it, so a kiln restart mid-action loses nothing.

use std::sync::Mutex;
use std::time::Duration;

use kiln_model::template::{ActionKind, ActionSpec};
use kiln_model::workflow::{NextAction, ReportKind};

use crate::client::{Client, Refused};
use crate::image2disk::{self, Image2Disk, Options, Progress, ProgressReport};
use crate::installed::MountedRoot;

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
}

fn param<'a>(action: &'a ActionSpec, key: &str) -> Result<&'a str, String> {
    action
        .params
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| format!("parameter {key:?} is missing"))
}

/// Runs one action; the message goes into the success or failure report.
fn execute(
    client: &Client,
    index: usize,
    attempt: u32,
    action: &ActionSpec,
) -> Result<String, String> {
    let rep = Reporter {
        client,
        index,
        attempt,
        lock: Mutex::new(()),
    };
    match action.kind {
        ActionKind::Image2disk => {
            let job = Image2Disk::from_params(&action.params).map_err(|e| e.to_string())?;
            let out = image2disk::image2disk(&job, &Options::default(), &rep)
                .map_err(|e| e.to_string())?;
            for w in &out.warnings {
                rep.log(format!("warning: {w}"));
            }
            Ok(format!(
                "{} bytes written from {} bytes ({:?}), sha256 {} verified, {} resume(s), {:.1} s",
                out.image_size,
                out.downloaded,
                out.format,
                out.sha256,
                out.resumes,
                out.elapsed.as_secs_f64()
            ))
        }
        ActionKind::CloudInit => {
            let token = &client.identity().token;
            let mut files = Vec::new();
            for name in ["user-data", "meta-data", "network-config"] {
                let text = client
                    .get_text(&format!("/nocloud/{token}/{name}"))
                    .map_err(|e| format!("fetching {name}: {e:?}"))?;
                files.push((name, text));
            }
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
            Ok("NoCloud seed written".into())
        }
        ActionKind::Writefile => {
            let path = param(action, "path")?;
            let mode = match action.params.get("mode") {
                Some(m) => u32::from_str_radix(m.trim().trim_start_matches("0o"), 8)
                    .map_err(|_| format!("mode {m:?} is not octal"))?,
                None => 0o644,
            };
            let root = MountedRoot::find(param(action, "disk")?)?;
            root.write_file(path, param(action, "content")?.as_bytes(), mode)?;
            Ok(format!("wrote {path}"))
        }
        ActionKind::Exec => {
            let mut root = MountedRoot::find(param(action, "disk")?)?;
            root.exec(param(action, "command")?, |line| rep.log(line))?;
            Ok("command succeeded".into())
        }
        ActionKind::Reboot | ActionKind::Kexec => {
            // Flush before reporting: once the report is in, the machine may go at any moment.
            let _ = std::process::Command::new("sync").status();
            if action.kind == ActionKind::Kexec {
                rep.log(
                    "kexec is not available in this agent OS; rebooting through the firmware"
                        .into(),
                );
            }
            Ok("rebooting into the installed OS".into())
        }
    }
}

/// Runs actions until the workflow is done. Returns whether the agent
/// should reboot the machine now.
pub fn run(client: &Client) -> Result<bool, String> {
    loop {
        let next = match client.next() {
            Ok(n) => n,
            Err(Refused::Unauthorized) => {
                return Err(
                    "the server does not know this agent's token (workflow gone or revoked)".into(),
                );
            }
            Err(Refused::Gone) => return Ok(false),
            Err(other) => {
                eprintln!("kiln-agent: the server refused: {other:?}; asking again in 5 s");
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
        };
        match next {
            NextAction::Done { state } => {
                println!("kiln-agent: workflow {state}: nothing more to do");
                return Ok(false);
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
                let result = execute(client, index, attempt, &action);
                let ok = result.is_ok();
                let kind = match result {
                    Ok(message) => ReportKind::Succeeded { message },
                    Err(message) => {
                        eprintln!("kiln-agent: {} failed: {message}", action.name);
                        ReportKind::Failed { message }
                    }
                };
                match client.report(index, attempt, kind) {
                    Ok(()) if ok && action.kind.ends_agent() => return Ok(true),
                    Ok(()) | Err(Refused::Stale) => {}
                    Err(Refused::Gone) => return Ok(false),
                    Err(e) => eprintln!("kiln-agent: the report was refused: {e:?}"),
                }
            }
        }
    }
}
