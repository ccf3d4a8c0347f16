//! `kiln why NAME`: a machine's timeline as text: one line per phase (started, how long, its
//! normal bound, what ended it), the running one marked, then the diagnosis if there is one.

use std::fmt::Write;

use kiln_api::{PhaseStatus, PhaseView, TimelineView};

/// `3.2 s`, `125 s`, `12 min 5 s`.
fn took(ms: u64) -> String {
    match ms {
        0..10_000 => format!("{:.1} s", ms as f64 / 1000.0),
        10_000..600_000 => format!("{} s", ms / 1000),
        _ => format!("{} min {} s", ms / 60_000, ms / 1000 % 60),
    }
}

/// `1.6 GB`, `153 MB`, `12 kB` (decimal units, as disks are sold).
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.0} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.0} MB", b / 1e6),
        _ => format!("{:.1} GB", b / 1e9),
    }
}

fn phase_line(p: &PhaseView, current: bool) -> String {
    let mark = match (current, p.status) {
        (true, _) => "▶",
        (_, PhaseStatus::Failed) => "✗",
        _ => " ",
    };
    let name = match &p.subject {
        Some(s) if p.phase == kiln_api::Phase::Action => format!("{} {s}", p.phase.label()),
        _ => p.phase.label().to_string(),
    };
    let mut took = took(p.duration_ms);
    if current {
        took.push_str(" so far");
    }
    let normal = p.normal_s.map(|s| format!("≤{s} s")).unwrap_or_default();
    let mut detail = p.detail.clone();
    if let (Some(bytes), Some(rate)) = (p.bytes, p.rate_bps) {
        detail = format!("{} at {}/s; {detail}", size(bytes), size(rate));
    }
    format!(
        "{mark} {name:<34} {:<24} {took:>14} {normal:>7}  {detail}",
        p.started_at
    )
}

/// The whole view, ending with a newline.
pub fn timeline(t: &TimelineView) -> String {
    let mut out = String::new();
    let workflow = t.workflow.as_deref().unwrap_or("(no workflow)");
    let _ = writeln!(out, "{} ({}), workflow {workflow}", t.machine, t.mac);
    if t.phases.is_empty() {
        let _ = writeln!(out, "  nothing recorded yet");
    }
    for (i, p) in t.phases.iter().enumerate() {
        let _ = writeln!(out, "{}", phase_line(p, t.current == Some(i)));
    }
    if let Some(outcome) = &t.outcome {
        let _ = writeln!(out, "ended: {outcome}");
    }
    match &t.diagnosis {
        Some(d) => {
            let _ = writeln!(out, "\n{}", d.summary);
            let _ = writeln!(out, "likely causes:");
            for c in &d.causes {
                let _ = writeln!(out, "  - {c}");
            }
        }
        None if t.current.is_some() => {
            let _ = writeln!(out, "on time (as of {})", t.now);
        }
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::{Diagnosis, Phase};

    fn phase(phase: Phase, status: PhaseStatus, duration_ms: u64) -> PhaseView {
        PhaseView {
            phase,
            subject: None,
            status,
            started_at: "2026-12-07T03:06:38.817Z".into(),
            started_at_ms: 0,
            ended_at_ms: None,
            duration_ms,
            normal_s: Some(120),
            detail: "waiting".into(),
            bytes: None,
            rate_bps: None,
        }
    }

    #[test]
    fn the_running_phase_is_marked_and_the_diagnosis_follows() {
        let mut image = phase(Phase::Action, PhaseStatus::Done, 20_243);
        image.subject = Some("stream-image (image2disk)".into());
        image.normal_s = None;
        image.bytes = Some(1_610_612_736);
        image.rate_bps = Some(79_563_935);
        let t = TimelineView {
            machine: "n1".into(),
            mac: "52:54:00:3f:00:01".into(),
            workflow: Some("wf-1".into()),
            now: "2026-12-07T03:09:00Z".into(),
            phases: vec![
                image,
                phase(Phase::FirstDhcp, PhaseStatus::Running, 125_000),
            ],
            current: Some(1),
            diagnosis: Some(Diagnosis {
                phase: Phase::FirstDhcp,
                summary: "powered on 125 s ago, no DHCP from 52:54:00:3f:00:01".into(),
                causes: vec!["PXE disabled".into(), "wrong VLAN".into()],
            }),
            outcome: None,
        };
        let text = timeline(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "n1 (52:54:00:3f:00:01), workflow wf-1");
        assert!(
            lines[1].starts_with("  action stream-image (image2disk)"),
            "{text}"
        );
        assert!(
            lines[1].contains("20 s") && lines[1].contains("1.6 GB at 80 MB/s"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("▶ first DHCP") && lines[2].contains("125 s so far"),
            "{text}"
        );
        assert!(lines[2].contains("≤120 s"), "{text}");
        assert_eq!(
            &lines[4..],
            [
                "powered on 125 s ago, no DHCP from 52:54:00:3f:00:01",
                "likely causes:",
                "  - PXE disabled",
                "  - wrong VLAN"
            ]
        );
    }

    #[test]
    fn durations_and_sizes_read_short() {
        assert_eq!(took(3_231), "3.2 s");
        assert_eq!(took(126_970), "126 s");
        assert_eq!(took(725_000), "12 min 5 s");
        assert_eq!(size(153_364_631), "153 MB");
        assert_eq!(size(999), "999 B");
    }
}
