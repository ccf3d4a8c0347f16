//! Runs one claimed BMC step against a machine's BMC. Every step the BMC takes
//! is reported through `note` as it happens (the caller writes it as an event).

use kiln_bmc::{Bmc, BmcError, BootDevice, BootMode, BootOverride, PowerAction, PowerState};
use kiln_model::event::EventData;

use crate::power::{PowerJob, StepFailure};

/// Reports one BMC step as an event.
pub type Note<'a> = &'a (dyn Fn(EventData) + Send + Sync);

/// A BMC error as a step's failure: retried only when trying again can help.
pub fn failure(e: BmcError) -> StepFailure {
    StepFailure {
        message: e.to_string(),
        retryable: e.kind().is_retryable(),
    }
}

/// Next boot PXE once and the machine on (cycled when it was on), confirmed by
/// the driver; or next boot from disk. Returns a one-line summary.
pub async fn run_job(
    job: PowerJob,
    bmc: &dyn Bmc,
    mode: BootMode,
    note: Note<'_>,
) -> Result<String, StepFailure> {
    // "UEFI", "legacy", or "mode unchanged" (no label: the system keeps its own).
    let mode_name = mode.to_string();
    let result = match job {
        PowerJob::Netboot { .. } => netboot(bmc, mode, &mode_name, note).await,
        PowerJob::BootDisk { .. } => {
            let boot = BootOverride {
                device: BootDevice::Disk,
                persistent: true,
                mode,
            };
            bmc.set_boot(boot)
                .await
                .map(|()| format!("next boot: disk (persistent, {mode_name})"))
        }
    };
    // A session left open costs the BMC a slot; closing is best effort.
    let _ = bmc.close().await;
    result.map_err(failure)
}

async fn netboot(
    bmc: &dyn Bmc,
    mode: BootMode,
    mode_name: &str,
    note: Note<'_>,
) -> Result<String, BmcError> {
    bmc.set_boot(BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode,
    })
    .await?;
    note(EventData::BmcBootDevice {
        device: "pxe".into(),
        persistent: false,
        mode: mode_name.to_string(),
    });
    let before = bmc.power_state().await?;
    let action = match before {
        PowerState::On => PowerAction::Cycle,
        PowerState::Off => PowerAction::On,
    };
    note(EventData::BmcPower {
        was: before.to_string(),
        sending: action.to_string(),
    });
    bmc.power(action).await?;
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

    #[tokio::test]
    async fn powers_on_an_off_machine_and_cycles_an_on_one() {
        let seen = Mutex::new(Vec::new());
        let note = |data: EventData| {
            seen.lock()
                .unwrap()
                .push(format!("{}: {data}", data.kind()))
        };
        let off = FakeBmc::default();
        let r = run_job(
            PowerJob::Netboot { attempt: 1 },
            &off,
            BootMode::Uefi,
            &note,
        )
        .await;
        assert_eq!(r.unwrap(), "was off: powered on (confirmed)");
        assert_eq!(
            *off.calls.lock().unwrap(),
            ["boot pxe false", "state", "power on"]
        );
        let on = FakeBmc::default();
        *on.on.lock().unwrap() = true;
        run_job(
            PowerJob::Netboot { attempt: 1 },
            &on,
            BootMode::Legacy,
            &note,
        )
        .await
        .unwrap();
        assert_eq!(on.calls.lock().unwrap()[2], "power cycle");
        let seen = seen.lock().unwrap();
        assert!(
            seen.contains(&"bmc.boot-device: next boot: pxe (once, UEFI)".to_string()),
            "{seen:?}"
        );
        assert!(
            seen.contains(&"bmc.power: power was on; sending cycle".to_string()),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn failures_carry_whether_a_retry_can_help() {
        let note = |_: EventData| {};
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
            let f = run_job(
                PowerJob::Netboot { attempt: 1 },
                &bmc,
                BootMode::Uefi,
                &note,
            )
            .await
            .unwrap_err();
            assert_eq!(f.retryable, retryable, "{}", f.message);
            assert!(f.message.contains("10.0.0.5"));
        }
    }

    #[tokio::test]
    async fn without_a_mode_label_the_step_says_the_mode_is_left_alone() {
        let seen = Mutex::new(Vec::new());
        let note = |data: EventData| {
            seen.lock()
                .unwrap()
                .push(format!("{}: {data}", data.kind()))
        };
        let bmc = FakeBmc::default();
        run_job(
            PowerJob::Netboot { attempt: 1 },
            &bmc,
            BootMode::Current,
            &note,
        )
        .await
        .unwrap();
        let seen = seen.lock().unwrap();
        assert!(
            seen.contains(&"bmc.boot-device: next boot: pxe (once, mode unchanged)".to_string()),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn the_end_step_points_the_machine_at_its_disk() {
        let note = |_: EventData| {};
        let bmc = FakeBmc::default();
        let r = run_job(
            PowerJob::BootDisk { attempt: 1 },
            &bmc,
            BootMode::Uefi,
            &note,
        )
        .await;
        assert!(r.unwrap().contains("disk"));
        assert_eq!(*bmc.calls.lock().unwrap(), ["boot disk true"]);
    }
}
