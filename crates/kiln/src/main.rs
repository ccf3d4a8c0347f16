//! `kiln`: one binary from powered-off metal to a running cluster.

mod bmc;
mod cluster;
mod demo;
mod enroll;
mod events;
mod hardware;
mod image;
mod output;
mod power;
mod provisioning;
mod select;
mod serve;
mod sink;
mod workflow;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Bare-metal provisioning: DHCP, TFTP, HTTP netboot for machines enrolled from hardware.csv"
)]
struct Cli {
    /// Directory holding Kiln's state (SQLite database, mode 0600).
    #[arg(
        long,
        global = true,
        env = "KILN_DATA_DIR",
        default_value = "/var/lib/kiln"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enrol machines from an EKS Anywhere hardware.csv (all rows or none).
    Enroll(enroll::Args),
    /// List, show and change enrolled machines.
    #[command(subcommand)]
    Hardware(hardware::Command),
    /// Show what happened to machines (DHCP, TFTP, HTTP), optionally following new events.
    Events(events::Args),
    /// Create and follow workflows (OS installs) on enrolled machines.
    #[command(subcommand)]
    Workflow(workflow::Command),
    /// Import OS images (raw, qcow2) as raw+zstd with size and sha256.
    #[command(subcommand)]
    Image(image::Command),
    /// Kubernetes clusters from enrolled machines (EKS Anywhere specs or Kiln's own).
    #[command(subcommand)]
    Cluster(cluster::Command),
    /// Power and boot control through the machines' BMCs (IPMI, Redfish), many in parallel.
    Bmc(bmc::Args),
    /// Run the boot services (DHCP, TFTP, HTTP) on a provisioning network.
    Serve(serve::Args),
    /// A whole lab on this machine: QEMU machines behind virtual BMCs become a Kubernetes
    /// cluster, live progress, phase times; everything removed at the end (root).
    Demo(demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Enroll(args) => enroll::run(&cli.data_dir, args),
        Command::Hardware(cmd) => hardware::run(&cli.data_dir, cmd),
        Command::Events(args) => events::run(&cli.data_dir, args),
        Command::Cluster(cmd) => cluster::run(&cli.data_dir, cmd),
        Command::Bmc(args) => bmc::run(&cli.data_dir, args),
        Command::Serve(args) => serve::run(&cli.data_dir, args),
        Command::Demo(args) => demo::run(args),
        Command::Workflow(cmd) => workflow::run(&cli.data_dir, cmd),
        Command::Image(cmd) => image::run(&cli.data_dir, cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::FAILURE
        }
    }
}
