//! `kiln cluster create|list|status|kubeconfig|delete`: cluster specs (EKS Anywhere or native)
//! become one workflow per node whose cloud-init runs kubeadm.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use kiln_api::routes::path;
use kiln_api::{
    ClusterCreateRequest, ClusterCreated, ClusterDeleteQuery, ClusterDeleted, ClusterStatus,
    MintedKubeconfig,
};

use kiln_client::follow::{follow, quietly};
use kiln_client::render::cluster as render;

use crate::Ctx;
use crate::client::{Client, ClientError};
use crate::output::{Format, WaitArgs, ended};
use crate::select::StartArgs;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Plan a cluster on enrolled machines (by label) and start installing its nodes.
    Create {
        /// EKS Anywhere multi-document YAML (Cluster, TinkerbellDatacenterConfig,
        /// TinkerbellMachineConfig) or Kiln's `kind: KilnCluster`.
        file: PathBuf,
        /// Touch nothing: write each node's user-data, meta-data and network-config
        /// under DIR/<hostname>/ (mode 0600) for review.
        #[arg(long, requires = "out_dir")]
        dry_run: bool,
        /// Where --dry-run writes.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        #[command(flatten)]
        start: StartArgs,
        #[command(flatten)]
        wait: WaitArgs,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Clusters and their state.
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Each node of a cluster: machine, role, workflow state, phone-home. Exit 1 when a node
    /// failed.
    Status {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Mint an admin kubeconfig from the cluster CA Kiln holds (kubeadm's admin.conf: user
    /// kubernetes-admin, group kubeadm:cluster-admins from Kubernetes 1.29, system:masters
    /// before; valid one year; a new key each time) and print it. Works as soon as the cluster
    /// exists; it answers once the first control plane's API server is up (`kiln cluster
    /// status` shows when it confirmed that).
    Kubeconfig {
        name: String,
        /// Write it to FILE (mode 0600, replaced atomically) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// json: the kubeconfig (unless --out) with its server, user, group and validity.
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Deprovision a cluster: a workflow per node wipes its disk and powers it off (`kiln serve`
    /// powers the machines into the agent through their BMCs); the machines are free at once.
    Delete {
        name: String,
        /// Also when node workflows are still running: they are cancelled, their disks are not
        /// wiped then; the machines are powered off through their BMCs and netboot is turned off.
        #[arg(long)]
        force: bool,
        /// Do not wipe the disks: power the machines off (BMC) and free them.
        #[arg(long)]
        keep_disks: bool,
        /// Kiln's URL as machines reach it (default: the one `kiln serve` recorded).
        #[arg(long)]
        server_url: Option<String>,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
}

/// Reads the spec and sends it; spec problems print one `FILE:LINE:COLUMN` each, as the
/// parser words them, and nothing is created.
fn send_spec(
    api: &Client,
    file: &Path,
    dry_run: bool,
    start: StartArgs,
) -> anyhow::Result<ClusterCreated> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {name}"))?;
    let req = ClusterCreateRequest {
        file_name: name,
        spec: text,
        dry_run,
        server_url: start.server_url,
        no_power: start.no_power,
    };
    match api.send::<_, ClusterCreated>("POST", &path("clusters", None, ""), &req) {
        Ok(created) => {
            for w in &created.warnings {
                eprintln!("warning: {w}");
            }
            Ok(created)
        }
        Err(ClientError::Api { status: 422, body }) if !body.details.is_empty() => {
            let lines: Vec<String> = body.details.iter().map(ToString::to_string).collect();
            bail!("{}\nkiln: no cluster was created", lines.join("\n"))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<ExitCode> {
    let api = ctx.client()?;
    match cmd {
        Command::Create {
            file,
            dry_run,
            out_dir,
            start,
            wait,
            output,
        } => {
            let created = send_spec(&api, &file, dry_run, start)?;
            if dry_run {
                let out = out_dir.expect("clap requires --out-dir with --dry-run");
                return dry_run_to(created, &out, output);
            }
            if !(wait.wait && output == Format::Json) {
                let summary = serde_json::json!({
                    "cluster": created.cluster,
                    "nodes": created.nodes,
                    "spares": created.spares,
                });
                output.print(&summary, |_| render::created(&created))?;
            }
            if wait.wait {
                return wait_for(&api, &created.cluster, wait.timeout, output);
            }
        }
        Command::List { output } => {
            let all: Vec<ClusterStatus> = api.get(&path("clusters", None, ""))?;
            output.print(&all, |a| render::list(a))?;
        }
        Command::Status { name, wait, output } => {
            if wait.wait {
                return wait_for(&api, &name, wait.timeout, output);
            }
            let st: ClusterStatus = api.get(&path("clusters", Some(&name), ""))?;
            output.print(&st, render::status)?;
            if st.state == ClusterStatus::FAILED {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Kubeconfig { name, out, output } => {
            let minted: MintedKubeconfig =
                api.get(&path("clusters", Some(&name), "/kubeconfig"))?;
            let minted = kubeconfig(minted, out.as_deref())?;
            output.print(&minted, render::kubeconfig)?;
        }
        Command::Delete {
            name,
            force,
            keep_disks,
            server_url,
            output,
        } => {
            let query = ClusterDeleteQuery {
                force,
                keep_disks,
                server_url,
            };
            let url = query.path(&name);
            let deleted: ClusterDeleted = api.delete(&url)?;
            return print_deleted(deleted, output);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `create --dry-run --out-dir DIR`: the server rendered the seeds; they are written here.
fn dry_run_to(created: ClusterCreated, out: &Path, output: Format) -> anyhow::Result<ExitCode> {
    let seeds: Vec<(String, kiln_cluster::NodeSeed)> = created
        .seeds
        .iter()
        .map(|s| {
            (
                s.hostname.clone(),
                kiln_cluster::NodeSeed {
                    user_data: s.user_data.clone(),
                    meta_data: s.meta_data.clone(),
                    network_config: s.network_config.clone(),
                },
            )
        })
        .collect();
    let files = kiln_cluster::write_seeds(out, &seeds)?;
    let summary = serde_json::json!({
        "cluster": created.cluster,
        "dry_run": true,
        "nodes": created.nodes,
        "spares": created.spares,
        "files": files,
    });
    output.print(&summary, |_| render::dry_run(&created, files.len(), out))?;
    Ok(ExitCode::SUCCESS)
}

/// `--wait`: follows the nodes' workflows (polling the API) until they end (or `timeout`),
/// then prints the cluster's status. Exit 0 when ready, 1 when a node failed, 3 when still
/// provisioning.
fn wait_for(
    api: &Client,
    name: &str,
    timeout: Option<Duration>,
    output: Format,
) -> anyhow::Result<ExitCode> {
    let st: ClusterStatus = api.get(&path("clusters", Some(name), ""))?;
    let ids: Vec<String> = st.nodes.iter().map(|n| n.workflow.clone()).collect();
    let how = match output {
        Format::Table => follow(api, &ids, timeout, false)?,
        Format::Json => quietly(api, &ids, timeout)?,
    };
    let st: ClusterStatus = api.get(&path("clusters", Some(name), ""))?;
    output.print(&st, render::status)?;
    Ok(ended(how))
}

/// A minted kubeconfig, written to `out` (0600) when asked: then it says where, not what.
fn kubeconfig(
    mut minted: MintedKubeconfig,
    out: Option<&Path>,
) -> anyhow::Result<MintedKubeconfig> {
    let text = minted
        .kubeconfig
        .take()
        .context("the server returned no kubeconfig")?;
    match out {
        Some(path) => {
            kiln_client::files::write_private(path, &text)?;
            minted.file = Some(path.display().to_string());
        }
        None => minted.kubeconfig = Some(text),
    }
    Ok(minted)
}

/// Prints what the deletion did; without a wipe, the BMC power-off rows follow as
/// `kiln bmc off` prints them (exit 1 when one failed).
fn print_deleted(mut d: ClusterDeleted, output: Format) -> anyhow::Result<ExitCode> {
    if output == Format::Json {
        let power_off = std::mem::take(&mut d.power_off);
        output.print(&d, |_| String::new())?;
        if power_off.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        return crate::bmc::print_rows(&power_off, output);
    }
    print!("{}", render::deleted(&d));
    Ok(crate::bmc::exit_code(&d.power_off))
}
