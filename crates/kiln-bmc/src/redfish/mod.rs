//! Redfish driver: a small typed client on reqwest (rustls) + serde.
//!
//! Discovery: service root → `Systems` → the one system, the configured one (label or path in
//! bmc_ip), or the one whose EthernetInterfaces list the machine's MAC. Auth: a Redfish
//! session when the service offers one (deleted on `close`), else HTTP Basic. Power: the
//! `#ComputerSystem.Reset` action with a ResetType the BMC allows, then `PowerState` is polled
//! until it shows the result, backing off and taking turns with other machines behind the same
//! BMC. Boot: PATCH of the system's `Boot` object, only when it advertises the override, with
//! `If-Match` when the BMC gave an ETag, and without `BootSourceOverrideMode` when no label asks
//! for a mode or the BMC refuses that property.
//! The decisions live in [`logic`] (pure); this file is the HTTP shell.
//!
//! Discovery costs two or three requests per driver. What it found can be kept by the caller as
//! a [`RedfishHint`] (Kiln keeps it in its store per machine) and handed to the next driver for
//! the same BMC, which then goes straight to the system; a hint that no longer holds (the path
//! is gone, Basic is refused) is dropped and discovery runs as usual.

mod logic;
mod poll_gate;
mod tls;
mod types;

#[cfg(test)]
mod fake_tests;
#[cfg(test)]
mod mockup_tests;

pub use logic::ChosenBy;

use crate::{
    Bmc, BmcAddress, BmcError, BmcInfo, BmcReadout, BootOverride, PowerAction, PowerState, Protocol,
};
use kiln_model::Secret;
use logic::{FirstStep, ObservedPower, SystemPick};
use reqwest::header::{ACCEPT, ETAG, HeaderMap, HeaderValue, IF_MATCH, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;
use types::{ComputerSystem, ServiceRoot};

const SERVICE_ROOT: &str = "/redfish/v1/";
const DEFAULT_SYSTEMS: &str = "/redfish/v1/Systems";
const MODE_PROPERTY: &str = "BootSourceOverrideMode";

/// How to authenticate to the Redfish service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedfishAuth {
    /// A session when the service root links one (`Links.Sessions`), else HTTP Basic.
    #[default]
    Auto,
    /// Sessions only: an error if the service has none.
    Session,
    /// HTTP Basic on every request.
    Basic,
}

/// What discovery found out about a BMC: the system's path, why it was chosen, and how to log
/// in. Paths only: no credentials, no session token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RedfishHint {
    pub system: String,
    /// The session collection to log in at; `None`: HTTP Basic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<String>,
    /// Why `system`; `None` in hints kept before systems were chosen (one-system BMCs). A hint
    /// chosen for another label, path or MAC than the machine has now is not followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<ChosenBy>,
}

impl RedfishHint {
    /// Whether the hint's system still answers what the options ask for.
    fn system_holds(&self, options: &RedfishOptions) -> bool {
        match (&self.chosen, options.system.as_deref()) {
            (Some(ChosenBy::Configured { wanted }), Some(now)) => wanted == now,
            (_, Some(_)) | (Some(ChosenBy::Configured { .. }), None) => false,
            (Some(ChosenBy::Mac { mac, .. }), None) => {
                options
                    .mac
                    .as_deref()
                    .and_then(logic::normalize_mac)
                    .as_deref()
                    == Some(mac)
            }
            (Some(ChosenBy::Only) | None, None) => true,
        }
    }
}

/// Per-machine Redfish settings.
#[derive(Debug, Clone)]
pub struct RedfishOptions {
    /// Accept any certificate (BMCs often ship self-signed ones). Off by default; set it per
    /// machine, knowingly.
    pub insecure_skip_verify: bool,
    /// A CA certificate (PEM) trusted in addition to the system store, for a site CA that signed
    /// the BMC certificates: verification stays on.
    pub ca_pem: Option<String>,
    /// Which system to drive when the BMC has several: its `Id` (last path segment) or its path.
    /// A name the BMC redirects (sushy-tools: name → UUID) works too.
    pub system: Option<String>,
    /// The machine's MAC: with several systems and no `system`, the one whose
    /// EthernetInterfaces list it is driven.
    pub mac: Option<String>,
    pub auth: RedfishAuth,
    /// Bound on each HTTP request (connect + answer).
    pub request_timeout: Duration,
    /// How long `power()` waits for `PowerState` to show the result.
    pub power_timeout: Duration,
    /// The longest pause between `PowerState` reads while waiting (they start 100 ms apart and
    /// double up to this).
    pub poll_interval: Duration,
    /// What an earlier driver discovered ([`RedfishBmc::hint`]); used with `auth: Auto` only.
    pub hint: Option<RedfishHint>,
}

impl Default for RedfishOptions {
    fn default() -> Self {
        RedfishOptions {
            insecure_skip_verify: false,
            ca_pem: None,
            system: None,
            mac: None,
            auth: RedfishAuth::Auto,
            request_timeout: Duration::from_secs(30),
            power_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(2),
            hint: None,
        }
    }
}

#[derive(Clone, Default)]
enum AuthState {
    #[default]
    Unknown,
    Basic,
    Session {
        token: Secret,
        /// Where to DELETE the session (absolute URL or path), if the BMC said.
        location: Option<String>,
    },
}

/// How this BMC takes credentials, once known (kept apart from [`AuthState`], which `close`
/// clears).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Login {
    Basic,
    Session { collection: String },
}

#[derive(Default)]
struct State {
    /// The system's path, once discovered (after redirects).
    system_path: Option<String>,
    /// Why that system.
    chosen: Option<ChosenBy>,
    auth: AuthState,
    login: Option<Login>,
    /// `system_path` and `login` came from a hint and have not been confirmed yet.
    hinted: bool,
    /// The service root as read before logging in (it names the Systems collection too:
    /// one request fewer per command).
    root: Option<ServiceRoot>,
}

/// One machine's Redfish BMC.
pub struct RedfishBmc {
    /// For messages: `https://host[:port]`, never credentials.
    address: String,
    base: Url,
    username: String,
    password: Secret,
    options: RedfishOptions,
    http: reqwest::Client,
    state: Mutex<State>,
}

impl fmt::Debug for RedfishBmc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedfishBmc")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// One HTTP exchange's outcome, any status.
struct Reply {
    status: StatusCode,
    /// The final URL, after redirects.
    url: Url,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: impl reqwest::header::AsHeaderName) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// A request that got no HTTP reply.
struct Transport {
    error: BmcError,
    /// The request may have reached the BMC (a timeout or a reset after sending), so its effect
    /// is unknown; `false` for refused connections, DNS and TLS failures.
    maybe_delivered: bool,
}

impl From<BmcError> for Transport {
    fn from(error: BmcError) -> Self {
        Transport {
            error,
            maybe_delivered: false,
        }
    }
}

impl RedfishBmc {
    /// A driver for the BMC at `address` (`redfish+https://…`, `https://…`, `http://…` or a plain
    /// host, which means HTTPS). Nothing is sent until the first call.
    pub fn new(
        address: &BmcAddress,
        username: &str,
        password: Secret,
        options: RedfishOptions,
    ) -> Result<Self, BmcError> {
        let bad = |detail: String| BmcError::BadAddress {
            address: address.to_string(),
            detail,
        };
        if address.protocol == Protocol::Ipmi {
            return Err(bad("an IPMI address, not Redfish".into()));
        }
        let base_text = address.redfish_base_url();
        let base = Url::parse(&base_text).map_err(|e| bad(format!("not a URL: {e}")))?;
        let tls = tls::client_config(options.insecure_skip_verify, options.ca_pem.as_deref())
            .map_err(|e| bad(format!("TLS settings: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert("OData-Version", HeaderValue::from_static("4.0"));
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(options.request_timeout)
            .connect_timeout(options.request_timeout.min(Duration::from_secs(10)))
            .redirect(same_origin_redirects())
            // BMC networks are reached directly; a proxy from the environment would be wrong.
            .no_proxy()
            .default_headers(headers)
            .user_agent(concat!("kiln-bmc/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(format!("HTTP client: {}", error_chain(&e))))?;
        let state = match &options.hint {
            Some(hint) if options.auth == RedfishAuth::Auto => State {
                // A hint for another choice still says how to log in.
                system_path: hint.system_holds(&options).then(|| hint.system.clone()),
                chosen: hint.chosen.clone().filter(|_| hint.system_holds(&options)),
                login: Some(match &hint.sessions {
                    Some(collection) => Login::Session {
                        collection: collection.clone(),
                    },
                    None => Login::Basic,
                }),
                hinted: true,
                ..State::default()
            },
            _ => State::default(),
        };
        Ok(RedfishBmc {
            address: base_text,
            base,
            username: username.to_string(),
            password,
            options,
            http,
            state: Mutex::new(state),
        })
    }

    /// What this driver found out (system path, how to log in), for the next driver for the
    /// same BMC; `None` until a call has found both.
    pub fn hint(&self) -> Option<RedfishHint> {
        let state = self.state();
        let system = state.system_path.clone()?;
        let sessions = match state.login.clone()? {
            Login::Basic => None,
            Login::Session { collection } => Some(collection),
        };
        Some(RedfishHint {
            system,
            sessions,
            chosen: state.chosen.clone(),
        })
    }

    /// Forgets what a hint said, so that the next call discovers afresh; false when nothing
    /// came from a hint. A session already opened is kept (`call` renews it when refused).
    fn drop_hint(&self) -> bool {
        let mut state = self.state();
        if !state.hinted {
            return false;
        }
        state.hinted = false;
        state.system_path = None;
        state.chosen = None;
        if matches!(state.auth, AuthState::Basic) {
            state.auth = AuthState::Unknown;
        }
        if !matches!(state.auth, AuthState::Session { .. }) {
            state.login = None;
        }
        true
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Error details may quote BMC replies; those never carry our secrets out.
    fn redact(&self, text: String) -> String {
        let token = match &self.state().auth {
            AuthState::Session { token, .. } => token.expose().to_string(),
            _ => String::new(),
        };
        logic::redact(&text, &[self.password.expose(), &token])
    }

    fn unreachable(&self, detail: String) -> BmcError {
        BmcError::Unreachable {
            address: self.address.clone(),
            detail: self.redact(detail),
        }
    }

    fn protocol(&self, detail: String) -> BmcError {
        BmcError::Protocol {
            address: self.address.clone(),
            detail: self.redact(detail),
        }
    }

    fn unsupported(&self, what: String) -> BmcError {
        BmcError::Unsupported {
            address: self.address.clone(),
            what: self.redact(what),
        }
    }

    /// A non-success reply as an error. `what` names the resource for a 404/405/501.
    fn status_error(&self, operation: &str, what: &str, reply: &Reply) -> BmcError {
        let text = logic::error_text(&reply.body);
        let status = reply.status;
        let detail = self.redact(format!("{operation}: HTTP {status}: {text}"));
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => BmcError::Auth {
                address: self.address.clone(),
                detail,
            },
            StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED => BmcError::Unsupported {
                address: self.address.clone(),
                what: format!("{what} ({detail})"),
            },
            _ => BmcError::Rejected {
                address: self.address.clone(),
                operation: operation.to_string(),
                detail: self.redact(format!("HTTP {status}: {text}")),
            },
        }
    }

    /// `path` (or an absolute URL from the BMC) on this BMC; another origin is refused, so a
    /// reply can never send our credentials elsewhere.
    fn url(&self, path: &str) -> Result<Url, BmcError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| self.protocol(format!("bad link {path:?}: {e}")))?;
        if !same_origin(&url, &self.base) {
            return Err(self.protocol(format!("link {path:?} points to another host")));
        }
        Ok(url)
    }

    /// One HTTP exchange with the given credentials; any status is a `Reply`.
    async fn exchange(
        &self,
        method: Method,
        url: Url,
        auth: &AuthState,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Reply, Transport> {
        let operation = format!("{method} {}", url.path());
        let mut req = self.http.request(method, url);
        match auth {
            AuthState::Unknown => {}
            AuthState::Basic => {
                req = req.basic_auth(&self.username, Some(self.password.expose()));
            }
            AuthState::Session { token, .. } => {
                let mut value = HeaderValue::from_str(token.expose())
                    .map_err(|_| self.protocol("the session token is not a header value".into()))?;
                value.set_sensitive(true);
                req = req.header("X-Auth-Token", value);
            }
        }
        if let Some(etag) = if_match {
            req = req.header(IF_MATCH, etag);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let transport = |e: reqwest::Error| self.transport_error(&operation, e);
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let url = resp.url().clone();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(transport)?.to_vec();
        Ok(Reply {
            status,
            url,
            headers,
            body,
        })
    }

    fn transport_error(&self, operation: &str, e: reqwest::Error) -> Transport {
        if let Some(tls) = certificate_error(&e) {
            return Transport {
                error: BmcError::Auth {
                    address: self.address.clone(),
                    detail: format!(
                        "{operation}: the BMC's TLS certificate is not trusted ({tls}); give its CA \
                         or set insecure_skip_verify for this machine"
                    ),
                },
                maybe_delivered: false,
            };
        }
        let maybe_delivered = !(e.is_connect() || e.is_builder() || e.is_redirect());
        let error = if e.is_redirect() || e.is_builder() {
            self.protocol(format!("{operation}: {}", error_chain(&e)))
        } else if e.is_timeout() {
            self.unreachable(format!(
                "{operation}: no answer within {} s",
                self.options.request_timeout.as_secs_f32()
            ))
        } else {
            self.unreachable(format!("{operation}: {}", error_chain(&e)))
        };
        Transport {
            error,
            maybe_delivered,
        }
    }

    /// A request with this BMC's credentials. A session the BMC no longer knows (they expire
    /// when idle) is replaced once; Basic credentials are never retried.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Reply, Transport> {
        let url = self.url(path)?;
        let auth = self.auth().await?;
        let reply = self
            .exchange(method.clone(), url.clone(), &auth, body, if_match)
            .await?;
        if reply.status == StatusCode::UNAUTHORIZED && matches!(auth, AuthState::Session { .. }) {
            self.state().auth = AuthState::Unknown;
            let auth = self.auth().await?;
            return self.exchange(method, url, &auth, body, if_match).await;
        }
        Ok(reply)
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> Result<(T, Reply), BmcError> {
        let reply = self
            .call(Method::GET, path, None, None)
            .await
            .map_err(|t| t.error)?;
        let operation = format!("GET {path}");
        if !reply.status.is_success() {
            return Err(self.status_error(&operation, what, &reply));
        }
        let value = self.parse(&operation, &reply.body)?;
        Ok((value, reply))
    }

    fn parse<T: DeserializeOwned>(&self, operation: &str, body: &[u8]) -> Result<T, BmcError> {
        serde_json::from_slice(body).map_err(|e| {
            self.protocol(format!(
                "{operation}: not the expected JSON ({e}): {}",
                logic::error_text(body)
            ))
        })
    }

    /// The credentials to use, logging in first if needed.
    async fn auth(&self) -> Result<AuthState, Transport> {
        let known = self.state().auth.clone();
        if !matches!(known, AuthState::Unknown) {
            return Ok(known);
        }
        let hinted = self.state().login.clone();
        let (auth, login) = match (self.options.auth, hinted) {
            (RedfishAuth::Basic, _) | (RedfishAuth::Auto, Some(Login::Basic)) => {
                (AuthState::Basic, Login::Basic)
            }
            (RedfishAuth::Auto, Some(Login::Session { collection })) => {
                match self.login(&collection).await {
                    Ok(session) => (session, Login::Session { collection }),
                    // Wrong credentials: discovery would not change that.
                    Err(e) if e.kind() == crate::ErrorKind::Auth => return Err(e.into()),
                    // The collection moved (a hint gone stale): find it again.
                    Err(_) => {
                        self.drop_hint();
                        self.discover_auth(RedfishAuth::Auto).await?
                    }
                }
            }
            (mode, _) => self.discover_auth(mode).await?,
        };
        let mut state = self.state();
        state.auth = auth.clone();
        state.login = Some(login);
        Ok(auth)
    }

    /// How to authenticate, from the service root: a session when it links one (and `mode`
    /// allows), else Basic.
    async fn discover_auth(&self, mode: RedfishAuth) -> Result<(AuthState, Login), Transport> {
        let sessions = self.sessions_path().await?;
        Ok(match (sessions, mode) {
            (Some(path), _) => match self.login(&path).await {
                Ok(session) => (session, Login::Session { collection: path }),
                // Sessions offered but broken (404, 405, 500 …): Basic works on those BMCs.
                Err(e)
                    if mode == RedfishAuth::Auto
                        && matches!(
                            e,
                            BmcError::Rejected { .. }
                                | BmcError::Unsupported { .. }
                                | BmcError::Protocol { .. }
                        ) =>
                {
                    (AuthState::Basic, Login::Basic)
                }
                Err(e) => return Err(e.into()),
            },
            (None, RedfishAuth::Session) => {
                return Err(self
                    .unsupported("sessions (the service root links no Sessions)".into())
                    .into());
            }
            (None, _) => (AuthState::Basic, Login::Basic),
        })
    }

    /// The session collection from the (unauthenticated) service root, if any.
    async fn sessions_path(&self) -> Result<Option<String>, Transport> {
        let url = self.url(SERVICE_ROOT)?;
        let reply = self
            .exchange(Method::GET, url, &AuthState::Unknown, None, None)
            .await?;
        if reply.status == StatusCode::UNAUTHORIZED {
            // A service root behind auth (not per the spec): Basic it is.
            return Ok(None);
        }
        let operation = format!("GET {SERVICE_ROOT}");
        if !reply.status.is_success() {
            return Err(self
                .status_error(&operation, "Redfish (no service root)", &reply)
                .into());
        }
        let root: ServiceRoot = self.parse(&operation, &reply.body)?;
        self.state().root = Some(root.clone());
        Ok(root
            .links
            .and_then(|l| l.sessions)
            .and_then(|l| l.odata_id)
            .or_else(|| {
                root.session_service
                    .is_some()
                    .then(|| "/redfish/v1/SessionService/Sessions".to_string())
            }))
    }

    async fn login(&self, path: &str) -> Result<AuthState, BmcError> {
        let body = serde_json::to_value(types::SessionLogin {
            user_name: &self.username,
            password: self.password.expose(),
        })
        .map_err(|e| self.protocol(format!("session request: {e}")))?;
        let url = self.url(path)?;
        let reply = self
            .exchange(Method::POST, url, &AuthState::Unknown, Some(&body), None)
            .await
            .map_err(|t| t.error)?;
        let operation = format!("POST {path} (log in as {:?})", self.username);
        if !reply.status.is_success() {
            return Err(self.status_error(&operation, "sessions", &reply));
        }
        let Some(token) = reply.header("X-Auth-Token").filter(|t| !t.is_empty()) else {
            return Err(self.protocol(format!("{operation}: no X-Auth-Token in the reply")));
        };
        // Only the path: BMCs often put their own host name (not the address we use) in Location.
        let location = reply
            .header(LOCATION)
            .or_else(|| {
                serde_json::from_slice::<types::Link>(&reply.body)
                    .ok()
                    .and_then(|l| l.odata_id)
            })
            .map(|l| match Url::parse(&l) {
                Ok(absolute) => absolute.path().to_string(),
                Err(_) => l,
            });
        Ok(AuthState::Session {
            token: Secret::new(token),
            location,
        })
    }

    /// The system's path: cached, else discovered from the service root.
    async fn system_path(&self) -> Result<String, BmcError> {
        if let Some(p) = self.state().system_path.clone() {
            return Ok(p);
        }
        // Authenticating reads the service root (unauthenticated) first; reuse it.
        self.auth().await.map_err(|t| t.error)?;
        let cached = self.state().root.clone();
        let root = match cached {
            Some(root) => root,
            None => {
                self.get_json::<ServiceRoot>(SERVICE_ROOT, "Redfish (no service root)")
                    .await?
                    .0
            }
        };
        let collection = root
            .systems
            .and_then(|l| l.odata_id)
            .unwrap_or_else(|| DEFAULT_SYSTEMS.to_string());
        let (systems, _) = self
            .get_json::<types::Collection>(&collection, "a Systems collection")
            .await?;
        let members: Vec<String> = systems
            .members
            .into_iter()
            .filter_map(|m| m.odata_id)
            .collect();
        let wanted = self.options.system.as_deref();
        let configured = || ChosenBy::Configured {
            wanted: wanted.unwrap_or_default().to_string(),
        };
        let (path, chosen) = match logic::choose_system(&members, wanted) {
            SystemPick::Member(path) if wanted.is_some() => (path, configured()),
            SystemPick::Member(path) => (path, ChosenBy::Only),
            SystemPick::Empty => {
                return Err(self.unsupported("any system: the Systems collection is empty".into()));
            }
            SystemPick::Several => self.choose_by_mac(&members).await?,
            SystemPick::TryPath => {
                // Not a member by id: try it as a path (the BMC may redirect a name).
                let wanted = wanted.unwrap_or_default();
                let path = logic::system_path_for(&collection, wanted);
                let reply = self
                    .call(Method::GET, &path, None, None)
                    .await
                    .map_err(|t| t.error)?;
                if reply.status == StatusCode::NOT_FOUND {
                    return Err(self.unsupported(format!(
                        "system {wanted:?} (members: {})",
                        if members.is_empty() {
                            "none".into()
                        } else {
                            members.join(", ")
                        }
                    )));
                }
                if !reply.status.is_success() {
                    return Err(self.status_error(&format!("GET {path}"), "systems", &reply));
                }
                (reply.url.path().to_string(), configured())
            }
        };
        self.state().chosen = Some(chosen);
        self.state().system_path = Some(path.clone());
        Ok(path)
    }

    /// Several systems and none named: the one whose NICs list the machine's MAC. Each
    /// system's EthernetInterfaces first; when none lists the MAC, its NetworkInterfaces'
    /// Ethernet functions too (where the BMC links them).
    async fn choose_by_mac(&self, members: &[String]) -> Result<(String, ChosenBy), BmcError> {
        let wanted = self.options.mac.as_deref().and_then(logic::normalize_mac);
        let mut systems = Vec::with_capacity(members.len());
        let mut adapters = Vec::with_capacity(members.len());
        for path in members {
            let (nics, network_interfaces) = self.system_nics(path).await?;
            systems.push(nics);
            adapters.push(network_interfaces);
        }
        let listed = |systems: &[logic::SystemNics]| {
            systems
                .iter()
                .any(|s| s.macs.iter().any(|(m, _)| Some(m) == wanted.as_ref()))
        };
        if wanted.is_some() && !listed(&systems) {
            for (nics, link) in systems.iter_mut().zip(adapters) {
                if let Some(link) = link {
                    self.adapter_macs(&link, nics).await?;
                }
            }
        }
        let (i, interface) = logic::choose_by_mac(&systems, self.options.mac.as_deref())
            .map_err(|what| self.unsupported(what))?;
        let chosen = ChosenBy::Mac {
            mac: wanted.unwrap_or_default(),
            interface,
        };
        Ok((systems.swap_remove(i).path, chosen))
    }

    /// The resources a collection lists, each with its path. What cannot be read is left out:
    /// only an unreachable BMC stops the choice.
    async fn members_of<T: DeserializeOwned>(
        &self,
        collection: &str,
        what: &str,
    ) -> Result<Vec<(String, T)>, BmcError> {
        let list = match self.get_json::<types::Collection>(collection, what).await {
            Ok((c, _)) => c.members,
            Err(e) if e.kind().is_retryable() => return Err(e),
            Err(_) => return Ok(Vec::new()),
        };
        let mut out = Vec::with_capacity(list.len());
        for path in list.into_iter().filter_map(|m| m.odata_id) {
            match self.get_json::<T>(&path, what).await {
                Ok((doc, _)) => out.push((path, doc)),
                Err(e) if e.kind().is_retryable() => return Err(e),
                Err(_) => {}
            }
        }
        Ok(out)
    }

    /// A system's Id and the MACs of its EthernetInterfaces, and its NetworkInterfaces link.
    async fn system_nics(
        &self,
        path: &str,
    ) -> Result<(logic::SystemNics, Option<String>), BmcError> {
        let fallback_id = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(path);
        let system = match self
            .get_json::<ComputerSystem>(path, &format!("system {path}"))
            .await
        {
            Ok((system, _)) => Some(system),
            Err(e) if e.kind().is_retryable() => return Err(e),
            Err(_) => None,
        };
        let mut nics = logic::SystemNics {
            path: path.to_string(),
            id: system
                .as_ref()
                .and_then(|s| s.id.clone())
                .unwrap_or_else(|| fallback_id.to_string()),
            macs: Vec::new(),
        };
        let Some(system) = system else {
            return Ok((nics, None));
        };
        if let Some(link) = system.ethernet_interfaces.and_then(|l| l.odata_id) {
            let interfaces = self
                .members_of::<types::EthernetInterface>(&link, "an EthernetInterface")
                .await?;
            for (iface, nic) in interfaces {
                add_macs(&mut nics, &iface, nic);
            }
        }
        Ok((nics, system.network_interfaces.and_then(|l| l.odata_id)))
    }

    /// The MACs of the Ethernet functions under a system's NetworkInterfaces.
    async fn adapter_macs(&self, link: &str, nics: &mut logic::SystemNics) -> Result<(), BmcError> {
        let adapters = self
            .members_of::<types::NetworkInterface>(link, "a NetworkInterface")
            .await?;
        for functions in adapters
            .into_iter()
            .filter_map(|(_, a)| a.functions.and_then(|l| l.odata_id))
        {
            let functions = self
                .members_of::<types::NetworkDeviceFunction>(&functions, "a NetworkDeviceFunction")
                .await?;
            for (path, function) in functions {
                if let Some(ethernet) = function.ethernet {
                    add_macs(nics, &path, ethernet);
                }
            }
        }
        Ok(())
    }

    /// The system resource and its ETag (header first, then `@odata.etag`).
    async fn system(&self) -> Result<(ComputerSystem, String, Option<String>), BmcError> {
        match self.read_system().await {
            // A hint that no longer holds (the path is gone, Basic refused, …): discover once.
            Err(e) if !e.kind().is_retryable() && self.drop_hint() => self.read_system().await,
            result => {
                if result.is_ok() {
                    self.state().hinted = false;
                }
                result
            }
        }
    }

    async fn read_system(&self) -> Result<(ComputerSystem, String, Option<String>), BmcError> {
        let path = self.system_path().await?;
        let (system, reply) = self
            .get_json::<ComputerSystem>(&path, &format!("system {path}"))
            .await?;
        // Keep the path the BMC redirected to, so later calls go straight there.
        let path = reply.url.path().to_string();
        self.state().system_path = Some(path.clone());
        let etag = reply.header(ETAG).or_else(|| system.odata_etag.clone());
        Ok((system, path, etag))
    }

    fn observed_power(
        &self,
        system: &ComputerSystem,
        path: &str,
    ) -> Result<ObservedPower, BmcError> {
        let text = system
            .power_state
            .as_deref()
            .ok_or_else(|| self.protocol(format!("GET {path}: no PowerState")))?;
        ObservedPower::parse(text)
            .ok_or_else(|| self.protocol(format!("GET {path}: unknown PowerState {text:?}")))
    }

    async fn read_power(&self) -> Result<ObservedPower, BmcError> {
        let (system, path, _) = self.system().await?;
        self.observed_power(&system, &path)
    }

    /// The reset action's target and allowed ResetTypes (inline, or from its ActionInfo).
    async fn reset_action(
        &self,
        system: &ComputerSystem,
        path: &str,
    ) -> Result<(String, Option<Vec<String>>), BmcError> {
        let action = system
            .actions
            .as_ref()
            .and_then(|a| a.reset.as_ref())
            .ok_or_else(|| {
                self.unsupported(format!("ComputerSystem.Reset (no such action on {path})"))
            })?;
        let target = action.target.clone().unwrap_or_else(|| {
            format!(
                "{}/Actions/ComputerSystem.Reset",
                path.trim_end_matches('/')
            )
        });
        let mut allowed = action.allowed.clone();
        if allowed.is_none()
            && let Some(info) = &action.action_info
        {
            // Best effort: without the list, the first candidate is tried and the BMC decides.
            if let Ok((info, _)) = self.get_json::<types::ActionInfo>(info, "ActionInfo").await {
                allowed = info
                    .parameters
                    .into_iter()
                    .find(|p| p.name.as_deref() == Some("ResetType"))
                    .and_then(|p| p.allowable_values);
            }
        }
        Ok((target, allowed))
    }

    /// Polls `PowerState` until it settles at `target`: 100 ms after the change, then doubling
    /// up to `poll_interval`, never past the deadline, and one read at a time per BMC (machines
    /// behind the same BMC take turns). Unreachable reads are tolerated (BMCs stall during
    /// resets) until the deadline.
    async fn wait_for(&self, target: PowerState, operation: &str) -> Result<(), BmcError> {
        let started = tokio::time::Instant::now();
        let deadline = started + self.options.power_timeout;
        let gate = poll_gate::for_bmc(&self.address);
        loop {
            let read = {
                let _turn = gate.turn().await;
                self.read_power().await
            };
            match read {
                Ok(now) if now.settled_at(target) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind().is_retryable() => {}
                Err(e) => return Err(e),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(BmcError::Timeout {
                    address: self.address.clone(),
                    operation: format!("{operation} (PowerState never {target})"),
                    seconds: self.options.power_timeout.as_secs(),
                });
            }
            let pause = first_polls(now - started, self.options.poll_interval);
            tokio::time::sleep_until((now + pause).min(deadline)).await;
        }
    }

    async fn patch_boot(
        &self,
        path: &str,
        plan: &logic::BootPlan,
        etag: Option<&str>,
    ) -> Result<Reply, BmcError> {
        let body = logic::boot_patch_body(plan);
        self.call(Method::PATCH, path, Some(&body), etag)
            .await
            .map_err(|t| t.error)
    }
}

#[async_trait::async_trait]
impl Bmc for RedfishBmc {
    async fn identify(&self) -> Result<BmcInfo, BmcError> {
        let (root, _) = self
            .get_json::<ServiceRoot>(SERVICE_ROOT, "Redfish (no service root)")
            .await?;
        let (system, _, _) = self.system().await?;
        let manager_link = system
            .links
            .as_ref()
            .and_then(|l| l.managed_by.first())
            .and_then(|l| l.odata_id.clone());
        let manager = match manager_link {
            // Best effort: the firmware version is a nicety, not worth failing identify for.
            Some(path) => self
                .get_json::<types::Manager>(&path, "manager")
                .await
                .map(|(m, _)| m)
                .unwrap_or_default(),
            None => types::Manager::default(),
        };
        let pick = |options: [Option<String>; 3]| {
            options
                .into_iter()
                .flatten()
                .map(|s| s.trim().to_string())
                .find(|s| !s.is_empty())
                .unwrap_or_default()
        };
        let vendor = pick([system.manufacturer, root.vendor, manager.manufacturer]);
        let model = pick([system.model, root.product, manager.model]);
        let bmc_fw = pick([manager.firmware_version, None, None]);
        let bios = pick([system.bios_version, None, None]);
        let serial = pick([system.serial_number, None, None]);
        let firmware = match (bmc_fw.is_empty(), bios.is_empty()) {
            (false, false) => format!("{bmc_fw} (BIOS {bios})"),
            (false, true) => bmc_fw,
            (true, false) => format!("BIOS {bios}"),
            (true, true) => String::new(),
        };
        let system = {
            let state = self.state();
            let why = match &state.chosen {
                Some(c) => c.to_string(),
                None => "kept from an earlier discovery".into(),
            };
            format!("{} ({why})", state.system_path.clone().unwrap_or_default())
        };
        Ok(BmcInfo {
            protocol: "redfish".into(),
            vendor,
            model,
            firmware,
            system,
            serial,
        })
    }

    async fn power_state(&self) -> Result<PowerState, BmcError> {
        Ok(self.read_power().await?.coarse())
    }

    /// The service root's version, then the system (which proves the credentials): its
    /// PowerState and what its `Boot` offers.
    async fn readout(&self) -> Result<BmcReadout, BmcError> {
        let (root, _) = self
            .get_json::<ServiceRoot>(SERVICE_ROOT, "Redfish (no service root)")
            .await?;
        let (system, path, _) = self.system().await?;
        let power = self.observed_power(&system, &path)?.coarse();
        let boot = system.boot.unwrap_or_default();
        Ok(BmcReadout {
            protocol: format!(
                "Redfish {}",
                root.redfish_version
                    .as_deref()
                    .unwrap_or("(version not given)")
            ),
            power,
            pxe_override: logic::pxe_offered(&boot),
            boot_mode: boot.mode.clone(),
        })
    }

    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        let (system, path, _) = self.system().await?;
        let now = self.observed_power(&system, &path)?;
        let target = action.expected_state();
        let operation = format!("power {action}");
        match logic::first_step(action, &now) {
            FirstStep::Done => return Ok(()),
            FirstStep::Wait => return self.wait_for(target, &operation).await,
            FirstStep::Send => {}
        }
        let (reset_target, allowed) = self.reset_action(&system, &path).await?;
        let reset_type = logic::choose_reset_type(action, now.coarse(), allowed.as_deref())
            .map_err(|what| self.unsupported(what))?;
        let operation = format!("power {action} (ResetType {reset_type})");
        let body = serde_json::to_value(types::ResetRequest { reset_type })
            .map_err(|e| self.protocol(format!("reset request: {e}")))?;
        match self
            .call(Method::POST, &reset_target, Some(&body), None)
            .await
        {
            Ok(reply) if reply.status.is_success() => {}
            Ok(reply) => {
                return Err(self.status_error(
                    &format!("POST {reset_target} {{\"ResetType\": \"{reset_type}\"}}"),
                    &format!("ResetType {reset_type}"),
                    &reply,
                ));
            }
            Err(t) if t.maybe_delivered => {
                // The reset may have been applied: never send it again; read what happened.
                if let Ok(now) = self.read_power().await
                    && now.settled_at(target)
                {
                    return Ok(());
                }
            }
            Err(t) => return Err(t.error),
        }
        self.wait_for(target, &operation).await
    }

    async fn set_boot(&self, boot: BootOverride) -> Result<(), BmcError> {
        let (system, path, etag) = self.system().await?;
        let current = system
            .boot
            .ok_or_else(|| self.unsupported(format!("boot override (no Boot object on {path})")))?;
        let mut plan = logic::plan_boot(&current, boot)
            .map_err(|what| self.unsupported(format!("{what} (system {path})")))?;
        let mut etag = etag;
        let mut retried_mode = false;
        let mut retried_etag = false;
        loop {
            let reply = self.patch_boot(&path, &plan, etag.as_deref()).await?;
            if reply.status.is_success() {
                break;
            }
            if reply.status == StatusCode::BAD_REQUEST
                && plan.mode.is_some()
                && !retried_mode
                && logic::error_mentions(&reply.body, MODE_PROPERTY)
            {
                // Many BMCs refuse BootSourceOverrideMode (read-only, or not in their list):
                // the device override alone still does the job.
                plan.mode = None;
                retried_mode = true;
                continue;
            }
            if reply.status == StatusCode::PRECONDITION_FAILED && etag.is_some() && !retried_etag {
                // The resource changed between our GET and PATCH: take the fresh ETag, once.
                etag = self.system().await?.2;
                retried_etag = true;
                continue;
            }
            return Err(self.status_error(
                &format!("PATCH {path} {}", logic::boot_patch_body(&plan)),
                "boot override",
                &reply,
            ));
        }
        // Read back: some BMCs answer 2xx and ignore what they cannot do.
        let (after, _, _) = self.system().await?;
        let seen = after.boot.and_then(|b| b.target);
        match seen.as_deref() {
            Some(t) if t != plan.target => Err(BmcError::Rejected {
                address: self.address.clone(),
                operation: format!("boot override {}", plan.target),
                detail: format!("accepted, but BootSourceOverrideTarget reads back {t:?}"),
            }),
            _ => Ok(()),
        }
    }

    fn hint(&self) -> Option<String> {
        RedfishBmc::hint(self).and_then(|h| serde_json::to_string(&h).ok())
    }

    async fn close(&self) -> Result<(), BmcError> {
        let auth = std::mem::take(&mut self.state().auth);
        let AuthState::Session {
            location: Some(location),
            ..
        } = &auth
        else {
            return Ok(());
        };
        let url = self.url(location)?;
        let reply = self
            .exchange(Method::DELETE, url, &auth, None, None)
            .await
            .map_err(|t| t.error)?;
        match reply.status {
            s if s.is_success() => Ok(()),
            // Already gone (expired or deleted): nothing to end.
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(self.status_error(&format!("DELETE {location}"), "session logout", &reply)),
        }
    }
}

/// A NIC's MACs (current and permanent, usable ones only) into a system's list, once each.
fn add_macs(nics: &mut logic::SystemNics, interface: &str, nic: types::EthernetInterface) {
    for mac in [nic.mac_address, nic.permanent_mac_address]
        .into_iter()
        .flatten()
        .filter_map(|m| logic::normalize_mac(&m))
    {
        if !nics.macs.iter().any(|(m, _)| *m == mac) {
            nics.macs.push((mac, interface.to_string()));
        }
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Follow up to 5 redirects, on the same scheme, host and port only: our headers carry
/// credentials (sushy-tools redirects /Systems/<name> to /Systems/<uuid>).
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let previous = attempt.previous();
        if previous.len() > 5 {
            attempt.error("more than 5 redirects")
        } else if previous
            .first()
            .is_some_and(|first| !same_origin(first, attempt.url()))
        {
            let to = attempt.url().origin().ascii_serialization();
            attempt.error(format!("redirect to another origin ({to})"))
        } else {
            attempt.follow()
        }
    })
}

/// The error and its causes, deduplicated, joined by ": ".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// A certificate verification failure somewhere in the causes. `io::Error` hides its inner error
/// from `source()` (and hyper nests them), so look inside those too.
fn certificate_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut pending = vec![e];
    let mut seen = 0;
    while let Some(err) = pending.pop() {
        seen += 1;
        if seen > 32 {
            break;
        }
        if let Some(tls) = err.downcast_ref::<rustls::Error>()
            && matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::General(_)
            )
        {
            return Some(tls.to_string());
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            pending.push(inner);
        }
        if let Some(source) = err.source() {
            pending.push(source);
        }
    }
    None
}

/// Sleep before the next power-state read: 100 ms, doubling, up to `interval`.
pub(crate) fn first_polls(waited: Duration, interval: Duration) -> Duration {
    let mut step = Duration::from_millis(100);
    let mut total = Duration::ZERO;
    while total + step <= waited && step < interval {
        total += step;
        step *= 2;
    }
    step.min(interval)
}

#[cfg(test)]
mod poll_tests {
    use super::first_polls;
    use std::time::Duration;

    #[test]
    fn polls_soon_then_every_interval() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs(1);
        assert_eq!(first_polls(ms(0), s), ms(100));
        assert_eq!(first_polls(ms(100), s), ms(200));
        assert_eq!(first_polls(ms(300), s), ms(400));
        assert_eq!(first_polls(ms(700), s), ms(800));
        assert_eq!(first_polls(ms(1500), s), s);
        assert_eq!(first_polls(Duration::from_secs(30), s), s);
        // The default cap: 100 ms doubling to 2 s.
        let cap = Duration::from_secs(2);
        assert_eq!(first_polls(ms(1500), cap), ms(1600));
        assert_eq!(first_polls(ms(3100), cap), cap);
        assert_eq!(super::RedfishOptions::default().poll_interval, cap);
    }
}
