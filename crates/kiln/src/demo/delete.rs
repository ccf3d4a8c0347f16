//! `kiln demo --delete`: once the cluster is ready, take it apart as an operator would
//! (`kiln cluster delete`), follow the wipe workflows `kiln serve` runs on every node (BMC
//! power cycle into the agent, wipe the disk, power off) and check through the BMCs that
//! every machine ended up off.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use kiln_engine::now_ms;
use kiln_model::workflow::Workflow;
use serde::Serialize;

use super::progress::human_ms;
use super::watch::Watch;
use super::{CLUSTER, Outcome, bmc_status, indent, kiln, out, say, should_stop};
use kiln_lab::Lab;

/// What the wipe template is called in the store (workflows/wipe-disk.yaml).
const WIPE_TEMPLATE: &str = "wipe-disk";
/// After the last wipe workflow ended, how long the BMCs may take to report power off.
const POWER_OFF_GRACE: Duration = Duration::from_secs(60);

/// One node's deprovisioning, as printed and written to `--summary-json`.
#[derive(Clone, Debug, Serialize)]
pub struct Deleted {
    pub hostname: String,
    /// The wipe workflow's id, or empty when none appeared.
    pub workflow: String,
    /// succeeded | failed | timed-out | unfinished
    pub result: String,
    pub message: String,
    /// The power state the BMC reported at the end (on | off | error: ...).
    pub power: String,
}

/// The whole `--delete` phase.
#[derive(Clone, Debug, Serialize)]
pub struct DeleteReport {
    pub outcome: String,
    pub ms: u64,
    pub machines: Vec<Deleted>,
}

/// Runs `kiln cluster delete` and follows it to the end (or `deadline`).
pub fn run(
    lab: &mut Lab,
    exe: &Path,
    watch: &Watch,
    deadline: Instant,
    clock: Instant,
    stop: &AtomicBool,
) -> anyhow::Result<(Outcome, DeleteReport)> {
    let start = now_ms();
    let text = kiln(lab, exe, &["cluster", "delete", CLUSTER])?;
    say(clock, &format!("kiln cluster delete {CLUSTER}"));
    out(&indent(&text));
    let hosts: Vec<String> = lab.machines.iter().map(|m| m.hostname.clone()).collect();
    let mut seen: Vec<String> = vec![String::new(); hosts.len()];
    let mut wipes: Vec<Option<Workflow>> = vec![None; hosts.len()];
    let mut outcome = loop {
        let wfs = watch.workflows()?;
        for (i, host) in hosts.iter().enumerate() {
            // Newest first: this machine's wipe workflow created by the delete.
            wipes[i] = wfs
                .iter()
                .find(|w| {
                    &w.hardware == host
                        && w.template == WIPE_TEMPLATE
                        && w.created_ms + 1000 >= start
                })
                .cloned();
            let line = wipes[i].as_ref().map_or_else(
                || "no wipe workflow yet".to_string(),
                |w| format!("{}: {}", w.state, step(w)),
            );
            if seen[i] != line {
                say(clock, &format!("  {host:<13} {WIPE_TEMPLATE} {line}"));
                seen[i] = line;
            }
        }
        if wipes
            .iter()
            .all(|w| w.as_ref().is_some_and(|w| w.state.is_terminal()))
        {
            break Outcome::Succeeded;
        }
        if let Some(o) = should_stop(lab, deadline, stop) {
            break o;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let failed: Vec<&str> = wipes
        .iter()
        .zip(&hosts)
        .filter(|(w, _)| {
            w.as_ref()
                .is_some_and(|w| w.state != kiln_model::workflow::WorkflowState::Succeeded)
        })
        .map(|(_, h)| h.as_str())
        .collect();
    if outcome == Outcome::Succeeded && !failed.is_empty() {
        outcome = Outcome::Failed(format!("wiping {} failed", failed.join(", ")));
    }

    // The agent's last action powers the machine off: the BMCs must agree.
    let mut power: Vec<String> = vec!["unknown".into(); hosts.len()];
    if outcome == Outcome::Succeeded {
        let until = (Instant::now() + POWER_OFF_GRACE).min(deadline);
        loop {
            for row in bmc_status(lab, exe)? {
                if let Some(i) = hosts.iter().position(|h| *h == row.machine) {
                    power[i] = match row.error {
                        Some(e) => format!("error: {e}"),
                        None => row.result,
                    };
                }
            }
            if power.iter().all(|p| p == "off") {
                break;
            }
            if Instant::now() > until {
                outcome = Outcome::Failed(format!(
                    "the BMCs still report {} {POWER_OFF_GRACE:?} after the wipes ended",
                    hosts
                        .iter()
                        .zip(&power)
                        .map(|(h, p)| format!("{h} {p}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                break;
            }
            if let Some(o) = should_stop(lab, deadline, stop) {
                outcome = o;
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let ms = now_ms().saturating_sub(start);
    let machines: Vec<Deleted> = hosts
        .iter()
        .zip(&wipes)
        .zip(&power)
        .map(|((host, w), p)| Deleted {
            hostname: host.clone(),
            workflow: w.as_ref().map(|w| w.id.clone()).unwrap_or_default(),
            result: w.as_ref().map_or("unfinished".into(), |w| {
                if w.state.is_terminal() {
                    w.state.to_string()
                } else {
                    "unfinished".into()
                }
            }),
            message: w.as_ref().map(|w| w.message.clone()).unwrap_or_default(),
            power: p.clone(),
        })
        .collect();
    let wiped = machines.iter().filter(|m| m.result == "succeeded").count();
    let off = machines.iter().filter(|m| m.power == "off").count();
    out(&format!(
        "cluster {CLUSTER} deleted: {wiped}/{} disk(s) wiped, {off}/{} machine(s) off (BMC), in {}\n",
        machines.len(),
        machines.len(),
        human_ms(ms)
    ));
    let report = DeleteReport {
        outcome: format!("{outcome:?}"),
        ms,
        machines,
    };
    Ok((outcome, report))
}

/// Where a wipe workflow is: its running (or last) action, or its message once it ended.
fn step(w: &Workflow) -> String {
    if w.state.is_terminal() {
        return w.message.clone();
    }
    use kiln_model::workflow::ActionState;
    let running = w.actions.iter().find(|a| a.state == ActionState::Running);
    let pending = w.actions.iter().find(|a| a.state == ActionState::Pending);
    match (running, pending) {
        (Some(a), _) => format!("action {} running", a.spec.name),
        (None, Some(a)) => format!("action {} next", a.spec.name),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::workflow::{ActionState, WorkflowState};

    fn wipe_workflow() -> Workflow {
        let t = kiln_model::template::parse_template(
            "wipe-disk.yaml",
            include_str!("../../../../workflows/wipe-disk.yaml"),
        )
        .unwrap();
        kiln_engine::new_workflow("wf-1".into(), "n1".into(), &t, t.actions.clone(), 0)
    }

    #[test]
    fn step_names_the_action_in_hand_then_the_outcome() {
        let mut w = wipe_workflow();
        assert_eq!(w.template, WIPE_TEMPLATE);
        assert_eq!(step(&w), "action wipe next");
        w.actions[0].state = ActionState::Running;
        assert_eq!(step(&w), "action wipe running");
        w.actions[0].state = ActionState::Succeeded;
        assert_eq!(step(&w), "action poweroff next");
        w.state = WorkflowState::Succeeded;
        w.message = "poweroff: powering off".into();
        assert_eq!(step(&w), "poweroff: powering off");
    }
}
