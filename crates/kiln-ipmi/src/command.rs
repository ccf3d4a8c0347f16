//! Typed IPMI commands: each builds its request and parses its response data (after the completion code).

use crate::Error;
use crate::wire::Request;
use std::fmt;

pub const NETFN_CHASSIS: u8 = 0x00;
pub const NETFN_APP: u8 = 0x06;

/// An IPMI completion code (IPMI v2.0 table 5-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompletionCode(pub u8);

impl CompletionCode {
    pub const OK: CompletionCode = CompletionCode(0x00);
    pub const INVALID_COMMAND: CompletionCode = CompletionCode(0xC1);
    pub const INVALID_DATA_FIELD: CompletionCode = CompletionCode(0xCC);
    pub const INSUFFICIENT_PRIVILEGE: CompletionCode = CompletionCode(0xD4);

    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "command completed normally",
            0x80 => "parameter not supported",
            0x81 => "parameter set in progress / command-specific error",
            0x82 => "parameter is read-only",
            0xC0 => "node busy",
            0xC1 => "invalid command",
            0xC2 => "command invalid for given LUN",
            0xC3 => "timeout while processing command",
            0xC4 => "out of space",
            0xC5 => "reservation canceled or invalid reservation ID",
            0xC6 => "request data truncated",
            0xC7 => "request data length invalid",
            0xC8 => "request data field length limit exceeded",
            0xC9 => "parameter out of range",
            0xCA => "cannot return number of requested data bytes",
            0xCB => "requested sensor, data, or record not present",
            0xCC => "invalid data field in request",
            0xCD => "command illegal for specified sensor or record type",
            0xCE => "command response could not be provided",
            0xCF => "cannot execute duplicated request",
            0xD0 => "SDR repository in update mode",
            0xD1 => "device in firmware update mode",
            0xD2 => "BMC initialization in progress",
            0xD3 => "destination unavailable",
            0xD4 => "insufficient privilege level",
            0xD5 => "command not supported in present state",
            0xD6 => "command sub-function disabled or unavailable",
            0xFF => "unspecified error",
            0x01..=0x7E => "OEM completion code",
            _ => "command-specific completion code",
        }
    }
}

impl fmt::Display for CompletionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04X} ({})", self.0, self.name())
    }
}

/// A command with a typed response.
pub trait Command {
    /// For error messages, e.g. "Get Chassis Status".
    const NAME: &'static str;
    /// Safe to send again when the reply is lost: reads, and writes that set an absolute value.
    const RETRY_SAFE: bool;
    type Output;
    fn request(&self) -> Request;
    /// Parses the response data after the completion code.
    fn parse(&self, data: &[u8]) -> Result<Self::Output, Error>;
}

fn need(data: &[u8], n: usize, what: &'static str) -> Result<(), Error> {
    if data.len() < n {
        Err(Error::truncated(what, n, data.len()))
    } else {
        Ok(())
    }
}

/// Get Channel Authentication Capabilities with the IPMI v2.0 extended data bit (App 0x38).
#[derive(Debug, Clone, Copy)]
pub struct GetChannelAuthCapabilities;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelAuthCapabilities {
    pub channel: u8,
    /// The channel accepts IPMI v2.0 / RMCP+ sessions.
    pub ipmi20: bool,
    /// IANA number of the OEM that defined any OEM auth type (0 if none).
    pub oem_id: u32,
}

impl Command for GetChannelAuthCapabilities {
    const NAME: &'static str = "Get Channel Authentication Capabilities";
    const RETRY_SAFE: bool = true;
    type Output = ChannelAuthCapabilities;

    fn request(&self) -> Request {
        Request {
            netfn: NETFN_APP,
            cmd: 0x38,
            // Bit 7: get IPMI v2.0 extended data; channel 0xE = this channel. Max privilege: admin.
            data: vec![0x8E, crate::rakp::PRIV_ADMIN],
        }
    }

    fn parse(&self, d: &[u8]) -> Result<ChannelAuthCapabilities, Error> {
        need(d, 8, Self::NAME)?;
        // Byte 2 bit 7: extended capabilities present; byte 4 bit 1: IPMI v2.0 connections supported.
        let ipmi20 = d[1] & 0x80 != 0 && d[3] & 0x02 != 0;
        Ok(ChannelAuthCapabilities {
            channel: d[0] & 0x0F,
            ipmi20,
            oem_id: u32::from_le_bytes([d[4], d[5], d[6], 0]),
        })
    }
}

/// Set Session Privilege Level (App 0x3B).
#[derive(Debug, Clone, Copy)]
pub struct SetSessionPrivilege(pub u8);

impl Command for SetSessionPrivilege {
    const NAME: &'static str = "Set Session Privilege Level";
    const RETRY_SAFE: bool = true;
    type Output = u8;

    fn request(&self) -> Request {
        Request {
            netfn: NETFN_APP,
            cmd: 0x3B,
            data: vec![self.0],
        }
    }

    fn parse(&self, d: &[u8]) -> Result<u8, Error> {
        need(d, 1, Self::NAME)?;
        Ok(d[0] & 0x0F)
    }
}

/// Close Session (App 0x3C) for the BMC's session ID.
#[derive(Debug, Clone, Copy)]
pub struct CloseSession(pub u32);

impl Command for CloseSession {
    const NAME: &'static str = "Close Session";
    const RETRY_SAFE: bool = true;
    type Output = ();

    fn request(&self) -> Request {
        Request {
            netfn: NETFN_APP,
            cmd: 0x3C,
            data: self.0.to_le_bytes().to_vec(),
        }
    }

    fn parse(&self, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}

/// Get Device ID (App 0x01).
#[derive(Debug, Clone, Copy)]
pub struct GetDeviceId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId {
    pub device_id: u8,
    pub device_revision: u8,
    /// Major firmware revision (binary) and minor (BCD, shown as two digits).
    pub firmware_major: u8,
    pub firmware_minor: u8,
    /// IPMI version, e.g. 0x02 = 2.0 (BCD, minor in the high nibble).
    pub ipmi_version: u8,
    /// 20-bit IANA enterprise number.
    pub manufacturer_id: u32,
    pub product_id: u16,
    pub aux_firmware: Option<[u8; 4]>,
}

impl DeviceId {
    /// "9.08" for major 9, minor BCD 0x08.
    pub fn firmware(&self) -> String {
        format!("{}.{:02x}", self.firmware_major, self.firmware_minor)
    }
}

impl Command for GetDeviceId {
    const NAME: &'static str = "Get Device ID";
    const RETRY_SAFE: bool = true;
    type Output = DeviceId;

    fn request(&self) -> Request {
        Request {
            netfn: NETFN_APP,
            cmd: 0x01,
            data: vec![],
        }
    }

    fn parse(&self, d: &[u8]) -> Result<DeviceId, Error> {
        need(d, 11, Self::NAME)?;
        Ok(DeviceId {
            device_id: d[0],
            device_revision: d[1] & 0x0F,
            firmware_major: d[2] & 0x7F,
            firmware_minor: d[3],
            ipmi_version: d[4],
            manufacturer_id: u32::from_le_bytes([d[6], d[7], d[8] & 0x0F, 0]),
            product_id: u16::from_le_bytes([d[9], d[10]]),
            aux_firmware: d.get(11..15).map(|a| a.try_into().expect("4 bytes")),
        })
    }
}

/// Get Chassis Status (Chassis 0x01).
#[derive(Debug, Clone, Copy)]
pub struct GetChassisStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisStatus {
    pub power_on: bool,
    pub power_overload: bool,
    pub power_fault: bool,
    /// Last power event byte and misc chassis state byte, raw.
    pub last_event: u8,
    pub misc: u8,
}

impl Command for GetChassisStatus {
    const NAME: &'static str = "Get Chassis Status";
    const RETRY_SAFE: bool = true;
    type Output = ChassisStatus;

    fn request(&self) -> Request {
        Request {
            netfn: NETFN_CHASSIS,
            cmd: 0x01,
            data: vec![],
        }
    }

    fn parse(&self, d: &[u8]) -> Result<ChassisStatus, Error> {
        need(d, 3, Self::NAME)?;
        Ok(ChassisStatus {
            power_on: d[0] & 0x01 != 0,
            power_overload: d[0] & 0x02 != 0,
            power_fault: d[0] & 0x18 != 0,
            last_event: d[1],
            misc: d[2],
        })
    }
}

/// Chassis Control (Chassis 0x02) actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChassisControl {
    PowerDown,
    PowerUp,
    PowerCycle,
    HardReset,
    /// ACPI soft shutdown (power button).
    SoftOff,
}

impl ChassisControl {
    pub fn code(self) -> u8 {
        match self {
            ChassisControl::PowerDown => 0x00,
            ChassisControl::PowerUp => 0x01,
            ChassisControl::PowerCycle => 0x02,
            ChassisControl::HardReset => 0x03,
            ChassisControl::SoftOff => 0x05,
        }
    }

    /// The power state this control ends in, when it can be read back.
    pub fn target_power_on(self) -> bool {
        !matches!(self, ChassisControl::PowerDown | ChassisControl::SoftOff)
    }

    /// Sending it twice has the same effect as once (on/off; not cycle, reset or soft-off).
    pub fn is_idempotent(self) -> bool {
        matches!(self, ChassisControl::PowerDown | ChassisControl::PowerUp)
    }
}

impl Command for ChassisControl {
    const NAME: &'static str = "Chassis Control";
    // Never resent blindly: the client reads the chassis status after a lost reply instead.
    const RETRY_SAFE: bool = false;
    type Output = ();

    fn request(&self) -> Request {
        Request {
            netfn: NETFN_CHASSIS,
            cmd: 0x02,
            data: vec![self.code()],
        }
    }

    fn parse(&self, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}

/// Boot device selector of boot flags data byte 2, bits 5:2 (IPMI v2.0 table 28-14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootDevice {
    NoOverride,
    Pxe,
    Disk,
    DiskSafeMode,
    Diagnostic,
    Cdrom,
    BiosSetup,
    Floppy,
    Other(u8),
}

impl BootDevice {
    /// The selector already shifted into place (0x04 PXE, 0x08 disk, 0x18 BIOS setup).
    pub fn bits(self) -> u8 {
        let sel = match self {
            BootDevice::NoOverride => 0x0,
            BootDevice::Pxe => 0x1,
            BootDevice::Disk => 0x2,
            BootDevice::DiskSafeMode => 0x3,
            BootDevice::Diagnostic => 0x4,
            BootDevice::Cdrom => 0x5,
            BootDevice::BiosSetup => 0x6,
            BootDevice::Floppy => 0xF,
            BootDevice::Other(s) => s & 0x0F,
        };
        sel << 2
    }

    pub fn from_bits(byte: u8) -> Self {
        match (byte >> 2) & 0x0F {
            0x0 => BootDevice::NoOverride,
            0x1 => BootDevice::Pxe,
            0x2 => BootDevice::Disk,
            0x3 => BootDevice::DiskSafeMode,
            0x4 => BootDevice::Diagnostic,
            0x5 => BootDevice::Cdrom,
            0x6 => BootDevice::BiosSetup,
            0xF => BootDevice::Floppy,
            s => BootDevice::Other(s),
        }
    }
}

/// Boot options parameter 5, "boot flags".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BootFlags {
    pub valid: bool,
    /// All future boots (true) or the next boot only.
    pub persistent: bool,
    /// EFI (true) or PC-compatible legacy boot.
    pub efi: bool,
    pub device: BootDevice,
}

impl BootFlags {
    /// The five data bytes of parameter 5.
    pub fn encode(&self) -> [u8; 5] {
        let mut b1 = 0;
        if self.valid {
            b1 |= 0x80;
        }
        if self.persistent {
            b1 |= 0x40;
        }
        if self.efi {
            b1 |= 0x20;
        }
        [b1, self.device.bits(), 0, 0, 0]
    }

    pub fn decode(d: &[u8]) -> Result<Self, Error> {
        need(d, 2, "boot flags parameter")?;
        Ok(BootFlags {
            valid: d[0] & 0x80 != 0,
            persistent: d[0] & 0x40 != 0,
            efi: d[0] & 0x20 != 0,
            device: BootDevice::from_bits(d[1]),
        })
    }
}

/// Boot option parameter selectors.
pub const BOOT_PARAM_SET_IN_PROGRESS: u8 = 0;
pub const BOOT_PARAM_INFO_ACK: u8 = 4;
pub const BOOT_PARAM_FLAGS: u8 = 5;

/// Set System Boot Options (Chassis 0x08): one parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSystemBootOption {
    pub parameter: u8,
    pub data: Vec<u8>,
}

impl SetSystemBootOption {
    pub fn flags(flags: BootFlags) -> Self {
        SetSystemBootOption {
            parameter: BOOT_PARAM_FLAGS,
            data: flags.encode().to_vec(),
        }
    }

    /// Parameter 0: 0 set complete, 1 set in progress, 2 commit write.
    pub fn set_in_progress(state: u8) -> Self {
        SetSystemBootOption {
            parameter: BOOT_PARAM_SET_IN_PROGRESS,
            data: vec![state],
        }
    }

    /// Parameter 4: clear the "BIOS/POST has handled boot info" acknowledge bit, as ipmitool does.
    pub fn clear_bios_ack() -> Self {
        SetSystemBootOption {
            parameter: BOOT_PARAM_INFO_ACK,
            data: vec![0x01, 0x01],
        }
    }
}

impl Command for SetSystemBootOption {
    const NAME: &'static str = "Set System Boot Options";
    // Writes an absolute value: sending it again changes nothing.
    const RETRY_SAFE: bool = true;
    type Output = ();

    fn request(&self) -> Request {
        let mut data = vec![self.parameter & 0x7F];
        data.extend_from_slice(&self.data);
        Request {
            netfn: NETFN_CHASSIS,
            cmd: 0x08,
            data,
        }
    }

    fn parse(&self, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}

/// Get System Boot Options (Chassis 0x09), parameter 5.
#[derive(Debug, Clone, Copy)]
pub struct GetBootFlags;

impl Command for GetBootFlags {
    const NAME: &'static str = "Get System Boot Options";
    const RETRY_SAFE: bool = true;
    type Output = BootFlags;

    fn request(&self) -> Request {
        Request {
            netfn: NETFN_CHASSIS,
            cmd: 0x09,
            data: vec![BOOT_PARAM_FLAGS, 0, 0],
        }
    }

    fn parse(&self, d: &[u8]) -> Result<BootFlags, Error> {
        // Parameter version, parameter selector (bit 7 = invalid/locked), then the 5 data bytes.
        need(d, 4, Self::NAME)?;
        if d[1] & 0x7F != BOOT_PARAM_FLAGS {
            return Err(Error::malformed(
                Self::NAME,
                format!("answered parameter {}, asked for 5", d[1] & 0x7F),
            ));
        }
        BootFlags::decode(&d[2..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_flag_bytes() {
        let pxe_once_legacy = BootFlags {
            valid: true,
            persistent: false,
            efi: false,
            device: BootDevice::Pxe,
        };
        assert_eq!(pxe_once_legacy.encode(), [0x80, 0x04, 0, 0, 0]);
        let disk_persistent_efi = BootFlags {
            valid: true,
            persistent: true,
            efi: true,
            device: BootDevice::Disk,
        };
        assert_eq!(disk_persistent_efi.encode(), [0xE0, 0x08, 0, 0, 0]);
        let bios = BootFlags {
            device: BootDevice::BiosSetup,
            ..pxe_once_legacy
        };
        assert_eq!(bios.encode()[1], 0x18);
        for f in [pxe_once_legacy, disk_persistent_efi, bios] {
            assert_eq!(BootFlags::decode(&f.encode()).unwrap(), f);
        }
        let req = SetSystemBootOption::flags(disk_persistent_efi).request();
        assert_eq!((req.netfn, req.cmd), (0x00, 0x08));
        assert_eq!(req.data, [0x05, 0xE0, 0x08, 0, 0, 0]);
    }

    #[test]
    fn get_boot_flags_parses_ipmi_sim_answer() {
        // What ipmi_sim answers after `bootdev pxe` ("Boot parameter data: 0004000000").
        let f = GetBootFlags
            .parse(&[0x01, 0x05, 0x00, 0x04, 0, 0, 0])
            .unwrap();
        assert_eq!(f.device, BootDevice::Pxe);
        assert!(!f.valid);
        assert!(GetBootFlags.parse(&[0x01, 0x04, 0, 0, 0, 0, 0]).is_err());
        assert!(GetBootFlags.parse(&[0x01]).is_err());
    }

    #[test]
    fn device_id_parses_ipmi_sim_answer() {
        // ipmi_sim with `mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02`.
        let d = GetDeviceId
            .parse(&[
                0x00, 0x03, 0x09, 0x08, 0x02, 0x9f, 0x91, 0x12, 0x00, 0x02, 0x0f,
            ])
            .unwrap();
        assert_eq!(d.manufacturer_id, 0x1291);
        assert_eq!(d.product_id, 0x0f02);
        assert_eq!(d.firmware(), "9.08");
        assert_eq!(d.aux_firmware, None);
        assert!(GetDeviceId.parse(&[0; 10]).is_err());
    }

    #[test]
    fn chassis_status_and_control() {
        assert!(GetChassisStatus.parse(&[0x01, 0, 0]).unwrap().power_on);
        assert!(!GetChassisStatus.parse(&[0x60, 0, 0, 0]).unwrap().power_on);
        assert!(GetChassisStatus.parse(&[0x01, 0]).is_err());
        let codes: Vec<u8> = [
            ChassisControl::PowerDown,
            ChassisControl::PowerUp,
            ChassisControl::PowerCycle,
            ChassisControl::HardReset,
            ChassisControl::SoftOff,
        ]
        .iter()
        .map(|c| c.request().data[0])
        .collect();
        assert_eq!(codes, [0, 1, 2, 3, 5]);
    }

    #[test]
    fn auth_caps() {
        // ipmi_sim: channel 1, v2.0 extended bit, auth types, ..., IPMI 1.5 + 2.0 connections.
        let c = GetChannelAuthCapabilities
            .parse(&[0x01, 0x97, 0x04, 0x03, 0, 0, 0, 0])
            .unwrap();
        assert!(c.ipmi20);
        assert_eq!(c.channel, 1);
        assert!(
            !GetChannelAuthCapabilities
                .parse(&[0x01, 0x17, 0x04, 0x01, 0, 0, 0, 0])
                .unwrap()
                .ipmi20
        );
    }

    #[test]
    fn completion_code_names() {
        assert_eq!(CompletionCode(0xC1).to_string(), "0xC1 (invalid command)");
        assert_eq!(CompletionCode(0xCC).name(), "invalid data field in request");
        assert_eq!(CompletionCode(0xD4).name(), "insufficient privilege level");
    }
}
