use kiln_api::event_data::{BmcTask, EventData};
use kiln_api::{EventKind, EventView, Phase, PhaseStatus, TimelineView};

use super::*;

const MAC: &str = "52:54:00:3f:00:01";

/// The events of one real QEMU machine (BIOS, iPXE ROM), recorded by
/// tests/e2e/fixtures/record-qemu-events.sh (kinds and details; no typed data then).
fn qemu_bios() -> Vec<EventView> {
    include_str!("../../../../tests/e2e/fixtures/qemu-bios-events.json")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a recorded event"))
        .collect()
}

fn inputs<'a>(events: &'a [EventView], now_ms: u64) -> Inputs<'a> {
    Inputs {
        machine: "wf-bios",
        mac: MAC,
        bmc: Some("10.0.9.1"),
        server_url: "http://10.77.0.1:8080",
        events,
        now_ms,
        unknown_macs: &[],
        driverless: None,
    }
}

fn event(at_ms: u64, data: EventData) -> EventView {
    let kind = data.kind();
    EventView {
        id: 0,
        at: rfc3339_ms(at_ms),
        at_ms,
        machine: Some("wf-bios".into()),
        mac: None,
        ip: None,
        kind,
        detail: data.to_string(),
        data: Some(data),
    }
}

/// Created at `t`, powered through the BMC (confirmed at t+3 s), no DHCP since.
fn powered_no_dhcp(t: u64) -> Vec<EventView> {
    vec![
        event(
            t,
            EventData::WorkflowCreated {
                workflow: "wf-1".into(),
                template: "debian".into(),
                retry_of: None,
            },
        ),
        event(
            t + 1000,
            EventData::BmcBootDevice {
                device: "pxe".into(),
                persistent: false,
                mode: "legacy".into(),
            },
        ),
        event(
            t + 2000,
            EventData::BmcPower {
                was: "off".into(),
                sending: "on".into(),
            },
        ),
        event(
            t + 3000,
            EventData::BmcDone {
                task: BmcTask::Netboot,
                result: "was off: powered on (confirmed)".into(),
            },
        ),
    ]
}

fn phases(t: &TimelineView) -> Vec<(Phase, PhaseStatus)> {
    t.phases.iter().map(|p| (p.phase, p.status)).collect()
}

#[test]
fn a_recorded_qemu_install_reads_as_its_phases_in_order() {
    let events = qemu_bios();
    let end = events.last().unwrap().at_ms;
    let t = timeline(&inputs(&events, end + 60_000));
    use Phase as P;
    let done = PhaseStatus::Done;
    assert_eq!(
        phases(&t),
        vec![
            (P::FirstDhcp, done),
            (P::IpxeScript, done),
            (P::KernelFetch, done),
            (P::AgentUp, done),
            (P::Action, done),
            (P::Action, done),
            (P::Action, done),
            (P::Reboot, done),
            (P::PhoneHome, done),
        ]
    );
    assert_eq!(t.workflow.as_deref(), Some("wf-bios-1796642868767"));
    assert_eq!(t.current, None);
    assert_eq!(t.diagnosis, None);
    assert_eq!(
        t.outcome.as_deref(),
        Some("workflow.succeeded: installed OS phoned home")
    );
    // Kernel fetched (initrd at 11:27:51.756) → agent's claim at 11:28:06.121.
    assert_eq!(t.phases[3].duration_ms, 14_365);
    let image = &t.phases[4];
    assert_eq!(image.subject.as_deref(), Some("stream-image (image2disk)"));
    assert_eq!(image.bytes, Some(1_610_612_736));
    // 1,610,612,736 bytes over 16.627 s (started 11:28:07.456, done 11:28:24.083).
    assert_eq!(image.rate_bps, Some(1_610_612_736_000 / 16_627));
    assert_eq!(
        t.phases[7].duration_ms, 2_714,
        "reboot → the installed OS's DHCP"
    );
    assert_eq!(t.phases[8].duration_ms, 106_742, "its DHCP → phone-home");
}

#[test]
fn midway_the_last_phase_runs_and_within_its_bound_is_not_diagnosed() {
    let events = qemu_bios();
    for cut in 1..events.len() {
        let part = &events[..cut];
        let now = part.last().unwrap().at_ms + 1000;
        let t = timeline(&inputs(part, now));
        let last = part.last().unwrap().kind;
        // Between the agent's call and an action, or two actions, no phase runs.
        let between = [
            EventKind::AgentClaimed,
            EventKind::InventoryReported,
            EventKind::WorkflowRunning,
            EventKind::ActionSucceeded,
        ];
        if between.contains(&last) {
            assert_eq!(t.current, None);
            continue;
        }
        let current = t
            .current
            .expect("an unfinished workflow has a running phase");
        assert_eq!(current, t.phases.len() - 1);
        assert_eq!(t.phases[current].status, PhaseStatus::Running);
        assert_eq!(t.diagnosis, None, "cut at {cut}: {t:?}");
    }
}

#[test]
fn no_dhcp_after_power_on_is_diagnosed_past_its_bound_naming_the_mac() {
    let t0 = 1_000_000;
    let events = powered_no_dhcp(t0);
    let confirmed = t0 + 3000;
    let within = timeline(&inputs(&events, confirmed + bounds::FIRST_DHCP_S * 1000));
    assert_eq!(within.diagnosis, None);
    assert_eq!(
        phases(&within),
        vec![
            (Phase::PowerOn, PhaseStatus::Done),
            (Phase::FirstDhcp, PhaseStatus::Running)
        ]
    );
    let t = timeline(&inputs(&events, confirmed + 125_000));
    let d = t.diagnosis.expect("overdue");
    assert_eq!(d.phase, Phase::FirstDhcp);
    assert_eq!(
        d.summary,
        format!("powered on 125 s ago, no DHCP from {MAC}")
    );
    assert!(
        d.causes[0].contains("PXE (network boot) is disabled"),
        "{d:?}"
    );
    assert!(d.causes.iter().any(|c| c.contains("wrong VLAN")));
    assert!(
        d.causes
            .last()
            .unwrap()
            .contains("differs from hardware.csv")
    );
}

#[test]
fn an_unknown_mac_seen_since_power_on_is_named_first() {
    let t0 = 1_000_000;
    let events = powered_no_dhcp(t0);
    let seen = |first, last| Sighting {
        mac: "52:54:00:aa:bb:cc".into(),
        first_seen_ms: first,
        last_seen_ms: last,
        asked: "PXE arch 0 (BIOS)".into(),
    };
    let now = t0 + 200_000;
    let recent = [seen(t0 + 10_000, t0 + 20_000)];
    let t = timeline(&Inputs {
        unknown_macs: &recent,
        ..inputs(&events, now)
    });
    let d = t.diagnosis.unwrap();
    assert!(
        d.causes[0].contains("52:54:00:aa:bb:cc (PXE arch 0 (BIOS))") && d.causes[0].contains(MAC),
        "{d:?}"
    );
    // One seen only before the power-on is no hint about this boot.
    let old = [seen(t0 - 50_000, t0 - 40_000)];
    let t = timeline(&Inputs {
        unknown_macs: &old,
        ..inputs(&events, now)
    });
    let d = t.diagnosis.unwrap();
    assert!(!d.causes.iter().any(|c| c.contains("aa:bb:cc")), "{d:?}");
}

#[test]
fn kernel_fetched_without_an_agent_call_points_at_the_nic_driver() {
    let events = qemu_bios();
    let fetched = events
        .iter()
        .position(|e| e.detail.contains("initrd.img 200"))
        .unwrap();
    let part = &events[..=fetched];
    let now = part.last().unwrap().at_ms + 95_000;
    let t = timeline(&inputs(part, now));
    let d = t.diagnosis.expect("overdue");
    assert_eq!(d.phase, Phase::AgentUp);
    assert_eq!(d.summary, "kernel fetched 95 s ago, no agent call");
    assert!(d.causes[0].contains("lacks the NIC's driver"), "{d:?}");
    assert!(d.causes[0].contains("no inventory yet"), "{d:?}");

    let devices = ["00:03.0 Realtek RTL-8139 [10ec:8139]".to_string()];
    let t = timeline(&Inputs {
        driverless: Some(&devices),
        ..inputs(part, now)
    });
    let d = t.diagnosis.unwrap();
    assert!(d.causes[0].contains("RTL-8139 [10ec:8139]"), "{d:?}");

    // The agent OS took an address: its driver works, the agent cannot reach Kiln.
    let with_dhcp = &events[..fetched + 3];
    assert_eq!(with_dhcp.last().unwrap().kind, EventKind::DhcpAck);
    let t = timeline(&inputs(with_dhcp, now));
    let d = t.diagnosis.unwrap();
    assert!(d.causes[0].contains("took 10.77.0.57"), "{d:?}");
    assert!(!d.causes.iter().any(|c| c.contains("driver")), "{d:?}");
}

#[test]
fn only_the_newest_workflow_counts_and_a_failure_ends_it() {
    let mut events = qemu_bios();
    let mut again = powered_no_dhcp(events.last().unwrap().at_ms + 10_000);
    let failed_at = again.last().unwrap().at_ms + 5000;
    again.push(event(
        failed_at,
        EventData::WorkflowEntered {
            workflow: "wf-1".into(),
            from: None,
            to: kiln_api::agent::WorkflowState::TimedOut,
            reason: "no DHCP".into(),
        },
    ));
    events.extend(again);
    let t = timeline(&inputs(&events, failed_at + 500_000));
    assert_eq!(t.workflow.as_deref(), Some("wf-1"));
    assert_eq!(
        phases(&t),
        vec![
            (Phase::PowerOn, PhaseStatus::Done),
            (Phase::FirstDhcp, PhaseStatus::Failed)
        ]
    );
    assert_eq!((t.current, t.diagnosis), (None, None));
    assert!(t.outcome.unwrap().starts_with("workflow.timed-out"));
}

#[test]
fn durations_read_as_seconds_then_minutes() {
    assert_eq!(secs(95_400), "95 s");
    assert_eq!(secs(245_000), "245 s");
    assert_eq!(secs(725_000), "12 min 5 s");
}
