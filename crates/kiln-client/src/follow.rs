//! Following workflows until they end: `kiln workflow watch`, `--wait` on the commands that
//! create workflows, and `kiln cluster status --wait`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use kiln_api::WorkflowView;
use kiln_api::agent::WorkflowState;
use kiln_api::routes::path;
use kiln_api::time::seconds;
use serde::Serialize;

use crate::render::workflow::progress_line;
use crate::{Client, ClientError};

/// How often the workflows are read again.
const POLL: Duration = Duration::from_millis(500);

/// How followed workflows stand when following stops: what CI reads as the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every workflow succeeded (exit 0).
    Succeeded,
    /// One failed, timed out or was cancelled (exit 1).
    Failed,
    /// The timeout ran out with workflows still running (exit 3).
    StillRunning,
}

impl Ended {
    pub fn of(wfs: &[WorkflowView]) -> Ended {
        let (_, failed, running) = outcome(wfs);
        if !running.is_empty() {
            Ended::StillRunning
        } else if failed.is_empty() {
            Ended::Succeeded
        } else {
            Ended::Failed
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Ended::Succeeded => 0,
            Ended::Failed => 1,
            Ended::StillRunning => 3,
        }
    }
}

/// The last line `watch -o json` prints.
#[derive(Serialize)]
struct Summary {
    total: usize,
    succeeded: usize,
    /// Ids of the workflows that failed, timed out or were cancelled.
    failed: Vec<String>,
    /// Ids still running when `--timeout` ran out.
    running: Vec<String>,
    duration_seconds: f64,
}

/// How many succeeded, which failed, which still run.
fn outcome(wfs: &[WorkflowView]) -> (usize, Vec<String>, Vec<String>) {
    let ok = wfs
        .iter()
        .filter(|w| w.state == WorkflowState::Succeeded)
        .count();
    let ids = |keep: &dyn Fn(&WorkflowView) -> bool| {
        wfs.iter()
            .filter(|w| keep(w))
            .map(|w| w.id.clone())
            .collect()
    };
    let failed = ids(&|w| w.state.is_terminal() && w.state != WorkflowState::Succeeded);
    let running = ids(&|w| !w.state.is_terminal());
    (ok, failed, running)
}

/// The workflows `ids` as the server has them now.
fn fetch(api: &Client, ids: &[String]) -> Result<Vec<WorkflowView>, ClientError> {
    ids.iter()
        .map(|id| api.get(&path("workflows", Some(id), "")))
        .collect()
}

fn json_line<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("API views serialize")
}

/// Shows the workflows `ids` (live on a terminal, changed lines otherwise, or JSON lines with
/// `json`) until they end or `timeout` runs out.
pub fn follow(
    api: &Client,
    ids: &[String],
    timeout: Option<Duration>,
    json: bool,
) -> Result<Ended, ClientError> {
    let tty = !json && std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut last: Vec<String> = Vec::new();
    loop {
        let wfs = fetch(api, ids)?;
        let lines: Vec<String> = if json {
            // Progress lines without the phone-home (the last line reports it).
            wfs.iter()
                .map(|w| {
                    json_line(&WorkflowView {
                        phone_home: None,
                        ..w.clone()
                    })
                })
                .collect()
        } else {
            wfs.iter().map(progress_line).collect()
        };
        show(&lines, &last, tty);
        last = lines;
        let over = timeout.is_some_and(|t| started.elapsed() >= t);
        if wfs.iter().all(|w| w.state.is_terminal()) || over {
            let elapsed = seconds(started.elapsed().as_millis() as u64);
            println!("{}", summary(&wfs, elapsed, json));
            return Ok(Ended::of(&wfs));
        }
        std::thread::sleep(POLL);
    }
}

fn summary(wfs: &[WorkflowView], elapsed: f64, json: bool) -> String {
    let (succeeded, failed, running) = outcome(wfs);
    if json {
        return json_line(&Summary {
            total: wfs.len(),
            succeeded,
            failed,
            running,
            duration_seconds: elapsed,
        });
    }
    let mut text = format!("{succeeded}/{} succeeded in {elapsed:.0} s", wfs.len());
    if !running.is_empty() {
        text += &format!(
            "\nstill running when the timeout ran out: {}",
            running.join(", ")
        );
    }
    text
}

/// Waits without printing until the workflows `ids` end or `timeout` runs out.
pub fn quietly(
    api: &Client,
    ids: &[String],
    timeout: Option<Duration>,
) -> Result<Ended, ClientError> {
    let started = Instant::now();
    loop {
        let wfs = fetch(api, ids)?;
        if wfs.iter().all(|w| w.state.is_terminal())
            || timeout.is_some_and(|t| started.elapsed() >= t)
        {
            return Ok(Ended::of(&wfs));
        }
        std::thread::sleep(POLL);
    }
}

/// Prints what changed since `last` (redrawn in place on a terminal).
fn show(lines: &[String], last: &[String], tty: bool) {
    let mut out = std::io::stdout().lock();
    if tty {
        if !last.is_empty() {
            let _ = write!(out, "\x1b[{}A", last.len());
        }
        for l in lines {
            let _ = writeln!(out, "\x1b[2K{l}");
        }
    } else {
        for (i, l) in lines.iter().enumerate() {
            if last.get(i) != Some(l) {
                let _ = writeln!(out, "{l}");
            }
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::workflow::tests::view;

    #[test]
    fn how_the_workflows_ended_is_the_exit_code() {
        use WorkflowState::*;
        let code = |states: &[WorkflowState]| {
            let wfs: Vec<_> = states.iter().map(|s| view("w", *s)).collect();
            Ended::of(&wfs).exit_code()
        };
        assert_eq!(code(&[Succeeded, Succeeded]), 0);
        assert_eq!(code(&[Succeeded, Failed]), 1);
        assert_eq!(code(&[TimedOut]), 1);
        assert_eq!(code(&[Failed, Running]), 3);
    }

    #[test]
    fn the_summary_names_what_still_runs() {
        let wfs = [
            view("a", WorkflowState::Succeeded),
            view("b", WorkflowState::Running),
        ];
        let text = summary(&wfs, 12.0, false);
        assert_eq!(
            text,
            "1/2 succeeded in 12 s\nstill running when the timeout ran out: b"
        );
        let json: serde_json::Value = serde_json::from_str(&summary(&wfs, 1.5, true)).unwrap();
        assert_eq!(json["running"][0], "b");
        assert_eq!(json["succeeded"], 1);
    }
}
