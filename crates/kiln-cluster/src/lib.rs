//! Cluster specs to per-node cloud-init (kubeadm init/join, PKI, bootstrap token, static network).
//!
//! ```text
//! ClusterSpec::parse(text, file)   EKS Anywhere's Cluster + Tinkerbell*Config documents, or a KilnCluster
//! plan(&spec, &hardware)           which machine is which control plane / worker; the rest are spares
//! ClusterSecrets::generate()       CAs, service-account key, bootstrap token (store them, 0600)
//! admin_kubeconfig(..)            the admin kubeconfig, minted from the cluster CA (new key each time)
//! render_node(..)                  one node's user-data, meta-data, network-config
//! dry_run(&spec, &hardware, dir)   all of it, into DIR/<hostname>/
//! ```
//!
//! Pure except `dry_run` (and the system clock and random generator in `generate`, the
//! random generator in `admin_kubeconfig`).

mod dryrun;
mod eksa;
#[cfg(test)]
mod kubeadm_fields;
mod kubeconfig;
mod native;
mod plan;
mod render;
mod secrets;
mod spec;
mod yaml;

pub use dryrun::{DRY_RUN_PHONE_HOME, DryRun, DryRunError, dry_run, render_dry_run, write_seeds};
pub use eksa::API_VERSION as EKSA_API_VERSION;
pub use kubeconfig::{
    ADMIN_CERT_VALIDITY, ADMIN_USER, AdminKubeconfig, CLUSTER_ADMINS_GROUP, SYSTEM_MASTERS_GROUP,
    admin_group, admin_kubeconfig, api_server_url,
};
pub use native::API_VERSION as NATIVE_API_VERSION;
pub use plan::{Plan, PlanError, PlannedNode, Role, Shortage, plan};
pub use render::{
    API_SERVER_READY_LINE, BOOTSTRAP_LOG_PATH, BOOTSTRAP_SCRIPT_PATH, CNI_HOOK_PATH, CRI_SOCKET,
    INIT_CONFIG_PATH, JOIN_CONFIG_PATH, KUBE_VIP_IMAGE, KUBE_VIP_MANIFEST_PATH, NodeInputs,
    NodeSeed, READYZ_ATTEMPTS, READYZ_INTERVAL_SECS, RenderError, render_node,
};
pub use secrets::{CaPem, ClusterSecrets, SecretText, SecretsError, is_bootstrap_token};
pub use spec::{
    ClusterSpec, Cni, ControlPlaneSpec, Diagnostic, Ipv4Cidr, KubernetesVersion, MachineSpec,
    NetworkSpec, OsFamily, ParsedSpec, SpecError, SpecErrors, Taint, TaintEffect, UserSpec,
    WorkerGroupSpec,
};
