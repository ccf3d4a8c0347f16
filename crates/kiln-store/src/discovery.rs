//! Discovered MACs (not enrolled, asked for DHCP): one row each, the record as JSON; at most
//! [`MAX_DISCOVERED`], the least recently seen evicted. Both backends use these helpers.

use kiln_model::DiscoveredMac;
pub use kiln_model::discovery::MAX_DISCOVERED;

use crate::StoreError;

pub(crate) fn encode(d: &DiscoveredMac) -> String {
    serde_json::to_string(d).expect("discovered MACs serialize")
}

pub(crate) fn decode(mac: &str, record: &str) -> Result<DiscoveredMac, StoreError> {
    serde_json::from_str(record).map_err(|e| StoreError::Corrupt {
        what: format!("discovered MAC {mac}"),
        why: e.to_string(),
    })
}

/// Each MAC once, sightings of the same MAC merged (a batch may hold several).
pub(crate) fn coalesce(seen: &[DiscoveredMac]) -> Vec<DiscoveredMac> {
    let mut out: Vec<DiscoveredMac> = Vec::new();
    for s in seen {
        match out.iter_mut().find(|o| o.mac == s.mac) {
            Some(o) => o.merge(s),
            None => out.push(s.clone()),
        }
    }
    out
}

/// Keeps the newest [`MAX_DISCOVERED`] rows (SQL shared by both backends).
pub(crate) const EVICT: &str = "DELETE FROM discovered WHERE mac NOT IN
    (SELECT mac FROM discovered ORDER BY last_seen_ms DESC, mac LIMIT 1024)";

#[cfg(test)]
mod tests {
    #[test]
    fn the_eviction_keeps_as_many_as_the_bound_says() {
        assert!(super::EVICT.ends_with(&format!("LIMIT {})", super::MAX_DISCOVERED)));
    }
}
