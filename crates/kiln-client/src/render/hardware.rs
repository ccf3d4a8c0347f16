//! Enrolled machines: the list and one machine. BMC passwords are never part of a view.

use kiln_model::Hardware;

use super::{dash, table};

fn labels(hw: &Hardware) -> String {
    hw.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.to_string()
}

pub fn list(all: &[Hardware]) -> String {
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|h| {
            vec![
                h.hostname.clone(),
                h.mac.to_string(),
                format!("{}/{}", h.ip, h.prefix_len()),
                on_off(h.netboot),
                dash(h.bmc.as_ref().map(|b| b.address.clone())),
                h.disk.clone(),
                labels(h),
            ]
        })
        .collect();
    let header = ["HOSTNAME", "MAC", "IP", "NETBOOT", "BMC", "DISK", "LABELS"];
    table(&header, &rows)
}

pub fn show(hw: &Hardware) -> String {
    let ns = hw
        .nameservers
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let bmc = hw
        .bmc
        .as_ref()
        .map(|b| format!("{} (user {}, password stored)", b.address, b.username));
    let lines = [
        ("hostname", hw.hostname.clone()),
        ("mac", hw.mac.to_string()),
        (
            "ip",
            format!("{}/{} (netmask {})", hw.ip, hw.prefix_len(), hw.netmask),
        ),
        ("gateway", dash(hw.gateway.map(|g| g.to_string()))),
        ("nameservers", if ns.is_empty() { "-".into() } else { ns }),
        ("disk", hw.disk.clone()),
        ("vlan", dash(hw.vlan_id.map(|v| v.to_string()))),
        ("labels", labels(hw)),
        ("netboot", on_off(hw.netboot)),
        ("bmc", dash(bmc)),
    ];
    lines
        .iter()
        .map(|(k, v)| format!("{k:<12} {v}\n"))
        .collect()
}
