//! Inspection (`kiln serve --discovery inspect`): MACs that are not enrolled but netboot are
//! answered too, so they boot the agent in inspection-only mode. In reservation mode they have
//! no reserved address: they get a short lease from the operator's `--discovery-pool`, and
//! only a MAC that netbooted (PXE, HTTP or iPXE) is given one; a plain DHCP client (the agent
//! OS's own) is answered only while it holds the lease its netboot got. In proxy mode the
//! other DHCP server leases addresses and Kiln adds only the boot information.
//!
//! The lease table is pure (times are passed in); the DHCP shell keeps it behind a mutex and
//! the server reads it to check that an inspection claim comes from the MAC's address.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use kiln_model::MacAddr;

/// How long an inspection lease lasts: the agent OS boots, reports and powers off well
/// within it, and an address a machine gave up is free again soon.
pub const INSPECT_LEASE_SECS: u32 = 600;
/// The largest pool taken: allocation scans it, and a few hundred machines inspected at
/// once is already a large rack.
pub const MAX_POOL: u32 = 4096;

/// `--discovery-pool FIRST-LAST/PREFIX`: addresses for machines being inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InspectPool {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub netmask: Ipv4Addr,
}

impl InspectPool {
    /// `10.0.0.200-10.0.0.220/24`.
    pub fn parse(s: &str) -> Result<InspectPool, String> {
        let usage = || format!("{s:?} is not FIRST-LAST/PREFIX (10.0.0.200-10.0.0.220/24)");
        let (range, prefix) = s.split_once('/').ok_or_else(usage)?;
        let (first, last) = range.split_once('-').ok_or_else(usage)?;
        let ip = |t: &str| t.trim().parse::<Ipv4Addr>().map_err(|_| usage());
        let (first, last) = (ip(first)?, ip(last)?);
        let prefix: u32 = prefix.trim().parse().map_err(|_| usage())?;
        if !(1..=30).contains(&prefix) || u32::from(first) > u32::from(last) {
            return Err(usage());
        }
        let mask = u32::MAX << (32 - prefix);
        if u32::from(first) & mask != u32::from(last) & mask {
            return Err(format!("{s:?}: first and last are not in one /{prefix}"));
        }
        if u32::from(last) - u32::from(first) >= MAX_POOL {
            return Err(format!("{s:?}: at most {MAX_POOL} addresses"));
        }
        Ok(InspectPool {
            first,
            last,
            netmask: Ipv4Addr::from(mask),
        })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(ip))
    }
}

impl std::fmt::Display for InspectPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix = u32::from(self.netmask).count_ones();
        write!(f, "{}-{}/{prefix}", self.first, self.last)
    }
}

/// Who holds which pool address until when (milliseconds since the epoch). At most one
/// entry per pool address, so it is bounded by the pool.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leases {
    by_mac: HashMap<MacAddr, (Ipv4Addr, u64)>,
}

/// The table the DHCP service writes and the agent API reads.
pub type SharedLeases = Arc<Mutex<Leases>>;

impl Leases {
    /// The address `mac` holds at `now`, if any.
    pub fn held(&self, mac: &MacAddr, now_ms: u64) -> Option<Ipv4Addr> {
        self.by_mac
            .get(mac)
            .filter(|(_, until)| *until > now_ms)
            .map(|(ip, _)| *ip)
    }

    /// `mac`'s address, kept (and extended to `now + lease`) or newly taken: the first pool
    /// address no live lease holds and `taken` (an enrolled machine's reservation) does not
    /// name. `None` when the pool is exhausted.
    pub fn lease(
        &mut self,
        mac: MacAddr,
        now_ms: u64,
        lease_ms: u64,
        pool: &InspectPool,
        taken: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        self.by_mac
            .retain(|m, (_, until)| *until > now_ms || *m == mac);
        let ip = match self.by_mac.get(&mac) {
            Some((ip, _)) if pool.contains(*ip) && !taken(*ip) => *ip,
            _ => {
                let used: std::collections::HashSet<Ipv4Addr> = self
                    .by_mac
                    .iter()
                    .filter(|(m, _)| **m != mac)
                    .map(|(_, (ip, _))| *ip)
                    .collect();
                (u32::from(pool.first)..=u32::from(pool.last))
                    .map(Ipv4Addr::from)
                    .find(|ip| !used.contains(ip) && !taken(*ip))?
            }
        };
        self.by_mac
            .insert(mac, (ip, now_ms.saturating_add(lease_ms)));
        Some(ip)
    }

    /// Forgets `mac`'s lease (it released it).
    pub fn release(&mut self, mac: &MacAddr) {
        self.by_mac.remove(mac);
    }

    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }
}

/// What inspection needs in the DHCP config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspect {
    /// Reservation mode: where addresses come from (required there); proxy mode: unused.
    pub pool: Option<InspectPool>,
    pub lease_secs: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        format!("52:54:00:00:00:{n:02x}").parse().unwrap()
    }

    #[test]
    fn pools_parse_and_are_bounded() {
        let p = InspectPool::parse("10.0.0.200-10.0.0.202/24").unwrap();
        assert_eq!(p.netmask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(p.to_string(), "10.0.0.200-10.0.0.202/24");
        assert!(p.contains(Ipv4Addr::new(10, 0, 0, 201)));
        assert!(!p.contains(Ipv4Addr::new(10, 0, 0, 203)));
        for bad in [
            "10.0.0.200/24",
            "10.0.0.202-10.0.0.200/24",
            "10.0.0.1-10.0.1.1/24",
            "10.0.0.1-10.0.0.9/33",
            "10.0.0.0-10.255.0.0/8",
        ] {
            assert!(InspectPool::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_mac_keeps_its_address_until_it_expires_and_reservations_are_skipped() {
        let pool = InspectPool::parse("10.0.0.200-10.0.0.202/24").unwrap();
        let reserved = |ip: Ipv4Addr| ip == Ipv4Addr::new(10, 0, 0, 200);
        let mut l = Leases::default();
        let a = l.lease(mac(1), 0, 1000, &pool, &reserved).unwrap();
        assert_eq!(
            a,
            Ipv4Addr::new(10, 0, 0, 201),
            "the reserved one is skipped"
        );
        assert_eq!(
            l.lease(mac(1), 500, 1000, &pool, &reserved),
            Some(a),
            "renewed"
        );
        let b = l.lease(mac(2), 600, 1000, &pool, &reserved).unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 0, 0, 202));
        // Full: a third MAC gets nothing while both leases live.
        assert_eq!(l.lease(mac(3), 700, 1000, &pool, &reserved), None);
        assert_eq!(l.held(&mac(1), 1499), Some(a));
        assert_eq!(l.held(&mac(1), 1500), None, "expired");
        // mac(1)'s lease ran out at 1500: its address goes to the next asker.
        assert_eq!(l.lease(mac(3), 1500, 1000, &pool, &reserved), Some(a));
        assert!(l.len() <= 2, "bounded by the pool");
        l.release(&mac(2));
        assert_eq!(l.held(&mac(2), 1500), None);
    }
}
