//! What a simulated machine reads in what Kiln serves it: the iPXE script (netboot the agent
//! OS, or leave for the disk) and the cloud-init seed (where the installed OS phones home).
//! Pure.

/// What the iPXE script tells iPXE to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// `kernel URL ARGS...` and `initrd URL`: fetch both and boot the agent OS with that
    /// kernel command line.
    Agent {
        kernel: String,
        initrd: String,
        cmdline: String,
    },
    /// No kernel: the script exits (or `sanboot`s) to the local disk.
    Disk,
}

/// Reads Kiln's iPXE script. `None`: a kernel without an initrd (not a script Kiln writes).
pub fn parse_ipxe(script: &str) -> Option<Boot> {
    let mut kernel = None;
    let mut initrd = None;
    for line in script.lines().map(str::trim) {
        // `kernel URL args || goto retry`: the command is what comes before `||`.
        let command = line.split("||").next().unwrap_or("").trim();
        let mut words = command.split_whitespace();
        match words.next() {
            Some("kernel") if kernel.is_none() => {
                let url = words.next()?.to_string();
                let args: Vec<&str> = words.collect();
                kernel = Some((url, args.join(" ")));
            }
            Some("initrd") if initrd.is_none() => initrd = words.next().map(str::to_string),
            _ => {}
        }
    }
    match (kernel, initrd) {
        (None, _) => Some(Boot::Disk),
        (Some((kernel, cmdline)), Some(initrd)) => Some(Boot::Agent {
            kernel,
            initrd,
            cmdline,
        }),
        (Some(_), None) => None,
    }
}

/// `phone_home: url:` of a cloud-config user-data.
pub fn phone_home_url(user_data: &str) -> Option<String> {
    let mut in_phone_home = false;
    for line in user_data.lines() {
        if !line.starts_with(' ') {
            in_phone_home = line.trim_end() == "phone_home:";
            continue;
        }
        if in_phone_home && let Some(url) = line.trim().strip_prefix("url:") {
            return Some(url.trim().trim_matches(['"', '\'']).to_string());
        }
    }
    None
}

/// `instance-id:` of a NoCloud meta-data.
pub fn instance_id(meta_data: &str) -> Option<String> {
    meta_data
        .lines()
        .find_map(|l| l.strip_prefix("instance-id:"))
        .map(|v| v.trim().to_string())
}

/// What cloud-init's phone_home module posts (`post: [instance_id, hostname, fqdn]`), form
/// encoded.
pub fn phone_home_body(instance_id: &str, hostname: &str) -> String {
    format!("instance_id={instance_id}&hostname={hostname}&fqdn={hostname}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_netboot_script_kiln_writes() {
        let s = "#!ipxe\n# Kiln: boot n1\necho Kiln: netbooting\n:fetch\n\
                 kernel http://10.77.0.1:8080/artifacts/vmlinuz initrd=initrd.img console=ttyS0 kiln.server=http://10.77.0.1:8080 kiln.mac=52:54:00:aa:00:01 || goto retry\n\
                 initrd http://10.77.0.1:8080/artifacts/initrd.img || goto retry\nboot || goto retry\n:retry\nsleep 5\ngoto fetch\n";
        assert_eq!(
            parse_ipxe(s),
            Some(Boot::Agent {
                kernel: "http://10.77.0.1:8080/artifacts/vmlinuz".into(),
                initrd: "http://10.77.0.1:8080/artifacts/initrd.img".into(),
                cmdline: "initrd=initrd.img console=ttyS0 kiln.server=http://10.77.0.1:8080 kiln.mac=52:54:00:aa:00:01".into(),
            })
        );
    }

    #[test]
    fn the_local_disk_script_boots_the_disk() {
        let s = include_str!("../../../ipxe/local-disk.ipxe");
        assert_eq!(parse_ipxe(s), Some(Boot::Disk));
        assert_eq!(parse_ipxe("#!ipxe\nkernel http://k/v\nboot\n"), None);
    }

    #[test]
    fn reads_the_seed() {
        let user = "#cloud-config\nhostname: n1\nphone_home:\n  url: http://10.77.0.1:8080/v1/phone-home/wf-1/abc\n  post: [instance_id, hostname, fqdn]\n  tries: 10\n";
        assert_eq!(
            phone_home_url(user).as_deref(),
            Some("http://10.77.0.1:8080/v1/phone-home/wf-1/abc")
        );
        assert_eq!(phone_home_url("#cloud-config\nurl: http://x\n"), None);
        assert_eq!(
            instance_id("instance-id: wf-1\nlocal-hostname: n1\n").as_deref(),
            Some("wf-1")
        );
        assert_eq!(
            phone_home_body("wf-1", "n1"),
            "instance_id=wf-1&hostname=n1&fqdn=n1"
        );
    }
}
