//! The cluster spec: what a user writes (EKS Anywhere's multi-document format, unchanged,
//! or Kiln's shorter `KilnCluster`), checked and reduced to one [`ClusterSpec`].
//!
//! Both formats land in the same type, so the rest of Kiln never knows which one was
//! used. Fields Kiln cannot honour are errors that say so; fields that change nothing
//! for provisioning (EKS Anywhere's bundles, rollout strategy, health checks, ...) are
//! accepted with a warning ([`ParsedSpec::warnings`]); anything else is an unknown field,
//! so typos do not pass. Every problem names the file, line, column and field path.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use kiln_model::labels;
use serde::{Deserialize, Serialize};

use crate::yaml::{Node, Pos, Value, parse_documents};

/// A validated cluster spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// The cluster name (a DNS label): kubeadm's clusterName.
    pub name: String,
    pub kubernetes_version: KubernetesVersion,
    pub control_plane: ControlPlaneSpec,
    /// Empty for a single-node (or control-plane-only) cluster.
    pub worker_groups: Vec<WorkerGroupSpec>,
    pub network: NetworkSpec,
    /// `overwrite: always`: the nodes' image2disk writes whatever disk the hint names, with
    /// no wrong-disk guard (Kiln's own spec; EKS Anywhere has no such field).
    #[serde(default)]
    pub overwrite_always: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlPlaneSpec {
    pub count: u32,
    /// Where the API server is reached: a VIP that kube-vip holds, or the address of the
    /// only control plane.
    pub endpoint: Ipv4Addr,
    pub machine: MachineSpec,
    /// `None`: Kiln's default (the control-plane taint when there are workers, none when
    /// there are not). `Some(list)`: exactly these, `Some([])` meaning untainted.
    pub taints: Option<Vec<Taint>>,
    pub labels: BTreeMap<String, String>,
    /// Extra names/addresses for the API server certificate.
    pub cert_sans: Vec<String>,
    /// Whether Kiln runs kube-vip on the control planes to hold the endpoint VIP
    /// (EKS Anywhere's `skipLoadBalancerDeployment: true` turns it off).
    pub kube_vip: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerGroupSpec {
    pub name: String,
    pub count: u32,
    pub machine: MachineSpec,
    pub taints: Vec<Taint>,
    pub labels: BTreeMap<String, String>,
}

/// How machines of one role are chosen and set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSpec {
    /// Labels a machine must all carry (hardware.csv `labels`).
    pub selector: BTreeMap<String, String>,
    pub os_family: OsFamily,
    /// The OS image to install, when the spec names one.
    pub image_url: Option<String>,
    pub users: Vec<UserSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    pub name: String,
    pub ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    Ubuntu,
    Redhat,
    Debian,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub pods: Ipv4Cidr,
    pub services: Ipv4Cidr,
    pub cni: Cni,
    /// The per-node pod range size (kube-controller-manager `--node-cidr-mask-size`).
    pub node_cidr_mask_size: Option<u8>,
}

/// The CNI the user asked for. Kiln does not carry CNI manifests: the first control
/// plane runs `/usr/local/sbin/kiln-install-cni <cni> <pod-cidr>` when the OS image
/// provides it, and says so in its log when it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    Cilium,
    Kindnetd,
    None,
}

impl Cni {
    pub fn as_str(self) -> &'static str {
        match self {
            Cni::Cilium => "cilium",
            Cni::Kindnetd => "kindnetd",
            Cni::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        };
        u32::from(ip) & mask == u32::from(self.addr)
    }

    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IPv4 CIDR block like 10.96.0.0/12");
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let c = Ipv4Cidr { addr, prefix };
        let base = Ipv4Cidr {
            addr: Ipv4Addr::from(
                u32::from(addr) & !(u32::MAX.checked_shr(prefix.into()).unwrap_or(0)),
            ),
            prefix,
        };
        if base.addr != addr {
            return Err(format!(
                "{s:?} has host bits set (the block starts at {})",
                base
            ));
        }
        Ok(c)
    }
}

/// `1.30` (kubeadm then deploys the newest 1.30 patch it can find, or its own version
/// when offline) or an exact `1.30.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesVersion {
    pub minor: u32,
    pub patch: Option<u32>,
}

/// The oldest Kubernetes minor whose kubeadm reads `kubeadm.k8s.io/v1beta3`.
pub const MIN_KUBERNETES_MINOR: u32 = 22;

impl KubernetesVersion {
    /// `kubeadm.k8s.io/v1beta3` below 1.31, `v1beta4` from 1.31 (where v1beta3 is deprecated).
    pub fn kubeadm_api_version(&self) -> &'static str {
        if self.minor >= 31 {
            "kubeadm.k8s.io/v1beta4"
        } else {
            "kubeadm.k8s.io/v1beta3"
        }
    }

    pub fn uses_v1beta4(&self) -> bool {
        self.minor >= 31
    }

    /// The value of ClusterConfiguration.kubernetesVersion: `v1.30.2`, or the release
    /// label `stable-1.30` (kubeadm rejects a bare `1.30`).
    pub fn kubeadm_value(&self) -> String {
        match self.patch {
            Some(p) => format!("v1.{}.{p}", self.minor),
            None => format!("stable-1.{}", self.minor),
        }
    }
}

impl fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.patch {
            Some(p) => write!(f, "1.{}.{p}", self.minor),
            None => write!(f, "1.{}", self.minor),
        }
    }
}

impl std::str::FromStr for KubernetesVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a Kubernetes version like 1.30 or 1.30.2");
        let t = s.strip_prefix('v').unwrap_or(s);
        let parts: Vec<&str> = t.split('.').collect();
        let num = |p: &str| -> Result<u32, String> {
            if p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            if p.len() > 1 && p.starts_with('0') {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let (major, minor, patch) = match parts.as_slice() {
            [a, b] => (num(a)?, num(b)?, None),
            [a, b, c] => (num(a)?, num(b)?, Some(num(c)?)),
            _ => return Err(bad()),
        };
        if major != 1 {
            return Err(format!("{s:?}: Kubernetes has no major version {major}"));
        }
        if minor < MIN_KUBERNETES_MINOR {
            return Err(format!(
                "{s:?}: Kiln sets clusters up with kubeadm's v1beta3/v1beta4 configuration, \
                 which needs Kubernetes 1.{MIN_KUBERNETES_MINOR} or later"
            ));
        }
        Ok(KubernetesVersion { minor, patch })
    }
}

/// One problem (an error or a warning) in a spec file, at a line and column; `field` is where
/// in the document, like `Cluster.spec.controlPlaneConfiguration.count`.
pub use kiln_model::Diagnostic;

/// An error in a spec file (the same shape as a warning).
pub type SpecError = Diagnostic;

/// Every problem found in a spec file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// A spec that parsed, with what the user should still be told: fields accepted but
/// without effect, documents nothing refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSpec {
    pub spec: ClusterSpec,
    /// In file order.
    pub warnings: Vec<Diagnostic>,
}

impl ClusterSpec {
    /// Parses and validates a spec file in either format. `file` names it in errors.
    /// Warnings are dropped: use [`ClusterSpec::parse_with_warnings`] where a user reads them.
    pub fn parse(text: &str, file: &str) -> Result<ClusterSpec, SpecErrors> {
        Self::parse_with_warnings(text, file).map(|p| p.spec)
    }

    /// Parses and validates a spec file in either format, keeping the warnings.
    pub fn parse_with_warnings(text: &str, file: &str) -> Result<ParsedSpec, SpecErrors> {
        let mut errs = Errs::new(file);
        let docs = match parse_documents(text) {
            Ok(d) => d,
            Err(e) => {
                errs.push(
                    Pos {
                        line: e.line,
                        column: e.column,
                    },
                    "",
                    format!("invalid YAML: {}", e.message),
                );
                return Err(errs.into_errors());
            }
        };
        if docs.is_empty() {
            errs.push(Pos::START, "", "the file holds no YAML document".into());
            return Err(errs.into_errors());
        }
        let spec = if docs.iter().any(|d| kind_of(d) == Some("KilnCluster")) {
            if docs.len() > 1 {
                errs.push(
                    docs[1].pos(),
                    "",
                    "a KilnCluster file holds exactly one document".into(),
                );
                None
            } else {
                crate::native::parse(&docs[0], &mut errs)
            }
        } else {
            crate::eksa::parse(&docs, &mut errs)
        };
        match spec {
            Some(spec) if errs.list.is_empty() => {
                let mut warnings = errs.warnings;
                warnings.sort_by_key(|w| (w.line, w.column));
                Ok(ParsedSpec { spec, warnings })
            }
            _ => {
                if errs.list.is_empty() {
                    errs.push(Pos::START, "", "the spec is incomplete".into());
                }
                Err(errs.into_errors())
            }
        }
    }

    /// The taints every control plane registers with: the spec's own, or by default the
    /// standard control-plane taint when workers exist and none when there are none
    /// (workloads must then run on the control planes).
    pub fn control_plane_taints(&self) -> Vec<Taint> {
        match &self.control_plane.taints {
            Some(t) => t.clone(),
            None if self.worker_groups.is_empty() => Vec::new(),
            None => vec![Taint {
                key: "node-role.kubernetes.io/control-plane".into(),
                value: None,
                effect: TaintEffect::NoSchedule,
            }],
        }
    }

    /// Total machines the spec asks for.
    pub fn machine_count(&self) -> u32 {
        self.control_plane.count + self.worker_groups.iter().map(|g| g.count).sum::<u32>()
    }

    /// Checks across fields that both formats share; each problem is reported at the
    /// field at fault (`at` says where each one is in the file).
    pub(crate) fn check(&self, errs: &mut Errs<'_>, at: &CheckAt) {
        // EKS Anywhere's rule: with no workers, workloads must run on the control planes.
        if self.worker_groups.is_empty()
            && self
                .control_plane
                .taints
                .as_ref()
                .is_some_and(|t| !t.is_empty())
        {
            errs.push(
                at.cp_taints.pos,
                &at.cp_taints.field,
                "cannot taint control plane when there is no worker node (workloads run on the \
                 control planes: remove the taints, or add a worker group)"
                    .into(),
            );
        }
        let net = &self.network;
        if net.services.prefix < 12 {
            errs.push(
                at.services.pos,
                &at.services.field,
                format!(
                    "{} is larger than the API server allows (/12 at most)",
                    net.services
                ),
            );
        }
        if net.pods.overlaps(&net.services) {
            errs.push(
                at.services.pos,
                &at.services.field,
                format!(
                    "the service range {} overlaps the pod range {} ({}, line {})",
                    net.services, net.pods, at.pods.field, at.pods.pos.line
                ),
            );
        }
        if let Some(mask) = net.node_cidr_mask_size
            && mask < net.pods.prefix
        {
            errs.push(
                at.node_mask.pos,
                &at.node_mask.field,
                format!(
                    "the per-node pod range /{mask} is larger than the pod range {} ({}, line {})",
                    net.pods, at.pods.field, at.pods.pos.line
                ),
            );
        }
        let endpoint = self.control_plane.endpoint;
        for (range, cidr, where_) in [
            ("pod", net.pods, &at.pods),
            ("service", net.services, &at.services),
        ] {
            if cidr.contains(endpoint) {
                errs.push(
                    at.endpoint.pos,
                    &at.endpoint.field,
                    format!(
                        "the endpoint {endpoint} lies inside the {range} range {cidr} ({}, line {})",
                        where_.field, where_.pos.line
                    ),
                );
            }
        }
    }
}

/// A field's path and where it is in the file (or, when it was left out and defaulted,
/// where its nearest written parent is).
#[derive(Debug, Clone)]
pub(crate) struct FieldAt {
    pub pos: Pos,
    pub field: String,
}

/// Where the fields that [`ClusterSpec::check`] compares are.
pub(crate) struct CheckAt {
    pub cp_taints: FieldAt,
    pub endpoint: FieldAt,
    pub pods: FieldAt,
    pub services: FieldAt,
    pub node_mask: FieldAt,
}

/// The field at `path` under `root` (whose own path is `root_field`): its position, or,
/// when it is absent, its nearest present ancestor's. A list points at its first item.
pub(crate) fn locate(root: &Node, root_field: &str, path: &[&str]) -> FieldAt {
    let mut node = root;
    for key in path {
        let Value::Map(entries) = &node.value else {
            break;
        };
        match entries.iter().find(|(k, _, _)| k == key) {
            Some((_, _, v)) if !v.is_null() => node = v,
            Some((_, key_pos, _)) => {
                // `key:` with nothing after it: point at the key.
                return FieldAt {
                    pos: *key_pos,
                    field: join_path(root_field, path),
                };
            }
            None => break,
        }
    }
    let pos = match &node.value {
        Value::Seq(items) if !items.is_empty() => items[0].pos(),
        _ => node.pos(),
    };
    FieldAt {
        pos,
        field: join_path(root_field, path),
    }
}

fn join_path(root: &str, path: &[&str]) -> String {
    let mut out = root.to_string();
    for p in path {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(p);
    }
    out
}

fn kind_of(doc: &Node) -> Option<&str> {
    let Value::Map(entries) = &doc.value else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _, _)| k == "kind")
        .and_then(|(_, _, v)| match &v.value {
            Value::Scalar { text, .. } => Some(text.as_str()),
            _ => None,
        })
}

/// Collects errors and warnings for one file.
pub(crate) struct Errs<'f> {
    pub file: &'f str,
    pub list: Vec<SpecError>,
    pub warnings: Vec<Diagnostic>,
}

impl<'f> Errs<'f> {
    pub fn new(file: &'f str) -> Errs<'f> {
        Errs {
            file,
            list: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn diagnostic(&self, at: impl Into<Pos>, field: &str, message: String) -> Diagnostic {
        let at = at.into();
        Diagnostic {
            file: self.file.to_string(),
            line: at.line,
            column: at.column,
            field: field.to_string(),
            message,
        }
    }

    pub fn push(&mut self, at: impl Into<Pos>, field: &str, message: String) {
        let d = self.diagnostic(at, field, message);
        self.list.push(d);
    }

    pub fn warn(&mut self, at: impl Into<Pos>, field: &str, message: String) {
        let d = self.diagnostic(at, field, message);
        self.warnings.push(d);
    }

    fn into_errors(mut self) -> SpecErrors {
        self.list.sort_by_key(|e| (e.line, e.column));
        SpecErrors(self.list)
    }
}

/// A mapping being read: remembers which keys were looked at, so the rest can be
/// reported as unknown.
pub(crate) struct MapView<'a> {
    pub path: String,
    pub pos: Pos,
    entries: &'a [(String, Pos, Node)],
    used: Vec<bool>,
    known: Vec<&'static str>,
}

impl<'a> MapView<'a> {
    /// `None` (with an error) when `node` is not a mapping; a null value reads as empty.
    pub fn new(node: &'a Node, path: &str, errs: &mut Errs<'_>) -> Option<MapView<'a>> {
        const EMPTY: &[(String, Pos, Node)] = &[];
        let entries: &[(String, Pos, Node)] = match &node.value {
            Value::Map(e) => e,
            _ if node.is_null() => EMPTY,
            _ => {
                errs.push(
                    node.pos(),
                    path,
                    format!("must be a mapping, found {}", node.kind_name()),
                );
                return None;
            }
        };
        Some(MapView {
            path: path.to_string(),
            pos: node.pos(),
            entries,
            used: vec![false; entries.len()],
            known: Vec::new(),
        })
    }

    pub fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`, if present and not null.
    pub fn get(&mut self, key: &'static str) -> Option<&'a Node> {
        self.known.push(key);
        let i = self.entries.iter().position(|(k, _, _)| k == key)?;
        self.used[i] = true;
        let node = &self.entries[i].2;
        (!node.is_null()).then_some(node)
    }

    /// Like `get`, with an error when the key is missing.
    pub fn req(&mut self, key: &'static str, errs: &mut Errs<'_>) -> Option<&'a Node> {
        let v = self.get(key);
        if v.is_none() {
            let field = self.field(key);
            errs.push(self.pos, &field, "is required".into());
        }
        v
    }

    /// A required key read with `read` (given the node and its field path).
    pub fn required<T>(
        &mut self,
        key: &'static str,
        errs: &mut Errs<'_>,
        read: impl FnOnce(&'a Node, &str, &mut Errs<'_>) -> Option<T>,
    ) -> Option<T> {
        let node = self.req(key, errs)?;
        read(node, &self.field(key), errs)
    }

    /// An optional key read with `read`, or `default` when it is absent or null.
    pub fn optional<T>(
        &mut self,
        key: &'static str,
        default: T,
        errs: &mut Errs<'_>,
        read: impl FnOnce(&'a Node, &str, &mut Errs<'_>) -> Option<T>,
    ) -> Option<T> {
        match self.get(key) {
            Some(node) => read(node, &self.field(key), errs),
            None => Some(default),
        }
    }

    /// Keys accepted and deliberately not used: they change nothing for Kiln.
    pub fn accept(&mut self, keys: &[&'static str]) {
        for key in keys {
            let _ = self.get(key);
        }
    }

    /// A key Kiln reads but that changes nothing for it: a warning saying why, when present.
    pub fn ignore(&mut self, key: &'static str, why: &str, errs: &mut Errs<'_>) {
        if let Some(node) = self.get(key) {
            errs.warn(
                node,
                &self.field(key),
                format!("accepted, but has no effect in Kiln: {why}"),
            );
        }
    }

    /// A boolean key Kiln can only take at `allowed`: the other value is refused with `why`.
    pub fn only(&mut self, key: &'static str, allowed: bool, why: &str, errs: &mut Errs<'_>) {
        if let Some(node) = self.get(key)
            && let Some(v) = boolean(node, &self.field(key), errs)
            && v != allowed
        {
            errs.push(
                node,
                &self.field(key),
                format!("{v} is not supported: {why}"),
            );
        }
    }

    /// A key Kiln cannot honour: an error naming it and saying why, when present.
    pub fn reject(&mut self, key: &'static str, why: &str, errs: &mut Errs<'_>) {
        if let Some(node) = self.get(key) {
            errs.push(
                node.pos(),
                &self.field(key),
                format!("not supported: {why}"),
            );
        }
    }

    /// Reports every key nobody asked for.
    pub fn finish(self, errs: &mut Errs<'_>) {
        let mut known = self.known.clone();
        known.sort_unstable();
        known.dedup();
        for (i, (key, line, _)) in self.entries.iter().enumerate() {
            if !self.used[i] {
                errs.push(
                    *line,
                    &self.field(key),
                    format!("unknown field (known here: {})", known.join(", ")),
                );
            }
        }
    }
}

/// A non-null scalar's text.
pub(crate) fn text<'a>(node: &'a Node, field: &str, errs: &mut Errs<'_>) -> Option<&'a str> {
    match &node.value {
        Value::Scalar { text, .. } => Some(text.trim()),
        _ => {
            errs.push(
                node.pos(),
                field,
                format!("must be a single value, found {}", node.kind_name()),
            );
            None
        }
    }
}

/// A list's items; anything else is an error saying it must be `what` ("a list of taints").
pub(crate) fn list_items<'a>(
    node: &'a Node,
    field: &str,
    what: &str,
    errs: &mut Errs<'_>,
) -> Option<&'a [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        _ => {
            errs.push(
                node.pos(),
                field,
                format!("must be {what}, found {}", node.kind_name()),
            );
            None
        }
    }
}

/// A list of mappings, each item read with `read` (given the items read so far, to refuse
/// duplicates); each item's unknown keys are reported after it. Every item is read, so every
/// error shows; `None` when the list or any item is wrong.
pub(crate) fn mapping_list<'a, 'f, T>(
    node: &'a Node,
    field: &str,
    what: &str,
    errs: &mut Errs<'f>,
    mut read: impl FnMut(&mut MapView<'a>, &[T], &mut Errs<'f>) -> Option<T>,
) -> Option<Vec<T>> {
    let items = list_items(node, field, what, errs)?;
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let Some(mut m) = MapView::new(item, &format!("{field}[{i}]"), errs) else {
            ok = false;
            continue;
        };
        let value = read(&mut m, &out, errs);
        m.finish(errs);
        match value {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A name that must be a DNS label: a cluster's or a Kubernetes object's.
pub(crate) fn dns_label(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<String> {
    let t = text(node, field, errs)?;
    if labels::is_dns_label(t) {
        Some(t.to_string())
    } else {
        errs.push(
            node.pos(),
            field,
            format!("{t:?} must be lower-case letters, digits and '-' (63 at most)"),
        );
        None
    }
}

pub(crate) fn count(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<u32> {
    let t = text(node, field, errs)?;
    match t.parse::<u32>() {
        Ok(0) => {
            errs.push(node.pos(), field, "must be at least 1".into());
            None
        }
        Ok(n) if n <= 1000 => Some(n),
        Ok(n) => {
            errs.push(node.pos(), field, format!("{n} is more than 1000 machines"));
            None
        }
        Err(_) => {
            errs.push(node.pos(), field, format!("{t:?} is not a whole number"));
            None
        }
    }
}

pub(crate) fn boolean(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<bool> {
    match text(node, field, errs)? {
        "true" => Some(true),
        "false" => Some(false),
        t => {
            errs.push(node.pos(), field, format!("{t:?} is not true or false"));
            None
        }
    }
}

pub(crate) fn parsed<T: std::str::FromStr<Err = String>>(
    node: &Node,
    field: &str,
    errs: &mut Errs<'_>,
) -> Option<T> {
    let t = text(node, field, errs)?;
    t.parse::<T>()
        .map_err(|m| errs.push(node.pos(), field, m))
        .ok()
}

pub(crate) fn endpoint_ip(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<Ipv4Addr> {
    let t = text(node, field, errs)?;
    // EKS Anywhere allows host:port; Kiln's API server listens on 6443 only.
    let host = match t.rsplit_once(':') {
        Some((h, "6443")) => h,
        Some((_, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            errs.push(
                node.pos(),
                field,
                format!("port {port}: the API server listens on 6443"),
            );
            return None;
        }
        _ => t,
    };
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) if !ip.is_unspecified() && !ip.is_broadcast() && !ip.is_loopback() => {
            Some(ip)
        }
        Ok(IpAddr::V4(ip)) => {
            errs.push(node.pos(), field, format!("{ip} cannot be an endpoint"));
            None
        }
        Ok(IpAddr::V6(_)) => {
            errs.push(
                node.pos(),
                field,
                "IPv6 endpoints are not supported (hardware.csv is IPv4)".into(),
            );
            None
        }
        Err(_) => {
            errs.push(
                node.pos(),
                field,
                format!("{t:?} is not an IPv4 address (the VIP or the control plane's address)"),
            );
            None
        }
    }
}

/// The per-node pod range size (`--node-cidr-mask-size`), from 8 to 30.
pub(crate) fn mask_size(t: &str, at: Pos, field: &str, errs: &mut Errs<'_>) -> Option<u8> {
    match t.parse::<u8>() {
        Ok(v) if (8..=30).contains(&v) => Some(v),
        _ => {
            errs.push(at, field, format!("{t:?} is not a mask size from 8 to 30"));
            None
        }
    }
}

/// Label selector or node labels: a mapping of Kubernetes label keys to values.
pub(crate) fn label_map(
    node: &Node,
    field: &str,
    errs: &mut Errs<'_>,
) -> Option<BTreeMap<String, String>> {
    let Value::Map(entries) = &node.value else {
        errs.push(
            node.pos(),
            field,
            format!("must be a mapping of labels, found {}", node.kind_name()),
        );
        return None;
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, line, v) in entries {
        let f = format!("{field}.{k}");
        if let Err(m) = labels::check_key(k) {
            errs.push(*line, &f, m);
            ok = false;
        }
        let value = if v.is_null() {
            Some("")
        } else {
            text(v, &f, errs)
        };
        match value {
            Some(val) => {
                if let Err(m) = labels::check_value(val) {
                    errs.push(v.pos(), &f, m);
                    ok = false;
                }
                out.insert(k.clone(), val.to_string());
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A non-empty selector (an empty one would take any machine).
pub(crate) fn selector(
    node: Option<&Node>,
    pos: Pos,
    field: &str,
    errs: &mut Errs<'_>,
) -> Option<BTreeMap<String, String>> {
    let Some(node) = node else {
        errs.push(
            pos,
            field,
            "is required: the labels that pick machines from hardware.csv".into(),
        );
        return None;
    };
    let map = label_map(node, field, errs)?;
    if map.is_empty() {
        errs.push(
            node.pos(),
            field,
            "must name at least one label (an empty selector would take any machine)".into(),
        );
        return None;
    }
    Some(map)
}

/// Node labels the kubelet may set on itself (`--node-labels`).
pub(crate) fn node_labels(
    node: &Node,
    field: &str,
    errs: &mut Errs<'_>,
) -> Option<BTreeMap<String, String>> {
    let map = label_map(node, field, errs)?;
    let mut ok = true;
    for key in map.keys() {
        if let Some(why) = kubelet_may_not_set(key) {
            errs.push(node.pos(), &format!("{field}.{key}"), why);
            ok = false;
        }
    }
    ok.then_some(map)
}

/// The kubelet refuses to label its own node under kubernetes.io / k8s.io, except for
/// a few prefixes and keys (NodeRestriction).
fn kubelet_may_not_set(key: &str) -> Option<String> {
    let (prefix, _) = key.rsplit_once('/')?;
    let reserved = |d: &str| prefix == d || prefix.ends_with(&format!(".{d}"));
    if !reserved("kubernetes.io") && !reserved("k8s.io") {
        return None;
    }
    let allowed_prefix = ["kubelet.kubernetes.io", "node.kubernetes.io"]
        .iter()
        .any(|p| prefix == *p || prefix.ends_with(&format!(".{p}")));
    const ALLOWED_KEYS: [&str; 9] = [
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
    ];
    if allowed_prefix || ALLOWED_KEYS.contains(&key) {
        return None;
    }
    Some(format!(
        "the kubelet may not set labels under {prefix} on its own node (NodeRestriction); \
         label the node after it joins instead"
    ))
}

pub(crate) fn taints(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<Vec<Taint>> {
    mapping_list(node, field, "a list of taints", errs, |m, _, errs| {
        let key = m.required("key", errs, |n, f, errs| {
            let t = text(n, f, errs)?;
            labels::check_key(t)
                .map_err(|e| errs.push(n.pos(), f, e))
                .ok()
                .map(|_| t.to_string())
        });
        let value = m.optional("value", None, errs, |n, f, errs| {
            let t = text(n, f, errs)?;
            labels::check_value(t)
                .map_err(|e| errs.push(n.pos(), f, e))
                .ok()
                .map(|_| (!t.is_empty()).then(|| t.to_string()))
        });
        let effect = m.required("effect", errs, |n, f, errs| match text(n, f, errs)? {
            "NoSchedule" => Some(TaintEffect::NoSchedule),
            "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
            "NoExecute" => Some(TaintEffect::NoExecute),
            t => {
                errs.push(
                    n.pos(),
                    f,
                    format!("{t:?} is not NoSchedule, PreferNoSchedule or NoExecute"),
                );
                None
            }
        });
        // Set by the API server, meaningless in a spec.
        m.accept(&["timeAdded"]);
        Some(Taint {
            key: key?,
            value: value?,
            effect: effect?,
        })
    })
}

pub(crate) fn cert_sans(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<Vec<String>> {
    let list = string_list(node, field, errs)?;
    let mut ok = true;
    for (s, line) in &list {
        if s.parse::<IpAddr>().is_err() && !labels::is_dns_subdomain(s) {
            errs.push(
                *line,
                field,
                format!("{s:?} is neither an IP address nor a DNS name"),
            );
            ok = false;
        }
    }
    ok.then(|| list.into_iter().map(|(s, _)| s).collect())
}

pub(crate) fn string_list(
    node: &Node,
    field: &str,
    errs: &mut Errs<'_>,
) -> Option<Vec<(String, Pos)>> {
    let items = list_items(node, field, "a list", errs)?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        out.push((
            text(item, &format!("{field}[{i}]"), errs)?.to_string(),
            item.pos(),
        ));
    }
    Some(out)
}

pub(crate) fn os_family(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<OsFamily> {
    match text(node, field, errs)? {
        "ubuntu" => Some(OsFamily::Ubuntu),
        "redhat" => Some(OsFamily::Redhat),
        "debian" => Some(OsFamily::Debian),
        "bottlerocket" => {
            errs.push(
                node.pos(),
                field,
                "bottlerocket is not supported: it has no cloud-init, and Kiln sets nodes up \
                 with cloud-init and kubeadm (use ubuntu, redhat or debian)"
                    .into(),
            );
            None
        }
        t => {
            errs.push(
                node.pos(),
                field,
                format!("{t:?} is not an OS family Kiln knows (ubuntu, redhat, debian)"),
            );
            None
        }
    }
}

pub(crate) fn image_url(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<String> {
    let t = text(node, field, errs)?;
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"));
    // The name of an image imported with `kiln image import` is also accepted.
    let is_image_name = !t.is_empty()
        && t.len() <= 63
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !t.contains(char::is_whitespace) => {
            Some(t.to_string())
        }
        None if is_image_name => Some(t.to_string()),
        _ => {
            errs.push(
                node.pos(),
                field,
                format!(
                    "{t:?} is neither an http:// or https:// URL nor the name of an image imported with `kiln image import`"
                ),
            );
            None
        }
    }
}

pub(crate) fn users(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<Vec<UserSpec>> {
    // A user with a bad key still counts for "listed twice"; the list then fails as a whole.
    let mut keys_ok = true;
    let users = mapping_list(node, field, "a list of users", errs, |m, earlier, errs| {
        let name = m.required("name", errs, |n, f, errs| {
            let t = text(n, f, errs)?;
            if !is_user_name(t) {
                errs.push(
                    n.pos(),
                    f,
                    format!("{t:?} is not a Linux user name (lower-case letters, digits, '_' and '-', 32 at most)"),
                );
                return None;
            }
            if earlier.iter().any(|u: &UserSpec| u.name == t) {
                errs.push(n.pos(), f, format!("user {t:?} is listed twice"));
                return None;
            }
            Some(t.to_string())
        });
        let mut keys = Vec::new();
        if let Some(n) = m.get("sshAuthorizedKeys") {
            let kf = m.field("sshAuthorizedKeys");
            match string_list(n, &kf, errs) {
                Some(list) => {
                    for (k, line) in list {
                        match check_ssh_key(&k) {
                            Ok(()) => keys.push(k),
                            Err(why) => {
                                errs.push(line, &kf, why);
                                keys_ok = false;
                            }
                        }
                    }
                }
                None => keys_ok = false,
            }
        }
        Some(UserSpec {
            name: name?,
            ssh_authorized_keys: keys,
        })
    })?;
    keys_ok.then_some(users)
}

fn is_user_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// An OpenSSH public key line: type, base64 body, optional comment.
fn check_ssh_key(k: &str) -> Result<(), String> {
    const TYPES: [&str; 8] = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-dss",
    ];
    if k.trim().is_empty() {
        return Err(
            "an empty key: Kiln does not make SSH keys; paste a public key or remove the entry"
                .into(),
        );
    }
    if k.contains('\n') {
        return Err("one key per entry (this one spans several lines)".into());
    }
    let mut parts = k.split_whitespace();
    let ty = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("");
    let shown: String = k.chars().take(24).collect();
    if !TYPES.contains(&ty) {
        return Err(format!(
            "{shown:?}... is not an OpenSSH public key (it should start with ssh-ed25519, ssh-rsa, ecdsa-sha2-... )"
        ));
    }
    let b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    if body.len() < 16 || !body.chars().all(b64) {
        return Err(format!("{shown:?}...: the key body is not base64"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v: KubernetesVersion = "1.30".parse().unwrap();
        assert_eq!(v.kubeadm_api_version(), "kubeadm.k8s.io/v1beta3");
        assert_eq!(v.kubeadm_value(), "stable-1.30");
        let v: KubernetesVersion = "v1.31.2".parse().unwrap();
        assert_eq!(v.kubeadm_api_version(), "kubeadm.k8s.io/v1beta4");
        assert_eq!(v.kubeadm_value(), "v1.31.2");
        assert_eq!(v.to_string(), "1.31.2");
        assert!(
            "1.21"
                .parse::<KubernetesVersion>()
                .unwrap_err()
                .contains("1.22")
        );
        assert!("2.0".parse::<KubernetesVersion>().is_err());
        assert!("1.3x".parse::<KubernetesVersion>().is_err());
        assert!("1.30.1.2".parse::<KubernetesVersion>().is_err());
        assert!("1.030".parse::<KubernetesVersion>().is_err());
    }

    #[test]
    fn cidrs() {
        let c: Ipv4Cidr = "10.96.0.0/12".parse().unwrap();
        assert!(c.contains("10.100.0.1".parse().unwrap()));
        assert!(!c.contains("10.112.0.1".parse().unwrap()));
        assert!(
            "10.96.0.1/12"
                .parse::<Ipv4Cidr>()
                .unwrap_err()
                .contains("host bits set (the block starts at 10.96.0.0/12)")
        );
        assert!("10.96.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.96.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("fd00::/64".parse::<Ipv4Cidr>().is_err());
        let p: Ipv4Cidr = "192.168.0.0/16".parse().unwrap();
        assert!(!p.overlaps(&c));
        assert!(p.overlaps(&"192.168.4.0/24".parse().unwrap()));
    }

    #[test]
    fn ssh_keys_and_user_names() {
        assert!(check_ssh_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC9 me@host").is_ok());
        assert!(check_ssh_key("").unwrap_err().contains("empty key"));
        assert!(check_ssh_key("ssh-foo AAAAC3NzaC1lZDI1NTE5AAAAIC9").is_err());
        assert!(check_ssh_key("ssh-rsa not*base64!!!!!!!!!").is_err());
        assert!(is_user_name("ec2-user"));
        assert!(!is_user_name("Root"));
        assert!(!is_user_name("1abc"));
    }

    #[test]
    fn kubelet_label_restrictions() {
        assert!(kubelet_may_not_set("node-role.kubernetes.io/worker").is_some());
        assert!(kubelet_may_not_set("example.k8s.io/x").is_some());
        assert!(kubelet_may_not_set("node.kubernetes.io/pool").is_none());
        assert!(kubelet_may_not_set("topology.kubernetes.io/zone").is_none());
        assert!(kubelet_may_not_set("example.com/rack").is_none());
        assert!(kubelet_may_not_set("rack").is_none());
    }
}
