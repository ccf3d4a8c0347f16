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

pub fn boot_mode(mode: BootMode) -> &'static str {
    match mode {
        BootMode::Uefi => "UEFI",
        BootMode::Legacy => "Legacy",
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

pub fn plan_boot(boot: &Boot, want: BootOverride) -> Result<BootPlan, String> {
    let target = boot_target(want.device);
    let enabled = boot_enabled(want.persistent);
    let mode = boot_mode(want.mode);
    let check = |field: &str, value: &str, allowed: &Option<Vec<String>>| match allowed {
        Some(list) if !list.iter().any(|a| a == value) => Err(format!(
            "{field} {value:?} (allowed: {})",
            list_or_none(list)
        )),
        _ => Ok(()),
    };
    check("BootSourceOverrideTarget", target, &boot.target_allowed)?;
    check("BootSourceOverrideEnabled", enabled, &boot.enabled_allowed)?;
    check("BootSourceOverrideMode", mode, &boot.mode_allowed)?;
    let mode = match boot.mode.as_deref() {
        Some(current) if current.eq_ignore_ascii_case(mode) => None,
        _ => Some(mode),
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

/// Which system member to drive. `wanted` is an Id (`1`, `System.Embedded.1`) or a path; `Err`
/// explains the choice that could not be made. `Ok(None)`: `wanted` is not a member, so the
/// caller may still try it as a path (sushy-tools, for one, redirects a name to the UUID).
pub fn choose_system(members: &[String], wanted: Option<&str>) -> Result<Option<String>, String> {
    match wanted {
        Some(w) => {
            let w = w.trim_end_matches('/');
            Ok(members
                .iter()
                .find(|m| {
                    let m = m.trim_end_matches('/');
                    m == w || m.rsplit('/').next() == Some(w)
                })
                .cloned())
        }
        None => match members {
            [one] => Ok(Some(one.clone())),
            [] => Err("any system: the Systems collection is empty".into()),
            many => Err(format!(
                "choosing among several systems ({}): configure the system id",
                many.join(", ")
            )),
        },
    }
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

    fn want(device: BootDevice, persistent: bool, mode: BootMode) -> BootOverride {
        BootOverride {
            device,
            persistent,
            mode,
        }
    }

    #[test]
    fn boot_patch_bodies() {
        let plan = plan_boot(
            &Boot::default(),
            want(BootDevice::Pxe, false, BootMode::Uefi),
        )
        .unwrap();
        assert_eq!(
            boot_patch_body(&plan),
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once",
                            "BootSourceOverrideMode": "UEFI"}})
        );
        let plan = plan_boot(
            &Boot::default(),
            want(BootDevice::Disk, true, BootMode::Legacy),
        )
        .unwrap();
        assert_eq!(
            boot_patch_body(&plan),
            json!({"Boot": {"BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Continuous",
                            "BootSourceOverrideMode": "Legacy"}})
        );
        let plan = plan_boot(
            &Boot::default(),
            want(BootDevice::Bios, false, BootMode::Uefi),
        )
        .unwrap();
        assert_eq!(plan.target, "BiosSetup");
    }

    #[test]
    fn boot_mode_left_out_when_already_set() {
        let boot = Boot {
            mode: Some("UEFI".into()),
            ..Boot::default()
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
            ..Boot::default()
        };
        let err = plan_boot(&boot, want(BootDevice::Bios, false, BootMode::Uefi)).unwrap_err();
        assert!(
            err.contains("\"BiosSetup\"") && err.contains("Pxe, Cd, Hdd"),
            "{err}"
        );
        assert!(plan_boot(&boot, want(BootDevice::Disk, false, BootMode::Uefi)).is_ok());
        let boot = Boot {
            enabled_allowed: Some(strings(&["Once", "Disabled"])),
            ..Boot::default()
        };
        let err = plan_boot(&boot, want(BootDevice::Pxe, true, BootMode::Uefi)).unwrap_err();
        assert!(err.contains("Continuous"), "{err}");
        let boot = Boot {
            mode_allowed: Some(strings(&["UEFI"])),
            ..Boot::default()
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
        assert_eq!(
            choose_system(&one, None).unwrap().unwrap(),
            "/redfish/v1/Systems/1"
        );
        let two = strings(&["/redfish/v1/Systems/a", "/redfish/v1/Systems/b/"]);
        let err = choose_system(&two, None).unwrap_err();
        assert!(
            err.contains("/redfish/v1/Systems/a, /redfish/v1/Systems/b/"),
            "{err}"
        );
        assert_eq!(
            choose_system(&two, Some("b")).unwrap().unwrap(),
            "/redfish/v1/Systems/b/"
        );
        assert_eq!(
            choose_system(&two, Some("/redfish/v1/Systems/a/"))
                .unwrap()
                .unwrap(),
            "/redfish/v1/Systems/a"
        );
        assert_eq!(choose_system(&two, Some("vm1")).unwrap(), None);
        assert!(choose_system(&[], None).unwrap_err().contains("empty"));
        assert_eq!(
            system_path_for("/redfish/v1/Systems/", "vm1"),
            "/redfish/v1/Systems/vm1"
        );
        assert_eq!(system_path_for("/redfish/v1/Systems", "/x/y"), "/x/y");
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("user admin password s3cret! rejected", &["s3cret!", ""]),
            "user admin password <redacted> rejected"
        );
    }
}
