//! `kiln serve`'s BMC loop: claims the BMC steps workflows need (power into
//! netboot, back to disk at the end) and runs them, many machines at once.

use std::sync::Arc;
use std::time::Duration;

use kiln_engine::power::{RENEW_MS, StepFailure};
use kiln_engine::power_run::{Progress, run_job};
use kiln_engine::{ClaimedJob, Engine};
use kiln_store::StoreHandle;
use tokio::sync::{Notify, Semaphore, watch};

/// BMCs talked to at once.
const PARALLEL: usize = 64;

/// `store` is where the runner reads each machine's BMC and keeps what calls learn of it.
pub fn spawn(
    engine: Engine,
    store: StoreHandle,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let limit = Arc::new(Semaphore::new(PARALLEL));
        // A step that ends frees a slot: look for more at once, not at the next tick.
        let freed = Arc::new(Notify::new());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = freed.notified() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            // Only as many as can run now: the rest stay free for another server.
            let free = limit.available_permits();
            if free == 0 {
                continue;
            }
            let e = engine.clone();
            let jobs = match tokio::task::spawn_blocking(move || e.claim_power_jobs(free)).await {
                Ok(Ok(jobs)) => jobs,
                Ok(Err(err)) => {
                    tracing::warn!("claiming BMC steps: {err}");
                    continue;
                }
                Err(err) => {
                    tracing::warn!("claiming BMC steps: {err}");
                    continue;
                }
            };
            for job in jobs {
                // This loop alone takes slots, and claimed no more than were free.
                let Ok(slot) = Arc::clone(&limit).try_acquire_owned() else {
                    break;
                };
                let (engine, store, freed) = (engine.clone(), store.clone(), Arc::clone(&freed));
                tokio::spawn(async move {
                    // Dropped in reverse: the slot is given back before the loop is woken.
                    let _wake = NotifyOnDrop(freed);
                    let _slot = slot;
                    // The claim is renewed from now on.
                    let Some(outcome) = run_renewing(&engine, &store, &job).await else {
                        tracing::warn!(machine = %job.hardware, "BMC step's claim lapsed (not renewed within its lease): taken over by a server, maybe this one");
                        return;
                    };
                    if let Err(err) = outcome.as_ref() {
                        tracing::warn!(machine = %job.hardware, "BMC step failed: {}", err.message);
                    }
                    let e = engine.clone();
                    let done =
                        tokio::task::spawn_blocking(move || e.complete_power_job(&job, outcome))
                            .await;
                    if let Ok(Err(err)) = done {
                        tracing::warn!("recording a BMC step: {err}");
                    }
                });
            }
        }
    })
}

/// Wakes the claiming loop when a step's task ends, however it ends.
struct NotifyOnDrop(Arc<Notify>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// Runs a claimed step, renewing its claim every [`RENEW_MS`] meanwhile. `None` when the claim
/// was lost (this server stalled past its lease and another took the step over): the step is
/// dropped where it stands, and its outcome is not this server's to record.
async fn run_renewing(
    engine: &Engine,
    store: &StoreHandle,
    job: &ClaimedJob,
) -> Option<Result<String, StepFailure>> {
    let work = run(engine, store, job);
    tokio::pin!(work);
    let mut renew = tokio::time::interval(Duration::from_millis(RENEW_MS));
    renew.tick().await;
    loop {
        tokio::select! {
            outcome = &mut work => return Some(outcome),
            _ = renew.tick() => {
                let (e, j) = (engine.clone(), job.clone());
                match tokio::task::spawn_blocking(move || e.renew_power_job(&j)).await {
                    Ok(Ok(false)) => return None,
                    Ok(Ok(true)) => {}
                    // The store is unreachable: keep going; the fence before any power command
                    // still holds.
                    Ok(Err(err)) => tracing::warn!("renewing a BMC step's claim: {err}"),
                    Err(err) => tracing::warn!("renewing a BMC step's claim: {err}"),
                }
            }
        }
    }
}

/// What a running step reports, written through the engine on the blocking pool (the
/// PostgreSQL client must not block a runtime thread).
struct StepProgress {
    engine: Engine,
    job: ClaimedJob,
}

#[async_trait::async_trait]
impl Progress for StepProgress {
    async fn note(&self, data: kiln_model::event::EventData) {
        let (e, machine) = (self.engine.clone(), self.job.hardware.clone());
        // Written at once so `kiln events --follow` shows each BMC step as it happens.
        match tokio::task::spawn_blocking(move || e.event(&machine, data)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!("recording a BMC event: {err}"),
            Err(err) => tracing::warn!("recording a BMC event: {err}"),
        }
    }

    async fn sending(&self, action: kiln_bmc::PowerAction) -> bool {
        let (e, job) = (self.engine.clone(), self.job.clone());
        match tokio::task::spawn_blocking(move || e.mark_power_sent(&job, &action.to_string()))
            .await
        {
            Ok(Ok(held)) => held,
            // Not recorded: sending anyway could double a command another server also sends.
            Ok(Err(err)) => {
                tracing::warn!("recording a power command before sending it: {err}");
                false
            }
            Err(_) => false,
        }
    }
}

/// One claimed step: the machine's BMC from the store, then the step.
async fn run(
    engine: &Engine,
    store: &StoreHandle,
    job: &ClaimedJob,
) -> Result<String, StepFailure> {
    let name = job.hardware.clone();
    // The machine and what the last call learnt about its BMC (Redfish: where the system is,
    // how to log in), in one trip to the store.
    let (hw, hint) = store
        .run(move |store| {
            let hw = store.hardware_by_name(&name)?;
            let hint = match hw.as_ref().and_then(|h| h.bmc.as_ref()) {
                Some(b) => store.bmc_hint(&name, &b.address)?,
                None => None,
            };
            Ok::<_, kiln_store::StoreError>((hw, hint))
        })
        .await
        .map_err(|e| StepFailure {
            message: e.to_string(),
            retryable: true,
        })?;
    let hw = hw.ok_or_else(|| StepFailure {
        message: format!("machine {} is no longer enrolled", job.hardware),
        retryable: false,
    })?;
    let endpoint = hw.bmc.clone().ok_or_else(|| StepFailure {
        message: "the machine has no BMC in hardware.csv any more".into(),
        retryable: false,
    })?;
    let opts = kiln_bmc::OpenOptions {
        hint: hint.clone(),
        ..kiln_bmc::OpenOptions::for_hardware(&hw)
    };
    let bmc = crate::meters::open_bmc(&endpoint, &opts)
        .await
        .map_err(kiln_engine::power_run::failure)?;
    let progress = StepProgress {
        engine: engine.clone(),
        job: job.clone(),
    };
    let result = run_job(
        job.job,
        job.sent_before.is_some(),
        bmc.as_ref(),
        kiln_bmc::boot_override_mode(&hw),
        &progress,
    )
    .await;
    if let Some(learnt) = bmc.hint().filter(|h| Some(h) != hint.as_ref()) {
        let saved = store
            .run(move |store| store.set_bmc_hint(&hw.hostname, &endpoint.address, &learnt))
            .await;
        if let Err(e) = saved {
            tracing::warn!("keeping what the BMC call learnt: {e}");
        }
    }
    result
}
