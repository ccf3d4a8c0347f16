//! The provisioning network's services: HTTP (plain, and the agent API over TLS), TFTP, DHCP
//! and router advertisements on the named interface only.

use std::net::SocketAddr;
use std::sync::Arc;

use kiln_engine::Engine;
use kiln_model::{EventSink, SharedInventory};
use kiln_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::agent_tls::AgentTlsListener;
use crate::error::{ServerError, StartContext};
use crate::options::{Limits, ServeOptions, images_dir};

/// What the services share.
#[derive(Clone)]
pub struct Core {
    pub engine: Engine,
    /// The engine's own store connection (the agent API reads machines and seeds through it).
    pub store: Arc<dyn Store>,
    pub inventory: SharedInventory,
    pub events: Arc<dyn EventSink>,
    pub metrics: PrometheusHandle,
}

/// A service's task, its error logged when it ends with one.
fn supervised<E: std::fmt::Display + Send + 'static>(
    name: &'static str,
    task: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = task.await {
            tracing::error!(service = name, "stopped: {e}");
        }
    })
}

async fn until(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

pub async fn spawn(
    opts: &ServeOptions,
    core: &Core,
    agent_tls: &AgentTlsListener,
    shutdown: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, ServerError> {
    // The same limits on both HTTP listeners (each counts its own connections; TLS at most 512).
    let open_files = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let limits = opts
        .limits
        .clone()
        .within_open_files(open_files.unwrap_or(u64::MAX));
    // Inspection's leases: DHCP hands them out, the agent API checks tickets against them.
    let leases = kiln_dhcp::SharedLeases::default();
    let mut tasks = http(opts, core, agent_tls, &limits, &leases, shutdown).await?;
    tasks.push(tftp(opts, &core.events, &limits, shutdown).await?);
    tasks.extend(dhcp(opts, core, &leases, shutdown)?);
    Ok(tasks)
}

/// The provisioning network's HTTP: plain (scripts, artifacts, images) and the agent API over
/// TLS, one router behind both.
async fn http(
    opts: &ServeOptions,
    core: &Core,
    agent_tls: &AgentTlsListener,
    limits: &Limits,
    leases: &kiln_dhcp::SharedLeases,
    shutdown: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, ServerError> {
    let server_url = opts.server_url();
    let http_cfg = kiln_http::HttpConfig {
        server_url: server_url.clone(),
        artifacts_dir: opts.artifacts.clone(),
        boot_dir: opts.tftp_root.clone(),
        images_dir: images_dir(&opts.data_dir),
        kernel: opts.kernel.clone(),
        initrd: opts.initrd.clone(),
        kernel_args: opts.kernel_args.clone(),
        agent_apis: Some(agent_tls.apis.clone()),
        inspect: opts.inspect,
    };
    let inspector = opts.inspect.then(|| {
        let reservation = opts.dhcp_mode == kiln_dhcp::Mode::Reservation;
        Arc::new(crate::inspection::Inspector::new(
            core.store.clone(),
            core.inventory.clone(),
            reservation.then(|| leases.clone()),
        ))
    });
    let provisioning = Arc::new(crate::provisioning::EngineProvisioning {
        engine: core.engine.clone(),
        store: core.store.clone(),
        inventory: core.inventory.clone(),
        server_url,
        check_peer_ip: opts.dhcp_mode == kiln_dhcp::Mode::Reservation,
        phone_home_key: crate::server_key::load_or_create(&opts.data_dir)?,
        inspector,
    });
    let render = core.metrics.clone();
    let app = kiln_http::router(
        http_cfg,
        core.inventory.clone(),
        core.events.clone(),
        Arc::new(move || render.render()),
        provisioning,
    );
    let agent_api = agent_tls
        .spawn(
            app.clone(),
            limits.http.clone(),
            core.events.clone(),
            until(shutdown.clone()),
        )
        .await?;
    let http_addr = SocketAddr::from((opts.address, opts.http_port));
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_start(|| format!("binding HTTP to {http_addr}"))?;
    let plain = kiln_http::serve_with_limits(
        listener,
        kiln_http::plain_only(app),
        limits.http.clone(),
        Some(core.events.clone()),
        until(shutdown.clone()),
    );
    Ok(vec![
        supervised("agent API (TLS)", agent_api),
        supervised("HTTP", plain),
    ])
}

async fn tftp(
    opts: &ServeOptions,
    events: &Arc<dyn EventSink>,
    limits: &Limits,
    shutdown: &watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ServerError> {
    let mut cfg = kiln_tftp::TftpConfig::new(
        SocketAddr::from((opts.address, opts.tftp_port)),
        &opts.tftp_root,
    );
    cfg.max_per_source = limits.tftp_max_per_source;
    let tftp = kiln_tftp::TftpServer::bind(cfg, Default::default(), events.clone())
        .await
        .with_start(|| format!("starting TFTP on {}:{}", opts.address, opts.tftp_port))?;
    Ok(supervised("TFTP", tftp.serve(shutdown.clone())))
}

/// DHCP (and router advertisements) on the named interface only; nothing with `--dhcp-mode off`.
/// MACs it does not know go to discovery (see [`crate::discovery`]).
fn dhcp(
    opts: &ServeOptions,
    core: &Core,
    leases: &kiln_dhcp::SharedLeases,
    shutdown: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, ServerError> {
    if opts.dhcp_mode == kiln_dhcp::Mode::Off {
        return Ok(Vec::new());
    }
    let iface = opts
        .interface
        .clone()
        .ok_or_else(|| ServerError::Invalid("DHCP needs --interface".into()))?;
    let mut cfg = kiln_dhcp::Config::new(opts.address, opts.server_url());
    cfg.mode = opts.dhcp_mode;
    cfg.lease_secs = opts.lease_secs;
    cfg.segments = opts.dhcp_segments.clone();
    if opts.inspect {
        cfg.inspect = Some(kiln_dhcp::Inspect {
            pool: opts.discovery_pool,
            lease_secs: kiln_dhcp::INSPECT_LEASE_SECS,
        });
    }
    let server_opts = kiln_dhcp::ServerOptions::new(&iface, cfg);
    let discovery = Arc::new(crate::discovery::Discovery::default());
    let dhcp =
        kiln_dhcp::DhcpServer::bind(server_opts, core.inventory.clone(), core.events.clone())
            .with_start(|| format!("starting DHCP on {iface}"))?
            .with_discovery(discovery.clone())
            .with_leases(leases.clone());
    let mut tasks = vec![
        supervised("DHCP", dhcp.serve(shutdown.clone())),
        discovery.spawn_writer(core.store.clone(), shutdown.clone()),
    ];
    if opts.router_advert {
        let rx = shutdown.clone();
        tasks.push(supervised("router advertisements", async move {
            kiln_dhcp::run_router_advert(&iface, rx).await
        }));
    }
    Ok(tasks)
}
