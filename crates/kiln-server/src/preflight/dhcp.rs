//! Other DHCP servers on the provisioning segment: a DISCOVER from Kiln's probe MAC on
//! `--interface`, and every offer that is not Kiln's own.

use std::time::Duration;

use kiln_api::{CheckName, CheckStatus};
use kiln_dhcp::Mode;
use kiln_dhcp::probe::{self, Offer};

use super::local::Finding;
use crate::options::ServeOptions;

/// How long offers are collected.
pub const WAIT: Duration = Duration::from_secs(2);

fn describe(o: &Offer) -> String {
    let mut text = if o.offered.is_unspecified() {
        format!("{} answers without an address", o.server)
    } else {
        format!("{} offers {}", o.server, o.offered)
    };
    if o.vendor_class
        .as_deref()
        .is_some_and(|v| v.starts_with("PXEClient"))
    {
        text.push_str(" (a PXE/proxy DHCP server)");
    }
    if let Some(f) = &o.boot_file {
        text.push_str(&format!(", boot file {f:?}"));
    }
    text
}

/// One finding per other server (or one saying none answered). In reservation mode another
/// server answering the machines is a conflict; in proxy mode it is what proxy mode expects.
pub fn findings(others: &[Offer], mode: Mode, waited: Duration) -> Vec<Finding> {
    if others.is_empty() {
        return vec![Finding {
            check: CheckName::OtherDhcp,
            status: CheckStatus::Ok,
            detail: format!("no other DHCP server answered in {} s", waited.as_secs()),
        }];
    }
    others
        .iter()
        .map(|o| {
            let (status, advice) = match mode {
                Mode::Proxy => (
                    CheckStatus::Ok,
                    "kiln runs in proxy mode: that server hands out the addresses",
                ),
                _ => (
                    CheckStatus::Fail,
                    "a rogue or existing DHCP server: machines may take its offer and never \
                     reach Kiln; stop it, or run kiln serve --dhcp-mode proxy to boot alongside it",
                ),
            };
            Finding {
                check: CheckName::OtherDhcp,
                status,
                detail: format!("{}: {advice}", describe(o)),
            }
        })
        .collect()
}

/// Sends the probe from `--interface` (none given: nothing sent, a warning).
pub async fn probe(opts: &ServeOptions) -> Vec<Finding> {
    let Some(iface) = opts.interface.as_deref().filter(|i| !i.is_empty()) else {
        return vec![Finding {
            check: CheckName::OtherDhcp,
            status: CheckStatus::Warn,
            detail: "no --interface: other DHCP servers not probed".into(),
        }];
    };
    let mut random = [0u8; 5];
    let _ = getrandom::fill(&mut random);
    let xid = u32::from_be_bytes([random[0], random[1], random[2], random[3]]);
    let mac = probe::probe_mac(random[4]);
    match probe::listen(iface, (68, 67), xid, mac, WAIT).await {
        Ok(offers) => findings(&probe::others(offers, opts.address), opts.dhcp_mode, WAIT),
        Err(e) => vec![Finding {
            check: CheckName::OtherDhcp,
            status: CheckStatus::Warn,
            detail: format!("could not probe for other DHCP servers: {e}"),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn other_servers_conflict_with_reservation_mode_and_not_with_proxy_mode() {
        let rogue = Offer {
            server: Ipv4Addr::new(10, 77, 0, 250),
            offered: Ipv4Addr::new(10, 77, 0, 120),
            boot_file: None,
            vendor_class: None,
        };
        let f = findings(std::slice::from_ref(&rogue), Mode::Reservation, WAIT);
        assert_eq!(f[0].status, CheckStatus::Fail);
        assert!(
            f[0].detail.starts_with("10.77.0.250 offers 10.77.0.120: "),
            "{}",
            f[0].detail
        );
        assert!(f[0].detail.contains("--dhcp-mode proxy"), "{}", f[0].detail);
        assert_eq!(
            findings(&[rogue], Mode::Proxy, WAIT)[0].status,
            CheckStatus::Ok
        );
        let none = findings(&[], Mode::Reservation, WAIT);
        assert_eq!(none[0].status, CheckStatus::Ok);
        assert_eq!(none[0].detail, "no other DHCP server answered in 2 s");
    }

    #[test]
    fn proxy_servers_are_named_as_such() {
        let proxy = Offer {
            server: Ipv4Addr::new(10, 77, 0, 9),
            offered: Ipv4Addr::UNSPECIFIED,
            boot_file: Some("pxelinux.0".into()),
            vendor_class: Some("PXEClient".into()),
        };
        let d = &findings(&[proxy], Mode::Reservation, WAIT)[0].detail;
        assert!(
            d.starts_with("10.77.0.9 answers without an address (a PXE/proxy DHCP server), boot file \"pxelinux.0\""),
            "{d}"
        );
    }
}
