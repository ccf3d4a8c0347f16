//! From a hardware record's BMC endpoint to a driver: the scheme picks the protocol; a plain
//! address is probed (Redfish service root over HTTPS first, then IPMI).

use std::time::Duration;

use kiln_model::Hardware;
use kiln_model::hardware::BmcEndpoint;

use crate::{
    Bmc, BmcAddress, BmcError, BootMode, ErrorKind, IpmiBmc, IpmiConfig, Protocol, RedfishBmc,
    RedfishOptions,
};

/// Hardware label that opts one machine out of BMC certificate verification.
/// (Defined in kiln-model, which warns at enrolment that such a BMC's password travels readable.)
pub const INSECURE_TLS_LABEL: &str = kiln_model::bmc_address::BMC_TLS_LABEL;
/// Hardware label choosing the boot mode of boot overrides: `uefi` or `legacy`; without it a
/// Redfish override keeps the system's current mode.
pub const BOOT_MODE_LABEL: &str = "kiln.dev/boot-mode";
/// Hardware label choosing the Redfish system behind a BMC with several: its `Id` (`Node1`) or
/// its `@odata.id` (`/redfish/v1/Systems/Node1`).
pub const REDFISH_SYSTEM_LABEL: &str = "kiln.dev/redfish-system";

/// Per-machine driver settings.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Accept a self-signed Redfish certificate (`kiln.dev/bmc-tls=insecure`).
    pub insecure_tls: bool,
    /// Bound on each request to the BMC.
    pub request_timeout: Duration,
    /// How long a power change may take to show.
    pub power_timeout: Duration,
    /// What an earlier driver for this BMC found out ([`Bmc::hint`]); a stale or unreadable
    /// one only costs the discovery it would have saved.
    pub hint: Option<String>,
    /// The machine's own MAC (hardware.csv `mac`): picks its system when a Redfish BMC has
    /// several and nothing else says which.
    pub mac: Option<String>,
    /// The Redfish system to drive (`kiln.dev/redfish-system`): an Id or an `@odata.id`.
    pub system: Option<String>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            insecure_tls: false,
            request_timeout: Duration::from_secs(10),
            power_timeout: Duration::from_secs(60),
            hint: None,
            mac: None,
            system: None,
        }
    }
}

impl OpenOptions {
    /// Settings from the machine's labels.
    pub fn for_hardware(hw: &Hardware) -> Self {
        OpenOptions {
            insecure_tls: hw.labels.get(INSECURE_TLS_LABEL).map(String::as_str)
                == Some(kiln_model::bmc_address::BMC_TLS_INSECURE),
            mac: Some(hw.mac.to_string()),
            system: hw
                .labels
                .get(REDFISH_SYSTEM_LABEL)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            ..OpenOptions::default()
        }
    }
}

/// The firmware a machine's labels declare (UEFI unless labelled legacy).
pub fn boot_mode(hw: &Hardware) -> BootMode {
    match boot_override_mode(hw) {
        BootMode::Legacy => BootMode::Legacy,
        _ => BootMode::Uefi,
    }
}

/// The boot mode to ask for in a machine's boot overrides: its label, else the system's
/// current mode (never a silent switch from Legacy to UEFI).
pub fn boot_override_mode(hw: &Hardware) -> BootMode {
    match hw
        .labels
        .get(BOOT_MODE_LABEL)
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("legacy" | "bios") => BootMode::Legacy,
        Some("uefi" | "efi") => BootMode::Uefi,
        _ => BootMode::Current,
    }
}

fn redfish(
    address: &BmcAddress,
    endpoint: &BmcEndpoint,
    opts: &OpenOptions,
) -> Result<RedfishBmc, BmcError> {
    RedfishBmc::new(
        address,
        &endpoint.username,
        endpoint.password.clone(),
        RedfishOptions {
            insecure_skip_verify: opts.insecure_tls,
            request_timeout: opts.request_timeout,
            power_timeout: opts.power_timeout,
            hint: opts
                .hint
                .as_deref()
                .and_then(|h| serde_json::from_str(h).ok()),
            // A path in bmc_ip names the system; the label, when given, has the last word.
            system: opts.system.clone().or_else(|| address.path.clone()),
            mac: opts.mac.clone(),
            ..RedfishOptions::default()
        },
    )
}

fn ipmi(
    address: &BmcAddress,
    endpoint: &BmcEndpoint,
    opts: &OpenOptions,
) -> Result<Box<dyn Bmc>, BmcError> {
    let config = IpmiConfig {
        confirm_timeout: opts.power_timeout,
        ..IpmiConfig::default()
    };
    Ok(Box::new(IpmiBmc::with_config(
        address,
        &endpoint.username,
        &endpoint.password,
        config,
    )?))
}

/// A driver for the machine's BMC. Nothing but a probe is sent before the first call.
pub async fn open(endpoint: &BmcEndpoint, opts: &OpenOptions) -> Result<Box<dyn Bmc>, BmcError> {
    let address = BmcAddress::parse(&endpoint.address)?;
    match address.protocol {
        Protocol::Redfish { .. } => Ok(Box::new(redfish(&address, endpoint, opts)?)),
        Protocol::Ipmi => ipmi(&address, endpoint, opts),
        Protocol::Probe => {
            // A BMC that answers Redfish at all (even refusing the credentials or the
            // certificate) speaks Redfish; only "nothing there" moves on to IPMI.
            let probe_opts = OpenOptions {
                request_timeout: opts.request_timeout.min(Duration::from_secs(5)),
                ..opts.clone()
            };
            let rf = redfish(&address, endpoint, &probe_opts)?;
            match rf.power_state().await {
                Err(e) if e.kind() == ErrorKind::Unreachable => {
                    let ipmi_address = BmcAddress {
                        protocol: Protocol::Ipmi,
                        ..address.clone()
                    };
                    ipmi(&ipmi_address, endpoint, opts)
                }
                _ => {
                    // What the probe discovered (the system, how to log in) saves the driver
                    // doing it again.
                    let opts = OpenOptions {
                        hint: Bmc::hint(&rf).or_else(|| opts.hint.clone()),
                        ..opts.clone()
                    };
                    // The probe's session would otherwise hold one of the BMC's few slots.
                    let _ = rf.close().await;
                    Ok(Box::new(redfish(&address, endpoint, &opts)?))
                }
            }
        }
    }
}
