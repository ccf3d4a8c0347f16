//! Per-node cloud-init: the NoCloud seed that turns an installed OS into a Kubernetes
//! node. The first control plane runs `kubeadm init`, everything else `kubeadm join`;
//! the configs carry the pre-made PKI and token, so no node waits on another for
//! anything but the API server itself.

use std::collections::BTreeMap;

use kiln_model::{Hardware, cloudinit};
use serde::{Deserialize, Serialize};

use crate::plan::{Plan, PlannedNode, Role};
use crate::secrets::{ClusterSecrets, SecretsError};
use crate::spec::{ClusterSpec, MachineSpec, Taint, UserSpec};
use crate::yaml::Y;

/// What the node needs to know about the Kiln server that provisions it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInputs {
    /// cloud-init's instance-id (one per install, e.g. the workflow id).
    pub instance_id: String,
    /// cloud-init's phone_home POSTs here once everything ran. On the first control plane
    /// it comes only after the API server answered: it is Kiln's confirmation of that (the
    /// admin kubeconfig is minted by Kiln, nothing is uploaded).
    pub phone_home_url: String,
    /// A node whose set-up fails POSTs the last lines of its log here
    /// (`text/plain`, bootstrap tokens masked) before cloud-init's phone_home runs;
    /// a failure report before the phone-home means the node failed.
    pub failure_url: String,
}

impl NodeInputs {
    /// `failure_url` = `{phone_home_url}/failed`.
    pub fn new(instance_id: impl Into<String>, phone_home_url: impl Into<String>) -> NodeInputs {
        let phone_home_url = phone_home_url.into();
        let base = phone_home_url.trim_end_matches('/');
        NodeInputs {
            instance_id: instance_id.into(),
            failure_url: format!("{base}/failed"),
            phone_home_url,
        }
    }
}

/// The three NoCloud documents of one node.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeSeed {
    /// `#cloud-config`: holds the bootstrap token and, on control planes, CA keys.
    pub user_data: String,
    pub meta_data: String,
    pub network_config: String,
}

impl std::fmt::Debug for NodeSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSeed")
            .field(
                "user_data",
                &format_args!("<{} bytes, secret>", self.user_data.len()),
            )
            .field("meta_data", &self.meta_data)
            .field("network_config", &self.network_config)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    #[error("machine {0} is not part of the cluster's plan")]
    NotInPlan(String),
    #[error("the plan has no first control plane")]
    NoFirstControlPlane,
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

/// Where things go on the node.
pub const INIT_CONFIG_PATH: &str = "/run/kubeadm/init.yaml";
pub const JOIN_CONFIG_PATH: &str = "/run/kubeadm/join.yaml";
pub const BOOTSTRAP_SCRIPT_PATH: &str = "/usr/local/sbin/kiln-bootstrap";
pub const BOOTSTRAP_LOG_PATH: &str = "/var/log/kiln-bootstrap.log";
pub const KUBE_VIP_TEMPLATE_PATH: &str = "/etc/kiln/kube-vip.yaml";
pub const KUBE_VIP_MANIFEST_PATH: &str = "/etc/kubernetes/manifests/kube-vip.yaml";
/// An optional hook in the OS image: `kiln-install-cni <cni> <pod-cidr>` on the first
/// control plane after `kubeadm init`.
pub const CNI_HOOK_PATH: &str = "/usr/local/sbin/kiln-install-cni";
pub const KUBE_VIP_IMAGE: &str = "ghcr.io/kube-vip/kube-vip:v0.8.9";
pub const CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";
pub const API_PORT: u16 = 6443;
/// How long a joining node waits for the API server (it may boot long before it).
const DISCOVERY_TIMEOUT: &str = "30m0s";
const TOKEN_TTL: &str = "24h0m0s";
const VIP_INTERFACE_PLACEHOLDER: &str = "@KILN_VIP_INTERFACE@";
/// After `kubeadm init`: how often and how many times the bootstrap script asks the API
/// server's `/readyz` (5 s x 60: up to 5 minutes) before it gives up.
pub const READYZ_INTERVAL_SECS: u32 = 5;
pub const READYZ_ATTEMPTS: u32 = 60;
/// What the bootstrap script prints once the API server answered (tests look for it).
pub const API_SERVER_READY_LINE: &str = "kiln-bootstrap: the API server answers /readyz at";

/// Renders the NoCloud seed of `node`. Pure: the same inputs give the same bytes.
pub fn render_node(
    spec: &ClusterSpec,
    plan: &Plan,
    node: &PlannedNode,
    secrets: &ClusterSecrets,
    inputs: &NodeInputs,
) -> Result<NodeSeed, RenderError> {
    if plan.node(&node.hostname) != Some(node) {
        return Err(RenderError::NotInPlan(node.hostname.clone()));
    }
    plan.first_control_plane()
        .ok_or(RenderError::NoFirstControlPlane)?;
    let hw = &node.hardware;
    Ok(NodeSeed {
        user_data: user_data(spec, plan, node, secrets, inputs)?,
        meta_data: cloudinit::meta_data(hw, &inputs.instance_id),
        network_config: cloudinit::network_config(hw),
    })
}

fn endpoint(spec: &ClusterSpec) -> String {
    format!("{}:{API_PORT}", spec.control_plane.endpoint)
}

fn user_data(
    spec: &ClusterSpec,
    plan: &Plan,
    node: &PlannedNode,
    secrets: &ClusterSecrets,
    inputs: &NodeInputs,
) -> Result<String, RenderError> {
    let hw = &node.hardware;
    let machine = node_machine(spec, node)?;
    let files = write_files(spec, plan, node, secrets, inputs)?;

    let mut doc = vec![
        ("hostname", Y::s(&hw.hostname)),
        ("preserve_hostname", Y::Bool(false)),
        ("manage_etc_hosts", Y::Bool(true)),
    ];
    if !machine.users.is_empty() {
        doc.push(("users", Y::Seq(machine.users.iter().map(user).collect())));
    }
    doc.push(("write_files", Y::Seq(files)));
    doc.push(("runcmd", Y::strs([BOOTSTRAP_SCRIPT_PATH])));
    doc.push((
        "phone_home",
        Y::map([
            ("url", Y::s(&inputs.phone_home_url)),
            ("post", Y::strs(["instance_id", "hostname", "fqdn"])),
            ("tries", Y::Int(10)),
        ]),
    ));
    Ok(format!("#cloud-config\n{}", Y::map(doc).to_yaml()))
}

/// The machine spec of the node's role (its control plane or worker group).
fn node_machine<'s>(
    spec: &'s ClusterSpec,
    node: &PlannedNode,
) -> Result<&'s MachineSpec, RenderError> {
    Ok(match &node.role {
        Role::ControlPlane { .. } => &spec.control_plane.machine,
        Role::Worker { group } => {
            &spec
                .worker_groups
                .iter()
                .find(|g| &g.name == group)
                .ok_or_else(|| RenderError::NotInPlan(node.hostname.clone()))?
                .machine
        }
    })
}

/// cloud-init's `write_files`: kernel settings, containerd, the PKI on control planes,
/// the kubeadm config, kube-vip and the bootstrap script.
fn write_files(
    spec: &ClusterSpec,
    plan: &Plan,
    node: &PlannedNode,
    secrets: &ClusterSecrets,
    inputs: &NodeInputs,
) -> Result<Vec<Y>, RenderError> {
    let mut files = vec![
        file(
            "/etc/modules-load.d/kiln-kubernetes.conf",
            "0644",
            "overlay\nbr_netfilter\n",
        ),
        file(
            "/etc/sysctl.d/90-kiln-kubernetes.conf",
            "0644",
            "net.bridge.bridge-nf-call-iptables = 1\n\
             net.bridge.bridge-nf-call-ip6tables = 1\n\
             net.ipv4.ip_forward = 1\n",
        ),
        file("/etc/containerd/config.toml", "0644", CONTAINERD_CONFIG),
    ];
    if node.role.is_control_plane() {
        files.extend(pki_files(secrets));
    }
    let (config_path, config) = match &node.role {
        Role::ControlPlane { first: true } => (INIT_CONFIG_PATH, init_config(spec, node, secrets)),
        _ => (JOIN_CONFIG_PATH, join_config(spec, node, secrets)?),
    };
    // Holds the bootstrap token.
    files.push(file(config_path, "0600", &config));
    if plan.kube_vip && node.role.is_control_plane() {
        files.push(file(
            KUBE_VIP_TEMPLATE_PATH,
            "0600",
            &kube_vip_manifest(spec, node),
        ));
    }
    files.push(file(
        BOOTSTRAP_SCRIPT_PATH,
        "0700",
        &bootstrap_script(spec, plan, node, inputs),
    ));
    Ok(files)
}

/// The cluster's CAs and service-account keys, for a control plane.
fn pki_files(secrets: &ClusterSecrets) -> Vec<Y> {
    let pki = [
        ("ca.crt", "0644", secrets.cluster_ca.cert_pem.as_str()),
        ("ca.key", "0600", secrets.cluster_ca.key_pem.expose()),
        (
            "front-proxy-ca.crt",
            "0644",
            secrets.front_proxy_ca.cert_pem.as_str(),
        ),
        (
            "front-proxy-ca.key",
            "0600",
            secrets.front_proxy_ca.key_pem.expose(),
        ),
        ("etcd/ca.crt", "0644", secrets.etcd_ca.cert_pem.as_str()),
        ("etcd/ca.key", "0600", secrets.etcd_ca.key_pem.expose()),
        ("sa.pub", "0644", secrets.service_account_pub_pem.as_str()),
        ("sa.key", "0600", secrets.service_account_key_pem.expose()),
    ];
    pki.into_iter()
        .map(|(name, mode, content)| file(&format!("/etc/kubernetes/pki/{name}"), mode, content))
        .collect()
}

/// A cloud-init user: sudo without password, no password login.
fn user(u: &UserSpec) -> Y {
    let mut entry = vec![
        ("name", Y::s(&u.name)),
        ("sudo", Y::s("ALL=(ALL) NOPASSWD:ALL")),
        ("shell", Y::s("/bin/bash")),
        ("lock_passwd", Y::Bool(true)),
    ];
    if !u.ssh_authorized_keys.is_empty() {
        entry.push((
            "ssh_authorized_keys",
            Y::strs(u.ssh_authorized_keys.clone()),
        ));
    }
    Y::map(entry)
}

fn file(path: &str, mode: &str, content: &str) -> Y {
    Y::map([
        ("path", Y::s(path)),
        ("owner", Y::s("root:root")),
        ("permissions", Y::s(mode)),
        ("content", Y::s(content)),
    ])
}

/// containerd with the systemd cgroup driver (what kubeadm configures the kubelet for).
const CONTAINERD_CONFIG: &str = "\
# Written by Kiln: CRI runtime for kubeadm, systemd cgroup driver.
version = 2

[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]
  runtime_type = \"io.containerd.runc.v2\"

  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]
    SystemdCgroup = true
";

/// kubeadm's extraArgs: a map in v1beta3, a list of name/value in v1beta4.
fn extra_args(spec: &ClusterSpec, args: &[(&str, String)]) -> Y {
    if spec.kubernetes_version.uses_v1beta4() {
        Y::Seq(
            args.iter()
                .map(|(k, v)| Y::map([("name", Y::s(*k)), ("value", Y::s(v))]))
                .collect(),
        )
    } else {
        Y::map(args.iter().map(|(k, v)| (*k, Y::s(v))))
    }
}

fn taints_yaml(taints: &[Taint]) -> Y {
    Y::Seq(
        taints
            .iter()
            .map(|t| {
                let mut m = vec![("key", Y::s(&t.key))];
                if let Some(v) = &t.value {
                    m.push(("value", Y::s(v)));
                }
                m.push(("effect", Y::s(t.effect.as_str())));
                Y::map(m)
            })
            .collect(),
    )
}

/// Always written with an explicit `taints` list: kubeadm reads a missing one as
/// "the default control-plane taint".
fn node_registration(
    spec: &ClusterSpec,
    node: &PlannedNode,
    taints: &[Taint],
    labels: &BTreeMap<String, String>,
) -> Y {
    let mut args = vec![("node-ip", node.hardware.ip.to_string())];
    if !labels.is_empty() {
        let list: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        args.push(("node-labels", list.join(",")));
    }
    Y::map([
        ("name", Y::s(&node.hostname)),
        ("criSocket", Y::s(CRI_SOCKET)),
        ("taints", taints_yaml(taints)),
        ("kubeletExtraArgs", extra_args(spec, &args)),
    ])
}

fn local_endpoint(node: &PlannedNode) -> Y {
    Y::map([
        ("advertiseAddress", Y::s(node.hardware.ip.to_string())),
        ("bindPort", Y::Int(API_PORT.into())),
    ])
}

/// InitConfiguration + ClusterConfiguration for the first control plane.
pub(crate) fn init_config(
    spec: &ClusterSpec,
    node: &PlannedNode,
    secrets: &ClusterSecrets,
) -> String {
    let api = spec.kubernetes_version.kubeadm_api_version();
    let init = Y::map([
        ("apiVersion", Y::s(api)),
        ("kind", Y::s("InitConfiguration")),
        (
            "bootstrapTokens",
            Y::Seq(vec![Y::map([
                ("token", Y::s(secrets.bootstrap_token.expose())),
                (
                    "description",
                    Y::s(format!("kiln: joins the nodes of cluster {}", spec.name)),
                ),
                ("ttl", Y::s(TOKEN_TTL)),
                ("usages", Y::strs(["signing", "authentication"])),
                (
                    "groups",
                    Y::strs(["system:bootstrappers:kubeadm:default-node-token"]),
                ),
            ])]),
        ),
        ("localAPIEndpoint", local_endpoint(node)),
        (
            "nodeRegistration",
            node_registration(
                spec,
                node,
                &spec.control_plane_taints(),
                &spec.control_plane.labels,
            ),
        ),
    ]);
    let mut sans = vec![spec.control_plane.endpoint.to_string()];
    for s in &spec.control_plane.cert_sans {
        if !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    let mut cluster = vec![
        ("apiVersion", Y::s(api)),
        ("kind", Y::s("ClusterConfiguration")),
        ("clusterName", Y::s(&spec.name)),
        (
            "kubernetesVersion",
            Y::s(spec.kubernetes_version.kubeadm_value()),
        ),
        ("controlPlaneEndpoint", Y::s(endpoint(spec))),
        (
            "networking",
            Y::map([
                ("podSubnet", Y::s(spec.network.pods.to_string())),
                ("serviceSubnet", Y::s(spec.network.services.to_string())),
            ]),
        ),
        ("apiServer", Y::map([("certSANs", Y::strs(sans))])),
    ];
    if let Some(mask) = spec.network.node_cidr_mask_size {
        cluster.push((
            "controllerManager",
            Y::map([(
                "extraArgs",
                extra_args(spec, &[("node-cidr-mask-size", mask.to_string())]),
            )]),
        ));
    }
    format!("{}---\n{}", init.to_yaml(), Y::map(cluster).to_yaml())
}

/// JoinConfiguration for every other node; control planes join with `controlPlane:`
/// set (they already hold the shared CAs, so no certificate key is needed).
pub(crate) fn join_config(
    spec: &ClusterSpec,
    node: &PlannedNode,
    secrets: &ClusterSecrets,
) -> Result<String, RenderError> {
    let v4 = spec.kubernetes_version.uses_v1beta4();
    let (taints, labels) = match &node.role {
        Role::ControlPlane { .. } => (
            spec.control_plane_taints(),
            spec.control_plane.labels.clone(),
        ),
        Role::Worker { group } => {
            let g = spec
                .worker_groups
                .iter()
                .find(|g| &g.name == group)
                .ok_or_else(|| RenderError::NotInPlan(node.hostname.clone()))?;
            (g.taints.clone(), g.labels.clone())
        }
    };
    let mut discovery = vec![(
        "bootstrapToken",
        Y::map([
            ("apiServerEndpoint", Y::s(endpoint(spec))),
            ("token", Y::s(secrets.bootstrap_token.expose())),
            ("caCertHashes", Y::strs([secrets.ca_cert_hash()?])),
        ]),
    )];
    if !v4 {
        discovery.push(("timeout", Y::s(DISCOVERY_TIMEOUT)));
    }
    let mut join = vec![
        (
            "apiVersion",
            Y::s(spec.kubernetes_version.kubeadm_api_version()),
        ),
        ("kind", Y::s("JoinConfiguration")),
        (
            "nodeRegistration",
            node_registration(spec, node, &taints, &labels),
        ),
        ("discovery", Y::map(discovery)),
    ];
    if node.role.is_control_plane() {
        join.push((
            "controlPlane",
            Y::map([("localAPIEndpoint", local_endpoint(node))]),
        ));
    }
    if v4 {
        // v1beta4 moved the discovery timeout here.
        join.push(("timeouts", Y::map([("discovery", Y::s(DISCOVERY_TIMEOUT))])));
    }
    Ok(Y::map(join).to_yaml())
}

/// kube-vip as a static pod holding the endpoint VIP by ARP (leader election among the
/// control planes). The interface is filled in on the node, where its name is known.
pub(crate) fn kube_vip_manifest(spec: &ClusterSpec, node: &PlannedNode) -> String {
    // From Kubernetes 1.29 admin.conf has no rights until `kubeadm init` has created
    // them, so kube-vip on the first control plane starts on super-admin.conf (the
    // bootstrap script switches it back afterwards).
    let kubeconfig = if node.role == (Role::ControlPlane { first: true })
        && spec.kubernetes_version.minor >= 29
    {
        "/etc/kubernetes/super-admin.conf"
    } else {
        "/etc/kubernetes/admin.conf"
    };
    let pod = Y::map([
        ("apiVersion", Y::s("v1")),
        ("kind", Y::s("Pod")),
        (
            "metadata",
            Y::map([
                ("name", Y::s("kube-vip")),
                ("namespace", Y::s("kube-system")),
            ]),
        ),
        (
            "spec",
            Y::map([
                ("containers", Y::Seq(vec![kube_vip_container(spec)])),
                (
                    "hostAliases",
                    Y::Seq(vec![Y::map([
                        ("hostnames", Y::strs(["kubernetes"])),
                        ("ip", Y::s("127.0.0.1")),
                    ])]),
                ),
                ("hostNetwork", Y::Bool(true)),
                (
                    "volumes",
                    Y::Seq(vec![Y::map([
                        ("name", Y::s("kubeconfig")),
                        ("hostPath", Y::map([("path", Y::s(kubeconfig))])),
                    ])]),
                ),
            ]),
        ),
    ]);
    pod.to_yaml()
}

/// The kube-vip container: ARP mode, leader election among the control planes.
fn kube_vip_container(spec: &ClusterSpec) -> Y {
    let env = [
        ("vip_arp", "true".to_string()),
        ("port", API_PORT.to_string()),
        ("vip_interface", VIP_INTERFACE_PLACEHOLDER.to_string()),
        ("vip_cidr", "32".to_string()),
        ("cp_enable", "true".to_string()),
        ("cp_namespace", "kube-system".to_string()),
        ("vip_ddns", "false".to_string()),
        ("vip_leaderelection", "true".to_string()),
        ("vip_leasename", "plndr-cp-lock".to_string()),
        ("vip_leaseduration", "15".to_string()),
        ("vip_renewdeadline", "10".to_string()),
        ("vip_retryperiod", "2".to_string()),
        ("address", spec.control_plane.endpoint.to_string()),
    ];
    Y::map([
        ("name", Y::s("kube-vip")),
        ("image", Y::s(KUBE_VIP_IMAGE)),
        ("imagePullPolicy", Y::s("IfNotPresent")),
        ("args", Y::strs(["manager"])),
        (
            "env",
            Y::Seq(
                env.into_iter()
                    .map(|(k, v)| Y::map([("name", Y::s(k)), ("value", Y::s(v))]))
                    .collect(),
            ),
        ),
        (
            "securityContext",
            Y::map([(
                "capabilities",
                Y::map([("add", Y::strs(["NET_ADMIN", "NET_RAW"]))]),
            )]),
        ),
        (
            "volumeMounts",
            Y::Seq(vec![Y::map([
                ("name", Y::s("kubeconfig")),
                ("mountPath", Y::s("/etc/kubernetes/admin.conf")),
            ])]),
        ),
    ])
}

/// A single-quoted shell word.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The script cloud-init runs: node preparation, then kubeadm, then (first control
/// plane) a bounded wait until the API server answers `/readyz` over TLS verified with the
/// cluster CA, so that cloud-init's phone-home, which follows, confirms it. Its output goes
/// to the console and to a 0600 log; on failure the log's tail, tokens masked, goes to
/// `failure_url`.
fn bootstrap_script(
    spec: &ClusterSpec,
    plan: &Plan,
    node: &PlannedNode,
    inputs: &NodeInputs,
) -> String {
    let hw = &node.hardware;
    let mut s = bootstrap_prelude(spec, node, inputs);
    let kube_vip = plan.kube_vip && node.role.is_control_plane();
    if kube_vip {
        s.push_str(&install_kube_vip_function(spec, hw));
    }
    match &node.role {
        Role::ControlPlane { first: true } => {
            s.push_str(&first_control_plane_steps(spec, node, kube_vip));
        }
        Role::ControlPlane { first: false } => {
            s.push_str(&format!(
                "\nlog \"== kubeadm join (control plane)\"\n\
                 kubeadm join --config {JOIN_CONFIG_PATH}\n"
            ));
            if kube_vip {
                // After the join: kubeadm's join pre-flight wants an empty manifests directory.
                s.push_str("install_kube_vip\n");
            }
        }
        Role::Worker { .. } => {
            s.push_str(&format!(
                "\nlog \"== kubeadm join\"\n\
                 n=1\n\
                 until kubeadm join --config {JOIN_CONFIG_PATH}; do\n\
                 \t[ \"$n\" -lt 3 ] || fail \"kubeadm join failed $n times\"\n\
                 \tlog \"kubeadm join failed (attempt $n); resetting and retrying in 30 s\"\n\
                 \tkubeadm reset -f || true\n\
                 \tn=$((n + 1))\n\
                 \tsleep 30\n\
                 done\n"
            ));
        }
    }
    s.push_str("\necho 0 >/run/kiln-bootstrap.rc\nlog \"== done\"\n");
    s
}

/// The script up to kubeadm: logging and failure reporting, then the node's preparation
/// (kernel modules, sysctls, swap off, containerd, kubelet).
fn bootstrap_prelude(spec: &ClusterSpec, node: &PlannedNode, inputs: &NodeInputs) -> String {
    let hw = &node.hardware;
    format!(
        "#!/bin/sh\n\
         # Written by Kiln for {host}: {role} of cluster {cluster} (Kubernetes {version}).\n\
         # Prepares the node (kernel modules, sysctls, swap off, containerd with the systemd\n\
         # cgroup driver, kubelet enabled), then runs kubeadm.\n\
         set -eu\n\
         LOG={log}\n\
         FAILURE_URL={failure}\n\
         if [ -z \"${{KILN_BOOTSTRAP_CHILD:-}}\" ]; then\n\
         \tumask 077\n\
         \tKILN_BOOTSTRAP_CHILD=1 \"$0\" \"$@\" 2>&1 | tee -a \"$LOG\"\n\
         \trc=$(cat /run/kiln-bootstrap.rc 2>/dev/null || echo 1)\n\
         \tif [ \"$rc\" != 0 ]; then\n\
         \t\techo \"kiln-bootstrap: reporting the failure to Kiln\"\n\
         \t\ttail -n 60 \"$LOG\" | sed 's/[a-z0-9]\\{{6\\}}\\.[a-z0-9]\\{{16\\}}/<bootstrap-token>/g' |\n\
         \t\t\tcurl -fsS -m 30 --retry 5 --retry-delay 5 -X POST -H 'Content-Type: text/plain' \\\n\
         \t\t\t\t--data-binary @- \"$FAILURE_URL\" >/dev/null || true\n\
         \tfi\n\
         \texit \"$rc\"\n\
         fi\n\
         echo 1 >/run/kiln-bootstrap.rc\n\
         log() {{ echo \"kiln-bootstrap: $*\"; }}\n\
         fail() {{ log \"FAILED: $*\"; exit 1; }}\n\
         \n\
         log \"== kernel modules and sysctls\"\n\
         for m in overlay br_netfilter; do\n\
         \tmodprobe \"$m\" || log \"warning: could not load kernel module $m\"\n\
         done\n\
         sysctl --system >/dev/null || log \"warning: sysctl --system failed\"\n\
         \n\
         log \"== swap off (the kubelet requires it)\"\n\
         swapoff -a || log \"warning: swapoff -a failed\"\n\
         if grep -Eq '^[^#].*[[:space:]]swap[[:space:]]' /etc/fstab 2>/dev/null; then\n\
         \tsed -i.kiln -E 's|^([^#].*[[:space:]]swap[[:space:]].*)$|# kiln: swap off for the kubelet: \\1|' /etc/fstab\n\
         fi\n\
         \n\
         log \"== container runtime and kubelet\"\n\
         if systemctl cat containerd.service >/dev/null 2>&1; then\n\
         \tsystemctl enable containerd\n\
         \tsystemctl restart containerd\n\
         else\n\
         \tlog \"warning: containerd.service is not installed; kubeadm needs a CRI runtime at {cri}\"\n\
         fi\n\
         if systemctl cat kubelet.service >/dev/null 2>&1; then\n\
         \tsystemctl enable kubelet\n\
         else\n\
         \tlog \"warning: kubelet.service is not installed\"\n\
         fi\n\
         command -v kubeadm >/dev/null || fail \"kubeadm is not installed in this image\"\n",
        host = hw.hostname,
        role = node.role,
        cluster = spec.name,
        version = spec.kubernetes_version,
        log = BOOTSTRAP_LOG_PATH,
        failure = sh_quote(&inputs.failure_url),
        cri = CRI_SOCKET,
    )
}

/// A shell function writing kube-vip's manifest with the node's interface filled in.
fn install_kube_vip_function(spec: &ClusterSpec, hw: &Hardware) -> String {
    // The NIC carrying the node's address: the VLAN interface cloud-init made, or
    // the one with the enrolled MAC.
    let find = match hw.vlan_id {
        Some(id) => format!("iface=vlan{id}"),
        None => format!(
            "iface=\n\
             \tfor d in /sys/class/net/*; do\n\
             \t\tif [ \"$(cat \"$d/address\" 2>/dev/null)\" = {mac} ]; then iface=${{d##*/}}; break; fi\n\
             \tdone\n\
             \t[ -n \"$iface\" ] || fail \"no network interface has MAC {mac_plain}\"",
            mac = sh_quote(&hw.mac.to_string()),
            mac_plain = hw.mac,
        ),
    };
    format!(
        "\n\
         install_kube_vip() {{\n\
         \t{find}\n\
         \tlog \"kube-vip: VIP {vip} on $iface\"\n\
         \tmkdir -p /etc/kubernetes/manifests\n\
         \tsed \"s/{placeholder}/$iface/\" {template} >{manifest}\n\
         \tchmod 0600 {manifest}\n\
         }}\n",
        vip = spec.control_plane.endpoint,
        placeholder = VIP_INTERFACE_PLACEHOLDER,
        template = KUBE_VIP_TEMPLATE_PATH,
        manifest = KUBE_VIP_MANIFEST_PATH,
    )
}

/// The first control plane: kube-vip, `kubeadm init`, the wait for the API server and
/// the CNI hook.
fn first_control_plane_steps(spec: &ClusterSpec, node: &PlannedNode, kube_vip: bool) -> String {
    let mut s = String::new();
    if kube_vip {
        s.push_str("\nlog \"== kube-vip (the endpoint must answer during kubeadm init)\"\ninstall_kube_vip\n");
    }
    s.push_str(&format!(
        "\nlog \"== kubeadm init\"\n\
         kubeadm init --config {INIT_CONFIG_PATH}\n\
         [ -s /etc/kubernetes/admin.conf ] || fail \"kubeadm init left no /etc/kubernetes/admin.conf\"\n"
    ));
    if kube_vip && spec.kubernetes_version.minor >= 29 {
        s.push_str(&format!(
            "sed -i 's|/etc/kubernetes/super-admin.conf|/etc/kubernetes/admin.conf|' {KUBE_VIP_MANIFEST_PATH}\n"
        ));
    }
    s.push_str(&readyz_wait(spec, node));
    if spec.network.cni != crate::spec::Cni::None {
        let cni = spec.network.cni.as_str();
        let pods = spec.network.pods;
        s.push_str(&format!(
            "\nlog \"== CNI: {cni}\"\n\
             if [ -x {CNI_HOOK_PATH} ]; then\n\
             \t{CNI_HOOK_PATH} {cni} {pods} || fail \"{CNI_HOOK_PATH} {cni} failed\"\n\
             else\n\
             \tlog \"this image has no {CNI_HOOK_PATH}: install {cni} (pod range {pods}) yourself; nodes stay NotReady until a CNI runs\"\n\
             fi\n"
        ));
    }
    s
}

/// Waits until the API server on this node answers `/readyz` (anonymous access to it is
/// allowed by Kubernetes' default RBAC), verified with the cluster CA: the node's address is
/// the advertise address, which kubeadm puts in the API server certificate's SANs.
fn readyz_wait(spec: &ClusterSpec, node: &PlannedNode) -> String {
    let url = format!("https://{}:{API_PORT}/readyz", node.hardware.ip);
    let minutes = READYZ_INTERVAL_SECS * READYZ_ATTEMPTS / 60;
    format!(
        "\nlog \"== waiting for the API server: {url} (up to {minutes} min)\"\n\
         n=1\n\
         until curl -fsS -m 5 --cacert /etc/kubernetes/pki/ca.crt {url} >/dev/null 2>/run/kiln-readyz.err; do\n\
         \t[ \"$n\" -lt {READYZ_ATTEMPTS} ] || fail \"the API server did not answer {url} within {minutes} min ($n attempts): $(tail -n 1 /run/kiln-readyz.err)\"\n\
         \tn=$((n + 1))\n\
         \tsleep {READYZ_INTERVAL_SECS}\n\
         done\n\
         echo \"{API_SERVER_READY_LINE} {url} (attempt $n); the admin kubeconfig: kiln cluster kubeconfig {name}\"\n",
        name = spec.name,
    )
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Runs the readiness wait with stand-ins for curl (fails until its `answer_on`th call)
    /// and sleep (returns at once): (exit status, output, curl calls).
    fn run_wait(answer_on: u32) -> (bool, String, u32) {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let calls = dir.path().join("calls");
        let stub = |name: &str, body: &str| {
            let path = bin.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            Command::new("chmod").arg("+x").arg(&path).status().unwrap();
        };
        stub(
            "curl",
            &format!(
                "echo \"$*\" >>{calls}\n\
                 [ \"$(wc -l <{calls})\" -ge {answer_on} ] && {{ echo ok; exit 0; }}\n\
                 echo 'curl: (7) Failed to connect to 10.0.0.5 port 6443' >&2; exit 7",
                calls = calls.display()
            ),
        );
        stub("sleep", "exit 0");
        let text = "kind: KilnCluster\nname: lab\nkubernetesVersion: \"1.30\"\ncontrolPlane:\n  count: 1\n  endpoint: 10.0.0.5\n  selector: {type: cp}\nnetwork:\n  pods: 192.168.0.0/16\n  services: 10.96.0.0/12\nosFamily: debian\nimage: test-os\n";
        let spec = ClusterSpec::parse(text, "lab.yaml").unwrap();
        let csv = "hostname,mac,ip_address,netmask,gateway,nameservers,labels,disk\ncp1,52:54:00:00:00:01,10.0.0.5,255.255.255.0,10.0.0.1,10.0.0.1,type=cp,/dev/vda\n";
        let hw = kiln_model::csv::parse_hardware_csv("hardware.csv", csv).unwrap();
        let plan = crate::plan(&spec, &hw).unwrap();
        let script = format!(
            "set -eu\nlog() {{ echo \"kiln-bootstrap: $*\"; }}\nfail() {{ log \"FAILED: $*\"; exit 1; }}\n{}",
            readyz_wait(&spec, &plan.nodes[0]).replace(
                "/run/kiln-readyz.err",
                &dir.path().join("err").display().to_string()
            )
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .output()
            .unwrap();
        let n = std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .count();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), text, n as u32)
    }

    #[test]
    fn the_readiness_wait_ends_when_the_api_server_answers() {
        let (ok, out, calls) = run_wait(3);
        assert!(ok, "{out}");
        assert_eq!(calls, 3, "{out}");
        assert!(
            out.contains(&format!(
                "{API_SERVER_READY_LINE} https://10.0.0.5:6443/readyz (attempt 3)"
            )),
            "{out}"
        );
        assert!(!out.contains("ok\n"), "curl's body is not printed: {out}");
    }

    #[test]
    fn the_readiness_wait_gives_up_after_its_attempts_with_curls_reason() {
        let (ok, out, calls) = run_wait(u32::MAX);
        assert!(!ok, "{out}");
        assert_eq!(calls, READYZ_ATTEMPTS, "{out}");
        assert!(
            out.contains("FAILED: the API server did not answer https://10.0.0.5:6443/readyz within 5 min (60 attempts): curl: (7) Failed to connect"),
            "{out}"
        );
        assert!(!out.contains(API_SERVER_READY_LINE), "{out}");
    }
}
