//! `kiln serve`'s flags: one list for the command line, the `KILN_*` environment and
//! `kiln.toml` (see [`file`]), mapped onto [`ServeOptions`]; and starting the server process
//! from them (logging, the open-file limit, the runtime, SIGTERM).

pub mod file;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Limits, ServeOptions, ServerError};

/// A duration flag (`10s`, `1m`): the templates' grammar, one grammar everywhere.
fn duration_arg(s: &str) -> Result<Duration, String> {
    kiln_model::template::parse_duration(s)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DhcpMode {
    /// Full DHCP for enrolled MACs only (their reserved addresses); others get no reply.
    Reservation,
    /// Boot information only, beside an existing DHCP server.
    Proxy,
    /// No DHCP at all.
    Off,
}

/// What `serve` does with MACs that netboot but are not enrolled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiscoveryMode {
    /// List them (`kiln discovered`) and answer nothing.
    List,
    /// Also boot them into the agent in inspection-only mode: it reports the hardware and
    /// powers the machine off. Reservation mode needs --discovery-pool.
    Inspect,
}

/// How `serve` writes its log (stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for journald/log shippers).
    Json,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML file setting any of these flags (and --data-dir) under its long name in
    /// snake_case, e.g. `http_port = 8080`; flags and KILN_* variables override it.
    #[arg(long, env = "KILN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the settings serve would start with (and where each came from) as a config
    /// file, and exit.
    // Acted on by config::parse, from the parsed arguments, before Args exist.
    #[arg(long)]
    print_config: bool,
    /// Log format on stderr (RUST_LOG picks the level, default info).
    #[arg(long, env = "KILN_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Where the state lives: `sqlite` (kiln.db in the data directory, the default) or a
    /// PostgreSQL database shared by several servers, postgres://USER[:PASSWORD]@HOST[:PORT]/DB
    /// (a socket directory as `?host=/run/postgresql`). The password is never logged.
    // Checked in `options`, not by clap: clap would echo a bad value, password and all.
    #[arg(long, env = "KILN_STORE", value_name = "sqlite|URL")]
    store: Option<String>,
    /// This server's name among those sharing a PostgreSQL store (BMC step claims and the
    /// heartbeat carry it). Default: the host name and a hash of the data directory.
    #[arg(long, env = "KILN_SERVER_ID")]
    server_id: Option<String>,
    /// Which enrolled machines DHCP answers: `all` (one server for everything), or `own` —
    /// those on this server's segment (their subnet holds --address) — followed by the subnets
    /// it serves through DHCP relays: `own,10.20.0.0/24`. Several servers sharing a store each
    /// answer their own segment.
    #[arg(
        long,
        env = "KILN_DHCP_SERVE",
        default_value = "all",
        value_name = "all|own[,CIDR…]"
    )]
    dhcp_serve: String,
    /// Provisioning interface. DHCP binds to it alone; required unless --dhcp-mode off.
    #[arg(long, env = "KILN_INTERFACE")]
    interface: Option<String>,
    /// Kiln's IPv4 address on the provisioning network (TFTP and HTTP bind to it).
    #[arg(long, env = "KILN_ADDRESS")]
    address: Ipv4Addr,
    #[arg(
        long,
        env = "KILN_DHCP_MODE",
        value_enum,
        default_value = "reservation"
    )]
    dhcp_mode: DhcpMode,
    /// MACs that netboot but are not enrolled: `list` them only, or `inspect` them too (the
    /// agent reports their hardware to `kiln discovered` and powers them off). Anyone on the
    /// provisioning network can then boot the agent OS and store one bounded inventory per MAC.
    #[arg(long, env = "KILN_DISCOVERY", value_enum, default_value = "list")]
    discovery: DiscoveryMode,
    /// Addresses for machines being inspected in reservation mode, FIRST-LAST/PREFIX
    /// (10.0.0.200-10.0.0.220/24): a 10-minute lease each, only to MACs that netbooted.
    #[arg(long, env = "KILN_DISCOVERY_POOL", value_name = "FIRST-LAST/PREFIX")]
    discovery_pool: Option<String>,
    #[arg(long, env = "KILN_HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    /// Port of the agent API over TLS, on --address (the plain HTTP port then refuses
    /// /v1/agent/...). Its CA is made at first start in DATA_DIR/tls; netbooted kernels get
    /// kiln.api=https://ADDRESS:PORT and the CA's SHA-256 as kiln.ca-sha256=.
    #[arg(long, env = "KILN_AGENT_TLS_PORT", default_value_t = 8443)]
    agent_tls_port: u16,
    #[command(flatten)]
    http_limits: HttpLimitArgs,
    #[arg(long, env = "KILN_TFTP_PORT", default_value_t = 69)]
    tftp_port: u16,
    /// Concurrent TFTP transfers one IP address may hold (a machine needs one or two; more
    /// only for load tests that fetch many files from one address).
    #[arg(long, env = "KILN_TFTP_MAX_PER_SOURCE", default_value_t = 8)]
    tftp_max_per_source: usize,
    /// iPXE binaries for TFTP (and /boot/ over HTTP).
    #[arg(long, env = "KILN_TFTP_ROOT", default_value = "/usr/lib/ipxe")]
    tftp_root: PathBuf,
    /// Kernel and initrd of the in-memory OS, served under /artifacts/.
    #[arg(
        long,
        env = "KILN_ARTIFACTS",
        default_value = "/var/lib/kiln/artifacts"
    )]
    artifacts: PathBuf,
    /// Kernel file name under --artifacts.
    #[arg(long, env = "KILN_KERNEL", default_value = "vmlinuz")]
    kernel: String,
    /// Initrd file name under --artifacts.
    #[arg(long, env = "KILN_INITRD", default_value = "initrd.img")]
    initrd: String,
    /// Extra kernel command line for netbooted machines.
    #[arg(
        long,
        env = "KILN_KERNEL_ARGS",
        default_value = "console=ttyS0,115200 console=tty0 quiet cryptomgr.notests"
    )]
    kernel_args: String,
    /// Lease time for reserved addresses, in seconds.
    #[arg(long, env = "KILN_LEASE_SECS", default_value_t = 86_400)]
    lease_secs: u32,
    /// Do not send IPv6 router advertisements (sent by default so iPXE does not
    /// wait ~16 s for IPv6 autoconfiguration; they carry no prefix and no default route).
    #[arg(long, env = "KILN_NO_ROUTER_ADVERT")]
    no_router_advert: bool,
    /// The admin API's address (REST over TLS with Kiln's CA, bearer tokens): keep it on the
    /// management network, never the provisioning one. Port 0 picks a free port (written to
    /// DATA_DIR/api.json for the CLI on this host).
    #[arg(long, env = "KILN_API_LISTEN", default_value = "127.0.0.1:9443")]
    api_listen: SocketAddr,
}

/// What one host on the provisioning network may hold of the HTTP service (see
/// `kiln_http::HttpLimits` for why the defaults).
#[derive(clap::Args)]
struct HttpLimitArgs {
    /// Open HTTP connections in all; more are closed at once (counted in
    /// kiln_http_connections_refused_total). At most half the open-file limit is used, so
    /// TFTP keeps working when HTTP is full.
    #[arg(long, env = "KILN_HTTP_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    http_max_connections: usize,
    /// Open HTTP connections one IP address may hold (a machine needs one or two).
    #[arg(long, env = "KILN_HTTP_MAX_PER_SOURCE", default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    http_max_per_source: usize,
    /// A request head must be complete this long after the connection opened or its
    /// first byte arrived (10s, 1m).
    #[arg(long, env = "KILN_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = duration_arg)]
    http_header_timeout: Duration,
    /// An HTTP connection with no request in flight is closed after this long (downloads
    /// in progress are never cut).
    #[arg(long, env = "KILN_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = duration_arg)]
    http_idle_timeout: Duration,
}

impl HttpLimitArgs {
    fn limits(&self) -> kiln_http::HttpLimits {
        let mut l = kiln_http::HttpLimits::default();
        l.max_connections = self.http_max_connections;
        l.max_per_source = self.http_max_per_source;
        l.header_timeout = self.http_header_timeout;
        l.idle_timeout = self.http_idle_timeout;
        l
    }
}

impl ServeArgs {
    /// Where the settings came from (`--config FILE`), for the log.
    pub fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    fn dhcp_mode_value(&self) -> kiln_dhcp::Mode {
        match self.dhcp_mode {
            DhcpMode::Reservation => kiln_dhcp::Mode::Reservation,
            DhcpMode::Proxy => kiln_dhcp::Mode::Proxy,
            DhcpMode::Off => kiln_dhcp::Mode::Off,
        }
    }

    pub fn options(&self, data_dir: &Path) -> Result<ServeOptions, ServerError> {
        // SQLite in the data directory is what `None` means.
        let store = match &self.store {
            Some(v) => match kiln_store::Location::parse(v, data_dir)? {
                pg @ kiln_store::Location::Postgres { .. } => Some(pg),
                _ => None,
            },
            None => None,
        };
        let discovery_pool = self
            .discovery_pool
            .as_deref()
            .map(kiln_dhcp::InspectPool::parse)
            .transpose()
            .map_err(|e| ServerError::Invalid(format!("--discovery-pool {e}")))?;
        let inspect = self.discovery == DiscoveryMode::Inspect;
        crate::options::check_discovery(
            inspect,
            discovery_pool.as_ref(),
            self.dhcp_mode_value(),
            self.address,
        )?;
        Ok(ServeOptions {
            version: env!("CARGO_PKG_VERSION").into(),
            inspect,
            discovery_pool,
            data_dir: data_dir.to_path_buf(),
            address: self.address,
            interface: self.interface.clone(),
            dhcp_mode: self.dhcp_mode_value(),
            dhcp_segments: kiln_dhcp::Segments::parse(&self.dhcp_serve)
                .map_err(|e| ServerError::Invalid(format!("--dhcp-serve {e}")))?,
            http_port: self.http_port,
            agent_tls_port: self.agent_tls_port,
            tftp_port: self.tftp_port,
            tftp_root: self.tftp_root.clone(),
            artifacts: self.artifacts.clone(),
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            kernel_args: self.kernel_args.clone(),
            lease_secs: self.lease_secs,
            router_advert: !self.no_router_advert,
            api_listen: self.api_listen,
            store,
            server_id: self.server_id.clone(),
            limits: Limits {
                http: self.http_limits.limits(),
                tftp_max_per_source: self.tftp_max_per_source,
            },
        })
    }
}

/// `kiln serve`: the server with these settings, until SIGINT or SIGTERM. `version` is what
/// `kiln --version` prints, for `kiln_build_info`.
pub fn run(data_dir: &Path, args: ServeArgs, version: &str) -> Result<(), ServerError> {
    let mut opts = args.options(data_dir)?;
    opts.version = version.to_string();
    opts.check_safety()?;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log.json().init(),
    }
    if let Some(file) = &args.config {
        tracing::info!(config = %file.display(), "settings read from the config file");
    }
    match raise_open_file_limit() {
        Ok(n) => tracing::info!(open_files = n, "open-file limit"),
        Err(e) => tracing::warn!("could not raise the open-file limit: {e}"),
    }
    // TFTP runs each transfer's block loop on a blocking thread: leave room
    // for as many as it admits (max_transfers), plus the store's work.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(1100)
        .build()
        .map_err(|e| ServerError::Start {
            what: "starting the async runtime".into(),
            cause: e.into(),
        })?;
    runtime.block_on(crate::serve(opts, wait_for_signal()))
}

/// Raises the soft open-file limit to the hard one and returns it: every HTTP connection and
/// TFTP transfer holds a descriptor, and the usual soft limit (1,024) is what a host on the
/// provisioning network could exhaust with idle connections.
fn raise_open_file_limit() -> std::io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        let n = raise_open_file_limit().unwrap();
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(now.current, now.maximum);
        assert_eq!(n, now.current.unwrap_or(u64::MAX));
    }

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn http_limits_come_from_the_flags_within_half_the_open_file_limit() {
        let t = T::parse_from([
            "t",
            "--address",
            "10.0.0.1",
            "--http-max-connections",
            "5000",
            "--http-max-per-source",
            "8",
            "--http-header-timeout",
            "5s",
            "--http-idle-timeout",
            "2m",
        ]);
        let l = t.args.http_limits.limits();
        assert_eq!(l.max_connections, 5000);
        assert_eq!(l.max_per_source, 8);
        assert_eq!(l.header_timeout, Duration::from_secs(5));
        assert_eq!(l.idle_timeout, Duration::from_secs(120));
        let d = T::parse_from(["t", "--address", "10.0.0.1"])
            .args
            .http_limits;
        assert_eq!(d.limits(), kiln_http::HttpLimits::default());
        for bad in [
            ["--http-max-per-source", "0"],
            ["--http-header-timeout", "0s"],
        ] {
            assert!(T::try_parse_from(["t", "--address", "10.0.0.1", bad[0], bad[1]]).is_err());
        }
    }
}
