//! `kiln hardware list|show|netboot|update|delete`. BMC passwords go in, never out.

use kiln_api::inventory::MachineInventory;
use std::process::ExitCode;

use kiln_api::HardwareUpdate;
use kiln_api::routes::path;
use kiln_model::Hardware;

use crate::Ctx;
use crate::output::Format;
use kiln_client::render::hardware as render;

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
    /// A machine's hardware inventory (what the agent found at its last netboot, and before).
    Inventory {
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
    /// Change a machine's labels or BMC credentials (its addresses change only by enrolling
    /// its hardware.csv row again).
    Update {
        name: String,
        /// Set a label (KEY=VALUE) or remove one (KEY-); repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE|KEY-")]
        labels: Vec<String>,
        #[arg(long)]
        bmc_username: Option<String>,
        /// Read the new BMC password from this file (`-`: stdin), never from the command line.
        #[arg(long, value_name = "FILE")]
        bmc_password_file: Option<std::path::PathBuf>,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Forget a machine (refused while it has an unfinished workflow or is a cluster node).
    Delete { name: String },
}

/// `KEY=VALUE` sets, `KEY-` removes.
fn label_changes(given: &[String]) -> anyhow::Result<HardwareUpdate> {
    let mut up = HardwareUpdate::default();
    for l in given {
        if let Some((k, v)) = l.split_once('=') {
            up.labels.insert(k.to_string(), Some(v.to_string()));
        } else if let Some(k) = l.strip_suffix('-') {
            up.labels.insert(k.to_string(), None);
        } else {
            anyhow::bail!("--label {l}: KEY=VALUE sets a label, KEY- removes one");
        }
    }
    Ok(up)
}

fn read_password(file: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let text = if file == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading the BMC password from stdin")?
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("reading the BMC password from {}", file.display()))?
    };
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

pub fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<ExitCode> {
    let api = ctx.client()?;
    match cmd {
        Command::List { output } => {
            let all: Vec<Hardware> = api.get(&path("hardware", None, ""))?;
            output.print(&all, |a| render::list(a))?;
        }
        Command::Show { name, output } => {
            let hw: Hardware = api.get(&path("hardware", Some(&name), ""))?;
            output.print(&hw, render::show)?;
            if output == Format::Table {
                let inv: MachineInventory =
                    api.get(&path("hardware", Some(&name), "/inventory"))?;
                print!(
                    "{}",
                    kiln_client::render::inventory::machine_inventory(&inv)
                );
            }
        }
        Command::Inventory { name, output } => {
            let inv: MachineInventory = api.get(&path("hardware", Some(&name), "/inventory"))?;
            output.print(&inv, kiln_client::render::inventory::machine_inventory)?;
        }
        Command::Netboot { name, state } => {
            let up = HardwareUpdate {
                netboot: Some(state == "on"),
                ..HardwareUpdate::default()
            };
            let _: Hardware = api.send("PATCH", &path("hardware", Some(&name), ""), &up)?;
            println!("{name}: netboot {state}");
        }
        Command::Update {
            name,
            labels,
            bmc_username,
            bmc_password_file,
            output,
        } => {
            let mut up = label_changes(&labels)?;
            up.bmc_username = bmc_username;
            up.bmc_password = bmc_password_file
                .as_deref()
                .map(read_password)
                .transpose()?;
            let hw: Hardware = api.send("PATCH", &path("hardware", Some(&name), ""), &up)?;
            output.print(&hw, render::show)?;
        }
        Command::Delete { name } => {
            let () = api.delete(&path("hardware", Some(&name), ""))?;
            println!("{name}: deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}
