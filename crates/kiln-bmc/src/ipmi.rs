//! The IPMI 2.0 lanplus driver: [`Bmc`] over `kiln_ipmi::client`.
//!
//! Connects lazily: the first call opens an RMCP+ session (cipher suite 17, falling back to 3 when the
//! BMC rejects 17's algorithms) and later calls reuse it. A reused session that stops answering (the
//! BMC timed it out) is reopened once for read-only steps. Power actions read the chassis status
//! first, send the Chassis Control once, then poll the status until the expected state.

use crate::address::IPMI_PORT;
use crate::{
    Bmc, BmcAddress, BmcError, BmcInfo, BmcReadout, BootDevice, BootMode, BootOverride,
    PowerAction, PowerState, Protocol,
};
use kiln_ipmi::client::{Client, ClientConfig};
use kiln_ipmi::{BootFlags, ChassisControl, CipherSuite, Credentials, ErrorClass, Password};
use kiln_model::Secret;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};

/// Timeouts of the driver.
#[derive(Debug, Clone)]
pub struct IpmiConfig {
    /// Session and per-request settings (timeouts, attempts, cipher suite order).
    pub client: ClientConfig,
    /// How long a power action may take to show in the chassis status.
    pub confirm_timeout: Duration,
    /// Interval between chassis status reads while confirming.
    pub poll_interval: Duration,
}

impl Default for IpmiConfig {
    fn default() -> Self {
        IpmiConfig {
            client: ClientConfig::default(),
            confirm_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// One BMC reached over IPMI 2.0 lanplus.
pub struct IpmiBmc {
    /// `ipmi://host:port`, for messages.
    address: String,
    /// `host:port` for the socket.
    target: String,
    credentials: Credentials,
    config: IpmiConfig,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for IpmiBmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiBmc")
            .field("address", &self.address)
            .field(
                "user",
                &String::from_utf8_lossy(self.credentials.username()),
            )
            .finish_non_exhaustive()
    }
}

/// Vendor names for the IANA enterprise numbers BMCs commonly report in Get Device ID.
pub fn vendor_name(manufacturer_id: u32) -> Option<&'static str> {
    Some(match manufacturer_id {
        2 => "IBM",
        11 => "Hewlett-Packard",
        42 => "Sun Microsystems",
        343 => "Intel",
        674 => "Dell",
        2011 => "Huawei",
        4753 => "MontaVista (OpenIPMI ipmi_sim)",
        5771 => "Cisco",
        7244 => "Quanta",
        10876 => "Supermicro",
        15370 => "Gigabyte",
        19046 => "Lenovo",
        20301 => "IBM",
        47196 => "Hewlett Packard Enterprise",
        49622 => "ASRock Rack",
        _ => return None,
    })
}

impl IpmiBmc {
    /// A driver for `address` (an `ipmi://` or plain host address; port 623 unless given). Nothing
    /// is sent until the first call. Fails only on user names or passwords beyond IPMI 2.0 limits
    /// (16 and 20 bytes).
    pub fn new(address: &BmcAddress, username: &str, password: &Secret) -> Result<Self, BmcError> {
        Self::with_config(address, username, password, IpmiConfig::default())
    }

    pub fn with_config(
        address: &BmcAddress,
        username: &str,
        password: &Secret,
        config: IpmiConfig,
    ) -> Result<Self, BmcError> {
        let target = address.socket_addr_text(IPMI_PORT);
        let shown = format!("ipmi://{target}");
        if let Protocol::Redfish { .. } = address.protocol {
            return Err(BmcError::BadAddress {
                address: address.to_string(),
                detail: "a Redfish address given to the IPMI driver".into(),
            });
        }
        let credentials =
            Credentials::new(username, Password::new(password.expose())).map_err(|e| {
                BmcError::Auth {
                    address: shown.clone(),
                    detail: e.to_string(),
                }
            })?;
        Ok(IpmiBmc {
            address: shown,
            target,
            credentials,
            config,
            client: Mutex::new(None),
        })
    }

    /// The cipher suite of the current session, opening one if needed.
    pub async fn cipher_suite(&self) -> Result<CipherSuite, BmcError> {
        let (guard, _) = self.session().await?;
        Ok(guard.as_ref().expect("session() connects").cipher_suite())
    }

    fn map(&self, operation: &str, e: kiln_ipmi::Error) -> BmcError {
        let address = self.address.clone();
        let detail = e.to_string();
        match e.class() {
            ErrorClass::Unreachable => BmcError::Unreachable { address, detail },
            ErrorClass::Auth => BmcError::Auth { address, detail },
            ErrorClass::Unsupported => BmcError::Unsupported {
                address,
                what: format!("{operation}: {detail}"),
            },
            ErrorClass::Protocol => BmcError::Protocol { address, detail },
            ErrorClass::Rejected => BmcError::Rejected {
                address,
                operation: operation.to_string(),
                detail,
            },
            ErrorClass::Unconfirmed => BmcError::Timeout {
                address,
                operation: format!("{operation} ({detail})"),
                seconds: self.config.client.power_timeout.as_secs(),
            },
        }
    }

    /// The locked session, opened if there was none; the flag says whether it was just opened.
    async fn session(&self) -> Result<(MutexGuard<'_, Option<Client>>, bool), BmcError> {
        let mut guard = self.client.lock().await;
        let fresh = guard.is_none();
        if fresh {
            let client = Client::connect(
                &self.target,
                self.credentials.clone(),
                self.config.client.clone(),
            )
            .await
            .map_err(|e| self.map("opening an RMCP+ session", e))?;
            *guard = Some(client);
        }
        Ok((guard, fresh))
    }

    /// Runs a read-only step; a reused session that fails with no answer or garbage is reopened once.
    async fn read<T>(
        &self,
        operation: &str,
        f: impl AsyncFnMut(&mut Client) -> Result<T, kiln_ipmi::Error>,
    ) -> Result<T, BmcError> {
        let mut f = f;
        let (mut guard, fresh) = self.session().await?;
        let client = guard.as_mut().expect("session() connects");
        match f(client).await {
            Ok(v) => Ok(v),
            Err(e)
                if !fresh
                    && matches!(e.class(), ErrorClass::Unreachable | ErrorClass::Protocol) =>
            {
                *guard = None;
                drop(guard);
                let (mut guard, _) = self.session().await?;
                let client = guard.as_mut().expect("session() connects");
                f(client).await.map_err(|e| self.map(operation, e))
            }
            Err(e) => {
                if matches!(e.class(), ErrorClass::Unreachable | ErrorClass::Protocol) {
                    *guard = None;
                }
                Err(self.map(operation, e))
            }
        }
    }

    async fn power_on(&self) -> Result<bool, BmcError> {
        self.read("Get Chassis Status", async |c| {
            c.chassis_status().await.map(|s| s.power_on)
        })
        .await
    }
}

#[async_trait::async_trait]
impl Bmc for IpmiBmc {
    async fn identify(&self) -> Result<BmcInfo, BmcError> {
        let id = self
            .read("Get Device ID", async |c| c.device_id().await)
            .await?;
        Ok(BmcInfo {
            protocol: "ipmi".into(),
            vendor: vendor_name(id.manufacturer_id)
                .map(str::to_string)
                .unwrap_or_else(|| format!("IANA enterprise {}", id.manufacturer_id)),
            model: format!("product {:#06x}", id.product_id),
            firmware: id.firmware(),
            system: String::new(),
            serial: String::new(),
        })
    }

    async fn power_state(&self) -> Result<PowerState, BmcError> {
        Ok(if self.power_on().await? {
            PowerState::On
        } else {
            PowerState::Off
        })
    }

    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        let operation = format!("power {action}");
        // Reading first also proves (or renews) the session before anything is sent.
        let on = self.power_on().await?;
        let control = match (action, on) {
            (PowerAction::On, true) | (PowerAction::Off | PowerAction::SoftOff, false) => {
                return Ok(());
            }
            (PowerAction::On, false) => ChassisControl::PowerUp,
            (PowerAction::Off, true) => ChassisControl::PowerDown,
            (PowerAction::SoftOff, true) => ChassisControl::SoftOff,
            // A machine that is off only needs to be switched on.
            (PowerAction::Cycle | PowerAction::Reset, false) => ChassisControl::PowerUp,
            (PowerAction::Cycle, true) => ChassisControl::PowerCycle,
            (PowerAction::Reset, true) => ChassisControl::HardReset,
        };
        {
            let mut guard = self.client.lock().await;
            let client = guard.as_mut().ok_or_else(|| BmcError::Unreachable {
                address: self.address.clone(),
                detail: "session lost before the power command".into(),
            })?;
            if let Err(e) = client.chassis_control(control).await {
                if matches!(e.class(), ErrorClass::Unreachable | ErrorClass::Protocol) {
                    *guard = None;
                }
                return Err(self.map(&operation, e));
            }
        }
        let want = action.expected_state() == PowerState::On;
        let deadline = tokio::time::Instant::now() + self.config.confirm_timeout;
        loop {
            if self.power_on().await? == want {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BmcError::Timeout {
                    address: self.address.clone(),
                    operation,
                    seconds: self.config.confirm_timeout.as_secs(),
                });
            }
            // Look again soon (100 ms, doubling), then every interval.
            let waited = self.config.confirm_timeout
                - deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(crate::redfish::first_polls(
                waited,
                self.config.poll_interval,
            ))
            .await;
        }
    }

    async fn set_boot(&self, boot: BootOverride) -> Result<(), BmcError> {
        let flags = boot_flags(boot);
        let operation = format!("set next boot to {}", boot.device);
        self.read(&operation, async move |c| c.set_boot_flags(flags).await)
            .await?;
        // Read back the device: the one part of the override every BMC keeps.
        let got = self
            .read("Get System Boot Options", async |c| c.boot_flags().await)
            .await?;
        if got.device != flags.device {
            return Err(BmcError::Rejected {
                address: self.address.clone(),
                operation,
                detail: format!("boot device reads back as {:?}", got.device),
            });
        }
        Ok(())
    }

    /// Session (and its cipher suite), Get Chassis Status, Get System Boot Options parameter
    /// 5: IPMI has no list of boot devices, so a readable parameter 5 is taken as support.
    async fn readout(&self) -> Result<BmcReadout, BmcError> {
        let power = self.power_state().await?;
        let suite = self.cipher_suite().await?;
        let flags = self
            .read("Get System Boot Options", async |c| c.boot_flags().await)
            .await?;
        Ok(BmcReadout {
            protocol: format!("IPMI cipher suite {}", suite.id()),
            power,
            pxe_override: Some(true),
            boot_mode: Some(if flags.efi { "UEFI" } else { "Legacy" }.into()),
        })
    }

    async fn close(&self) -> Result<(), BmcError> {
        let client = self.client.lock().await.take();
        match client {
            Some(c) => c.close().await.map_err(|e| self.map("Close Session", e)),
            None => Ok(()),
        }
    }
}

/// Boot options parameter 5 for an override: valid, once or persistent, EFI or legacy, device.
pub fn boot_flags(boot: BootOverride) -> BootFlags {
    BootFlags {
        valid: true,
        persistent: boot.persistent,
        // IPMI has no mode to read back: without a label (Current) the EFI bit, as always.
        efi: boot.mode != BootMode::Legacy,
        device: match boot.device {
            BootDevice::Pxe => kiln_ipmi::BootDevice::Pxe,
            BootDevice::Disk => kiln_ipmi::BootDevice::Disk,
            BootDevice::Bios => kiln_ipmi::BootDevice::BiosSetup,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_bytes() {
        let pxe_once_uefi = BootOverride {
            device: BootDevice::Pxe,
            persistent: false,
            mode: BootMode::Uefi,
        };
        assert_eq!(boot_flags(pxe_once_uefi).encode(), [0xA0, 0x04, 0, 0, 0]);
        let disk_persistent_legacy = BootOverride {
            device: BootDevice::Disk,
            persistent: true,
            mode: BootMode::Legacy,
        };
        assert_eq!(
            boot_flags(disk_persistent_legacy).encode(),
            [0xC0, 0x08, 0, 0, 0]
        );
        let bios = BootOverride {
            device: BootDevice::Bios,
            persistent: false,
            mode: BootMode::Legacy,
        };
        assert_eq!(boot_flags(bios).encode(), [0x80, 0x18, 0, 0, 0]);
    }

    #[test]
    fn vendors() {
        assert_eq!(vendor_name(0x1291), Some("MontaVista (OpenIPMI ipmi_sim)"));
        assert_eq!(vendor_name(674), Some("Dell"));
        assert_eq!(vendor_name(999_999), None);
    }

    #[test]
    fn construction_checks_limits_and_hides_password() {
        let a = BmcAddress::parse("ipmi://10.0.0.5").unwrap();
        let b = IpmiBmc::new(&a, "admin", &Secret::new("s3cr3t-pw")).unwrap();
        let shown = format!("{b:?}");
        assert!(
            shown.contains("ipmi://10.0.0.5:623") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        let e = IpmiBmc::new(&a, "admin", &Secret::new("x".repeat(21))).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Auth);
        assert!(!e.to_string().contains("xxxxx"), "{e}");
        let r = BmcAddress::parse("redfish+http://h").unwrap();
        assert!(IpmiBmc::new(&r, "a", &Secret::new("p")).is_err());
    }
}
