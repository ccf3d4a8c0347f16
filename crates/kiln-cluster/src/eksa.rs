//! EKS Anywhere's bare-metal cluster file, as users bring it: a `Cluster`, a
//! `TinkerbellDatacenterConfig`, `TinkerbellMachineConfig`s and perhaps
//! `TinkerbellTemplateConfig`s, in any order, in one multi-document YAML file (apiVersion
//! `anywhere.eks.amazonaws.com/v1alpha1`). Read as EKS Anywhere reads it: only the
//! datacenter and machine configs the Cluster names are used (the others draw a warning),
//! unnamed worker groups are `md-0`, `md-1`, … by position, a templateRef naming no template in the file
//! means the default one (`pkg/providers/tinkerbell/template.go`).
//!
//! Field list from EKS Anywhere's API types (`pkg/api/v1alpha1/cluster_types.go`,
//! `tinkerbelldatacenterconfig_types.go`, `tinkerbellmachineconfig_types.go`,
//! `hostosconfig_types.go` in github.com/aws/eks-anywhere).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use kiln_model::labels;

use crate::spec::{
    self, CheckAt, ClusterSpec, Cni, ControlPlaneSpec, Diagnostic, Errs, Ipv4Cidr,
    KubernetesVersion, MachineSpec, MapView, NetworkSpec, OsFamily, TaintEffect, UserSpec,
    WorkerGroupSpec, locate, text,
};
use crate::yaml::{Node, Pos, Value};

pub const API_VERSION: &str = "anywhere.eks.amazonaws.com/v1alpha1";

/// The name EKS Anywhere gives the first worker group when it has none.
/// Unnamed worker groups are md-0, md-1, … by position.
pub(crate) const DEFAULT_GROUP_PREFIX: &str = "md-";

/// 192.168.0.0/16, EKS Anywhere's default pod range.
pub(crate) const DEFAULT_PODS: Ipv4Cidr = Ipv4Cidr {
    addr: Ipv4Addr::new(192, 168, 0, 0),
    prefix: 16,
};
/// 10.96.0.0/12, EKS Anywhere's default service range.
pub(crate) const DEFAULT_SERVICES: Ipv4Cidr = Ipv4Cidr {
    addr: Ipv4Addr::new(10, 96, 0, 0),
    prefix: 12,
};
/// The network of a spec that names none (both formats).
pub(crate) const DEFAULT_NETWORK: NetworkSpec = NetworkSpec {
    pods: DEFAULT_PODS,
    services: DEFAULT_SERVICES,
    cni: Cni::Cilium,
    node_cidr_mask_size: None,
};

/// A TinkerbellMachineConfig, before the Cluster says which role uses it.
struct MachineConfig {
    pos: Pos,
    selector: Option<BTreeMap<String, String>>,
    os_family: Option<OsFamily>,
    /// With the position of `osImageURL`.
    image_url: Option<(String, Pos)>,
    users: Vec<UserSpec>,
    /// The TinkerbellTemplateConfig its templateRef names, with the position of that
    /// name (an empty name, like an empty templateRef, is the default template).
    template: Option<(String, Pos)>,
    used: bool,
    /// Its own problems, kept apart: EKS Anywhere reads only the machine configs the
    /// Cluster names, so those of an unused one are warnings, not errors.
    problems: Vec<Diagnostic>,
    notes: Vec<Diagnostic>,
}

struct Datacenter {
    name: String,
    pos: Pos,
    /// With the position of `osImageURL`.
    image_url: Option<(String, Pos)>,
}

/// A `machineGroupRef` / `datacenterRef`.
struct Ref {
    kind: String,
    name: String,
    kind_pos: Pos,
    name_pos: Pos,
    field: String,
}

pub(crate) fn parse(docs: &[Node], errs: &mut Errs<'_>) -> Option<ClusterSpec> {
    let mut read = Documents::default();
    for doc in docs {
        if let Some((kind, name, spec_node)) = document_header(doc, errs) {
            read.add(doc, kind, name, spec_node, errs);
        }
    }
    let Documents {
        cluster,
        datacenters,
        mut machines,
        templates,
    } = read;
    let Some(cluster) = cluster else {
        errs.push(
            Pos::START,
            "kind",
            "the file has no Cluster document (kind: Cluster)".into(),
        );
        return None;
    };
    let spec = cluster_doc(cluster, &datacenters, &mut machines, errs);
    let used_templates = settle_machine_configs(machines, &templates, errs);
    for (name, pos) in &templates {
        if !used_templates.contains(name) {
            errs.warn(
                *pos,
                &format!("TinkerbellTemplateConfig[{name}]"),
                "no templateRef of a used machine config names this template: it is not used"
                    .into(),
            );
        }
    }
    spec
}

/// The documents of the file, by kind, before the Cluster says which are used.
#[derive(Default)]
struct Documents<'a> {
    cluster: Option<&'a Node>,
    datacenters: Vec<Datacenter>,
    machines: BTreeMap<String, MachineConfig>,
    /// TinkerbellTemplateConfigs by name, with where they are.
    templates: BTreeMap<String, Pos>,
}

/// A document's kind, name and spec, once its apiVersion and top-level fields are checked;
/// `None` when the document cannot be read further.
fn document_header<'a>(doc: &'a Node, errs: &mut Errs<'_>) -> Option<(&'a str, String, &'a Node)> {
    let mut top = MapView::new(doc, "", errs)?;
    let kind = top.req("kind", errs).and_then(|n| text(n, "kind", errs));
    let api = top
        .get("apiVersion")
        .and_then(|n| text(n, "apiVersion", errs));
    let kind = kind?;
    if let Some(why) = unsupported_kind(kind) {
        errs.push(doc.pos(), "kind", format!("{kind}: {why}"));
        return None;
    }
    match api {
        Some(API_VERSION) => {}
        Some(other) => errs.push(
            doc.pos(),
            &format!("{kind}.apiVersion"),
            format!("{other:?}: Kiln reads {API_VERSION}"),
        ),
        None => errs.push(
            doc.pos(),
            &format!("{kind}.apiVersion"),
            format!("is required ({API_VERSION})"),
        ),
    }
    let name = metadata_name(&mut top, kind, errs);
    let spec_node = top.req("spec", errs);
    // Written by a cluster, never by a user; harmless when copied from one.
    top.accept(&["status"]);
    top.finish(errs);
    Some((kind, name?, spec_node?))
}

impl<'a> Documents<'a> {
    fn add(
        &mut self,
        doc: &'a Node,
        kind: &str,
        name: String,
        spec_node: &Node,
        errs: &mut Errs<'_>,
    ) {
        match kind {
            "Cluster" => {
                if let Some(first) = self.cluster {
                    errs.push(
                        doc.pos(),
                        "kind",
                        format!("a second Cluster (the first is on line {})", first.line),
                    );
                } else {
                    self.cluster = Some(doc);
                }
            }
            "TinkerbellDatacenterConfig" => {
                let image_url = datacenter(spec_node, &name, errs);
                self.datacenters.push(Datacenter {
                    name,
                    pos: doc.pos(),
                    image_url,
                });
            }
            "TinkerbellTemplateConfig" => {
                template_config(spec_node, &name, errs);
                match self.templates.entry(name) {
                    std::collections::btree_map::Entry::Occupied(first) => errs.push(
                        doc.pos(),
                        "metadata.name",
                        format!(
                            "a second TinkerbellTemplateConfig {:?} (the first is on line {})",
                            first.key(),
                            first.get().line
                        ),
                    ),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(doc.pos());
                    }
                }
            }
            "TinkerbellMachineConfig" => {
                let mc = machine_config(spec_node, &name, errs.file);
                if let Some(first) = self.machines.get(&name) {
                    errs.push(
                        doc.pos(),
                        "metadata.name",
                        format!(
                            "a second TinkerbellMachineConfig {name:?} (the first is on line {})",
                            first.pos.line
                        ),
                    );
                } else {
                    self.machines.insert(name, mc);
                }
            }
            other => errs.push(
                doc.pos(),
                "kind",
                format!(
                    "unknown kind {other:?} (Kiln reads Cluster, TinkerbellDatacenterConfig, \
                     TinkerbellMachineConfig, TinkerbellTemplateConfig, or one KilnCluster)"
                ),
            ),
        }
    }
}

/// Reports each machine config's problems: as errors when the Cluster uses it, as
/// warnings when not. Returns the templates that used machine configs name.
fn settle_machine_configs(
    machines: BTreeMap<String, MachineConfig>,
    templates: &BTreeMap<String, Pos>,
    errs: &mut Errs<'_>,
) -> Vec<String> {
    let mut used_templates = Vec::new();
    for (name, mut mc) in machines {
        let ref_field = format!("TinkerbellMachineConfig[{name}].spec.templateRef.name");
        match &mc.template {
            // A named template in the file would replace the installation itself.
            Some((t, at)) if templates.contains_key(t) => {
                mc.problems.push(Diagnostic {
                    file: errs.file.to_string(),
                    line: at.line,
                    column: at.column,
                    field: ref_field,
                    message: format!(
                        "not supported: the TinkerbellTemplateConfig {t:?} (line {}): Kiln \
                         installs machines with its own workflow templates (workflows/), not \
                         Tinkerbell's; leave templateRef empty for the default installation",
                        templates[t].line
                    ),
                });
                if mc.used {
                    used_templates.push(t.clone());
                }
            }
            // As EKS Anywhere: a name with no such document means the default template.
            Some((t, at)) => mc.notes.push(Diagnostic {
                file: errs.file.to_string(),
                line: at.line,
                column: at.column,
                field: ref_field,
                message: format!(
                    "no TinkerbellTemplateConfig named {t:?} in this file: the default \
                     installation is used (as EKS Anywhere uses its default template)"
                ),
            }),
            None => {}
        }
        if mc.used {
            errs.list.extend(mc.problems);
            errs.warnings.extend(mc.notes);
            continue;
        }
        // As EKS Anywhere: a machine config no group names is not read (a generated
        // file keeps its worker config when the worker groups are removed).
        errs.warn(
            mc.pos,
            &format!("TinkerbellMachineConfig[{name}]"),
            "no machineGroupRef of the Cluster names this machine config: it is not used".into(),
        );
        for p in mc.problems.into_iter().chain(mc.notes) {
            errs.warnings.push(Diagnostic {
                message: format!("{} (in an unused machine config)", p.message),
                ..p
            });
        }
    }
    used_templates
}

/// Kinds from the EKS Anywhere API that Kiln knows but does not do.
fn unsupported_kind(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "GitOpsConfig" | "FluxConfig" => "Kiln does not set up GitOps",
        "OIDCConfig" | "AWSIamConfig" => "Kiln does not configure identity providers",
        "TinkerbellDatacenterConfig" | "TinkerbellMachineConfig" | "TinkerbellTemplateConfig" => {
            return None;
        }
        k if k.ends_with("DatacenterConfig") || k.ends_with("MachineConfig") => {
            "Kiln provisions bare metal only (the Tinkerbell provider's kinds)"
        }
        _ => return None,
    })
}

fn metadata_name(top: &mut MapView<'_>, kind: &str, errs: &mut Errs<'_>) -> Option<String> {
    let field = format!("{kind}.metadata");
    let node = top.req("metadata", errs)?;
    let mut m = MapView::new(node, &field, errs)?;
    let name = m.required("name", errs, spec::dns_label);
    // Namespace, labels and annotations of the EKS Anywhere objects themselves; the rest
    // is written by the API server (a file saved from a running cluster carries it).
    m.accept(&[
        "namespace",
        "annotations",
        "labels",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generateName",
        "selfLink",
        "ownerReferences",
        "finalizers",
        "managedFields",
    ]);
    m.finish(errs);
    name
}

fn datacenter(node: &Node, name: &str, errs: &mut Errs<'_>) -> Option<(String, Pos)> {
    let mut m = MapView::new(
        node,
        &format!("TinkerbellDatacenterConfig[{name}].spec"),
        errs,
    )?;
    // tinkerbellIP is where EKS Anywhere runs its Tinkerbell stack; Kiln serves from its
    // own address, so the value only has to be an address (EKS Anywhere requires it).
    if let Some(n) = m.req("tinkerbellIP", errs) {
        let f = m.field("tinkerbellIP");
        if let Some(t) = text(n, &f, errs)
            && t.parse::<std::net::IpAddr>().is_err()
        {
            errs.push(n, &f, format!("{t:?} is not an IP address"));
        }
    }
    let image = optional_image(&mut m, errs);
    m.ignore(
        "hookImagesURLPath",
        "Kiln boots machines into its own agent, not Tinkerbell's HookOS",
        errs,
    );
    m.ignore(
        "hookIsoURL",
        "Kiln boots machines into its own agent, not Tinkerbell's HookOS",
        errs,
    );
    m.ignore(
        "skipLoadBalancerDeployment",
        "Kiln runs no Tinkerbell stack, so there is no load balancer for it",
        errs,
    );
    m.ignore(
        "loadBalancerInterface",
        "Kiln runs no Tinkerbell stack, so there is no load balancer for it",
        errs,
    );
    m.only(
        "isoBoot",
        false,
        "Kiln boots machines over the network (PXE/iPXE), not from a virtual-media ISO",
        errs,
    );
    m.finish(errs);
    image
}

/// `osImageURL`, where an empty string means unset (EKS Anywhere's docs ask for `""` on
/// one side when the other sets it).
fn optional_image(m: &mut MapView<'_>, errs: &mut Errs<'_>) -> Option<(String, Pos)> {
    let n = m.get("osImageURL")?;
    if matches!(&n.value, Value::Scalar { text, .. } if text.trim().is_empty()) {
        return None;
    }
    spec::image_url(n, &m.field("osImageURL"), errs).map(|u| (u, n.pos()))
}

fn machine_config(node: &Node, name: &str, file: &str) -> MachineConfig {
    let field = format!("TinkerbellMachineConfig[{name}].spec");
    let mut own = Errs::new(file);
    let errs = &mut own;
    let mut mc = MachineConfig {
        pos: node.pos(),
        selector: None,
        os_family: None,
        image_url: None,
        users: Vec::new(),
        template: None,
        used: false,
        problems: Vec::new(),
        notes: Vec::new(),
    };
    if let Some(mut m) = MapView::new(node, &field, errs) {
        let sel = m.get("hardwareSelector");
        mc.selector = spec::selector(sel, m.pos, &m.field("hardwareSelector"), errs);
        m.reject(
            "hardwareAffinity",
            "Kiln picks machines with hardwareSelector labels only",
            errs,
        );
        mc.os_family = m.required("osFamily", errs, spec::os_family);
        mc.image_url = optional_image(&mut m, errs);
        if let Some(n) = m.get("templateRef") {
            mc.template = template_ref(n, &m.field("templateRef"), errs);
        }
        if let Some(n) = m.get("users") {
            mc.users = spec::users(n, &m.field("users"), errs).unwrap_or_default();
        }
        m.reject(
            "hostOSConfiguration",
            "Kiln does not configure NTP, CA bundles or Bottlerocket settings on the host",
            errs,
        );
        m.finish(errs);
    }
    mc.problems = own.list;
    mc.notes = own.warnings;
    mc
}

/// The template a templateRef names; `None` for the default (`{}`, or an empty name).
fn template_ref(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<(String, Pos)> {
    let mut m = MapView::new(node, field, errs)?;
    let kind = m.get("kind");
    let name = m.get("name");
    let kf = m.field("kind");
    let nf = m.field("name");
    m.finish(errs);
    if let Some(k) = kind
        && let Some(t) = text(k, &kf, errs)
        && !t.is_empty()
        && t != "TinkerbellTemplateConfig"
    {
        errs.push(
            k,
            &kf,
            format!("{t:?}: a templateRef names a TinkerbellTemplateConfig"),
        );
    }
    let n = name?;
    let t = text(n, &nf, errs)?;
    (!t.is_empty()).then(|| (t.to_string(), n.pos()))
}

/// A TinkerbellTemplateConfig: its workflow is Tinkerbell's, read only to be refused if used.
fn template_config(node: &Node, name: &str, errs: &mut Errs<'_>) {
    let Some(mut m) = MapView::new(
        node,
        &format!("TinkerbellTemplateConfig[{name}].spec"),
        errs,
    ) else {
        return;
    };
    m.accept(&["template"]);
    m.finish(errs);
}

fn reference(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<Ref> {
    let mut m = MapView::new(node, field, errs)?;
    let owned_text = |n, f: &str, errs: &mut Errs<'_>| text(n, f, errs).map(str::to_string);
    let kind = m.required("kind", errs, |n, f, errs| {
        Some((owned_text(n, f, errs)?, n.pos()))
    });
    let name = m.required("name", errs, |n, f, errs| {
        Some((owned_text(n, f, errs)?, n.pos()))
    });
    m.finish(errs);
    let ((kind, kind_pos), (name, name_pos)) = (kind?, name?);
    Some(Ref {
        kind,
        name,
        kind_pos,
        name_pos,
        field: field.to_string(),
    })
}

/// Resolves a machineGroupRef to a machine spec; the datacenter's image applies
/// unless the machine config has its own.
fn resolve_machine(
    r: &Ref,
    machines: &mut BTreeMap<String, MachineConfig>,
    datacenter_image: &Option<(String, Pos)>,
    errs: &mut Errs<'_>,
) -> Option<MachineSpec> {
    if r.kind != "TinkerbellMachineConfig" {
        errs.push(
            r.kind_pos,
            &format!("{}.kind", r.field),
            format!("{:?}: Kiln's machines are TinkerbellMachineConfig", r.kind),
        );
        return None;
    }
    let Some(mc) = machines.get_mut(&r.name) else {
        let known: Vec<&str> = machines.keys().map(String::as_str).collect();
        errs.push(
            r.name_pos,
            &format!("{}.name", r.field),
            format!(
                "no TinkerbellMachineConfig named {:?} in this file (there is: {})",
                r.name,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
        return None;
    };
    let first_use = !mc.used;
    mc.used = true;
    if first_use && let (Some((own, at)), Some((_, dc_at))) = (&mc.image_url, datacenter_image) {
        errs.push(
            *at,
            &format!("TinkerbellMachineConfig[{}].spec.osImageURL", r.name),
            format!(
                "{own:?}: osImageURL is also set on the TinkerbellDatacenterConfig (line {}); \
                 set it in one place",
                dc_at.line
            ),
        );
    }
    Some(MachineSpec {
        selector: mc.selector.clone()?,
        os_family: mc.os_family?,
        image_url: mc
            .image_url
            .as_ref()
            .map(|(u, _)| u.clone())
            .or_else(|| datacenter_image.as_ref().map(|(u, _)| u.clone())),
        users: mc.users.clone(),
    })
}

fn cluster_doc(
    doc: &Node,
    datacenters: &[Datacenter],
    machines: &mut BTreeMap<String, MachineConfig>,
    errs: &mut Errs<'_>,
) -> Option<ClusterSpec> {
    let mut top = MapView::new(doc, "", errs)?;
    let name = top.get("metadata").and_then(metadata_name_text);
    let spec_node = top.get("spec")?;
    let mut s = MapView::new(spec_node, "Cluster.spec", errs)?;

    let version = s.required("kubernetesVersion", errs, spec::parsed::<KubernetesVersion>);
    let datacenter_image = cluster_datacenter(&mut s, datacenters, errs);

    let control_plane = s.required("controlPlaneConfiguration", errs, |n, f, errs| {
        control_plane(n, f, machines, &datacenter_image, errs)
    });

    let mut worker_groups = Some(Vec::new());
    if let Some(n) = s.get("workerNodeGroupConfigurations") {
        worker_groups = workers(
            n,
            &s.field("workerNodeGroupConfigurations"),
            version,
            machines,
            &datacenter_image,
            errs,
        );
    }

    let network = s.optional("clusterNetwork", DEFAULT_NETWORK, errs, cluster_network);

    management_cluster(&mut s, name.as_deref(), errs);
    for (key, why) in IGNORED_CLUSTER_FIELDS {
        s.ignore(key, why, errs);
    }
    for (key, why) in REJECTED_CLUSTER_FIELDS {
        s.reject(key, why, errs);
    }
    s.finish(errs);

    let spec = ClusterSpec {
        name: name?,
        kubernetes_version: version?,
        control_plane: control_plane?,
        worker_groups: worker_groups?,
        network: network?,
        overwrite_always: false,
    };
    spec.check(errs, &cluster_check_at(spec_node));
    Some(spec)
}

/// EKS Anywhere's own lifecycle and packaging: nothing for Kiln to act on.
const IGNORED_CLUSTER_FIELDS: [(&str, &str); 6] = [
    ("eksaVersion", "it selects EKS Anywhere's release bundle"),
    ("bundlesRef", "it selects EKS Anywhere's release bundle"),
    (
        "machineHealthCheck",
        "Kiln does not remediate unhealthy machines",
    ),
    (
        "packages",
        "Kiln does not install EKS Anywhere's curated packages",
    ),
    ("licenseToken", "it licenses EKS Anywhere's support"),
    ("overrideClusterSpecFile", "it is EKS Anywhere's own"),
];

/// Cluster fields for features Kiln does not have.
const REJECTED_CLUSTER_FIELDS: [(&str, &str); 7] = [
    (
        "externalEtcdConfiguration",
        "Kiln runs etcd on the control planes (stacked)",
    ),
    ("proxyConfiguration", "Kiln does not configure HTTP proxies"),
    (
        "registryMirrorConfiguration",
        "Kiln does not configure registry mirrors",
    ),
    (
        "identityProviderRefs",
        "Kiln does not configure identity providers",
    ),
    ("gitOpsRef", "Kiln does not set up GitOps"),
    (
        "podIamConfig",
        "Kiln does not set a service-account issuer for pod IAM",
    ),
    (
        "etcdEncryption",
        "Kiln does not configure etcd encryption providers",
    ),
];

/// `metadata.name`, when it is text (its problems are reported by [`metadata_name`]).
fn metadata_name_text(meta: &Node) -> Option<String> {
    match &meta.value {
        Value::Map(e) => e
            .iter()
            .find(|(k, _, _)| k == "name")
            .and_then(|(_, _, v)| {
                if let Value::Scalar { text, .. } = &v.value {
                    Some(text.clone())
                } else {
                    None
                }
            }),
        _ => None,
    }
}

/// Datacenter: the ref must name the one datacenter document. Returns its image URL.
fn cluster_datacenter(
    s: &mut MapView<'_>,
    datacenters: &[Datacenter],
    errs: &mut Errs<'_>,
) -> Option<(String, Pos)> {
    let dc_ref = s.required("datacenterRef", errs, reference);
    let mut datacenter_image: Option<(String, Pos)> = None;
    if let Some(r) = &dc_ref {
        if r.kind != "TinkerbellDatacenterConfig" {
            errs.push(
                r.kind_pos,
                &format!("{}.kind", r.field),
                format!(
                    "{:?}: Kiln provisions bare metal (TinkerbellDatacenterConfig)",
                    r.kind
                ),
            );
        } else if let Some(dc) = datacenters.iter().find(|d| d.name == r.name) {
            datacenter_image = dc.image_url.clone();
        } else {
            errs.push(
                r.name_pos,
                &format!("{}.name", r.field),
                format!(
                    "no TinkerbellDatacenterConfig named {:?} in this file",
                    r.name
                ),
            );
        }
    }
    for dc in datacenters {
        // As EKS Anywhere: only the datacenter the Cluster names is read.
        if dc_ref.as_ref().is_some_and(|r| r.name != dc.name) {
            errs.warn(
                dc.pos,
                &format!("TinkerbellDatacenterConfig[{}]", dc.name),
                "the Cluster's datacenterRef does not name this datacenter: it is not used".into(),
            );
        }
    }
    datacenter_image
}

/// A standalone cluster manages itself; Kiln makes only those.
fn management_cluster(s: &mut MapView<'_>, name: Option<&str>, errs: &mut Errs<'_>) {
    let Some(n) = s.get("managementCluster") else {
        return;
    };
    let f = s.field("managementCluster");
    let Some(mut mm) = MapView::new(n, &f, errs) else {
        return;
    };
    let mgmt = mm.get("name");
    let mf = mm.field("name");
    mm.finish(errs);
    if let Some(v) = mgmt
        && let Some(t) = text(v, &mf, errs)
        && name.is_some_and(|own| own != t)
    {
        errs.warn(
            v,
            &mf,
            format!(
                "accepted, but has no effect in Kiln: Kiln makes a standalone cluster, \
                 not one managed by {t:?}"
            ),
        );
    }
}

/// Where the whole-spec checks point, in the Cluster's spec.
fn cluster_check_at(spec_node: &Node) -> CheckAt {
    let root = "Cluster.spec";
    CheckAt {
        cp_taints: locate(spec_node, root, &["controlPlaneConfiguration", "taints"]),
        endpoint: locate(
            spec_node,
            root,
            &["controlPlaneConfiguration", "endpoint", "host"],
        ),
        pods: locate(spec_node, root, &["clusterNetwork", "pods", "cidrBlocks"]),
        services: locate(
            spec_node,
            root,
            &["clusterNetwork", "services", "cidrBlocks"],
        ),
        node_mask: locate(
            spec_node,
            root,
            &["clusterNetwork", "nodes", "cidrMaskSize"],
        ),
    }
}

fn control_plane(
    node: &Node,
    field: &str,
    machines: &mut BTreeMap<String, MachineConfig>,
    datacenter_image: &Option<(String, Pos)>,
    errs: &mut Errs<'_>,
) -> Option<ControlPlaneSpec> {
    let mut m = MapView::new(node, field, errs)?;
    // EKS Anywhere defaults the count to 1, and refuses an even count with stacked etcd.
    let count = m.optional("count", 1, errs, spec::count).and_then(|c| {
        if c % 2 == 0 {
            let n = m.get("count")?;
            errs.push(
                n,
                &m.field("count"),
                format!(
                    "{c}: control plane node count cannot be an even number when using stacked \
                     etcd topology (etcd needs a majority: 1, 3 or 5)"
                ),
            );
            return None;
        }
        Some(c)
    });
    let endpoint = m.required("endpoint", errs, |n, f, errs| {
        let mut e = MapView::new(n, f, errs)?;
        let host = e.required("host", errs, spec::endpoint_ip);
        e.finish(errs);
        host
    });
    let machine = machine_group(&mut m, machines, datacenter_image, errs);
    let taints = m.optional("taints", None, errs, |n, f, errs| {
        spec::taints(n, f, errs).map(Some)
    });
    let labels = m.optional("labels", BTreeMap::new(), errs, spec::node_labels);
    let cert_sans = m.optional("certSans", Vec::new(), errs, spec::cert_sans);
    let kube_vip = m.optional("skipLoadBalancerDeployment", true, errs, |n, f, errs| {
        spec::boolean(n, f, errs).map(|skip| !skip)
    });
    m.reject(
        "apiServerExtraArgs",
        "Kiln does not pass extra API server flags",
        errs,
    );
    m.reject(
        "auditPolicyContent",
        "Kiln does not set an API server audit policy",
        errs,
    );
    m.only(
        "skipAdmissionForSystemResources",
        false,
        "Kiln does not change the API server's admission plugins",
        errs,
    );
    accept_or_reject_for_every_group(&mut m, errs);
    m.finish(errs);
    Some(ControlPlaneSpec {
        count: count?,
        endpoint: endpoint?,
        machine: machine?,
        taints: taints?,
        labels: labels?,
        cert_sans: cert_sans?,
        kube_vip: kube_vip?,
    })
}

fn workers(
    node: &Node,
    field: &str,
    version: Option<KubernetesVersion>,
    machines: &mut BTreeMap<String, MachineConfig>,
    datacenter_image: &Option<(String, Pos)>,
    errs: &mut Errs<'_>,
) -> Option<Vec<WorkerGroupSpec>> {
    // A group with another Kubernetes version still counts for duplicate names; the list
    // then fails as a whole.
    let mut versions_ok = true;
    let mut index = 0;
    let groups = spec::mapping_list(node, field, "a list", errs, |m, earlier, errs| {
        let position = index;
        index += 1;
        let name = worker_group_name(m, earlier, position, errs);
        let count = worker_count(m, errs);
        let machine = machine_group(m, machines, datacenter_image, errs);
        let taints = m.optional("taints", Vec::new(), errs, spec::taints);
        let labels = m.optional("labels", BTreeMap::new(), errs, spec::node_labels);
        if !worker_version_matches(m, version, errs) {
            versions_ok = false;
        }
        m.reject(
            "autoscalingConfiguration",
            "Kiln provisions a fixed number of machines (count)",
            errs,
        );
        m.reject(
            "failureDomains",
            "Kiln spreads machines by hardwareSelector labels only",
            errs,
        );
        accept_or_reject_for_every_group(m, errs);
        Some(WorkerGroupSpec {
            name: name?,
            count: count?,
            machine: machine?,
            taints: taints?,
            labels: labels?,
        })
    })?;
    if !some_group_takes_pods(node, field, &groups, errs) {
        return None;
    }
    versions_ok.then_some(groups)
}

/// An unnamed group is md-<position> (EKS Anywhere itself names only the first, md-0,
/// and refuses later unnamed ones; numbering them all keeps such specs readable).
fn worker_group_name(
    m: &mut MapView<'_>,
    earlier: &[WorkerGroupSpec],
    position: usize,
    errs: &mut Errs<'_>,
) -> Option<String> {
    match m.get("name") {
        Some(n) => group_name(n, &m.field("name"), earlier.iter(), errs),
        None => {
            let name = format!("{DEFAULT_GROUP_PREFIX}{position}");
            if earlier.iter().any(|g| g.name == name) {
                errs.push(
                    m.pos,
                    &m.field("name"),
                    format!("unnamed, so {name:?}: a second worker group named {name:?}"),
                );
                None
            } else {
                Some(name)
            }
        }
    }
}

/// EKS Anywhere lets a worker group have no machine (count 0); a control plane not.
fn worker_count(m: &mut MapView<'_>, errs: &mut Errs<'_>) -> Option<u32> {
    match m.get("count") {
        Some(n) if matches!(&n.value, Value::Scalar { text, .. } if text.trim() == "0") => {
            errs.warn(
                n,
                &m.field("count"),
                "0: this worker group gets no machine".into(),
            );
            Some(0)
        }
        Some(n) => spec::count(n, &m.field("count"), errs),
        None => Some(1),
    }
}

/// A group's `kubernetesVersion`, if given, must be the Cluster's.
fn worker_version_matches(
    m: &mut MapView<'_>,
    version: Option<KubernetesVersion>,
    errs: &mut Errs<'_>,
) -> bool {
    let Some(n) = m.get("kubernetesVersion") else {
        return true;
    };
    let vf = m.field("kubernetesVersion");
    if let Some(v) = spec::parsed::<KubernetesVersion>(n, &vf, errs)
        && version.is_some_and(|c| c != v)
    {
        errs.push(
            n.pos(),
            &vf,
            format!("{v}: Kiln installs one Kubernetes version per cluster (the Cluster's)"),
        );
        return false;
    }
    true
}

/// EKS Anywhere's rule for a cluster that manages itself (all of Kiln's): some group
/// must take ordinary pods.
fn some_group_takes_pods(
    node: &Node,
    field: &str,
    groups: &[WorkerGroupSpec],
    errs: &mut Errs<'_>,
) -> bool {
    let repels = |g: &WorkerGroupSpec| {
        g.taints
            .iter()
            .any(|t| matches!(t.effect, TaintEffect::NoSchedule | TaintEffect::NoExecute))
    };
    if let (Some(last), Value::Seq(items)) = (groups.len().checked_sub(1), &node.value)
        && groups.iter().all(repels)
    {
        let at = locate(&items[last], &format!("{field}[{last}]"), &["taints"]);
        errs.push(
            at.pos,
            &at.field,
            "at least one WorkerNodeGroupConfiguration must not have NoExecute and/or \
             NoSchedule taints (ordinary pods need somewhere to run)"
                .into(),
        );
        return false;
    }
    true
}

/// A group's `machineGroupRef`, resolved to its machine spec.
fn machine_group(
    m: &mut MapView<'_>,
    machines: &mut BTreeMap<String, MachineConfig>,
    datacenter_image: &Option<(String, Pos)>,
    errs: &mut Errs<'_>,
) -> Option<MachineSpec> {
    m.required("machineGroupRef", errs, reference)
        .and_then(|r| resolve_machine(&r, machines, datacenter_image, errs))
}

/// Keys the control plane and the worker groups take alike.
fn accept_or_reject_for_every_group(m: &mut MapView<'_>, errs: &mut Errs<'_>) {
    m.ignore(
        "upgradeRolloutStrategy",
        "Kiln creates clusters and does not upgrade them",
        errs,
    );
    m.ignore(
        "machineHealthCheck",
        "Kiln does not remediate unhealthy machines",
        errs,
    );
    m.reject(
        "kubeletConfiguration",
        "Kiln does not pass a KubeletConfiguration",
        errs,
    );
}

pub(crate) fn group_name<'e>(
    n: &Node,
    field: &str,
    mut earlier: impl Iterator<Item = &'e WorkerGroupSpec>,
    errs: &mut Errs<'_>,
) -> Option<String> {
    let t = text(n, field, errs)?;
    if !labels::is_dns_label(t) {
        errs.push(
            n.pos(),
            field,
            format!("{t:?} must be lower-case letters, digits and '-'"),
        );
        return None;
    }
    if earlier.any(|g| g.name == t) {
        errs.push(n.pos(), field, format!("a second worker group named {t:?}"));
        return None;
    }
    Some(t.to_string())
}

fn cidr_blocks(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<Ipv4Cidr> {
    let mut m = MapView::new(node, field, errs)?;
    let blocks = m.required("cidrBlocks", errs, spec::string_list);
    let bf = m.field("cidrBlocks");
    m.finish(errs);
    let blocks = blocks?;
    match blocks.as_slice() {
        [(one, line)] => one
            .parse::<Ipv4Cidr>()
            .map_err(|e| errs.push(*line, &bf, e))
            .ok(),
        [] => {
            errs.push(node.pos(), &bf, "needs one CIDR block".into());
            None
        }
        [_, (_, line), ..] => {
            errs.push(
                *line,
                &bf,
                "one CIDR block only (dual-stack and several ranges are not supported)".into(),
            );
            None
        }
    }
}

fn cluster_network(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<NetworkSpec> {
    let mut m = MapView::new(node, field, errs)?;
    let pods = m.optional("pods", DEFAULT_PODS, errs, cidr_blocks);
    let services = m.optional("services", DEFAULT_SERVICES, errs, cidr_blocks);
    let old_cni = m.get("cni").and_then(|n| {
        let f = m.field("cni");
        match text(n, &f, errs)? {
            "cilium" | "cilium-enterprise" => Some(Cni::Cilium),
            "kindnetd" => Some(Cni::Kindnetd),
            t => {
                errs.push(n.pos(), &f, format!("{t:?} is not cilium or kindnetd"));
                None
            }
        }
    });
    let new_cni = m
        .get("cniConfig")
        .and_then(|n| cni_config(n, &m.field("cniConfig"), errs));
    let cni = match (old_cni, new_cni) {
        (Some(_), Some(_)) => {
            let at = node_at(node, "cni").unwrap_or(m.pos);
            errs.push(
                at,
                &m.field("cni"),
                "set cniConfig only (cni is its deprecated form)".into(),
            );
            None
        }
        (a, b) => a.or(b).or(Some(Cni::Cilium)),
    };
    let mask = m.get("nodes").and_then(|n| {
        let mut nm = MapView::new(n, &m.field("nodes"), errs)?;
        let v = nm.get("cidrMaskSize").and_then(|c| {
            let f = nm.field("cidrMaskSize");
            let t = text(c, &f, errs)?;
            spec::mask_size(t, c.pos(), &f, errs)
        });
        nm.finish(errs);
        v
    });
    m.reject(
        "dns",
        "Kiln does not change the kubelet's resolv.conf",
        errs,
    );
    m.finish(errs);
    Some(NetworkSpec {
        pods: pods?,
        services: services?,
        cni: cni?,
        node_cidr_mask_size: mask,
    })
}

/// Where the value of `key` is in the mapping `node`.
fn node_at(node: &Node, key: &str) -> Option<Pos> {
    match &node.value {
        Value::Map(e) => e.iter().find(|(k, _, _)| k == key).map(|(_, _, v)| v.pos()),
        _ => None,
    }
}

fn cni_config(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<Cni> {
    let mut m = MapView::new(node, field, errs)?;
    let cilium = m.get("cilium");
    let kindnetd = m.get("kindnetd");
    if let Some(c) = cilium {
        // Cilium's own options: for whoever installs Cilium (see Cni).
        let mut cm = MapView::new(c, &m.field("cilium"), errs)?;
        for key in [
            "policyEnforcementMode",
            "egressMasqueradeInterfaces",
            "skipUpgrade",
            "routingMode",
            "ipv4NativeRoutingCIDR",
            "ipv6NativeRoutingCIDR",
            "cniExclusive",
            "helmValues",
        ] {
            cm.ignore(
                key,
                "Kiln installs the CNI by name only (kiln-install-cni), without Cilium options",
                errs,
            );
        }
        cm.finish(errs);
    }
    if let Some(k) = kindnetd
        && let Some(km) = MapView::new(k, &m.field("kindnetd"), errs)
    {
        km.finish(errs);
    }
    m.finish(errs);
    // `cilium: {}` reads as a null-free empty mapping; `cilium:` alone is null.
    let has = |key: &str| match &node.value {
        Value::Map(e) => e.iter().any(|(k, _, _)| k == key),
        _ => false,
    };
    match (has("cilium"), has("kindnetd")) {
        (true, false) => Some(Cni::Cilium),
        (false, true) => Some(Cni::Kindnetd),
        (true, true) => {
            errs.push(node.pos(), field, "name one CNI, not both".into());
            None
        }
        (false, false) => {
            errs.push(
                node.pos(),
                field,
                "name a CNI: cilium: {} or kindnetd: {}".into(),
            );
            None
        }
    }
}
