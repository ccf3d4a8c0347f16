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
//! overwrite: always             # optional: no wrong-disk guard (default: never)
//! users:                        # optional
//!   - name: ec2-user
//!     sshAuthorizedKeys: ["ssh-ed25519 AAAA... me@laptop"]
//! ```

use std::collections::BTreeMap;

use crate::eksa::{DEFAULT_NETWORK, DEFAULT_PODS, DEFAULT_SERVICES, group_name};
use crate::spec::{
    self, CheckAt, ClusterSpec, Cni, ControlPlaneSpec, Errs, Ipv4Cidr, KubernetesVersion,
    MachineSpec, MapView, NetworkSpec, OsFamily, WorkerGroupSpec, locate, text,
};
use crate::yaml::Node;

pub const API_VERSION: &str = "kiln/v1alpha1";

pub(crate) fn parse(doc: &Node, errs: &mut Errs<'_>) -> Option<ClusterSpec> {
    let mut m = MapView::new(doc, "", errs)?;
    m.accept(&["kind"]);
    if let Some(n) = m.get("apiVersion")
        && let Some(t) = text(n, "apiVersion", errs)
        && t != API_VERSION
    {
        errs.push(
            n.pos(),
            "apiVersion",
            format!("{t:?}: a KilnCluster is {API_VERSION} (or leave apiVersion out)"),
        );
    }
    let name = m.required("name", errs, spec::dns_label);
    let version = m.required("kubernetesVersion", errs, spec::parsed::<KubernetesVersion>);
    let os_family = m.optional("osFamily", OsFamily::Ubuntu, errs, spec::os_family);
    let image = m.optional("image", None, errs, |n, f, errs| {
        spec::image_url(n, f, errs).map(Some)
    });
    let users = m.optional("users", Vec::new(), errs, spec::users);
    let overwrite = m.optional("overwrite", false, errs, |n, f, errs| {
        match text(n, f, errs)? {
            "always" => Some(true),
            "never" => Some(false),
            other => {
                errs.push(
                    n.pos(),
                    f,
                    format!("{other:?}: `always` (no wrong-disk guard) or `never` (the default)"),
                );
                None
            }
        }
    });
    let machine = |selector| -> Option<MachineSpec> {
        Some(MachineSpec {
            selector,
            os_family: os_family?,
            image_url: image.clone()?,
            users: users.clone()?,
        })
    };
    let cp = m.required("controlPlane", errs, control_plane);
    let control_plane = cp.and_then(|(cp, sel)| {
        Some(ControlPlaneSpec {
            machine: machine(sel)?,
            ..cp
        })
    });
    let worker_groups = m
        .optional("workers", Vec::new(), errs, workers)
        .and_then(|groups| {
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
    let network = m.optional("network", DEFAULT_NETWORK, errs, network);
    m.finish(errs);
    let spec = ClusterSpec {
        name: name?,
        kubernetes_version: version?,
        control_plane: control_plane?,
        worker_groups: worker_groups?,
        network: network?,
        overwrite_always: overwrite?,
    };
    spec.check(
        errs,
        &CheckAt {
            cp_taints: locate(doc, "", &["controlPlane", "taints"]),
            endpoint: locate(doc, "", &["controlPlane", "endpoint"]),
            pods: locate(doc, "", &["network", "pods"]),
            services: locate(doc, "", &["network", "services"]),
            node_mask: locate(doc, "", &["network", "nodeCidrMaskSize"]),
        },
    );
    Some(spec)
}

/// Stands in for a group's machine until `parse` fills it in from the shared fields.
fn machine_placeholder() -> MachineSpec {
    MachineSpec {
        selector: BTreeMap::new(),
        os_family: OsFamily::Ubuntu,
        image_url: None,
        users: Vec::new(),
    }
}

/// The control plane without its machine spec (filled in from the shared fields), and its selector.
fn control_plane(
    node: &Node,
    field: &str,
    errs: &mut Errs<'_>,
) -> Option<(ControlPlaneSpec, BTreeMap<String, String>)> {
    let mut m = MapView::new(node, field, errs)?;
    let count = m.optional("count", 1, errs, spec::count);
    let endpoint = m.required("endpoint", errs, spec::endpoint_ip);
    let sel = m.get("selector");
    let selector = spec::selector(sel, m.pos, &m.field("selector"), errs);
    let taints = m.optional("taints", None, errs, |n, f, errs| {
        spec::taints(n, f, errs).map(Some)
    });
    let labels = m.optional("labels", BTreeMap::new(), errs, spec::node_labels);
    let cert_sans = m.optional("certSANs", Vec::new(), errs, spec::cert_sans);
    let kube_vip = m.optional("kubeVip", true, errs, spec::boolean);
    m.finish(errs);
    Some((
        ControlPlaneSpec {
            count: count?,
            endpoint: endpoint?,
            machine: machine_placeholder(),
            taints: taints?,
            labels: labels?,
            cert_sans: cert_sans?,
            kube_vip: kube_vip?,
        },
        selector?,
    ))
}

/// The worker groups without their machine specs, each with its selector.
fn workers(
    node: &Node,
    field: &str,
    errs: &mut Errs<'_>,
) -> Option<Vec<(WorkerGroupSpec, BTreeMap<String, String>)>> {
    spec::mapping_list(
        node,
        field,
        "a list of worker groups",
        errs,
        |m, earlier, errs| {
            let name = m.required("name", errs, |n, f, errs| {
                group_name(n, f, earlier.iter().map(|(g, _)| g), errs)
            });
            let count = m.optional("count", 1, errs, spec::count);
            let sel = m.get("selector");
            let selector = spec::selector(sel, m.pos, &m.field("selector"), errs);
            let taints = m.optional("taints", Vec::new(), errs, spec::taints);
            let labels = m.optional("labels", BTreeMap::new(), errs, spec::node_labels);
            Some((
                WorkerGroupSpec {
                    name: name?,
                    count: count?,
                    machine: machine_placeholder(),
                    taints: taints?,
                    labels: labels?,
                },
                selector?,
            ))
        },
    )
}

fn network(node: &Node, field: &str, errs: &mut Errs<'_>) -> Option<NetworkSpec> {
    let mut m = MapView::new(node, field, errs)?;
    let pods = m.optional("pods", DEFAULT_PODS, errs, spec::parsed::<Ipv4Cidr>);
    let services = m.optional("services", DEFAULT_SERVICES, errs, spec::parsed::<Ipv4Cidr>);
    let cni = m.optional("cni", Cni::Cilium, errs, |n, f, errs| {
        match text(n, f, errs)? {
            "cilium" => Some(Cni::Cilium),
            "kindnetd" => Some(Cni::Kindnetd),
            "none" => Some(Cni::None),
            t => {
                errs.push(n.pos(), f, format!("{t:?} is not cilium, kindnetd or none"));
                None
            }
        }
    });
    let mask = match m.get("nodeCidrMaskSize") {
        Some(n) => {
            let f = m.field("nodeCidrMaskSize");
            // Not a single value: the network is not read further.
            let t = text(n, &f, errs)?;
            spec::mask_size(t, n.pos(), &f, errs).map(Some)
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
