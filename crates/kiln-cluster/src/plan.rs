//! Which machine does what: control planes first, then each worker group in spec
//! order, each picking the machines whose labels match its selector, in hostname order.
//! Everything is checked before anything is touched.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use kiln_model::Hardware;
use kiln_model::hardware::same_subnet;
use serde::{Deserialize, Serialize};

use crate::spec::ClusterSpec;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Control planes first (the first of them runs `kubeadm init`), then workers by group.
    pub nodes: Vec<PlannedNode>,
    /// Hostnames of the machines left out, sorted.
    pub spares: Vec<String>,
    /// Whether kube-vip holds the endpoint on the control planes (false when the
    /// endpoint is the single control plane's own address, or the spec turned it off).
    pub kube_vip: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedNode {
    pub hostname: String,
    pub role: Role,
    /// The machine as enrolled (its BMC password is not carried: it is not serialized
    /// and rendering does not need it).
    pub hardware: Hardware,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Role {
    ControlPlane { first: bool },
    Worker { group: String },
}

impl Role {
    pub fn is_control_plane(&self) -> bool {
        matches!(self, Role::ControlPlane { .. })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::ControlPlane { first: true } => f.write_str("control plane (kubeadm init)"),
            Role::ControlPlane { first: false } => f.write_str("control plane"),
            Role::Worker { group } => write!(f, "worker ({group})"),
        }
    }
}

impl Plan {
    pub fn node(&self, hostname: &str) -> Option<&PlannedNode> {
        self.nodes.iter().find(|n| n.hostname == hostname)
    }

    pub fn first_control_plane(&self) -> Option<&PlannedNode> {
        self.nodes
            .iter()
            .find(|n| n.role == Role::ControlPlane { first: true })
    }

    pub fn control_planes(&self) -> impl Iterator<Item = &PlannedNode> {
        self.nodes.iter().filter(|n| n.role.is_control_plane())
    }
}

/// A role that could not get its machines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    /// "control plane" or "worker group md-0".
    pub role: String,
    pub selector: String,
    pub needed: u32,
    /// Machines matching the selector and still free.
    pub matched: Vec<String>,
    /// Machines matching the selector but already taken by an earlier role.
    pub taken: Vec<String>,
}

impl fmt::Display for Shortage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} needs {} machine{} with labels {}, {} match",
            self.role,
            self.needed,
            if self.needed == 1 { "" } else { "s" },
            self.selector,
            self.matched.len()
        )?;
        if !self.matched.is_empty() {
            write!(f, " ({})", self.matched.join(", "))?;
        }
        if !self.taken.is_empty() {
            write!(
                f,
                "; {} more match but are already taken by an earlier role ({})",
                self.taken.len(),
                self.taken.join(", ")
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("not enough machines in hardware.csv: {}", list(.0))]
    NotEnoughMachines(Vec<Shortage>),
    #[error(
        "the control-plane endpoint {endpoint} is the address of machine {hostname}; \
         a VIP must be an unused address"
    )]
    EndpointInUse {
        endpoint: Ipv4Addr,
        hostname: String,
    },
    #[error(
        "the control-plane endpoint {endpoint} is not in the subnet of control plane {hostname} \
         ({ip}/{netmask}): kube-vip announces it with ARP on that network"
    )]
    EndpointOffSubnet {
        endpoint: Ipv4Addr,
        hostname: String,
        ip: Ipv4Addr,
        netmask: Ipv4Addr,
    },
    #[error("machine {hostname}'s address {ip} lies inside the cluster's {range} range {cidr}")]
    NodeInClusterRange {
        hostname: String,
        ip: Ipv4Addr,
        range: &'static str,
        cidr: String,
    },
}

fn list(s: &[Shortage]) -> String {
    s.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn selector_text(sel: &BTreeMap<String, String>) -> String {
    sel.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn matches(hw: &Hardware, sel: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| hw.labels.get(k) == Some(v))
}

/// Chooses machines for every role. Deterministic: the same spec and hardware always
/// give the same plan, whatever the order of `hardware`.
pub fn plan(spec: &ClusterSpec, hardware: &[Hardware]) -> Result<Plan, PlanError> {
    let mut machines: Vec<&Hardware> = hardware.iter().collect();
    machines.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    let (nodes, taken) = assign_roles(spec, &machines)?;
    check_cluster_ranges(spec, &nodes)?;
    let kube_vip = check_endpoint(spec, &machines, &nodes)?;
    let spares = machines
        .iter()
        .filter(|h| !taken.contains_key(h.hostname.as_str()))
        .map(|h| h.hostname.clone())
        .collect();
    Ok(Plan {
        nodes,
        spares,
        kube_vip,
    })
}

/// Gives each role its machines (sorted by hostname), first come first served; every
/// role short of machines is reported. Returns the nodes and the hostnames taken.
fn assign_roles<'h>(
    spec: &ClusterSpec,
    machines: &[&'h Hardware],
) -> Result<(Vec<PlannedNode>, BTreeMap<&'h str, ()>), PlanError> {
    let mut taken: BTreeMap<&str, ()> = BTreeMap::new();
    let mut nodes = Vec::new();
    let mut shortages = Vec::new();

    // (what, how many, selector, worker group)
    type RoleWanted<'a> = (String, u32, &'a BTreeMap<String, String>, Option<&'a str>);
    let mut roles: Vec<RoleWanted<'_>> = vec![(
        "control plane".into(),
        spec.control_plane.count,
        &spec.control_plane.machine.selector,
        None,
    )];
    for g in &spec.worker_groups {
        roles.push((
            format!("worker group {}", g.name),
            g.count,
            &g.machine.selector,
            Some(g.name.as_str()),
        ));
    }
    for (label, count, sel, group) in roles {
        let (free, busy): (Vec<&Hardware>, Vec<&Hardware>) = machines
            .iter()
            .copied()
            .filter(|hw| matches(hw, sel))
            .partition(|hw| !taken.contains_key(hw.hostname.as_str()));
        if free.len() < count as usize {
            shortages.push(Shortage {
                role: label,
                selector: selector_text(sel),
                needed: count,
                matched: free.iter().map(|h| h.hostname.clone()).collect(),
                taken: busy.iter().map(|h| h.hostname.clone()).collect(),
            });
            continue;
        }
        for (i, hw) in free.into_iter().take(count as usize).enumerate() {
            taken.insert(&hw.hostname, ());
            let role = match group {
                None => Role::ControlPlane { first: i == 0 },
                Some(g) => Role::Worker {
                    group: g.to_string(),
                },
            };
            nodes.push(PlannedNode {
                hostname: hw.hostname.clone(),
                role,
                hardware: hw.clone(),
            });
        }
    }
    if !shortages.is_empty() {
        return Err(PlanError::NotEnoughMachines(shortages));
    }
    Ok((nodes, taken))
}

/// No node's address may fall in the pod or service range.
fn check_cluster_ranges(spec: &ClusterSpec, nodes: &[PlannedNode]) -> Result<(), PlanError> {
    let net = &spec.network;
    for n in nodes {
        for (range, cidr) in [("pod", net.pods), ("service", net.services)] {
            if cidr.contains(n.hardware.ip) {
                return Err(PlanError::NodeInClusterRange {
                    hostname: n.hostname.clone(),
                    ip: n.hardware.ip,
                    range,
                    cidr: cidr.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The endpoint: the single control plane's own address needs no VIP; anything else
/// is a VIP and must be free and reachable by ARP from every control plane. Returns
/// whether kube-vip holds it.
fn check_endpoint(
    spec: &ClusterSpec,
    machines: &[&Hardware],
    nodes: &[PlannedNode],
) -> Result<bool, PlanError> {
    let endpoint = spec.control_plane.endpoint;
    let control_planes: Vec<&PlannedNode> =
        nodes.iter().filter(|n| n.role.is_control_plane()).collect();
    let own_address = control_planes.len() == 1 && control_planes[0].hardware.ip == endpoint;
    if !own_address && let Some(hw) = machines.iter().find(|h| h.ip == endpoint) {
        return Err(PlanError::EndpointInUse {
            endpoint,
            hostname: hw.hostname.clone(),
        });
    }
    let kube_vip = spec.control_plane.kube_vip && !own_address;
    if kube_vip {
        for cp in &control_planes {
            if !same_subnet(endpoint, cp.hardware.ip, cp.hardware.netmask) {
                return Err(PlanError::EndpointOffSubnet {
                    endpoint,
                    hostname: cp.hostname.clone(),
                    ip: cp.hardware.ip,
                    netmask: cp.hardware.netmask,
                });
            }
        }
    }
    Ok(kube_vip)
}
