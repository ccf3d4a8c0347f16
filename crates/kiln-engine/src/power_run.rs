//! Runs one claimed BMC step against a machine's BMC. Every step the BMC takes
//! is reported through [`Progress`] as it happens (the caller writes it as an event), and a
//! power command is recorded before it is sent, under the claim: a server that lost its claim
//! sends nothing, and one that takes a step over reads the power state first.

use kiln_bmc::{Bmc, BmcError, BootDevice, BootMode, BootOverride, PowerAction, PowerState};
use kiln_model::event::EventData;

use crate::power::{PowerJob, StepFailure};

/// What a running step tells the engine as it goes.
#[async_trait::async_trait]
pub trait Progress: Send + Sync {
    /// One BMC step done, written as an event.
    async fn note(&self, data: EventData);
    /// Records that `action` is about to be sent; `false` when the claim was lost (another
    /// server took the step over), and then nothing is sent.
    async fn sending(&self, action: PowerAction) -> bool;
}

/// A BMC error as a step's failure: retried only when trying again can help.
pub fn failure(e: BmcError) -> StepFailure {
    StepFailure {
        message: e.to_string(),
        retryable: e.kind().is_retryable(),
    }
}

/// Next boot PXE once and the machine on (cycled when it was on), confirmed by
/// the driver; or next boot from disk. Returns a one-line summary. `sent_before`: an earlier
/// claim of this step (a server since dead) recorded a power command.
pub async fn run_job(
    job: PowerJob,
    sent_before: bool,
    bmc: &dyn Bmc,
    mode: BootMode,
    progress: &dyn Progress,
) -> Result<String, StepFailure> {
    // "UEFI", "legacy", or "mode unchanged" (no label: the system keeps its own).
    let mode_name = mode.to_string();
    let result = match job {
        PowerJob::Netboot { .. } => netboot(bmc, mode, &mode_name, sent_before, progress).await,
        PowerJob::BootDisk { .. } => {
            let boot = BootOverride {
                device: BootDevice::Disk,
                persistent: true,
                mode,
            };
            bmc.set_boot(boot)
                .await
                .map(|()| format!("next boot: disk (persistent, {mode_name})"))
                .map_err(failure)
        }
    };
    // A session left open costs the BMC a slot; closing is best effort.
    let _ = bmc.close().await;
    result
}

async fn netboot(
    bmc: &dyn Bmc,
    mode: BootMode,
    mode_name: &str,
    sent_before: bool,
    progress: &dyn Progress,
) -> Result<String, StepFailure> {
    if sent_before && bmc.power_state().await.map_err(failure)? == PowerState::On {
        // The earlier command took (its boot override was set before it): never a second.
        return Ok("taken over: an earlier attempt had powered it on; nothing sent".into());
    }
    bmc.set_boot(BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode,
    })
    .await
    .map_err(failure)?;
    progress
        .note(EventData::BmcBootDevice {
            device: "pxe".into(),
            persistent: false,
            mode: mode_name.to_string(),
        })
        .await;
    let before = bmc.power_state().await.map_err(failure)?;
    let action = match before {
        PowerState::On => PowerAction::Cycle,
        PowerState::Off => PowerAction::On,
    };
    if !progress.sending(action).await {
        return Err(StepFailure {
            message: "the claim could not be confirmed (another server took this step over, \
                      or the store is unreachable); nothing sent"
                .into(),
            retryable: true,
        });
    }
    progress
        .note(EventData::BmcPower {
            was: before.to_string(),
            sending: action.to_string(),
        })
        .await;
    bmc.power(action).await.map_err(failure)?;
    let summary = match before {
        PowerState::On => "was on: cycled, on again (confirmed)",
        PowerState::Off => "was off: powered on (confirmed)",
    };
    Ok(summary.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_bmc::BmcInfo;
    use std::sync::Mutex;

    /// Progress in memory: the events, and whether the claim still holds.
    struct Recorder {
        seen: Mutex<Vec<String>>,
        holds: bool,
    }

    impl Recorder {
        fn new() -> Self {
            Recorder {
                seen: Mutex::new(Vec::new()),
                holds: true,
            }
        }
    }

    #[async_trait::async_trait]
    impl Progress for Recorder {
        async fn note(&self, data: EventData) {
            let line = format!("{}: {data}", data.kind());
            self.seen.lock().unwrap().push(line);
        }
        async fn sending(&self, action: PowerAction) -> bool {
            self.seen.lock().unwrap().push(format!("sending {action}"));
            self.holds
        }
    }

    /// A BMC in memory: records calls, fails on demand.
    #[derive(Default)]
    struct FakeBmc {
        on: Mutex<bool>,
        calls: Mutex<Vec<String>>,
        fail_power: Option<BmcError>,
    }

    #[async_trait::async_trait]
    impl Bmc for FakeBmc {
        async fn identify(&self) -> Result<BmcInfo, BmcError> {
            Ok(BmcInfo::default())
        }
        async fn power_state(&self) -> Result<PowerState, BmcError> {
            self.calls.lock().unwrap().push("state".into());
            Ok(if *self.on.lock().unwrap() {
                PowerState::On
            } else {
                PowerState::Off
            })
        }
        async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
            self.calls.lock().unwrap().push(format!("power {action}"));
            if let Some(e) = &self.fail_power {
                return Err(e.clone());
            }
            *self.on.lock().unwrap() = action.expected_state() == PowerState::On;
            Ok(())
        }
        async fn set_boot(&self, boot: BootOverride) -> Result<(), BmcError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("boot {} {}", boot.device, boot.persistent));
            Ok(())
        }
    }

    async fn run(
        job: PowerJob,
        sent_before: bool,
        bmc: &FakeBmc,
        mode: BootMode,
        p: &Recorder,
    ) -> Result<String, StepFailure> {
        run_job(job, sent_before, bmc, mode, p).await
    }

    const NETBOOT: PowerJob = PowerJob::Netboot { attempt: 1 };

    #[tokio::test]
    async fn powers_on_an_off_machine_and_cycles_an_on_one() {
        let p = Recorder::new();
        let off = FakeBmc::default();
        let r = run(NETBOOT, false, &off, BootMode::Uefi, &p).await;
        assert_eq!(r.unwrap(), "was off: powered on (confirmed)");
        assert_eq!(
            *off.calls.lock().unwrap(),
            ["boot pxe false", "state", "power on"]
        );
        let on = FakeBmc::default();
        *on.on.lock().unwrap() = true;
        run(NETBOOT, false, &on, BootMode::Legacy, &p)
            .await
            .unwrap();
        assert_eq!(on.calls.lock().unwrap()[2], "power cycle");
        let seen = p.seen.lock().unwrap();
        assert!(
            seen.contains(&"bmc.boot-device: next boot: pxe (once, UEFI)".to_string()),
            "{seen:?}"
        );
        assert!(
            seen.contains(&"bmc.power: power was on; sending cycle".to_string()),
            "{seen:?}"
        );
        // Each command was recorded before it went out.
        let sent: Vec<_> = seen.iter().filter(|l| l.starts_with("sending")).collect();
        assert_eq!(sent, ["sending on", "sending cycle"]);
    }

    #[tokio::test]
    async fn a_step_taken_over_reads_the_power_state_and_never_sends_twice() {
        let p = Recorder::new();
        // The dead server's "on" took effect: nothing is sent.
        let on = FakeBmc::default();
        *on.on.lock().unwrap() = true;
        let r = run(
            PowerJob::Netboot { attempt: 2 },
            true,
            &on,
            BootMode::Uefi,
            &p,
        )
        .await;
        assert!(r.unwrap().contains("nothing sent"));
        assert_eq!(*on.calls.lock().unwrap(), ["state"]);
        // It did not (the machine is still off): the step runs in full, once.
        let off = FakeBmc::default();
        run(
            PowerJob::Netboot { attempt: 2 },
            true,
            &off,
            BootMode::Uefi,
            &p,
        )
        .await
        .unwrap();
        assert_eq!(
            *off.calls.lock().unwrap(),
            ["state", "boot pxe false", "state", "power on"]
        );
    }

    #[tokio::test]
    async fn a_runner_that_lost_its_claim_sends_no_power_command() {
        let p = Recorder {
            holds: false,
            ..Recorder::new()
        };
        let bmc = FakeBmc::default();
        let f = run(NETBOOT, false, &bmc, BootMode::Uefi, &p)
            .await
            .unwrap_err();
        assert!(f.message.contains("another server"), "{}", f.message);
        assert!(
            !bmc.calls
                .lock()
                .unwrap()
                .iter()
                .any(|c| c.starts_with("power"))
        );
    }

    #[tokio::test]
    async fn failures_carry_whether_a_retry_can_help() {
        let p = Recorder::new();
        for (err, retryable) in [
            (
                BmcError::Unreachable {
                    address: "10.0.0.5".into(),
                    detail: "no answer".into(),
                },
                true,
            ),
            (
                BmcError::Auth {
                    address: "10.0.0.5".into(),
                    detail: "bad password".into(),
                },
                false,
            ),
        ] {
            let bmc = FakeBmc {
                fail_power: Some(err),
                ..FakeBmc::default()
            };
            let f = run(NETBOOT, false, &bmc, BootMode::Uefi, &p)
                .await
                .unwrap_err();
            assert_eq!(f.retryable, retryable, "{}", f.message);
            assert!(f.message.contains("10.0.0.5"));
        }
    }

    #[tokio::test]
    async fn without_a_mode_label_the_step_says_the_mode_is_left_alone() {
        let p = Recorder::new();
        let bmc = FakeBmc::default();
        run(NETBOOT, false, &bmc, BootMode::Current, &p)
            .await
            .unwrap();
        let seen = p.seen.lock().unwrap();
        assert!(
            seen.contains(&"bmc.boot-device: next boot: pxe (once, mode unchanged)".to_string()),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn the_end_step_points_the_machine_at_its_disk() {
        let p = Recorder::new();
        let bmc = FakeBmc::default();
        let r = run(
            PowerJob::BootDisk { attempt: 1 },
            false,
            &bmc,
            BootMode::Uefi,
            &p,
        )
        .await;
        assert!(r.unwrap().contains("disk"));
        assert_eq!(*bmc.calls.lock().unwrap(), ["boot disk true"]);
    }
}
