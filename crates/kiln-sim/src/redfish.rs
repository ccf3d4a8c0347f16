//! Simulated Redfish BMCs: one in-process HTTP listener for every system, answering like
//! sushy-tools' fake driver does for what Kiln uses (service root without sessions, so HTTP
//! Basic; `Systems/{id}` with `PowerState`, `Boot` and the `#ComputerSystem.Reset` action;
//! `ComputerSystem.Reset`; the `Boot` override PATCH; `EthernetInterfaces` with the MAC).
//! A power-on or restart starts the machine's boot through its [`Chassis`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;

/// A machine's power as its BMC sets it. `boots` counts power-ons and restarts: a machine
/// starts booting whenever it changes while `on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Power {
    pub on: bool,
    pub boots: u64,
}

/// The machine side of a BMC: its power line.
#[derive(Debug)]
pub struct Chassis {
    power: watch::Sender<Power>,
}

impl Default for Chassis {
    fn default() -> Self {
        Chassis {
            power: watch::Sender::new(Power::default()),
        }
    }
}

impl Chassis {
    pub fn subscribe(&self) -> watch::Receiver<Power> {
        self.power.subscribe()
    }

    pub fn power(&self) -> Power {
        *self.power.borrow()
    }

    /// Applies a Redfish ResetType; `Err` names the types this BMC takes.
    pub fn reset(&self, reset_type: &str) -> Result<(), String> {
        let mut result = Ok(());
        self.power.send_if_modified(|p| {
            let before = *p;
            result = apply_reset(p, reset_type);
            *p != before
        });
        result
    }

    /// The machine powered itself off (the agent's poweroff action, a shutdown).
    pub fn off(&self) {
        self.power
            .send_if_modified(|p| std::mem::replace(&mut p.on, false));
    }
}

pub const RESET_TYPES: [&str; 7] = [
    "On",
    "ForceOn",
    "ForceOff",
    "GracefulShutdown",
    "GracefulRestart",
    "ForceRestart",
    "PowerCycle",
];

/// What each ResetType does to the power, as sushy-tools' fake driver: On of a machine that is
/// on, or Off of one that is off, changes nothing; a restart of a machine that is off powers
/// it on.
pub fn apply_reset(p: &mut Power, reset_type: &str) -> Result<(), String> {
    match reset_type {
        "On" | "ForceOn" => {
            if !p.on {
                p.on = true;
                p.boots += 1;
            }
        }
        "ForceOff" | "GracefulShutdown" => p.on = false,
        "GracefulRestart" | "ForceRestart" | "PowerCycle" => {
            p.on = true;
            p.boots += 1;
        }
        other => {
            return Err(format!(
                "ResetType {other:?} is not one of {}",
                RESET_TYPES.join(", ")
            ));
        }
    }
    Ok(())
}

/// One system behind the simulated BMC.
#[derive(Debug)]
pub struct SimSystem {
    pub id: String,
    pub name: String,
    pub mac: String,
    pub chassis: Arc<Chassis>,
    boot: Mutex<BootOverride>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct BootOverride {
    target: String,
    enabled: String,
    mode: String,
}

impl SimSystem {
    pub fn new(id: &str, name: &str, mac: &str, chassis: Arc<Chassis>) -> SimSystem {
        SimSystem {
            id: id.into(),
            name: name.into(),
            mac: mac.into(),
            chassis,
            boot: Mutex::new(BootOverride {
                target: "None".into(),
                enabled: "Disabled".into(),
                mode: "Legacy".into(),
            }),
        }
    }

    fn boot(&self) -> std::sync::MutexGuard<'_, BootOverride> {
        self.boot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The boot override's target and whether it is armed (for tests and the report).
    pub fn boot_override(&self) -> (String, String) {
        let b = self.boot();
        (b.target.clone(), b.enabled.clone())
    }
}

/// The simulated BMC service: systems by id, one user.
pub struct SimBmc {
    systems: HashMap<String, Arc<SimSystem>>,
    /// `Basic base64(user:password)`.
    authorization: String,
}

impl SimBmc {
    pub fn new(systems: Vec<Arc<SimSystem>>, user: &str, password: &str) -> Arc<SimBmc> {
        use base64::Engine;
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Arc::new(SimBmc {
            systems: systems.into_iter().map(|s| (s.id.clone(), s)).collect(),
            authorization: format!("Basic {creds}"),
        })
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/redfish/v1", get(service_root))
            .route("/redfish/v1/", get(service_root))
            .route("/redfish/v1/Systems", get(systems))
            .route("/redfish/v1/Systems/{id}", get(system).patch(patch_system))
            .route(
                "/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset",
                post(reset),
            )
            .route("/redfish/v1/Systems/{id}/EthernetInterfaces", get(nics))
            .route(
                "/redfish/v1/Systems/{id}/EthernetInterfaces/{nic}",
                get(nic),
            )
            .with_state(self)
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given == Some(self.authorization.as_str()) {
            Ok(())
        } else {
            Err(Denied::Unauthorized)
        }
    }

    fn system(&self, headers: &HeaderMap, id: &str) -> Result<Arc<SimSystem>, Denied> {
        self.check(headers)?;
        self.systems
            .get(id)
            .cloned()
            .ok_or_else(|| Denied::NoSystem(id.to_string()))
    }
}

/// Why a request gets no resource.
#[derive(Debug)]
enum Denied {
    Unauthorized,
    NoSystem(String),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"kiln-sim\"")],
                "unauthorized",
            )
                .into_response(),
            Denied::NoSystem(id) => error(StatusCode::NOT_FOUND, &format!("no system {id}")),
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": "Base.1.0.GeneralError", "message": message}})),
    )
        .into_response()
}

type Shared = State<Arc<SimBmc>>;

async fn service_root(State(bmc): Shared, headers: HeaderMap) -> Response {
    if let Err(r) = bmc.check(&headers) {
        return r.into_response();
    }
    axum::Json(json!({
        "@odata.id": "/redfish/v1/", "Id": "RedvishService", "Name": "Kiln simulated BMC",
        "RedfishVersion": "1.5.0", "Vendor": "Kiln", "Product": "kiln-sim",
        "Systems": {"@odata.id": "/redfish/v1/Systems"},
    }))
    .into_response()
}

async fn systems(State(bmc): Shared, headers: HeaderMap) -> Response {
    if let Err(r) = bmc.check(&headers) {
        return r.into_response();
    }
    let mut ids: Vec<&String> = bmc.systems.keys().collect();
    ids.sort();
    let members: Vec<Value> = ids
        .iter()
        .map(|id| json!({"@odata.id": format!("/redfish/v1/Systems/{id}")}))
        .collect();
    axum::Json(json!({
        "@odata.id": "/redfish/v1/Systems", "Name": "Computer System Collection",
        "Members@odata.count": members.len(), "Members": members,
    }))
    .into_response()
}

fn system_json(s: &SimSystem) -> Value {
    let path = format!("/redfish/v1/Systems/{}", s.id);
    let b = s.boot().clone();
    json!({
        "@odata.id": path, "Id": s.id, "Name": s.name, "UUID": s.id,
        "Manufacturer": "Kiln", "Model": "simulated machine",
        "PowerState": if s.chassis.power().on { "On" } else { "Off" },
        "Boot": {
            "BootSourceOverrideTarget": b.target,
            "BootSourceOverrideEnabled": b.enabled,
            "BootSourceOverrideMode": b.mode,
            "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Hdd", "Cd"],
        },
        "EthernetInterfaces": {"@odata.id": format!("{path}/EthernetInterfaces")},
        "Actions": {"#ComputerSystem.Reset": {
            "target": format!("{path}/Actions/ComputerSystem.Reset"),
            "ResetType@Redfish.AllowableValues": RESET_TYPES,
        }},
    })
}

async fn system(State(bmc): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    match bmc.system(&headers, &id) {
        Ok(s) => axum::Json(system_json(&s)).into_response(),
        Err(r) => r.into_response(),
    }
}

/// Applies a PATCH body's `Boot` object; `Err` says which property is wrong.
fn patch_boot(b: &mut BootOverride, body: &Value) -> Result<(), String> {
    let Some(boot) = body.get("Boot").and_then(Value::as_object) else {
        return Err("the body has no Boot object".into());
    };
    let mut next = b.clone();
    for (key, value) in boot {
        let v = value
            .as_str()
            .ok_or_else(|| format!("{key} is not a string"))?
            .to_string();
        let (field, allowed): (&mut String, &[&str]) = match key.as_str() {
            "BootSourceOverrideTarget" => (&mut next.target, &["None", "Pxe", "Hdd", "Cd"]),
            "BootSourceOverrideEnabled" => (&mut next.enabled, &["Disabled", "Once", "Continuous"]),
            "BootSourceOverrideMode" => (&mut next.mode, &["Legacy", "UEFI"]),
            other => return Err(format!("property {other} is not writable")),
        };
        if !allowed.contains(&v.as_str()) {
            return Err(format!("{key} {v:?} is not one of {}", allowed.join(", ")));
        }
        *field = v;
    }
    *b = next;
    Ok(())
}

async fn patch_system(
    State(bmc): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let s = match bmc.system(&headers, &id) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not JSON: {e}")),
    };
    match patch_boot(&mut s.boot(), &body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

async fn reset(
    State(bmc): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let s = match bmc.system(&headers, &id) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(t) = body.get("ResetType").and_then(Value::as_str) else {
        return error(StatusCode::BAD_REQUEST, "ResetType is missing");
    };
    match s.chassis.reset(t) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

async fn nics(State(bmc): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    match bmc.system(&headers, &id) {
        Ok(s) => axum::Json(json!({
            "@odata.id": format!("/redfish/v1/Systems/{}/EthernetInterfaces", s.id),
            "Members@odata.count": 1,
            "Members": [{"@odata.id": format!("/redfish/v1/Systems/{}/EthernetInterfaces/nic0", s.id)}],
        }))
        .into_response(),
        Err(r) => r.into_response(),
    }
}

async fn nic(
    State(bmc): Shared,
    headers: HeaderMap,
    Path((id, nic)): Path<(String, String)>,
) -> Response {
    match bmc.system(&headers, &id) {
        Ok(s) if nic == "nic0" => axum::Json(json!({
            "@odata.id": format!("/redfish/v1/Systems/{}/EthernetInterfaces/nic0", s.id),
            "Id": "nic0", "MACAddress": s.mac, "PermanentMACAddress": s.mac,
        }))
        .into_response(),
        Ok(_) => error(StatusCode::NOT_FOUND, "no such interface"),
        Err(r) => r.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_types_move_the_power_as_sushy_tools_does() {
        let mut p = Power::default();
        apply_reset(&mut p, "ForceOff").unwrap();
        assert_eq!(
            p,
            Power {
                on: false,
                boots: 0
            }
        );
        apply_reset(&mut p, "On").unwrap();
        assert_eq!(p, Power { on: true, boots: 1 });
        apply_reset(&mut p, "On").unwrap();
        assert_eq!(p.boots, 1, "On of a machine that is on does not restart it");
        apply_reset(&mut p, "ForceRestart").unwrap();
        assert_eq!(p, Power { on: true, boots: 2 });
        apply_reset(&mut p, "GracefulShutdown").unwrap();
        assert!(!p.on);
        assert!(apply_reset(&mut p, "Nmi").unwrap_err().contains("ForceOn"));
    }

    #[test]
    fn boot_override_patch_checks_each_property() {
        let s = SimSystem::new("s1", "n1", "52:54:00:00:00:01", Arc::default());
        let mut b = s.boot();
        patch_boot(
            &mut b,
            &json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "Legacy"}}),
        )
        .unwrap();
        assert_eq!((b.target.as_str(), b.enabled.as_str()), ("Pxe", "Once"));
        let bad = patch_boot(
            &mut b,
            &json!({"Boot": {"BootSourceOverrideTarget": "Floppy"}}),
        );
        assert!(bad.unwrap_err().contains("Floppy"));
        assert_eq!(b.target, "Pxe", "a refused PATCH changes nothing");
        assert!(patch_boot(&mut b, &json!({"Power": 1})).is_err());
    }

    /// Kiln's own Redfish driver powers a simulated system on and sets its next boot.
    #[tokio::test]
    async fn kilns_redfish_driver_drives_the_simulated_bmc() {
        use kiln_bmc::{Bmc, BootDevice, BootMode, BootOverride as Ov, PowerAction, PowerState};
        use kiln_bmc::{RedfishBmc, RedfishOptions};
        use kiln_model::Secret;
        let chassis = Arc::new(Chassis::default());
        let sys = Arc::new(SimSystem::new(
            "d3e0c0de-0001",
            "n1",
            "52:54:00:00:00:01",
            chassis.clone(),
        ));
        let bmc = SimBmc::new(vec![sys.clone()], "admin", "pw-123456");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, bmc.router()).await });
        let addr = kiln_bmc::BmcAddress::parse(&format!(
            "redfish+http://127.0.0.1:{port}/redfish/v1/Systems/d3e0c0de-0001"
        ))
        .unwrap();
        let open = |password: &str| {
            let opts = RedfishOptions {
                system: addr.path.clone(),
                ..RedfishOptions::default()
            };
            RedfishBmc::new(&addr, "admin", Secret::new(password), opts).unwrap()
        };
        let driver = open("pw-123456");
        let mut power = chassis.subscribe();
        assert_eq!(driver.power_state().await.unwrap(), PowerState::Off);
        driver
            .set_boot(Ov {
                device: BootDevice::Pxe,
                mode: BootMode::Legacy,
                persistent: false,
            })
            .await
            .unwrap();
        assert_eq!(sys.boot_override(), ("Pxe".into(), "Once".into()));
        driver.power(PowerAction::On).await.unwrap();
        power.changed().await.unwrap();
        assert_eq!(*power.borrow(), Power { on: true, boots: 1 });
        assert_eq!(driver.power_state().await.unwrap(), PowerState::On);
        let wrong = open("nope-nope");
        assert!(wrong.power_state().await.is_err());
    }
}
