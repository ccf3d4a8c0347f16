//! `/api/v1/clusters`: create (or dry-run) a cluster from a spec, list, status, the admin
//! kubeconfig, delete.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::Detail;

/// `POST /api/v1/clusters`: a cluster spec (EKS Anywhere multi-document YAML or Kiln's
/// `kind: KilnCluster`). Spec problems come back as details located `file:line:column`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ClusterCreateRequest {
    /// The spec file's name, for diagnostics (`ha.eksa.yaml:12:7: ...`).
    pub file_name: String,
    /// The spec's text.
    pub spec: String,
    /// Touch nothing: plan, render every node's seed and return them (the reply's `seeds`).
    #[serde(default)]
    pub dry_run: bool,
    /// Kiln's URL as machines reach it (default: the server's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// Do not power the machines through their BMCs.
    #[serde(default)]
    pub no_power: bool,
}

/// One machine of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlannedNodeView {
    pub hostname: String,
    pub ip: String,
    /// `control-plane (init)`, `control-plane`, `worker (md-0)`.
    pub role: String,
    /// The node's install workflow (none in a dry run).
    pub workflow: Option<String>,
}

/// A node's NoCloud seed, as a dry run renders it (user-data holds keys: keep it private).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeSeedFiles {
    pub hostname: String,
    pub user_data: String,
    pub meta_data: String,
    pub network_config: String,
}

/// What `POST /api/v1/clusters` did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterCreated {
    pub cluster: String,
    pub dry_run: bool,
    /// Control planes first, then workers by group.
    pub nodes: Vec<PlannedNodeView>,
    /// Machines the plan left out, sorted.
    pub spares: Vec<String>,
    /// Dry run only: every node's seed, in plan order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<NodeSeedFiles>,
    /// What the spec holds without effect (located like errors).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Detail>,
}

/// One node of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeStatus {
    pub hostname: String,
    /// control-plane | worker
    pub role: String,
    /// With the detail: "control-plane (init)", "worker (md-0)".
    pub role_detail: String,
    pub workflow: String,
    pub state: String,
    pub phone_home: bool,
    pub message: String,
}

/// `GET /api/v1/clusters/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    pub name: String,
    /// provisioning | ready | failed
    pub state: String,
    pub nodes: Vec<NodeStatus>,
    /// The first control plane phoned home, which it does only after its API server answered
    /// `/readyz` (verified with the cluster CA).
    pub api_server_confirmed: bool,
}

impl ClusterStatus {
    pub const FAILED: &str = "failed";
    pub const READY: &str = "ready";
    pub const PROVISIONING: &str = "provisioning";
}

/// `GET /api/v1/clusters/{name}/kubeconfig`: a freshly minted admin kubeconfig (a secret:
/// admin tokens only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MintedKubeconfig {
    pub cluster: String,
    pub server: String,
    pub user: String,
    pub group: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// Where the client wrote it (set by the CLI with `--out`; the server leaves it empty).
    pub file: Option<String>,
    /// The kubeconfig YAML (the CLI clears it once written to a file).
    pub kubeconfig: Option<String>,
}

/// `DELETE /api/v1/clusters/{name}` options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
pub struct ClusterDeleteQuery {
    /// Also when node workflows still run: they are cancelled (disks not wiped), the machines
    /// powered off through their BMCs and their netboot turned off.
    #[serde(default)]
    pub force: bool,
    /// Do not wipe the disks: power the machines off (BMC) and free them.
    #[serde(default)]
    pub keep_disks: bool,
    /// Kiln's URL as machines reach it, for the wipe workflows (default: the server's own).
    #[serde(default)]
    pub server_url: Option<String>,
}

impl ClusterDeleteQuery {
    /// `/api/v1/clusters/NAME[?force=true&keep_disks=true&server_url=URL]`.
    pub fn path(&self, name: &str) -> String {
        let mut query = vec![];
        if self.force {
            query.push("force=true".to_string());
        }
        if self.keep_disks {
            query.push("keep_disks=true".to_string());
        }
        if let Some(u) = &self.server_url {
            query.push(format!("server_url={}", crate::routes::segment(u)));
        }
        let url = crate::routes::path("clusters", Some(name), "");
        if query.is_empty() {
            url
        } else {
            format!("{url}?{}", query.join("&"))
        }
    }
}

/// What `DELETE /api/v1/clusters/{name}` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterDeleted {
    pub cluster: String,
    pub machines: Vec<String>,
    /// Node workflows still running that `force` cancelled.
    pub cancelled: Vec<String>,
    /// (machine, wipe workflow id).
    pub wipe_workflows: Vec<(String, String)>,
    /// Machines without a BMC: to be restarted by hand.
    pub no_bmc: Vec<String>,
    /// Without a wipe: the BMC power-off of each machine that has a BMC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub power_off: Vec<crate::BmcRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_options_travel_in_the_query() {
        let q = |force, keep_disks, server_url: Option<&str>| ClusterDeleteQuery {
            force,
            keep_disks,
            server_url: server_url.map(String::from),
        };
        assert_eq!(q(false, false, None).path("c1"), "/api/v1/clusters/c1");
        assert_eq!(
            q(true, true, Some("http://10.0.0.1:8080/")).path("c1"),
            "/api/v1/clusters/c1?force=true&keep_disks=true&server_url=http:%2F%2F10.0.0.1:8080%2F"
        );
    }
}
