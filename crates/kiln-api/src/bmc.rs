//! `POST /api/v1/bmc/actions`: power and boot control through the machines' BMCs, many in
//! parallel, one row per machine. `status` and `info` are POSTs too: they talk to hardware.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where BMC actions are posted.
pub const BMC_ACTIONS: &str = "/api/v1/bmc/actions";

macro_rules! bmc_ops {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// What to do through each BMC.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        pub enum BmcOp {
            $($(#[doc = $doc])* #[serde(rename = $name)] $variant,)*
        }

        impl BmcOp {
            /// Every op, in the order the CLI lists them.
            pub const ALL: &'static [BmcOp] = &[$(BmcOp::$variant,)*];

            /// The name on the wire and on the command line (`status`, `pxe`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(BmcOp::$variant => $name,)*
                }
            }

            /// What it does, in a line (the CLI's help).
            pub fn help(self) -> &'static str {
                match self {
                    $(BmcOp::$variant => concat!($($doc),*).trim_ascii(),)*
                }
            }
        }
    };
}

bmc_ops! {
    /// Power state.
    Status = "status",
    /// Power on (confirmed).
    On = "on",
    /// Power off, hard (confirmed).
    Off = "off",
    /// Ask the OS to shut down (ACPI power button).
    Soft = "soft",
    /// Off then on; a machine that is off is powered on.
    Cycle = "cycle",
    /// Hard reset.
    Reset = "reset",
    /// Next boot from the network.
    Pxe = "pxe",
    /// Next boot from the local disk.
    Disk = "disk",
    /// Vendor, model and firmware of the BMC.
    Info = "info",
}

impl BmcOp {
    /// Whether the op only reads (no event is recorded for it).
    pub fn reads_only(self) -> bool {
        matches!(self, BmcOp::Status | BmcOp::Info)
    }
}

/// `POST /api/v1/bmc/actions`: machines by hostname, or by label selector (`k=v`, all must
/// match); one of the two.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BmcActionRequest {
    pub op: BmcOp,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selector: Vec<String>,
    /// pxe/disk: every boot until changed (default: the next boot only).
    #[serde(default)]
    pub persistent: bool,
}

/// One machine's outcome. Never a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BmcRow {
    pub machine: String,
    /// The BMC's address, `-` without one.
    pub bmc: String,
    pub ok: bool,
    /// on/off, or what was done; `error` when it failed.
    pub result: String,
    /// unreachable | auth_failed | unsupported | bad_reply | rejected | not_confirmed
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_are_lowercase_on_the_wire_and_rows_omit_empty_errors() {
        let req: BmcActionRequest =
            serde_json::from_str(r#"{"op":"pxe","selector":["role=cp"]}"#).unwrap();
        assert_eq!(req.op, BmcOp::Pxe);
        assert!(req.machines.is_empty() && !req.persistent);
        let row = BmcRow {
            machine: "n1".into(),
            bmc: "10.0.0.1".into(),
            ok: true,
            result: "on".into(),
            error: None,
            detail: String::new(),
        };
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"machine": "n1", "bmc": "10.0.0.1", "ok": true, "result": "on"})
        );
    }
}
