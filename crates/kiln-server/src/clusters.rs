//! Clusters: a spec (EKS Anywhere or native) becomes one workflow per node whose cloud-init
//! runs kubeadm; status from the nodes' workflows and phone-homes; the admin kubeconfig minted
//! from the stored CA; deletion (wipe the disks, or power off). The admin API's handlers
//! call these from blocking tasks.

use std::time::{SystemTime, UNIX_EPOCH};

use kiln_api::{
    ClusterCreateRequest, ClusterCreated, ClusterDeleteQuery, ClusterDeleted, ClusterStatus,
    Detail, MintedKubeconfig, NodeSeedFiles, NodeStatus, PlannedNodeView,
};
use kiln_cluster::{ClusterSecrets, ClusterSpec, Diagnostic, Plan, Role};
use kiln_engine::{Engine, EngineError};
use kiln_model::Hardware;
use kiln_model::template::{Template, parse_template};
use kiln_model::workflow::{Workflow, WorkflowState};
use kiln_store::{ClusterNode, ClusterRecord, Store, StoreError};

/// What `DELETE /api/v1/clusters/{name}` runs on each node: wipe the disk, power off.
const WIPE_TEMPLATE: &str = include_str!("../../../workflows/wipe-disk.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The spec file's problems, each located `file:line:column`.
    #[error("{} problem(s) in {file}; no cluster was created", .errors.len())]
    Spec { file: String, errors: Vec<Detail> },
    #[error("no cluster named {0:?}")]
    NotFound(String),
    #[error("a cluster named {0:?} exists already (kiln cluster delete {0} first)")]
    Exists(String),
    /// Nodes still installing and no `force`.
    #[error("cluster {cluster}: nodes {} are still being installed (pass --force to delete anyway)", .nodes.join(", "))]
    Busy { cluster: String, nodes: Vec<String> },
    /// The spec cannot be placed or installed as it stands (machines, images).
    #[error("{0}")]
    Unplaceable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Stored data or built-in parts that do not work: a bug or a damaged store.
    #[error("{0}")]
    Internal(String),
}

fn diagnostic(d: Diagnostic) -> Detail {
    Detail {
        file: Some(d.file),
        line: Some(d.line as u64),
        column: Some(d.column as u64),
        field: (!d.field.is_empty()).then_some(d.field),
        message: d.message,
    }
}

/// Parses a spec; errors and warnings located `file:line:column`.
fn parse_spec(file: &str, text: &str) -> Result<(ClusterSpec, Vec<Detail>), ClusterError> {
    match ClusterSpec::parse_with_warnings(text, file) {
        Ok(parsed) => Ok((
            parsed.spec,
            parsed.warnings.into_iter().map(diagnostic).collect(),
        )),
        Err(errors) => Err(ClusterError::Spec {
            file: file.to_string(),
            errors: errors.0.into_iter().map(diagnostic).collect(),
        }),
    }
}

fn imported_list(imported: &[String]) -> String {
    if imported.is_empty() {
        "none yet".to_string()
    } else {
        imported.join(", ")
    }
}

/// An OS image named in a spec, as the server resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ImageRef {
    /// An imported image, by name.
    Imported(String),
    /// An http(s) URL with the sha256 it must have.
    Url { url: String, sha256: String },
}

/// Resolves a spec's image: an imported image by name (or by an EKS Anywhere URL's file
/// name), or a URL with `#sha256=HEX`.
pub(crate) fn image_ref(url: Option<&str>, imported: &[String]) -> Result<ImageRef, String> {
    let Some(url) = url else {
        return Err(format!(
            "the spec names no OS image (TinkerbellDatacenterConfig osImageURL, or `image:`): name an image imported with `kiln image import` ({})",
            imported_list(imported)
        ));
    };
    if imported.iter().any(|i| i == url) {
        return Ok(ImageRef::Imported(url.to_string()));
    }
    if let Some((u, sha)) = url.split_once("#sha256=")
        && (u.starts_with("http://") || u.starts_with("https://"))
    {
        return Ok(ImageRef::Url {
            url: u.to_string(),
            sha256: sha.to_string(),
        });
    }
    // An EKS Anywhere URL whose file name, less format suffixes, is an imported image's
    // name, as `kiln image import URL` names it (ubuntu-2204-kube-v1.30.gz: ubuntu-2204-kube-v1.30).
    let stem = kiln_api::images::default_name(url);
    if imported.contains(&stem) {
        return Ok(ImageRef::Imported(stem));
    }
    Err(format!(
        "OS image {url:?}: not an imported image ({}); import it with `kiln image import FILE --name NAME` and name it, or give a URL with #sha256=<hex>",
        imported_list(imported)
    ))
}

/// An image for image2disk: template expressions for an imported image, or the URL and digest.
fn image_exprs(url: Option<&str>, imported: &[String]) -> Result<(String, String), String> {
    Ok(match image_ref(url, imported)? {
        ImageRef::Imported(name) => (
            format!("{{{{ images[\"{name}\"].url }}}}"),
            format!("{{{{ images[\"{name}\"].sha256 }}}}"),
        ),
        ImageRef::Url { url, sha256 } => (url, sha256),
    })
}

fn node_template(
    cluster: &str,
    image: (String, String),
    overwrite_always: bool,
) -> Result<Template, ClusterError> {
    let (url, sha) = image;
    let overwrite = if overwrite_always {
        "\n      overwrite: always"
    } else {
        ""
    };
    let text = format!(
        "name: kiln-cluster-{cluster}\ntimeout: 90m\nactions:\n  - name: stream-image\n    kind: image2disk\n    timeout: 60m\n    retries: 2\n    with:\n      url: '{url}'\n      sha256: '{sha}'{overwrite}\n  - name: seed-cloud-init\n    kind: cloud-init\n    timeout: 2m\n    retries: 2\n  - name: reboot\n    kind: reboot\n    timeout: 2m\n"
    );
    parse_template("cluster node template", &text).map_err(|e| {
        ClusterError::Unplaceable(
            e.0.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })
}

/// How a node's role reads in tables and in the store.
pub fn role_name(role: &Role) -> String {
    match role {
        Role::ControlPlane { first: true } => "control-plane (init)".into(),
        Role::ControlPlane { first: false } => "control-plane".into(),
        Role::Worker { group } => format!("worker ({group})"),
    }
}

/// What a preflight checks of a spec: the machines it would be placed on, each with the
/// image its node would be written with (unresolved), and the spec's warnings.
pub(crate) fn preflight_targets(
    store: &dyn Store,
    file: &str,
    text: &str,
) -> Result<Vec<(Hardware, Option<String>)>, ClusterError> {
    let (spec, _) = parse_spec(file, text)?;
    let plan = kiln_cluster::plan(&spec, &free_machines(store)?)
        .map_err(|e| ClusterError::Unplaceable(e.to_string()))?;
    Ok(plan
        .nodes
        .iter()
        .map(|n| {
            let machine = match &n.role {
                Role::ControlPlane { .. } => Some(&spec.control_plane.machine),
                Role::Worker { group } => spec
                    .worker_groups
                    .iter()
                    .find(|g| &g.name == group)
                    .map(|g| &g.machine),
            };
            let image = machine.and_then(|m| m.image_url.clone());
            (n.hardware.clone(), image)
        })
        .collect())
}

/// Machines not in any cluster yet.
fn free_machines(store: &dyn Store) -> Result<Vec<Hardware>, StoreError> {
    let taken = store.clustered_machines()?;
    Ok(store
        .hardware()?
        .into_iter()
        .filter(|h| !taken.contains(&h.hostname))
        .collect())
}

fn plan_views(plan: &Plan, created: &[Workflow]) -> Vec<PlannedNodeView> {
    plan.nodes
        .iter()
        .map(|n| PlannedNodeView {
            hostname: n.hostname.clone(),
            ip: n.hardware.ip.to_string(),
            role: role_name(&n.role),
            workflow: created
                .iter()
                .find(|w| w.hardware == n.hostname)
                .map(|w| w.id.clone()),
        })
        .collect()
}

/// A dry run: the plan and every node's seed, nothing stored.
fn dry_run(
    store: &dyn Store,
    spec: ClusterSpec,
    warnings: Vec<Detail>,
) -> Result<ClusterCreated, ClusterError> {
    let (plan, seeds) = kiln_cluster::render_dry_run(&spec, &free_machines(store)?)
        .map_err(|e| ClusterError::Unplaceable(e.to_string()))?;
    Ok(ClusterCreated {
        cluster: spec.name.clone(),
        dry_run: true,
        nodes: plan_views(&plan, &[]),
        spares: plan.spares.clone(),
        seeds: seeds
            .into_iter()
            .map(|(hostname, s)| NodeSeedFiles {
                hostname,
                user_data: s.user_data,
                meta_data: s.meta_data,
                network_config: s.network_config,
            })
            .collect(),
        warnings,
    })
}

/// One install template per node, in plan order (control planes and worker groups may name
/// different images).
fn node_templates(
    spec: &ClusterSpec,
    plan: &Plan,
    imported: &[String],
) -> Result<Vec<Template>, ClusterError> {
    let mut templates = Vec::new();
    for node in &plan.nodes {
        let machine = match &node.role {
            Role::ControlPlane { .. } => &spec.control_plane.machine,
            Role::Worker { group } => {
                &spec
                    .worker_groups
                    .iter()
                    .find(|g| &g.name == group)
                    .ok_or_else(|| {
                        ClusterError::Internal(format!(
                            "the plan names worker group {group}, which the spec lacks"
                        ))
                    })?
                    .machine
            }
        };
        let image = image_exprs(machine.image_url.as_deref(), imported)
            .map_err(|e| ClusterError::Unplaceable(format!("node {}: {e}", node.hostname)))?;
        templates.push(node_template(&spec.name, image, spec.overwrite_always)?);
    }
    Ok(templates)
}

/// `POST /api/v1/clusters`: plans the cluster on free machines and creates one workflow per
/// node, all or none; with `dry_run`, renders every node's seed and touches nothing.
pub fn create(
    store: &dyn Store,
    engine: &Engine,
    default_server_url: &str,
    req: ClusterCreateRequest,
) -> Result<ClusterCreated, ClusterError> {
    let (spec, warnings) = parse_spec(&req.file_name, &req.spec)?;
    if req.dry_run {
        return dry_run(store, spec, warnings);
    }
    if store.cluster(&spec.name)?.is_some() {
        return Err(ClusterError::Exists(spec.name));
    }
    let plan = kiln_cluster::plan(&spec, &free_machines(store)?)
        .map_err(|e| ClusterError::Unplaceable(e.to_string()))?;
    let server_url = req.server_url.as_deref().unwrap_or(default_server_url);
    let imported: Vec<String> = store.images()?.into_iter().map(|i| i.name).collect();
    let templates = node_templates(&spec, &plan, &imported)?;
    let secrets = ClusterSecrets::generate().map_err(|e| ClusterError::Internal(e.to_string()))?;
    let json = |what: &str, r: serde_json::Result<String>| {
        r.map_err(|e| ClusterError::Internal(format!("{what}: {e}")))
    };
    let record = ClusterRecord {
        name: spec.name.clone(),
        spec_file: req.file_name,
        spec: req.spec,
        plan: json("plan", serde_json::to_string(&plan))?,
        secrets: json("secrets", serde_json::to_string(&secrets))?,
        created_ms: kiln_engine::now_ms(),
    };
    let items: Vec<_> = templates
        .iter()
        .zip(&plan.nodes)
        .map(|(t, n)| (t, &n.hardware))
        .collect();
    let mut first = true;
    let created = engine.create_each(
        &items,
        server_url.trim_end_matches('/'),
        !req.no_power,
        |wf, tx| {
            if std::mem::take(&mut first) {
                tx.insert_cluster(&record)?;
            }
            let role = plan
                .node(&wf.hardware)
                .map_or_else(|| "?".into(), |n| role_name(&n.role));
            tx.insert_cluster_node(&ClusterNode {
                cluster: record.name.clone(),
                hostname: wf.hardware.clone(),
                role,
                workflow: wf.id.clone(),
            })
        },
    )?;
    Ok(ClusterCreated {
        cluster: spec.name,
        dry_run: false,
        nodes: plan_views(&plan, &created),
        spares: plan.spares,
        seeds: Vec::new(),
        warnings,
    })
}

fn record(store: &dyn Store, name: &str) -> Result<ClusterRecord, ClusterError> {
    store
        .cluster(name)?
        .ok_or_else(|| ClusterError::NotFound(name.to_string()))
}

/// Every cluster's status.
pub fn list(store: &dyn Store) -> Result<Vec<ClusterStatus>, ClusterError> {
    store
        .clusters()?
        .iter()
        .map(|c| status_of(store, c))
        .collect()
}

/// One cluster's status (its nodes' workflows are `GET /api/v1/workflows/{id}`).
pub fn status(store: &dyn Store, name: &str) -> Result<ClusterStatus, ClusterError> {
    status_of(store, &record(store, name)?)
}

fn status_of(store: &dyn Store, c: &ClusterRecord) -> Result<ClusterStatus, ClusterError> {
    let mut nodes = Vec::new();
    for n in store.cluster_nodes(&c.name)? {
        let wf = store.workflow(&n.workflow)?;
        let phoned = store.phone_home_of(&n.workflow)?.is_some();
        nodes.push(NodeStatus {
            hostname: n.hostname,
            role: n.role.split(' ').next().unwrap_or_default().to_string(),
            role_detail: n.role,
            state: wf
                .as_ref()
                .map_or("unknown".into(), |w| w.state.to_string()),
            message: wf.map(|w| w.message).unwrap_or_default(),
            workflow: n.workflow,
            phone_home: phoned,
        });
    }
    let ended_badly = nodes.iter().any(|n| {
        n.state == WorkflowState::Failed.name() || n.state == WorkflowState::TimedOut.name()
    });
    let all_done = nodes
        .iter()
        .all(|n| n.state == WorkflowState::Succeeded.name());
    let init = role_name(&Role::ControlPlane { first: true });
    let api_server_confirmed = nodes.iter().any(|n| n.role_detail == init && n.phone_home);
    Ok(ClusterStatus {
        name: c.name.clone(),
        state: if ended_badly {
            ClusterStatus::FAILED
        } else if all_done {
            ClusterStatus::READY
        } else {
            ClusterStatus::PROVISIONING
        }
        .into(),
        nodes,
        api_server_confirmed,
    })
}

/// A new admin kubeconfig from the stored cluster CA (a new key each time).
pub fn kubeconfig(store: &dyn Store, name: &str) -> Result<MintedKubeconfig, ClusterError> {
    let c = record(store, name)?;
    let spec = ClusterSpec::parse(&c.spec, &c.spec_file)
        .map_err(|e| ClusterError::Internal(format!("stored spec: {e}")))?;
    let secrets: ClusterSecrets = serde_json::from_str(&c.secrets)
        .map_err(|e| ClusterError::Internal(format!("stored secrets: {e}")))?;
    let admin =
        kiln_cluster::admin_kubeconfig(&spec, &secrets, SystemTime::now()).map_err(|e| {
            ClusterError::Internal(format!(
                "cluster {}: minting the admin kubeconfig: {e}",
                c.name
            ))
        })?;
    let time = |t: SystemTime| {
        kiln_api::time::rfc3339_ms(
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        )
    };
    Ok(MintedKubeconfig {
        cluster: c.name,
        server: admin.server.clone(),
        user: admin.user.into(),
        group: admin.group.into(),
        not_before: time(admin.not_before),
        not_after: time(admin.not_after),
        file: None,
        kubeconfig: Some(admin.kubeconfig.expose().to_string()),
    })
}

/// What deleting a cluster did, and the machines to power off through their BMCs (when the
/// disks are not wiped).
pub struct Deletion {
    pub deleted: ClusterDeleted,
    pub power_off: Vec<Hardware>,
}

/// Deletes a cluster. Nodes still installing refuse it unless `force`, which cancels them.
/// With every node ended and the disks to be wiped, a wipe workflow per machine; otherwise
/// netboot goes off and the machines with a BMC are to be powered off ([`Deletion`]).
pub fn delete(
    store: &dyn Store,
    engine: &Engine,
    default_server_url: &str,
    name: &str,
    q: &ClusterDeleteQuery,
) -> Result<Deletion, ClusterError> {
    let c = record(store, name)?;
    let nodes = store.cluster_nodes(&c.name)?;
    let mut running: Vec<&ClusterNode> = Vec::new();
    for n in &nodes {
        if store
            .workflow(&n.workflow)?
            .is_some_and(|w| !w.state.is_terminal())
        {
            running.push(n);
        }
    }
    if !running.is_empty() && !q.force {
        return Err(ClusterError::Busy {
            cluster: c.name,
            nodes: running.iter().map(|n| n.hostname.clone()).collect(),
        });
    }
    let mut done = ClusterDeleted {
        cluster: c.name.clone(),
        machines: nodes.iter().map(|n| n.hostname.clone()).collect(),
        ..ClusterDeleted::default()
    };
    // force: the unfinished installs end now, so the machines are free at once.
    for n in &running {
        engine.cancel(&n.workflow, &format!("cluster {name} deleted (--force)"))?;
        done.cancelled.push(n.workflow.clone());
    }
    let machines: Vec<Hardware> = store
        .hardware()?
        .into_iter()
        .filter(|h| done.machines.contains(&h.hostname))
        .collect();
    done.no_bmc = machines
        .iter()
        .filter(|h| h.bmc.is_none())
        .map(|h| h.hostname.clone())
        .collect();
    if running.is_empty() && !q.keep_disks {
        let template = parse_template("wipe-disk.yaml", WIPE_TEMPLATE)
            .map_err(|e| ClusterError::Internal(format!("built-in wipe template: {e:?}")))?;
        let server_url = q.server_url.as_deref().unwrap_or(default_server_url);
        let created =
            engine.create(&template, &machines, server_url.trim_end_matches('/'), true)?;
        store.delete_cluster(&c.name)?;
        done.wipe_workflows = created
            .iter()
            .map(|w| (w.hardware.clone(), w.id.clone()))
            .collect();
        return Ok(Deletion {
            deleted: done,
            power_off: Vec::new(),
        });
    }
    for n in &nodes {
        store.set_netboot(&n.hostname, false)?;
    }
    store.delete_cluster(&c.name)?;
    Ok(Deletion {
        deleted: done,
        power_off: machines.into_iter().filter(|h| h.bmc.is_some()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_wipe_template_parses() {
        let t = parse_template("wipe-disk.yaml", WIPE_TEMPLATE).unwrap();
        let kinds: Vec<String> = t.actions.iter().map(|a| a.kind.to_string()).collect();
        assert_eq!(kinds, ["wipe", "poweroff"]);
    }

    #[test]
    fn images_by_name_by_file_name_or_by_url_with_digest() {
        let imported = vec!["test-os".to_string()];
        let (url, sha) = image_exprs(Some("test-os"), &imported).unwrap();
        assert_eq!(url, "{{ images[\"test-os\"].url }}");
        assert_eq!(sha, "{{ images[\"test-os\"].sha256 }}");
        let (url, _) = image_exprs(Some("http://mirror/x/test-os.raw.zst"), &imported).unwrap();
        assert!(url.contains("images[\"test-os\"]"));
        let (url, sha) = image_exprs(Some("https://m/os.raw.gz#sha256=abcd"), &imported).unwrap();
        assert_eq!(
            (url.as_str(), sha.as_str()),
            ("https://m/os.raw.gz", "abcd")
        );
        let e = image_exprs(Some("https://m/other.raw.gz"), &imported).unwrap_err();
        assert!(e.contains("not an imported image (test-os)"), "{e}");
        assert!(image_exprs(None, &[]).is_err());
    }

    #[test]
    fn an_os_image_url_resolves_to_the_imported_version() {
        let imported = [
            "ubuntu-2204-kube-v1".to_string(),
            "ubuntu-2204-kube-v1.29".into(),
            "ubuntu-2204-kube-v1.30".into(),
        ];
        let (url, sha) =
            image_exprs(Some("http://host/ubuntu-2204-kube-v1.30.gz"), &imported).unwrap();
        assert_eq!(url, "{{ images[\"ubuntu-2204-kube-v1.30\"].url }}");
        assert_eq!(sha, "{{ images[\"ubuntu-2204-kube-v1.30\"].sha256 }}");
        let (url, _) = image_exprs(
            Some("http://host/i/ubuntu-2204-kube-v1.29.raw.xz"),
            &imported,
        )
        .unwrap();
        assert_eq!(url, "{{ images[\"ubuntu-2204-kube-v1.29\"].url }}");
        let e = image_exprs(Some("http://host/ubuntu-2204-kube-v1.31.gz"), &imported).unwrap_err();
        assert!(e.contains("not an imported image"), "{e}");
    }

    #[test]
    fn spec_problems_are_located_details() {
        let e = parse_spec("c.yaml", "kind: KilnCluster\nname: c\n").unwrap_err();
        let ClusterError::Spec { file, errors } = e else {
            panic!("{e}")
        };
        assert_eq!(file, "c.yaml");
        assert!(!errors.is_empty());
        assert!(
            errors
                .iter()
                .all(|d| d.file.as_deref() == Some("c.yaml") && d.line >= Some(1)),
            "{errors:?}"
        );
    }
}
