//! `kiln demo --delete`: once the cluster is ready, take it apart as an operator would
//! (`kiln cluster delete`, through the admin API), follow the wipe workflows `kiln serve` runs on every node (BMC
//! power cycle into the agent, wipe the disk, power off) and check through the BMCs that
//! every machine ended up off.

use std::time::{Duration, Instant};

use kiln_api::WorkflowView;
use kiln_model::workflow::WorkflowState;
use serde::Serialize;

use super::api::Kiln;
use super::console::{indent, out};
use super::follow::{created_ms, should_stop};
use super::progress::human_ms;
use super::{CLUSTER, Demo, Outcome, SELECTOR, now_ms};

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

/// Deletes the cluster through the API and follows it to the end (or `deadline`).
pub(super) fn run(
    d: &mut Demo<'_>,
    kiln: &Kiln,
    deadline: Instant,
) -> anyhow::Result<(Outcome, DeleteReport)> {
    let start = now_ms();
    let deleted = kiln.delete_cluster(CLUSTER)?;
    d.say(&format!("kiln cluster delete {CLUSTER}"));
    out(&indent(&kiln_client::render::cluster::deleted(&deleted)));
    let hosts: Vec<String> = d.lab.machines.iter().map(|m| m.hostname.clone()).collect();
    let (mut outcome, wipes) = follow_wipes(d, kiln, &hosts, start, deadline)?;
    let failed: Vec<&str> = wipes
        .iter()
        .zip(&hosts)
        .filter(|(w, _)| {
            w.as_ref()
                .is_some_and(|w| w.state != WorkflowState::Succeeded)
        })
        .map(|(_, h)| h.as_str())
        .collect();
    if outcome == Outcome::Succeeded && !failed.is_empty() {
        outcome = Outcome::Failed(format!("wiping {} failed", failed.join(", ")));
    }
    let mut power: Vec<String> = vec!["unknown".into(); hosts.len()];
    if outcome == Outcome::Succeeded {
        outcome = wait_power_off(d, kiln, &hosts, &mut power, deadline);
    }
    let ms = now_ms().saturating_sub(start);
    let machines: Vec<Deleted> = hosts
        .iter()
        .zip(&wipes)
        .zip(&power)
        .map(|((host, w), p)| deleted_machine(host, w.as_ref(), p))
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

/// Each machine's wipe workflow, printed as it changes, until all ended (or must stop).
fn follow_wipes(
    d: &mut Demo<'_>,
    kiln: &Kiln,
    hosts: &[String],
    start: u64,
    deadline: Instant,
) -> anyhow::Result<(Outcome, Vec<Option<WorkflowView>>)> {
    let mut seen: Vec<String> = vec![String::new(); hosts.len()];
    let mut wipes: Vec<Option<WorkflowView>> = vec![None; hosts.len()];
    let outcome = loop {
        let wfs = kiln.workflows()?;
        for (i, host) in hosts.iter().enumerate() {
            // Newest first: this machine's wipe workflow created by the delete.
            wipes[i] = wfs
                .iter()
                .find(|w| {
                    &w.machine == host
                        && w.template == WIPE_TEMPLATE
                        && created_ms(w) + 1000 >= start
                })
                .cloned();
            let line = wipes[i].as_ref().map_or_else(
                || "no wipe workflow yet".to_string(),
                |w| format!("{}: {}", w.state, step(w)),
            );
            if seen[i] != line {
                d.say(&format!("  {host:<13} {WIPE_TEMPLATE} {line}"));
                seen[i] = line;
            }
        }
        if wipes
            .iter()
            .all(|w| w.as_ref().is_some_and(|w| w.state.is_terminal()))
        {
            break Outcome::Succeeded;
        }
        if let Some(o) = should_stop(d.lab, deadline, d.stop) {
            break o;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    Ok((outcome, wipes))
}

/// The agent's last action powers the machine off: the BMCs must agree.
fn wait_power_off(
    d: &mut Demo<'_>,
    kiln: &Kiln,
    hosts: &[String],
    power: &mut [String],
    deadline: Instant,
) -> Outcome {
    let until = (Instant::now() + POWER_OFF_GRACE).min(deadline);
    loop {
        for row in kiln.bmc_status(SELECTOR).unwrap_or_default() {
            if let Some(i) = hosts.iter().position(|h| *h == row.machine) {
                power[i] = match row.error {
                    Some(e) => format!("error: {e}"),
                    None => row.result,
                };
            }
        }
        if power.iter().all(|p| p == "off") {
            return Outcome::Succeeded;
        }
        if Instant::now() > until {
            return Outcome::Failed(format!(
                "the BMCs still report {} {POWER_OFF_GRACE:?} after the wipes ended",
                hosts
                    .iter()
                    .zip(power.iter())
                    .map(|(h, p)| format!("{h} {p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(o) = should_stop(d.lab, deadline, d.stop) {
            return o;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn deleted_machine(host: &str, w: Option<&WorkflowView>, power: &str) -> Deleted {
    Deleted {
        hostname: host.to_string(),
        workflow: w.map(|w| w.id.clone()).unwrap_or_default(),
        result: w.map_or("unfinished".into(), |w| {
            if w.state.is_terminal() {
                w.state.to_string()
            } else {
                "unfinished".into()
            }
        }),
        message: w.map(|w| w.message.clone()).unwrap_or_default(),
        power: power.to_string(),
    }
}

/// Where a wipe workflow is: its running (or last) action, or its message once it ended.
fn step(w: &WorkflowView) -> String {
    if w.state.is_terminal() {
        return w.message.clone();
    }
    let running = w.actions.iter().find(|a| a.state == "running");
    let pending = w.actions.iter().find(|a| a.state == "pending");
    match (running, pending) {
        (Some(a), _) => format!("action {} running", a.name),
        (None, Some(a)) => format!("action {} next", a.name),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::{ActionView, BmcStepsView, StepView};

    fn action(name: &str) -> ActionView {
        ActionView {
            name: name.into(),
            kind: "shell".into(),
            state: "pending".into(),
            attempts: 0,
            max_attempts: 1,
            timeout_seconds: 60.0,
            started: None,
            ended: None,
            duration_seconds: None,
            message: String::new(),
            progress: None,
        }
    }

    /// workflows/wipe-disk.yaml's actions, as `GET /api/v1/workflows` shows them.
    fn wipe_workflow() -> WorkflowView {
        let step = StepView {
            state: "done".into(),
            attempts: 1,
            message: String::new(),
        };
        WorkflowView {
            id: "wf-1".into(),
            machine: "n1".into(),
            template: WIPE_TEMPLATE.into(),
            state: WorkflowState::Running,
            message: String::new(),
            created: "2026-11-22T01:50:45.123Z".into(),
            updated: "2026-11-22T01:50:45.123Z".into(),
            ended: None,
            deadline: "2026-11-22T02:50:45.123Z".into(),
            duration_seconds: 0.0,
            retry_of: None,
            current_action: None,
            actions: vec![action("wipe"), action("poweroff")],
            bmc: BmcStepsView {
                start: step.clone(),
                finish: step,
            },
            phone_home: None,
            agent_claim: None,
            seed_served: None,
            log_lines_dropped: 0,
        }
    }

    #[test]
    fn the_wipe_template_has_the_actions_the_demo_names() {
        let t = include_str!("../../../../workflows/wipe-disk.yaml");
        assert!(t.contains("name: wipe-disk"), "{t}");
        assert!(
            t.contains("- name: wipe") && t.contains("- name: poweroff"),
            "{t}"
        );
    }

    #[test]
    fn step_names_the_action_in_hand_then_the_outcome() {
        let mut w = wipe_workflow();
        assert_eq!(step(&w), "action wipe next");
        w.actions[0].state = "running".into();
        assert_eq!(step(&w), "action wipe running");
        w.actions[0].state = "succeeded".into();
        assert_eq!(step(&w), "action poweroff next");
        w.state = WorkflowState::Succeeded;
        w.message = "poweroff: powering off".into();
        assert_eq!(step(&w), "poweroff: powering off");
    }

    #[test]
    fn a_machine_whose_wipe_never_appeared_is_unfinished() {
        let d = deleted_machine("n1", None, "on");
        assert_eq!((d.result.as_str(), d.workflow.as_str()), ("unfinished", ""));
        let mut w = wipe_workflow();
        assert_eq!(deleted_machine("n1", Some(&w), "on").result, "unfinished");
        w.state = WorkflowState::Succeeded;
        let d = deleted_machine("n1", Some(&w), "off");
        assert_eq!((d.result.as_str(), d.power.as_str()), ("succeeded", "off"));
    }
}
