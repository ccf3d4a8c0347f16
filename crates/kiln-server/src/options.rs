//! Everything `kiln serve` is told: the CLI (flags, environment, config file) fills it in.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// How much one client, and all of them together, may hold of the boot services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub http: kiln_http::HttpLimits,
    /// Concurrent TFTP transfers one IP address may hold.
    pub tftp_max_per_source: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            http: kiln_http::HttpLimits::default(),
            tftp_max_per_source: 8,
        }
    }
}

impl Limits {
    /// HTTP connections kept within half the open-file limit, so TFTP (and the store) keep
    /// descriptors when HTTP is full.
    pub fn within_open_files(mut self, open_files: u64) -> Limits {
        let half = usize::try_from(open_files / 2).unwrap_or(usize::MAX).max(1);
        if self.http.max_connections > half {
            tracing::warn!(
                open_files,
                "--http-max-connections {} lowered to {half}: half the open-file limit",
                self.http.max_connections
            );
            self.http.max_connections = half;
        }
        self
    }
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// SQLite database, keys, TLS CA, images.
    pub data_dir: PathBuf,
    /// Kiln's IPv4 address on the provisioning network (TFTP and HTTP bind to it).
    pub address: Ipv4Addr,
    /// The provisioning interface; DHCP binds to it alone.
    pub interface: Option<String>,
    pub dhcp_mode: kiln_dhcp::Mode,
    /// Which enrolled machines DHCP answers: all, or this server's segment and relayed subnets.
    pub dhcp_segments: kiln_dhcp::Segments,
    pub http_port: u16,
    pub agent_tls_port: u16,
    pub tftp_port: u16,
    /// iPXE binaries for TFTP (and /boot/ over HTTP).
    pub tftp_root: PathBuf,
    /// Kernel and initrd of the in-memory OS.
    pub artifacts: PathBuf,
    pub kernel: String,
    pub initrd: String,
    pub kernel_args: String,
    pub lease_secs: u32,
    pub router_advert: bool,
    /// The admin API's listener (management network; loopback by default).
    pub api_listen: SocketAddr,
    pub limits: Limits,
    /// Where the state lives when not in SQLite in the data directory (`None`): a PostgreSQL
    /// database shared with other servers (`--store postgres://…`). Its `Debug` hides the
    /// password.
    pub store: Option<kiln_store::Location>,
    /// What `kiln_build_info` says is running: `VERSION (COMMIT)` as `kiln --version` prints it.
    pub version: String,
    /// This server's name among those sharing the state (its claims of BMC steps and its
    /// heartbeat carry it); `None`: the host name and a hash of the data directory.
    pub server_id: Option<String>,
    /// `--discovery inspect`: MACs not enrolled that netboot get the agent in inspection-only
    /// mode (see [`crate::inspection`]).
    pub inspect: bool,
    /// Where those get a short lease in reservation mode.
    pub discovery_pool: Option<kiln_dhcp::InspectPool>,
}

impl ServeOptions {
    /// The defaults `kiln serve` documents, for `address`.
    pub fn new(data_dir: PathBuf, address: Ipv4Addr) -> ServeOptions {
        ServeOptions {
            data_dir,
            address,
            interface: None,
            dhcp_mode: kiln_dhcp::Mode::Reservation,
            dhcp_segments: kiln_dhcp::Segments::All,
            http_port: 8080,
            agent_tls_port: 8443,
            tftp_port: 69,
            tftp_root: "/usr/lib/ipxe".into(),
            artifacts: "/var/lib/kiln/artifacts".into(),
            kernel: "vmlinuz".into(),
            initrd: "initrd.img".into(),
            kernel_args: "console=ttyS0,115200 console=tty0 quiet cryptomgr.notests".into(),
            lease_secs: 86_400,
            router_advert: true,
            api_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9443)),
            limits: Limits::default(),
            store: None,
            version: env!("CARGO_PKG_VERSION").into(),
            server_id: None,
            inspect: false,
            discovery_pool: None,
        }
    }

    /// This server's id: the configured one, else `HOSTNAME-HASH` (the data directory's hash
    /// tells two servers on one host apart).
    pub fn server_id(&self) -> String {
        if let Some(id) = self.server_id.as_deref().filter(|i| !i.is_empty()) {
            return id.to_string();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = host.trim();
        let dir = std::fs::canonicalize(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        let digest = <sha2::Sha256 as sha2::Digest>::digest(dir.as_os_str().as_encoded_bytes());
        let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{hash}", if host.is_empty() { "kiln" } else { host })
    }

    /// Where the server keeps its state.
    pub fn store_location(&self) -> kiln_store::Location {
        self.store
            .clone()
            .unwrap_or_else(|| kiln_store::Location::sqlite(&self.data_dir))
    }

    pub fn server_url(&self) -> String {
        format!("http://{}:{}", self.address, self.http_port)
    }

    /// DHCP only on a named, existing interface.
    pub fn check_safety(&self) -> Result<(), crate::ServerError> {
        if self.dhcp_mode != kiln_dhcp::Mode::Off {
            let Some(iface) = self.interface.as_deref().filter(|i| !i.is_empty()) else {
                return Err(crate::ServerError::Invalid(
                    "refusing to start DHCP without --interface: name the provisioning interface \
                     (kiln never answers DHCP on an interface it was not given), or use --dhcp-mode off"
                        .into(),
                ));
            };
            if !std::path::Path::new("/sys/class/net").join(iface).exists() {
                return Err(crate::ServerError::Invalid(format!(
                    "--interface {iface}: no such network interface"
                )));
            }
        }
        Ok(())
    }
}

/// `--discovery inspect` in reservation mode needs a pool (unknown machines have no reserved
/// address), and the pool must not hold Kiln's own address; a pool without inspection is a
/// mistake worth saying.
pub fn check_discovery(
    inspect: bool,
    pool: Option<&kiln_dhcp::InspectPool>,
    mode: kiln_dhcp::Mode,
    address: Ipv4Addr,
) -> Result<(), crate::ServerError> {
    let invalid = |m: String| Err(crate::ServerError::Invalid(m));
    match (inspect, pool) {
        (true, None) if mode == kiln_dhcp::Mode::Reservation => invalid(
            "--discovery inspect in reservation mode needs --discovery-pool FIRST-LAST/PREFIX: \
             machines that are not enrolled have no reserved address"
                .into(),
        ),
        (false, Some(_)) => {
            invalid("--discovery-pool is only used with --discovery inspect".into())
        }
        (_, Some(p)) if p.contains(address) => invalid(format!(
            "--discovery-pool {p} holds this server's address {address}"
        )),
        _ => Ok(()),
    }
}

/// The directory imported images live in.
pub fn images_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("images")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_connections_stay_within_half_the_open_file_limit() {
        let mut l = Limits::default();
        l.http.max_connections = 5000;
        assert_eq!(
            l.clone().within_open_files(1 << 20).http.max_connections,
            5000
        );
        assert_eq!(l.within_open_files(1024).http.max_connections, 512);
    }

    #[test]
    fn the_server_id_is_configured_or_differs_per_data_directory() {
        let mut a = ServeOptions::new("/var/lib/kiln-a".into(), Ipv4Addr::new(10, 0, 0, 1));
        let b = ServeOptions::new("/var/lib/kiln-b".into(), Ipv4Addr::new(10, 0, 0, 1));
        assert_ne!(a.server_id(), b.server_id());
        assert_eq!(a.server_id(), a.clone().server_id(), "stable");
        a.server_id = Some("rack-1".into());
        assert_eq!(a.server_id(), "rack-1");
    }

    #[test]
    fn inspection_in_reservation_mode_needs_a_pool_apart_from_our_address() {
        use kiln_dhcp::{InspectPool, Mode};
        let us = Ipv4Addr::new(10, 0, 0, 1);
        let pool = InspectPool::parse("10.0.0.200-10.0.0.220/24").unwrap();
        assert!(check_discovery(false, None, Mode::Reservation, us).is_ok());
        let e = check_discovery(true, None, Mode::Reservation, us).unwrap_err();
        assert!(e.to_string().contains("needs --discovery-pool"), "{e}");
        assert!(check_discovery(true, None, Mode::Proxy, us).is_ok());
        assert!(check_discovery(true, Some(&pool), Mode::Reservation, us).is_ok());
        assert!(check_discovery(false, Some(&pool), Mode::Reservation, us).is_err());
        let ours = InspectPool::parse("10.0.0.1-10.0.0.9/24").unwrap();
        let e = check_discovery(true, Some(&ours), Mode::Reservation, us).unwrap_err();
        assert!(e.to_string().contains("holds this server's address"), "{e}");
    }

    #[test]
    fn dhcp_needs_an_interface() {
        let mut o = ServeOptions::new("/tmp".into(), Ipv4Addr::new(10, 0, 0, 1));
        let e = o.check_safety().unwrap_err().to_string();
        assert!(
            e.contains("refusing to start DHCP without --interface"),
            "{e}"
        );
        o.interface = Some("kiln-no-such-if0".into());
        let e = o.check_safety().unwrap_err().to_string();
        assert!(e.contains("no such network interface"), "{e}");
        o.interface = Some("lo".into());
        assert!(o.check_safety().is_ok());
        o.interface = None;
        o.dhcp_mode = kiln_dhcp::Mode::Off;
        assert!(o.check_safety().is_ok());
    }
}
