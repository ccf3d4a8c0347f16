//! `kiln bmc status|on|off|cycle|reset|pxe|disk|info (NAME… | --selector k=v)`: many machines in
//! parallel, one result row each. Every change is also an event of its machine.

use kiln_model::EventKind;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use kiln_bmc::{Bmc, BmcError, BootDevice, BootOverride, ErrorKind, PowerAction};
use kiln_model::{Event, Hardware};
use kiln_store::Store;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::output::{Format, table};

/// BMCs talked to at once.
const PARALLEL: usize = 64;

#[derive(clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    op: Op,
    /// Machines by hostname.
    names: Vec<String>,
    /// Machines whose labels match every k=v given (repeatable).
    #[arg(long, conflicts_with = "names")]
    selector: Vec<String>,
    /// pxe/disk: every boot until changed (default: the next boot only).
    #[arg(long)]
    persistent: bool,
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

impl Args {
    /// `kiln bmc off NAME… [-o FORMAT]`.
    pub fn power_off(names: Vec<String>, output: Format) -> Args {
        Args {
            op: Op::Off,
            names,
            selector: Vec::new(),
            persistent: false,
            output,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Op {
    /// Power state.
    Status,
    /// Power on (confirmed).
    On,
    /// Power off, hard (confirmed).
    Off,
    /// Ask the OS to shut down (ACPI power button).
    Soft,
    /// Off then on; a machine that is off is powered on.
    Cycle,
    /// Hard reset.
    Reset,
    /// Next boot from the network.
    Pxe,
    /// Next boot from the local disk.
    Disk,
    /// Vendor, model and firmware of the BMC.
    Info,
}

#[derive(Serialize)]
struct Row {
    machine: String,
    bmc: String,
    ok: bool,
    /// on/off, or what was done.
    result: String,
    /// An identifier: unreachable | auth_failed | unsupported | bad_reply | rejected | not_confirmed
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
    /// What the driver found out for the next call (kept in the store, not printed).
    #[serde(skip)]
    hint: Option<String>,
}

/// The error class as an identifier (scripts match on it; the detail says the rest).
fn kind_name(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::Unreachable => "unreachable",
        ErrorKind::Auth => "auth_failed",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::Protocol => "bad_reply",
        ErrorKind::Rejected => "rejected",
        ErrorKind::Timeout => "not_confirmed",
    }
}

async fn apply(op: Op, bmc: &dyn Bmc, hw: &Hardware, persistent: bool) -> Result<String, BmcError> {
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
        Op::Status => Ok(bmc.power_state().await?.to_string()),
        Op::On => power(PowerAction::On).await,
        Op::Off => power(PowerAction::Off).await,
        Op::Soft => {
            bmc.power(PowerAction::SoftOff).await?;
            Ok("soft-off: now off".into())
        }
        Op::Cycle => power(PowerAction::Cycle).await,
        Op::Reset => power(PowerAction::Reset).await,
        Op::Pxe => boot(BootDevice::Pxe).await,
        Op::Disk => boot(BootDevice::Disk).await,
        Op::Info => {
            let i = bmc.identify().await?;
            let mut text = format!(
                "{} {} {} firmware {}",
                i.protocol, i.vendor, i.model, i.firmware
            );
            // Redfish: which system behind the BMC, and why that one.
            if !i.system.is_empty() {
                text.push_str(&format!("; system {}", i.system));
            }
            Ok(text)
        }
    }
}

async fn one(op: Op, hw: Hardware, persistent: bool, hint: Option<String>) -> Row {
    let Some(endpoint) = hw.bmc.clone() else {
        return Row {
            machine: hw.hostname,
            bmc: "-".into(),
            ok: false,
            result: "no BMC".into(),
            error: Some("unsupported"),
            detail: "hardware.csv gives no bmc_ip for this machine".into(),
            hint: None,
        };
    };
    let mut row = Row {
        machine: hw.hostname.clone(),
        bmc: endpoint.address.clone(),
        ok: false,
        result: String::new(),
        error: None,
        detail: String::new(),
        hint: None,
    };
    let opts = kiln_bmc::OpenOptions {
        hint,
        ..kiln_bmc::OpenOptions::for_hardware(&hw)
    };
    let outcome = match kiln_bmc::open(&endpoint, &opts).await {
        Ok(bmc) => {
            let r = apply(op, bmc.as_ref(), &hw, persistent).await;
            row.hint = bmc.hint();
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
            row.error = Some(kind_name(e.kind()));
            row.detail = e.to_string();
        }
    }
    row
}

pub fn run(data_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(data_dir)
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    let machines = crate::select::machines(store.hardware()?, &args.names, &args.selector)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (op, persistent) = (args.op, args.persistent);
    // What earlier calls learnt about each BMC (Redfish: no discovery when it still holds).
    let known: Vec<Option<String>> = machines
        .iter()
        .map(|hw| match &hw.bmc {
            Some(b) => store.bmc_hint(&hw.hostname, &b.address),
            None => Ok(None),
        })
        .collect::<Result<_, _>>()?;
    let hints = known.clone();
    let rows: Vec<Row> = rt.block_on(async move {
        let limit = Arc::new(Semaphore::new(PARALLEL));
        let tasks: Vec<_> = machines
            .into_iter()
            .zip(hints)
            .map(|(hw, hint)| {
                let limit = Arc::clone(&limit);
                tokio::spawn(async move {
                    let _slot = limit.acquire_owned().await;
                    one(op, hw, persistent, hint).await
                })
            })
            .collect();
        let mut rows = Vec::with_capacity(tasks.len());
        for t in tasks {
            rows.push(t.await.expect("a BMC task does not panic"));
        }
        rows
    });
    for (r, before) in rows.iter().zip(&known) {
        if let Some(hint) = r.hint.as_ref().filter(|h| Some(*h) != before.as_ref()) {
            store.set_bmc_hint(&r.machine, &r.bmc, hint)?;
        }
    }
    if !matches!(op, Op::Status | Op::Info) {
        let events: Vec<Event> = rows
            .iter()
            .map(|r| {
                let detail = if r.ok {
                    format!("kiln bmc {op:?}: {}", r.result).to_lowercase()
                } else {
                    format!("kiln bmc {:?} failed: {}", op, r.detail)
                };
                Event::now(
                    if r.ok {
                        EventKind::BmcDone
                    } else {
                        EventKind::BmcFailed
                    },
                    detail,
                )
                .with_machine(r.machine.clone())
            })
            .collect();
        store.append_events(&events)?;
    }
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.machine.clone(),
                        r.bmc.clone(),
                        r.result.clone(),
                        r.error.unwrap_or("").to_string(),
                        r.detail.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["MACHINE", "BMC", "RESULT", "ERROR", "DETAIL"], &cells)
            );
        }
    }
    let failed = rows.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        eprintln!("kiln: {failed} of {} machine(s) failed", rows.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
