//! The engine's shell: applies [`crate::machine`] transitions to workflows in
//! the store, one transaction each, effects included. Callers on async
//! runtimes use `spawn_blocking`: every call is a short SQLite transaction.

use kiln_model::event::EventData;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_model::template::{
    ImageView, RenderContext, Template, WorkflowView, parse_template, render_actions,
};
use kiln_model::workflow::{NextAction, Report, ReportKind, Workflow};
use kiln_model::{Event, Hardware, MacAddr};
use kiln_store::{Store, StoreError, WorkflowKey, WorkflowTx};

use crate::credential::{self, CredentialError};
use crate::machine::{self, Effects, ReportError};
use crate::power;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A template did not render for a machine; nothing was created.
    #[error("{hostname}: {message}")]
    Render { hostname: String, message: String },
    #[error(transparent)]
    Report(#[from] ReportError),
    /// `retry` of a workflow that has not ended (cancel it first).
    #[error("workflow {id} is {state}: only an ended workflow can be retried (cancel it first)")]
    NotEnded {
        id: String,
        state: kiln_model::workflow::WorkflowState,
    },
    /// `retry` of a workflow made before templates were kept with workflows.
    #[error("workflow {id} does not keep its template (made by an older kiln): create it again")]
    NoTemplate { id: String },
    /// The machine of a workflow is no longer enrolled.
    #[error("machine {0} is not enrolled any more")]
    NoMachine(String),
    /// A claim or call with a machine's credential that is not taken.
    #[error(transparent)]
    Credential(#[from] CredentialError),
}

/// A call made with an agent credential, and the address it came from.
#[derive(Debug, Clone, Copy)]
pub struct AgentCall<'a> {
    pub token: &'a str,
    pub peer: IpAddr,
}

/// What a claim gives the agent.
#[derive(Clone, PartialEq, Eq)]
pub struct Claim {
    pub token: String,
    pub workflow: String,
    pub hardware: String,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Claim {{ workflow: {}, token: <redacted> }}",
            self.workflow
        )
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn apply(wf: &Workflow, fx: &Effects, tx: &dyn WorkflowTx, now: u64) -> Result<(), StoreError> {
    if let Some(on) = fx.netboot {
        tx.set_netboot(&wf.hardware, on)?;
    }
    if fx.revoke_token {
        tx.revoke_token(&wf.id)?;
    }
    for data in &fx.events {
        let mut ev = Event::of(data.clone()).with_machine(wf.hardware.clone());
        ev.at_ms = now;
        tx.event(&ev)?;
    }
    Ok(())
}

/// What a report changed that the boot services must know before the agent acts on the
/// answer: a machine about to reboot into its disk must not be offered the netboot again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub machine: String,
    /// The machine's netboot flag, when the report turned it on or off.
    pub netboot: Option<bool>,
}

/// A BMC step claimed for running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub workflow: String,
    pub hardware: String,
    pub job: power::PowerJob,
    /// The power command an earlier claim of the step recorded (see [`power::sent_before`]).
    pub sent_before: Option<String>,
}

#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    /// The server this engine runs in: its claims of BMC steps carry it.
    owner: Arc<str>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Engine {
            store,
            owner: Arc::from("local"),
        }
    }

    /// The same engine, claiming BMC steps as server `owner` (its `server_id`).
    pub fn with_owner(self, owner: &str) -> Self {
        Engine {
            owner: Arc::from(owner),
            ..self
        }
    }

    /// The server whose claims this engine makes.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    #[cfg(test)]
    fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// One workflow per machine from `template`, rendered for each; all are
    /// created (and their netboot turned on) or none. With `power`, machines
    /// that have a BMC are powered into netboot by it (and back to disk at the end).
    pub fn create(
        &self,
        template: &Template,
        machines: &[Hardware],
        server_url: &str,
        power: bool,
    ) -> Result<Vec<Workflow>, EngineError> {
        let items: Vec<(&Template, &Hardware)> = machines.iter().map(|m| (template, m)).collect();
        self.create_each(&items, server_url, power, |_, _| Ok(()))
    }

    /// Like [`Engine::create`] with a template per machine; `also` runs for each new
    /// workflow inside the same transaction (a cluster records its nodes there).
    pub fn create_each(
        &self,
        items_in: &[(&Template, &Hardware)],
        server_url: &str,
        power: bool,
        also: impl FnMut(&Workflow, &dyn WorkflowTx) -> Result<(), StoreError>,
    ) -> Result<Vec<Workflow>, EngineError> {
        self.create_items(items_in, server_url, power, None, also)
    }

    fn create_items(
        &self,
        items_in: &[(&Template, &Hardware)],
        server_url: &str,
        power: bool,
        retry_of: Option<&str>,
        mut also: impl FnMut(&Workflow, &dyn WorkflowTx) -> Result<(), StoreError>,
    ) -> Result<Vec<Workflow>, EngineError> {
        let now = now_ms();
        let images: std::collections::BTreeMap<String, ImageView> = self
            .store
            .images()?
            .into_iter()
            .map(|i| {
                let url = format!("{server_url}/images/{}", i.file);
                (
                    i.name,
                    ImageView {
                        url,
                        sha256: i.sha256,
                        size: i.raw_size,
                    },
                )
            })
            .collect();
        let mut items = Vec::with_capacity(items_in.len());
        for &(template, hw) in items_in {
            let id = format!("{}-{}", hw.hostname, now);
            let ctx = RenderContext {
                hardware: hw.into(),
                server: server_url.to_string(),
                workflow: WorkflowView {
                    id: id.clone(),
                    phone_home_url: credential::phone_home_url_template(server_url, &id),
                },
                images: images.clone(),
            };
            let rendered =
                render_actions(template, &ctx).map_err(|message| EngineError::Render {
                    hostname: hw.hostname.clone(),
                    message,
                })?;
            let mut wf = machine::new_workflow(id, hw.hostname.clone(), template, rendered, now);
            wf.retry_of = retry_of.map(str::to_string);
            wf.rendered_for = Some(server_url.to_string());
            if power && hw.bmc.is_some() {
                power::plan(&mut wf);
            }
            items.push(wf);
        }
        self.store.create_workflows(&items, &mut |wf, tx| {
            tx.set_netboot(&wf.hardware, true)?;
            let mut ev = Event::of(EventData::WorkflowCreated {
                workflow: wf.id.clone(),
                template: wf.template.clone(),
                retry_of: wf.retry_of.clone(),
            });
            ev.machine = Some(wf.hardware.clone());
            tx.event(&ev)?;
            also(wf, tx)
        })?;
        Ok(items)
    }

    /// Ends an unfinished workflow at the operator's word (see [`machine::cancel`]).
    pub fn cancel(&self, id: &str, reason: &str) -> Result<Workflow, EngineError> {
        let now = now_ms();
        Ok(self.store.with_workflow(WorkflowKey::Id(id), |wf, tx| {
            match machine::cancel(wf, reason, now) {
                Ok(fx) => apply(wf, &fx, tx, now).map(|_| Ok(wf.clone())),
                Err(e) => Ok(Err(e)),
            }
        })??)
    }

    /// A new workflow on the same machine from an ended one's template, rendered afresh (new
    /// token, the machine's current record); a cluster node's record points at the new one.
    pub fn retry(&self, id: &str, server_url: &str, power: bool) -> Result<Workflow, EngineError> {
        let old = self.store.workflow(id)?.ok_or(StoreError::NoWorkflow)?;
        if !old.state.is_terminal() {
            return Err(EngineError::NotEnded {
                id: old.id,
                state: old.state,
            });
        }
        let source = old
            .template_source
            .as_deref()
            .ok_or(EngineError::NoTemplate { id: old.id.clone() })?;
        let template = parse_template(&old.template, source).map_err(|e| EngineError::Render {
            hostname: old.hardware.clone(),
            message: e.to_string(),
        })?;
        let hw = self
            .store
            .hardware_by_name(&old.hardware)?
            .ok_or_else(|| EngineError::NoMachine(old.hardware.clone()))?;
        let mut created = self.create_items(
            &[(&template, &hw)],
            server_url,
            power,
            Some(&old.id),
            |wf, tx| tx.relink_cluster_node(&old.id, &wf.id),
        )?;
        Ok(created.remove(0))
    }

    /// The agent run `run` at `peer` claims the credential of the machine with `mac` (see
    /// [`credential::claim`]). With `reserved_only`, only the machine's reserved address may.
    pub fn claim(
        &self,
        mac: &MacAddr,
        peer: IpAddr,
        run: &str,
        reserved_only: bool,
    ) -> Result<Claim, EngineError> {
        let hw = self
            .store
            .hardware_by_mac(mac)?
            .ok_or(StoreError::NoWorkflow)?;
        if reserved_only && peer != IpAddr::V4(hw.ip) {
            return Err(CredentialError::WrongPeer {
                machine: hw.hostname,
                expected: IpAddr::V4(hw.ip),
            }
            .into());
        }
        let now = now_ms();
        let token = credential::new_token();
        let hash = credential::token_hash(&token);
        let workflow =
            self.store
                .with_workflow(WorkflowKey::UnfinishedOf(&hw.hostname), |wf, tx| {
                    match credential::claim(wf, peer, run, now) {
                        Ok(fx) => {
                            tx.set_agent_token_hash(&wf.id, Some(&hash))?;
                            apply(wf, &fx, tx, now)?;
                            Ok(Ok(wf.id.clone()))
                        }
                        Err(e) => Ok(Err(e)),
                    }
                })??;
        Ok(Claim {
            token,
            workflow,
            hardware: hw.hostname,
        })
    }

    /// Runs `f` on the workflow of an agent credential, if the call's address may use it.
    fn with_agent<R>(
        &self,
        call: AgentCall<'_>,
        f: impl FnOnce(&mut Workflow, &dyn WorkflowTx) -> Result<Result<R, EngineError>, StoreError>,
    ) -> Result<R, EngineError> {
        if !credential::plausible_token(call.token) {
            return Err(StoreError::NoWorkflow.into());
        }
        let hash = credential::token_hash(call.token);
        self.store
            .with_workflow(WorkflowKey::AgentTokenHash(&hash), |wf, tx| {
                if let Err(e) = credential::check_peer(wf, call.peer) {
                    return Ok(Err(e.into()));
                }
                f(wf, tx)
            })?
    }

    /// [`machine::next_for`]: `run` names the agent process asking.
    pub fn next_for(
        &self,
        call: AgentCall<'_>,
        run: Option<&str>,
    ) -> Result<NextAction, EngineError> {
        let now = now_ms();
        self.with_agent(call, |wf, tx| {
            let (next, fx) = machine::next_for(wf, now, run);
            apply(wf, &fx, tx, now)?;
            Ok(Ok(next))
        })
    }

    pub fn report(&self, call: AgentCall<'_>, report: &Report) -> Result<Reported, EngineError> {
        let now = now_ms();
        self.with_agent(call, |wf, tx| {
            if let ReportKind::Log { lines } = &report.kind {
                let dropped = tx.log(&wf.id, report.index, report.attempt, now, lines)?;
                wf.log_lines_dropped += dropped as u64;
            }
            match machine::report(wf, report, now) {
                Ok(fx) => apply(wf, &fx, tx, now).map(|_| {
                    Ok(Reported {
                        machine: wf.hardware.clone(),
                        netboot: fx.netboot,
                    })
                }),
                // Still commit the log lines of a stale attempt.
                Err(e) => Ok(Err(e.into())),
            }
        })
    }

    /// The workflow of an agent credential (to render its seed), if the call may see it.
    pub fn agent_workflow(&self, call: AgentCall<'_>) -> Result<Workflow, EngineError> {
        self.with_agent(call, |wf, _| Ok(Ok(wf.clone())))
    }

    /// Marks the seed of the credential's workflow as handed out: the first caller only.
    pub fn take_seed(&self, call: AgentCall<'_>) -> Result<(), EngineError> {
        let now = now_ms();
        self.with_agent(call, |wf, tx| match credential::take_seed(wf, now) {
            Ok(fx) => apply(wf, &fx, tx, now).map(|_| Ok(())),
            Err(e) => Ok(Err(e.into())),
        })
    }

    /// The installed OS phoned home (its signed URL already checked by the caller).
    pub fn phone_home(&self, workflow: &str, peer: &str, payload: &str) -> Result<(), EngineError> {
        let now = now_ms();
        self.store
            .with_workflow(WorkflowKey::Id(workflow), |wf, tx| {
                if let Err(e) = machine::installed_os_may_report(wf) {
                    return Ok(Err(e));
                }
                tx.phone_home(&wf.id, now, peer, payload)?;
                match machine::phone_home(wf, now) {
                    Ok(fx) => apply(wf, &fx, tx, now).map(|_| Ok(())),
                    Err(e) => Ok(Err(e)),
                }
            })??;
        Ok(())
    }

    /// The installed OS reports that its set-up failed: the workflow fails with its last lines.
    pub fn installed_os_failed(&self, workflow: &str, log_tail: &str) -> Result<(), EngineError> {
        let now = now_ms();
        let last = log_tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("(no output)")
            .chars()
            .take(300)
            .collect::<String>();
        self.store
            .with_workflow(WorkflowKey::Id(workflow), |wf, tx| {
                if let Err(e) = machine::installed_os_may_report(wf) {
                    return Ok(Err(e));
                }
                let lines: Vec<String> = log_tail.lines().map(str::to_string).collect();
                let attempt = wf.actions.last().map_or(0, |a| a.attempts);
                let dropped = tx.log(
                    &wf.id,
                    wf.actions.len().saturating_sub(1),
                    attempt,
                    now,
                    &lines,
                )?;
                wf.log_lines_dropped += dropped as u64;
                let msg = format!("set-up in the installed OS failed: {last}");
                match machine::installed_os_failed(wf, msg, now) {
                    Ok(fx) => apply(wf, &fx, tx, now).map(|_| Ok(())),
                    Err(e) => Ok(Err(e)),
                }
            })??;
        Ok(())
    }

    /// Claims BMC steps that are due, at most `max`, one transaction per workflow.
    pub fn claim_power_jobs(&self, max: usize) -> Result<Vec<ClaimedJob>, EngineError> {
        self.claim_power_jobs_at(now_ms(), max)
    }

    /// [`Engine::claim_power_jobs`] at time `now`, at most `max` of them: a server claims only
    /// what it can run at once, so the rest stay free for another server (and need no lease
    /// renewals while they wait). A workflow another server is changing is skipped, not
    /// waited for (it is looked at again a second later). A machine's steps run one at a
    /// time, its oldest workflow's first: a new workflow's netboot waits for the step an
    /// ended one still has (its "next boot disk" would undo the netboot's PXE override).
    pub fn claim_power_jobs_at(
        &self,
        now: u64,
        max: usize,
    ) -> Result<Vec<ClaimedJob>, EngineError> {
        let mut jobs = Vec::new();
        let mut machines_seen = std::collections::HashSet::new();
        for (id, machine) in self.store.workflows_with_power_due()? {
            if jobs.len() >= max {
                break;
            }
            if !machines_seen.insert(machine) {
                continue; // an older workflow of this machine has a step to run first
            }
            let claimed = self
                .store
                .with_workflow(WorkflowKey::IdUnlessLocked(&id), |wf, tx| {
                    if let Some(done) = power::settle_overtaken(wf, now, &self.owner) {
                        let mut ev = Event::of(done).with_machine(wf.hardware.clone());
                        ev.at_ms = now;
                        tx.event(&ev)?;
                    }
                    let job = power::claim_job(wf, now, &self.owner);
                    // A step taken over after its power command went out continues the round
                    // that command started: the agent may already hold its credential.
                    let taken_over_after_power =
                        job.is_some_and(|j| power::sent_before(wf, j).is_some());
                    if matches!(job, Some(power::PowerJob::Netboot { .. }))
                        && !taken_over_after_power
                        && credential::rearm(wf)
                    {
                        // Kiln starts a netboot round: whoever claimed before it (a host that
                        // raced the machine) loses the credential.
                        tx.revoke_token(&wf.id)?;
                        let mut ev = Event::of(EventData::AgentRearmed {
                            workflow: wf.id.clone(),
                        })
                        .with_machine(wf.hardware.clone());
                        ev.at_ms = now;
                        tx.event(&ev)?;
                    }
                    Ok(job.map(|job| ClaimedJob {
                        workflow: wf.id.clone(),
                        hardware: wf.hardware.clone(),
                        job,
                        sent_before: power::sent_before(wf, job),
                    }))
                });
            match claimed {
                Ok(claimed) => jobs.extend(claimed),
                // Held by another server's transaction, or gone since listed.
                Err(StoreError::NoWorkflow) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(jobs)
    }

    /// Extends this server's claim of a running step; `false` when it was lost (taken over).
    pub fn renew_power_job(&self, claimed: &ClaimedJob) -> Result<bool, EngineError> {
        self.renew_power_job_at(claimed, now_ms())
    }

    pub fn renew_power_job_at(&self, claimed: &ClaimedJob, now: u64) -> Result<bool, EngineError> {
        Ok(self
            .store
            .with_workflow(WorkflowKey::Id(&claimed.workflow), |wf, _| {
                Ok(power::renew(wf, claimed.job, &self.owner, now))
            })?)
    }

    /// Records, committed before it is sent, that this server sends power command `action`
    /// for a claimed step; `false` when the claim was lost: nothing may be sent then.
    pub fn mark_power_sent(&self, claimed: &ClaimedJob, action: &str) -> Result<bool, EngineError> {
        let now = now_ms();
        Ok(self
            .store
            .with_workflow(WorkflowKey::Id(&claimed.workflow), |wf, _| {
                Ok(power::mark_sent(wf, claimed.job, &self.owner, action, now))
            })?)
    }

    /// Applies a BMC step's outcome (stale outcomes are ignored).
    pub fn complete_power_job(
        &self,
        claimed: &ClaimedJob,
        outcome: Result<String, power::StepFailure>,
    ) -> Result<(), EngineError> {
        let now = now_ms();
        self.store
            .with_workflow(WorkflowKey::Id(&claimed.workflow), |wf, tx| {
                let fx = power::complete(wf, claimed.job, outcome, now);
                apply(wf, &fx, tx, now)
            })?;
        Ok(())
    }

    /// An event of a machine, written now (BMC steps report as they go).
    pub fn event(&self, hardware: &str, data: EventData) -> Result<(), EngineError> {
        let ev = Event::of(data).with_machine(hardware.to_string());
        self.store.append_events(&[ev])?;
        Ok(())
    }

    /// Applies timeouts to every unfinished workflow; returns how many changed.
    pub fn tick_all(&self) -> Result<usize, EngineError> {
        let now = now_ms();
        let mut changed = 0;
        for wf in self.store.workflows(true)? {
            if !machine::timeout_due(&wf, now) {
                continue;
            }
            let did = self
                .store
                .with_workflow(WorkflowKey::Id(&wf.id), |wf, tx| {
                    let before = wf.state;
                    let fx = machine::tick(wf, now);
                    apply(wf, &fx, tx, now)?;
                    Ok(!fx.events.is_empty() || wf.state != before)
                })?;
            changed += usize::from(did);
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::EventKind;
    use kiln_model::csv::parse_hardware_csv;
    use kiln_model::template::parse_template;
    use kiln_model::workflow::WorkflowState;

    const T: &str = "name: t\nactions:\n  - name: img\n    kind: image2disk\n    with:\n      url: \"{{ server }}/i\"\n      sha256: \"0000000000000000000000000000000000000000000000000000000000000000\"\n  - name: boot\n    kind: reboot\n";

    fn setup() -> (tempfile::TempDir, Engine, Vec<Hardware>) {
        let dir = tempfile::tempdir().unwrap();
        let store = kiln_store::open_sqlite(dir.path()).unwrap();
        let hw = parse_hardware_csv(
            "t.csv",
            "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
             n1,,,,52:54:00:00:00:01,10.0.0.11,255.255.255.0,,,,/dev/vda\n",
        )
        .unwrap();
        store.enroll(&hw).unwrap();
        (dir, Engine::new(store), hw)
    }

    const N1: &str = "10.0.0.11";

    /// n1's agent claims its credential from its own address.
    fn claim(engine: &Engine) -> String {
        let mac = "52:54:00:00:00:01".parse().unwrap();
        engine
            .claim(&mac, N1.parse().unwrap(), "boot-1", true)
            .unwrap()
            .token
    }

    fn call(token: &str) -> AgentCall<'_> {
        AgentCall {
            token,
            peer: N1.parse().unwrap(),
        }
    }

    /// Whether the test machine n1 is set to boot from the network.
    fn netboot(engine: &Engine) -> bool {
        engine
            .store()
            .hardware_by_name("n1")
            .unwrap()
            .unwrap()
            .netboot
    }

    #[test]
    fn a_machines_bmc_steps_run_one_at_a_time_its_older_workflows_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = kiln_store::open_sqlite(dir.path()).unwrap();
        let hw = parse_hardware_csv(
            "t.csv",
            "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
             n1,10.9.0.11,admin,pw,52:54:00:00:00:01,10.0.0.11,255.255.255.0,,,,/dev/vda\n",
        )
        .unwrap();
        store.enroll(&hw).unwrap();
        let engine = Engine::new(store.clone());
        let t = parse_template("t.yaml", T).unwrap();
        // An installed machine: its workflow ended, "next boot disk" still to run.
        let old = engine.create(&t, &hw, "http://k", true).unwrap().remove(0);
        store
            .with_workflow(WorkflowKey::Id(&old.id), |wf, _| {
                wf.state = WorkflowState::Succeeded;
                wf.power.start.state = kiln_model::workflow::StepState::Done;
                wf.power.finish.state = kiln_model::workflow::StepState::Pending;
                Ok(())
            })
            .unwrap();
        // A new workflow (a wipe, say) is created before that step ran.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let new = engine.create(&t, &hw, "http://k", true).unwrap().remove(0);
        let jobs = engine.claim_power_jobs(usize::MAX).unwrap();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0].workflow, old.id);
        assert!(matches!(jobs[0].job, power::PowerJob::BootDisk { .. }));
        // While it runs, the new workflow's netboot waits.
        assert!(engine.claim_power_jobs(usize::MAX).unwrap().is_empty());
        engine
            .complete_power_job(&jobs[0], Ok("next boot disk".into()))
            .unwrap();
        let jobs = engine.claim_power_jobs(usize::MAX).unwrap();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0].workflow, new.id);
        assert!(matches!(jobs[0].job, power::PowerJob::Netboot { .. }));
    }

    #[test]
    fn a_workflow_survives_reopening_the_store_at_every_step() {
        let (dir, engine, hw) = setup();
        let t = parse_template("t.yaml", T).unwrap();
        let wf = engine
            .create(&t, &hw, "http://10.0.0.1:8080", true)
            .unwrap()
            .remove(0);
        assert!(netboot(&engine), "netboot on at creation");
        assert!(matches!(
            engine.create(&t, &hw, "x", true),
            Err(EngineError::Store(StoreError::Busy { .. }))
        ));
        let token = claim(&engine);

        // Each step on a fresh Store, as after a crash and restart.
        let reopen = || Engine::new(kiln_store::open_sqlite(dir.path()).unwrap());
        let NextAction::Run {
            index,
            attempt,
            action,
        } = reopen().next_for(call(&token), None).unwrap()
        else {
            panic!()
        };
        assert_eq!(action.params["url"], "http://10.0.0.1:8080/i");
        let report = |index, attempt, kind| {
            reopen()
                .report(
                    call(&token),
                    &Report {
                        index,
                        attempt,
                        kind,
                    },
                )
                .unwrap()
        };
        let log = ReportKind::Log {
            lines: vec!["hello".into()],
        };
        assert_eq!(
            report(index, attempt, log).netboot,
            None,
            "a log line leaves netboot"
        );
        let written = ReportKind::Succeeded {
            message: "written".into(),
        };
        report(index, attempt, written);
        let NextAction::Run { index, attempt, .. } = reopen().next_for(call(&token), None).unwrap()
        else {
            panic!()
        };
        let rebooted = ReportKind::Succeeded {
            message: String::new(),
        };
        let reported = report(index, attempt, rebooted);
        assert_eq!(
            reported,
            Reported {
                machine: "n1".into(),
                netboot: Some(false),
            },
            "the boot services are told before the agent reboots"
        );
        assert!(!netboot(&reopen()), "netboot off after reboot");
        reopen()
            .phone_home(&wf.id, "10.0.0.11", "hostname=n1")
            .unwrap();

        let e = reopen();
        let done = e.store().workflow(&wf.id).unwrap().unwrap();
        assert_eq!(done.state, WorkflowState::Succeeded);
        assert_eq!(
            e.store().action_logs(&wf.id, 0, 10).unwrap()[0].line,
            "hello"
        );
        assert_eq!(
            e.store().phone_home_of(&wf.id).unwrap().unwrap().peer,
            "10.0.0.11"
        );
        // The credential is revoked.
        assert!(matches!(
            e.next_for(call(&token), None),
            Err(EngineError::Store(StoreError::NoWorkflow))
        ));
        let kinds = event_kinds(&e);
        assert!(kinds.contains(&EventKind::WorkflowSucceeded), "{kinds:?}");
    }

    /// T with its image URL replaced by the phone-home URL (signed when handed out).
    fn phone_home_template() -> Template {
        parse_template(
            "t.yaml",
            &T.replace("{{ server }}/i", "{{ workflow.phone_home_url }}"),
        )
        .unwrap()
    }

    fn event_kinds(engine: &Engine) -> Vec<EventKind> {
        engine
            .store()
            .events(Some("n1"), 0, 100)
            .unwrap()
            .into_iter()
            .map(|r| r.event.kind)
            .collect()
    }

    #[test]
    fn the_stored_phone_home_url_holds_no_signature() {
        let (_dir, engine, hw) = setup();
        let t = phone_home_template();
        let wf = engine.create(&t, &hw, "http://k", true).unwrap().remove(0);
        assert_eq!(
            wf.actions[0].spec.params["url"],
            format!(
                "http://k/v1/phone-home/{}/{}",
                wf.id,
                kiln_model::workflow::PHONE_HOME_SIGNATURE_MARKER
            )
        );
    }

    #[test]
    fn a_second_claimant_is_refused_and_calls_are_bound_to_the_claiming_address() {
        let (_dir, engine, hw) = setup();
        let t = parse_template("t.yaml", T).unwrap();
        engine.create(&t, &hw, "http://k", false).unwrap();
        let mac = "52:54:00:00:00:01".parse().unwrap();
        // Reservation mode: only n1's address may claim.
        assert!(matches!(
            engine.claim(&mac, "10.0.0.99".parse().unwrap(), "x-1", true),
            Err(EngineError::Credential(CredentialError::WrongPeer { .. }))
        ));
        let token = claim(&engine);
        assert!(matches!(
            engine.claim(&mac, N1.parse().unwrap(), "boot-2", true),
            Err(EngineError::Credential(
                CredentialError::AlreadyClaimed { .. }
            ))
        ));
        let stolen = AgentCall {
            token: &token,
            peer: "10.0.0.99".parse().unwrap(),
        };
        assert!(matches!(
            engine.next_for(stolen, None),
            Err(EngineError::Credential(CredentialError::WrongPeer { .. }))
        ));
        assert!(engine.next_for(call(&token), None).is_ok());
        // Nothing but the hash is stored.
        let db = std::fs::read(_dir.path().join(kiln_store::DB_FILE)).unwrap();
        let has = |needle: &str| db.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(!has(&token));
        // The seed leaves once.
        assert!(engine.take_seed(call(&token)).is_ok());
        assert!(matches!(
            engine.take_seed(call(&token)),
            Err(EngineError::Credential(CredentialError::SeedServed { .. }))
        ));
        let kinds = event_kinds(&engine);
        assert!(kinds.contains(&EventKind::AgentClaimed), "{kinds:?}");
    }

    #[test]
    fn cancel_frees_the_machine_and_retry_renders_a_new_workflow() {
        let (_dir, engine, hw) = setup();
        let t = phone_home_template();
        let first = engine.create(&t, &hw, "http://k", true).unwrap().remove(0);
        let old_token = claim(&engine);
        // Retrying an unfinished workflow is refused; cancelling ends it at once.
        assert!(matches!(
            engine.retry(&first.id, "http://k", true),
            Err(EngineError::NotEnded { .. })
        ));
        let cancelled = engine.cancel(&first.id, "operator").unwrap();
        assert_eq!(cancelled.state, WorkflowState::Failed);
        assert!(
            cancelled.message.contains("cancelled"),
            "{}",
            cancelled.message
        );
        assert!(!netboot(&engine), "netboot off once cancelled");
        assert!(engine.next_for(call(&old_token), None).is_err());
        assert!(matches!(
            engine.cancel(&first.id, "again"),
            Err(EngineError::Report(ReportError::Ended(
                WorkflowState::Failed
            )))
        ));
        // The machine is free: a retry makes a new workflow with a new token, rendered afresh.
        let second = engine.retry(&first.id, "http://k", true).unwrap();
        assert_ne!(second.id, first.id);
        assert_eq!(second.retry_of.as_deref(), Some(first.id.as_str()));
        assert_eq!(second.state, WorkflowState::Pending);
        let new_token = claim(&engine);
        assert_ne!(new_token, old_token);
        assert!(second.actions[0].spec.params["url"].contains(&second.id));
        assert!(netboot(&engine), "netboot on for the retry");
        let kinds = event_kinds(&engine);
        assert!(kinds.contains(&EventKind::WorkflowCancelled), "{kinds:?}");
    }

    #[test]
    fn stored_logs_are_bounded_and_what_was_dropped_is_noted() {
        let (_dir, engine, hw) = setup();
        let t = parse_template("t.yaml", T).unwrap();
        let wf = engine.create(&t, &hw, "http://k", false).unwrap().remove(0);
        let token = claim(&engine);
        let NextAction::Run { index, attempt, .. } = engine.next_for(call(&token), None).unwrap()
        else {
            panic!()
        };
        let max = kiln_store::MAX_LOG_LINES as usize;
        let mut lines: Vec<String> = (0..max + 5).map(|i| format!("line {i}")).collect();
        lines.push("y".repeat(3 * kiln_store::MAX_LOG_LINE_BYTES));
        let log = ReportKind::Log { lines };
        engine
            .report(
                call(&token),
                &Report {
                    index,
                    attempt,
                    kind: log,
                },
            )
            .unwrap();
        let stored = engine.store().action_logs(&wf.id, 0, 100_000).unwrap();
        assert_eq!(stored.len(), max, "the newest are kept");
        assert_eq!(stored[0].line, "line 6", "the oldest went first");
        let long = &stored.last().unwrap().line;
        assert!(
            long.len() < kiln_store::MAX_LOG_LINE_BYTES + 64,
            "{}",
            long.len()
        );
        assert!(long.ends_with(" bytes cut]"), "the cut is said");
        let wf = engine.store().workflow(&wf.id).unwrap().unwrap();
        assert_eq!(wf.log_lines_dropped, 6);
    }

    #[test]
    fn render_failure_creates_nothing() {
        let (_dir, engine, hw) = setup();
        let t = parse_template("t.yaml", &T.replace("{{ server }}", "{{ nope }}")).unwrap();
        assert!(matches!(
            engine.create(&t, &hw, "x", true),
            Err(EngineError::Render { .. })
        ));
        assert!(engine.store().workflows(false).unwrap().is_empty());
        assert!(!netboot(&engine));
    }
}
