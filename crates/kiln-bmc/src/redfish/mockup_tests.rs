//! The driver against small mockups in the shapes of DMTF's published ones (public-bladed,
//! public-rackmount1) and of JSON captured from multi-node BMCs (Cray EX `Node0`/`Node1`,
//! 2U4N enclosures, partitions), served the way DMTF's redfishMockupServer.py serves a
//! mockup tree: GET of a path answers that resource, PATCH merges into it, a Reset POST sets
//! `PowerState`, and every request is logged, so each test asserts which system a command
//! reached. The documents are written here, in those shapes; nothing is copied in.

use super::*;
use crate::{BootDevice, BootMode, ErrorKind, OpenOptions};
use axum::body::Bytes;
use axum::http::{Method as AxMethod, StatusCode as AxStatus, Uri};
use axum::response::{IntoResponse, Response};
use kiln_model::hardware::BmcEndpoint;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

const USER: &str = "root";
const PASSWORD: &str = "mockup-pw";

/// A mockup: resources by path (no trailing slash) and the request log.
#[derive(Default)]
struct Tree {
    docs: HashMap<String, Value>,
    log: Vec<String>,
}

type Shared = Arc<Mutex<Tree>>;

fn key(path: &str) -> String {
    path.trim_end_matches('/').to_string()
}

async fn serve_tree(
    axum::extract::State(tree): axum::extract::State<Shared>,
    method: AxMethod,
    uri: Uri,
    body: Bytes,
) -> Response {
    let mut t = tree.lock().unwrap();
    let path = key(uri.path());
    t.log.push(format!("{method} {path}"));
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match method.as_str() {
        "GET" => match t.docs.get(&path) {
            Some(doc) => axum::Json(doc.clone()).into_response(),
            None => AxStatus::NOT_FOUND.into_response(),
        },
        "PATCH" => match t.docs.get_mut(&path) {
            Some(doc) => {
                merge(doc, &body);
                AxStatus::NO_CONTENT.into_response()
            }
            None => AxStatus::NOT_FOUND.into_response(),
        },
        "POST" if path == "/redfish/v1/SessionService/Sessions" => (
            AxStatus::CREATED,
            [
                ("X-Auth-Token", "mockup-token"),
                ("Location", "/redfish/v1/SessionService/Sessions/1"),
            ],
            axum::Json(json!({"@odata.id": "/redfish/v1/SessionService/Sessions/1"})),
        )
            .into_response(),
        "DELETE" if path == "/redfish/v1/SessionService/Sessions/1" => {
            AxStatus::NO_CONTENT.into_response()
        }
        "POST" if path.ends_with("/Actions/ComputerSystem.Reset") => {
            let system = path.trim_end_matches("/Actions/ComputerSystem.Reset");
            let state = match body["ResetType"].as_str().unwrap_or_default() {
                "On" | "ForceOn" | "ForceRestart" | "PowerCycle" => "On",
                _ => "Off",
            };
            match t.docs.get_mut(system) {
                Some(doc) => {
                    doc["PowerState"] = json!(state);
                    AxStatus::NO_CONTENT.into_response()
                }
                None => AxStatus::NOT_FOUND.into_response(),
            }
        }
        _ => AxStatus::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// JSON merge patch, as a mockup server applies PATCH.
fn merge(doc: &mut Value, patch: &Value) {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            for (k, v) in p {
                merge(d.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (d, p) => *d = p.clone(),
    }
}

struct Mockup {
    tree: Shared,
    port: u16,
}

impl Mockup {
    async fn start(docs: HashMap<String, Value>) -> Mockup {
        let tree: Shared = Arc::new(Mutex::new(Tree {
            docs,
            log: Vec::new(),
        }));
        let app = axum::Router::new()
            .fallback(serve_tree)
            .with_state(tree.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Mockup { tree, port }
    }

    fn url(&self) -> String {
        format!("redfish+http://127.0.0.1:{}", self.port)
    }

    /// A driver the way Kiln opens one: bmc_ip (with an optional path), the machine's MAC and
    /// label, and what an earlier driver learnt.
    async fn open(&self, path: &str, opts: OpenOptions) -> Box<dyn Bmc> {
        let endpoint = BmcEndpoint {
            address: format!("{}{path}", self.url()),
            username: USER.into(),
            password: Secret::new(PASSWORD),
        };
        let opts = OpenOptions {
            request_timeout: Duration::from_secs(5),
            power_timeout: Duration::from_secs(3),
            ..opts
        };
        crate::open(&endpoint, &opts).await.unwrap()
    }

    fn log(&self) -> Vec<String> {
        self.tree.lock().unwrap().log.clone()
    }

    fn clear_log(&self) {
        self.tree.lock().unwrap().log.clear();
    }

    /// The logged requests that change a system (PATCH, POST; logins aside).
    fn changes(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| l.starts_with("PATCH") || l.starts_with("POST"))
            .filter(|l| !l.contains("/SessionService/"))
            .collect()
    }

    fn doc(&self, path: &str) -> Value {
        self.tree.lock().unwrap().docs[&key(path)].clone()
    }
}

fn by_mac(mac: &str) -> OpenOptions {
    OpenOptions {
        mac: Some(mac.into()),
        ..OpenOptions::default()
    }
}

fn labelled(system: &str, mac: &str) -> OpenOptions {
    OpenOptions {
        system: Some(system.into()),
        ..by_mac(mac)
    }
}

fn link(path: &str) -> Value {
    json!({ "@odata.id": path })
}

/// A service root, a Systems collection of `systems` and each system document.
fn service(systems: &[(&str, Value)], sessions: bool) -> HashMap<String, Value> {
    let mut docs = HashMap::new();
    let mut root = json!({
        "@odata.type": "#ServiceRoot.v1_18_0.ServiceRoot", "@odata.id": "/redfish/v1/",
        "Id": "RootService", "RedfishVersion": "1.15.0",
        "Systems": link("/redfish/v1/Systems"), "Managers": link("/redfish/v1/Managers"),
    });
    if sessions {
        root["SessionService"] = link("/redfish/v1/SessionService");
        root["Links"] = json!({"Sessions": link("/redfish/v1/SessionService/Sessions")});
    }
    docs.insert("/redfish/v1".into(), root);
    let members: Vec<Value> = systems
        .iter()
        .map(|(id, _)| link(&format!("/redfish/v1/Systems/{id}")))
        .collect();
    docs.insert(
        "/redfish/v1/Systems".into(),
        json!({"@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
               "Name": "Computer System Collection", "Members@odata.count": members.len(),
               "Members": members, "@odata.id": "/redfish/v1/Systems"}),
    );
    for (id, doc) in systems {
        let path = format!("/redfish/v1/Systems/{id}");
        let mut doc = doc.clone();
        doc["@odata.id"] = json!(path);
        doc["Id"] = json!(id);
        docs.insert(path, doc);
    }
    docs
}

/// A system's EthernetInterfaces collection and members: (Id, MACAddress, PermanentMACAddress).
fn nics(docs: &mut HashMap<String, Value>, system: &str, list: &[(&str, &str, Option<&str>)]) {
    let base = format!("/redfish/v1/Systems/{system}/EthernetInterfaces");
    let members: Vec<Value> = list
        .iter()
        .map(|(id, _, _)| link(&format!("{base}/{id}")))
        .collect();
    docs.insert(
        base.clone(),
        json!({"@odata.type": "#EthernetInterfaceCollection.EthernetInterfaceCollection",
               "Members": members, "@odata.id": base}),
    );
    for (id, mac, permanent) in list {
        let mut nic = json!({"@odata.type": "#EthernetInterface.v1_12_4.EthernetInterface",
            "@odata.id": format!("{base}/{id}"), "Id": id, "MACAddress": mac});
        if let Some(p) = permanent {
            nic["PermanentMACAddress"] = json!(p);
        }
        docs.insert(format!("{base}/{id}"), nic);
    }
    docs.get_mut(&format!("/redfish/v1/Systems/{system}"))
        .unwrap()["EthernetInterfaces"] = link(&base);
}

fn reset_with(allowed: &[&str], system: &str) -> Value {
    json!({"#ComputerSystem.Reset": {
        "target": format!("/redfish/v1/Systems/{system}/Actions/ComputerSystem.Reset"),
        "ResetType@Redfish.AllowableValues": allowed}})
}

/// public-bladed: four blades behind one enclosure BMC; Boot with allowable targets and no
/// mode; no EthernetInterfaces at all.
fn bladed() -> HashMap<String, Value> {
    let blades = ["529QB9450R6", "529QB9451R6", "529QB9452R6", "529QB9453R6"];
    let systems: Vec<(&str, Value)> = blades
        .iter()
        .map(|id| {
            (
                *id,
                json!({"@odata.type": "#ComputerSystem.v1_24_0.ComputerSystem",
                "Name": "Bladed System", "SystemType": "Physical", "Manufacturer": "Contoso",
                "Model": "SX1000", "PowerState": "Off",
                "Boot": {"BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideTarget": "None",
                         "BootSourceOverrideTarget@Redfish.AllowableValues":
                            ["None", "Pxe", "Floppy", "Cd", "Usb", "Hdd", "BiosSetup"]},
                "Actions": reset_with(&["On", "ForceOff", "GracefulShutdown", "GracefulRestart",
                    "ForceRestart", "Nmi", "ForceOn", "PushPowerButton"], id)}),
            )
        })
        .collect();
    service(&systems, true)
}

const NODE0_MAC: &str = "00:40:a6:83:b6:37";
const NODE1_MAC: &str = "00:40:a6:83:b6:48";

/// A Cray-EX-style node card: Node0 and Node1 behind one BMC; Boot with only BootOrder; reset
/// types inline (with the non-standard "Off") and an ActionInfo; NICs whose MACAddress is
/// "Not Available" and whose PermanentMACAddress is padded, next to the management NIC.
fn node_card() -> HashMap<String, Value> {
    let node = |id: &str| {
        json!({"@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem", "Name": id,
            "Manufacturer": "HPE", "PowerState": "Off",
            "Boot": {"BootOrder": ["Boot0001", "Boot0002"]},
            "Actions": {"#ComputerSystem.Reset": {
                "ResetType@Redfish.AllowableValues": ["ForceOff", "On", "Off"],
                "@Redfish.ActionInfo": format!("/redfish/v1/Systems/{id}/ResetActionInfo"),
                "target": format!("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset")}}})
    };
    let mut docs = service(&[("Node0", node("Node0")), ("Node1", node("Node1"))], true);
    nics(
        &mut docs,
        "Node0",
        &[
            ("HPCNet0", "Not Available", Some(" 00:40:a6:83:c5:30")),
            ("ManagementEthernet", NODE0_MAC, Some(NODE0_MAC)),
        ],
    );
    nics(
        &mut docs,
        "Node1",
        &[
            ("HPCNet0", "Not Available", Some(" 00:40:a6:83:c5:41")),
            ("ManagementEthernet", &NODE1_MAC.to_uppercase(), None),
        ],
    );
    docs
}

/// public-rackmount1's one system, with its host NICs (one the BMC's host interface), booting
/// Legacy.
fn rackmount_legacy() -> HashMap<String, Value> {
    let id = "437XR1138R2";
    let mut docs = service(
        &[(
            id,
            json!({"@odata.type": "#ComputerSystem.v1_24_0.ComputerSystem",
            "Name": "WebFrontEnd483", "Manufacturer": "Contoso", "Model": "3500",
            "PowerState": "On", "BiosVersion": "P79 v1.45 (12/06/2017)",
            "Boot": {"BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideTarget": "None",
                "BootSourceOverrideTarget@Redfish.AllowableValues":
                    ["None", "Pxe", "Cd", "Usb", "Hdd", "BiosSetup", "Utilities", "Diags",
                     "SDCard", "UefiTarget"],
                "BootSourceOverrideMode": "Legacy",
                "BootSourceOverrideMode@Redfish.AllowableValues": ["Legacy", "UEFI"]},
            "Actions": reset_with(&["On", "ForceOff", "GracefulShutdown", "GracefulRestart",
                "ForceRestart", "Nmi", "ForceOn", "PushPowerButton"], id)}),
        )],
        false,
    );
    nics(
        &mut docs,
        id,
        &[
            (
                "12446A3B0411",
                "12:44:6A:3B:04:11",
                Some("12:44:6A:3B:04:11"),
            ),
            ("ToManager", "AA:BB:CC:DD:EE:FE", Some("AA:BB:CC:DD:EE:FE")),
        ],
    );
    docs
}

/// A 2U4N enclosure: Node0..Node3 behind one BMC, each system's EthernetInterfaces listing only
/// the BMC's host interface, the real NICs under NetworkInterfaces (iDRAC/XCC style:
/// `NetworkDeviceFunctions/…` with `Ethernet.MACAddress`).
fn two_u_four_n() -> HashMap<String, Value> {
    let ids = ["Node0", "Node1", "Node2", "Node3"];
    let systems: Vec<(&str, Value)> = ids
        .iter()
        .map(|id| {
            (
                *id,
                json!({"PowerState": "Off", "Manufacturer": "Contoso",
                "Boot": {"BootSourceOverrideTarget": "None", "BootSourceOverrideEnabled": "Disabled",
                         "BootSourceOverrideMode": "UEFI"},
                "Actions": reset_with(&["On", "ForceOff", "ForceRestart"], id)}),
            )
        })
        .collect();
    let mut docs = service(&systems, false);
    for (n, id) in ids.iter().enumerate() {
        nics(&mut docs, id, &[("ToManager", "AA:BB:CC:DD:EE:FE", None)]);
        let base = format!("/redfish/v1/Systems/{id}/NetworkInterfaces");
        let adapter = format!("{base}/NIC.Slot.1");
        let functions = format!("{adapter}/NetworkDeviceFunctions");
        docs.insert(base.clone(), json!({"Members": [link(&adapter)]}));
        docs.insert(
            adapter.clone(),
            json!({"Id": "NIC.Slot.1", "NetworkDeviceFunctions": link(&functions)}),
        );
        docs.insert(
            functions.clone(),
            json!({"Members": [link(&format!("{functions}/NIC.Slot.1-1"))]}),
        );
        docs.insert(
            format!("{functions}/NIC.Slot.1-1"),
            json!({"Id": "NIC.Slot.1-1", "NetDevFuncType": "Ethernet",
                   "Ethernet": {"MACAddress": format!("B0:26:28:00:00:{n:02X}"),
                                "PermanentMACAddress": format!("B0:26:28:00:00:{n:02X}")}}),
        );
        docs.get_mut(&format!("/redfish/v1/Systems/{id}")).unwrap()["NetworkInterfaces"] =
            link(&base);
    }
    docs
}

/// Two hardware partitions of one machine, both listing the shared NIC.
fn partitioned() -> HashMap<String, Value> {
    let part = |id: &str| {
        json!({"PowerState": "Off",
            "Boot": {"BootSourceOverrideTarget": "None", "BootSourceOverrideEnabled": "Disabled"},
            "Actions": reset_with(&["On", "ForceOff"], id)})
    };
    let mut docs = service(
        &[
            ("Partition0", part("Partition0")),
            ("Partition1", part("Partition1")),
        ],
        false,
    );
    nics(&mut docs, "Partition0", &[("1", "02:00:00:aa:00:01", None)]);
    nics(&mut docs, "Partition1", &[("1", "02:00:00:aa:00:01", None)]);
    docs
}

fn pxe(mode: BootMode) -> BootOverride {
    BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode,
    }
}

#[track_caller]
fn assert_error(err: &BmcError, kind: ErrorKind, fragments: &[&str]) {
    assert_eq!(err.kind(), kind, "{err}");
    for f in fragments {
        assert!(err.to_string().contains(f), "no {f:?} in: {err}");
    }
}

#[tokio::test]
async fn bladed_without_a_choice_lists_the_blades_and_touches_none() {
    let m = Mockup::start(bladed()).await;
    let bmc = m.open("", by_mac("52:54:00:12:34:56")).await;
    let err = bmc.power(PowerAction::On).await.unwrap_err();
    assert_error(
        &err,
        ErrorKind::Unsupported,
        &[
            "none lists MAC 52:54:00:12:34:56",
            "529QB9450R6 (/redfish/v1/Systems/529QB9450R6: no MACs listed)",
            "529QB9453R6 (/redfish/v1/Systems/529QB9453R6: no MACs listed)",
            "kiln.dev/redfish-system",
        ],
    );
    assert!(m.changes().is_empty(), "{:?}", m.log());
    assert!(bmc.hint().is_none());
}

#[tokio::test]
async fn bladed_by_label_and_by_path_reach_only_that_blade() {
    let m = Mockup::start(bladed()).await;
    // The label, by Id.
    let bmc = m
        .open("", labelled("529QB9452R6", "52:54:00:12:34:56"))
        .await;
    bmc.set_boot(pxe(BootMode::Current)).await.unwrap();
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(
        m.changes(),
        [
            "PATCH /redfish/v1/Systems/529QB9452R6",
            "POST /redfish/v1/Systems/529QB9452R6/Actions/ComputerSystem.Reset",
        ]
    );
    assert_eq!(m.doc("/redfish/v1/Systems/529QB9452R6")["PowerState"], "On");
    assert_eq!(
        m.doc("/redfish/v1/Systems/529QB9450R6")["PowerState"],
        "Off"
    );
    // No mode on the system and none asked for: none sent.
    assert!(
        m.doc("/redfish/v1/Systems/529QB9452R6")["Boot"]
            .get("BootSourceOverrideMode")
            .is_none()
    );
    let info = bmc.identify().await.unwrap();
    assert_eq!(
        info.system,
        "/redfish/v1/Systems/529QB9452R6 (configured as 529QB9452R6)"
    );
    bmc.close().await.unwrap();

    // A path in bmc_ip.
    m.clear_log();
    let bmc = m
        .open(
            "/redfish/v1/Systems/529QB9451R6",
            by_mac("52:54:00:12:34:56"),
        )
        .await;
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(
        m.changes(),
        ["POST /redfish/v1/Systems/529QB9451R6/Actions/ComputerSystem.Reset"]
    );
    // Its @odata.id as the label works too, and wins over the path.
    m.clear_log();
    let bmc = m
        .open(
            "/redfish/v1/Systems/529QB9451R6",
            labelled("/redfish/v1/Systems/529QB9453R6", "52:54:00:12:34:56"),
        )
        .await;
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(
        m.changes(),
        ["POST /redfish/v1/Systems/529QB9453R6/Actions/ComputerSystem.Reset"]
    );
}

#[tokio::test]
async fn node_card_is_chosen_by_mac_and_the_choice_is_kept() {
    let m = Mockup::start(node_card()).await;
    let bmc = m.open("", by_mac(NODE1_MAC)).await;
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(
        m.changes(),
        ["POST /redfish/v1/Systems/Node1/Actions/ComputerSystem.Reset"]
    );
    assert_eq!(m.doc("/redfish/v1/Systems/Node1")["PowerState"], "On");
    assert_eq!(m.doc("/redfish/v1/Systems/Node0")["PowerState"], "Off");
    let info = bmc.identify().await.unwrap();
    assert_eq!(
        info.system,
        format!(
            "/redfish/v1/Systems/Node1 (MAC {NODE1_MAC} on \
             /redfish/v1/Systems/Node1/EthernetInterfaces/ManagementEthernet)"
        )
    );
    let hint = bmc.hint().expect("a hint");
    assert!(hint.contains("\"by\":\"mac\""), "{hint}");

    // The next driver for this machine goes straight to Node1.
    m.clear_log();
    let again = m
        .open(
            "",
            OpenOptions {
                hint: Some(hint.clone()),
                ..by_mac(NODE1_MAC)
            },
        )
        .await;
    assert_eq!(again.power_state().await.unwrap(), PowerState::On);
    let reads: Vec<String> = m
        .log()
        .into_iter()
        .filter(|l| l.starts_with("GET"))
        .collect();
    assert_eq!(reads, ["GET /redfish/v1/Systems/Node1"]);

    // The same hint for the other node's MAC (the machine was re-cabled) is not followed.
    m.clear_log();
    let other = m
        .open(
            "",
            OpenOptions {
                hint: Some(hint),
                ..by_mac(NODE0_MAC)
            },
        )
        .await;
    other.power(PowerAction::On).await.unwrap();
    assert_eq!(
        m.changes().last().unwrap(),
        "POST /redfish/v1/Systems/Node0/Actions/ComputerSystem.Reset"
    );
}

#[tokio::test]
async fn node_card_unknown_mac_lists_ids_and_macs() {
    let m = Mockup::start(node_card()).await;
    let err = m
        .open("", by_mac("52:54:00:00:00:99"))
        .await
        .power_state()
        .await
        .unwrap_err();
    assert_error(
        &err,
        ErrorKind::Unsupported,
        &[
            "Node0 (/redfish/v1/Systems/Node0: 00:40:a6:83:c5:30, 00:40:a6:83:b6:37)",
            "Node1 (/redfish/v1/Systems/Node1: 00:40:a6:83:c5:41, 00:40:a6:83:b6:48)",
        ],
    );
}

#[tokio::test]
async fn boot_object_with_only_boot_order_is_unsupported_and_not_patched() {
    let m = Mockup::start(node_card()).await;
    let bmc = m.open("", by_mac(NODE0_MAC)).await;
    let err = bmc.set_boot(pxe(BootMode::Uefi)).await.unwrap_err();
    assert_error(
        &err,
        ErrorKind::Unsupported,
        &[
            "/redfish/v1/Systems/Node0",
            "no BootSourceOverrideTarget",
            "--no-power",
        ],
    );
    assert!(m.changes().is_empty(), "{:?}", m.log());
}

#[tokio::test]
async fn legacy_host_stays_legacy_unless_labelled() {
    let m = Mockup::start(rackmount_legacy()).await;
    let system = "/redfish/v1/Systems/437XR1138R2";
    let bmc = m.open("", by_mac("12:44:6a:3b:04:11")).await;
    bmc.set_boot(pxe(BootMode::Current)).await.unwrap();
    let boot = &m.doc(system)["Boot"];
    assert_eq!(
        (
            boot["BootSourceOverrideTarget"].as_str(),
            boot["BootSourceOverrideEnabled"].as_str()
        ),
        (Some("Pxe"), Some("Once"))
    );
    assert_eq!(boot["BootSourceOverrideMode"], "Legacy");
    assert_eq!(
        bmc.identify().await.unwrap().system,
        format!("{system} (the only system)")
    );
    // Labelled UEFI: asked for, so sent.
    bmc.set_boot(pxe(BootMode::Uefi)).await.unwrap();
    assert_eq!(m.doc(system)["Boot"]["BootSourceOverrideMode"], "UEFI");
}

#[tokio::test]
async fn two_u_four_n_is_chosen_by_the_mac_on_its_network_adapter() {
    let m = Mockup::start(two_u_four_n()).await;
    let bmc = m.open("", by_mac("b0:26:28:00:00:02")).await;
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(
        m.changes(),
        ["POST /redfish/v1/Systems/Node2/Actions/ComputerSystem.Reset"]
    );
    assert_eq!(
        bmc.identify().await.unwrap().system,
        "/redfish/v1/Systems/Node2 (MAC b0:26:28:00:00:02 on \
         /redfish/v1/Systems/Node2/NetworkInterfaces/NIC.Slot.1/NetworkDeviceFunctions/NIC.Slot.1-1)"
    );
    // The host-interface MAC every node lists picks none of them.
    let err = m
        .open("", by_mac("aa:bb:cc:dd:ee:fe"))
        .await
        .power_state()
        .await
        .unwrap_err();
    assert_error(
        &err,
        ErrorKind::Unsupported,
        &["several systems list MAC aa:bb:cc:dd:ee:fe"],
    );
}

#[tokio::test]
async fn partitions_sharing_a_mac_are_not_guessed_between() {
    let m = Mockup::start(partitioned()).await;
    let err = m
        .open("", by_mac("02:00:00:AA:00:01"))
        .await
        .power(PowerAction::On)
        .await
        .unwrap_err();
    assert_error(
        &err,
        ErrorKind::Unsupported,
        &[
            "several systems list MAC 02:00:00:aa:00:01",
            "Partition0 (/redfish/v1/Systems/Partition0: 02:00:00:aa:00:01)",
            "Partition1",
        ],
    );
    assert!(m.changes().is_empty());
    // Named by label, either partition works.
    let bmc = m
        .open("", labelled("Partition1", "02:00:00:aa:00:01"))
        .await;
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(
        m.changes(),
        ["POST /redfish/v1/Systems/Partition1/Actions/ComputerSystem.Reset"]
    );
}

#[tokio::test]
async fn a_hint_for_another_label_is_not_followed() {
    let m = Mockup::start(bladed()).await;
    let first = m
        .open("", labelled("529QB9450R6", "52:54:00:12:34:56"))
        .await;
    first.power_state().await.unwrap();
    let hint = first.hint().unwrap();
    first.close().await.unwrap();
    m.clear_log();
    let relabelled = m
        .open(
            "",
            OpenOptions {
                hint: Some(hint),
                ..labelled("529QB9453R6", "52:54:00:12:34:56")
            },
        )
        .await;
    relabelled.power(PowerAction::On).await.unwrap();
    assert_eq!(
        m.changes().last().unwrap(),
        "POST /redfish/v1/Systems/529QB9453R6/Actions/ComputerSystem.Reset"
    );
    assert!(
        !m.log()
            .contains(&"GET /redfish/v1/Systems/529QB9450R6".to_string())
    );
}

#[test]
fn hints_kept_before_system_choice_still_read() {
    let old: RedfishHint =
        serde_json::from_str(r#"{"system":"/redfish/v1/Systems/1","sessions":"/s"}"#).unwrap();
    assert_eq!(old.chosen, None);
    assert!(old.system_holds(&RedfishOptions::default()));
    // A hint kept before labels existed is not taken for a labelled choice.
    let labelled = RedfishOptions {
        system: Some("2".into()),
        ..RedfishOptions::default()
    };
    assert!(!old.system_holds(&labelled));
    let text = serde_json::to_string(&RedfishHint {
        chosen: Some(ChosenBy::Only),
        ..old
    })
    .unwrap();
    assert_eq!(
        text,
        r#"{"system":"/redfish/v1/Systems/1","sessions":"/s","chosen":{"by":"only"}}"#
    );
}
