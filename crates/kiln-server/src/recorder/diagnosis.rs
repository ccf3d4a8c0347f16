//! A phase past its bound → what did not happen, and the likely causes in plain words, most
//! likely first, naming the MACs and addresses involved.

use kiln_api::{Diagnosis, Phase, PhaseView};

use super::walk::{Notes, Open};
use super::{Inputs, secs};

/// The diagnosis of the running phase, when it has run longer than its bound.
pub(super) fn diagnose(open: &Open, running: &PhaseView, inputs: &Inputs<'_>) -> Option<Diagnosis> {
    let bound_ms = running.normal_s? * 1000;
    if running.duration_ms <= bound_ms {
        return None;
    }
    let ago = secs(running.duration_ms);
    let n = &open.notes;
    let (summary, causes) = match open.phase {
        Phase::PowerOn => power_on(&ago, inputs),
        Phase::FirstDhcp => first_dhcp(&ago, open, inputs),
        Phase::IpxeScript => ipxe_script(&ago, n, inputs),
        Phase::KernelFetch => kernel_fetch(&ago, n, inputs),
        Phase::AgentUp => agent_up(&ago, n, inputs),
        Phase::Reboot => reboot(&ago, inputs),
        Phase::PhoneHome => phone_home(&ago, inputs),
        Phase::Action => return None,
    };
    Some(Diagnosis {
        phase: open.phase,
        summary,
        causes,
    })
}

type Words = (String, Vec<String>);

fn power_on(ago: &str, i: &Inputs<'_>) -> Words {
    let bmc = i.bmc.unwrap_or("(none)");
    (
        format!("BMC command sent {ago} ago, not confirmed by the BMC at {bmc}"),
        vec![
            format!(
                "the BMC at {bmc} is unreachable from Kiln (address, network, firewall on UDP 623 or HTTPS)"
            ),
            "the BMC is slow or busy: Kiln retries with backoff (`kiln events` shows each retry)"
                .into(),
        ],
    )
}

fn first_dhcp(ago: &str, open: &Open, i: &Inputs<'_>) -> Words {
    let mac = i.mac;
    let since = if open.notes.by_bmc {
        "powered on"
    } else {
        "workflow created"
    };
    let mut causes = Vec::new();
    let seen: Vec<String> = i
        .unknown_macs
        .iter()
        .filter(|s| s.last_seen_ms >= open.started_ms)
        .map(|s| format!("{} ({})", s.mac, s.asked))
        .collect();
    if !seen.is_empty() {
        causes.push(format!(
            "the NIC's MAC differs from hardware.csv ({mac}): since then DHCP came from MAC(s) not enrolled: {} (`kiln discovered`)",
            seen.join(", ")
        ));
    }
    if !open.notes.by_bmc {
        causes
            .push("the machine is not powered on: it has no BMC step, power it on by hand".into());
    }
    causes
        .push("PXE (network boot) is disabled in the firmware, or the boot order skips it".into());
    causes.push("wrong VLAN: the NIC is not on Kiln's provisioning network (or a DHCP relay does not forward to Kiln)".into());
    if seen.is_empty() {
        causes.push(format!(
            "the NIC's MAC differs from hardware.csv ({mac}) (no unknown MAC asked meanwhile)"
        ));
    }
    (format!("{since} {ago} ago, no DHCP from {mac}"), causes)
}

fn ipxe_script(ago: &str, n: &Notes, i: &Inputs<'_>) -> Words {
    let ip = n.dhcp_ip.as_deref().unwrap_or("its address");
    let mut causes: Vec<String> = n
        .tftp_trouble
        .iter()
        .map(|t| format!("TFTP trouble: {t}"))
        .collect();
    causes.push("the firmware could not fetch or run the boot file (TFTP blocked, a boot file for another architecture, Secure Boot refusing iPXE)".into());
    causes.push(format!(
        "iPXE cannot reach {} from {ip} (routing, firewall)",
        i.server_url
    ));
    (
        format!("DHCP answered {ago} ago ({ip}), no iPXE script fetched"),
        causes,
    )
}

fn kernel_fetch(ago: &str, n: &Notes, i: &Inputs<'_>) -> Words {
    let fetched = if n.fetched.is_empty() {
        "nothing".to_string()
    } else {
        n.fetched.join(", ")
    };
    let mut causes: Vec<String> = n
        .http_trouble
        .iter()
        .map(|t| format!("a fetch failed: {t} (is the agent OS in the artifacts directory?)"))
        .collect();
    causes.push(format!(
        "HTTP from the machine to {} is blocked or very slow",
        i.server_url
    ));
    causes.push("too little memory for the initrd, or iPXE stopped (see the console)".into());
    (
        format!(
            "iPXE script served {ago} ago, kernel and initrd not both fetched (fetched: {fetched})"
        ),
        causes,
    )
}

fn agent_up(ago: &str, n: &Notes, i: &Inputs<'_>) -> Words {
    let causes = match &n.agent_os_dhcp {
        None => {
            let devices = match i.driverless {
                None => "no inventory yet".to_string(),
                Some([]) => "none in the last inventory".to_string(),
                Some(list) => list.join(", "),
            };
            vec![
                format!(
                    "the agent OS lacks the NIC's driver: no DHCP from it either (devices without a driver: {devices})"
                ),
                "the kernel did not boot: too little memory, another architecture, a panic (see the console)".into(),
            ]
        }
        Some(ip) => vec![
            format!(
                "the agent OS took {ip} but the agent cannot reach {} (routing, firewall, TLS: the CA fingerprint on the kernel command line)",
                i.server_url
            ),
            "the agent crashed or is not in the initrd (see the console)".into(),
        ],
    };
    (format!("kernel fetched {ago} ago, no agent call"), causes)
}

fn reboot(ago: &str, i: &Inputs<'_>) -> Words {
    (
        format!(
            "rebooted into the installed OS {ago} ago, no sign of life (no DHCP from {})",
            i.mac
        ),
        vec![
            "the disk does not boot: the boot order (the BMC's next-boot-from-disk step, the firmware), the boot loader, or the image lacks this hardware's drivers".into(),
            "the installed OS uses a static address: only its phone-home will show".into(),
        ],
    )
}

fn phone_home(ago: &str, i: &Inputs<'_>) -> Words {
    (
        format!("the installed OS took an address {ago} ago, no phone-home"),
        vec![
            "cloud-init did not run or failed (its seed on the disk, its datasource): see the console".into(),
            format!("the installed OS cannot reach {} (routing, firewall)", i.server_url),
            "a long first-boot step (kubeadm) is still running".into(),
        ],
    )
}
