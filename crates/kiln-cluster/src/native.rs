//! Kiln's own, shorter cluster file: one document, the same content as the EKS
//! Anywhere trio.
//!
//! ```yaml
//! kind: KilnCluster
//! name: lab
//! kubernetesVersion: "1.30"
//! controlPlane:
//!   count: 1
//!   endpoint: 10.77.0.90
//!   selector: {type: cp}
//!   # optional: taints, labels, certSANs, kubeVip (default true)
//! workers:                      # optional; omit or [] for none
//!   - name: md-0
//!     count: 2
//!     selector: {type: worker}
//!     # optional: taints, labels
//! network:                      # optional; these are the defaults
//!   pods: 192.168.0.0/16
//!   services: 10.96.0.0/12
//!   cni: cilium                 # cilium | kindnetd | none
//!   # nodeCidrMaskSize: 24
//! osFamily: ubuntu              # optional: ubuntu (default) | redhat | debian
//! image: http://10.77.0.1:8080/images/ubuntu.raw.zst   # optional
//! users:                        # optional
//!   - name: ec2-user
//!     sshAuthorizedKeys: ["ssh-ed25519 AAAA... me@laptop"]
//! ```

use std::collections::BTreeMap;

use kiln_model::labels;

use crate::eksa::{DEFAULT_PODS, DEFAULT_SERVICES, group_name};
use crate::spec::{
    self, ClusterSpec, Cni, ControlPlaneSpec, Errs, Ipv4Cidr, KubernetesVersion, MachineSpec,
    MapView, NetworkSpec, OsFamily, WorkerGroupSpec, text,
};
use crate::yaml::{Node, Value};

pub const API_VERSION: &str = "kiln/v1alpha1";

pub(crate) fn parse(doc: &Node, errs: &mut Errs<'_>) -> Option<ClusterSpec> {
    let mut m = MapView::new(doc, "", errs)?;
    m.accept(&["kind"]);
    if let Some(n) = m.get("apiVersion")
        && let Some(t) = text(n, "apiVersion", errs)
        && t != API_VERSION
    {
        errs.push(
            n.line,
            "apiVersion",
            format!("{t:?}: a KilnCluster is {API_VERSION} (or leave apiVersion out)"),
        );
    }
    let name = m.req("name", errs).and_then(|n| {
        let t = text(n, "name", errs)?;
        if labels::is_dns_label(t) {
            Some(t.to_string())
        } else {
            errs.push(
                n.line,
                "name",
                format!("{t:?} must be lower-case letters, digits and '-' (63 at most)"),
            );
            None
        }
    });
    let version = m
        .req("kubernetesVersion", errs)
        .and_then(|n| spec::parsed::<KubernetesVersion>(n, "kubernetesVersion", errs));
    let os_family = match m.get("osFamily") {
        Some(n) => spec::os_family(n, "osFamily", errs),
        None => Some(OsFamily::Ubuntu),
    };
    let image = match m.get("image") {
        Some(n) => spec::image_url(n, "image", errs).map(Some),
        None => Some(None),
    };
    let users = match m.get("users") {
        Some(n) => spec::users(n, "users", errs),
        None => Some(Vec::new()),
    };
    let machine = |selector| -> Option<MachineSpec> {
        Some(MachineSpec {
            selector,
            os_family: os_family?,
            image_url: image.clone()?,
            users: users.clone()?,
        })
    };
    let cp = m
        .req("controlPlane", errs)
        .and_then(|n| control_plane(n, errs));
    let control_plane = cp.and_then(|(cp, sel)| {
        Some(ControlPlaneSpec {
            machine: machine(sel)?,
            ..cp
        })
    });
    let mut worker_groups = Some(Vec::new());
    if let Some(n) = m.get("workers") {
        worker_groups = workers(n, errs).and_then(|groups| {
            groups
                .into_iter()
                .map(|(g, sel)| {
                    Some(WorkerGroupSpec {
                        machine: machine(sel)?,
                        ..g
                    })
                })
                .collect()
        });
    }
    let network = match m.get("network") {
        Some(n) => network(n, errs),
        None => Some(NetworkSpec {
            pods: DEFAULT_PODS.parse().ok()?,
            services: DEFAULT_SERVICES.parse().ok()?,
            cni: Cni::Cilium,
            node_cidr_mask_size: None,
        }),
    };
    m.finish(errs);
    let spec = ClusterSpec {
        name: name?,
        kubernetes_version: version?,
        control_plane: control_plane?,
        worker_groups: worker_groups?,
        network: network?,
    };
    spec.check(errs, doc.line, "");
    Some(spec)
}

/// The control plane without its machine spec (filled in from the shared fields), and its selector.
fn control_plane(
    node: &Node,
    errs: &mut Errs<'_>,
) -> Option<(ControlPlaneSpec, BTreeMap<String, String>)> {
    let mut m = MapView::new(node, "controlPlane", errs)?;
    let count = match m.get("count") {
        Some(n) => spec::count(n, "controlPlane.count", errs),
        None => Some(1),
    };
    let endpoint = m
        .req("endpoint", errs)
        .and_then(|n| spec::endpoint_ip(n, "controlPlane.endpoint", errs));
    let sel = m.get("selector");
    let selector = spec::selector(sel, m.line, "controlPlane.selector", errs);
    let taints = match m.get("taints") {
        Some(n) => spec::taints(n, "controlPlane.taints", errs).map(Some),
        None => Some(None),
    };
    let labels = match m.get("labels") {
        Some(n) => spec::node_labels(n, "controlPlane.labels", errs),
        None => Some(BTreeMap::new()),
    };
    let cert_sans = match m.get("certSANs") {
        Some(n) => spec::cert_sans(n, "controlPlane.certSANs", errs),
        None => Some(Vec::new()),
    };
    let kube_vip = match m.get("kubeVip") {
        Some(n) => spec::boolean(n, "controlPlane.kubeVip", errs),
        None => Some(true),
    };
    m.finish(errs);
    let placeholder = MachineSpec {
        selector: BTreeMap::new(),
        os_family: OsFamily::Ubuntu,
        image_url: None,
        users: Vec::new(),
    };
    Some((
        ControlPlaneSpec {
            count: count?,
            endpoint: endpoint?,
            machine: placeholder,
            taints: taints?,
            labels: labels?,
            cert_sans: cert_sans?,
            kube_vip: kube_vip?,
        },
        selector?,
    ))
}

fn workers(
    node: &Node,
    errs: &mut Errs<'_>,
) -> Option<Vec<(WorkerGroupSpec, BTreeMap<String, String>)>> {
    let Value::Seq(items) = &node.value else {
        errs.push(
            node.line,
            "workers",
            format!(
                "must be a list of worker groups, found {}",
                node.kind_name()
            ),
        );
        return None;
    };
    let mut out: Vec<(WorkerGroupSpec, BTreeMap<String, String>)> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let f = format!("workers[{i}]");
        let Some(mut m) = MapView::new(item, &f, errs) else {
            ok = false;
            continue;
        };
        let earlier: Vec<WorkerGroupSpec> = out.iter().map(|(g, _)| g.clone()).collect();
        let name = m
            .req("name", errs)
            .and_then(|n| group_name(n, &m.field("name"), &earlier, errs));
        let count = match m.get("count") {
            Some(n) => spec::count(n, &m.field("count"), errs),
            None => Some(1),
        };
        let sel = m.get("selector");
        let selector = spec::selector(sel, m.line, &m.field("selector"), errs);
        let taints = match m.get("taints") {
            Some(n) => spec::taints(n, &m.field("taints"), errs),
            None => Some(Vec::new()),
        };
        let labels = match m.get("labels") {
            Some(n) => spec::node_labels(n, &m.field("labels"), errs),
            None => Some(BTreeMap::new()),
        };
        m.finish(errs);
        match (name, count, selector, taints, labels) {
            (Some(name), Some(count), Some(selector), Some(taints), Some(labels)) => out.push((
                WorkerGroupSpec {
                    name,
                    count,
                    machine: MachineSpec {
                        selector: BTreeMap::new(),
                        os_family: OsFamily::Ubuntu,
                        image_url: None,
                        users: Vec::new(),
                    },
                    taints,
                    labels,
                },
                selector,
            )),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn network(node: &Node, errs: &mut Errs<'_>) -> Option<NetworkSpec> {
    let mut m = MapView::new(node, "network", errs)?;
    let pods = match m.get("pods") {
        Some(n) => spec::parsed::<Ipv4Cidr>(n, "network.pods", errs),
        None => DEFAULT_PODS.parse().ok(),
    };
    let services = match m.get("services") {
        Some(n) => spec::parsed::<Ipv4Cidr>(n, "network.services", errs),
        None => DEFAULT_SERVICES.parse().ok(),
    };
    if let Some(s) = services
        && s.prefix < 12
    {
        errs.push(
            m.line,
            "network.services",
            format!("{s} is larger than the API server allows (/12 at most)"),
        );
    }
    let cni = match m.get("cni") {
        Some(n) => match text(n, "network.cni", errs) {
            Some("cilium") => Some(Cni::Cilium),
            Some("kindnetd") => Some(Cni::Kindnetd),
            Some("none") => Some(Cni::None),
            Some(t) => {
                errs.push(
                    n.line,
                    "network.cni",
                    format!("{t:?} is not cilium, kindnetd or none"),
                );
                None
            }
            None => None,
        },
        None => Some(Cni::Cilium),
    };
    let mask = match m.get("nodeCidrMaskSize") {
        Some(n) => {
            let t = text(n, "network.nodeCidrMaskSize", errs)?;
            match t.parse::<u8>() {
                Ok(v) if (8..=30).contains(&v) => Some(Some(v)),
                _ => {
                    errs.push(
                        n.line,
                        "network.nodeCidrMaskSize",
                        format!("{t:?} is not a mask size from 8 to 30"),
                    );
                    None
                }
            }
        }
        None => Some(None),
    };
    m.finish(errs);
    Some(NetworkSpec {
        pods: pods?,
        services: services?,
        cni: cni?,
        node_cidr_mask_size: mask?,
    })
}
