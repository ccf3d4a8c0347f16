//! The Redfish JSON this driver reads and writes (DMTF ServiceRoot, ComputerSystem, Manager,
//! ActionInfo, Session, the error envelope).
//!
//! Tolerant on purpose: unknown fields are ignored, every field is optional, and `null` where a
//! list is expected reads as an empty list, because BMC firmware varies widely.

use serde::{Deserialize, Deserializer, Serialize};

/// `null` or absent → empty; BMCs send both.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A reference to another resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Link {
    #[serde(rename = "@odata.id", default)]
    pub odata_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceRoot {
    #[serde(rename = "RedfishVersion", default)]
    pub redfish_version: Option<String>,
    #[serde(rename = "Vendor", default)]
    pub vendor: Option<String>,
    #[serde(rename = "Product", default)]
    pub product: Option<String>,
    #[serde(rename = "Systems", default)]
    pub systems: Option<Link>,
    #[serde(rename = "SessionService", default)]
    pub session_service: Option<Link>,
    #[serde(rename = "Links", default)]
    pub links: Option<ServiceRootLinks>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceRootLinks {
    /// The session collection to POST to (mandatory in the schema when sessions are offered).
    #[serde(rename = "Sessions", default)]
    pub sessions: Option<Link>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Collection {
    #[serde(rename = "Members", default, deserialize_with = "null_as_empty")]
    pub members: Vec<Link>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ComputerSystem {
    #[serde(rename = "@odata.etag", default)]
    pub odata_etag: Option<String>,
    #[serde(rename = "Id", default)]
    pub id: Option<String>,
    /// The host's NICs as the BMC sees them (MACs: how a system is matched to a machine).
    #[serde(rename = "EthernetInterfaces", default)]
    pub ethernet_interfaces: Option<Link>,
    /// The NIC adapters' functions (iDRAC, XCC list MACs there too).
    #[serde(rename = "NetworkInterfaces", default)]
    pub network_interfaces: Option<Link>,
    #[serde(rename = "PowerState", default)]
    pub power_state: Option<String>,
    #[serde(rename = "Manufacturer", default)]
    pub manufacturer: Option<String>,
    #[serde(rename = "Model", default)]
    pub model: Option<String>,
    #[serde(rename = "SerialNumber", default)]
    pub serial_number: Option<String>,
    #[serde(rename = "BiosVersion", default)]
    pub bios_version: Option<String>,
    #[serde(rename = "Boot", default)]
    pub boot: Option<Boot>,
    #[serde(rename = "Actions", default)]
    pub actions: Option<SystemActions>,
    #[serde(rename = "Links", default)]
    pub links: Option<SystemLinks>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Boot {
    #[serde(rename = "BootSourceOverrideTarget", default)]
    pub target: Option<String>,
    #[serde(rename = "BootSourceOverrideEnabled", default)]
    pub enabled: Option<String>,
    #[serde(rename = "BootSourceOverrideTarget@Redfish.AllowableValues", default)]
    pub target_allowed: Option<Vec<String>>,
    #[serde(rename = "BootSourceOverrideEnabled@Redfish.AllowableValues", default)]
    pub enabled_allowed: Option<Vec<String>>,
    #[serde(rename = "BootSourceOverrideMode", default)]
    pub mode: Option<String>,
    #[serde(rename = "BootSourceOverrideMode@Redfish.AllowableValues", default)]
    pub mode_allowed: Option<Vec<String>>,
}

/// A host NIC (`…/EthernetInterfaces/{id}`). BMCs fill the MACs unevenly: upper or lower case,
/// padded with spaces, or "Not Available".
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EthernetInterface {
    #[serde(rename = "MACAddress", default)]
    pub mac_address: Option<String>,
    #[serde(rename = "PermanentMACAddress", default)]
    pub permanent_mac_address: Option<String>,
}

/// `…/NetworkInterfaces/{id}`: links to the adapter's functions.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkInterface {
    #[serde(rename = "NetworkDeviceFunctions", default)]
    pub functions: Option<Link>,
}

/// `…/NetworkDeviceFunctions/{id}`: an Ethernet function carries the MACs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkDeviceFunction {
    #[serde(rename = "Ethernet", default)]
    pub ethernet: Option<EthernetInterface>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SystemActions {
    #[serde(rename = "#ComputerSystem.Reset", default)]
    pub reset: Option<ResetAction>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResetAction {
    /// The URI to POST `{"ResetType": ...}` to.
    #[serde(default)]
    pub target: Option<String>,
    #[serde(rename = "ResetType@Redfish.AllowableValues", default)]
    pub allowed: Option<Vec<String>>,
    /// Some BMCs list the allowed values in a separate ActionInfo resource instead.
    #[serde(rename = "@Redfish.ActionInfo", default)]
    pub action_info: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ActionInfo {
    #[serde(rename = "Parameters", default, deserialize_with = "null_as_empty")]
    pub parameters: Vec<ActionParameter>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ActionParameter {
    #[serde(rename = "Name", default)]
    pub name: Option<String>,
    #[serde(rename = "AllowableValues", default)]
    pub allowable_values: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SystemLinks {
    #[serde(rename = "ManagedBy", default, deserialize_with = "null_as_empty")]
    pub managed_by: Vec<Link>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Manager {
    #[serde(rename = "FirmwareVersion", default)]
    pub firmware_version: Option<String>,
    #[serde(rename = "Model", default)]
    pub model: Option<String>,
    #[serde(rename = "Manufacturer", default)]
    pub manufacturer: Option<String>,
}

/// The body of `POST .../Sessions`. Not `Debug`: it holds the password.
#[derive(Serialize)]
pub struct SessionLogin<'a> {
    #[serde(rename = "UserName")]
    pub user_name: &'a str,
    #[serde(rename = "Password")]
    pub password: &'a str,
}

/// The body of `POST {target}` for `#ComputerSystem.Reset`.
#[derive(Debug, Serialize)]
pub struct ResetRequest<'a> {
    #[serde(rename = "ResetType")]
    pub reset_type: &'a str,
}

/// The Redfish error envelope: `{"error": {"code", "message", "@Message.ExtendedInfo": [...]}}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorEnvelope {
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(
        rename = "@Message.ExtendedInfo",
        default,
        deserialize_with = "null_as_empty"
    )]
    pub extended_info: Vec<MessageInfo>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MessageInfo {
    #[serde(rename = "MessageId", default)]
    pub message_id: Option<String>,
    #[serde(rename = "Message", default)]
    pub message: Option<String>,
    /// Strings or numbers, depending on the message.
    #[serde(rename = "MessageArgs", default, deserialize_with = "null_as_empty")]
    pub message_args: Vec<serde_json::Value>,
    /// JSON pointers such as `#/Boot/BootSourceOverrideMode`.
    #[serde(
        rename = "RelatedProperties",
        default,
        deserialize_with = "null_as_empty"
    )]
    pub related_properties: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_tolerates_nulls_unknown_fields_and_missing_parts() {
        let json = r##"{
            "@odata.id": "/redfish/v1/Systems/1", "Id": "1", "PowerState": "On",
            "Model": null, "Oem": {"Vendor": {"x": 1}},
            "Boot": {"BootSourceOverrideTarget": "None",
                     "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Hdd"],
                     "BootSourceOverrideMode": "UEFI"},
            "Actions": {"#ComputerSystem.Reset": {"target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                        "@Redfish.ActionInfo": "/redfish/v1/Systems/1/ResetActionInfo"}},
            "Links": {"ManagedBy": null}
        }"##;
        let s: ComputerSystem = serde_json::from_str(json).unwrap();
        assert_eq!(s.power_state.as_deref(), Some("On"));
        assert_eq!(s.model, None);
        let boot = s.boot.unwrap();
        assert_eq!(boot.target_allowed.unwrap(), ["None", "Pxe", "Hdd"]);
        let reset = s.actions.unwrap().reset.unwrap();
        assert_eq!(reset.allowed, None);
        assert!(reset.action_info.unwrap().ends_with("ResetActionInfo"));
        assert!(s.links.unwrap().managed_by.is_empty());

        let bare: ComputerSystem = serde_json::from_str("{}").unwrap();
        assert!(bare.boot.is_none() && bare.actions.is_none());
    }

    #[test]
    fn error_envelope_with_mixed_message_args() {
        let json = r##"{"error": {"code": "Base.1.0.GeneralError", "message": "bad",
            "@Message.ExtendedInfo": [{"MessageId": "Base.1.8.PropertyValueNotInList",
                "Message": "The value UEFI ...", "MessageArgs": ["UEFI", 3, null],
                "RelatedProperties": ["#/Boot/BootSourceOverrideMode"]}]}}"##;
        let e: ErrorEnvelope = serde_json::from_str(json).unwrap();
        let body = e.error.unwrap();
        assert_eq!(body.extended_info[0].message_args.len(), 3);
        assert_eq!(
            body.extended_info[0].related_properties,
            ["#/Boot/BootSourceOverrideMode"]
        );
    }

    #[test]
    fn session_login_body_names() {
        let v = serde_json::to_value(SessionLogin {
            user_name: "admin",
            password: "pw",
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"UserName": "admin", "Password": "pw"})
        );
    }
}
