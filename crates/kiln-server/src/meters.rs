//! What `/metrics` says: every metric described (`# HELP`, units), the build, machines and
//! workflows by state, and the BMC calls each driver makes. The boot services count their own
//! packets, transfers and bytes; their names are listed here too, so one list documents all.

use std::time::Instant;

use kiln_bmc::{Bmc, BmcError, BmcInfo, BootOverride, PowerAction, PowerState};
use kiln_model::workflow::WorkflowState;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Every metric Kiln exports, with its kind and help text (`/metrics` shows the help).
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        "kiln_build_info",
        Kind::Gauge,
        "The running kiln: 1, with its version and commit as labels.",
    ),
    (
        "kiln_machines",
        Kind::Gauge,
        "Enrolled machines by state: idle (no unfinished workflow) or the state of the unfinished one.",
    ),
    (
        "kiln_workflows",
        Kind::Gauge,
        "Workflows kept in the store by state (succeeded, failed and timed-out are results).",
    ),
    (
        "kiln_bmc_calls_total",
        Kind::Counter,
        "Calls to BMCs by operation and result (ok or the error class).",
    ),
    (
        "kiln_bmc_call_seconds",
        Kind::Histogram,
        "How long one BMC call took, by operation.",
    ),
    (
        "kiln_http_file_bytes_total",
        Kind::Counter,
        "Bytes of files sent over HTTP by root: images, artifacts (agent kernel and initrd), boot.",
    ),
    (
        "kiln_http_requests_total",
        Kind::Counter,
        "HTTP requests answered on the provisioning network, by route and status.",
    ),
    (
        "kiln_http_response_seconds",
        Kind::Histogram,
        "Time to answer an HTTP request (to the response head), by route.",
    ),
    (
        "kiln_http_connections_open",
        Kind::Gauge,
        "HTTP connections open now.",
    ),
    (
        "kiln_http_connections_refused_total",
        Kind::Counter,
        "HTTP connections closed at once by a limit, by reason.",
    ),
    (
        "kiln_http_timeouts_total",
        Kind::Counter,
        "HTTP connections closed by a time limit, by phase.",
    ),
    (
        "kiln_dhcp_packets_total",
        Kind::Counter,
        "DHCP packets received, by outcome (answered, ignored and why).",
    ),
    (
        "kiln_dhcp_decide_seconds",
        Kind::Histogram,
        "Time to decide the answer to one DHCP packet.",
    ),
    (
        "kiln_dhcp_send_errors_total",
        Kind::Counter,
        "DHCP answers the socket refused to send.",
    ),
    (
        "kiln_tftp_transfers_total",
        Kind::Counter,
        "TFTP transfers by outcome.",
    ),
    (
        "kiln_tftp_bytes_total",
        Kind::Counter,
        "Bytes sent over TFTP (acknowledged).",
    ),
    (
        "kiln_tftp_transfer_seconds",
        Kind::Histogram,
        "Duration of one TFTP transfer.",
    ),
    (
        "kiln_events_dropped_total",
        Kind::Counter,
        "Events not stored because the writer's queue was full.",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Describes every metric and sets `kiln_build_info` (once per process is enough; again is
/// harmless).
pub fn describe(version: &str) {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => describe_counter!(name, help),
            Kind::Gauge => describe_gauge!(name, help),
            Kind::Histogram if name.ends_with("_seconds") => {
                describe_histogram!(name, Unit::Seconds, help)
            }
            Kind::Histogram => describe_histogram!(name, help),
        }
    }
    let (number, commit) = match version.split_once(" (") {
        Some((n, c)) => (n.to_string(), c.trim_end_matches(')').to_string()),
        None => (version.to_string(), String::new()),
    };
    metrics::gauge!("kiln_build_info", "version" => number, "commit" => commit).set(1.0);
}

/// The states machines and workflows are counted in, so a state that empties reads 0 (a
/// dashboard sees it drop rather than stop).
const MACHINE_STATES: [&str; 5] = ["idle", "pending", "netbooting", "running", "rebooting"];
const WORKFLOW_STATES: [&str; 7] = [
    "pending",
    "netbooting",
    "running",
    "rebooting",
    "succeeded",
    "failed",
    "timed-out",
];

/// How many are in each state.
pub type Counts = Vec<(&'static str, u64)>;

/// Counts per state: machines (by their unfinished workflow, else idle) and workflows.
pub fn by_state(machines: usize, workflows: &[(WorkflowState, u64)]) -> (Counts, Counts) {
    let mut wf: Counts = WORKFLOW_STATES.iter().map(|s| (*s, 0)).collect();
    let mut busy: Counts = MACHINE_STATES.iter().map(|s| (*s, 0)).collect();
    for &(state, n) in workflows {
        let name = state.name();
        if let Some(slot) = wf.iter_mut().find(|(s, _)| *s == name) {
            slot.1 += n;
        }
        if !state.is_terminal()
            && let Some(slot) = busy.iter_mut().find(|(s, _)| *s == name)
        {
            slot.1 += n;
        }
    }
    let unfinished: u64 = busy.iter().map(|(_, n)| n).sum();
    busy[0].1 = (machines as u64).saturating_sub(unfinished);
    (busy, wf)
}

/// Sets `kiln_machines` and `kiln_workflows`.
pub fn record_states(machines: usize, workflows: &[(WorkflowState, u64)]) {
    let (by_machine, by_workflow) = by_state(machines, workflows);
    for (state, n) in by_machine {
        metrics::gauge!("kiln_machines", "state" => state).set(n as f64);
    }
    for (state, n) in by_workflow {
        metrics::gauge!("kiln_workflows", "state" => state).set(n as f64);
    }
}

/// A driver for the machine's BMC (as [`kiln_bmc::open`]) whose every call is counted and timed.
pub async fn open_bmc(
    endpoint: &kiln_model::hardware::BmcEndpoint,
    opts: &kiln_bmc::OpenOptions,
) -> Result<Box<dyn Bmc>, BmcError> {
    Ok(Box::new(Metered(kiln_bmc::open(endpoint, opts).await?)))
}

/// A BMC driver whose every call is counted and timed.
pub struct Metered(pub Box<dyn Bmc>);

fn result_label<T>(r: &Result<T, BmcError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => crate::bmc_actions::kind_name(e.kind()),
    }
}

fn observe<T>(op: &'static str, started: Instant, r: Result<T, BmcError>) -> Result<T, BmcError> {
    metrics::counter!("kiln_bmc_calls_total", "op" => op, "result" => result_label(&r))
        .increment(1);
    metrics::histogram!("kiln_bmc_call_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    r
}

#[async_trait::async_trait]
impl Bmc for Metered {
    async fn identify(&self) -> Result<BmcInfo, BmcError> {
        let t = Instant::now();
        observe("identify", t, self.0.identify().await)
    }
    async fn power_state(&self) -> Result<PowerState, BmcError> {
        let t = Instant::now();
        observe("power_state", t, self.0.power_state().await)
    }
    async fn power(&self, action: PowerAction) -> Result<(), BmcError> {
        let t = Instant::now();
        observe("power", t, self.0.power(action).await)
    }
    async fn set_boot(&self, boot: BootOverride) -> Result<(), BmcError> {
        let t = Instant::now();
        observe("set_boot", t, self.0.set_boot(boot).await)
    }
    async fn close(&self) -> Result<(), BmcError> {
        self.0.close().await
    }
    fn hint(&self) -> Option<String> {
        self.0.hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_are_idle_unless_a_workflow_runs_and_workflows_count_by_result() {
        use WorkflowState::*;
        let wfs = [(Succeeded, 1), (Running, 1), (Failed, 1), (Netbooting, 1)];
        let (machines, workflows) = by_state(4, &wfs);
        let get = |v: &[(&str, u64)], k: &str| v.iter().find(|(s, _)| *s == k).unwrap().1;
        assert_eq!(get(&machines, "idle"), 2);
        assert_eq!(get(&machines, "running"), 1);
        assert_eq!(get(&machines, "netbooting"), 1);
        assert_eq!(get(&machines, "pending"), 0, "an empty state reads 0");
        assert_eq!(get(&workflows, "succeeded"), 1);
        assert_eq!(get(&workflows, "failed"), 1);
        assert_eq!(get(&workflows, "timed-out"), 0);
        assert_eq!(workflows.iter().map(|(_, n)| n).sum::<u64>(), 4);
    }

    /// The Grafana dashboard shipped in the package (packaging/grafana/kiln.json) queries only
    /// metrics Kiln exports, and shows each of them.
    #[test]
    fn the_dashboard_queries_what_kiln_exports() {
        let text = include_str!("../../../packaging/grafana/kiln.json");
        let dash: serde_json::Value = serde_json::from_str(text).unwrap();
        let mut queried = std::collections::BTreeSet::new();
        for panel in dash["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if word.starts_with("kiln_") {
                        let family = ["_bucket", "_sum", "_count"]
                            .iter()
                            .fold(word, |w, s| w.strip_suffix(s).unwrap_or(w));
                        queried.insert(family.to_string());
                    }
                }
            }
        }
        let exported: std::collections::BTreeSet<String> =
            METRICS.iter().map(|m| m.0.to_string()).collect();
        let unknown: Vec<_> = queried.difference(&exported).collect();
        assert!(unknown.is_empty(), "the dashboard queries {unknown:?}");
        let unshown: Vec<_> = exported.difference(&queried).collect();
        assert!(
            unshown.is_empty(),
            "the dashboard does not show {unshown:?}"
        );
    }

    #[test]
    fn every_metric_is_named_once_and_as_prometheus_expects() {
        let mut names: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len(), "a metric is listed twice");
        for (name, kind, help) in METRICS {
            assert!(name.starts_with("kiln_"), "{name}");
            assert_eq!(name.ends_with("_total"), *kind == Kind::Counter, "{name}");
            assert!(!help.is_empty() && help.ends_with('.'), "{name}: {help}");
        }
    }
}
