//! EKS Anywhere's bare-metal cluster file, as users bring it: a `Cluster`, a
//! `TinkerbellDatacenterConfig` and `TinkerbellMachineConfig`s, in any order, in one
//! multi-document YAML file (apiVersion `anywhere.eks.amazonaws.com/v1alpha1`).
//!
//! Field list from EKS Anywhere's API types (`pkg/api/v1alpha1/cluster_types.go`,
//! `tinkerbelldatacenterconfig_types.go`, `tinkerbellmachineconfig_types.go`,
//! `hostosconfig_types.go` in github.com/aws/eks-anywhere).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use kiln_model::labels;

use crate::spec::{
    self, ClusterSpec, Cni, ControlPlaneSpec, Errs, Ipv4Cidr, KubernetesVersion, MachineSpec,
    MapView, NetworkSpec, OsFamily, UserSpec, WorkerGroupSpec, text,
};
use crate::yaml::{Node, Value};

pub const API_VERSION: &str = "anywhere.eks.amazonaws.com/v1alpha1";

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
    line: usize,
    selector: Option<BTreeMap<String, String>>,
    os_family: Option<OsFamily>,
    image_url: Option<String>,
    users: Vec<UserSpec>,
    used: bool,
}

struct Datacenter {
    name: String,
    line: usize,
    image_url: Option<String>,
}

/// A `machineGroupRef` / `datacenterRef`.
struct Ref {
    kind: String,
    name: String,
    line: usize,
    field: String,
}

pub(crate) fn parse(docs: &[Node], errs: &mut Errs<'_>) -> Option<ClusterSpec> {
    let mut cluster: Option<&Node> = None;
    let mut datacenters: Vec<Datacenter> = Vec::new();
    let mut machines: BTreeMap<String, MachineConfig> = BTreeMap::new();
    for doc in docs {
        let Some(mut top) = MapView::new(doc, "", errs) else {
            continue;
        };
        let kind = top.req("kind", errs).and_then(|n| text(n, "kind", errs));
        let api = top
            .get("apiVersion")
            .and_then(|n| text(n, "apiVersion", errs));
        let Some(kind) = kind else { continue };
        if let Some(why) = unsupported_kind(kind) {
            errs.push(doc.line, "kind", format!("{kind}: {why}"));
            continue;
        }
        match api {
            Some(API_VERSION) => {}
            Some(other) => errs.push(
                doc.line,
                &format!("{kind}.apiVersion"),
                format!("{other:?}: Kiln reads {API_VERSION}"),
            ),
            None => errs.push(
                doc.line,
                &format!("{kind}.apiVersion"),
                format!("is required ({API_VERSION})"),
            ),
        }
        let name = metadata_name(&mut top, kind, errs);
        let spec_node = top.req("spec", errs);
        // Written by a cluster, never by a user; harmless when copied from one.
        top.accept(&["status"]);
        top.finish(errs);
        let (Some(name), Some(spec_node)) = (name, spec_node) else {
            continue;
        };
        match kind {
            "Cluster" => {
                if let Some(first) = cluster {
                    errs.push(
                        doc.line,
                        "kind",
                        format!("a second Cluster (the first is on line {})", first.line),
                    );
                } else {
                    cluster = Some(doc);
                }
            }
            "TinkerbellDatacenterConfig" => {
                let image_url = datacenter(spec_node, &name, errs);
                datacenters.push(Datacenter {
                    name,
                    line: doc.line,
                    image_url,
                });
            }
            "TinkerbellMachineConfig" => {
                let mc = machine_config(spec_node, &name, errs);
                if let Some(first) = machines.get(&name) {
                    errs.push(
                        doc.line,
                        "metadata.name",
                        format!(
                            "a second TinkerbellMachineConfig {name:?} (the first is on line {})",
                            first.line
                        ),
                    );
                } else {
                    machines.insert(name, mc);
                }
            }
            other => errs.push(
                doc.line,
                "kind",
                format!(
                    "unknown kind {other:?} (Kiln reads Cluster, TinkerbellDatacenterConfig, \
                     TinkerbellMachineConfig, or one KilnCluster)"
                ),
            ),
        }
    }
    let Some(cluster) = cluster else {
        errs.push(
            1,
            "kind",
            "the file has no Cluster document (kind: Cluster)".into(),
        );
        return None;
    };
    let spec = cluster_doc(cluster, &datacenters, &mut machines, errs);
    for (name, mc) in &machines {
        if !mc.used {
            errs.push(
                mc.line,
                &format!("TinkerbellMachineConfig[{name}]"),
                "no machineGroupRef of the Cluster names this machine config".into(),
            );
        }
    }
    spec
}

/// Kinds from the EKS Anywhere API that Kiln knows but does not do.
fn unsupported_kind(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "TinkerbellTemplateConfig" => {
            "Kiln installs machines with its own workflow templates (workflows/), not Tinkerbell's; \
             remove this document and templateRef"
        }
        "GitOpsConfig" | "FluxConfig" => "Kiln does not set up GitOps",
        "OIDCConfig" | "AWSIamConfig" => "Kiln does not configure identity providers",
        "TinkerbellDatacenterConfig" | "TinkerbellMachineConfig" => return None,
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
    m.accept(&["namespace", "annotations", "labels"]);
    m.finish(errs);
    name
}

fn datacenter(node: &Node, name: &str, errs: &mut Errs<'_>) -> Option<String> {
    let mut m = MapView::new(
        node,
        &format!("TinkerbellDatacenterConfig[{name}].spec"),
        errs,
    )?;
    // tinkerbellIP is where EKS Anywhere runs its Tinkerbell stack; Kiln serves from its
    // own address, so the value only has to be an address.
    if let Some(n) = m.req("tinkerbellIP", errs) {
        let f = m.field("tinkerbellIP");
        if let Some(t) = text(n, &f, errs)
            && t.parse::<std::net::IpAddr>().is_err()
        {
            errs.push(n.line, &f, format!("{t:?} is not an IP address"));
        }
    }
    let image = m
        .get("osImageURL")
        .and_then(|n| spec::image_url(n, &m.field("osImageURL"), errs));
    // Hook images: Kiln boots its own agent. Load balancer for the Tinkerbell stack: none.
    m.accept(&["hookImagesURLPath", "skipLoadBalancerDeployment"]);
    m.finish(errs);
    image
}

fn machine_config(node: &Node, name: &str, errs: &mut Errs<'_>) -> MachineConfig {
    let field = format!("TinkerbellMachineConfig[{name}].spec");
    let mut mc = MachineConfig {
        line: node.line,
        selector: None,
        os_family: None,
        image_url: None,
        users: Vec::new(),
        used: false,
    };
    let Some(mut m) = MapView::new(node, &field, errs) else {
        return mc;
    };
    let sel = m.get("hardwareSelector");
    mc.selector = spec::selector(sel, m.line, &m.field("hardwareSelector"), errs);
    m.reject(
        "hardwareAffinity",
        "Kiln picks machines with hardwareSelector labels only",
        errs,
    );
    mc.os_family = m.required("osFamily", errs, spec::os_family);
    mc.image_url = m
        .get("osImageURL")
        .and_then(|n| spec::image_url(n, &m.field("osImageURL"), errs));
    if let Some(n) = m.get("templateRef") {
        template_ref(n, &m.field("templateRef"), errs);
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
    mc
}

/// Only an empty templateRef is fine: Kiln does not read Tinkerbell templates.
fn template_ref(node: &Node, field: &str, errs: &mut Errs<'_>) {
    let Some(mut m) = MapView::new(node, field, errs) else {
        return;
    };
    let kind = m.get("kind").and_then(|n| text(n, &m.field("kind"), errs));
    let name = m.get("name").and_then(|n| text(n, &m.field("name"), errs));
    m.finish(errs);
    if kind.is_some_and(|k| !k.is_empty()) || name.is_some_and(|n| !n.is_empty()) {
        errs.push(
            node.line,
            field,
            "not supported: Kiln installs machines with its own workflow templates, not a \
             TinkerbellTemplateConfig (leave templateRef empty: {})"
                .into(),
        );
    }
}

fn reference(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<Ref> {
    let mut m = MapView::new(node, field, errs)?;
    let owned_text = |n, f: &str, errs: &mut Errs<'_>| text(n, f, errs).map(str::to_string);
    let kind = m.required("kind", errs, owned_text);
    let name = m.required("name", errs, owned_text);
    m.finish(errs);
    Some(Ref {
        kind: kind?,
        name: name?,
        line: node.line,
        field: field.to_string(),
    })
}

/// Resolves a machineGroupRef to a machine spec; the datacenter's image applies
/// unless the machine config has its own.
fn resolve_machine(
    r: &Ref,
    machines: &mut BTreeMap<String, MachineConfig>,
    datacenter_image: &Option<(String, usize)>,
    errs: &mut Errs<'_>,
) -> Option<MachineSpec> {
    if r.kind != "TinkerbellMachineConfig" {
        errs.push(
            r.line,
            &format!("{}.kind", r.field),
            format!("{:?}: Kiln's machines are TinkerbellMachineConfig", r.kind),
        );
        return None;
    }
    let Some(mc) = machines.get_mut(&r.name) else {
        let known: Vec<&str> = machines.keys().map(String::as_str).collect();
        errs.push(
            r.line,
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
    if first_use && let (Some(own), Some((_, dc_line))) = (&mc.image_url, datacenter_image) {
        errs.push(
            mc.line,
            &format!("TinkerbellMachineConfig[{}].spec.osImageURL", r.name),
            format!(
                "{own:?}: osImageURL is also set on the TinkerbellDatacenterConfig (line {dc_line}); \
                 set it in one place"
            ),
        );
    }
    Some(MachineSpec {
        selector: mc.selector.clone()?,
        os_family: mc.os_family?,
        image_url: mc
            .image_url
            .clone()
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
    let meta = top.get("metadata");
    let name = meta.and_then(|n| match &n.value {
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
    });
    let spec_node = top.get("spec")?;
    let mut s = MapView::new(spec_node, "Cluster.spec", errs)?;

    let version = s.required("kubernetesVersion", errs, spec::parsed::<KubernetesVersion>);

    // Datacenter: the ref must name the one datacenter document.
    let dc_ref = s.required("datacenterRef", errs, reference);
    let mut datacenter_image: Option<(String, usize)> = None;
    if let Some(r) = &dc_ref {
        if r.kind != "TinkerbellDatacenterConfig" {
            errs.push(
                r.line,
                &format!("{}.kind", r.field),
                format!(
                    "{:?}: Kiln provisions bare metal (TinkerbellDatacenterConfig)",
                    r.kind
                ),
            );
        } else if let Some(dc) = datacenters.iter().find(|d| d.name == r.name) {
            datacenter_image = dc.image_url.clone().map(|u| (u, dc.line));
        } else {
            errs.push(
                r.line,
                &format!("{}.name", r.field),
                format!(
                    "no TinkerbellDatacenterConfig named {:?} in this file",
                    r.name
                ),
            );
        }
    }
    for dc in datacenters {
        if dc_ref.as_ref().is_some_and(|r| r.name != dc.name) {
            errs.push(
                dc.line,
                &format!("TinkerbellDatacenterConfig[{}]", dc.name),
                "the Cluster's datacenterRef does not name this datacenter".into(),
            );
        }
    }

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

    // Nothing for Kiln to act on: EKS Anywhere's own lifecycle and packaging.
    s.accept(&[
        "managementCluster",
        "eksaVersion",
        "bundlesRef",
        "machineHealthCheck",
        "packages",
        "overrideClusterSpecFile",
        "licenseToken",
    ]);
    s.reject(
        "externalEtcdConfiguration",
        "Kiln runs etcd on the control planes (stacked)",
        errs,
    );
    s.reject(
        "proxyConfiguration",
        "Kiln does not configure HTTP proxies",
        errs,
    );
    s.reject(
        "registryMirrorConfiguration",
        "Kiln does not configure registry mirrors",
        errs,
    );
    s.reject(
        "identityProviderRefs",
        "Kiln does not configure identity providers",
        errs,
    );
    s.reject("gitOpsRef", "Kiln does not set up GitOps", errs);
    s.reject(
        "podIamConfig",
        "Kiln does not set a service-account issuer for pod IAM",
        errs,
    );
    s.reject(
        "etcdEncryption",
        "Kiln does not configure etcd encryption providers",
        errs,
    );
    s.finish(errs);

    let spec = ClusterSpec {
        name: name?,
        kubernetes_version: version?,
        control_plane: control_plane?,
        worker_groups: worker_groups?,
        network: network?,
    };
    spec.check(errs, spec_node.line, "Cluster.spec.");
    Some(spec)
}

fn control_plane(
    node: &Node,
    field: &str,
    machines: &mut BTreeMap<String, MachineConfig>,
    datacenter_image: &Option<(String, usize)>,
    errs: &mut Errs<'_>,
) -> Option<ControlPlaneSpec> {
    let mut m = MapView::new(node, field, errs)?;
    // EKS Anywhere defaults the count to 1.
    let count = m.optional("count", 1, errs, spec::count);
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
    datacenter_image: &Option<(String, usize)>,
    errs: &mut Errs<'_>,
) -> Option<Vec<WorkerGroupSpec>> {
    // A group with another Kubernetes version still counts for duplicate names; the list
    // then fails as a whole.
    let mut versions_ok = true;
    let groups = spec::mapping_list(node, field, "a list", errs, |m, earlier, errs| {
        let name = m.required("name", errs, |n, f, errs| {
            group_name(n, f, earlier.iter(), errs)
        });
        let count = m.optional("count", 1, errs, spec::count);
        let machine = machine_group(m, machines, datacenter_image, errs);
        let taints = m.optional("taints", Vec::new(), errs, spec::taints);
        let labels = m.optional("labels", BTreeMap::new(), errs, spec::node_labels);
        if let Some(n) = m.get("kubernetesVersion") {
            let vf = m.field("kubernetesVersion");
            if let Some(v) = spec::parsed::<KubernetesVersion>(n, &vf, errs)
                && version.is_some_and(|c| c != v)
            {
                errs.push(
                    n.line,
                    &vf,
                    format!(
                        "{v}: Kiln installs one Kubernetes version per cluster (the Cluster's)"
                    ),
                );
                versions_ok = false;
            }
        }
        m.reject(
            "autoscalingConfiguration",
            "Kiln provisions a fixed number of machines (count)",
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
    versions_ok.then_some(groups)
}

/// A group's `machineGroupRef`, resolved to its machine spec.
fn machine_group(
    m: &mut MapView<'_>,
    machines: &mut BTreeMap<String, MachineConfig>,
    datacenter_image: &Option<(String, usize)>,
    errs: &mut Errs<'_>,
) -> Option<MachineSpec> {
    m.required("machineGroupRef", errs, reference)
        .and_then(|r| resolve_machine(&r, machines, datacenter_image, errs))
}

/// Keys the control plane and the worker groups take alike.
fn accept_or_reject_for_every_group(m: &mut MapView<'_>, errs: &mut Errs<'_>) {
    // Upgrades are not Kiln's business at creation.
    m.accept(&["upgradeRolloutStrategy"]);
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
            n.line,
            field,
            format!("{t:?} must be lower-case letters, digits and '-'"),
        );
        return None;
    }
    if earlier.any(|g| g.name == t) {
        errs.push(n.line, field, format!("a second worker group named {t:?}"));
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
            errs.push(node.line, &bf, "needs one CIDR block".into());
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
    spec::check_service_range(services, m.line, &m.field("services"), errs);
    let old_cni = m.get("cni").and_then(|n| {
        let f = m.field("cni");
        match text(n, &f, errs)? {
            "cilium" | "cilium-enterprise" => Some(Cni::Cilium),
            "kindnetd" => Some(Cni::Kindnetd),
            t => {
                errs.push(n.line, &f, format!("{t:?} is not cilium or kindnetd"));
                None
            }
        }
    });
    let new_cni = m
        .get("cniConfig")
        .and_then(|n| cni_config(n, &m.field("cniConfig"), errs));
    let cni = match (old_cni, new_cni) {
        (Some(_), Some(_)) => {
            errs.push(
                m.line,
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
            spec::mask_size(t, c.line, &f, errs)
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

fn cni_config(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<Cni> {
    let mut m = MapView::new(node, field, errs)?;
    let cilium = m.get("cilium");
    let kindnetd = m.get("kindnetd");
    if let Some(c) = cilium {
        // Cilium's own options: for whoever installs Cilium (see Cni).
        let mut cm = MapView::new(c, &m.field("cilium"), errs)?;
        cm.accept(&[
            "policyEnforcementMode",
            "egressMasqueradeInterfaces",
            "skipUpgrade",
            "routingMode",
            "ipv4NativeRoutingCIDR",
            "ipv6NativeRoutingCIDR",
            "helmValues",
        ]);
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
            errs.push(node.line, field, "name one CNI, not both".into());
            None
        }
        (false, false) => {
            errs.push(
                node.line,
                field,
                "name a CNI: cilium: {} or kindnetd: {}".into(),
            );
            None
        }
    }
}
