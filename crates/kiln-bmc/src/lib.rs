//! BMC power and boot control: one [`Bmc`] trait, an IPMI 2.0 lanplus driver and a Redfish driver.
//!
//! Drivers never drive workflows: the engine calls them. They confirm what they did where the protocol
//! allows (power state read back), and never blindly resend a power command after a timeout.

mod address;
mod error;
mod ipmi;
mod open;
mod redfish;

pub use address::{BmcAddress, Protocol};
pub use error::{BmcError, ErrorKind};
pub use ipmi::{IpmiBmc, IpmiConfig};
pub use open::{
    BOOT_MODE_LABEL, INSECURE_TLS_LABEL, OpenOptions, REDFISH_SYSTEM_LABEL, boot_mode,
    boot_override_mode, open,
};
pub use redfish::{ChosenBy, RedfishAuth, RedfishBmc, RedfishHint, RedfishOptions};

use std::fmt;

/// Power state as a BMC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerState {
    On,
    Off,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
        })
    }
}

/// A power action. `Off` is hard (immediate), `SoftOff` asks the OS (ACPI power button).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerAction {
    On,
    Off,
    SoftOff,
    /// Off, then on (a powered-off machine is just powered on).
    Cycle,
    /// Hard reset without a power transition.
    Reset,
}

impl PowerAction {
    /// The power state this action ends in, for confirming it.
    pub fn expected_state(self) -> PowerState {
        match self {
            PowerAction::Off | PowerAction::SoftOff => PowerState::Off,
            PowerAction::On | PowerAction::Cycle | PowerAction::Reset => PowerState::On,
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::SoftOff => "soft-off",
            PowerAction::Cycle => "cycle",
            PowerAction::Reset => "reset",
        })
    }
}

/// Where the machine boots next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootDevice {
    Pxe,
    Disk,
    /// The firmware's setup screen.
    Bios,
}

impl fmt::Display for BootDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Bios => "bios",
        })
    }
}

/// Firmware type the override applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootMode {
    Uefi,
    Legacy,
    /// Whatever the system is set to now: Redfish leaves `BootSourceOverrideMode` as it reads,
    /// so a Legacy host is never switched to UEFI unasked; IPMI, which has no mode to read back,
    /// sets the EFI bit as it always has.
    Current,
}

impl fmt::Display for BootMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootMode::Uefi => "UEFI",
            BootMode::Legacy => "legacy",
            BootMode::Current => "mode unchanged",
        })
    }
}

/// A next-boot override: device, once or persistent, UEFI or legacy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BootOverride {
    pub device: BootDevice,
    /// false: the next boot only; true: every boot until changed.
    pub persistent: bool,
    pub mode: BootMode,
}

/// What the BMC says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BmcInfo {
    /// "ipmi" or "redfish".
    pub protocol: String,
    pub vendor: String,
    pub model: String,
    pub firmware: String,
    /// Redfish: the system driven and why it was chosen (empty for IPMI).
    pub system: String,
    /// Redfish: the system's serial number (empty when the BMC does not say, and for IPMI).
    pub serial: String,
}

/// What a preflight reads from a BMC, changing nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcReadout {
    /// How the session was made: `IPMI cipher suite 17`, `Redfish 1.15.0`.
    pub protocol: String,
    pub power: PowerState,
    /// Whether a next-boot PXE override is offered; `None` when the BMC does not say.
    pub pxe_override: Option<bool>,
    /// The firmware mode an override applies to as the BMC reads it (`UEFI`, `Legacy`);
    /// `None` when it does not say.
    pub boot_mode: Option<String>,
}

/// One machine's BMC. Every call is one logical operation against the BMC with the driver's own
/// per-request timeout; retries across operations (with backoff and a budget) are the caller's.
#[async_trait::async_trait]
pub trait Bmc: Send + Sync {
    /// Vendor, model and firmware.
    async fn identify(&self) -> Result<BmcInfo, BmcError>;
    async fn power_state(&self) -> Result<PowerState, BmcError>;
    /// Sends the action once. After a timeout the driver reads the power state before deciding to
    /// resend, so an action is never applied twice.
    async fn power(&self, action: PowerAction) -> Result<(), BmcError>;
    async fn set_boot(&self, boot: BootOverride) -> Result<(), BmcError>;
    /// Reads what a preflight checks (session, power state, boot override support) without
    /// changing anything. Drivers that cannot say more report the power state only.
    async fn readout(&self) -> Result<BmcReadout, BmcError> {
        Ok(BmcReadout {
            protocol: String::new(),
            power: self.power_state().await?,
            pxe_override: None,
            boot_mode: None,
        })
    }
    /// Ends a session, if the protocol has one. Dropping without closing is allowed.
    async fn close(&self) -> Result<(), BmcError> {
        Ok(())
    }
    /// What this driver found out about the BMC that saves the next one work, as text to keep
    /// and give back in [`OpenOptions::hint`] (Redfish: the system's path, why that system, and
    /// how to log in).
    /// Never holds credentials.
    fn hint(&self) -> Option<String> {
        None
    }
}
