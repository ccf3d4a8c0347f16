//! `kiln serve`'s second listener: the agent API over TLS, with Kiln's own CA
//! (`DATA_DIR/tls`, see `kiln_http::tls_ca`). The netbooted kernel's command line names it
//! (`kiln.api=https://ADDRESS:PORT`, then the other live servers') and the CA's fingerprint
//! (`kiln.ca-sha256=`, each server's own); the plain
//! listener then refuses `/v1/agent/...` (`kiln_http::plain_only`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use kiln_http::agent_apis::{AgentApis, AgentEndpoint};
use kiln_http::tls_ca::AgentTls;

use crate::error::{ServerError, StartContext};

/// The CA and this start's server certificate, and where the agent reaches them.
pub struct AgentTlsListener {
    pub url: String,
    pub tls: AgentTls,
    /// This server's agent API and its peers', for the kernel command line.
    pub apis: AgentApis,
    addr: SocketAddr,
    config: Arc<kiln_http::tls::ServerConfig>,
}

impl AgentTlsListener {
    /// Loads (at first start: makes) the CA under `data_dir/tls` and issues the server
    /// certificate for `address`.
    pub fn prepare(data_dir: &Path, address: Ipv4Addr, port: u16) -> Result<Self, ServerError> {
        let tls = kiln_http::tls_ca::load_or_create(
            &data_dir.join("tls"),
            &address.to_string(),
            SystemTime::now(),
        )
        .start("preparing the agent API's TLS certificate")?;
        let config =
            kiln_http::tls::server_config(tls.chain_der.clone(), tls.key_pkcs8_der.clone())
                .start("the agent API's TLS configuration")?;
        let url = format!("https://{address}:{port}");
        let own = AgentEndpoint::new(&url, &tls.ca_sha256_hex()).ok_or_else(|| {
            ServerError::Invalid(format!("{url} cannot go on a kernel command line"))
        })?;
        Ok(AgentTlsListener {
            apis: AgentApis::new(own),
            url,
            addr: SocketAddr::from((address, port)),
            tls,
            config,
        })
    }

    /// Binds the TLS listener; the future it returns serves `app` (the whole router; the
    /// agent routes are what it is for) until `shutdown` completes.
    pub async fn spawn(
        &self,
        app: axum::Router,
        limits: kiln_http::HttpLimits,
        refusals: Arc<dyn kiln_model::EventSink>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<impl std::future::Future<Output = std::io::Result<()>> + Send + 'static, ServerError>
    {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .with_start(|| format!("binding the agent API (TLS) to {}", self.addr))?;
        tracing::info!(
            url = %self.url,
            ca_sha256 = %self.tls.ca_sha256_hex(),
            "agent API over TLS"
        );
        Ok(kiln_http::serve_tls_with_limits(
            listener,
            app,
            self.config.clone(),
            limits,
            Some(refusals),
            shutdown,
        ))
    }
}
