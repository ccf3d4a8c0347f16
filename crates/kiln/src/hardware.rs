//! `kiln hardware list|show|netboot`. BMC passwords are never printed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use kiln_model::Hardware;
use kiln_store::Store;

use crate::output::{Format, table};

#[derive(clap::Subcommand)]
pub enum Command {
    /// List enrolled machines.
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Show one machine.
    Show {
        name: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Turn a machine's network boot on (boot the in-memory OS) or off (boot its disk).
    Netboot {
        name: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

fn labels(hw: &Hardware) -> String {
    hw.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.to_string()
}

pub fn run(data_dir: &Path, cmd: Command) -> anyhow::Result<ExitCode> {
    let store = Store::open(data_dir)
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    match cmd {
        Command::List { output } => {
            let all = store.hardware()?;
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                Format::Table => {
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|h| {
                            vec![
                                h.hostname.clone(),
                                h.mac.to_string(),
                                format!("{}/{}", h.ip, h.prefix_len()),
                                on_off(h.netboot),
                                h.bmc
                                    .as_ref()
                                    .map(|b| b.address.clone())
                                    .unwrap_or_else(|| "-".into()),
                                h.disk.clone(),
                                labels(h),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &["HOSTNAME", "MAC", "IP", "NETBOOT", "BMC", "DISK", "LABELS"],
                            &rows
                        )
                    );
                }
            }
        }
        Command::Show { name, output } => {
            let hw = store
                .hardware_by_name(&name)?
                .with_context(|| format!("no machine named {name:?} is enrolled"))?;
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&hw)?),
                Format::Table => {
                    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                    let ns = hw
                        .nameservers
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(",");
                    let lines = [
                        ("hostname", hw.hostname.clone()),
                        ("mac", hw.mac.to_string()),
                        (
                            "ip",
                            format!("{}/{} (netmask {})", hw.ip, hw.prefix_len(), hw.netmask),
                        ),
                        ("gateway", opt(hw.gateway.map(|g| g.to_string()))),
                        ("nameservers", if ns.is_empty() { "-".into() } else { ns }),
                        ("disk", hw.disk.clone()),
                        ("vlan", opt(hw.vlan_id.map(|v| v.to_string()))),
                        ("labels", labels(&hw)),
                        ("netboot", on_off(hw.netboot)),
                        (
                            "bmc",
                            opt(hw.bmc.as_ref().map(|b| {
                                format!("{} (user {}, password stored)", b.address, b.username)
                            })),
                        ),
                    ];
                    for (k, v) in lines {
                        println!("{k:<12} {v}");
                    }
                }
            }
        }
        Command::Netboot { name, state } => {
            store.set_netboot(&name, state == "on")?;
            println!("{name}: netboot {state}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
