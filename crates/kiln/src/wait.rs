//! Following workflows until they end: `kiln workflow watch`, and `--wait` on the commands
//! that create workflows. The exit status is what CI reads: 0 when every workflow succeeded,
//! 1 when any failed, timed out or was cancelled, 3 when `--timeout` ran out first.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kiln_api::WorkflowView;
use kiln_api::routes::path;
use kiln_api::time::seconds;
use kiln_engine::now_ms;
use kiln_model::workflow::WorkflowState;
use serde::Serialize;

use crate::client::Client;
use crate::output::Format;
use crate::workflow::progress_line;

/// Exit status when `--timeout` ran out with workflows still running.
pub const STILL_RUNNING: u8 = 3;

/// How often the workflows are read again.
const POLL: Duration = Duration::from_millis(500);

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

/// Whether the workflows all ended, and how.
fn outcome(wfs: &[WorkflowView]) -> (usize, Vec<String>, Vec<String>) {
    let ok = wfs
        .iter()
        .filter(|w| w.state == WorkflowState::Succeeded)
        .count();
    let failed = wfs
        .iter()
        .filter(|w| w.state.is_terminal() && w.state != WorkflowState::Succeeded)
        .map(|w| w.id.clone())
        .collect();
    let running = wfs
        .iter()
        .filter(|w| !w.state.is_terminal())
        .map(|w| w.id.clone())
        .collect();
    (ok, failed, running)
}

/// The exit status for workflows as they stand.
pub fn exit_status(wfs: &[WorkflowView]) -> ExitCode {
    let (_, failed, running) = outcome(wfs);
    if !running.is_empty() {
        ExitCode::from(STILL_RUNNING)
    } else if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The workflows `ids` as the server has them now.
fn fetch_api(api: &Client, ids: &[String]) -> anyhow::Result<Vec<WorkflowView>> {
    ids.iter()
        .map(|id| Ok(api.get(&path("workflows", Some(id), ""))?))
        .collect()
}

/// Shows the workflows `ids` through the admin API until they end or `timeout` runs out.
pub fn follow_api(
    api: &Client,
    ids: &[String],
    timeout: Option<Duration>,
    output: Format,
) -> anyhow::Result<ExitCode> {
    follow_with(|| fetch_api(api, ids), timeout, output)
}

/// Shows the workflows `fetch` reads (live on a terminal, changed lines otherwise, or JSON
/// lines) until they end or `timeout` runs out; returns the exit status.
fn follow_with(
    mut fetch: impl FnMut() -> anyhow::Result<Vec<WorkflowView>>,
    timeout: Option<Duration>,
    output: Format,
) -> anyhow::Result<ExitCode> {
    let tty = output == Format::Table && std::io::stdout().is_terminal();
    let started = Instant::now();
    let started_ms = now_ms();
    let mut last: Vec<String> = Vec::new();
    loop {
        let wfs = fetch()?;
        let lines: Vec<String> = match output {
            Format::Table => wfs.iter().map(progress_line).collect(),
            // Progress lines, as before: without the phone-home (the last line reports it).
            Format::Json => wfs
                .iter()
                .map(|w| {
                    serde_json::to_string(&WorkflowView {
                        phone_home: None,
                        ..w.clone()
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        show(&lines, &last, tty);
        std::io::stdout().flush()?;
        last = lines;
        let over = timeout.is_some_and(|t| started.elapsed() >= t);
        if wfs.iter().all(|w| w.state.is_terminal()) || over {
            let (succeeded, failed, running) = outcome(&wfs);
            let elapsed = seconds(now_ms().saturating_sub(started_ms));
            match output {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string(&Summary {
                        total: wfs.len(),
                        succeeded,
                        failed,
                        running: running.clone(),
                        duration_seconds: elapsed,
                    })?
                ),
                Format::Table => {
                    println!("{succeeded}/{} succeeded in {elapsed:.0} s", wfs.len());
                    if !running.is_empty() {
                        println!(
                            "still running when the timeout ran out: {}",
                            running.join(", ")
                        );
                    }
                }
            }
            return Ok(exit_status(&wfs));
        }
        std::thread::sleep(POLL);
    }
}

/// Waits without printing until the workflows `ids` end or `timeout` runs out; the exit status.
pub fn quietly_api(
    api: &Client,
    ids: &[String],
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    loop {
        let wfs = fetch_api(api, ids)?;
        if wfs.iter().all(|w| w.state.is_terminal())
            || timeout.is_some_and(|t| started.elapsed() >= t)
        {
            return Ok(exit_status(&wfs));
        }
        std::thread::sleep(POLL);
    }
}

/// Prints what changed since `last` (redrawn in place on a terminal).
fn show(lines: &[String], last: &[String], tty: bool) {
    if tty {
        if !last.is_empty() {
            print!("\x1b[{}A", last.len());
        }
        for l in lines {
            println!("\x1b[2K{l}");
        }
        return;
    }
    for (i, l) in lines.iter().enumerate() {
        if last.get(i) != Some(l) {
            println!("{l}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::template::parse_template;

    fn wf(id: &str, state: WorkflowState) -> WorkflowView {
        let t = parse_template(
            "t.yaml",
            "name: t\nactions:\n  - name: b\n    kind: reboot\n",
        )
        .unwrap();
        let mut w = kiln_engine::new_workflow(id.into(), "n".into(), &t, t.actions.clone(), 0);
        w.state = state;
        kiln_server::workflows::view(&w, None, 0)
    }

    #[test]
    fn exit_status_says_how_the_workflows_ended() {
        use WorkflowState::*;
        let code = |states: &[WorkflowState]| {
            let wfs: Vec<_> = states.iter().map(|s| wf("w", *s)).collect();
            exit_status(&wfs)
        };
        assert_eq!(code(&[Succeeded, Succeeded]), ExitCode::SUCCESS);
        assert_eq!(code(&[Succeeded, Failed]), ExitCode::FAILURE);
        assert_eq!(code(&[TimedOut]), ExitCode::FAILURE);
        assert_eq!(code(&[Failed, Running]), ExitCode::from(STILL_RUNNING));
    }
}
