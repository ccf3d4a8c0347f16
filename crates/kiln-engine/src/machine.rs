//! Per-machine workflow state machine. Pure: no clock, no I/O. Every function
//! takes `now` (Unix ms) and returns the effects the caller must apply
//! (netboot flag, token revocation, events) in the same store transaction.

use kiln_model::event::{ActionOutcome, EventData};
use kiln_model::template::{ActionKind, ActionSpec, Template};
use kiln_model::workflow::{
    ActionState, ActionStatus, NextAction, Report, ReportKind, Workflow, WorkflowState,
};

/// What the caller must do after a transition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Set the machine's netboot flag.
    pub netboot: Option<bool>,
    /// The workflow ended: its token must stop working.
    pub revoke_token: bool,
    /// Events for the machine.
    pub events: Vec<EventData>,
}

impl Effects {
    pub(crate) fn event(&mut self, data: EventData) {
        self.events.push(data);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The workflow has ended; the agent should stop.
    #[error("the workflow is {0}")]
    Ended(WorkflowState),
    /// A report for an action or attempt that is not the running one (a late
    /// report from before a retry, say): ignored, not applied.
    #[error("action {index} attempt {attempt} is not running")]
    Stale { index: usize, attempt: u32 },
    /// The installed OS cannot have reported yet: the agent has not handed over.
    #[error("the workflow is {0}: the installed OS reports only after the agent handed over")]
    TooEarly(WorkflowState),
}

/// Delay before retry `attempt + 1`: 5 s, 10 s, 20 s … at most 2 min.
pub fn backoff_ms(attempt: u32) -> u64 {
    let exp = attempt.saturating_sub(1).min(5);
    (5_000u64 << exp).min(120_000)
}

pub fn new_workflow(
    id: String,
    hardware: String,
    template: &Template,
    rendered: Vec<ActionSpec>,
    now: u64,
) -> Workflow {
    let actions = rendered
        .into_iter()
        .map(|spec| ActionStatus {
            spec,
            state: ActionState::Pending,
            attempts: 0,
            started_ms: None,
            ended_ms: None,
            retry_at_ms: None,
            message: String::new(),
            progress: None,
            agent_run: None,
        })
        .collect();
    Workflow {
        id,
        hardware,
        template: template.name.clone(),
        state: WorkflowState::Pending,
        actions,
        created_ms: now,
        updated_ms: now,
        ended_ms: None,
        deadline_ms: now + template.timeout.as_millis() as u64,
        message: String::new(),
        power: Default::default(),
        template_source: Some(template.source.clone()),
        retry_of: None,
        log_lines_dropped: 0,
        agent_claim: None,
        seed_served_ms: None,
        rendered_for: None,
    }
}

/// Ends the workflow: netboot off, token revoked, and (for machines kiln
/// powered) the BMC step that points the machine back at its disk.
pub(crate) fn finish_workflow(
    wf: &mut Workflow,
    state: WorkflowState,
    message: String,
    now: u64,
    fx: &mut Effects,
) {
    crate::power::on_finish(wf);
    let from = wf.state;
    wf.state = state;
    wf.ended_ms = Some(now);
    wf.message = message.clone();
    fx.netboot = Some(false);
    fx.revoke_token = true;
    fx.event(entered(wf, from, message));
}

/// `workflow.<state>`: `wf` went from `from` to its current state, for `reason`.
pub(crate) fn entered(wf: &Workflow, from: WorkflowState, reason: impl Into<String>) -> EventData {
    EventData::WorkflowEntered {
        workflow: wf.id.clone(),
        from: Some(from),
        to: wf.state,
        reason: reason.into(),
    }
}

/// An event about action `index` of `wf`, attempt `attempt`.
fn action_event(wf: &Workflow, index: usize, outcome: ActionOutcome, attempt: u32) -> EventData {
    let a = &wf.actions[index];
    EventData::Action {
        outcome,
        workflow: wf.id.clone(),
        index: index as u32,
        name: a.spec.name.clone(),
        action: None,
        attempt,
        message: None,
        duration_ms: None,
        retry_in_s: None,
    }
}

/// An attempt of action `index` ended (`outcome`) with `message`: how long it ran.
fn ended_event(wf: &Workflow, index: usize, outcome: ActionOutcome, message: &str) -> EventData {
    let a = &wf.actions[index];
    let mut ev = action_event(wf, index, outcome, a.attempts);
    if let EventData::Action {
        message: m,
        duration_ms,
        ..
    } = &mut ev
    {
        *m = Some(message.to_string());
        *duration_ms = a
            .started_ms
            .zip(a.ended_ms)
            .map(|(s, e)| e.saturating_sub(s));
    }
    ev
}

/// The agent asks what to do (an agent that does not name its run: every call while an
/// action runs is a restart).
pub fn next(wf: &mut Workflow, now: u64) -> (NextAction, Effects) {
    next_for(wf, now, None)
}

/// The agent run `run` asks what to do. Asked again by the same run while its attempt runs
/// (the answer was lost), it gets that attempt again: nothing changes, no attempt is burned.
pub fn next_for(wf: &mut Workflow, now: u64, run: Option<&str>) -> (NextAction, Effects) {
    if let Some(again) = same_run_again(wf, now, run) {
        return (again, Effects::default());
    }
    let mut fx = tick(wf, now);
    if wf.state.is_terminal() {
        return (NextAction::Done { state: wf.state }, fx);
    }
    if wf.state == WorkflowState::Rebooting {
        return (NextAction::Done { state: wf.state }, fx);
    }
    if matches!(wf.state, WorkflowState::Pending | WorkflowState::Netbooting) {
        // Only the agent, with the machine's credential, says the machine netbooted: an
        // anonymous script fetch (anyone can name a MAC) changes nothing.
        if crate::power::netbooted_on_its_own(wf) {
            fx.event(EventData::BmcSkipped {
                reason: "the machine's agent called before kiln powered it: not cycling it".into(),
            });
        }
        let from = wf.state;
        wf.state = WorkflowState::Running;
        fx.event(entered(wf, from, "agent connected"));
    }
    wf.updated_ms = now;
    let Some(index) = wf.current() else {
        // Every action succeeded and none rebooted: the workflow is done.
        finish_workflow(wf, WorkflowState::Succeeded, String::new(), now, &mut fx);
        return (NextAction::Done { state: wf.state }, fx);
    };
    let next = start_attempt(wf, index, now, run, &mut fx);
    (next, fx)
}

/// The attempt the same agent run is already running, if it asks again in time.
fn same_run_again(wf: &Workflow, now: u64, run: Option<&str>) -> Option<NextAction> {
    let index = wf
        .current()
        .filter(|_| !wf.state.is_terminal() && now < wf.deadline_ms)?;
    let a = &wf.actions[index];
    (a.state == ActionState::Running && run.is_some() && a.agent_run.as_deref() == run).then(|| {
        NextAction::Run {
            index,
            attempt: a.attempts,
            action: a.spec.clone(),
        }
    })
}

/// Starts the next attempt of action `index`, unless its retry is not due yet or an
/// interrupted attempt was its last.
fn start_attempt(
    wf: &mut Workflow,
    index: usize,
    now: u64,
    run: Option<&str>,
    fx: &mut Effects,
) -> NextAction {
    let action = &mut wf.actions[index];
    if let Some(at) = action.retry_at_ms.filter(|at| *at > now) {
        return NextAction::Wait {
            seconds: (at - now).div_ceil(1000),
        };
    }
    if action.state == ActionState::Running {
        // The agent restarted mid-action (its machine rebooted, say): that was an attempt.
        if action.attempts > action.spec.retries {
            let msg = format!(
                "action {} was interrupted and has no retries left",
                action.spec.name
            );
            action.state = ActionState::Failed;
            action.ended_ms = Some(now);
            action.message = msg.clone();
            finish_workflow(wf, WorkflowState::Failed, msg, now, fx);
            return NextAction::Done { state: wf.state };
        }
        let attempt = action.attempts + 1;
        fx.event(action_event(wf, index, ActionOutcome::Restarted, attempt));
    }
    let action = &mut wf.actions[index];
    action.state = ActionState::Running;
    action.attempts += 1;
    action.started_ms = Some(now);
    action.ended_ms = None;
    action.retry_at_ms = None;
    action.progress = None;
    action.message.clear();
    action.agent_run = run.map(str::to_string);
    let (attempt, spec) = (action.attempts, action.spec.clone());
    let mut started = action_event(wf, index, ActionOutcome::Started, attempt);
    if let EventData::Action { action, .. } = &mut started {
        *action = Some(spec.kind.to_string());
    }
    fx.event(started);
    NextAction::Run {
        index,
        attempt,
        action: spec,
    }
}

/// The agent reports on the running action.
pub fn report(wf: &mut Workflow, r: &Report, now: u64) -> Result<Effects, ReportError> {
    let mut fx = tick(wf, now);
    if wf.state.is_terminal() {
        return Err(ReportError::Ended(wf.state));
    }
    let stale = ReportError::Stale {
        index: r.index,
        attempt: r.attempt,
    };
    let action = wf.actions.get_mut(r.index).ok_or(stale.clone())?;
    if action.state != ActionState::Running || action.attempts != r.attempt {
        return Err(stale);
    }
    wf.updated_ms = now;
    match &r.kind {
        ReportKind::Progress(p) => action.progress = Some(p.clone()),
        ReportKind::Log { .. } => {} // stored by the caller, not in the workflow
        ReportKind::Succeeded { message } => {
            action.state = ActionState::Succeeded;
            action.ended_ms = Some(now);
            action.message = message.clone();
            let kind = action.spec.kind;
            let msg = format!("{}: {message}", action.spec.name);
            fx.event(ended_event(wf, r.index, ActionOutcome::Succeeded, message));
            if kind.ends_workflow() {
                // The machine powers off: no installed OS will phone home.
                finish_workflow(wf, WorkflowState::Succeeded, msg, now, &mut fx);
            } else if kind.ends_agent() {
                let from = wf.state;
                wf.state = WorkflowState::Rebooting;
                // From now on the machine must boot its disk.
                fx.netboot = Some(false);
                fx.event(entered(wf, from, "booting the installed OS"));
            }
        }
        ReportKind::Failed { message } => {
            let index = r.index;
            retry_or_end(
                wf,
                index,
                message.clone(),
                ActionState::Failed,
                now,
                &mut fx,
            );
        }
    }
    Ok(fx)
}

/// The installed OS phoned home: the workflow succeeded.
pub fn phone_home(wf: &mut Workflow, now: u64) -> Result<Effects, ReportError> {
    installed_os_reported(
        wf,
        WorkflowState::Succeeded,
        "installed OS phoned home".into(),
        now,
    )
}

/// The installed OS reported that its set-up failed (before phoning home).
pub fn installed_os_failed(
    wf: &mut Workflow,
    message: String,
    now: u64,
) -> Result<Effects, ReportError> {
    installed_os_reported(wf, WorkflowState::Failed, message, now)
}

/// The installed OS reported in, so the workflow ends as `state`. Actions still running did
/// their part: a reboot action's report can be lost as the machine goes down.
fn installed_os_reported(
    wf: &mut Workflow,
    state: WorkflowState,
    message: String,
    now: u64,
) -> Result<Effects, ReportError> {
    installed_os_may_report(wf)?;
    let mut fx = Effects::default();
    end_running_actions(wf, ActionState::Succeeded, now);
    finish_workflow(wf, state, message, now, &mut fx);
    Ok(fx)
}

/// Whether the installed OS may report (phone home, fail): only once the
/// agent handed over (`rebooting`), or while its final reboot/kexec runs (that action's own
/// report can be lost as the machine goes down). Never from `pending` or `netbooting`.
pub fn installed_os_may_report(wf: &Workflow) -> Result<(), ReportError> {
    if wf.state.is_terminal() {
        return Err(ReportError::Ended(wf.state));
    }
    let handing_over = wf.state == WorkflowState::Running
        && wf.current() == Some(wf.actions.len() - 1)
        && wf.actions.last().is_some_and(|a| {
            a.state == ActionState::Running
                && matches!(a.spec.kind, ActionKind::Reboot | ActionKind::Kexec)
        });
    if wf.state == WorkflowState::Rebooting || handing_over {
        Ok(())
    } else {
        Err(ReportError::TooEarly(wf.state))
    }
}

/// Every action still running ends now, as `ended`.
fn end_running_actions(wf: &mut Workflow, ended: ActionState, now: u64) {
    for a in wf
        .actions
        .iter_mut()
        .filter(|a| a.state == ActionState::Running)
    {
        a.state = ended;
        a.ended_ms = Some(now);
    }
}

/// The running action `index` failed or timed out: back to pending with a
/// backoff while it has retries left, else it ends the workflow (`failed`,
/// or `timed-out` for a timeout).
fn retry_or_end(
    wf: &mut Workflow,
    index: usize,
    message: String,
    ended: ActionState,
    now: u64,
    fx: &mut Effects,
) {
    let action = &mut wf.actions[index];
    action.ended_ms = Some(now);
    action.message = message.clone();
    let name = action.spec.name.clone();
    if action.attempts <= action.spec.retries {
        let wait = backoff_ms(action.attempts);
        action.state = ActionState::Pending;
        action.retry_at_ms = Some(now + wait);
        let mut ev = ended_event(wf, index, ActionOutcome::Retrying, &message);
        if let EventData::Action { retry_in_s, .. } = &mut ev {
            *retry_in_s = Some(wait / 1000);
        }
        fx.event(ev);
        return;
    }
    action.state = ended;
    let (outcome, state, verb) = match ended {
        ActionState::TimedOut => (
            ActionOutcome::TimedOut,
            WorkflowState::TimedOut,
            "timed out",
        ),
        _ => (ActionOutcome::Failed, WorkflowState::Failed, "failed"),
    };
    fx.event(ended_event(wf, index, outcome, &message));
    finish_workflow(
        wf,
        state,
        format!("action {name} {verb}: {message}"),
        now,
        fx,
    );
}

/// The operator cancels an unfinished workflow: it fails now, its machine is free at once
/// (netboot off, token revoked). A BMC step not yet run is dropped; one that did power the
/// machine is followed by "next boot disk" as at any end.
pub fn cancel(wf: &mut Workflow, reason: &str, now: u64) -> Result<Effects, ReportError> {
    if wf.state.is_terminal() {
        return Err(ReportError::Ended(wf.state));
    }
    crate::power::drop_unstarted(wf, "cancelled before the BMC was used");
    end_running_actions(wf, ActionState::Failed, now);
    let mut fx = Effects::default();
    fx.event(EventData::WorkflowCancelled {
        workflow: wf.id.clone(),
        reason: reason.to_string(),
    });
    let msg = format!("cancelled: {reason}");
    finish_workflow(wf, WorkflowState::Failed, msg, now, &mut fx);
    Ok(fx)
}

/// Timeouts: the running action's, then the workflow's.
/// Whether [`tick`] has anything to do for `wf` at `now` (a timeout is due). Decided on a
/// snapshot, so that a server locks and writes only the workflows with something due: with a
/// thousand running workflows, a locked round trip (and a commit) for each one every tick
/// would keep the store busy doing nothing.
pub fn timeout_due(wf: &Workflow, now: u64) -> bool {
    if wf.state.is_terminal() {
        return false;
    }
    if now >= wf.deadline_ms {
        return true;
    }
    wf.current().is_some_and(|index| {
        let action = &wf.actions[index];
        let limit = action.spec.timeout.as_millis() as u64;
        action.state == ActionState::Running && action.started_ms.is_some_and(|s| now >= s + limit)
    })
}

pub fn tick(wf: &mut Workflow, now: u64) -> Effects {
    let mut fx = Effects::default();
    if !timeout_due(wf, now) {
        return fx;
    }
    if now >= wf.deadline_ms {
        let msg = format!(
            "workflow timed out after {} s",
            (wf.deadline_ms - wf.created_ms) / 1000
        );
        end_running_actions(wf, ActionState::TimedOut, now);
        finish_workflow(wf, WorkflowState::TimedOut, msg, now, &mut fx);
        return fx;
    }
    if let Some(index) = wf.current() {
        let limit = wf.actions[index].spec.timeout.as_millis() as u64;
        let msg = format!("timed out after {} s", limit / 1000);
        retry_or_end(wf, index, msg, ActionState::TimedOut, now, &mut fx);
    }
    fx
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::EventKind;
    use kiln_model::template::parse_template;
    use kiln_model::workflow::Progress;

    const T: &str = "name: t\ntimeout: 1h\nactions:\n  - name: img\n    kind: image2disk\n    timeout: 10m\n    retries: 1\n    with:\n      url: http://x/i\n      sha256: \"0000000000000000000000000000000000000000000000000000000000000000\"\n  - name: seed\n    kind: cloud-init\n  - name: boot\n    kind: reboot\n";

    fn wf() -> Workflow {
        let t = parse_template("t.yaml", T).unwrap();
        new_workflow("wf-1".into(), "node1".into(), &t, t.actions.clone(), 1_000)
    }

    fn run(wf: &mut Workflow, now: u64) -> (usize, u32) {
        match next(wf, now).0 {
            NextAction::Run { index, attempt, .. } => (index, attempt),
            other => panic!("expected an action, got {other:?}"),
        }
    }

    fn rep(index: usize, attempt: u32, kind: ReportKind) -> Report {
        Report {
            index,
            attempt,
            kind,
        }
    }

    #[test]
    fn cancel_ends_a_running_workflow_and_drops_an_unrun_bmc_step() {
        let mut w = wf();
        crate::power::plan(&mut w);
        let (index, _) = run(&mut w, 2_000);
        let fx = cancel(&mut w, "by hand", 3_000).unwrap();
        assert_eq!(w.state, WorkflowState::Failed);
        assert_eq!(w.actions[index].state, ActionState::Failed);
        assert_eq!(fx.netboot, Some(false));
        assert!(fx.revoke_token);
        assert!(fx.events.iter().any(
            |e| matches!(e, EventData::WorkflowCancelled { reason, .. } if reason == "by hand")
        ));
        assert!(
            fx.events.contains(&EventData::WorkflowEntered {
                workflow: "wf-1".into(),
                from: Some(WorkflowState::Running),
                to: WorkflowState::Failed,
                reason: "cancelled: by hand".into(),
            }),
            "{:?}",
            fx.events
        );
        assert_eq!(
            cancel(&mut w, "twice", 4_000),
            Err(ReportError::Ended(WorkflowState::Failed))
        );
        // The agent's call marked the start step done (netbooted on its own): the machine
        // was in kiln's power plan, so it goes back to disk.
        assert_eq!(
            w.power.finish.state,
            kiln_model::workflow::StepState::Pending
        );

        let mut never_powered = wf();
        crate::power::plan(&mut never_powered);
        cancel(&mut never_powered, "before power", 1_500).unwrap();
        assert_eq!(
            never_powered.power.start.state,
            kiln_model::workflow::StepState::NotNeeded
        );
        assert_eq!(
            never_powered.power.finish.state,
            kiln_model::workflow::StepState::NotNeeded,
            "no BMC call for a machine kiln never powered"
        );
    }

    #[test]
    fn only_the_agent_recognises_a_machine_that_netbooted_on_its_own() {
        let mut w = wf();
        crate::power::plan(&mut w);
        assert_eq!(
            w.power.start.state,
            kiln_model::workflow::StepState::Pending
        );
        // The agent (holding the machine's credential) calls before the BMC step ran.
        let fx = next(&mut w, 2_000).1;
        assert_eq!(w.power.start.state, kiln_model::workflow::StepState::Done);
        assert!(
            fx.events.iter().any(|e| e.kind() == EventKind::BmcSkipped),
            "{fx:?}"
        );
        assert_eq!(w.state, WorkflowState::Running);
    }

    #[test]
    fn the_installed_os_reports_only_after_the_agent_handed_over() {
        let mut w = wf();
        assert_eq!(
            phone_home(&mut w, 1_500),
            Err(ReportError::TooEarly(WorkflowState::Pending))
        );
        let (index, attempt) = run(&mut w, 2_000);
        assert_eq!(
            installed_os_failed(&mut w, "forged".into(), 2_100),
            Err(ReportError::TooEarly(WorkflowState::Running)),
            "not while the image is written"
        );
        let ok = ReportKind::Succeeded {
            message: String::new(),
        };
        report(&mut w, &rep(index, attempt, ok.clone()), 2_200).unwrap();
        let (index, attempt) = run(&mut w, 2_300);
        report(&mut w, &rep(index, attempt, ok), 2_400).unwrap();
        // The reboot action runs: its own report may be lost, the phone-home is taken.
        run(&mut w, 2_500);
        assert!(phone_home(&mut w, 3_000).is_ok());
        assert_eq!(w.state, WorkflowState::Succeeded);
    }

    #[test]
    fn a_retried_next_of_the_same_agent_run_burns_no_attempt() {
        let mut w = wf();
        let first = next_for(&mut w, 2_000, Some("b00t-1"));
        let NextAction::Run { index, attempt, .. } = first.0 else {
            panic!("{first:?}")
        };
        assert_eq!((index, attempt), (0, 1));
        // The answer was lost; the same run asks again: the same attempt, nothing changes.
        let before = w.clone();
        let (again, fx) = next_for(&mut w, 2_500, Some("b00t-1"));
        assert_eq!(again, first.0);
        assert_eq!(fx, Effects::default());
        assert_eq!(w, before);
        // Another run (the machine rebooted mid-action): that was an attempt.
        let (restarted, fx) = next_for(&mut w, 3_000, Some("b00t-2"));
        assert!(
            matches!(restarted, NextAction::Run { attempt: 2, .. }),
            "{restarted:?}"
        );
        assert!(
            fx.events
                .iter()
                .any(|e| e.kind() == EventKind::ActionRestarted)
        );
        // An agent that names no run: every call is a restart, as before (img allows two
        // attempts, so a third interruption fails the workflow).
        let (third, _) = next(&mut w, 3_500);
        assert_eq!(
            third,
            NextAction::Done {
                state: WorkflowState::Failed
            }
        );
    }

    #[test]
    fn happy_path_to_phone_home() {
        let mut w = wf();
        for i in 0..3 {
            let (index, attempt) = run(&mut w, 2_000 + i as u64);
            assert_eq!((index, attempt), (i, 1));
            assert_eq!(w.state, WorkflowState::Running);
            let fx = report(
                &mut w,
                &rep(
                    index,
                    attempt,
                    ReportKind::Succeeded {
                        message: "ok".into(),
                    },
                ),
                3_000,
            )
            .unwrap();
            if i == 2 {
                assert_eq!(fx.netboot, Some(false));
                assert_eq!(w.state, WorkflowState::Rebooting);
            }
        }
        assert!(matches!(
            next(&mut w, 4_000).0,
            NextAction::Done {
                state: WorkflowState::Rebooting
            }
        ));
        let fx = phone_home(&mut w, 5_000).unwrap();
        assert!(fx.revoke_token);
        assert_eq!(w.state, WorkflowState::Succeeded);
        assert!(phone_home(&mut w, 6_000).is_err());
    }

    #[test]
    fn failure_retries_with_backoff_then_fails() {
        let mut w = wf();
        let (i, a) = run(&mut w, 2_000);
        let fx = report(
            &mut w,
            &rep(
                i,
                a,
                ReportKind::Failed {
                    message: "sha256 mismatch".into(),
                },
            ),
            3_000,
        )
        .unwrap();
        assert_eq!(
            fx.events,
            vec![EventData::Action {
                outcome: ActionOutcome::Retrying,
                workflow: "wf-1".into(),
                index: 0,
                name: "img".into(),
                action: None,
                attempt: 1,
                message: Some("sha256 mismatch".into()),
                duration_ms: Some(1_000),
                retry_in_s: Some(5),
            }],
            "the event says which action, which attempt, how long it ran and when it retries"
        );
        assert_eq!(
            fx.events[0].to_string(),
            "img: sha256 mismatch; retry in 5 s"
        );
        assert_eq!(next(&mut w, 4_000).0, NextAction::Wait { seconds: 4 });
        let (i, a) = run(&mut w, 3_000 + backoff_ms(1));
        assert_eq!(a, 2);
        // A late report from attempt 1 is refused.
        assert!(matches!(
            report(
                &mut w,
                &rep(
                    i,
                    1,
                    ReportKind::Succeeded {
                        message: String::new()
                    }
                ),
                9_000
            ),
            Err(ReportError::Stale { .. })
        ));
        let fx = report(
            &mut w,
            &rep(
                i,
                a,
                ReportKind::Failed {
                    message: "sha256 mismatch".into(),
                },
            ),
            10_000,
        )
        .unwrap();
        assert_eq!(w.state, WorkflowState::Failed);
        assert!(w.message.contains("sha256 mismatch"));
        assert_eq!(fx.netboot, Some(false));
        assert!(fx.revoke_token);
        assert!(matches!(
            report(
                &mut w,
                &rep(i, a, ReportKind::Log { lines: vec![] }),
                11_000
            ),
            Err(ReportError::Ended(_))
        ));
    }

    #[test]
    fn action_and_workflow_timeouts() {
        let mut w = wf();
        let (i, a) = run(&mut w, 2_000);
        report(
            &mut w,
            &rep(
                i,
                a,
                ReportKind::Progress(Progress {
                    done: 5,
                    total: Some(10),
                    rate_bps: 1,
                }),
            ),
            2_500,
        )
        .unwrap();
        assert_eq!(w.actions[0].progress.as_ref().unwrap().done, 5);
        let fx = tick(&mut w, 2_000 + 10 * 60_000);
        assert!(
            fx.events
                .iter()
                .any(|e| e.kind() == EventKind::ActionRetrying),
            "{fx:?}"
        );
        let (_, a2) = run(&mut w, 2_000 + 10 * 60_000 + backoff_ms(1));
        assert_eq!(a2, 2);
        tick(&mut w, 2_000 + 30 * 60_000);
        assert_eq!(w.state, WorkflowState::TimedOut);

        let mut w = wf();
        tick(&mut w, 1_000 + 3_600_000);
        assert_eq!(w.state, WorkflowState::TimedOut);
        assert!(matches!(
            next(&mut w, 1_000 + 3_600_001).0,
            NextAction::Done {
                state: WorkflowState::TimedOut
            }
        ));
    }

    #[test]
    fn a_timeout_is_due_exactly_when_tick_acts() {
        let mut w = wf();
        run(&mut w, 2_000);
        // The action's 10 min, then the workflow's hour.
        for now in [
            2_000,
            2_000 + 10 * 60_000 - 1,
            2_000 + 10 * 60_000,
            1_000 + 3_600_000,
        ] {
            let due = timeout_due(&w, now);
            let fx = tick(&mut w.clone(), now);
            assert_eq!(due, !fx.events.is_empty(), "at {now}: {fx:?}");
        }
        assert!(!timeout_due(&w, 2_000 + 10 * 60_000 - 1));
        assert!(timeout_due(&w, 2_000 + 10 * 60_000));
        tick(&mut w, 1_000 + 3_600_000);
        assert_eq!(w.state, WorkflowState::TimedOut);
        assert!(
            !timeout_due(&w, u64::MAX),
            "an ended workflow has nothing due"
        );
    }

    #[test]
    fn an_interrupted_action_counts_as_an_attempt() {
        let mut w = wf();
        run(&mut w, 2_000);
        // The agent restarts and asks again while action 0 is still running.
        let (i, a) = run(&mut w, 3_000);
        assert_eq!((i, a), (0, 2));
        // No retries left: the third ask fails the workflow.
        assert!(matches!(
            next(&mut w, 4_000).0,
            NextAction::Done {
                state: WorkflowState::Failed
            }
        ));
    }

    #[test]
    fn poweroff_ends_the_workflow_when_reported() {
        let t = parse_template(
            "w.yaml",
            "name: w\nactions:\n  - name: wipe\n    kind: wipe\n  - name: off\n    kind: poweroff\n",
        )
        .unwrap();
        let mut w = new_workflow("wf-2".into(), "node1".into(), &t, t.actions.clone(), 1_000);
        let ok = |message: &str| ReportKind::Succeeded {
            message: message.into(),
        };
        let (i, a) = run(&mut w, 2_000);
        let fx = report(&mut w, &rep(i, a, ok("wiped")), 3_000).unwrap();
        assert_eq!(
            w.state,
            WorkflowState::Running,
            "wipe does not end the agent"
        );
        assert_eq!(fx.netboot, None);
        let (i, a) = run(&mut w, 4_000);
        assert_eq!(i, 1);
        let fx = report(&mut w, &rep(i, a, ok("powering off")), 5_000).unwrap();
        assert_eq!(
            w.state,
            WorkflowState::Succeeded,
            "no phone-home to wait for"
        );
        assert_eq!(w.ended_ms, Some(5_000));
        assert_eq!(w.actions[1].state, ActionState::Succeeded);
        assert_eq!(fx.netboot, Some(false));
        assert!(fx.revoke_token);
        assert!(
            fx.events
                .iter()
                .any(|e| e.kind() == EventKind::WorkflowSucceeded)
        );
        assert!(
            !fx.events
                .iter()
                .any(|e| e.kind() == EventKind::WorkflowRebooting)
        );
        assert!(matches!(
            next(&mut w, 6_000).0,
            NextAction::Done {
                state: WorkflowState::Succeeded
            }
        ));

        // A failed poweroff retries or fails like any action.
        let mut w = new_workflow("wf-3".into(), "node1".into(), &t, t.actions.clone(), 1_000);
        let (i, a) = run(&mut w, 2_000);
        report(&mut w, &rep(i, a, ok("wiped")), 3_000).unwrap();
        let (i, a) = run(&mut w, 4_000);
        let failed = ReportKind::Failed {
            message: "no".into(),
        };
        report(&mut w, &rep(i, a, failed), 5_000).unwrap();
        assert_eq!(w.state, WorkflowState::Failed);
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_ms(1), 5_000);
        assert_eq!(backoff_ms(2), 10_000);
        assert_eq!(backoff_ms(30), 120_000);
    }
}
