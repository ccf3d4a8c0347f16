//! `kiln serve`: DHCP, TFTP and HTTP on one provisioning network.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use kiln_model::{EventSink, Inventory, SharedInventory};
use kiln_store::Store;
use tokio::sync::watch;

use crate::sink::StoreSink;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DhcpMode {
    /// Full DHCP for enrolled MACs only (their reserved addresses); others get no reply.
    Reservation,
    /// Boot information only, beside an existing DHCP server.
    Proxy,
    /// No DHCP at all.
    Off,
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
pub struct Args {
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
    #[arg(long, env = "KILN_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = crate::output::duration_arg)]
    http_header_timeout: Duration,
    /// An HTTP connection with no request in flight is closed after this long (downloads
    /// in progress are never cut).
    #[arg(long, env = "KILN_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = crate::output::duration_arg)]
    http_idle_timeout: Duration,
}

impl HttpLimitArgs {
    fn limits(&self, open_files: u64) -> kiln_http::HttpLimits {
        let mut l = kiln_http::HttpLimits::default();
        let half = usize::try_from(open_files / 2).unwrap_or(usize::MAX).max(1);
        if self.http_max_connections > half {
            tracing::warn!(
                open_files,
                "--http-max-connections {} lowered to {half}: half the open-file limit",
                self.http_max_connections
            );
        }
        l.max_connections = self.http_max_connections.min(half);
        l.max_per_source = self.http_max_per_source;
        l.header_timeout = self.http_header_timeout;
        l.idle_timeout = self.http_idle_timeout;
        l
    }
}

/// Checks that make `kiln serve` safe to start: DHCP only on a named, existing interface.
fn check_safety(args: &Args) -> anyhow::Result<()> {
    if args.dhcp_mode != DhcpMode::Off {
        let Some(iface) = args.interface.as_deref().filter(|i| !i.is_empty()) else {
            bail!(
                "refusing to start DHCP without --interface: name the provisioning interface \
                 (kiln never answers DHCP on an interface it was not given), or use --dhcp-mode off"
            );
        };
        if !Path::new("/sys/class/net").join(iface).exists() {
            bail!("--interface {iface}: no such network interface");
        }
    }
    Ok(())
}

pub fn run(data_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    check_safety(&args)?;
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
        .build()?;
    runtime.block_on(serve(data_dir, args))?;
    Ok(ExitCode::SUCCESS)
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

async fn serve(data_dir: &Path, args: Args) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25, 1.0,
                5.0, 30.0,
            ],
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;

    let store = Arc::new(
        Store::open(data_dir)
            .with_context(|| format!("opening the store in {}", data_dir.display()))?,
    );
    // This connection writes events (and reads); see Store::relax_durability.
    store.relax_durability()?;
    let inventory = SharedInventory::new(Inventory::new(store.hardware()?));
    let events: Arc<dyn EventSink> = StoreSink::start(store.clone(), inventory.clone());
    let (shutdown_tx, shutdown) = watch::channel(false);
    let server_url = format!("http://{}:{}", args.address, args.http_port);

    // Agent API over TLS: Kiln's CA, and where the netbooted agent finds it.
    let agent_tls =
        crate::agent_tls::AgentTlsListener::prepare(data_dir, args.address, args.agent_tls_port)?;

    // HTTP
    let http_cfg = kiln_http::HttpConfig {
        server_url: server_url.clone(),
        artifacts_dir: args.artifacts.clone(),
        boot_dir: args.tftp_root.clone(),
        images_dir: crate::image::images_dir(data_dir),
        kernel: args.kernel.clone(),
        initrd: args.initrd.clone(),
        kernel_args: format!("{} {}", args.kernel_args, agent_tls.kernel_args()),
    };
    let render = metrics.clone();
    // The engine writes through its own connection: `PRAGMA data_version` only
    // moves for other connections' commits, and the inventory refresher below
    // must see the engine turn a machine's netboot off.
    let engine_store = Store::open(data_dir).context("opening the engine's store connection")?;
    let engine = kiln_engine::Engine::new(Arc::new(engine_store));
    store.set_setting("server_url", &server_url)?;
    let provisioning = Arc::new(crate::provisioning::EngineProvisioning {
        engine: engine.clone(),
        server_url: server_url.clone(),
        check_peer_ip: args.dhcp_mode == DhcpMode::Reservation,
        phone_home_key: crate::server_key::load_or_create(data_dir)?,
    });
    let app = kiln_http::router(
        http_cfg,
        inventory.clone(),
        events.clone(),
        Arc::new(move || render.render()),
        provisioning,
    );
    // The same limits on both listeners (each counts its own connections; TLS at most 512).
    let open_files = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let limits = args.http_limits.limits(open_files.unwrap_or(u64::MAX));
    let https = agent_tls
        .spawn(
            app.clone(),
            limits.clone(),
            events.clone(),
            shutdown.clone(),
        )
        .await?;
    let app = kiln_http::plain_only(app);
    let http_addr = SocketAddr::from((args.address, args.http_port));
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("binding HTTP to {http_addr}"))?;
    let mut rx = shutdown.clone();
    let http = tokio::spawn(kiln_http::serve_with_limits(
        listener,
        app,
        limits,
        Some(events.clone()),
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));

    // TFTP
    let mut tftp_cfg = kiln_tftp::TftpConfig::new(
        SocketAddr::from((args.address, args.tftp_port)),
        &args.tftp_root,
    );
    tftp_cfg.max_per_source = args.tftp_max_per_source;
    let tftp = kiln_tftp::TftpServer::bind(tftp_cfg, Default::default(), events.clone())
        .await
        .with_context(|| format!("starting TFTP on {}:{}", args.address, args.tftp_port))?;
    let tftp = tokio::spawn(tftp.serve(shutdown.clone()));

    // DHCP (and router advertisements) on the named interface only.
    let mut tasks = Vec::new();
    if args.dhcp_mode != DhcpMode::Off {
        let iface = args.interface.clone().expect("checked by check_safety");
        let mut cfg = kiln_dhcp::Config::new(args.address, server_url.clone());
        cfg.mode = match args.dhcp_mode {
            DhcpMode::Reservation => kiln_dhcp::Mode::Reservation,
            DhcpMode::Proxy => kiln_dhcp::Mode::Proxy,
            DhcpMode::Off => kiln_dhcp::Mode::Off,
        };
        cfg.lease_secs = args.lease_secs;
        let opts = kiln_dhcp::ServerOptions::new(&iface, cfg);
        let dhcp = kiln_dhcp::DhcpServer::bind(opts, inventory.clone(), events.clone())
            .with_context(|| format!("starting DHCP on {iface}"))?;
        let rx = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            dhcp.serve(rx).await.map_err(anyhow::Error::from)
        }));
        if !args.no_router_advert {
            let rx = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                kiln_dhcp::run_router_advert(&iface, rx)
                    .await
                    .map_err(anyhow::Error::from)
            }));
        }
    }
    tracing::info!(
        url = %server_url,
        dhcp = ?args.dhcp_mode,
        interface = args.interface.as_deref().unwrap_or("-"),
        machines = inventory.load().len(),
        "kiln serving"
    );

    // Pick up enrolments and netboot changes made by other kiln commands, and
    // apply workflow timeouts.
    let refresher = {
        let (store, inventory, metrics, mut rx) = (
            store.clone(),
            inventory.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut seen = None;
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = rx.wait_for(|s| *s) => break,
                }
                metrics.run_upkeep();
                let e = engine.clone();
                match tokio::task::spawn_blocking(move || e.tick_all()).await {
                    Ok(Err(err)) => tracing::warn!("applying workflow timeouts: {err}"),
                    Err(err) => tracing::warn!("applying workflow timeouts: {err}"),
                    Ok(Ok(_)) => {}
                }
                let s = store.clone();
                let loaded =
                    tokio::task::spawn_blocking(move || -> Result<_, kiln_store::StoreError> {
                        let v = s.data_version()?;
                        Ok((
                            v,
                            if Some(v) != seen {
                                Some(s.hardware()?)
                            } else {
                                None
                            },
                        ))
                    })
                    .await;
                match loaded {
                    Ok(Ok((v, Some(hw)))) => {
                        if seen.is_some() {
                            tracing::info!(machines = hw.len(), "inventory reloaded");
                        }
                        inventory.replace(Inventory::new(hw));
                        seen = Some(v);
                    }
                    Ok(Ok((_, None))) => {}
                    Ok(Err(e)) => tracing::warn!("reloading the inventory: {e}"),
                    Err(e) => tracing::warn!("reloading the inventory: {e}"),
                }
            }
        })
    };

    let power = crate::power::spawn(engine.clone(), shutdown.clone());

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = http.await;
        let _ = https.await;
        let _ = tftp.await;
        let _ = refresher.await;
        let _ = power.await;
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
    Ok(())
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
        args: Args,
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
        let l = t.args.http_limits.limits(1 << 20);
        assert_eq!(l.max_connections, 5000);
        assert_eq!(l.max_per_source, 8);
        assert_eq!(l.header_timeout, Duration::from_secs(5));
        assert_eq!(l.idle_timeout, Duration::from_secs(120));
        assert_eq!(t.args.http_limits.limits(1024).max_connections, 512);
        let d = T::parse_from(["t", "--address", "10.0.0.1"])
            .args
            .http_limits;
        assert_eq!(d.limits(1 << 20), kiln_http::HttpLimits::default());
        for bad in [
            ["--http-max-per-source", "0"],
            ["--http-header-timeout", "0s"],
        ] {
            assert!(T::try_parse_from(["t", "--address", "10.0.0.1", bad[0], bad[1]]).is_err());
        }
    }

    #[test]
    fn dhcp_needs_an_interface() {
        let t = T::parse_from(["t", "--address", "10.0.0.1"]);
        let e = check_safety(&t.args).unwrap_err().to_string();
        assert!(
            e.contains("refusing to start DHCP without --interface"),
            "{e}"
        );
        let t = T::parse_from([
            "t",
            "--address",
            "10.0.0.1",
            "--interface",
            "kiln-no-such-if0",
        ]);
        assert!(
            check_safety(&t.args)
                .unwrap_err()
                .to_string()
                .contains("no such network interface")
        );
        let t = T::parse_from(["t", "--address", "10.0.0.1", "--dhcp-mode", "off"]);
        assert!(check_safety(&t.args).is_ok());
        let t = T::parse_from(["t", "--address", "10.0.0.1", "--interface", "lo"]);
        assert!(check_safety(&t.args).is_ok());
    }
}
