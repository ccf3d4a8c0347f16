//! `kiln`: one binary from powered-off metal to a running cluster.

mod args;
mod bmc;
mod client;
mod cluster;
mod demo;
mod discovered;
mod enroll;
mod events;
mod hardware;
mod image;
mod output;
mod preflight;
mod select;
mod token;
mod why;
mod workflow;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// `kiln --version`: the crate version and the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("KILN_COMMIT"), ")");

#[derive(Parser)]
#[command(
    name = "kiln",
    version = VERSION,
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
    #[command(flatten)]
    server: client::ServerArgs,
    #[command(subcommand)]
    command: Command,
}

/// What every client command needs: where the server is and how to reach it.
pub struct Ctx {
    pub data_dir: PathBuf,
    pub server: client::ServerArgs,
}

impl Ctx {
    /// The admin API's client (found through `--server` or the local data dir).
    pub fn client(&self) -> anyhow::Result<client::Client> {
        Ok(client::Client::connect(
            &self.data_dir,
            &self.server.endpoint(),
        )?)
    }
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
    /// MACs that asked for DHCP but are not enrolled (enrol them: enroll --from-discovered).
    Discovered(discovered::Args),
    /// Why a machine is where it is: its phases, their times, what is likely wrong (exit 2).
    Why(why::Args),
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
    /// Before anything is powered: BMCs, credentials, boot override, image, artifacts,
    /// interface and other DHCP servers, checked by the server (read only).
    Preflight(preflight::Args),
    /// Run the boot services (DHCP, TFTP, HTTP) on a provisioning network.
    Serve(kiln_server::flags::ServeArgs),
    /// Admin API tokens (on the server host: reads the data dir directly).
    #[command(subcommand)]
    Token(token::Command),
    /// A whole lab on this machine: QEMU machines behind virtual BMCs become a Kubernetes
    /// cluster, live progress, phase times; everything removed at the end (root).
    Demo(kiln_lab::demo::Options),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (kiln.1 and one per subcommand) into DIR, or kiln.1 to stdout.
    Man {
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

/// `kiln completions SHELL`.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    // Into memory first: clap_complete panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kiln", &mut script);
    std::io::Write::write_all(&mut std::io::stdout(), &script)?;
    Ok(ExitCode::SUCCESS)
}

/// `kiln man [--out-dir DIR]`.
fn man(out_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let cmd = Cli::command();
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(cmd, &dir)?;
            eprintln!("manual pages written to {}", dir.display());
        }
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    // `Cli::parse()`, with `serve --config FILE` applied.
    let cli: Cli = match args::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = Ctx {
        data_dir: cli.data_dir.clone(),
        server: cli.server.clone(),
    };
    let result = match cli.command {
        Command::Enroll(args) => enroll::run(&ctx, args),
        Command::Hardware(cmd) => hardware::run(&ctx, cmd),
        Command::Token(cmd) => token::run(&cli.data_dir, cmd),
        Command::Events(args) => events::run(&ctx, args),
        Command::Why(args) => why::run(&ctx, args),
        Command::Discovered(args) => discovered::run(&ctx, args),
        Command::Cluster(cmd) => cluster::run(&ctx, cmd),
        Command::Bmc(args) => bmc::run(&ctx, args),
        Command::Preflight(args) => preflight::run(&ctx, args),
        Command::Serve(args) => kiln_server::flags::run(&cli.data_dir, args, VERSION)
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
        Command::Demo(args) => demo::run(args),
        Command::Workflow(cmd) => workflow::run(&ctx, cmd),
        Command::Image(cmd) => image::run(&ctx, cmd),
        Command::Completions { shell } => completions(shell),
        Command::Man { out_dir } => man(out_dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::FAILURE
        }
    }
}
