//! Clusters: the plan, what `create` and `delete` did, the list and one cluster's status.

use kiln_api::{ClusterCreated, ClusterDeleted, ClusterStatus, MintedKubeconfig, PlannedNodeView};

use super::table;

pub fn list(all: &[ClusterStatus]) -> String {
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|c| {
            let api = if c.api_server_confirmed {
                "confirmed"
            } else {
                "-"
            };
            vec![
                c.name.clone(),
                c.state.clone(),
                c.nodes.len().to_string(),
                api.into(),
            ]
        })
        .collect();
    table(&["CLUSTER", "STATE", "NODES", "API SERVER"], &rows)
}

/// Which machine gets which role (spares last).
pub fn plan(nodes: &[PlannedNodeView], spares: &[String]) -> String {
    let mut rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| vec![n.hostname.clone(), n.ip.clone(), n.role.clone()])
        .collect();
    rows.extend(
        spares
            .iter()
            .map(|s| vec![s.clone(), String::new(), "spare".into()]),
    );
    table(&["MACHINE", "IP", "ROLE"], &rows)
}

/// What `kiln cluster create` prints (also shown by `kiln demo`).
pub fn created(created: &ClusterCreated) -> String {
    let name = &created.cluster;
    let workflows = created
        .nodes
        .iter()
        .filter(|n| n.workflow.is_some())
        .count();
    format!(
        "{}cluster {name}: {workflows} workflow(s) created; `kiln serve` powers the machines with BMCs into netboot. Follow with `kiln cluster status {name} --wait`\n",
        plan(&created.nodes, &created.spares),
    )
}

/// `create --dry-run`: the plan and where the seeds went.
pub fn dry_run(created: &ClusterCreated, files: usize, dir: &std::path::Path) -> String {
    format!(
        "{}dry run: wrote {files} file(s) under {} (mode 0600); nothing else was touched\n",
        plan(&created.nodes, &created.spares),
        dir.display()
    )
}

pub fn status(st: &ClusterStatus) -> String {
    let api = if st.api_server_confirmed {
        "answered, confirmed by the first control plane"
    } else {
        "not confirmed yet"
    };
    let rows: Vec<Vec<String>> = st
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.hostname.clone(),
                n.role_detail.clone(),
                n.state.clone(),
                if n.phone_home { "yes" } else { "no" }.into(),
                n.message.clone(),
            ]
        })
        .collect();
    format!("cluster {}: {} (API server: {api})\n", st.name, st.state)
        + &table(
            &["MACHINE", "ROLE", "WORKFLOW", "PHONED HOME", "MESSAGE"],
            &rows,
        )
}

/// Where a minted kubeconfig went (written to a file), or the kubeconfig itself.
pub fn kubeconfig(minted: &MintedKubeconfig) -> String {
    match (&minted.file, &minted.kubeconfig) {
        (Some(path), _) => format!(
            "wrote the admin kubeconfig of cluster {} to {path} (mode 0600): server {}, user {} in group {}, valid until {}\n",
            minted.cluster, minted.server, minted.user, minted.group, minted.not_after
        ),
        (None, Some(text)) => text.clone(),
        (None, None) => String::new(),
    }
}

/// What `kiln cluster delete` prints (also shown by `kiln demo --delete`).
pub fn deleted(d: &ClusterDeleted) -> String {
    let mut text = String::new();
    if !d.cancelled.is_empty() {
        text += &format!(
            "cancelled unfinished node workflows: {}\n",
            d.cancelled.join(", ")
        );
    }
    if d.wipe_workflows.is_empty() {
        text += &format!(
            "cluster {} deleted; {} machine(s) are free again\n",
            d.cluster,
            d.machines.len()
        );
    } else {
        text += &wiping(d);
    }
    if !d.power_off.is_empty() {
        let names: Vec<&str> = d.power_off.iter().map(|r| r.machine.as_str()).collect();
        text += &format!("powering off through their BMCs: {}\n", names.join(", "));
        text += &super::bmc::rows(&d.power_off);
    }
    text
}

fn wiping(d: &ClusterDeleted) -> String {
    let mut text = format!(
        "cluster {} deleted; {} machine(s) are free again and being wiped:\n",
        d.cluster,
        d.machines.len()
    );
    for (machine, wf) in &d.wipe_workflows {
        text += &format!("  {machine}  workflow {wf}\n");
    }
    text += "`kiln serve` powers them into the agent, which wipes the disk and powers the machine off (`kiln workflow watch`)\n";
    if !d.no_bmc.is_empty() {
        text += &format!(
            "no BMC: restart {} by hand so that they netboot into the agent\n",
            d.no_bmc.join(", ")
        );
    }
    text
}
