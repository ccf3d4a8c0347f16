//! Pure Redfish decisions: which ResetType to send, the boot PATCH body, what a power state or an
//! error body means, which system to drive. No I/O, so every quirk here is unit-tested.

use super::types::{Boot, ErrorEnvelope};
use crate::{BootDevice, BootMode, BootOverride, PowerAction, PowerState};
use serde_json::{Value, json};

/// `PowerState` as the BMC reports it, transitions included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedPower {
    On,
    Off,
    PoweringOn,
    PoweringOff,
    /// Powered, execution paused (a VM, or a halted host).
    Paused,
}

impl ObservedPower {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "On" => ObservedPower::On,
            "Off" => ObservedPower::Off,
            "PoweringOn" => ObservedPower::PoweringOn,
            "PoweringOff" => ObservedPower::PoweringOff,
            "Paused" => ObservedPower::Paused,
            _ => return None,
        })
    }

    /// Coarse state for callers: anything but `Off` has power applied (a machine that is
    /// powering on or off still draws power and may run code).
    pub fn coarse(&self) -> PowerState {
        match self {
            ObservedPower::Off => PowerState::Off,
            _ => PowerState::On,
        }
    }

    /// Whether the transition to `target` is finished (transitional states are not).
    pub fn settled_at(&self, target: PowerState) -> bool {
        matches!(
            (self, target),
            (ObservedPower::On, PowerState::On) | (ObservedPower::Off, PowerState::Off)
        )
    }
}

/// What `power()` does first, given the state it just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstStep {
    /// Already there: send nothing (many BMCs refuse "On" for a running host).
    Done,
    /// The BMC is already moving there: send nothing, wait.
    Wait,
    Send,
}

pub fn first_step(action: PowerAction, now: &ObservedPower) -> FirstStep {
    use ObservedPower as O;
    match (action, now) {
        (PowerAction::On, O::On | O::Paused) => FirstStep::Done,
        (PowerAction::On, O::PoweringOn) => FirstStep::Wait,
        (PowerAction::Off | PowerAction::SoftOff, O::Off) => FirstStep::Done,
        (PowerAction::SoftOff, O::PoweringOff) => FirstStep::Wait,
        _ => FirstStep::Send,
    }
}

/// ResetType candidates for an action, best first. `current` matters only for `Cycle`: a machine
/// that is off is just powered on (PowerCycle on an off host fails on some BMCs).
pub fn reset_candidates(action: PowerAction, current: PowerState) -> &'static [&'static str] {
    match (action, current) {
        (PowerAction::On, _) | (PowerAction::Cycle, PowerState::Off) => &["On", "ForceOn"],
        (PowerAction::Off, _) => &["ForceOff"],
        (PowerAction::SoftOff, _) => &["GracefulShutdown"],
        (PowerAction::Cycle, PowerState::On) => &["PowerCycle", "ForceRestart"],
        (PowerAction::Reset, _) => &["ForceRestart"],
    }
}

/// The ResetType to send. `allowed` is `ResetType@Redfish.AllowableValues` (or the ActionInfo
/// list); `None` means the BMC did not say, so the first candidate is used.
/// `Err` carries the text for `BmcError::Unsupported`.
pub fn choose_reset_type(
    action: PowerAction,
    current: PowerState,
    allowed: Option<&[String]>,
) -> Result<&'static str, String> {
    let candidates = reset_candidates(action, current);
    let Some(allowed) = allowed else {
        return Ok(candidates[0]);
    };
    candidates
        .iter()
        .find(|c| allowed.iter().any(|a| a == *c))
        .copied()
        .ok_or_else(|| {
            format!(
                "power {action}: needs ResetType {}, the BMC allows only {}",
                candidates.join(" or "),
                list_or_none(allowed)
            )
        })
}

pub fn boot_target(device: BootDevice) -> &'static str {
    match device {
        BootDevice::Pxe => "Pxe",
        BootDevice::Disk => "Hdd",
        BootDevice::Bios => "BiosSetup",
    }
}

pub fn boot_enabled(persistent: bool) -> &'static str {
    if persistent { "Continuous" } else { "Once" }
}

/// Whether the system offers a PXE next-boot override: its
/// `BootSourceOverrideTarget@Redfish.AllowableValues` lists `Pxe`; `None` without a list.
pub fn pxe_offered(boot: &Boot) -> Option<bool> {
    let allowed = boot.target_allowed.as_ref()?;
    Some(allowed.iter().any(|v| v == boot_target(BootDevice::Pxe)))
}

/// The `BootSourceOverrideMode` value for a mode; `None`: leave it as the system has it.
pub fn boot_mode(mode: BootMode) -> Option<&'static str> {
    match mode {
        BootMode::Uefi => Some("UEFI"),
        BootMode::Legacy => Some("Legacy"),
        BootMode::Current => None,
    }
}

/// What to PATCH for a boot override, decided from the system's current `Boot` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    pub target: &'static str,
    pub enabled: &'static str,
    /// `None` when the BMC already has this mode: not sending it avoids the many BMCs that
    /// reject a (redundant) BootSourceOverrideMode.
    pub mode: Option<&'static str>,
}

/// `Err` carries the text for `BmcError::Unsupported`: the system does not advertise the
/// override (a `Boot` with only `BootOrder`, say) or not this target, so nothing is sent.
pub fn plan_boot(boot: &Boot, want: BootOverride) -> Result<BootPlan, String> {
    let target = boot_target(want.device);
    let enabled = boot_enabled(want.persistent);
    if boot.target.is_none() && boot.target_allowed.is_none() {
        return Err(format!(
            "boot override (its Boot object has no BootSourceOverrideTarget{}): set the next boot \
             another way, or run the workflow with --no-power",
            if boot.enabled.is_some() {
                ""
            } else {
                " nor BootSourceOverrideEnabled"
            }
        ));
    }
    let check = |field: &str, value: &str, allowed: &Option<Vec<String>>| match allowed {
        Some(list) if !list.iter().any(|a| a == value) => Err(format!(
            "{field} {value:?} (allowed: {})",
            list_or_none(list)
        )),
        _ => Ok(()),
    };
    check("BootSourceOverrideTarget", target, &boot.target_allowed)?;
    check("BootSourceOverrideEnabled", enabled, &boot.enabled_allowed)?;
    let mode = match boot_mode(want.mode) {
        // Not asked for (no label): the system keeps the mode it reads, Legacy included.
        None => None,
        Some(mode) => {
            check("BootSourceOverrideMode", mode, &boot.mode_allowed)?;
            match boot.mode.as_deref() {
                Some(current) if current.eq_ignore_ascii_case(mode) => None,
                _ => Some(mode),
            }
        }
    };
    Ok(BootPlan {
        target,
        enabled,
        mode,
    })
}

pub fn boot_patch_body(plan: &BootPlan) -> Value {
    let mut boot = json!({
        "BootSourceOverrideTarget": plan.target,
        "BootSourceOverrideEnabled": plan.enabled,
    });
    if let Some(mode) = plan.mode {
        boot["BootSourceOverrideMode"] = json!(mode);
    }
    json!({ "Boot": boot })
}

/// The readable part of an error reply: Redfish `error.message` and each
/// `@Message.ExtendedInfo[].Message` (deduplicated), else the start of the body text.
pub fn error_text(body: &[u8]) -> String {
    if let Ok(ErrorEnvelope { error: Some(e) }) = serde_json::from_slice::<ErrorEnvelope>(body) {
        let mut parts: Vec<String> = Vec::new();
        let messages = e.message.iter().chain(
            e.extended_info
                .iter()
                .filter_map(|i| i.message.as_ref().or(i.message_id.as_ref())),
        );
        for text in messages {
            push_unique(&mut parts, text);
        }
        if parts.is_empty()
            && let Some(code) = &e.code
        {
            push_unique(&mut parts, code);
        }
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return "(empty body)".into();
    }
    truncate(&text, 300)
}

/// Whether an error reply is about `property` (in the message, its arguments or its
/// RelatedProperties), e.g. a BMC refusing `BootSourceOverrideMode`.
pub fn error_mentions(body: &[u8], property: &str) -> bool {
    let Ok(ErrorEnvelope { error: Some(e) }) = serde_json::from_slice::<ErrorEnvelope>(body) else {
        // Not the Redfish envelope: fall back to the raw text.
        return String::from_utf8_lossy(body).contains(property);
    };
    let hit = |s: &str| s.contains(property);
    e.message.as_deref().is_some_and(hit)
        || e.extended_info.iter().any(|i| {
            i.message.as_deref().is_some_and(hit)
                || i.related_properties.iter().any(|p| hit(p))
                || i.message_args.iter().any(|a| a.as_str().is_some_and(hit))
        })
}

/// Why the driver drives the system it does (kept in the hint, shown by `kiln bmc info`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum ChosenBy {
    /// The BMC has one system.
    Only,
    /// The machine's MAC is one of this system's NICs.
    Mac { mac: String, interface: String },
    /// Named by the machine's label or the path in its bmc_ip.
    Configured { wanted: String },
}

impl std::fmt::Display for ChosenBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChosenBy::Only => f.write_str("the only system"),
            ChosenBy::Mac { mac, interface } => write!(f, "MAC {mac} on {interface}"),
            ChosenBy::Configured { wanted } => write!(f, "configured as {wanted}"),
        }
    }
}

/// Which member of the Systems collection to drive, before any MAC is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemPick {
    Member(String),
    /// `wanted` is not a member by Id or path: the caller may still try it as a path
    /// (sushy-tools, for one, redirects a name to the UUID).
    TryPath,
    /// Several members and nothing named one: match the machine's MAC.
    Several,
    Empty,
}

/// `wanted` is an Id (`1`, `System.Embedded.1`, `Node1`) or a path.
pub fn choose_system(members: &[String], wanted: Option<&str>) -> SystemPick {
    match wanted {
        Some(w) => {
            let w = w.trim_end_matches('/');
            members
                .iter()
                .find(|m| {
                    let m = m.trim_end_matches('/');
                    m == w || m.rsplit('/').next() == Some(w)
                })
                .map_or(SystemPick::TryPath, |m| SystemPick::Member(m.clone()))
        }
        None => match members {
            [one] => SystemPick::Member(one.clone()),
            [] => SystemPick::Empty,
            _ => SystemPick::Several,
        },
    }
}

/// A MAC as `aa:bb:cc:dd:ee:ff`, from the forms BMCs write (any case, `:` or `-` or none,
/// padded); `None` for "Not Available", empty and all-zero values.
pub fn normalize_mac(text: &str) -> Option<String> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    if hex.chars().all(|c| c == '0') {
        return None;
    }
    let pairs: Vec<&str> = (0..6).map(|i| &hex[2 * i..2 * i + 2]).collect();
    Some(pairs.join(":"))
}

/// One system behind the BMC and the NIC MACs it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemNics {
    pub path: String,
    pub id: String,
    /// (normalized MAC, the interface's path), in the BMC's order.
    pub macs: Vec<(String, String)>,
}

/// The system whose NICs include `mac`: its index and the matching interface. `Err` says why
/// none could be chosen, listing every system with its Id and MACs.
pub fn choose_by_mac(systems: &[SystemNics], mac: Option<&str>) -> Result<(usize, String), String> {
    let wanted = mac.and_then(normalize_mac);
    let hits: Vec<(usize, &str)> = systems
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let w = wanted.as_deref()?;
            s.macs
                .iter()
                .find(|(m, _)| m == w)
                .map(|(_, iface)| (i, iface.as_str()))
        })
        .collect();
    if let [(i, iface)] = hits.as_slice() {
        return Ok((*i, iface.to_string()));
    }
    let listing = systems
        .iter()
        .map(|s| {
            let mut macs: Vec<&str> = s.macs.iter().map(|(m, _)| m.as_str()).collect();
            macs.dedup();
            let macs = if macs.is_empty() {
                "no MACs listed".to_string()
            } else {
                macs.join(", ")
            };
            format!("{} ({}: {macs})", s.id, s.path)
        })
        .collect::<Vec<_>>()
        .join("; ");
    let why = match (&wanted, hits.len()) {
        (None, _) => "several systems and no machine MAC to match".to_string(),
        (Some(m), 0) => format!("several systems and none lists MAC {m}"),
        (Some(m), _) => format!("several systems list MAC {m}"),
    };
    Err(format!(
        "choosing a system: {why}: {listing}; name one with the label \
         kiln.dev/redfish-system=<Id> or its path in bmc_ip"
    ))
}

/// The path of a system given by id or path, when it is not in the collection.
pub fn system_path_for(systems_collection: &str, wanted: &str) -> String {
    if wanted.starts_with('/') {
        wanted.to_string()
    } else {
        format!("{}/{}", systems_collection.trim_end_matches('/'), wanted)
    }
}

/// Replace every occurrence of each secret by `<redacted>`: BMC error bodies may echo a request.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(*s, "<redacted>");
    }
    out
}

fn push_unique(parts: &mut Vec<String>, text: &str) {
    let text = text.trim();
    if !text.is_empty() && !parts.iter().any(|p| p == text) {
        parts.push(text.to_string());
    }
}

fn list_or_none(list: &[String]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reset_type_without_allowable_values_takes_the_first_candidate() {
        use PowerAction::*;
        use PowerState::{Off as Down, On as Up};
        let pick = |a, s| choose_reset_type(a, s, None).unwrap();
        assert_eq!(pick(On, Down), "On");
        assert_eq!(pick(Off, Up), "ForceOff");
        assert_eq!(pick(SoftOff, Up), "GracefulShutdown");
        assert_eq!(pick(Cycle, Up), "PowerCycle");
        assert_eq!(pick(Cycle, Down), "On");
        assert_eq!(pick(Reset, Up), "ForceRestart");
    }

    #[test]
    fn reset_type_respects_allowable_values() {
        // sushy-tools' list: no PowerCycle, so a cycle of a running machine is a ForceRestart.
        let sushy = strings(&[
            "On",
            "ForceOff",
            "GracefulShutdown",
            "GracefulRestart",
            "ForceRestart",
            "Nmi",
            "ForceOn",
        ]);
        let c = |a, s| choose_reset_type(a, s, Some(&sushy));
        assert_eq!(
            c(PowerAction::Cycle, PowerState::On).unwrap(),
            "ForceRestart"
        );
        assert_eq!(c(PowerAction::Cycle, PowerState::Off).unwrap(), "On");
        let only_force_on = strings(&["ForceOn", "ForceOff"]);
        assert_eq!(
            choose_reset_type(PowerAction::On, PowerState::Off, Some(&only_force_on)).unwrap(),
            "ForceOn"
        );
        let err = choose_reset_type(PowerAction::SoftOff, PowerState::On, Some(&only_force_on))
            .unwrap_err();
        assert!(err.contains("GracefulShutdown"), "{err}");
        assert!(err.contains("ForceOn, ForceOff"), "{err}");
        let err = choose_reset_type(PowerAction::Reset, PowerState::On, Some(&[])).unwrap_err();
        assert!(err.contains("allows only none"), "{err}");
    }

    #[test]
    fn power_states_and_transitions() {
        let p = |s| ObservedPower::parse(s).unwrap();
        assert_eq!(p("On").coarse(), PowerState::On);
        assert_eq!(p("Off").coarse(), PowerState::Off);
        assert_eq!(p("PoweringOn").coarse(), PowerState::On);
        assert_eq!(p("PoweringOff").coarse(), PowerState::On);
        assert_eq!(p("Paused").coarse(), PowerState::On);
        assert!(!p("PoweringOn").settled_at(PowerState::On));
        assert!(!p("PoweringOff").settled_at(PowerState::Off));
        assert!(p("Off").settled_at(PowerState::Off));
        assert!(!p("On").settled_at(PowerState::Off));
        assert_eq!(ObservedPower::parse("on"), None);
        assert_eq!(ObservedPower::parse(""), None);
    }

    #[test]
    fn first_step_never_resends_what_is_done_or_under_way() {
        use ObservedPower as O;
        use PowerAction as A;
        assert_eq!(first_step(A::On, &O::On), FirstStep::Done);
        assert_eq!(first_step(A::On, &O::Paused), FirstStep::Done);
        assert_eq!(first_step(A::On, &O::PoweringOn), FirstStep::Wait);
        assert_eq!(first_step(A::On, &O::Off), FirstStep::Send);
        assert_eq!(first_step(A::On, &O::PoweringOff), FirstStep::Send);
        assert_eq!(first_step(A::Off, &O::Off), FirstStep::Done);
        assert_eq!(first_step(A::Off, &O::PoweringOff), FirstStep::Send);
        assert_eq!(first_step(A::SoftOff, &O::PoweringOff), FirstStep::Wait);
        assert_eq!(first_step(A::SoftOff, &O::Off), FirstStep::Done);
        assert_eq!(first_step(A::Cycle, &O::On), FirstStep::Send);
        assert_eq!(first_step(A::Cycle, &O::Off), FirstStep::Send);
        assert_eq!(first_step(A::Reset, &O::On), FirstStep::Send);
    }

    /// A `Boot` object that advertises the override (the DMTF mockups' usual shape).
    fn overridable() -> Boot {
        Boot {
            target: Some("None".into()),
            enabled: Some("Disabled".into()),
            ..Boot::default()
        }
    }

    fn want(device: BootDevice, persistent: bool, mode: BootMode) -> BootOverride {
        BootOverride {
            device,
            persistent,
            mode,
        }
    }

    #[test]
    fn boot_patch_bodies() {
        let plan = plan_boot(&overridable(), want(BootDevice::Pxe, false, BootMode::Uefi)).unwrap();
        assert_eq!(
            boot_patch_body(&plan),
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once",
                            "BootSourceOverrideMode": "UEFI"}})
        );
        let plan = plan_boot(
            &overridable(),
            want(BootDevice::Disk, true, BootMode::Legacy),
        )
        .unwrap();
        assert_eq!(
            boot_patch_body(&plan),
            json!({"Boot": {"BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Continuous",
                            "BootSourceOverrideMode": "Legacy"}})
        );
        let plan = plan_boot(
            &overridable(),
            want(BootDevice::Bios, false, BootMode::Uefi),
        )
        .unwrap();
        assert_eq!(plan.target, "BiosSetup");
    }

    #[test]
    fn boot_mode_left_out_when_already_set() {
        let boot = Boot {
            mode: Some("UEFI".into()),
            ..overridable()
        };
        let plan = plan_boot(&boot, want(BootDevice::Pxe, false, BootMode::Uefi)).unwrap();
        assert_eq!(plan.mode, None);
        assert!(
            boot_patch_body(&plan)["Boot"]
                .get("BootSourceOverrideMode")
                .is_none()
        );
        let plan = plan_boot(&boot, want(BootDevice::Pxe, false, BootMode::Legacy)).unwrap();
        assert_eq!(plan.mode, Some("Legacy"));
    }

    #[test]
    fn boot_checked_against_allowable_values() {
        let boot = Boot {
            target_allowed: Some(strings(&["Pxe", "Cd", "Hdd"])),
            ..overridable()
        };
        let err = plan_boot(&boot, want(BootDevice::Bios, false, BootMode::Uefi)).unwrap_err();
        assert!(
            err.contains("\"BiosSetup\"") && err.contains("Pxe, Cd, Hdd"),
            "{err}"
        );
        assert!(plan_boot(&boot, want(BootDevice::Disk, false, BootMode::Uefi)).is_ok());
        let boot = Boot {
            enabled_allowed: Some(strings(&["Once", "Disabled"])),
            ..overridable()
        };
        let err = plan_boot(&boot, want(BootDevice::Pxe, true, BootMode::Uefi)).unwrap_err();
        assert!(err.contains("Continuous"), "{err}");
        let boot = Boot {
            mode_allowed: Some(strings(&["UEFI"])),
            ..overridable()
        };
        let err = plan_boot(&boot, want(BootDevice::Pxe, true, BootMode::Legacy)).unwrap_err();
        assert!(err.contains("BootSourceOverrideMode \"Legacy\""), "{err}");
    }

    #[test]
    fn error_text_from_envelope_and_plain_bodies() {
        let body = br##"{"error": {"code": "Base.1.0.GeneralError", "message": "A general error has occurred.",
            "@Message.ExtendedInfo": [{"MessageId": "Base.1.8.PropertyValueNotInList",
               "Message": "The value UEFI for the property BootSourceOverrideMode is not in the list of acceptable values."},
               {"MessageId": "Base.1.0.GeneralError", "Message": "A general error has occurred."},
               {"MessageId": "Ami.1.0.PreconditionHeaderMissing"}]}}"##;
        assert_eq!(
            error_text(body),
            "A general error has occurred.; The value UEFI for the property BootSourceOverrideMode \
             is not in the list of acceptable values.; Ami.1.0.PreconditionHeaderMissing"
        );
        assert_eq!(
            error_text(br##"{"error": {"code": "Base.1.0.Oops"}}"##),
            "Base.1.0.Oops"
        );
        assert_eq!(
            error_text(b"<html>\n<b>Bad\tGateway</b></html>"),
            "<html> <b>Bad Gateway</b></html>"
        );
        assert_eq!(error_text(b""), "(empty body)");
        let long = "x".repeat(1000);
        assert_eq!(error_text(long.as_bytes()).chars().count(), 301);
    }

    #[test]
    fn error_mentions_finds_the_property_anywhere() {
        let in_related = br##"{"error": {"message": "general", "@Message.ExtendedInfo": [
            {"MessageId": "Base.1.8.PropertyNotWritable", "RelatedProperties": ["#/Boot/BootSourceOverrideMode"]}]}}"##;
        assert!(error_mentions(in_related, "BootSourceOverrideMode"));
        let in_args = br##"{"error": {"@Message.ExtendedInfo": [
            {"MessageId": "Base.1.8.PropertyUnknown", "MessageArgs": ["BootSourceOverrideMode"]}]}}"##;
        assert!(error_mentions(in_args, "BootSourceOverrideMode"));
        let other = br##"{"error": {"message": "BootSourceOverrideTarget Foo is not allowed"}}"##;
        assert!(!error_mentions(other, "BootSourceOverrideMode"));
        assert!(error_mentions(
            b"Bad BootSourceOverrideMode",
            "BootSourceOverrideMode"
        ));
    }

    #[test]
    fn system_choice() {
        let one = strings(&["/redfish/v1/Systems/1"]);
        let member = |p: &str| SystemPick::Member(p.into());
        assert_eq!(choose_system(&one, None), member("/redfish/v1/Systems/1"));
        let two = strings(&["/redfish/v1/Systems/a", "/redfish/v1/Systems/b/"]);
        assert_eq!(choose_system(&two, None), SystemPick::Several);
        assert_eq!(
            choose_system(&two, Some("b")),
            member("/redfish/v1/Systems/b/")
        );
        assert_eq!(
            choose_system(&two, Some("/redfish/v1/Systems/a/")),
            member("/redfish/v1/Systems/a")
        );
        assert_eq!(choose_system(&two, Some("vm1")), SystemPick::TryPath);
        assert_eq!(choose_system(&[], None), SystemPick::Empty);
        assert_eq!(
            system_path_for("/redfish/v1/Systems/", "vm1"),
            "/redfish/v1/Systems/vm1"
        );
        assert_eq!(system_path_for("/redfish/v1/Systems", "/x/y"), "/x/y");
    }

    #[test]
    fn macs_as_bmcs_write_them() {
        let n = |t: &str| normalize_mac(t);
        assert_eq!(n("12:44:6A:3B:04:11").as_deref(), Some("12:44:6a:3b:04:11"));
        // Cray EX pads PermanentMACAddress with a space.
        assert_eq!(
            n(" 00:40:a6:83:c5:30").as_deref(),
            Some("00:40:a6:83:c5:30")
        );
        assert_eq!(n("00-40-A6-83-C5-30").as_deref(), Some("00:40:a6:83:c5:30"));
        assert_eq!(n("0040a683c530").as_deref(), Some("00:40:a6:83:c5:30"));
        for none in [
            "Not Available",
            "",
            "00:00:00:00:00:00",
            "12:44:6A:3B:04",
            "zz:44:6a:3b:04:11",
        ] {
            assert_eq!(n(none), None, "{none:?}");
        }
    }

    fn nics(id: &str, macs: &[&str]) -> SystemNics {
        let path = format!("/redfish/v1/Systems/{id}");
        SystemNics {
            macs: macs
                .iter()
                .enumerate()
                .map(|(i, m)| (m.to_string(), format!("{path}/EthernetInterfaces/{i}")))
                .collect(),
            id: id.into(),
            path,
        }
    }

    #[test]
    fn mac_picks_the_one_system_that_lists_it() {
        let systems = [
            nics("Node0", &["00:40:a6:83:b6:37"]),
            nics("Node1", &["00:40:a6:83:b6:38", "00:40:a6:83:b6:39"]),
            nics("Node2", &[]),
        ];
        assert_eq!(
            choose_by_mac(&systems, Some("00:40:A6:83:B6:39")).unwrap(),
            (
                1,
                "/redfish/v1/Systems/Node1/EthernetInterfaces/1".to_string()
            )
        );
        let err = choose_by_mac(&systems, Some("52:54:00:00:00:01")).unwrap_err();
        assert!(err.contains("none lists MAC 52:54:00:00:00:01"), "{err}");
        for part in [
            "Node0 (/redfish/v1/Systems/Node0: 00:40:a6:83:b6:37)",
            "Node1 (/redfish/v1/Systems/Node1: 00:40:a6:83:b6:38, 00:40:a6:83:b6:39)",
            "Node2 (/redfish/v1/Systems/Node2: no MACs listed)",
            "kiln.dev/redfish-system",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
        let err = choose_by_mac(&systems, None).unwrap_err();
        assert!(err.contains("no machine MAC"), "{err}");
        let twice = [
            nics("A", &["02:00:00:00:00:01"]),
            nics("B", &["02:00:00:00:00:01"]),
        ];
        let err = choose_by_mac(&twice, Some("02:00:00:00:00:01")).unwrap_err();
        assert!(err.contains("several systems list MAC"), "{err}");
    }

    #[test]
    fn chosen_by_reads_as_a_reason() {
        assert_eq!(ChosenBy::Only.to_string(), "the only system");
        let mac = ChosenBy::Mac {
            mac: "00:40:a6:83:b6:37".into(),
            interface: "/redfish/v1/Systems/Node0/EthernetInterfaces/ManagementEthernet".into(),
        };
        assert!(mac.to_string().starts_with("MAC 00:40:a6:83:b6:37 on "));
        let json = serde_json::to_value(&mac).unwrap();
        assert_eq!(json["by"], "mac");
        assert_eq!(serde_json::from_value::<ChosenBy>(json).unwrap(), mac);
    }

    #[test]
    fn no_override_fields_means_unsupported() {
        // OpenBMC-style: a Boot object with only BootOrder.
        let only_order = Boot::default();
        let err = plan_boot(&only_order, want(BootDevice::Pxe, false, BootMode::Uefi)).unwrap_err();
        assert!(err.contains("no BootSourceOverrideTarget"), "{err}");
        assert!(err.contains("--no-power"), "{err}");
    }

    #[test]
    fn current_mode_is_never_sent_and_never_checked() {
        let legacy = Boot {
            mode: Some("Legacy".into()),
            mode_allowed: Some(strings(&["Legacy"])),
            ..overridable()
        };
        let plan = plan_boot(&legacy, want(BootDevice::Pxe, false, BootMode::Current)).unwrap();
        assert_eq!(plan.mode, None);
        assert_eq!(
            boot_patch_body(&plan),
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})
        );
        // Asked for explicitly, UEFI on a Legacy-only system is refused before sending.
        let err = plan_boot(&legacy, want(BootDevice::Pxe, false, BootMode::Uefi)).unwrap_err();
        assert!(err.contains("BootSourceOverrideMode \"UEFI\""), "{err}");
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("user admin password s3cret! rejected", &["s3cret!", ""]),
            "user admin password <redacted> rejected"
        );
    }

    #[test]
    fn pxe_override_offered_only_when_listed() {
        let boot = |allowed: Option<&[&str]>| Boot {
            target_allowed: allowed.map(|a| a.iter().map(|s| s.to_string()).collect()),
            ..Boot::default()
        };
        assert_eq!(
            pxe_offered(&boot(Some(&["None", "Pxe", "Hdd"]))),
            Some(true)
        );
        assert_eq!(
            pxe_offered(&boot(Some(&["None", "Hdd", "Cd"]))),
            Some(false)
        );
        assert_eq!(pxe_offered(&boot(None)), None);
    }
}
