//! The driver against a tiny local Redfish service (axum on 127.0.0.1) that fakes the BMC quirks
//! sushy-tools cannot show: sessions, ETags with If-Match, a refused BootSourceOverrideMode,
//! ActionInfo, expired tokens, lost replies, boots that never happen.

use super::*;
use crate::ErrorKind;
use axum::body::Bytes;
use axum::http::{HeaderMap as AxHeaders, Method as AxMethod, StatusCode as AxStatus, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

const USER: &str = "admin";
const PASSWORD: &str = "pa55-w0rd";
const TOKEN: &str = "tok-1b2c3d4e5f";
const SYSTEM: &str = "/redfish/v1/Systems/1";

/// What the fake BMC does.
#[derive(Clone)]
struct Quirks {
    sessions: bool,
    /// A session token is accepted for this many requests, then refused (expired).
    token_uses: Option<u32>,
    etag: Option<&'static str>,
    /// PATCH without If-Match → 428; with a different one → 412.
    require_if_match: bool,
    /// The first PATCH gets 412 (someone else changed the resource).
    first_patch_412: bool,
    /// PATCH carrying BootSourceOverrideMode → 400 naming it.
    reject_mode: bool,
    /// PATCH → 400 about something else.
    reject_patch: bool,
    /// PATCH → 204, and nothing changes.
    ignore_patch: bool,
    target_allowed: Option<Vec<&'static str>>,
    reset_allowed: Option<Vec<&'static str>>,
    /// Allowed ResetTypes only in an ActionInfo resource.
    action_info: Option<Vec<&'static str>>,
    /// Resets are accepted but change nothing.
    reset_ignored: bool,
    /// The reset is applied, then the reply is held this long (longer than the client waits).
    reset_reply_delay: Option<Duration>,
    reset_error_500: bool,
    /// The state shows PoweringOn this many reads before On.
    powering_on_reads: u32,
    members: Vec<&'static str>,
    system_not_json: bool,
    /// The Systems collection redirects to the same port under another host name.
    redirect_elsewhere: bool,
    /// HTTP Basic is refused (only sessions work).
    basic_refused: bool,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks {
            sessions: false,
            token_uses: None,
            etag: None,
            require_if_match: false,
            first_patch_412: false,
            reject_mode: false,
            reject_patch: false,
            ignore_patch: false,
            target_allowed: None,
            reset_allowed: None,
            action_info: None,
            reset_ignored: false,
            reset_reply_delay: None,
            reset_error_500: false,
            powering_on_reads: 0,
            members: vec![SYSTEM],
            system_not_json: false,
            redirect_elsewhere: false,
            basic_refused: false,
        }
    }
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    token: Option<String>,
    if_match: Option<String>,
    body: Value,
    status: u16,
}

struct Fake {
    quirks: Quirks,
    seen: Vec<Seen>,
    power: String,
    target: String,
    enabled: String,
    mode: String,
    token_uses: u32,
    logins: u32,
    session_deleted: bool,
    patches: u32,
    powering_on_left: u32,
    port: u16,
}

type Shared = Arc<Mutex<Fake>>;

fn redfish_error(status: AxStatus, message: &str, property: Option<&str>) -> Response {
    let mut info = json!({"MessageId": "Base.1.8.PropertyValueNotInList", "Message": message});
    if let Some(p) = property {
        info["RelatedProperties"] = json!([format!("#/Boot/{p}")]);
    }
    let body = json!({"error": {"code": "Base.1.8.GeneralError",
        "message": "A general error has occurred. See ExtendedInfo for more information.",
        "@Message.ExtendedInfo": [info]}});
    (status, axum::Json(body)).into_response()
}

fn basic(user: &str, password: &str) -> String {
    // Small base64 for the test's own check of the Authorization header.
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let mut out = String::new();
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

fn system_json(f: &Fake) -> Value {
    let mut boot = json!({
        "BootSourceOverrideTarget": f.target,
        "BootSourceOverrideEnabled": f.enabled,
        "BootSourceOverrideMode": f.mode,
    });
    if let Some(list) = &f.quirks.target_allowed {
        boot["BootSourceOverrideTarget@Redfish.AllowableValues"] = json!(list);
    }
    let mut reset = json!({"target": reset_path()});
    if let Some(list) = &f.quirks.reset_allowed {
        reset["ResetType@Redfish.AllowableValues"] = json!(list);
    }
    if f.quirks.action_info.is_some() {
        reset["@Redfish.ActionInfo"] = json!(format!("{SYSTEM}/ResetActionInfo"));
    }
    let mut v = json!({
        "@odata.id": SYSTEM, "Id": "1", "Manufacturer": "Contoso", "Model": "R1", "SerialNumber": "SN-1",
        "BiosVersion": "2.3.4", "PowerState": f.power, "Boot": boot,
        "Actions": {"#ComputerSystem.Reset": reset},
        "Links": {"ManagedBy": [{"@odata.id": "/redfish/v1/Managers/bmc"}]},
    });
    if let Some(tag) = f.quirks.etag {
        v["@odata.etag"] = json!(tag);
    }
    v
}

async fn handle(
    axum::extract::State(shared): axum::extract::State<Shared>,
    method: AxMethod,
    uri: Uri,
    headers: AxHeaders,
    body: Bytes,
) -> Response {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let seen = Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        authorization: header("authorization"),
        token: header("x-auth-token"),
        if_match: header("if-match"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status: 0,
    };
    let (response, delay) = {
        let mut f = shared.lock().unwrap();
        let (response, delay) = respond(&mut f, &seen);
        let mut seen = seen;
        seen.status = response.status().as_u16();
        f.seen.push(seen);
        (response, delay)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    response
}

/// What the fake answers, and how long it holds the answer back.
type Reply = (Response, Option<Duration>);

/// A reply sent at once.
fn at_once(response: impl IntoResponse) -> Reply {
    (response.into_response(), None)
}

/// A Redfish error that names no property, sent at once.
fn refuse(status: AxStatus, message: &str) -> Reply {
    at_once(redfish_error(status, message, None))
}

fn respond(f: &mut Fake, req: &Seen) -> Reply {
    let q = f.quirks.clone();
    let path = req.path.trim_end_matches('/');
    let method = req.method.as_str();
    // Unauthenticated: the service root and the login.
    if path == "/redfish/v1" && method == "GET" {
        let mut root = json!({"RedfishVersion": "1.15.0", "Vendor": "Contoso", "Product": "BMC 9000",
            "Systems": {"@odata.id": "/redfish/v1/Systems"}});
        if q.sessions {
            root["SessionService"] = json!({"@odata.id": "/redfish/v1/SessionService"});
            root["Links"] =
                json!({"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}});
        }
        return at_once(axum::Json(root));
    }
    if path == "/redfish/v1/SessionService/Sessions" && method == "POST" && q.sessions {
        if req.body["UserName"] != USER || req.body["Password"] != PASSWORD {
            return refuse(AxStatus::UNAUTHORIZED, "Invalid credentials");
        }
        f.logins += 1;
        f.token_uses = 0;
        return at_once((
            AxStatus::CREATED,
            [
                ("X-Auth-Token", TOKEN),
                // Absolute, with the BMC's own name: only the path may be used.
                (
                    "Location",
                    "https://bmc-7.example/redfish/v1/SessionService/Sessions/77",
                ),
            ],
            axum::Json(json!({"@odata.id": "/redfish/v1/SessionService/Sessions/77"})),
        ));
    }
    // Everything else needs credentials.
    let token_ok = q.sessions
        && req.token.as_deref() == Some(TOKEN)
        && q.token_uses.is_none_or(|n| f.token_uses < n);
    let basic_ok =
        !q.basic_refused && req.authorization.as_deref() == Some(basic(USER, PASSWORD).as_str());
    if !(token_ok || basic_ok) {
        return refuse(AxStatus::UNAUTHORIZED, "Unauthorized");
    }
    if token_ok {
        f.token_uses += 1;
    }
    match (method, path) {
        ("DELETE", "/redfish/v1/SessionService/Sessions/77") => {
            f.session_deleted = true;
            at_once(AxStatus::NO_CONTENT)
        }
        ("GET", "/redfish/v1/Systems") if q.redirect_elsewhere => {
            let to = format!("http://localhost:{}/redfish/v1/Systems", f.port);
            at_once(axum::response::Redirect::temporary(&to))
        }
        ("GET", "/redfish/v1/Systems") => {
            let members: Vec<Value> = q.members.iter().map(|m| json!({"@odata.id": m})).collect();
            at_once(axum::Json(json!({"Members": members})))
        }
        ("GET", "/redfish/v1/Managers/bmc") => at_once(axum::Json(
            json!({"FirmwareVersion": "1.2.3", "Model": "iBMC"}),
        )),
        ("GET", p) if p == format!("{SYSTEM}/ResetActionInfo") => {
            let list = q.action_info.clone().unwrap_or_default();
            let body = json!({"Parameters": [{"Name": "ResetType", "AllowableValues": list}]});
            at_once(axum::Json(body))
        }
        ("GET", SYSTEM) => {
            if q.system_not_json {
                return at_once("<html>login</html>");
            }
            if f.power == "PoweringOn" {
                if f.powering_on_left == 0 {
                    f.power = "On".into();
                } else {
                    f.powering_on_left -= 1;
                }
            }
            let mut resp = axum::Json(system_json(f)).into_response();
            if let Some(tag) = q.etag {
                resp.headers_mut().insert("ETag", tag.parse().unwrap());
            }
            at_once(resp)
        }
        ("PATCH", SYSTEM) => patch_system(f, &q, req),
        ("POST", p) if p == reset_path() => {
            if q.reset_error_500 {
                return refuse(
                    AxStatus::INTERNAL_SERVER_ERROR,
                    "The host is in a bad mood.",
                );
            }
            let reset = req.body["ResetType"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !q.reset_ignored {
                f.power = match reset.as_str() {
                    "On" | "ForceOn" | "PowerCycle" | "ForceRestart" if q.powering_on_reads > 0 => {
                        f.powering_on_left = q.powering_on_reads;
                        "PoweringOn".into()
                    }
                    "On" | "ForceOn" | "PowerCycle" | "ForceRestart" => "On".into(),
                    _ => "Off".into(),
                };
            }
            (AxStatus::NO_CONTENT.into_response(), q.reset_reply_delay)
        }
        _ => refuse(AxStatus::NOT_FOUND, "No such resource"),
    }
}

/// PATCH of the system's `Boot` object, with the If-Match and refusal quirks.
fn patch_system(f: &mut Fake, q: &Quirks, req: &Seen) -> Reply {
    f.patches += 1;
    if q.require_if_match {
        match req.if_match.as_deref() {
            None => {
                return refuse(
                    AxStatus::PRECONDITION_REQUIRED,
                    "The request did not provide the required precondition, such as an If-Match header.",
                );
            }
            Some(m) if Some(m) != q.etag => {
                return refuse(AxStatus::PRECONDITION_FAILED, "ETag mismatch");
            }
            _ => {}
        }
    }
    if q.first_patch_412 && f.patches == 1 {
        return refuse(AxStatus::PRECONDITION_FAILED, "The resource has changed");
    }
    let boot = &req.body["Boot"];
    if q.reject_mode && boot.get("BootSourceOverrideMode").is_some() {
        let mode = boot["BootSourceOverrideMode"].as_str().unwrap_or_default();
        return at_once(redfish_error(
            AxStatus::BAD_REQUEST,
            &format!(
                "The value {mode} for the property BootSourceOverrideMode is not in the list of acceptable values."
            ),
            Some("BootSourceOverrideMode"),
        ));
    }
    if q.reject_patch {
        return refuse(AxStatus::BAD_REQUEST, "The property Boot is read-only.");
    }
    if !q.ignore_patch {
        if let Some(t) = boot["BootSourceOverrideTarget"].as_str() {
            f.target = t.into();
        }
        if let Some(e) = boot["BootSourceOverrideEnabled"].as_str() {
            f.enabled = e.into();
        }
        if let Some(m) = boot["BootSourceOverrideMode"].as_str() {
            f.mode = m.into();
        }
    }
    at_once(AxStatus::NO_CONTENT)
}

struct Server {
    shared: Shared,
    port: u16,
}

impl Server {
    async fn start(quirks: Quirks) -> Server {
        let shared: Shared = Arc::new(Mutex::new(Fake {
            quirks,
            seen: Vec::new(),
            power: "Off".into(),
            target: "None".into(),
            enabled: "Disabled".into(),
            mode: "Legacy".into(),
            token_uses: 0,
            logins: 0,
            session_deleted: false,
            patches: 0,
            powering_on_left: 0,
            port: 0,
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        shared.lock().unwrap().port = port;
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { shared, port }
    }

    fn bmc(&self, password: &str, options: RedfishOptions) -> RedfishBmc {
        let address =
            BmcAddress::parse(&format!("redfish+http://127.0.0.1:{}", self.port)).unwrap();
        RedfishBmc::new(&address, USER, Secret::new(password), options).unwrap()
    }

    /// The driver with the right password and quick timeouts.
    fn client(&self) -> RedfishBmc {
        self.bmc(PASSWORD, fast())
    }

    fn fake(&self) -> std::sync::MutexGuard<'_, Fake> {
        self.shared.lock().unwrap()
    }

    fn requests(&self, method: &str, path: &str) -> Vec<Seen> {
        self.fake()
            .seen
            .iter()
            .filter(|s| s.method == method && s.path.trim_end_matches('/') == path)
            .cloned()
            .collect()
    }

    /// The power actions POSTed so far.
    fn resets(&self) -> Vec<Seen> {
        self.requests("POST", &reset_path())
    }
}

/// The system's Reset action, where power actions are POSTed.
fn reset_path() -> String {
    format!("{SYSTEM}/Actions/ComputerSystem.Reset")
}

/// Asserts the error's kind and that its text mentions each of `fragments`.
#[track_caller]
fn assert_error(err: &BmcError, kind: ErrorKind, fragments: &[&str]) {
    assert_eq!(err.kind(), kind, "{err}");
    for fragment in fragments {
        assert!(
            err.to_string().contains(fragment),
            "no {fragment:?} in: {err}"
        );
    }
}

fn fast() -> RedfishOptions {
    RedfishOptions {
        request_timeout: Duration::from_secs(5),
        power_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(20),
        ..RedfishOptions::default()
    }
}

fn pxe_once() -> BootOverride {
    BootOverride {
        device: crate::BootDevice::Pxe,
        persistent: false,
        mode: crate::BootMode::Uefi,
    }
}

#[tokio::test]
async fn session_login_is_used_and_deleted_on_close() {
    let srv = Server::start(Quirks {
        sessions: true,
        ..Quirks::default()
    })
    .await;
    let bmc = srv.client();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(srv.fake().logins, 1);
    let text = format!("{bmc:?}");
    assert!(!text.contains(PASSWORD) && !text.contains(TOKEN), "{text}");
    for s in srv
        .fake()
        .seen
        .iter()
        .filter(|s| s.path.starts_with("/redfish/v1/Systems"))
    {
        assert_eq!(s.token.as_deref(), Some(TOKEN), "{s:?}");
        assert_eq!(s.authorization, None, "{s:?}");
    }
    bmc.close().await.unwrap();
    assert!(srv.fake().session_deleted);
    let delete = srv.requests("DELETE", "/redfish/v1/SessionService/Sessions/77");
    assert_eq!(delete.len(), 1);
    assert_eq!(delete[0].token.as_deref(), Some(TOKEN));
}

#[tokio::test]
async fn expired_session_is_replaced_once() {
    let srv = Server::start(Quirks {
        sessions: true,
        token_uses: Some(2),
        ..Quirks::default()
    })
    .await;
    let bmc = srv.client();
    for _ in 0..3 {
        assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    }
    assert_eq!(srv.fake().logins, 2);
}

#[tokio::test]
async fn refused_login_is_an_auth_error_without_fallback() {
    let srv = Server::start(Quirks {
        sessions: true,
        ..Quirks::default()
    })
    .await;
    let wrong = "wrong-secret";
    let err = srv
        .bmc(wrong, fast())
        .power(PowerAction::On)
        .await
        .unwrap_err();
    assert_error(&err, ErrorKind::Auth, &[]);
    assert!(!format!("{err} {err:?}").contains(wrong), "{err:?}");
    assert_eq!(
        srv.requests("POST", "/redfish/v1/SessionService/Sessions")
            .len(),
        1
    );
    assert!(srv.fake().seen.iter().all(|s| s.authorization.is_none()));
    assert!(srv.resets().is_empty());
}

#[tokio::test]
async fn basic_auth_401_is_not_retried() {
    let srv = Server::start(Quirks::default()).await;
    let err = srv
        .bmc("wrong-secret", fast())
        .power_state()
        .await
        .unwrap_err();
    assert_error(&err, ErrorKind::Auth, &[]);
    let refused = srv.fake().seen.iter().filter(|s| s.status == 401).count();
    assert_eq!(refused, 1);
    // The right password over Basic.
    let bmc = srv.client();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert!(srv.fake().seen.last().unwrap().authorization.is_some());
}

#[tokio::test]
async fn if_match_carries_the_etag_and_a_stale_one_is_refreshed_once() {
    let tag = "W/\"1682532272\"";
    let srv = Server::start(Quirks {
        etag: Some(tag),
        require_if_match: true,
        first_patch_412: true,
        ..Quirks::default()
    })
    .await;
    srv.client().set_boot(pxe_once()).await.unwrap();
    let patches = srv.requests("PATCH", SYSTEM);
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert!(patches.iter().all(|p| p.if_match.as_deref() == Some(tag)));
    assert_eq!(srv.fake().target, "Pxe");
}

#[tokio::test]
async fn precondition_required_without_etag_is_rejected_with_the_bmc_text() {
    let srv = Server::start(Quirks {
        require_if_match: true,
        ..Quirks::default()
    })
    .await;
    let err = srv.client().set_boot(pxe_once()).await.unwrap_err();
    assert_error(&err, ErrorKind::Rejected, &["required precondition", "428"]);
}

#[tokio::test]
async fn refused_boot_mode_is_retried_once_without_it() {
    let srv = Server::start(Quirks {
        reject_mode: true,
        ..Quirks::default()
    })
    .await;
    // The fake reports Legacy; UEFI is wanted, so the first PATCH carries the mode.
    srv.client().set_boot(pxe_once()).await.unwrap();
    let patches = srv.requests("PATCH", SYSTEM);
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert_eq!(
        patches[0].body,
        json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once",
                        "BootSourceOverrideMode": "UEFI"}})
    );
    assert_eq!(
        patches[1].body,
        json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})
    );
    let f = srv.fake();
    assert_eq!((f.target.as_str(), f.enabled.as_str()), ("Pxe", "Once"));
}

#[tokio::test]
async fn mode_already_set_is_not_sent_and_other_400s_are_not_retried() {
    let srv = Server::start(Quirks {
        reject_patch: true,
        ..Quirks::default()
    })
    .await;
    let legacy = BootOverride {
        mode: crate::BootMode::Legacy,
        ..pxe_once()
    };
    let err = srv.client().set_boot(legacy).await.unwrap_err();
    assert_error(
        &err,
        ErrorKind::Rejected,
        &["The property Boot is read-only."],
    );
    let patches = srv.requests("PATCH", SYSTEM);
    assert_eq!(patches.len(), 1);
    assert!(
        patches[0].body["Boot"]
            .get("BootSourceOverrideMode")
            .is_none()
    );
}

#[tokio::test]
async fn boot_target_outside_the_allowed_list_is_unsupported_and_not_sent() {
    let srv = Server::start(Quirks {
        target_allowed: Some(vec!["None", "Pxe", "Hdd"]),
        ..Quirks::default()
    })
    .await;
    let bios = BootOverride {
        device: crate::BootDevice::Bios,
        ..pxe_once()
    };
    let err = srv.client().set_boot(bios).await.unwrap_err();
    assert_error(
        &err,
        ErrorKind::Unsupported,
        &["BiosSetup", "None, Pxe, Hdd"],
    );
    assert!(srv.requests("PATCH", SYSTEM).is_empty());
}

#[tokio::test]
async fn boot_accepted_but_ignored_is_reported() {
    let srv = Server::start(Quirks {
        ignore_patch: true,
        ..Quirks::default()
    })
    .await;
    let err = srv.client().set_boot(pxe_once()).await.unwrap_err();
    assert_error(&err, ErrorKind::Rejected, &["reads back \"None\""]);
}

#[tokio::test]
async fn reset_types_come_from_action_info_when_not_inline() {
    let srv = Server::start(Quirks {
        action_info: Some(vec!["ForceOn", "ForceOff"]),
        ..Quirks::default()
    })
    .await;
    srv.client().power(PowerAction::On).await.unwrap();
    let posts = srv.resets();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].body, json!({"ResetType": "ForceOn"}));
}

#[tokio::test]
async fn disallowed_reset_is_unsupported_naming_the_allowed_ones() {
    let srv = Server::start(Quirks {
        reset_allowed: Some(vec!["On", "ForceOff"]),
        ..Quirks::default()
    })
    .await;
    let bmc = srv.client();
    bmc.power(PowerAction::On).await.unwrap();
    let err = bmc.power(PowerAction::SoftOff).await.unwrap_err();
    assert_error(
        &err,
        ErrorKind::Unsupported,
        &["GracefulShutdown", "On, ForceOff"],
    );
    assert_eq!(srv.resets().len(), 1);
}

#[tokio::test]
async fn power_never_confirmed_is_a_timeout_and_never_resent() {
    let srv = Server::start(Quirks {
        reset_ignored: true,
        ..Quirks::default()
    })
    .await;
    let err = srv.client().power(PowerAction::On).await.unwrap_err();
    assert_error(&err, ErrorKind::Timeout, &["ResetType On"]);
    assert_eq!(srv.resets().len(), 1);
}

#[tokio::test]
async fn lost_reset_reply_reads_the_state_instead_of_resending() {
    let srv = Server::start(Quirks {
        reset_reply_delay: Some(Duration::from_secs(3)),
        ..Quirks::default()
    })
    .await;
    let bmc = srv.bmc(
        PASSWORD,
        RedfishOptions {
            request_timeout: Duration::from_millis(500),
            ..fast()
        },
    );
    bmc.power(PowerAction::Cycle).await.unwrap();
    assert_eq!(srv.resets().len(), 1);
    assert_eq!(srv.fake().power, "On");
}

#[tokio::test]
async fn transitional_power_state_is_waited_out_not_resent() {
    let srv = Server::start(Quirks {
        powering_on_reads: 3,
        ..Quirks::default()
    })
    .await;
    let bmc = srv.client();
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(srv.fake().power, "On");
    // A second On while PoweringOn would be refused by real BMCs; ours waits.
    srv.fake().power = "PoweringOn".into();
    srv.fake().powering_on_left = 2;
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(srv.resets().len(), 1);
}

#[tokio::test]
async fn server_error_on_reset_is_rejected_with_the_redfish_message() {
    let srv = Server::start(Quirks {
        reset_error_500: true,
        ..Quirks::default()
    })
    .await;
    let err = srv.client().power(PowerAction::On).await.unwrap_err();
    assert_error(
        &err,
        ErrorKind::Rejected,
        &["The host is in a bad mood.", "500"],
    );
}

#[tokio::test]
async fn system_choice_and_bodies_that_are_not_redfish() {
    let srv = Server::start(Quirks {
        members: vec![SYSTEM, "/redfish/v1/Systems/2"],
        ..Quirks::default()
    })
    .await;
    let err = srv.client().power_state().await.unwrap_err();
    assert_error(&err, ErrorKind::Unsupported, &["/redfish/v1/Systems/2"]);
    let one = srv.bmc(
        PASSWORD,
        RedfishOptions {
            system: Some("1".into()),
            ..fast()
        },
    );
    assert_eq!(one.power_state().await.unwrap(), PowerState::Off);
    let gone = srv.bmc(
        PASSWORD,
        RedfishOptions {
            system: Some("7".into()),
            ..fast()
        },
    );
    let err = gone.power_state().await.unwrap_err();
    assert_error(&err, ErrorKind::Unsupported, &[]);

    let html = Server::start(Quirks {
        system_not_json: true,
        ..Quirks::default()
    })
    .await;
    let err = html.bmc(PASSWORD, fast()).power_state().await.unwrap_err();
    assert_error(&err, ErrorKind::Protocol, &["<html>login</html>"]);
}

#[tokio::test]
async fn identify_combines_system_service_root_and_manager() {
    let srv = Server::start(Quirks::default()).await;
    let info = srv.client().identify().await.unwrap();
    assert_eq!(
        info,
        BmcInfo {
            protocol: "redfish".into(),
            vendor: "Contoso".into(),
            model: "R1".into(),
            firmware: "1.2.3 (BIOS 2.3.4)".into(),
            system: format!("{SYSTEM} (the only system)"),
            serial: "SN-1".into(),
        }
    );
}

#[test]
fn ipmi_addresses_and_bad_ca_are_refused_at_construction() {
    let ipmi = BmcAddress::parse("ipmi://10.0.0.1").unwrap();
    let err = RedfishBmc::new(
        &ipmi,
        USER,
        Secret::new(PASSWORD),
        RedfishOptions::default(),
    )
    .unwrap_err();
    assert_error(&err, ErrorKind::Unsupported, &[]);
    let https = BmcAddress::parse("https://10.0.0.1").unwrap();
    let err = RedfishBmc::new(
        &https,
        USER,
        Secret::new(PASSWORD),
        RedfishOptions {
            ca_pem: Some("-----BEGIN NOTHING-----".into()),
            ..RedfishOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("CA certificate"), "{err}");
}

#[tokio::test]
async fn redirect_to_another_host_is_not_followed() {
    let srv = Server::start(Quirks {
        redirect_elsewhere: true,
        ..Quirks::default()
    })
    .await;
    let err = srv.client().power_state().await.unwrap_err();
    assert_error(&err, ErrorKind::Protocol, &["another origin"]);
    // Nothing reached the other name (same server, so it would show up here).
    assert_eq!(srv.requests("GET", "/redfish/v1/Systems").len(), 1);
}

/// The requests the fake has seen, as "METHOD path", from the `from`-th on.
fn trail(srv: &Server, from: usize) -> Vec<String> {
    srv.fake().seen[from..]
        .iter()
        .map(|s| format!("{} {}", s.method, s.path.trim_end_matches('/')))
        .collect()
}

fn with_hint(system: &str, sessions: Option<&str>) -> RedfishOptions {
    RedfishOptions {
        hint: Some(RedfishHint {
            system: system.into(),
            sessions: sessions.map(str::to_string),
            chosen: None,
        }),
        ..fast()
    }
}

#[tokio::test]
async fn a_hint_from_an_earlier_driver_skips_discovery() {
    for sessions in [false, true] {
        let srv = Server::start(Quirks {
            sessions,
            ..Quirks::default()
        })
        .await;
        let first = srv.client();
        assert_eq!(first.power_state().await.unwrap(), PowerState::Off);
        first.close().await.unwrap();
        let hint = first.hint().expect("a hint after a call");
        let collection = sessions.then(|| "/redfish/v1/SessionService/Sessions".to_string());
        assert_eq!(
            hint,
            RedfishHint {
                system: SYSTEM.into(),
                sessions: collection.clone(),
                chosen: Some(ChosenBy::Only),
            }
        );
        let text = Bmc::hint(&first).unwrap();
        assert!(!text.contains(PASSWORD) && !text.contains(TOKEN), "{text}");

        let seen = srv.fake().seen.len();
        let second = srv.bmc(
            PASSWORD,
            RedfishOptions {
                hint: Some(hint),
                ..fast()
            },
        );
        assert_eq!(second.power_state().await.unwrap(), PowerState::Off);
        let expected: Vec<String> = if sessions {
            vec![
                "POST /redfish/v1/SessionService/Sessions".into(),
                format!("GET {SYSTEM}"),
            ]
        } else {
            vec![format!("GET {SYSTEM}")]
        };
        assert_eq!(trail(&srv, seen), expected, "sessions {sessions}");
        second.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_stale_system_path_is_discovered_again() {
    let srv = Server::start(Quirks::default()).await;
    let bmc = srv.bmc(PASSWORD, with_hint("/redfish/v1/Systems/gone", None));
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(
        trail(&srv, 0),
        [
            "GET /redfish/v1/Systems/gone".to_string(),
            "GET /redfish/v1".into(),
            "GET /redfish/v1/Systems".into(),
            format!("GET {SYSTEM}"),
        ]
    );
    assert_eq!(bmc.hint().unwrap().system, SYSTEM);
    // Confirmed now: a later failure is not blamed on the hint.
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(srv.fake().power, "On");
}

#[tokio::test]
async fn a_hint_for_basic_on_a_bmc_that_now_wants_sessions_logs_in() {
    let srv = Server::start(Quirks {
        sessions: true,
        basic_refused: true,
        ..Quirks::default()
    })
    .await;
    let bmc = srv.bmc(PASSWORD, with_hint(SYSTEM, None));
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(srv.fake().logins, 1);
    assert_eq!(
        bmc.hint().unwrap().sessions.as_deref(),
        Some("/redfish/v1/SessionService/Sessions")
    );
    bmc.close().await.unwrap();
    assert!(srv.fake().session_deleted);
}

#[tokio::test]
async fn a_hint_does_not_hide_a_wrong_password() {
    for sessions in [false, true] {
        let srv = Server::start(Quirks {
            sessions,
            ..Quirks::default()
        })
        .await;
        let collection = sessions.then_some("/redfish/v1/SessionService/Sessions");
        let bmc = srv.bmc("wrong-pass", with_hint(SYSTEM, collection));
        let err = bmc.power_state().await.unwrap_err();
        assert_error(&err, ErrorKind::Auth, &[]);
        assert!(!err.to_string().contains("wrong-pass"), "{err}");
    }
}
