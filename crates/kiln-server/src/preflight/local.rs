//! The server's own checks: boot artifacts, TFTP root, provisioning interface and address.
//! `kiln serve` runs them at start (a missing directory is an error there, not a silent 404
//! later); the preflight reports them as rows.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;

use kiln_api::{CheckName, CheckStatus};

use crate::ServerError;
use crate::options::ServeOptions;

/// One server-wide finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: CheckName,
    pub status: CheckStatus,
    pub detail: String,
}

fn finding(check: CheckName, status: CheckStatus, detail: impl Into<String>) -> Finding {
    Finding {
        check,
        status,
        detail: detail.into(),
    }
}

fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{bytes} bytes")
    }
}

/// `names` inside `dir`: a failing finding when the directory is missing, else one naming
/// each file's size, failing (`missing_status`) when one is absent or empty.
fn files_in(
    check: CheckName,
    flag: &str,
    dir: &Path,
    names: &[&str],
    missing_status: CheckStatus,
) -> Finding {
    if !dir.is_dir() {
        return finding(
            check,
            CheckStatus::Fail,
            format!("{flag} {}: no such directory", dir.display()),
        );
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        match std::fs::metadata(dir.join(name)) {
            Ok(m) if m.is_file() && m.len() > 0 => {
                found.push(format!("{name} {}", size_text(m.len())))
            }
            _ => missing.push(*name),
        }
    }
    if missing.is_empty() {
        finding(
            check,
            CheckStatus::Ok,
            format!("{}: {}", dir.display(), found.join(", ")),
        )
    } else {
        finding(
            check,
            missing_status,
            format!(
                "{flag} {}: missing or empty: {}",
                dir.display(),
                missing.join(", ")
            ),
        )
    }
}

/// The agent's kernel and initrd.
pub fn artifacts(opts: &ServeOptions) -> Finding {
    files_in(
        CheckName::Artifacts,
        "--artifacts",
        &opts.artifacts,
        &[&opts.kernel, &opts.initrd],
        CheckStatus::Fail,
    )
}

/// The first-stage iPXE binaries firmware fetches over TFTP (BIOS and x86 UEFI).
pub fn tftp_root(opts: &ServeOptions) -> Finding {
    let files = kiln_dhcp::BootFiles::default();
    files_in(
        CheckName::TftpRoot,
        "--tftp-root",
        &opts.tftp_root,
        &[&files.bios, &files.efi_x64],
        CheckStatus::Warn,
    )
}

/// Whether `/proc/net/route` (its text) has a route for `address`'s subnet through `interface`:
/// the address's own network is reached over that interface.
pub fn routes_via(route_table: &str, interface: &str, address: Ipv4Addr) -> bool {
    // Iface Destination Gateway Flags RefCnt Use Metric Mask …: each address is the hex of
    // the network-order bytes read as a native u32.
    let hex = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|n| u32::from_be_bytes(n.to_ne_bytes()))
    };
    route_table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[0] != interface {
            return false;
        }
        match (hex(f[1]), hex(f[2]), hex(f[7])) {
            (Some(dest), Some(0), Some(mask)) => {
                mask != 0 && u32::from(address) & mask == dest & mask
            }
            _ => false,
        }
    })
}

/// `--interface` exists and `--address` is this host's and on that interface's network.
pub fn interface(opts: &ServeOptions) -> Finding {
    let Some(iface) = opts.interface.as_deref().filter(|i| !i.is_empty()) else {
        return finding(
            CheckName::Interface,
            CheckStatus::Warn,
            format!(
                "no --interface given: DHCP is {:?}, nothing bound to a provisioning interface",
                opts.dhcp_mode
            ),
        );
    };
    if !Path::new("/sys/class/net").join(iface).exists() {
        return finding(
            CheckName::Interface,
            CheckStatus::Fail,
            format!("--interface {iface}: no such network interface"),
        );
    }
    if let Err(e) = UdpSocket::bind((opts.address, 0)) {
        return finding(
            CheckName::Interface,
            CheckStatus::Fail,
            format!(
                "--address {}: not an address of this host ({e})",
                opts.address
            ),
        );
    }
    let routed = std::fs::read_to_string("/proc/net/route")
        .map(|t| routes_via(&t, iface, opts.address))
        .unwrap_or(false);
    if routed || opts.address.is_loopback() {
        finding(
            CheckName::Interface,
            CheckStatus::Ok,
            format!("{iface} carries {}", opts.address),
        )
    } else {
        finding(
            CheckName::Interface,
            CheckStatus::Warn,
            format!(
                "--address {} is this host's, but its network is not routed through {iface}",
                opts.address
            ),
        )
    }
}

/// What `kiln serve` refuses to start without: the data directory a directory, the
/// artifacts and TFTP directories present, the interface carrying the address. Missing files
/// inside them are logged, not fatal (they may be added later).
pub fn at_start(opts: &ServeOptions) -> Result<(), ServerError> {
    if opts.data_dir.exists() && !opts.data_dir.is_dir() {
        return Err(ServerError::Invalid(format!(
            "--data-dir {}: not a directory",
            opts.data_dir.display()
        )));
    }
    let mut refused = Vec::new();
    for f in [artifacts(opts), tftp_root(opts), interface(opts)] {
        let dir_missing = f.detail.ends_with("no such directory");
        let fatal = match f.check {
            CheckName::Interface => f.status == CheckStatus::Fail,
            _ => dir_missing,
        };
        if fatal {
            refused.push(f.detail);
        } else if f.status != CheckStatus::Ok
            && !(f.check == CheckName::Interface && opts.interface.is_none())
        {
            // Files may still be added (the agent OS built after the first start).
            tracing::warn!("preflight: {}", f.detail);
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ServerError::Invalid(refused.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `ip route`: 10.77.0.0/24 dev br0; default via 192.168.1.1 dev eth0.
    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        br0\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn the_address_network_is_routed_through_the_interface() {
        assert!(routes_via(ROUTES, "br0", Ipv4Addr::new(10, 77, 0, 1)));
        assert!(!routes_via(ROUTES, "eth0", Ipv4Addr::new(10, 77, 0, 1)));
        assert!(!routes_via(ROUTES, "br0", Ipv4Addr::new(10, 78, 0, 1)));
        // A default route is not the address's own network.
        assert!(!routes_via(ROUTES, "eth0", Ipv4Addr::new(192, 168, 1, 5)));
        assert!(!routes_via("garbage", "br0", Ipv4Addr::new(10, 77, 0, 1)));
    }

    fn opts(dir: &Path) -> ServeOptions {
        let mut o = ServeOptions::new(dir.join("data"), Ipv4Addr::LOCALHOST);
        o.dhcp_mode = kiln_dhcp::Mode::Off;
        o.artifacts = dir.join("artifacts");
        o.tftp_root = dir.join("tftp");
        o
    }

    #[test]
    fn missing_directories_stop_the_start_missing_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        let e = at_start(&o).unwrap_err().to_string();
        assert!(
            e.contains("--artifacts") && e.contains("no such directory"),
            "{e}"
        );
        assert!(e.contains("--tftp-root"), "{e}");
        std::fs::create_dir_all(&o.artifacts).unwrap();
        std::fs::create_dir_all(&o.tftp_root).unwrap();
        at_start(&o).unwrap();
        let a = artifacts(&o);
        assert_eq!(a.status, CheckStatus::Fail);
        assert!(
            a.detail.contains("missing or empty: vmlinuz, initrd.img"),
            "{}",
            a.detail
        );
        std::fs::write(o.artifacts.join("vmlinuz"), b"k").unwrap();
        std::fs::write(o.artifacts.join("initrd.img"), b"i").unwrap();
        let a = artifacts(&o);
        assert_eq!(a.status, CheckStatus::Ok, "{}", a.detail);
        assert!(a.detail.contains("vmlinuz 1 bytes"), "{}", a.detail);
        assert_eq!(tftp_root(&o).status, CheckStatus::Warn);
    }

    #[test]
    fn an_address_the_host_lacks_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        o.interface = Some("lo".into());
        assert_eq!(
            interface(&o).status,
            CheckStatus::Ok,
            "{}",
            interface(&o).detail
        );
        // TEST-NET-3: no host here has it.
        o.address = Ipv4Addr::new(203, 0, 113, 77);
        let f = interface(&o);
        assert_eq!(f.status, CheckStatus::Fail);
        assert!(
            f.detail.contains("not an address of this host"),
            "{}",
            f.detail
        );
        o.interface = Some("kiln-no-such-if0".into());
        assert!(interface(&o).detail.contains("no such network interface"));
    }
}
