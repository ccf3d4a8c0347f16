//! The BMC steps of a workflow, as pure transitions (no clock, no I/O), like
//! [`crate::machine`]: claim a step, then apply its outcome.
//!
//! A step is claimed with a lease. If the server dies mid-step, the lease runs out and the step is
//! claimed again; the runner then re-reads the power state before acting, so nothing is applied twice.

use kiln_model::event::{BmcTask, EventData};
use kiln_model::workflow::{PowerStep, StepState, Workflow, WorkflowState};

use crate::machine::{Effects, finish_workflow};

/// Attempts per step before it fails (the first one included).
pub const ATTEMPTS: u32 = 5;
/// How long a claim holds without renewal. The server running a step renews it every
/// [`RENEW_MS`] (a slow BMC's power cycle may take minutes), so a dead server's step is free
/// again at most `LEASE_MS` after its last renewal; another server's claim loop (every second)
/// takes it then: the takeover bound is `LEASE_MS` + 1 s + one store round trip, under 30 s.
pub const LEASE_MS: u64 = 20_000;
/// How often the server running a step renews its claim.
pub const RENEW_MS: u64 = 5_000;

/// Which step a claimed job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerJob {
    /// Next boot PXE once, then on (or cycle if on), confirmed.
    Netboot { attempt: u32 },
    /// Next boot from disk.
    BootDisk { attempt: u32 },
}

/// A failed attempt: the message (never holding a password) and whether
/// trying again can help (unreachable, timeout) or not (bad credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub message: String,
    pub retryable: bool,
}

/// Delay before attempt `attempt + 1`: 2 s, 4 s, 8 s, 16 s … at most 1 min.
pub fn backoff_ms(attempt: u32) -> u64 {
    (2_000u64 << attempt.saturating_sub(1).min(5)).min(60_000)
}

/// A new workflow on a machine with a BMC: power it into netboot first.
pub fn plan(wf: &mut Workflow) {
    wf.power.start = PowerStep {
        state: StepState::Pending,
        ..PowerStep::default()
    };
}

fn due(step: &PowerStep, now: u64) -> bool {
    match step.state {
        StepState::Pending => step.next_at_ms.is_none_or(|t| t <= now),
        StepState::Running => step.claimed_until_ms.is_none_or(|t| t <= now),
        _ => false,
    }
}

fn claim(step: &mut PowerStep, now: u64, owner: &str) -> u32 {
    step.state = StepState::Running;
    step.attempts += 1;
    step.claimed_until_ms = Some(now + LEASE_MS);
    step.claimed_by = Some(owner.to_string());
    step.next_at_ms = None;
    step.attempts
}

/// The step to run now, if any, claimed by server `owner`.
pub fn claim_job(wf: &mut Workflow, now: u64, owner: &str) -> Option<PowerJob> {
    if wf.state.is_terminal() {
        if due(&wf.power.finish, now) {
            return Some(PowerJob::BootDisk {
                attempt: claim(&mut wf.power.finish, now, owner),
            });
        }
    } else if wf.state == WorkflowState::Pending && due(&wf.power.start, now) {
        return Some(PowerJob::Netboot {
            attempt: claim(&mut wf.power.start, now, owner),
        });
    }
    None
}

fn step_of(wf: &mut Workflow, job: PowerJob) -> (&mut PowerStep, u32) {
    match job {
        PowerJob::Netboot { attempt } => (&mut wf.power.start, attempt),
        PowerJob::BootDisk { attempt } => (&mut wf.power.finish, attempt),
    }
}

/// The power command an earlier claim of this step recorded before sending it, if any: the
/// runner then reads the power state and sends nothing when it is already what was asked.
pub fn sent_before(wf: &Workflow, job: PowerJob) -> Option<String> {
    let step = match job {
        PowerJob::Netboot { .. } => &wf.power.start,
        PowerJob::BootDisk { .. } => &wf.power.finish,
    };
    step.power_sent.clone()
}

/// Whether `owner` still holds `job`'s claim (nobody claimed the step since).
fn holds(step: &PowerStep, attempt: u32, owner: &str) -> bool {
    step.state == StepState::Running
        && step.attempts == attempt
        && step.claimed_by.as_deref() == Some(owner)
}

/// Extends `owner`'s claim of `job`; `false` when the claim was lost (taken over after it ran
/// out): the runner must stop and send nothing more.
pub fn renew(wf: &mut Workflow, job: PowerJob, owner: &str, now: u64) -> bool {
    let (step, attempt) = step_of(wf, job);
    if !holds(step, attempt, owner) {
        return false;
    }
    step.claimed_until_ms = Some(now + LEASE_MS);
    true
}

/// Records, before it goes to the BMC, that `owner` sends power command `action` for `job`
/// (and renews the claim). `false` when the claim was lost: then nothing may be sent.
pub fn mark_sent(wf: &mut Workflow, job: PowerJob, owner: &str, action: &str, now: u64) -> bool {
    if !renew(wf, job, owner, now) {
        return false;
    }
    step_of(wf, job).0.power_sent = Some(action.to_string());
    true
}

/// Applies the outcome of a claimed job. A stale outcome (the step was
/// re-claimed, or the workflow moved on) is ignored.
pub fn complete(
    wf: &mut Workflow,
    job: PowerJob,
    outcome: Result<String, StepFailure>,
    now: u64,
) -> Effects {
    let mut fx = Effects::default();
    let (step, attempt) = step_of(wf, job);
    if step.state != StepState::Running || step.attempts != attempt {
        return fx;
    }
    step.claimed_until_ms = None;
    let task = match job {
        PowerJob::Netboot { .. } => BmcTask::Netboot,
        PowerJob::BootDisk { .. } => BmcTask::BootDisk,
    };
    match outcome {
        Ok(message) => {
            step.state = StepState::Done;
            step.message = message.clone();
            fx.event(EventData::BmcDone {
                task,
                result: message,
            });
            if matches!(job, PowerJob::Netboot { .. }) && wf.state == WorkflowState::Pending {
                wf.state = WorkflowState::Netbooting;
                wf.updated_ms = now;
                fx.event(crate::machine::entered(
                    wf,
                    WorkflowState::Pending,
                    "powered on by its BMC; netbooting",
                ));
            }
        }
        Err(failure) => {
            step.message = failure.message.clone();
            if failure.retryable && attempt < ATTEMPTS {
                let wait = backoff_ms(attempt);
                step.state = StepState::Pending;
                step.next_at_ms = Some(now + wait);
                fx.event(EventData::BmcRetrying {
                    task,
                    attempt,
                    attempts: ATTEMPTS,
                    error: failure.message,
                    retry_in_s: wait / 1000,
                });
            } else {
                step.state = StepState::Failed;
                let failed = EventData::BmcFailed {
                    task,
                    attempt,
                    retried: failure.retryable,
                    error: failure.message.clone(),
                };
                fx.event(failed);
                if matches!(job, PowerJob::Netboot { .. }) && !wf.state.is_terminal() {
                    let tries = if failure.retryable {
                        format!("after {attempt} attempts")
                    } else {
                        "(not retried)".to_string()
                    };
                    let what = "power on into netboot";
                    let msg = format!("BMC: {what} failed {tries}: {}", failure.message);
                    finish_workflow(wf, WorkflowState::Failed, msg, now, &mut fx);
                }
            }
        }
    }
    fx
}

/// The machine fetched its netboot script before kiln powered it (it was
/// already booting): do not cycle it under its own feet.
pub fn netbooted_on_its_own(wf: &mut Workflow) -> bool {
    if wf.power.start.state == StepState::Pending {
        wf.power.start.state = StepState::Done;
        wf.power.start.message = "the machine netbooted before its BMC was used".into();
        return true;
    }
    false
}

/// A start step whose claim ran out after the workflow went on without it: its server died
/// mid-step, yet the machine's agent called (the power-on took, the machine netbooted), so
/// nothing is left to send. The step is done, recorded as `owner`'s, who found it so; its
/// event is returned. Without this the step would stay claimed by a dead server for good: only a
/// pending workflow's start step is claimed again.
pub fn settle_overtaken(wf: &mut Workflow, now: u64, owner: &str) -> Option<EventData> {
    let step = &mut wf.power.start;
    if wf.state == WorkflowState::Pending || step.state != StepState::Running || !due(step, now) {
        return None;
    }
    step.state = StepState::Done;
    step.claimed_until_ms = None;
    step.claimed_by = Some(owner.to_string());
    step.message = "taken over: the machine's agent had called (it netbooted); nothing sent".into();
    Some(EventData::BmcDone {
        task: BmcTask::Netboot,
        result: step.message.clone(),
    })
}

/// A start step that has not run (nor been claimed) is not needed any more: the workflow
/// ends before the BMC was used, so neither it nor the finish step runs.
pub fn drop_unstarted(wf: &mut Workflow, why: &str) {
    if wf.power.start.state == StepState::Pending {
        wf.power.start.state = StepState::NotNeeded;
        wf.power.start.message = why.to_string();
    }
}

/// Called when a workflow ends: machines kiln powered go back to their disks.
pub fn on_finish(wf: &mut Workflow) {
    if wf.power.start.state != StepState::NotNeeded && wf.power.finish.state == StepState::NotNeeded
    {
        wf.power.finish = PowerStep {
            state: StepState::Pending,
            ..PowerStep::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine;
    use kiln_model::EventKind;
    use kiln_model::template::parse_template;

    const OWNER: &str = "s1";
    const T: &str = "name: t\ntimeout: 1h\nactions:\n  - name: boot\n    kind: reboot\n";

    fn wf() -> Workflow {
        let t = parse_template("t.yaml", T).unwrap();
        let rendered = t.actions.clone();
        let mut wf = machine::new_workflow("w".into(), "m1".into(), &t, rendered, 0);
        plan(&mut wf);
        wf
    }

    fn fail(retryable: bool) -> Result<String, StepFailure> {
        Err(StepFailure {
            message: "no answer".into(),
            retryable,
        })
    }

    #[test]
    fn powered_on_then_netbooting() {
        let mut w = wf();
        let job = claim_job(&mut w, 10, OWNER).unwrap();
        assert_eq!(job, PowerJob::Netboot { attempt: 1 });
        assert_eq!(claim_job(&mut w, 11, OWNER), None, "claimed once");
        let fx = complete(&mut w, job, Ok("was off; powered on".into()), 20);
        assert_eq!(w.state, WorkflowState::Netbooting);
        assert_eq!(w.power.start.state, StepState::Done);
        assert!(
            fx.events
                .iter()
                .any(|e| e.kind() == EventKind::WorkflowNetbooting)
        );
    }

    #[test]
    fn retryable_failures_back_off_then_fail_the_workflow() {
        let mut w = wf();
        let mut now = 0;
        for attempt in 1..=ATTEMPTS {
            let job = claim_job(&mut w, now, OWNER).expect("due");
            assert_eq!(job, PowerJob::Netboot { attempt });
            assert_eq!(claim_job(&mut w, now, OWNER), None);
            complete(&mut w, job, fail(true), now);
            if attempt < ATTEMPTS {
                assert_eq!(w.power.start.state, StepState::Pending);
                assert_eq!(
                    claim_job(&mut w, now + backoff_ms(attempt) - 1, OWNER),
                    None
                );
                now += backoff_ms(attempt);
            }
        }
        assert_eq!(w.state, WorkflowState::Failed);
        assert!(w.message.contains("after 5 attempts"), "{}", w.message);
        assert!(w.message.contains("no answer"));
        // The workflow ended: the disk step is due, and netboot is off.
        assert_eq!(w.power.finish.state, StepState::Pending);
        assert!(matches!(
            claim_job(&mut w, now, OWNER),
            Some(PowerJob::BootDisk { attempt: 1 })
        ));
    }

    #[test]
    fn bad_credentials_fail_at_once() {
        let mut w = wf();
        let job = claim_job(&mut w, 0, OWNER).unwrap();
        let fx = complete(&mut w, job, fail(false), 0);
        assert_eq!(w.state, WorkflowState::Failed);
        assert_eq!(w.power.start.attempts, 1);
        assert!(
            fx.events
                .iter()
                .any(|e| matches!(e, EventData::BmcFailed { retried: false, .. }))
        );
    }

    #[test]
    fn a_dead_servers_start_step_is_settled_once_the_agent_called() {
        let mut w = wf();
        let dead = claim_job(&mut w, 0, "dead").unwrap();
        assert!(mark_sent(&mut w, dead, "dead", "on", 1));
        // Its server is gone; the machine came up anyway and its agent called first.
        machine::next(&mut w, 2);
        assert_eq!(w.state, WorkflowState::Running);
        assert_eq!(w.power.start.state, StepState::Running, "still claimed");
        assert_eq!(claim_job(&mut w, LEASE_MS + 1, OWNER), None, "not pending");
        assert_eq!(
            settle_overtaken(&mut w, LEASE_MS, OWNER),
            None,
            "claim still held"
        );
        let ev = settle_overtaken(&mut w, LEASE_MS + 1, OWNER).expect("settled");
        assert!(matches!(
            ev,
            EventData::BmcDone {
                task: BmcTask::Netboot,
                ..
            }
        ));
        assert_eq!(w.power.start.state, StepState::Done);
        assert_eq!(w.power.start.claimed_by.as_deref(), Some(OWNER));
        assert_eq!(settle_overtaken(&mut w, LEASE_MS + 2, OWNER), None, "once");
        // The dead server's late outcome changes nothing, and no power command goes out.
        assert!(
            complete(&mut w, dead, Ok("late".into()), LEASE_MS + 3)
                .events
                .is_empty()
        );
        assert!(!mark_sent(&mut w, dead, "dead", "cycle", LEASE_MS + 3));
        assert_eq!(w.state, WorkflowState::Running);
    }

    #[test]
    fn a_pending_workflows_lost_claim_is_claimed_not_settled() {
        let mut w = wf();
        claim_job(&mut w, 0, "dead").unwrap();
        assert_eq!(settle_overtaken(&mut w, LEASE_MS, OWNER), None);
        assert!(claim_job(&mut w, LEASE_MS, OWNER).is_some());
    }

    #[test]
    fn a_lost_claim_is_taken_up_again_and_late_outcomes_are_ignored() {
        let mut w = wf();
        let first = claim_job(&mut w, 0, OWNER).unwrap();
        assert_eq!(claim_job(&mut w, LEASE_MS - 1, OWNER), None);
        let second = claim_job(&mut w, LEASE_MS, OWNER).unwrap();
        assert_eq!(second, PowerJob::Netboot { attempt: 2 });
        // The first runner's late answer changes nothing.
        let fx = complete(&mut w, first, Ok("late".into()), LEASE_MS + 1);
        assert!(fx.events.is_empty());
        assert_eq!(w.state, WorkflowState::Pending);
        complete(&mut w, second, Ok("on".into()), LEASE_MS + 2);
        assert_eq!(w.state, WorkflowState::Netbooting);
    }

    #[test]
    fn a_claim_taken_over_is_lost_to_its_first_owner_and_keeps_what_was_sent() {
        let mut w = wf();
        let first = claim_job(&mut w, 0, "s1").unwrap();
        assert_eq!(w.power.start.claimed_by.as_deref(), Some("s1"));
        // Renewed while running: not free when the first lease would have run out.
        assert!(renew(&mut w, first, "s1", LEASE_MS - 1));
        assert_eq!(claim_job(&mut w, LEASE_MS, "s2"), None);
        assert!(mark_sent(&mut w, first, "s1", "on", LEASE_MS));
        assert!(!renew(&mut w, first, "s2", LEASE_MS), "not s2's claim");
        // s1 dies: two leases later, s2 takes the step, and learns a command went out.
        let second = claim_job(&mut w, 3 * LEASE_MS, "s2").unwrap();
        assert_eq!(second, PowerJob::Netboot { attempt: 2 });
        assert_eq!(sent_before(&w, second).as_deref(), Some("on"));
        // s1 comes back (it was only stalled): it may neither renew nor send.
        assert!(!renew(&mut w, first, "s1", 3 * LEASE_MS));
        assert!(!mark_sent(&mut w, first, "s1", "cycle", 3 * LEASE_MS));
        assert_eq!(w.power.start.power_sent.as_deref(), Some("on"));
        assert!(mark_sent(&mut w, second, "s2", "on", 3 * LEASE_MS));
    }

    #[test]
    fn machines_without_a_bmc_have_no_jobs() {
        let t = parse_template("t.yaml", T).unwrap();
        let mut w = machine::new_workflow("w".into(), "m1".into(), &t, t.actions.clone(), 0);
        assert_eq!(claim_job(&mut w, 0, OWNER), None);
        on_finish(&mut w);
        w.state = WorkflowState::Succeeded;
        assert_eq!(claim_job(&mut w, 0, OWNER), None);
    }

    #[test]
    fn a_machine_that_netbooted_by_itself_is_not_cycled() {
        let mut w = wf();
        assert!(netbooted_on_its_own(&mut w));
        assert_eq!(claim_job(&mut w, 0, OWNER), None);
    }
}
