//! Wires the workflow engine into the HTTP routes (kiln-http's `Provisioning`).

use std::net::IpAddr;
use std::sync::Arc;

use kiln_api::agent::DiskWrite;
use kiln_api::inventory::Inventory;
use kiln_engine::credential::{CredentialError, PhoneHomeKey};
use kiln_engine::engine::AgentCall;
use kiln_engine::{Engine, EngineError, ReportError};
use kiln_http::{ApiError, ApiErrorKind, Provisioning};
use kiln_model::cloudinit;
use kiln_model::template::ActionKind;
use kiln_model::workflow::{ClaimRequest, Claimed, NextAction, Report, ReportKind, Seed, Workflow};
use kiln_store::{Store, StoreError};

pub struct EngineProvisioning {
    pub engine: Engine,
    /// The engine's store connection: machines, workflows and clusters to render seeds from.
    pub store: Arc<dyn Store>,
    /// What the boot services answer from; kept in step with the netboot changes reports make.
    pub inventory: kiln_model::SharedInventory,
    pub server_url: String,
    /// In reservation mode a machine always has its reserved address, so its credential is
    /// only claimed, and phone-home only taken, from that address.
    pub check_peer_ip: bool,
    /// Signs and checks the installed OS's phone-home URLs.
    pub phone_home_key: PhoneHomeKey,
    /// `--discovery inspect`: inspection-only boots of MACs not enrolled; `None` refuses them.
    pub inspector: Option<Arc<crate::inspection::Inspector>>,
}

pub(crate) fn api_error(e: EngineError) -> ApiError {
    use ApiErrorKind as K;
    match e {
        EngineError::Store(StoreError::NoWorkflow) => ApiError::unauthorized(),
        EngineError::Credential(e) => {
            let machine = match &e {
                CredentialError::AlreadyClaimed { machine, .. }
                | CredentialError::WrongPeer { machine, .. }
                | CredentialError::SeedServed { machine } => Some(machine.clone()),
                CredentialError::Ended(_) => None,
            };
            let kind = match &e {
                CredentialError::AlreadyClaimed { .. } => K::Conflict,
                CredentialError::WrongPeer { .. } => K::Forbidden,
                CredentialError::SeedServed { .. } | CredentialError::Ended(_) => K::Gone,
            };
            ApiError::refused(kind, machine, e.to_string())
        }
        EngineError::Report(ReportError::Ended(state)) => {
            ApiError::plain(K::Gone, format!("the workflow is {state}"))
        }
        EngineError::Report(e @ ReportError::Stale { .. }) => {
            ApiError::plain(K::Conflict, e.to_string())
        }
        // The installed OS cannot have reported yet: someone else is speaking for it.
        EngineError::Report(e @ ReportError::TooEarly(_)) => {
            ApiError::refused(K::Conflict, None, e.to_string())
        }
        other => {
            tracing::warn!("engine: {other}");
            ApiError::internal("internal error")
        }
    }
}

impl EngineProvisioning {
    /// The workflow a phone-home URL names, if its signature is this server's and (in
    /// reservation mode) the caller is the machine.
    fn installed_os(
        &self,
        workflow: &str,
        signature: &str,
        peer: IpAddr,
    ) -> Result<Workflow, ApiError> {
        let wf = self
            .store
            .workflow(workflow)
            .map_err(|e| api_error(e.into()))?;
        let Some(wf) = wf.filter(|_| self.phone_home_key.verify(workflow, signature)) else {
            return Err(ApiError::refused(
                ApiErrorKind::Unauthorized,
                None,
                "phone-home URL not signed by this server",
            ));
        };
        if self.check_peer_ip {
            let hw = self
                .store
                .hardware_by_name(&wf.hardware)
                .map_err(|e| api_error(e.into()))?;
            if let Some(hw) = hw.filter(|hw| peer != IpAddr::V4(hw.ip)) {
                return Err(ApiError::refused(
                    ApiErrorKind::Forbidden,
                    Some(hw.hostname.clone()),
                    format!("{} phones home only from {}", hw.hostname, hw.ip),
                ));
            }
        }
        Ok(wf)
    }

    /// A rendered parameter of `wf` as it leaves this server: its URLs name this server
    /// (the machine reached it; the one it was rendered for may be on another segment, or
    /// dead) and its phone-home URL is signed.
    fn hand_out(&self, wf: &Workflow, value: &str) -> String {
        self.phone_home_key
            .fill(&wf.id, &wf.for_server(value, &self.server_url))
    }

    /// The NoCloud seed of `wf`: the cluster's node documents, the template's own, or the
    /// defaults; the phone-home URL signed.
    fn render_seed(&self, wf: &Workflow) -> Result<Seed, ApiError> {
        let store = &self.store;
        let hw = store
            .hardware_by_name(&wf.hardware)
            .map_err(|e| api_error(e.into()))?
            .ok_or_else(ApiError::unauthorized)?;
        let phone_home = self.phone_home_key.fill(
            &wf.id,
            &kiln_engine::credential::phone_home_url_template(&self.server_url, &wf.id),
        );
        if let Some((cluster, _)) = store
            .cluster_of_workflow(&wf.id)
            .map_err(|e| api_error(e.into()))?
        {
            let seed =
                crate::cluster_seed::render_seed(&cluster, &wf.hardware, &wf.id, &phone_home)
                    .map_err(|e| {
                        tracing::warn!(
                            "cluster {}: rendering the seed of {}: {e}",
                            cluster.name,
                            wf.hardware
                        );
                        ApiError::internal("cannot render this node's cloud-init")
                    })?;
            return Ok(Seed {
                user_data: seed.user_data,
                meta_data: seed.meta_data,
                network_config: seed.network_config,
            });
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
                .map(|v| self.hand_out(wf, v))
        };
        Ok(Seed {
            user_data: given("user_data")
                .unwrap_or_else(|| cloudinit::default_user_data(&hw, &phone_home)),
            meta_data: given("meta_data").unwrap_or_else(|| cloudinit::meta_data(&hw, &wf.id)),
            network_config: given("network_config")
                .unwrap_or_else(|| cloudinit::network_config(&hw)),
        })
    }
}

impl Provisioning for EngineProvisioning {
    fn still_netboots(&self, hostname: &str) -> bool {
        match self.store.hardware_by_name(hostname) {
            Ok(hw) => hw.is_some_and(|h| h.netboot),
            // The store unreachable: the inventory's answer stands.
            Err(e) => {
                tracing::warn!(machine = hostname, "reading netboot from the store: {e}");
                true
            }
        }
    }

    fn claim(&self, req: &ClaimRequest, peer: IpAddr) -> Result<Claimed, ApiError> {
        if !kiln_model::workflow::valid_agent_run(&req.run) {
            return Err(ApiError::plain(
                ApiErrorKind::NotFound,
                "run: letters, digits and '-', at most 64",
            ));
        }
        match self
            .engine
            .claim(&req.mac, peer, &req.run, self.check_peer_ip)
        {
            Ok(c) => Ok(Claimed {
                token: c.token,
                workflow: c.workflow,
            }),
            Err(EngineError::Store(StoreError::NoWorkflow)) => Err(ApiError::refused(
                ApiErrorKind::NotFound,
                None,
                format!("{} has no unfinished workflow", req.mac),
            )),
            Err(e) => Err(api_error(e)),
        }
    }

    fn next(&self, token: &str, peer: IpAddr, run: Option<&str>) -> Result<NextAction, ApiError> {
        let call = AgentCall { token, peer };
        let mut next = self.engine.next_for(call, run).map_err(api_error)?;
        if let NextAction::Run { action, .. } = &mut next {
            // A template may hand the phone-home URL to any action: signed as it leaves,
            // naming this server.
            let workflow = self.engine.agent_workflow(call).map_err(api_error)?;
            for v in action.params.values_mut() {
                *v = self.hand_out(&workflow, v);
            }
            if action.kind == ActionKind::Image2disk {
                action.guard = Some(Box::new(self.guard_for(&workflow.hardware, action)));
            }
        }
        Ok(next)
    }

    fn report(&self, token: &str, peer: IpAddr, report: Report) -> Result<(), ApiError> {
        let call = AgentCall { token, peer };
        // Only a success may change what is installed: progress reports cost no extra read.
        let before = match report.kind {
            ReportKind::Succeeded { .. } => {
                Some(self.engine.agent_workflow(call).map_err(api_error)?)
            }
            _ => None,
        };
        let reported = self.engine.report(call, &report).map_err(api_error)?;
        if let Some(wf) = &before {
            self.after_report(wf, &report);
        }
        // Before the agent hears the answer (and reboots): the boot services answer from the
        // in-memory inventory, which the refresher only rebuilds on its next tick.
        if let Some(on) = reported.netboot {
            self.inventory.set_netboot(&reported.machine, on);
        }
        Ok(())
    }

    fn inventory(&self, token: &str, peer: IpAddr, inventory: Inventory) -> Result<(), ApiError> {
        self.take_inventory(AgentCall { token, peer }, &inventory)
    }

    fn disk_write(&self, token: &str, peer: IpAddr, write: DiskWrite) -> Result<(), ApiError> {
        self.take_disk_write(AgentCall { token, peer }, &write)
    }

    fn inspect_claim(&self, req: &ClaimRequest, peer: IpAddr) -> Result<Claimed, ApiError> {
        match &self.inspector {
            Some(i) => i.claim(req, peer),
            None => kiln_http::NoProvisioning.inspect_claim(req, peer),
        }
    }

    fn inspect_inventory(
        &self,
        token: &str,
        peer: IpAddr,
        inventory: Inventory,
    ) -> Result<(), ApiError> {
        match &self.inspector {
            Some(i) => i.report(token, peer, inventory),
            None => Err(ApiError::unauthorized()),
        }
    }

    fn seed(&self, token: &str, peer: IpAddr) -> Result<Seed, ApiError> {
        let call = AgentCall { token, peer };
        let wf = self.engine.agent_workflow(call).map_err(api_error)?;
        if wf.seed_served_ms.is_some() {
            return Err(api_error(
                CredentialError::SeedServed {
                    machine: wf.hardware,
                }
                .into(),
            ));
        }
        let seed = self.render_seed(&wf)?;
        // Rendered first, handed out only by whoever marks it taken.
        self.engine.take_seed(call).map_err(api_error)?;
        Ok(seed)
    }

    fn phone_home(
        &self,
        workflow: &str,
        signature: &str,
        peer: IpAddr,
        payload: String,
    ) -> Result<(), ApiError> {
        let wf = self.installed_os(workflow, signature, peer)?;
        self.engine
            .phone_home(&wf.id, &peer.to_string(), &payload)
            .map_err(|e| with_machine(api_error(e), &wf.hardware))
    }

    fn installed_os_failed(
        &self,
        workflow: &str,
        signature: &str,
        peer: IpAddr,
        log_tail: String,
    ) -> Result<(), ApiError> {
        let wf = self.installed_os(workflow, signature, peer)?;
        self.engine
            .installed_os_failed(&wf.id, &log_tail)
            .map_err(|e| with_machine(api_error(e), &wf.hardware))
    }
}

fn with_machine(mut e: ApiError, machine: &str) -> ApiError {
    e.machine.get_or_insert_with(|| machine.to_string());
    e
}

#[cfg(test)]
mod tests {
    //! The agent API as a host on the provisioning network meets it: the real router, the
    //! real engine and store, each request from a named source address.

    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{Request, StatusCode, header};
    use http_body_util::BodyExt;
    use kiln_engine::Engine;
    use kiln_model::template::parse_template;
    use kiln_model::{Event, EventSink, Inventory, SharedInventory};
    use kiln_store::Store;
    use tower::ServiceExt;

    use super::*;

    const VICTIM: &str = "10.0.0.11";
    const ATTACKER: &str = "10.0.0.66";
    const MAC: &str = "52:54:00:00:00:01";
    const RENDERED_FOR: &str = "http://10.0.0.1:8080";
    const TEMPLATE: &str = "name: t\nactions:\n  - name: seed\n    kind: cloud-init\n    with:\n      disk: /dev/vda\n  - name: boot\n    kind: reboot\n";

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Event>>);
    impl EventSink for Recorder {
        fn emit(&self, e: Event) {
            self.0.lock().unwrap().push(e);
        }
    }

    struct Lab {
        leases: kiln_dhcp::SharedLeases,
        app: axum::Router,
        store: Arc<dyn Store>,
        events: Arc<Recorder>,
        key: PhoneHomeKey,
        workflow: String,
        _dir: tempfile::TempDir,
    }

    fn lab() -> Lab {
        lab_with(TEMPLATE)
    }

    fn lab_with(template: &str) -> Lab {
        lab_serving(template, RENDERED_FOR)
    }

    /// The workflow rendered through RENDERED_FOR; the agent API of `serving` (another
    /// server of the group, when they differ).
    fn lab_serving(template: &str, serving: &str) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let store = kiln_store::open_sqlite(dir.path()).unwrap();
        let mut hw = kiln_model::csv::parse_hardware_csv(
            "t.csv",
            &format!(
                "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
                 n1,,,,{MAC},{VICTIM},255.255.255.0,,,,/dev/vda\n"
            ),
        )
        .unwrap();
        store.enroll(&hw).unwrap();
        let engine = Engine::new(store.clone());
        let t = parse_template("t.yaml", template).unwrap();
        let wf = engine.create(&t, &hw, RENDERED_FOR, false).unwrap();
        hw[0].netboot = true;
        let inventory = SharedInventory::new(Inventory::new(hw));
        let key = PhoneHomeKey::generate();
        let events = Arc::new(Recorder::default());
        let leases = kiln_dhcp::SharedLeases::default();
        let inspector = Arc::new(crate::inspection::Inspector::new(
            store.clone(),
            inventory.clone(),
            Some(leases.clone()),
        ));
        let app = kiln_http::router(
            kiln_http::HttpConfig {
                server_url: serving.into(),
                artifacts_dir: dir.path().into(),
                boot_dir: dir.path().into(),
                images_dir: dir.path().into(),
                kernel: "vmlinuz".into(),
                initrd: "initrd.img".into(),
                kernel_args: String::new(),
                agent_apis: None,
                inspect: false,
            },
            inventory.clone(),
            events.clone(),
            Arc::new(String::new),
            Arc::new(EngineProvisioning {
                engine: engine.clone(),
                store: store.clone(),
                inventory,
                server_url: serving.into(),
                check_peer_ip: true,
                phone_home_key: key.clone(),
                inspector: Some(inspector),
            }),
        );
        Lab {
            leases,
            app,
            store,
            events,
            key,
            workflow: wf[0].id.clone(),
            _dir: dir,
        }
    }

    impl Lab {
        async fn send(
            &self,
            from: &str,
            method: &str,
            uri: &str,
            token: Option<&str>,
            body: &str,
        ) -> (StatusCode, String) {
            let mut req = Request::builder().method(method).uri(uri);
            if let Some(t) = token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let mut req = req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            let source: std::net::IpAddr = from.parse().unwrap();
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::from((source, 40000))));
            let resp = self.app.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }

        async fn claim(&self, from: &str, run: &str) -> (StatusCode, String) {
            let body = format!(r#"{{"mac":"{MAC}","run":"{run}"}}"#);
            self.send(from, "POST", "/v1/agent/claim", None, &body)
                .await
        }

        /// `http.refused` events naming `ip`.
        fn refusals_from(&self, ip: &str) -> Vec<String> {
            self.events
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|e| {
                    e.kind == kiln_model::EventKind::HttpRefused
                        && e.ip.map(|i| i.to_string()) == Some(ip.into())
                })
                .map(|e| e.detail.clone())
                .collect()
        }

        fn state(&self) -> String {
            let wf = self.store.workflow(&self.workflow).unwrap().unwrap();
            wf.state.to_string()
        }
    }

    #[tokio::test]
    async fn the_script_asks_the_shared_state_when_the_inventory_says_netboot() {
        let lab = lab();
        let uri = format!("/ipxe/{MAC}/boot.ipxe");
        let (status, script) = lab.send(VICTIM, "GET", &uri, None, "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(script.contains("kernel "), "{script}");
        // Another server (or this one's engine, before the inventory's refresh) turned it
        // off: the in-memory inventory still says netboot.
        lab.store.set_netboot("n1", false).unwrap();
        let (status, script) = lab.send(VICTIM, "GET", &uri, None, "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(!script.contains("kernel "), "{script}");
        assert!(script.contains("sanboot"), "{script}");
    }

    #[tokio::test]
    async fn an_inspection_ticket_is_one_inventory_of_one_unknown_mac_from_its_lease() {
        let lab = lab();
        const STRANGER: &str = "52:54:00:00:00:99";
        const LEASED: &str = "10.0.0.200";
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let pool = kiln_dhcp::InspectPool::parse("10.0.0.200-10.0.0.210/24").unwrap();
        let got = lab.leases.lock().unwrap().lease(
            STRANGER.parse().unwrap(),
            now,
            600_000,
            &pool,
            &|_| false,
        );
        assert_eq!(got.map(|i| i.to_string()).as_deref(), Some(LEASED));
        let claim = |mac: &str| format!(r#"{{"mac":"{mac}","run":"r1"}}"#);
        // An enrolled machine cannot be "inspected" (nor its MAC used for a ticket).
        let (status, _) = lab
            .send(VICTIM, "POST", "/v1/agent/inspect/claim", None, &claim(MAC))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // Not from the MAC's inspection lease: refused and recorded.
        let (status, _) = lab
            .send(
                ATTACKER,
                "POST",
                "/v1/agent/inspect/claim",
                None,
                &claim(STRANGER),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(lab.refusals_from(ATTACKER).len(), 1);
        let (status, body) = lab
            .send(
                LEASED,
                "POST",
                "/v1/agent/inspect/claim",
                None,
                &claim(STRANGER),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        // A second ticket for the same MAC is refused.
        let (status, _) = lab
            .send(
                LEASED,
                "POST",
                "/v1/agent/inspect/claim",
                None,
                &claim(STRANGER),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        // The ticket is nothing to the workflow API.
        for (method, uri) in [
            ("GET", "/v1/agent/next"),
            ("GET", "/v1/agent/seed"),
            ("POST", "/v1/agent/inventory"),
        ] {
            let (status, _) = lab.send(LEASED, method, uri, Some(&token), "{}").await;
            assert!(
                status == StatusCode::UNAUTHORIZED || status == StatusCode::UNPROCESSABLE_ENTITY,
                "{uri}: {status}"
            );
        }
        let inv = r#"{"cpu":{"model":"QEMU","cores":1},"memory_bytes":1073741824,"firmware":"bios",
            "dmi":{"vendor":"QEMU","product":"Standard PC","serial":""},"disks":[],"nics":[],"unbound_pci":[]}"#;
        let (status, body) = lab
            .send(
                LEASED,
                "POST",
                "/v1/agent/inspect/inventory",
                Some(&token),
                inv,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        let (status, _) = lab
            .send(
                LEASED,
                "POST",
                "/v1/agent/inspect/inventory",
                Some(&token),
                inv,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "spent");
        let found = lab.store.discovered().unwrap();
        let d = found
            .iter()
            .find(|d| d.mac.to_string() == STRANGER)
            .unwrap();
        let i = d.inspection.as_ref().unwrap();
        assert_eq!((i.inventory.memory_gib(), i.inventory.cpu.cores), (1, 1));
        // Nothing of the enrolled machine changed.
        assert_eq!(lab.state(), "pending");
        let kinds: Vec<_> = lab
            .store
            .events(None, 0, 100)
            .unwrap()
            .iter()
            .map(|e| e.event.kind)
            .collect();
        assert!(kinds.contains(&kiln_model::EventKind::InspectionClaimed));
        assert!(kinds.contains(&kiln_model::EventKind::InspectionReported));
    }

    #[tokio::test]
    async fn a_host_that_is_not_the_machine_gets_no_secret_and_changes_nothing() {
        let lab = lab();
        // The script names the machine but carries no credential.
        let (status, script) = lab
            .send(ATTACKER, "GET", &format!("/ipxe/{MAC}/boot.ipxe"), None, "")
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            script.contains("kiln.mac=") && !script.contains("token"),
            "{script}"
        );

        // Reservation mode: only the machine's address may claim.
        let (status, _) = lab.claim(ATTACKER, "evil-1").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(lab.refusals_from(ATTACKER).len(), 1);

        // The machine claims; a second claimant (another agent run) is refused and seen.
        let (status, body) = lab.claim(VICTIM, "boot-1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let claimed: Claimed = serde_json::from_str(&body).unwrap();
        let (status, _) = lab.claim(VICTIM, "boot-2").await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(lab.refusals_from(VICTIM)[0].contains("already claimed from 10.0.0.11"));

        // A credential is useless without the header, made up, or from another address.
        let made_up = "ab".repeat(32);
        for (from, token) in [
            (VICTIM, None),
            (VICTIM, Some(made_up.as_str())),
            (ATTACKER, Some(claimed.token.as_str())),
        ] {
            for (method, uri, body) in [
                ("GET", "/v1/agent/next", ""),
                ("GET", "/v1/agent/seed", ""),
                (
                    "POST",
                    "/v1/agent/report",
                    r#"{"index":0,"attempt":1,"report":"failed","message":"x"}"#,
                ),
            ] {
                let (status, _) = lab.send(from, method, uri, token, body).await;
                assert!(
                    matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                    "{from} {uri} {token:?}: {status}"
                );
            }
        }
        assert_eq!(
            lab.state(),
            "pending",
            "no refused call changed the workflow"
        );

        // A phone-home now is too early, and one not signed by the server is refused anyway.
        let signed = format!(
            "/v1/phone-home/{}/{}",
            lab.workflow,
            lab.key.sign(&lab.workflow)
        );
        let forged = format!("/v1/phone-home/{}/{}", lab.workflow, "00".repeat(32));
        assert_eq!(
            lab.send(VICTIM, "POST", &signed, None, "x").await.0,
            StatusCode::CONFLICT
        );
        assert_eq!(
            lab.send(ATTACKER, "POST", &forged, None, "x").await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            lab.send(ATTACKER, "POST", &format!("{forged}/failed"), None, "x")
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            lab.send(ATTACKER, "POST", &format!("{signed}/kubeconfig"), None, "x")
                .await
                .0,
            StatusCode::NOT_FOUND,
            "no route takes a kubeconfig"
        );

        // The machine's agent works through its workflow; the seed leaves once, signed.
        let t = Some(claimed.token.as_str());
        let (status, next) = lab
            .send(VICTIM, "GET", "/v1/agent/next?run=boot-1", t, "")
            .await;
        assert_eq!(status, StatusCode::OK, "{next}");
        let (status, seed) = lab.send(VICTIM, "GET", "/v1/agent/seed", t, "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            seed.contains(&lab.key.sign(&lab.workflow)),
            "the seed's phone-home is signed"
        );
        assert_eq!(
            lab.send(VICTIM, "GET", "/v1/agent/seed", t, "").await.0,
            StatusCode::GONE
        );
        let done = r#"{"index":0,"attempt":1,"report":"succeeded","message":"ok"}"#;
        assert_eq!(
            lab.send(VICTIM, "POST", "/v1/agent/report", t, done)
                .await
                .0,
            StatusCode::NO_CONTENT
        );
        let (_, next) = lab
            .send(VICTIM, "GET", "/v1/agent/next?run=boot-1", t, "")
            .await;
        assert!(next.contains("reboot"), "{next}");
        let rebooted = r#"{"index":1,"attempt":1,"report":"succeeded","message":""}"#;
        lab.send(VICTIM, "POST", "/v1/agent/report", t, rebooted)
            .await;
        assert_eq!(lab.state(), "rebooting");

        // Handed over: the signed phone-home from another address is still refused; the
        // machine's own is taken, once.
        assert_eq!(
            lab.send(ATTACKER, "POST", &signed, None, "x").await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            lab.send(VICTIM, "POST", &signed, None, "hostname=n1")
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(lab.state(), "succeeded");
        assert_eq!(
            lab.send(VICTIM, "POST", &signed, None, "again").await.0,
            StatusCode::GONE
        );

        // Every refused attempt of the attacker left one event naming it; none holds a secret.
        let from_attacker = lab.refusals_from(ATTACKER);
        assert_eq!(from_attacker.len(), 1 + 3 + 2 + 1, "{from_attacker:#?}");
        for e in lab.events.0.lock().unwrap().iter() {
            assert!(!e.detail.contains(&claimed.token), "{e:?}");
        }
    }

    const IMAGE_TEMPLATE: &str = "name: t\nactions:\n  - name: img\n    kind: image2disk\n    with:\n      url: http://10.0.0.1:8080/images/os.raw\n      sha256: '0000000000000000000000000000000000000000000000000000000000000000'\n  - name: boot\n    kind: reboot\n";

    const RETARGET_TEMPLATE: &str = "name: t\nactions:\n  - name: img\n    kind: image2disk\n    with:\n      url: '{{ server }}/images/os.raw'\n      sha256: '0000000000000000000000000000000000000000000000000000000000000000'\n  - name: seed\n    kind: cloud-init\n    with:\n      disk: /dev/vda\n      user_data: 'runcmd: [curl {{ workflow.phone_home_url }}]'\n  - name: boot\n    kind: reboot\n";

    /// The action the agent is handed next, as JSON.
    async fn next_action(lab: &Lab, token: Option<&str>) -> serde_json::Value {
        let (status, body) = lab
            .send(VICTIM, "GET", "/v1/agent/next?run=boot-1", token, "")
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    #[tokio::test]
    async fn another_server_of_the_group_hands_out_urls_naming_itself() {
        let other = "http://10.0.0.2:8080";
        let lab = lab_serving(RETARGET_TEMPLATE, other);
        let (_, body) = lab.claim(VICTIM, "boot-1").await;
        let claimed: Claimed = serde_json::from_str(&body).unwrap();
        let t = Some(claimed.token.as_str());
        let next = next_action(&lab, t).await;
        assert_eq!(
            next["action"]["params"]["url"], "http://10.0.0.2:8080/images/os.raw",
            "{next}"
        );
        // Stored as rendered, for the record.
        let wf = lab.store.workflow(&lab.workflow).unwrap().unwrap();
        assert_eq!(wf.rendered_for.as_deref(), Some(RENDERED_FOR));
        assert_eq!(
            wf.actions[0].spec.params["url"],
            "http://10.0.0.1:8080/images/os.raw"
        );
        let report = r#"{"index":0,"attempt":1,"report":"succeeded","message":"ok"}"#;
        let (status, why) = lab
            .send(VICTIM, "POST", "/v1/agent/report", t, report)
            .await;
        assert!(status.is_success(), "{status} {why}");
        let next = next_action(&lab, t).await;
        let user_data = next["action"]["params"]["user_data"].as_str().unwrap();
        let url = user_data
            .split_whitespace()
            .find(|w| w.starts_with("http"))
            .unwrap()
            .trim_end_matches(']');
        assert!(
            url.starts_with("http://10.0.0.2:8080/v1/phone-home/"),
            "{user_data}"
        );
        // Signed by the server that handed it out (the one that will take it).
        assert_eq!(
            url,
            format!(
                "{other}/v1/phone-home/{}/{}",
                lab.workflow,
                lab.key.sign(&lab.workflow)
            )
        );
    }

    fn disk_json(serial: &str, signatures: &str) -> serde_json::Value {
        serde_json::json!({
            "name": "nvme0n1", "size_bytes": 4u64 << 30, "model": "QEMU NVMe Ctrl",
            "serial": serial, "wwn": "", "rotational": false, "removable": false,
            "signatures": [signatures], "partitions": []
        })
    }

    #[tokio::test]
    async fn inventory_is_bounded_rate_limited_and_the_written_disk_becomes_the_installed_one() {
        let lab = lab_with(IMAGE_TEMPLATE);
        let (_, body) = lab.claim(VICTIM, "boot-1").await;
        let claimed: Claimed = serde_json::from_str(&body).unwrap();
        let t = Some(claimed.token.as_str());
        let inv = serde_json::json!({
            "cpu": {"model": "QEMU", "cores": 2}, "memory_bytes": 1u64 << 30,
            "firmware": "bios", "dmi": {"vendor": "QEMU", "product": "pc", "serial": ""},
            "disks": [disk_json("NVME-B", "gpt")], "nics": [], "unbound_pci": []
        });
        // Too many disks: refused whole, nothing stored.
        let mut big = inv.clone();
        big["disks"] = serde_json::Value::Array(vec![disk_json("X", "gpt"); 65]);
        let (status, why) = lab
            .send(VICTIM, "POST", "/v1/agent/inventory", t, &big.to_string())
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{why}");
        assert!(why.contains("disks: 65 items, at most 64"), "{why}");
        // Without the credential, or from another address: refused.
        let (status, _) = lab
            .send(
                VICTIM,
                "POST",
                "/v1/agent/inventory",
                None,
                &inv.to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = lab
            .send(ATTACKER, "POST", "/v1/agent/inventory", t, &inv.to_string())
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(lab.store.inventories("n1", 10).unwrap().is_empty());
        let (status, _) = lab
            .send(VICTIM, "POST", "/v1/agent/inventory", t, &inv.to_string())
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = lab
            .send(VICTIM, "POST", "/v1/agent/inventory", t, &inv.to_string())
            .await;
        assert_eq!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "one report per interval"
        );
        assert_eq!(lab.store.inventories("n1", 10).unwrap().len(), 1);

        // The image2disk goes out with a guard: Kiln never installed n1.
        let (_, next) = lab
            .send(VICTIM, "GET", "/v1/agent/next?run=boot-1", t, "")
            .await;
        let next: NextAction = serde_json::from_str(&next).unwrap();
        let NextAction::Run { action, .. } = next else {
            panic!("{next:?}")
        };
        assert_eq!(
            action.guard.as_deref(),
            Some(&kiln_api::agent::DiskGuard::default())
        );
        // The write is recorded with what the disk held, then the disk is the installed one.
        let write =
            serde_json::json!({"index": 0, "attempt": 1, "disk": disk_json("NVME-B", "gpt")});
        let (status, why) = lab
            .send(VICTIM, "POST", "/v1/agent/disk", t, &write.to_string())
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{why}");
        let stale =
            serde_json::json!({"index": 1, "attempt": 1, "disk": disk_json("NVME-B", "gpt")});
        let (status, _) = lab
            .send(VICTIM, "POST", "/v1/agent/disk", t, &stale.to_string())
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "not a running image2disk");
        assert_eq!(
            lab.store.machine_fact("n1", "installed-disk").unwrap(),
            None
        );
        let done = r#"{"index":0,"attempt":1,"report":"succeeded","message":"ok"}"#;
        lab.send(VICTIM, "POST", "/v1/agent/report", t, done).await;
        let installed: kiln_api::inventory::DiskIdentity = serde_json::from_str(
            &lab.store
                .machine_fact("n1", "installed-disk")
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(installed.serial, "NVME-B");
        let kinds: Vec<(kiln_model::EventKind, String)> = lab
            .store
            .events(Some("n1"), 0, 100)
            .unwrap()
            .into_iter()
            .map(|r| (r.event.kind, r.event.detail))
            .collect();
        assert!(
            kinds
                .iter()
                .any(|(k, d)| *k == kiln_model::EventKind::InventoryReported
                    && d.contains("disks [nvme0n1 4 GiB NVME-B]")),
            "{kinds:#?}"
        );
        assert!(
            kinds
                .iter()
                .any(|(k, d)| *k == kiln_model::EventKind::DiskOverwriting
                    && d.contains("/dev/nvme0n1")
                    && d.contains("it held: nvme0n1: gpt")),
            "{kinds:#?}"
        );
    }
}
