//! `POST /api/v1/preflight`: before anything is powered, what would stop an install — BMCs,
//! credentials, boot override support, the image, the boot artifacts, the provisioning
//! network and other DHCP servers on it. Reads only; one row per check.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where preflights are posted.
pub const PREFLIGHT: &str = "/api/v1/preflight";
/// The last preflight report of the server asked.
pub const PREFLIGHT_LAST: &str = "/api/v1/preflight/last";

/// A file sent for checking, named for diagnostics (`hardware.csv:3`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PreflightFile {
    pub file_name: String,
    pub text: String,
}

/// What to check: the rows of a hardware.csv (enrolled or not), enrolled machines by name or
/// label selector, or the machines a cluster spec would be placed on (and its images). The
/// server's own checks (artifacts, interface, other DHCP servers) always run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PreflightRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<PreflightFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selector: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<PreflightFile>,
    /// The OS image the install will write: an imported image's name, or an http(s) URL
    /// with `#sha256=HEX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A workflow template whose `images["NAME"]` must be imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PreflightFile>,
    /// Skip the DHCP probe (no DISCOVER is sent).
    #[serde(default)]
    pub no_dhcp_probe: bool,
}

/// What a check looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckName {
    /// The BMC answers at all.
    BmcReachable,
    /// The BMC accepts the row's user and password.
    BmcCredentials,
    /// IPMI cipher suite or Redfish version of the session.
    BmcProtocol,
    /// The power state reads.
    PowerState,
    /// A next-boot PXE override is offered, and in which firmware mode.
    BootOverride,
    /// The machine's address is on Kiln's provisioning segment.
    MachineAddress,
    /// The OS image: imported (size, sha256) or reachable.
    Image,
    /// The agent's kernel and initrd under `--artifacts`.
    Artifacts,
    /// The iPXE binaries under `--tftp-root`.
    TftpRoot,
    /// `--interface` exists and carries `--address`.
    Interface,
    /// Other DHCP servers answering on the provisioning segment.
    OtherDhcp,
    /// The machines could be picked (names, selector, rows, cluster placement).
    Selection,
}

impl CheckName {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::BmcReachable => "bmc_reachable",
            CheckName::BmcCredentials => "bmc_credentials",
            CheckName::BmcProtocol => "bmc_protocol",
            CheckName::PowerState => "power_state",
            CheckName::BootOverride => "boot_override",
            CheckName::MachineAddress => "machine_address",
            CheckName::Image => "image",
            CheckName::Artifacts => "artifacts",
            CheckName::TftpRoot => "tftp_root",
            CheckName::Interface => "interface",
            CheckName::OtherDhcp => "other_dhcp",
            CheckName::Selection => "selection",
        }
    }
}

/// A check's outcome: `warn` does not stop an install, `fail` would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Warn,
    Fail,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
        }
    }
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PreflightCheck {
    /// The machine checked; none for the server's own checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// `FILE:LINE` of the row or spec the machine or image came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub check: CheckName,
    pub status: CheckStatus,
    /// What was found (never a credential).
    pub detail: String,
}

/// Every check, machines in request order, then the server's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PreflightReport {
    pub checks: Vec<PreflightCheck>,
    /// How many checks failed (an install would stop on each).
    pub failed: usize,
    pub warnings: usize,
}

impl PreflightReport {
    pub fn new(checks: Vec<PreflightCheck>) -> PreflightReport {
        let count = |s| checks.iter().filter(|c| c.status == s).count();
        let (failed, warnings) = (count(CheckStatus::Fail), count(CheckStatus::Warn));
        PreflightReport {
            checks,
            failed,
            warnings,
        }
    }
}

/// `GET /api/v1/preflight/last`: the last report this server made, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LastPreflight {
    /// RFC 3339: when the checks ended.
    pub at: String,
    pub at_ms: u64,
    pub report: PreflightReport,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_on_the_wire_are_the_names_shown() {
        for c in [
            CheckName::BmcReachable,
            CheckName::OtherDhcp,
            CheckName::Image,
        ] {
            let wire = serde_json::to_value(c).unwrap();
            assert_eq!(wire, c.as_str());
        }
        assert_eq!(serde_json::to_value(CheckStatus::Fail).unwrap(), "fail");
    }

    #[test]
    fn the_report_counts_failures_and_warnings() {
        let check = |status| PreflightCheck {
            machine: None,
            source: None,
            check: CheckName::Artifacts,
            status,
            detail: String::new(),
        };
        let r = PreflightReport::new(vec![
            check(CheckStatus::Ok),
            check(CheckStatus::Fail),
            check(CheckStatus::Warn),
            check(CheckStatus::Fail),
        ]);
        assert_eq!((r.failed, r.warnings), (2, 1));
    }
}
