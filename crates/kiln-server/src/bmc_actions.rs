//! BMC actions the admin API runs for an operator (`kiln bmc ...`, `kiln cluster delete`):
//! many machines in parallel, one row each. Every change is also an event of its machine.
//! Rows carry the error class and the driver's message, never a credential.

use kiln_api::inventory::BmcSystem;
use std::sync::Arc;

use kiln_api::{BmcOp, BmcRow};
use kiln_bmc::{Bmc, BmcError, BootDevice, BootOverride, ErrorKind, PowerAction};
use kiln_model::event::{BmcTask, EventData};
use kiln_model::{Event, Hardware};
use kiln_store::{StoreError, StoreHandle};
use tokio::sync::Semaphore;

/// BMCs talked to at once.
const PARALLEL: usize = 64;

pub use crate::select::{SelectError, select};

/// The error class as an identifier (scripts match on it; the detail says the rest).
pub(crate) fn kind_name(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::Unreachable => "unreachable",
        ErrorKind::Auth => "auth_failed",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::Protocol => "bad_reply",
        ErrorKind::Rejected => "rejected",
        ErrorKind::Timeout => "not_confirmed",
    }
}

async fn apply(
    op: BmcOp,
    bmc: &dyn Bmc,
    hw: &Hardware,
    persistent: bool,
    system: &mut Option<BmcSystem>,
) -> Result<String, BmcError> {
    let power = |a: PowerAction| async move {
        bmc.power(a).await?;
        let state = bmc.power_state().await?;
        Ok::<_, BmcError>(format!("{a}: now {state}"))
    };
    let boot = |device| async move {
        let mode = kiln_bmc::boot_override_mode(hw);
        bmc.set_boot(BootOverride {
            device,
            persistent,
            mode,
        })
        .await?;
        let when = if persistent { "persistent" } else { "once" };
        Ok::<_, BmcError>(format!("next boot: {device} ({when}, {mode})"))
    };
    match op {
        BmcOp::Status => Ok(bmc.power_state().await?.to_string()),
        BmcOp::On => power(PowerAction::On).await,
        BmcOp::Off => power(PowerAction::Off).await,
        BmcOp::Soft => {
            bmc.power(PowerAction::SoftOff).await?;
            Ok("soft-off: now off".into())
        }
        BmcOp::Cycle => power(PowerAction::Cycle).await,
        BmcOp::Reset => power(PowerAction::Reset).await,
        BmcOp::Pxe => boot(BootDevice::Pxe).await,
        BmcOp::Disk => boot(BootDevice::Disk).await,
        BmcOp::Info => {
            let i = bmc.identify().await?;
            let power = bmc.power_state().await.map(|p| p.to_string());
            let mut text = format!(
                "{} {} {} firmware {}",
                i.protocol, i.vendor, i.model, i.firmware
            );
            if !i.serial.is_empty() {
                text.push_str(&format!(", serial {}", i.serial));
            }
            // Kept with the machine's inventory (`kiln hardware show`).
            *system = Some(BmcSystem {
                manufacturer: i.vendor.clone(),
                model: i.model.clone(),
                serial: i.serial.clone(),
                power_state: power.unwrap_or_default(),
                at: kiln_api::time::rfc3339_ms(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                ),
            });
            // Redfish: which system behind the BMC, and why that one.
            if !i.system.is_empty() {
                text.push_str(&format!("; system {}", i.system));
            }
            Ok(text)
        }
    }
}

/// One machine's row, and what the driver found out for the next call (kept in the store).
async fn one(
    op: BmcOp,
    hw: Hardware,
    persistent: bool,
    hint: Option<String>,
) -> (BmcRow, Option<String>, Option<BmcSystem>) {
    let Some(endpoint) = hw.bmc.clone() else {
        let row = BmcRow {
            machine: hw.hostname,
            bmc: "-".into(),
            ok: false,
            result: "no BMC".into(),
            error: Some("unsupported".into()),
            detail: "hardware.csv gives no bmc_ip for this machine".into(),
        };
        return (row, None, None);
    };
    let mut row = BmcRow {
        machine: hw.hostname.clone(),
        bmc: endpoint.address.clone(),
        ok: false,
        result: String::new(),
        error: None,
        detail: String::new(),
    };
    let opts = kiln_bmc::OpenOptions {
        hint,
        ..kiln_bmc::OpenOptions::for_hardware(&hw)
    };
    let mut learnt = None;
    let mut system = None;
    let outcome = match crate::meters::open_bmc(&endpoint, &opts).await {
        Ok(bmc) => {
            let r = apply(op, bmc.as_ref(), &hw, persistent, &mut system).await;
            learnt = bmc.hint();
            let _ = bmc.close().await;
            r
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(result) => {
            row.ok = true;
            row.result = result;
        }
        Err(e) => {
            row.result = "error".into();
            row.error = Some(kind_name(e.kind()).into());
            row.detail = e.to_string();
        }
    }
    (row, learnt, system)
}

/// Runs `op` on every machine (at most [`PARALLEL`] at once), keeps what the drivers learnt
/// and records an event per machine for every op that changes something. Rows come back
/// in the machines' order.
pub async fn run(
    store: StoreHandle,
    op: BmcOp,
    machines: Vec<Hardware>,
    persistent: bool,
) -> Result<Vec<BmcRow>, StoreError> {
    // What earlier calls learnt about each BMC (Redfish: no discovery when it still holds).
    let keys: Vec<(String, Option<String>)> = machines
        .iter()
        .map(|h| {
            (
                h.hostname.clone(),
                h.bmc.as_ref().map(|b| b.address.clone()),
            )
        })
        .collect();
    let known: Vec<Option<String>> = store
        .run(move |lookup| {
            keys.iter()
                .map(|(host, addr)| match addr {
                    Some(a) => lookup.bmc_hint(host, a),
                    None => Ok(None),
                })
                .collect::<Result<_, StoreError>>()
        })
        .await?;
    let limit = Arc::new(Semaphore::new(PARALLEL));
    let tasks: Vec<_> = machines
        .into_iter()
        .zip(known.clone())
        .map(|(hw, hint)| {
            let limit = Arc::clone(&limit);
            tokio::spawn(async move {
                let _slot = limit.acquire_owned().await;
                one(op, hw, persistent, hint).await
            })
        })
        .collect();
    let mut done = Vec::with_capacity(tasks.len());
    for t in tasks {
        done.push(t.await.expect("a BMC task does not panic"));
    }
    store
        .run(move |store| {
            for ((row, learnt, system), before) in done.iter().zip(&known) {
                if let Some(hint) = learnt.as_ref().filter(|h| Some(*h) != before.as_ref()) {
                    store.set_bmc_hint(&row.machine, &row.bmc, hint)?;
                }
                if let Some(system) = system {
                    let json = serde_json::to_string(system).expect("BMC systems serialize");
                    store.set_machine_fact(
                        &row.machine,
                        crate::machine_inventory::FACT_BMC_SYSTEM,
                        &json,
                    )?;
                }
            }
            let rows: Vec<BmcRow> = done.into_iter().map(|(row, _, _)| row).collect();
            if !op.reads_only() {
                store.append_events(&events_of(op, &rows))?;
            }
            Ok(rows)
        })
        .await
}

/// One event per machine: `bmc.done` with the result, `bmc.failed` with the error.
fn events_of(op: BmcOp, rows: &[BmcRow]) -> Vec<Event> {
    rows.iter()
        .map(|r| {
            let task = BmcTask::Op(op);
            let data = if r.ok {
                EventData::BmcDone {
                    task,
                    result: r.result.clone(),
                }
            } else {
                EventData::BmcFailed {
                    task,
                    attempt: 1,
                    retried: false,
                    error: r.detail.clone(),
                }
            };
            Event::of(data).with_machine(r.machine.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw(name: &str, role: &str) -> Hardware {
        let csv = format!(
            "hostname,mac,ip_address,netmask,gateway,nameservers,labels,disk\n{name},52:54:00:00:00:0{},10.0.0.{},255.255.255.0,10.0.0.254,10.0.0.254,role={role},/dev/sda\n",
            name.len() % 10,
            name.len() + 10
        );
        kiln_model::csv::parse_hardware_csv("t.csv", &csv)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn machines_by_name_or_by_every_label_given() {
        let all = vec![hw("a", "cp"), hw("bb", "worker")];
        let names = |v: Vec<Hardware>| v.into_iter().map(|h| h.hostname).collect::<Vec<_>>();
        assert_eq!(
            names(select(all.clone(), &["bb".into()], &[]).unwrap()),
            ["bb"]
        );
        assert_eq!(
            names(select(all.clone(), &[], &["role=cp".into()]).unwrap()),
            ["a"]
        );
        let err = |n: &[&str], s: &[&str]| {
            let n: Vec<String> = n.iter().map(|x| x.to_string()).collect();
            let s: Vec<String> = s.iter().map(|x| x.to_string()).collect();
            select(all.clone(), &n, &s).unwrap_err().to_string()
        };
        assert_eq!(
            err(&[], &[]),
            "name at least one machine, or pass --selector k=v"
        );
        assert_eq!(err(&["zz"], &[]), "no machine named \"zz\" is enrolled");
        assert_eq!(err(&[], &["role"]), "--selector \"role\" is not k=v");
        assert_eq!(
            err(&[], &["role=cp", "rack=1"]),
            "no enrolled machine matches --selector role=cp,rack=1"
        );
    }

    #[test]
    fn changes_are_events_of_their_machines_with_the_error_text() {
        let rows = vec![
            BmcRow {
                machine: "a".into(),
                bmc: "10.0.0.9".into(),
                ok: true,
                result: "Power off: now OFF".into(),
                error: None,
                detail: String::new(),
            },
            BmcRow {
                machine: "b".into(),
                bmc: "10.0.0.8".into(),
                ok: false,
                result: "error".into(),
                error: Some("unreachable".into()),
                detail: "no answer".into(),
            },
        ];
        let ev = events_of(BmcOp::Off, &rows);
        assert_eq!(ev[0].kind, kiln_model::EventKind::BmcDone);
        assert_eq!(ev[0].detail, "kiln bmc off: power off: now off");
        assert_eq!(ev[0].machine.as_deref(), Some("a"));
        assert_eq!(ev[1].kind, kiln_model::EventKind::BmcFailed);
        assert_eq!(ev[1].detail, "kiln bmc off failed: no answer");
        assert!(matches!(
            ev[1].data,
            Some(EventData::BmcFailed { task: BmcTask::Op(BmcOp::Off), ref error, .. }) if error == "no answer"
        ));
    }
}
