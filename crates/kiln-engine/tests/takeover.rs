//! Two servers' engines on one PostgreSQL store (issue 13, point 2): they never both claim a
//! machine's BMC step, and when the server running it dies, after claiming it or mid-way, the
//! other takes it over once the lease runs out and the machine is powered on exactly once.
//! The clock is passed in (`*_at`): no test waits for a lease.

use std::sync::{Arc, Mutex};

use kiln_bmc::{Bmc, BmcError, BmcInfo, BootMode, BootOverride, PowerAction, PowerState};
use kiln_engine::engine::AgentCall;
use kiln_engine::power::LEASE_MS;
use kiln_engine::power_run::{Progress, run_job};
use kiln_engine::{ClaimedJob, Engine, now_ms};
use kiln_model::EventKind;
use kiln_model::event::EventData;
use kiln_model::workflow::WorkflowState;
use kiln_store::{Durability, Location};

/// A machine's BMC in memory: its power, and every power command it received.
#[derive(Default)]
struct CountingBmc {
    on: Mutex<bool>,
    commands: Mutex<Vec<PowerAction>>,
}

#[async_trait::async_trait]
impl Bmc for CountingBmc {
    async fn identify(&self) -> Result<BmcInfo, BmcError> {
        Ok(BmcInfo::default())
    }
    async fn power_state(&self) -> Result<PowerState, BmcError> {
        Ok(if *self.on.lock().unwrap() {
            PowerState::On
        } else {
            PowerState::Off
        })
    }
    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        self.commands.lock().unwrap().push(action);
        *self.on.lock().unwrap() = action.expected_state() == PowerState::On;
        Ok(())
    }
    async fn set_boot(&self, _: BootOverride) -> Result<(), BmcError> {
        Ok(())
    }
}

/// One server's progress reports, written through its engine (on the blocking pool: the
/// PostgreSQL client blocks on a runtime of its own).
struct Server {
    engine: Engine,
    job: ClaimedJob,
}

#[async_trait::async_trait]
impl Progress for Server {
    async fn note(&self, data: EventData) {
        let (e, machine) = (self.engine.clone(), self.job.hardware.clone());
        blocking(move || e.event(&machine, data)).await.unwrap();
    }
    async fn sending(&self, action: PowerAction) -> bool {
        let (e, job) = (self.engine.clone(), self.job.clone());
        blocking(move || e.mark_power_sent(&job, &action.to_string()))
            .await
            .unwrap()
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

const CSV: &str = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
    m1,10.9.0.11,admin,pw-secret,52:54:00:00:00:01,10.0.0.11,255.255.255.0,,,,/dev/vda\n";
const TEMPLATE: &str = "name: t\nactions:\n  - name: boot\n    kind: reboot\n";

/// Two engines ("a", "b") on their own connections to one new database, and a workflow that
/// powers m1 into netboot. `None` when PostgreSQL tests are skipped.
struct Rack {
    _db: Arc<kiln_store::testing::PgCluster>,
    a: Engine,
    b: Engine,
    /// A third connection, to look at the outcome.
    store: Arc<dyn kiln_store::Store>,
    workflow: String,
}

fn two_servers() -> Option<Rack> {
    if kiln_store::testing::skip_pg() {
        eprintln!("KILN_SKIP_PG=1: PostgreSQL test skipped");
        return None;
    }
    let (cluster, url) = kiln_store::testing::fresh_database();
    let location = Location::Postgres { url };
    let open = || kiln_store::open(&location, Durability::Full).unwrap();
    let a = Engine::new(open()).with_owner("a");
    let b = Engine::new(open()).with_owner("b");
    let machines = kiln_model::csv::parse_hardware_csv("t.csv", CSV).unwrap();
    let store = open();
    store.enroll(&machines).unwrap();
    let template = kiln_model::template::parse_template("t.yaml", TEMPLATE).unwrap();
    let wf = a.create(&template, &machines, "http://k", true).unwrap();
    Some(Rack {
        _db: cluster,
        a,
        b,
        store,
        workflow: wf[0].id.clone(),
    })
}

#[test]
fn two_servers_claiming_at_once_claim_a_step_once() {
    let Some(Rack { _db, a, b, .. }) = two_servers() else {
        return;
    };
    let now = now_ms();
    let (ja, jb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.claim_power_jobs_at(now, usize::MAX).unwrap());
        let tb = s.spawn(|| b.claim_power_jobs_at(now, usize::MAX).unwrap());
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!(ja.len() + jb.len(), 1, "a: {ja:?} b: {jb:?}");
    // Neither claims it again while the lease holds.
    assert!(
        a.claim_power_jobs_at(now + LEASE_MS - 1, usize::MAX)
            .unwrap()
            .is_empty()
    );
    assert!(
        b.claim_power_jobs_at(now + LEASE_MS - 1, usize::MAX)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_server_claims_no_more_steps_than_it_can_run() {
    let Some(Rack { _db, a, b, .. }) = two_servers() else {
        return;
    };
    let now = now_ms();
    assert!(a.claim_power_jobs_at(now, 0).unwrap().is_empty());
    // What "a" has no room for stays free for "b".
    assert_eq!(b.claim_power_jobs_at(now, 1).unwrap().len(), 1);
    assert!(a.claim_power_jobs_at(now, usize::MAX).unwrap().is_empty());
}

/// `dies_after_sending`: server "a" dies right after its power command went out (before it
/// could record the outcome); otherwise right after claiming. Either way "b" finishes the step
/// and the BMC sees exactly one power command.
async fn takeover(dies_after_sending: bool) {
    let Some(rack) = blocking(two_servers).await else {
        return;
    };
    let bmc = CountingBmc::default();
    let t0 = now_ms();
    let (a, b) = (rack.a.clone(), rack.b.clone());
    let mut jobs = blocking(move || a.claim_power_jobs_at(t0, usize::MAX).unwrap()).await;
    assert_eq!(jobs.len(), 1);
    let job = jobs.remove(0);
    if dies_after_sending {
        let dying = Server {
            engine: rack.a.clone(),
            job: job.clone(),
        };
        // Its outcome is never recorded: the server is gone.
        let _ = run_job(job.job, false, &bmc, BootMode::Uefi, &dying).await;
        assert_eq!(*bmc.commands.lock().unwrap(), [PowerAction::On]);
    }
    // While a's lease holds, b takes nothing.
    let b2 = b.clone();
    let early = blocking(move || b2.claim_power_jobs_at(t0 + 1_000, usize::MAX).unwrap()).await;
    assert!(early.is_empty(), "{early:?}");
    // The lease ran out (a renews no more): b takes the step over.
    let later = now_ms() + 2 * LEASE_MS;
    let b2 = b.clone();
    let mut taken = blocking(move || b2.claim_power_jobs_at(later, usize::MAX).unwrap()).await;
    assert_eq!(taken.len(), 1);
    let taken = taken.remove(0);
    assert_eq!(taken.sent_before.is_some(), dies_after_sending);
    let progress = Server {
        engine: b.clone(),
        job: taken.clone(),
    };
    let outcome = run_job(
        taken.job,
        taken.sent_before.is_some(),
        &bmc,
        BootMode::Uefi,
        &progress,
    )
    .await;
    let b2 = b.clone();
    let done = taken.clone();
    blocking(move || b2.complete_power_job(&done, outcome))
        .await
        .unwrap();

    // One power command in all, and the workflow moved on once.
    assert_eq!(*bmc.commands.lock().unwrap(), [PowerAction::On]);
    let (store, id) = (rack.store.clone(), rack.workflow.clone());
    let (wf, events) = blocking(move || {
        let wf = store.workflow(&id).unwrap().unwrap();
        (wf, store.events(Some("m1"), 0, 100).unwrap())
    })
    .await;
    assert_eq!(wf.state, WorkflowState::Netbooting);
    assert_eq!(wf.power.start.claimed_by.as_deref(), Some("b"));
    let done: Vec<_> = events
        .iter()
        .filter(|e| e.event.kind == EventKind::BmcDone)
        .collect();
    assert_eq!(done.len(), 1, "{events:?}");
    // a comes back (it was only stalled): its claim is gone, it may not renew it.
    let a = rack.a.clone();
    let stale = job.clone();
    assert!(!blocking(move || a.renew_power_job(&stale).unwrap()).await);
}

#[tokio::test(flavor = "current_thread")]
async fn a_server_dead_after_claiming_is_taken_over_with_one_power_on() {
    takeover(false).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_server_dead_after_powering_on_is_taken_over_without_a_second_command() {
    takeover(true).await;
}

/// "a" dies right after its power-on went out, and the machine's agent calls "b" before a's
/// lease ran out: the workflow runs, and its start step, which only a pending workflow's claim
/// loop would take up again, is settled by b's claim loop once the lease ran out: done, b's,
/// with no second power command.
#[tokio::test(flavor = "current_thread")]
async fn a_dead_servers_step_is_settled_when_the_agent_called_first() {
    let Some(rack) = blocking(two_servers).await else {
        return;
    };
    let bmc = CountingBmc::default();
    let t0 = now_ms();
    let a = rack.a.clone();
    let job = blocking(move || a.claim_power_jobs_at(t0, usize::MAX).unwrap())
        .await
        .remove(0);
    let dying = Server {
        engine: rack.a.clone(),
        job: job.clone(),
    };
    let _ = run_job(job.job, false, &bmc, BootMode::Uefi, &dying).await;
    let b = rack.b.clone();
    let next = blocking(move || {
        let peer = "10.0.0.11".parse().unwrap();
        let mac = "52:54:00:00:00:01".parse().unwrap();
        let claim = b.claim(&mac, peer, "run-1", true).unwrap();
        let call = AgentCall {
            token: &claim.token,
            peer,
        };
        b.next_for(call, Some("run-1")).unwrap()
    })
    .await;
    assert!(
        matches!(next, kiln_model::workflow::NextAction::Run { .. }),
        "{next:?}"
    );
    let b = rack.b.clone();
    assert!(
        blocking(move || b.claim_power_jobs_at(t0 + 1_000, usize::MAX).unwrap())
            .await
            .is_empty()
    );
    let b = rack.b.clone();
    let later = now_ms() + 2 * LEASE_MS;
    let taken = blocking(move || b.claim_power_jobs_at(later, usize::MAX).unwrap()).await;
    assert!(taken.is_empty(), "nothing to run: {taken:?}");

    assert_eq!(*bmc.commands.lock().unwrap(), [PowerAction::On]);
    let (store, id) = (rack.store.clone(), rack.workflow.clone());
    let (wf, events) = blocking(move || {
        let wf = store.workflow(&id).unwrap().unwrap();
        (wf, store.events(Some("m1"), 0, 100).unwrap())
    })
    .await;
    assert_eq!(wf.state, WorkflowState::Running);
    assert_eq!(wf.power.start.state, kiln_model::workflow::StepState::Done);
    assert_eq!(wf.power.start.claimed_by.as_deref(), Some("b"));
    let done = events
        .iter()
        .filter(|e| e.event.kind == EventKind::BmcDone)
        .count();
    assert_eq!(done, 1, "{events:?}");
}
