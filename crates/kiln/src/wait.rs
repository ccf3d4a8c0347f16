//! Following workflows until they end: `kiln workflow watch`, and `--wait` on the commands
//! that create workflows. The exit status is what CI reads: 0 when every workflow succeeded,
//! 1 when any failed, timed out or was cancelled, 3 when `--timeout` ran out first.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kiln_engine::now_ms;
use kiln_model::workflow::{Workflow, WorkflowState};
use kiln_store::Store;
use serde::Serialize;

use crate::output::Format;
use crate::views::{WorkflowJson, seconds};
use crate::workflow::progress_line;

/// Exit status when `--timeout` ran out with workflows still running.
pub const STILL_RUNNING: u8 = 3;

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
fn outcome(wfs: &[Workflow]) -> (usize, Vec<String>, Vec<String>) {
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
pub fn exit_status(wfs: &[Workflow]) -> ExitCode {
    let (_, failed, running) = outcome(wfs);
    if !running.is_empty() {
        ExitCode::from(STILL_RUNNING)
    } else if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Shows the workflows `ids` (live on a terminal, changed lines otherwise, or JSON lines) until
/// they end or `timeout` runs out; returns the exit status.
pub fn follow(
    store: &Store,
    ids: &[String],
    timeout: Option<Duration>,
    output: Format,
) -> anyhow::Result<ExitCode> {
    follow_with(|| Ok(from_store(store, ids)), timeout, output)
}

/// The workflows `ids` as the store has them now.
fn from_store(store: &Store, ids: &[String]) -> Vec<Workflow> {
    ids.iter()
        .filter_map(|id| store.workflow(id).ok().flatten())
        .collect()
}

/// [`follow`] over whatever `fetch` returns each round (the store, or the admin API).
pub fn follow_with(
    mut fetch: impl FnMut() -> anyhow::Result<Vec<Workflow>>,
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
            Format::Json => wfs
                .iter()
                .map(|w| serde_json::to_string(&WorkflowJson::new(w, None, now_ms())))
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
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits without printing until the workflows `fetch` returns (each round) end or `timeout`
/// runs out; the exit status.
pub fn quietly_with(
    mut fetch: impl FnMut() -> anyhow::Result<Vec<Workflow>>,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    loop {
        let wfs = fetch()?;
        if wfs.iter().all(|w| w.state.is_terminal())
            || timeout.is_some_and(|t| started.elapsed() >= t)
        {
            return Ok(exit_status(&wfs));
        }
        std::thread::sleep(Duration::from_millis(500));
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

    fn wf(id: &str, state: WorkflowState) -> Workflow {
        let t = parse_template(
            "t.yaml",
            "name: t\nactions:\n  - name: b\n    kind: reboot\n",
        )
        .unwrap();
        let mut w = kiln_engine::new_workflow(id.into(), "n".into(), &t, t.actions.clone(), 0);
        w.state = state;
        w
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
