//! The closing summary: per machine, how long each phase took, and the totals.

use serde::Serialize;

use super::progress::{ImageStats, Timeline, human_ms};
use kiln_client::render::human_bytes;

/// One machine's outcome, as printed and as written to `--summary-json`.
#[derive(Clone, Debug, Serialize)]
pub struct MachineReport {
    pub hostname: String,
    /// The install workflow's id.
    pub workflow: String,
    pub role: &'static str,
    pub bmc: &'static str,
    /// succeeded | failed | timed-out | unfinished
    pub result: String,
    pub message: String,
    pub timeline: Timeline,
    /// Phase durations in ms, in [`PHASES`] order; `None` when a boundary was not seen.
    pub phases_ms: Vec<Option<u64>>,
    pub total_ms: Option<u64>,
    pub image: Option<ImageStats>,
    /// kubeadm subcommands the installed OS ran (from the test OS's stand-in).
    pub kubeadm: Vec<String>,
}

/// The phases, as column headers.
pub const PHASES: [&str; 6] = [
    "POWER-ON",
    "DHCP",
    "AGENT UP",
    "IMAGE WRITTEN",
    "DISK BOOT",
    "PHONE HOME",
];

/// Durations of the phases: each from the previous boundary to its own.
pub fn phases(t: &Timeline) -> Vec<Option<u64>> {
    let b = [
        t.created_ms,
        t.powered_on_ms,
        t.dhcp_ms,
        t.agent_up_ms,
        t.image_written_ms,
        t.os_up_ms,
        t.phoned_home_ms,
    ];
    b.windows(2)
        .map(|w| match (w[0], w[1]) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        })
        .collect()
}

/// Created → phoned home (or ended, when it failed).
pub fn total(t: &Timeline) -> Option<u64> {
    let end = t.phoned_home_ms.or(t.ended_ms)?;
    Some(end.saturating_sub(t.created_ms?))
}

fn cell(ms: Option<u64>) -> String {
    ms.map(human_ms).unwrap_or_else(|| "-".into())
}

/// The table, then one line per machine for the image stream.
pub fn render(reports: &[MachineReport]) -> String {
    let mut header = vec!["MACHINE", "ROLE", "BMC"];
    header.extend(PHASES);
    header.extend(["TOTAL", "RESULT"]);
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let mut row = vec![r.hostname.clone(), r.role.to_string(), r.bmc.to_string()];
            row.extend(r.phases_ms.iter().map(|&p| cell(p)));
            row.push(cell(r.total_ms));
            row.push(r.result.clone());
            row
        })
        .collect();
    let mut out = kiln_client::render::table(&header, &rows);
    for r in reports {
        if let Some(img) = r.image
            && img.ms > 0
        {
            let per_s = |b: u64| human_bytes(b.saturating_mul(1000) / img.ms);
            out += &match img.written_bytes {
                Some(w) => format!(
                    "{}: image streamed in {}: {} over the network ({}/s), {} written ({}/s)\n",
                    r.hostname,
                    human_ms(img.ms),
                    human_bytes(img.streamed_bytes),
                    per_s(img.streamed_bytes),
                    human_bytes(w),
                    per_s(w)
                ),
                None => format!(
                    "{}: image streamed in {}: {} ({}/s)\n",
                    r.hostname,
                    human_ms(img.ms),
                    human_bytes(img.streamed_bytes),
                    per_s(img.streamed_bytes)
                ),
            };
        }
        if r.result != "succeeded" && !r.message.is_empty() {
            out += &format!("{}: {}\n", r.hostname, r.message);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline() -> Timeline {
        Timeline {
            created_ms: Some(1_000),
            powered_on_ms: Some(3_000),
            dhcp_ms: Some(10_500),
            agent_up_ms: Some(21_000),
            image_written_ms: Some(38_000),
            os_up_ms: Some(45_000),
            phoned_home_ms: Some(121_000),
            ended_ms: Some(121_000),
            ..Timeline::default()
        }
    }

    #[test]
    fn phases_are_differences_of_boundaries() {
        assert_eq!(
            phases(&timeline()),
            vec![
                Some(2_000),
                Some(7_500),
                Some(10_500),
                Some(17_000),
                Some(7_000),
                Some(76_000)
            ]
        );
        assert_eq!(total(&timeline()), Some(120_000));
        let mut t = timeline();
        t.os_up_ms = None;
        let p = phases(&t);
        assert_eq!((p[4], p[5]), (None, None));
        assert_eq!(total(&t), Some(120_000));
    }

    #[test]
    fn table_has_a_row_per_machine_and_the_image_rate() {
        let t = timeline();
        let r = MachineReport {
            workflow: "wf-1".into(),
            hostname: "demo-cp1".into(),
            role: "control-plane",
            bmc: "ipmi",
            result: "succeeded".into(),
            message: String::new(),
            phases_ms: phases(&t),
            total_ms: total(&t),
            timeline: t,
            image: Some(ImageStats {
                streamed_bytes: 160 << 20,
                written_bytes: Some(1 << 30),
                ms: 16_000,
            }),
            kubeadm: vec!["init".into()],
        };
        let text = render(&[r]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("MACHINE"), "{text}");
        assert!(
            lines[0].contains("POWER-ON") && lines[0].contains("PHONE HOME"),
            "{text}"
        );
        assert!(
            lines[1].contains("demo-cp1")
                && lines[1].contains("2.0s")
                && lines[1].contains("1m16s")
                && lines[1].contains("2m00s")
                && lines[1].ends_with("succeeded"),
            "{text}"
        );
        assert_eq!(
            lines[2],
            "demo-cp1: image streamed in 16.0s: 160.0 MiB over the network (10.0 MiB/s), 1.0 GiB written (64.0 MiB/s)"
        );
    }
}
