//! A machine's BMC, read only: reachable, credentials accepted, cipher suite or Redfish
//! version, power state, next-boot PXE override and its firmware mode. Nothing is powered or
//! changed.

use std::time::Duration;

use kiln_api::{CheckName, CheckStatus};
use kiln_bmc::{BmcError, BmcReadout, BootMode, ErrorKind};
use kiln_model::Hardware;

/// Each BMC request's bound.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole readout of one BMC: an unreachable one costs this, not the IPMI client's retries.
pub const MACHINE_TIMEOUT: Duration = Duration::from_secs(20);

pub type Row = (CheckName, CheckStatus, String);

/// The rows of one readout (or of the error that ended it). A failure stops at its stage:
/// an unreachable BMC says nothing of its credentials.
pub fn rows(outcome: Result<BmcReadout, BmcError>, wanted: BootMode) -> Vec<Row> {
    use CheckStatus::{Fail, Ok, Warn};
    let r = match outcome {
        Err(e) => {
            let detail = e.to_string();
            return match e.kind() {
                ErrorKind::Unreachable | ErrorKind::Timeout => {
                    vec![(CheckName::BmcReachable, Fail, detail)]
                }
                ErrorKind::Auth => vec![
                    (CheckName::BmcReachable, Ok, "answers".into()),
                    (CheckName::BmcCredentials, Fail, detail),
                ],
                _ => vec![
                    (CheckName::BmcReachable, Ok, "answers".into()),
                    (CheckName::BmcProtocol, Fail, detail),
                ],
            };
        }
        Result::Ok(r) => r,
    };
    let boot = match r.pxe_override {
        Some(true) => (Ok, "next boot PXE offered".to_string()),
        Some(false) => (
            Fail,
            "BootSourceOverrideTarget does not allow Pxe: the machine cannot be sent to netboot"
                .to_string(),
        ),
        None => (
            Warn,
            "the BMC lists no allowed boot targets: PXE override untested".to_string(),
        ),
    };
    let (mut status, mut detail) = boot;
    if let Some(mode) = &r.boot_mode {
        detail.push_str(&format!(", mode {mode}"));
        let reads = mode.to_ascii_lowercase();
        let differs = match wanted {
            BootMode::Uefi => reads == "legacy",
            BootMode::Legacy => reads == "uefi",
            BootMode::Current => false,
        };
        if differs && status == Ok {
            status = Warn;
            detail.push_str(&format!(
                " (the machine's kiln.dev/boot-mode label asks {wanted})"
            ));
        }
    }
    vec![
        (CheckName::BmcReachable, Ok, "answers".into()),
        (CheckName::BmcCredentials, Ok, "accepted".into()),
        (CheckName::BmcProtocol, Ok, r.protocol),
        (CheckName::PowerState, Ok, r.power.to_string()),
        (CheckName::BootOverride, status, detail),
    ]
}

/// Reads one machine's BMC within [`MACHINE_TIMEOUT`]; `hint` is what earlier calls learnt.
pub async fn check(hw: &Hardware, hint: Option<String>) -> Vec<Row> {
    let Some(endpoint) = hw.bmc.clone() else {
        return vec![(
            CheckName::BmcReachable,
            CheckStatus::Warn,
            "no bmc_ip: Kiln cannot power this machine; power it on to netboot by hand".into(),
        )];
    };
    let opts = kiln_bmc::OpenOptions {
        hint,
        request_timeout: REQUEST_TIMEOUT,
        ..kiln_bmc::OpenOptions::for_hardware(hw)
    };
    let read = async {
        let bmc = kiln_bmc::open(&endpoint, &opts).await?;
        let r = bmc.readout().await;
        let _ = bmc.close().await;
        r
    };
    let outcome = match tokio::time::timeout(MACHINE_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Err(BmcError::Unreachable {
            address: endpoint.address.clone(),
            detail: format!("no complete answer within {} s", MACHINE_TIMEOUT.as_secs()),
        }),
    };
    rows(outcome, kiln_bmc::boot_override_mode(hw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_bmc::PowerState;

    fn readout(pxe: Option<bool>, mode: Option<&str>) -> BmcReadout {
        BmcReadout {
            protocol: "IPMI cipher suite 3".into(),
            power: PowerState::Off,
            pxe_override: pxe,
            boot_mode: mode.map(str::to_string),
        }
    }

    fn statuses(rows: &[Row]) -> Vec<(CheckName, CheckStatus)> {
        rows.iter().map(|(c, s, _)| (*c, *s)).collect()
    }

    #[test]
    fn a_readable_bmc_passes_every_stage() {
        let r = rows(Ok(readout(Some(true), Some("UEFI"))), BootMode::Current);
        assert_eq!(r.len(), 5);
        assert!(r.iter().all(|(_, s, _)| *s == CheckStatus::Ok), "{r:?}");
        assert_eq!(r[2].2, "IPMI cipher suite 3");
        assert_eq!(r[3].2, "off");
        assert_eq!(r[4].2, "next boot PXE offered, mode UEFI");
    }

    #[test]
    fn boot_override_problems() {
        let r = rows(Ok(readout(Some(false), None)), BootMode::Current);
        assert_eq!(r[4].1, CheckStatus::Fail);
        let r = rows(Ok(readout(None, None)), BootMode::Current);
        assert_eq!(r[4].1, CheckStatus::Warn);
        let r = rows(Ok(readout(Some(true), Some("UEFI"))), BootMode::Legacy);
        assert_eq!(r[4].1, CheckStatus::Warn);
        assert!(r[4].2.contains("asks legacy"), "{}", r[4].2);
    }

    #[test]
    fn a_failure_stops_at_its_stage() {
        let unreachable = BmcError::Unreachable {
            address: "ipmi://10.0.0.9".into(),
            detail: "no answer".into(),
        };
        assert_eq!(
            statuses(&rows(Err(unreachable), BootMode::Current)),
            [(CheckName::BmcReachable, CheckStatus::Fail)]
        );
        let auth = BmcError::Auth {
            address: "ipmi://10.0.0.9".into(),
            detail: "RAKP 2: unauthorized name".into(),
        };
        let r = rows(Err(auth), BootMode::Current);
        assert_eq!(
            statuses(&r),
            [
                (CheckName::BmcReachable, CheckStatus::Ok),
                (CheckName::BmcCredentials, CheckStatus::Fail)
            ]
        );
        assert!(r[1].2.contains("authentication failed"), "{}", r[1].2);
    }
}
