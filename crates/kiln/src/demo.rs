//! `kiln demo`: its flags and exit codes; the demo itself (the lab, and Kiln driven through
//! its admin API) is [`kiln_lab::demo`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kiln_lab::demo::{Options, Outcome, Printers};
use kiln_lab::{BmcChoice, Firmware};

#[derive(clap::Args)]
pub struct Args {
    /// Machines: the first is the control plane, the others workers (1 = a single-node,
    /// untainted cluster; 3 = one control plane and two workers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    nodes: u32,
    /// Boot files: agent-os/{vmlinuz,initrd.img} (images/agent/build.sh DIR/agent-os) and
    /// test-os/test-os.raw.zst (images/test-os/build.sh DIR/test-os); tests/demo.sh builds both.
    #[arg(long, default_value = "target/e2e-assets")]
    assets: PathBuf,
    /// Scratch directory for the lab (disks, logs, Kiln's state). Must not exist or be empty.
    /// Default: /var/tmp/kiln-demo-<pid>.
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep the scratch directory (logs, serial consoles, disks, Kiln's data dir and, once the
    /// cluster is ready, the admin kubeconfig Kiln minted: WORK/kubeconfig) at the end.
    /// Processes and the namespace are removed all the same.
    #[arg(long)]
    keep: bool,
    /// Give up (and clean up) after this long: 90s, 30m, 1h.
    #[arg(long, default_value = "30m", value_parser = crate::output::duration_arg)]
    timeout: Duration,
    /// Virtual BMCs: mixed (IPMI for the 1st, 3rd, ... machine, Redfish for the others),
    /// ipmi or redfish.
    #[arg(long, value_enum, default_value_t)]
    bmc: BmcChoice,
    /// The machines' firmware: bios (SeaBIOS) or uefi (OVMF; Debian's ovmf package).
    #[arg(long, value_enum, default_value_t)]
    firmware: Firmware,
    /// Install the machines with this workflow template instead of creating a cluster
    /// (e.g. workflows/debian-test-os.yaml: the same install, without kubeadm).
    #[arg(long)]
    template: Option<PathBuf>,
    /// Kubernetes version in the cluster spec.
    #[arg(long, default_value = "1.31")]
    kubernetes_version: String,
    /// Memory per machine, MiB.
    #[arg(long, default_value_t = 1024)]
    memory: u32,
    /// Python venv holding sushy-tools (the Redfish emulator).
    #[arg(long, env = "KILN_VENV", default_value = "/opt/kiln-venv")]
    venv: PathBuf,
    /// iPXE binaries for TFTP (Debian's ipxe package).
    #[arg(long, default_value = "/usr/lib/ipxe")]
    tftp_root: PathBuf,
    /// Also write the summary (phase times per machine) as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Once the cluster is ready, delete it (`kiln cluster delete`): every node is power
    /// cycled into the agent, its disk wiped and the machine powered off; the BMCs must then
    /// report every machine off.
    #[arg(long, conflicts_with = "template")]
    delete: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = Options {
        nodes: args.nodes,
        assets: args.assets,
        work: args.work,
        keep: args.keep,
        timeout: args.timeout,
        bmc: args.bmc,
        firmware: args.firmware,
        template: args.template,
        kubernetes_version: args.kubernetes_version,
        memory: args.memory,
        venv: args.venv,
        tftp_root: args.tftp_root,
        summary_json: args.summary_json,
        delete: args.delete,
        kiln: std::env::current_exe().context("finding the kiln executable")?,
    };
    let printers = Printers {
        workflows_created: crate::workflow::created_text,
        cluster_created: crate::cluster::created_text,
        cluster_deleted: crate::cluster::deleted_text,
    };
    Ok(match kiln_lab::demo::run(&opts, &printers)? {
        Outcome::Succeeded => ExitCode::SUCCESS,
        Outcome::Interrupted => ExitCode::from(130),
        Outcome::TimedOut => ExitCode::from(124),
        Outcome::Failed(_) => ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse() {
        assert_eq!(
            crate::output::duration_arg("30m"),
            Ok(Duration::from_secs(1800))
        );
        assert!(crate::output::duration_arg("soon").is_err());
    }
}
