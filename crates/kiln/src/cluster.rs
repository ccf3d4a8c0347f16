//! `kiln cluster create|list|status|kubeconfig|delete`: cluster specs (EKS Anywhere or native)
//! become one workflow per node whose cloud-init runs kubeadm.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use kiln_cluster::{ClusterSecrets, ClusterSpec, Plan, Role};
use kiln_engine::Engine;
use kiln_model::template::{Template, parse_template};
use kiln_model::workflow::{Workflow, WorkflowState};
use kiln_store::{ClusterNode, ClusterRecord, Store};
use serde::Serialize;

use crate::output::{Format, WaitArgs, rfc3339_ms, table};
use crate::select::StartArgs;

/// What `kiln cluster delete` runs on each node: wipe the disk, power off.
const WIPE_TEMPLATE: &str = include_str!("../../../workflows/wipe-disk.yaml");

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

/// An image for image2disk: an imported image by name, or a URL with `#sha256=HEX`.
fn image_exprs(url: Option<&str>, imported: &[String]) -> anyhow::Result<(String, String)> {
    let Some(url) = url else {
        bail!(
            "the spec names no OS image (TinkerbellDatacenterConfig osImageURL, or `image:`): name an image imported with `kiln image import` ({})",
            if imported.is_empty() {
                "none yet".to_string()
            } else {
                imported.join(", ")
            }
        );
    };
    let by_name = |name: &str| {
        (
            format!("{{{{ images[\"{name}\"].url }}}}"),
            format!("{{{{ images[\"{name}\"].sha256 }}}}"),
        )
    };
    if imported.iter().any(|i| i == url) {
        return Ok(by_name(url));
    }
    if let Some((u, sha)) = url.split_once("#sha256=")
        && (u.starts_with("http://") || u.starts_with("https://"))
    {
        return Ok((u.to_string(), sha.to_string()));
    }
    // An EKS Anywhere URL whose file name, less format suffixes, is an imported image's
    // name, as `kiln image import URL` names it (ubuntu-2204-kube-v1.30.gz: ubuntu-2204-kube-v1.30).
    let stem = crate::image::format::default_name(url);
    if imported.contains(&stem) {
        return Ok(by_name(&stem));
    }
    bail!(
        "OS image {url:?}: not an imported image ({}); import it with `kiln image import FILE --name NAME` and name it, or give a URL with #sha256=<hex>",
        if imported.is_empty() {
            "none yet".to_string()
        } else {
            imported.join(", ")
        }
    )
}

fn node_template(cluster: &str, image: (String, String)) -> anyhow::Result<Template> {
    let (url, sha) = image;
    let text = format!(
        "name: kiln-cluster-{cluster}\ntimeout: 90m\nactions:\n  - name: stream-image\n    kind: image2disk\n    timeout: 60m\n    retries: 2\n    with:\n      url: '{url}'\n      sha256: '{sha}'\n  - name: seed-cloud-init\n    kind: cloud-init\n    timeout: 2m\n    retries: 2\n  - name: reboot\n    kind: reboot\n    timeout: 2m\n"
    );
    parse_template("cluster node template", &text).map_err(|e| {
        anyhow::anyhow!(
            "{}",
            e.0.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn role_name(role: &Role) -> String {
    match role {
        Role::ControlPlane { first: true } => "control-plane (init)".into(),
        Role::ControlPlane { first: false } => "control-plane".into(),
        Role::Worker { group } => format!("worker ({group})"),
    }
}

fn parse_spec(file: &Path) -> anyhow::Result<(String, String, ClusterSpec)> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {name}"))?;
    match ClusterSpec::parse_with_warnings(&text, &name) {
        Ok(parsed) => {
            for w in &parsed.warnings {
                eprintln!("warning: {w}");
            }
            Ok((name, text, parsed.spec))
        }
        Err(errors) => {
            bail!("{errors}\nkiln: no cluster was created");
        }
    }
}

#[derive(Serialize)]
struct NodeStatus {
    hostname: String,
    /// control-plane | worker
    role: String,
    /// With the detail: "control-plane (init)", "worker (md-0)".
    role_detail: String,
    workflow: String,
    state: String,
    phone_home: bool,
    message: String,
}

#[derive(Serialize)]
struct ClusterStatus {
    name: String,
    state: &'static str,
    nodes: Vec<NodeStatus>,
    /// The first control plane phoned home, which it does only after its API server answered
    /// `/readyz` (verified with the cluster CA).
    api_server_confirmed: bool,
}

fn status_of(store: &Store, c: &ClusterRecord) -> anyhow::Result<ClusterStatus> {
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
            "failed"
        } else if all_done {
            "ready"
        } else {
            "provisioning"
        },
        nodes,
        api_server_confirmed,
    })
}

pub fn run(data_dir: &Path, cmd: Command) -> anyhow::Result<ExitCode> {
    let store = Arc::new(
        Store::open(data_dir)
            .with_context(|| format!("opening the store in {}", data_dir.display()))?,
    );
    match cmd {
        Command::Create {
            file,
            dry_run,
            out_dir,
            start: StartArgs {
                server_url,
                no_power,
            },
            wait,
            output,
        } => {
            let (spec_file, text, spec) = parse_spec(&file)?;
            if dry_run {
                let out = out_dir.expect("clap requires --out-dir with --dry-run");
                return dry_run_to(&store, &spec, &out, output);
            }
            let name = spec.name.clone();
            let (plan, created) = create(&store, spec_file, text, spec, server_url, no_power)?;
            if !(wait.wait && output == Format::Json) {
                print_created(&name, &plan, &created, output)?;
            }
            if wait.wait {
                return wait_for(&store, &name, wait.timeout, output);
            }
        }
        Command::List { output } => {
            let all: Vec<ClusterStatus> = store
                .clusters()?
                .iter()
                .map(|c| status_of(&store, c))
                .collect::<anyhow::Result<_>>()?;
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                Format::Table => {
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|c| {
                            vec![
                                c.name.clone(),
                                c.state.into(),
                                c.nodes.len().to_string(),
                                if c.api_server_confirmed {
                                    "confirmed"
                                } else {
                                    "-"
                                }
                                .into(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(&["CLUSTER", "STATE", "NODES", "API SERVER"], &rows)
                    );
                }
            }
        }
        Command::Status { name, wait, output } => {
            if wait.wait {
                return wait_for(&store, &name, wait.timeout, output);
            }
            let st = status_of(&store, &cluster(&store, &name)?)?;
            print_status(&st, output)?;
            if st.state == "failed" {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Kubeconfig { name, out, output } => {
            kubeconfig(&cluster(&store, &name)?, out.as_deref(), output)?;
        }
        Command::Delete {
            name,
            force,
            keep_disks,
            server_url,
            output,
        } => {
            return delete(
                data_dir, store, &name, force, keep_disks, server_url, output,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cluster(store: &Store, name: &str) -> anyhow::Result<ClusterRecord> {
    store
        .cluster(name)?
        .with_context(|| format!("no cluster named {name:?}"))
}

/// Machines not in any cluster yet.
fn free_machines(store: &Store) -> anyhow::Result<Vec<kiln_model::Hardware>> {
    let taken = store.clustered_machines()?;
    Ok(store
        .hardware()?
        .into_iter()
        .filter(|h| !taken.contains(&h.hostname))
        .collect())
}

/// `create --dry-run --out-dir DIR`.
fn dry_run_to(
    store: &Store,
    spec: &ClusterSpec,
    out: &Path,
    output: Format,
) -> anyhow::Result<ExitCode> {
    let done = kiln_cluster::dry_run(spec, &free_machines(store)?, out)?;
    match output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "cluster": spec.name,
                "dry_run": true,
                "nodes": plan_json(&done.plan, &[]),
                "spares": done.plan.spares,
                "files": done.files,
            }))?
        ),
        Format::Table => {
            print_plan(&done.plan);
            println!(
                "dry run: wrote {} file(s) under {} (mode 0600); nothing else was touched",
                done.files.len(),
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Plans the cluster on free machines and creates one workflow per node, all or none.
fn create(
    store: &Arc<Store>,
    spec_file: String,
    text: String,
    spec: ClusterSpec,
    server_url: Option<String>,
    no_power: bool,
) -> anyhow::Result<(Plan, Vec<Workflow>)> {
    if store.cluster(&spec.name)?.is_some() {
        bail!(
            "a cluster named {:?} exists already (kiln cluster delete {} first)",
            spec.name,
            spec.name
        );
    }
    let plan = kiln_cluster::plan(&spec, &free_machines(store)?)?;
    let server_url = crate::select::server_url(store, server_url)?;
    let imported: Vec<String> = store.images()?.into_iter().map(|i| i.name).collect();
    // One template per machine spec (control planes and worker groups may name different images).
    let mut templates = Vec::new();
    for node in &plan.nodes {
        let machine = match &node.role {
            Role::ControlPlane { .. } => &spec.control_plane.machine,
            Role::Worker { group } => {
                &spec
                    .worker_groups
                    .iter()
                    .find(|g| &g.name == group)
                    .context("plan names a worker group the spec lacks")?
                    .machine
            }
        };
        let image = image_exprs(machine.image_url.as_deref(), &imported)
            .with_context(|| format!("node {}", node.hostname))?;
        templates.push(node_template(&spec.name, image)?);
    }
    let secrets = ClusterSecrets::generate()?;
    let record = ClusterRecord {
        name: spec.name.clone(),
        spec_file,
        spec: text,
        plan: serde_json::to_string(&plan)?,
        secrets: serde_json::to_string(&secrets)?,
        created_ms: kiln_engine::now_ms(),
    };
    let items: Vec<_> = templates
        .iter()
        .zip(&plan.nodes)
        .map(|(t, n)| (t, &n.hardware))
        .collect();
    let engine = Engine::new(Arc::clone(store));
    let mut first = true;
    let created = engine.create_each(
        &items,
        server_url.trim_end_matches('/'),
        !no_power,
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
    Ok((plan, created))
}

/// The plan's nodes as JSON, with the workflow of each where there is one.
fn plan_json(plan: &Plan, created: &[Workflow]) -> Vec<serde_json::Value> {
    plan.nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "hostname": n.hostname,
                "ip": n.hardware.ip.to_string(),
                "role": role_name(&n.role),
                "workflow": created.iter().find(|w| w.hardware == n.hostname).map(|w| &w.id),
            })
        })
        .collect()
}

fn print_created(
    name: &str,
    plan: &Plan,
    created: &[Workflow],
    output: Format,
) -> anyhow::Result<()> {
    match output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "cluster": name,
                "nodes": plan_json(plan, created),
                "spares": plan.spares,
            }))?
        ),
        Format::Table => {
            print_plan(plan);
            println!(
                "cluster {name}: {} workflow(s) created; `kiln serve` powers the machines with BMCs into netboot. Follow with `kiln cluster status {name} --wait`",
                created.len(),
            );
        }
    }
    Ok(())
}

/// `--wait`: follows the nodes' workflows until they end (or `timeout`), then prints the
/// cluster's status. Exit 0 when ready, 1 when a node failed, 3 when still provisioning.
fn wait_for(
    store: &Store,
    name: &str,
    timeout: Option<Duration>,
    output: Format,
) -> anyhow::Result<ExitCode> {
    let ids: Vec<String> = store
        .cluster_nodes(&cluster(store, name)?.name)?
        .into_iter()
        .map(|n| n.workflow)
        .collect();
    let code = match output {
        Format::Table => crate::wait::follow(store, &ids, timeout, output)?,
        Format::Json => crate::wait::quietly(store, &ids, timeout)?,
    };
    let st = status_of(store, &cluster(store, name)?)?;
    print_status(&st, output)?;
    Ok(code)
}

fn print_status(st: &ClusterStatus, output: Format) -> anyhow::Result<()> {
    match output {
        Format::Json => println!("{}", serde_json::to_string_pretty(st)?),
        Format::Table => {
            println!(
                "cluster {}: {} (API server: {})",
                st.name,
                st.state,
                if st.api_server_confirmed {
                    "answered, confirmed by the first control plane"
                } else {
                    "not confirmed yet"
                }
            );
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
            print!(
                "{}",
                table(
                    &["MACHINE", "ROLE", "WORKFLOW", "PHONED HOME", "MESSAGE"],
                    &rows
                )
            );
        }
    }
    Ok(())
}

/// What `cluster kubeconfig -o json` prints.
#[derive(Serialize)]
struct MintedKubeconfig<'a> {
    cluster: &'a str,
    server: &'a str,
    user: &'a str,
    group: &'a str,
    not_before: String,
    not_after: String,
    /// With --out.
    file: Option<String>,
    /// Without --out.
    kubeconfig: Option<&'a str>,
}

/// `kiln cluster kubeconfig NAME [--out FILE]`: minted from the stored cluster CA.
fn kubeconfig(c: &ClusterRecord, out: Option<&Path>, output: Format) -> anyhow::Result<()> {
    let spec = ClusterSpec::parse(&c.spec, &c.spec_file)
        .map_err(|e| anyhow::anyhow!("stored spec: {e}"))?;
    let secrets: ClusterSecrets = serde_json::from_str(&c.secrets).context("stored secrets")?;
    let admin = kiln_cluster::admin_kubeconfig(&spec, &secrets, SystemTime::now())
        .with_context(|| format!("cluster {}: minting the admin kubeconfig", c.name))?;
    if let Some(path) = out {
        write_private(path, admin.kubeconfig.expose())?;
    }
    let ms = |t: SystemTime| {
        rfc3339_ms(
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        )
    };
    match output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&MintedKubeconfig {
                cluster: &c.name,
                server: &admin.server,
                user: admin.user,
                group: admin.group,
                not_before: ms(admin.not_before),
                not_after: ms(admin.not_after),
                file: out.map(|p| p.display().to_string()),
                kubeconfig: out.is_none().then_some(admin.kubeconfig.expose()),
            })?
        ),
        Format::Table => match out {
            Some(path) => println!(
                "wrote the admin kubeconfig of cluster {} to {} (mode 0600): server {}, user {} in group {}, valid until {}",
                c.name,
                path.display(),
                admin.server,
                admin.user,
                admin.group,
                ms(admin.not_after)
            ),
            None => print!("{}", admin.kubeconfig.expose()),
        },
    }
    Ok(())
}

/// Writes `text` to `path` with mode 0600, atomically: a temporary file (0600 from the
/// start) in the same directory, synced, then renamed over `path`.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".kiln-kubeconfig-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// What `cluster delete -o json` prints.
#[derive(Serialize, Default)]
struct Deleted {
    cluster: String,
    machines: Vec<String>,
    /// Node workflows still running that --force cancelled.
    cancelled: Vec<String>,
    /// (machine, wipe workflow id).
    wipe_workflows: Vec<(String, String)>,
    /// Machines without a BMC: to be restarted by hand.
    no_bmc: Vec<String>,
}

fn delete(
    data_dir: &Path,
    store: Arc<Store>,
    name: &str,
    force: bool,
    keep_disks: bool,
    server_url: Option<String>,
    output: Format,
) -> anyhow::Result<ExitCode> {
    let c = cluster(&store, name)?;
    let nodes = store.cluster_nodes(&c.name)?;
    let running: Vec<&ClusterNode> = nodes
        .iter()
        .filter(|n| {
            store
                .workflow(&n.workflow)
                .ok()
                .flatten()
                .is_some_and(|w| !w.state.is_terminal())
        })
        .collect();
    if !running.is_empty() && !force {
        let names: Vec<&str> = running.iter().map(|n| n.hostname.as_str()).collect();
        bail!(
            "cluster {name}: nodes {} are still being installed (pass --force to delete anyway)",
            names.join(", ")
        );
    }
    let mut done = Deleted {
        cluster: c.name.clone(),
        machines: nodes.iter().map(|n| n.hostname.clone()).collect(),
        ..Deleted::default()
    };
    let engine = Engine::new(Arc::clone(&store));
    // --force: the unfinished installs end now, so the machines are free at once.
    for n in &running {
        engine.cancel(&n.workflow, &format!("cluster {name} deleted (--force)"))?;
        done.cancelled.push(n.workflow.clone());
    }
    let machines: Vec<_> = store
        .hardware()?
        .into_iter()
        .filter(|h| done.machines.contains(&h.hostname))
        .collect();
    done.no_bmc = machines
        .iter()
        .filter(|h| h.bmc.is_none())
        .map(|h| h.hostname.clone())
        .collect();
    if running.is_empty() && !keep_disks {
        let template = parse_template("wipe-disk.yaml", WIPE_TEMPLATE)
            .map_err(|e| anyhow::anyhow!("built-in wipe template: {e:?}"))?;
        let server_url = crate::select::server_url(&store, server_url)?;
        let created =
            engine.create(&template, &machines, server_url.trim_end_matches('/'), true)?;
        store.delete_cluster(&c.name)?;
        done.wipe_workflows = created
            .iter()
            .map(|w| (w.hardware.clone(), w.id.clone()))
            .collect();
        print_deleted(&done, output)?;
        return Ok(ExitCode::SUCCESS);
    }
    for n in &nodes {
        store.set_netboot(&n.hostname, false)?;
    }
    store.delete_cluster(&c.name)?;
    print_deleted(&done, output)?;
    let with_bmc: Vec<String> = machines
        .iter()
        .filter(|h| h.bmc.is_some())
        .map(|h| h.hostname.clone())
        .collect();
    if with_bmc.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    if output == Format::Table {
        println!("powering off through their BMCs: {}", with_bmc.join(", "));
    }
    crate::bmc::run(data_dir, crate::bmc::Args::power_off(with_bmc, output))
}

fn print_deleted(d: &Deleted, output: Format) -> anyhow::Result<()> {
    if output == Format::Json {
        println!("{}", serde_json::to_string_pretty(d)?);
        return Ok(());
    }
    if !d.cancelled.is_empty() {
        println!(
            "cancelled unfinished node workflows: {}",
            d.cancelled.join(", ")
        );
    }
    if d.wipe_workflows.is_empty() {
        println!(
            "cluster {} deleted; {} machine(s) are free again",
            d.cluster,
            d.machines.len()
        );
        return Ok(());
    }
    println!(
        "cluster {} deleted; {} machine(s) are free again and being wiped:",
        d.cluster,
        d.machines.len()
    );
    for (machine, wf) in &d.wipe_workflows {
        println!("  {machine}  workflow {wf}");
    }
    println!(
        "`kiln serve` powers them into the agent, which wipes the disk and powers the machine off (`kiln workflow watch`)"
    );
    if !d.no_bmc.is_empty() {
        println!(
            "no BMC: restart {} by hand so that they netboot into the agent",
            d.no_bmc.join(", ")
        );
    }
    Ok(())
}

fn print_plan(plan: &Plan) {
    let mut rows: Vec<Vec<String>> = plan
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.hostname.clone(),
                n.hardware.ip.to_string(),
                role_name(&n.role),
            ]
        })
        .collect();
    rows.extend(
        plan.spares
            .iter()
            .map(|s| vec![s.clone(), String::new(), "spare".into()]),
    );
    print!("{}", table(&["MACHINE", "IP", "ROLE"], &rows));
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
        assert!(
            e.to_string().contains("not an imported image (test-os)"),
            "{e}"
        );
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
        assert!(e.to_string().contains("not an imported image"), "{e}");
    }
}
