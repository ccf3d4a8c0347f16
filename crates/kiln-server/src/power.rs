//! `kiln serve`'s BMC loop: claims the BMC steps workflows need (power into
//! netboot, back to disk at the end) and runs them, many machines at once.

use std::sync::Arc;
use std::time::Duration;

use kiln_engine::power::StepFailure;
use kiln_engine::power_run::run_job;
use kiln_engine::{ClaimedJob, Engine};
use kiln_store::StoreHandle;
use tokio::sync::{Semaphore, watch};

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
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            let e = engine.clone();
            let jobs = match tokio::task::spawn_blocking(move || e.claim_power_jobs()).await {
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
                let (engine, store, limit) = (engine.clone(), store.clone(), Arc::clone(&limit));
                tokio::spawn(async move {
                    let _slot = limit.acquire_owned().await;
                    let outcome = run(&engine, &store, &job).await;
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
    let (events, hardware) = (engine.clone(), job.hardware.clone());
    let note = move |data: kiln_model::event::EventData| {
        // Written at once so `kiln events --follow` shows each BMC step as it happens.
        if let Err(e) = events.event(&hardware, data) {
            tracing::warn!("recording a BMC event: {e}");
        }
    };
    let result = run_job(
        job.job,
        bmc.as_ref(),
        kiln_bmc::boot_override_mode(&hw),
        &note,
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
