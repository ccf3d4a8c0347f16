//! Wires the workflow engine into the HTTP routes (kiln-http's `Provisioning`).

use std::net::IpAddr;

use kiln_engine::{Engine, EngineError, ReportError};
use kiln_http::{ApiError, NoCloudSeed, Provisioning};
use kiln_model::cloudinit;
use kiln_model::template::ActionKind;
use kiln_model::workflow::{NextAction, Report};
use kiln_store::StoreError;

pub struct EngineProvisioning {
    pub engine: Engine,
    pub server_url: String,
    /// In reservation mode a machine always has its reserved address, so
    /// metadata is only given to that address (a leaked token alone is not enough).
    pub check_peer_ip: bool,
}

fn api_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Store(StoreError::NoWorkflow) => ApiError::Unauthorized,
        EngineError::Report(ReportError::Ended(state)) => {
            ApiError::Gone(format!("the workflow is {state}"))
        }
        EngineError::Report(e @ (ReportError::Stale { .. } | ReportError::TooEarly(_))) => {
            ApiError::Conflict(e.to_string())
        }
        other => {
            tracing::warn!("engine: {other}");
            ApiError::Internal("internal error".into())
        }
    }
}

impl Provisioning for EngineProvisioning {
    fn agent_token(&self, hostname: &str) -> Result<Option<String>, ApiError> {
        let token = self
            .engine
            .store()
            .active_token(hostname)
            .map_err(|e| api_error(e.into()))?;
        Ok(token.map(|(t, _)| t))
    }

    fn next(&self, token: &str, run: Option<&str>) -> Result<NextAction, ApiError> {
        self.engine.next_for(token, run).map_err(api_error)
    }

    fn report(&self, token: &str, report: Report) -> Result<(), ApiError> {
        self.engine.report(token, &report).map_err(api_error)
    }

    fn nocloud(&self, token: &str, peer: IpAddr) -> Result<NoCloudSeed, ApiError> {
        let wf = self.engine.by_token(token).map_err(api_error)?;
        let hw = self
            .engine
            .store()
            .hardware_by_name(&wf.hardware)
            .map_err(|e| api_error(e.into()))?
            .ok_or(ApiError::Unauthorized)?;
        if self.check_peer_ip && peer != IpAddr::V4(hw.ip) {
            return Err(ApiError::Forbidden(format!(
                "metadata of {} is only served to {}",
                hw.hostname, hw.ip
            )));
        }
        let params = wf
            .actions
            .iter()
            .find(|a| a.spec.kind == ActionKind::CloudInit)
            .map(|a| &a.spec.params);
        let given = |k: &str| {
            params
                .and_then(|p| p.get(k))
                .filter(|v| !v.trim().is_empty())
                .cloned()
        };
        let phone_home = format!("{}/v1/phone-home/{token}", self.server_url);
        if let Some((cluster, _)) = self
            .engine
            .store()
            .cluster_of_workflow(&wf.id)
            .map_err(|e| api_error(e.into()))?
        {
            let seed = crate::cluster::render_seed(&cluster, &wf.hardware, &wf.id, &phone_home)
                .map_err(|e| {
                    tracing::warn!(
                        "cluster {}: rendering the seed of {}: {e:#}",
                        cluster.name,
                        wf.hardware
                    );
                    ApiError::Internal("cannot render this node's cloud-init".into())
                })?;
            return Ok(NoCloudSeed {
                user_data: seed.user_data,
                meta_data: seed.meta_data,
                network_config: seed.network_config,
            });
        }
        Ok(NoCloudSeed {
            user_data: given("user_data")
                .unwrap_or_else(|| cloudinit::default_user_data(&hw, &phone_home)),
            meta_data: given("meta_data").unwrap_or_else(|| cloudinit::meta_data(&hw, &wf.id)),
            network_config: given("network_config")
                .unwrap_or_else(|| cloudinit::network_config(&hw)),
        })
    }

    fn installed_os_report(
        &self,
        token: &str,
        _peer: IpAddr,
        kind: &str,
        body: String,
    ) -> Result<(), ApiError> {
        // Only `failed` gets here: the route takes no other kind (no kubeconfig upload).
        let _ = kind;
        self.engine
            .installed_os_failed(token, &body)
            .map_err(api_error)
    }

    fn phone_home(&self, token: &str, peer: IpAddr, payload: String) -> Result<(), ApiError> {
        self.engine
            .phone_home(token, &peer.to_string(), &payload)
            .map_err(api_error)
    }
}
