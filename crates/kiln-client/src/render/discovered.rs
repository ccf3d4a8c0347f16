//! `kiln discovered`: one line per MAC not enrolled, most recently seen first; under an
//! inspected one, what its agent found (CPU, memory, firmware, disks, NICs).

use kiln_api::DiscoveredMac;
use kiln_api::time::rfc3339_ms;

/// The table, ending with a newline.
pub fn table(found: &[DiscoveredMac]) -> String {
    if found.is_empty() {
        return "no MAC that is not enrolled has asked for DHCP\n".into();
    }
    let mut out = format!(
        "{:<17}  {:<24}  {:<24}  {:>6}  ASKED\n",
        "MAC", "FIRST SEEN", "LAST SEEN", "COUNT"
    );
    for d in found {
        out.push_str(&format!(
            "{:<17}  {:<24}  {:<24}  {:>6}  {}\n",
            d.mac.to_string(),
            rfc3339_ms(d.first_seen_ms),
            rfc3339_ms(d.last_seen_ms),
            d.count,
            d.asked()
        ));
        if let Some(i) = &d.inspection {
            out.push_str(&format!(
                "  inspected {}: {}\n",
                rfc3339_ms(i.at_ms),
                i.inventory.summary()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_mac_with_what_it_asked() {
        let d = DiscoveredMac {
            mac: "52:54:00:bb:00:07".parse().unwrap(),
            first_seen_ms: 0,
            last_seen_ms: 1000,
            count: 3,
            client: kiln_api::event_data::DhcpClient::Pxe,
            arch: Some(0),
            vendor_class: None,
            user_class: None,
            inspection: None,
        };
        let text = table(std::slice::from_ref(&d));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("MAC "), "{text}");
        assert!(
            lines[1].starts_with("52:54:00:bb:00:07  1970-01-01T00:00:00"),
            "{text}"
        );
        assert!(lines[1].ends_with("     3  PXE, arch 0 (BIOS)"), "{text}");
        let mut inspected = d.clone();
        let mut inventory = kiln_api::inventory::Inventory {
            memory_bytes: 2 << 30,
            ..Default::default()
        };
        inventory.cpu.cores = 1;
        inspected.inspection = Some(kiln_api::discovery::Inspection {
            at_ms: 2000,
            inventory,
        });
        let text = table(&[inspected]);
        assert_eq!(
            text.lines().nth(2),
            Some("  inspected 1970-01-01T00:00:02.000Z: 1 cpu, 2 GiB, bios, disks [], 0 nic(s)"),
            "{text}"
        );
        assert_eq!(
            table(&[]),
            "no MAC that is not enrolled has asked for DHCP\n"
        );
    }
}
