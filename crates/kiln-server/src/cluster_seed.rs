//! The NoCloud seed of one cluster node, rendered on demand from the stored cluster: the
//! store keeps the spec, plan and secrets, never the rendered keys.

use kiln_cluster::{ClusterSecrets, ClusterSpec, NodeInputs, NodeSeed, Plan};
use kiln_store::ClusterRecord;

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cluster {cluster}: stored spec: {message}")]
    Spec { cluster: String, message: String },
    #[error("cluster {cluster}: stored {what}: {source}")]
    Stored {
        cluster: String,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{hostname} is not a node of cluster {cluster}")]
    NotANode { hostname: String, cluster: String },
    #[error(transparent)]
    Render(#[from] kiln_cluster::RenderError),
}

pub fn render_seed(
    cluster: &ClusterRecord,
    hostname: &str,
    instance_id: &str,
    phone_home_url: &str,
) -> Result<NodeSeed, SeedError> {
    let spec =
        ClusterSpec::parse(&cluster.spec, &cluster.spec_file).map_err(|e| SeedError::Spec {
            cluster: cluster.name.clone(),
            message: e.to_string(),
        })?;
    let stored = |what| {
        move |source| SeedError::Stored {
            cluster: cluster.name.clone(),
            what,
            source,
        }
    };
    let plan: Plan = serde_json::from_str(&cluster.plan).map_err(stored("plan"))?;
    let secrets: ClusterSecrets =
        serde_json::from_str(&cluster.secrets).map_err(stored("secrets"))?;
    let node = plan.node(hostname).ok_or_else(|| SeedError::NotANode {
        hostname: hostname.into(),
        cluster: cluster.name.clone(),
    })?;
    let inputs = NodeInputs::new(instance_id, phone_home_url);
    Ok(kiln_cluster::render_node(
        &spec, &plan, node, &secrets, &inputs,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_cluster_renders_each_node_seed() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/clusters");
        let spec_text = std::fs::read_to_string(root.join("single-node.kiln.yaml")).unwrap();
        let csv = std::fs::read_to_string(root.join("hardware.csv")).unwrap();
        let hw = kiln_model::csv::parse_hardware_csv("hardware.csv", &csv).unwrap();
        let spec = ClusterSpec::parse(&spec_text, "single-node.kiln.yaml").unwrap();
        let plan = kiln_cluster::plan(&spec, &hw).unwrap();
        let record = ClusterRecord {
            name: spec.name.clone(),
            spec_file: "single-node.kiln.yaml".into(),
            spec: spec_text,
            plan: serde_json::to_string(&plan).unwrap(),
            secrets: serde_json::to_string(&ClusterSecrets::generate().unwrap()).unwrap(),
            created_ms: 0,
        };
        let host = &plan.nodes[0].hostname;
        let seed = render_seed(
            &record,
            host,
            "wf-1",
            "http://10.77.0.1:8080/v1/phone-home/t0k",
        )
        .unwrap();
        assert!(seed.user_data.starts_with("#cloud-config"));
        assert!(
            seed.user_data.contains("taints: []"),
            "single node: untainted control plane"
        );
        assert!(
            seed.user_data.contains("https://10.77.0.11:6443/readyz"),
            "the first control plane waits for its API server"
        );
        assert!(
            !seed.user_data.contains("/kubeconfig"),
            "nothing is uploaded"
        );
        assert!(seed.meta_data.contains("wf-1"));
        let e = render_seed(&record, "not-a-node", "wf-1", "http://x").unwrap_err();
        assert!(e.to_string().contains("not a node"), "{e}");
    }
}
