//! A machine as enrolled from hardware.csv.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{MacAddr, Secret};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Hardware {
    pub hostname: String,
    #[schema(value_type = String, example = "52:54:00:12:34:56")]
    pub mac: MacAddr,
    #[schema(value_type = String, example = "10.0.0.11")]
    pub ip: Ipv4Addr,
    #[schema(value_type = String, example = "255.255.255.0")]
    pub netmask: Ipv4Addr,
    #[schema(value_type = Option<String>)]
    pub gateway: Option<Ipv4Addr>,
    #[schema(value_type = Vec<String>)]
    pub nameservers: Vec<Ipv4Addr>,
    pub labels: BTreeMap<String, String>,
    pub disk: String,
    pub vlan_id: Option<u16>,
    pub bmc: Option<BmcEndpoint>,
    /// Whether the machine should boot from the network (agent) or its disk.
    #[serde(default)]
    pub netboot: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BmcEndpoint {
    /// As written in hardware.csv: an address, optionally with scheme and port.
    pub address: String,
    pub username: String,
    /// Never serialized: API output and JSON never carry it. The store keeps it apart.
    #[serde(skip)]
    #[schema(ignore)]
    pub password: Secret,
}

impl Hardware {
    /// The stand-in record of a machine being inspected (not enrolled): named `inspect-` and
    /// its MAC's hex digits, netbooting, at `ip` (unspecified until a pool lease gives one).
    pub fn inspection_guest(mac: MacAddr, ip: Ipv4Addr, netmask: Ipv4Addr) -> Hardware {
        Hardware {
            hostname: format!("inspect-{}", mac.to_string().replace(':', "")),
            mac,
            ip,
            netmask,
            gateway: None,
            nameservers: Vec::new(),
            labels: Default::default(),
            disk: String::new(),
            vlan_id: None,
            bmc: None,
            netboot: true,
        }
    }

    /// Prefix length of the netmask (the CSV parser guarantees it is contiguous).
    pub fn prefix_len(&self) -> u32 {
        u32::from(self.netmask).count_ones()
    }
}

/// Whether `mask` is a contiguous run of ones from the top bit (255.255.255.0, not 255.0.255.0).
pub fn is_contiguous_netmask(mask: Ipv4Addr) -> bool {
    let m = u32::from(mask);
    m.leading_ones() + m.trailing_zeros() == 32 && m != 0
}

/// Whether `a` and `b` share the network defined by `mask`.
pub fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, mask: Ipv4Addr) -> bool {
    let m = u32::from(mask);
    u32::from(a) & m == u32::from(b) & m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmask_contiguity() {
        assert!(is_contiguous_netmask("255.255.255.0".parse().unwrap()));
        assert!(is_contiguous_netmask("255.255.255.255".parse().unwrap()));
        assert!(!is_contiguous_netmask("255.0.255.0".parse().unwrap()));
        assert!(!is_contiguous_netmask("0.0.0.0".parse().unwrap()));
    }
}
