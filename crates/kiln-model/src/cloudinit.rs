//! NoCloud seed documents for a machine: meta-data, network-config (v2, static
//! from hardware.csv, matched by MAC) and a default user-data that sets the
//! hostname and phones home. Written for the oldest cloud-init we meet
//! (Debian 12's 22.4: a default route is `to: 0.0.0.0/0`, not `to: default`). Every value written here was validated on
//! enrolment (hostnames, IPs, MACs), so plain YAML scalars are safe.

use std::fmt::Write;

use crate::Hardware;

pub fn meta_data(hw: &Hardware, instance_id: &str) -> String {
    format!(
        "instance-id: {instance_id}\nlocal-hostname: {}\n",
        hw.hostname
    )
}

/// Netplan-style v2: the NIC with the enrolled MAC gets the static address
/// (on a VLAN sub-interface when `vlan_id` is set).
pub fn network_config(hw: &Hardware) -> String {
    let mut y = String::from("version: 2\nethernets:\n  nic0:\n    match:\n");
    let _ = writeln!(y, "      macaddress: \"{}\"", hw.mac);
    let addressing = |indent: &str| {
        let mut s = String::new();
        let _ = writeln!(s, "{indent}addresses: [{}/{}]", hw.ip, hw.prefix_len());
        if let Some(gw) = hw.gateway {
            let _ = writeln!(
                s,
                "{indent}routes:\n{indent}  - to: 0.0.0.0/0\n{indent}    via: {gw}"
            );
        }
        if !hw.nameservers.is_empty() {
            let list: Vec<String> = hw.nameservers.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                s,
                "{indent}nameservers:\n{indent}  addresses: [{}]",
                list.join(", ")
            );
        }
        s
    };
    match hw.vlan_id {
        None => {
            y.push_str("    dhcp4: false\n    dhcp6: false\n");
            y.push_str(&addressing("    "));
        }
        Some(id) => {
            y.push_str("    dhcp4: false\n    dhcp6: false\nvlans:\n");
            let _ = writeln!(y, "  vlan{id}:\n    id: {id}\n    link: nic0");
            y.push_str(&addressing("    "));
        }
    }
    y
}

/// The user-data used when a template's cloud-init action gives none.
pub fn default_user_data(hw: &Hardware, phone_home_url: &str) -> String {
    format!(
        "#cloud-config\n\
         hostname: {host}\n\
         preserve_hostname: false\n\
         manage_etc_hosts: true\n\
         phone_home:\n  url: {phone_home_url}\n  post: [instance_id, hostname, fqdn]\n  tries: 10\n",
        host = hw.hostname
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw(vlan: &str) -> Hardware {
        let csv = format!(
            "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk,vlan_id\n\
             node1,,,,52:54:00:AA:00:01,10.77.0.57,255.255.255.0,10.77.0.1,10.77.0.1|1.1.1.1,,/dev/vda,{vlan}\n"
        );
        crate::csv::parse_hardware_csv("t.csv", &csv)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn network_config_is_static_and_matched_by_mac() {
        let y = network_config(&hw(""));
        assert!(y.contains("macaddress: \"52:54:00:aa:00:01\""), "{y}");
        assert!(y.contains("addresses: [10.77.0.57/24]"), "{y}");
        assert!(y.contains("via: 10.77.0.1"), "{y}");
        assert!(y.contains("addresses: [10.77.0.1, 1.1.1.1]"), "{y}");
        let v = network_config(&hw("42"));
        assert!(
            v.contains("vlan42:\n    id: 42\n    link: nic0\n    addresses: [10.77.0.57/24]"),
            "{v}"
        );
    }

    /// Debian's cloud-init parses and renders what we write (CI installs it).
    #[test]
    fn real_cloud_init_accepts_the_documents() {
        if std::process::Command::new("cloud-init")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("cloud-init is not installed (apt-get install cloud-init): check skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for (name, vlan) in [("plain", ""), ("vlan", "42")] {
            let net = dir.path().join(format!("{name}.yaml"));
            std::fs::write(&net, network_config(&hw(vlan))).unwrap();
            let out_dir = dir.path().join(name);
            let out = std::process::Command::new("cloud-init")
                .args([
                    "devel",
                    "net-convert",
                    "--kind",
                    "yaml",
                    "--output-kind",
                    "networkd",
                    "--distro",
                    "debian",
                ])
                .arg("--network-data")
                .arg(&net)
                .arg("--directory")
                .arg(&out_dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let rendered: String = walk(&out_dir)
                .iter()
                .map(|p| std::fs::read_to_string(p).unwrap())
                .collect();
            assert!(
                rendered.contains("Address=10.77.0.57/24"),
                "{name}: {rendered}"
            );
            assert!(rendered.contains("Gateway=10.77.0.1"), "{name}: {rendered}");
        }
        let ud = dir.path().join("user-data");
        std::fs::write(
            &ud,
            default_user_data(&hw(""), "http://10.77.0.1:8080/v1/phone-home/t"),
        )
        .unwrap();
        let out = std::process::Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&ud)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "user-data: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                files.extend(walk(&e.path()));
            } else {
                files.push(e.path());
            }
        }
        files
    }

    #[test]
    fn user_and_meta_data() {
        let u = default_user_data(&hw(""), "http://10.77.0.1:8080/v1/phone-home/t0k");
        assert!(u.starts_with("#cloud-config\n"));
        assert!(
            u.contains("hostname: node1")
                && u.contains("url: http://10.77.0.1:8080/v1/phone-home/t0k")
        );
        assert_eq!(
            meta_data(&hw(""), "wf-1"),
            "instance-id: wf-1\nlocal-hostname: node1\n"
        );
    }
}
