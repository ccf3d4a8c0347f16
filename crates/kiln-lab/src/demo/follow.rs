//! The live view: follows the machines (events, workflows, consoles) and the cluster until
//! the install ends; redraws in place on a terminal, prints a line per change otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::api::Kiln;
use super::console::{out, say};
use super::progress::{self, MachineView, Phase};
use super::{Outcome, now_ms};
use crate::Lab;

/// After every workflow ended, how long the cluster may take to say ready or failed.
const CLUSTER_GRACE: Duration = Duration::from_secs(30);

pub struct Follow<'a> {
    pub first_event: i64,
    pub install_start: u64,
    pub cluster: Option<&'a str>,
    pub deadline: Instant,
    pub clock: Instant,
}

/// What the view holds between two redraws.
struct View<'a> {
    f: Follow<'a>,
    tty: bool,
    width: usize,
    last_event: i64,
    drawn: usize,
    keys: Vec<String>,
    /// The cluster's state and its line.
    cluster: Option<(String, String)>,
    last_cluster_poll: Option<Instant>,
    all_ended_at: Option<Instant>,
}

/// The cluster's state and a line about it.
fn cluster_state(kiln: &Kiln, name: &str) -> Result<(String, String), String> {
    let st = kiln.cluster_status(name).map_err(|e| e.to_string())?;
    let phoned = st.nodes.iter().filter(|n| n.phone_home).count();
    let api_server = if st.api_server_confirmed {
        "API server answered"
    } else {
        "API server not confirmed yet"
    };
    Ok((
        st.state.clone(),
        format!(
            "cluster {name}: {}; {phoned}/{} node(s) phoned home; {api_server}",
            st.state,
            st.nodes.len()
        ),
    ))
}

/// Follows the machines until the install ends (or must stop); the outcome and the cluster's
/// last state.
pub fn follow(
    lab: &mut Lab,
    kiln: &Kiln,
    views: &mut [MachineView],
    f: Follow<'_>,
    stop: &AtomicBool,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let mut view = View {
        tty: std::io::stdout().is_terminal(),
        width: std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(120),
        last_event: f.first_event,
        drawn: 0,
        keys: vec![String::new(); views.len() + 1],
        cluster: None,
        last_cluster_poll: None,
        all_ended_at: None,
        f,
    };
    let outcome = loop {
        view.read(kiln, views)?;
        view.draw(views);
        if let Some(o) = view.ended(views) {
            break o;
        }
        if let Some(o) = should_stop(lab, view.f.deadline, stop) {
            break o;
        }
        // About a second between redraws, waking early for a signal.
        for _ in 0..10 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    Ok((outcome, view.cluster.map(|(s, _)| s)))
}

impl View<'_> {
    /// New events, the machines' workflows, their consoles and (every 3 s) the cluster.
    fn read(&mut self, kiln: &Kiln, views: &mut [MachineView]) -> anyhow::Result<()> {
        let now = now_ms();
        for (id, event) in kiln.events_after(self.last_event)? {
            self.last_event = id;
            if let Some(v) = views
                .iter_mut()
                .find(|v| event.machine.as_deref() == Some(v.machine.hostname.as_str()))
            {
                v.on_event(&event);
            }
        }
        // Newest first: the first workflow of each machine since the install began.
        let wfs = kiln.workflows()?;
        for v in views.iter_mut() {
            if let Some(wf) = wfs.iter().find(|w| {
                w.machine == v.machine.hostname && created_ms(w) + 1000 >= self.f.install_start
            }) {
                v.on_workflow(wf.clone());
            }
            v.poll_serial(now);
        }
        if let Some(name) = self.f.cluster
            && self
                .last_cluster_poll
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(3))
        {
            self.last_cluster_poll = Some(Instant::now());
            self.cluster = Some(match cluster_state(kiln, name) {
                Ok(s) => s,
                Err(e) => (
                    "unknown".into(),
                    format!("cluster {name}: status unavailable: {e}"),
                ),
            });
        }
        Ok(())
    }

    fn draw(&mut self, views: &[MachineView]) {
        let now = now_ms();
        let mut lines: Vec<String> = Vec::new();
        if let Some((_, line)) = &self.cluster {
            lines.push(line.clone());
        }
        lines.extend(views.iter().map(|v| progress::line(v, now)));
        let lines: Vec<String> = lines
            .into_iter()
            .map(|l| l.chars().take(self.width.saturating_sub(1)).collect())
            .collect();
        if self.tty {
            let mut frame = String::new();
            if self.drawn > 0 {
                frame += &format!("\x1b[{}A", self.drawn);
            }
            for l in &lines {
                frame += &format!("\x1b[2K{l}\n");
            }
            out(&frame);
            self.drawn = lines.len();
        } else {
            self.print_changes(views, &lines);
        }
    }

    /// Not on a terminal: the lines whose state changed since the last round.
    fn print_changes(&mut self, views: &[MachineView], lines: &[String]) {
        let mut new_keys: Vec<String> = Vec::new();
        if let Some((state, line)) = &self.cluster {
            new_keys.push(format!("{state} {line}"));
        } else {
            new_keys.push(String::new());
        }
        new_keys.extend(views.iter().map(|v| v.phase().key()));
        for (i, k) in new_keys.iter().enumerate() {
            if self.keys.get(i) != Some(k) {
                let line = if self.cluster.is_some() {
                    lines.get(i)
                } else if i > 0 {
                    lines.get(i - 1)
                } else {
                    None
                };
                if let Some(l) = line {
                    say(self.f.clock, l);
                }
            }
        }
        self.keys = new_keys;
    }

    /// How the install ended, once it did.
    fn ended(&mut self, views: &[MachineView]) -> Option<Outcome> {
        let all_ended = views
            .iter()
            .all(|v| matches!(v.phase(), Phase::Done(_) | Phase::Failed(_)));
        if all_ended && self.all_ended_at.is_none() {
            self.all_ended_at = Some(Instant::now());
        }
        let state = self.cluster.as_ref().map(|(s, _)| s.as_str());
        let any_failed = views.iter().any(|v| matches!(v.phase(), Phase::Failed(_)));
        match (self.f.cluster, state) {
            (None, _) if all_ended => Some(if any_failed {
                Outcome::Failed("a workflow failed".into())
            } else {
                Outcome::Succeeded
            }),
            (Some(_), Some("ready")) if all_ended => Some(if any_failed {
                Outcome::Failed("the cluster is ready but a workflow failed".into())
            } else {
                Outcome::Succeeded
            }),
            (Some(c), Some("failed")) => Some(Outcome::Failed(format!("cluster {c} failed"))),
            (Some(c), s)
                if self
                    .all_ended_at
                    .is_some_and(|t| t.elapsed() > CLUSTER_GRACE) =>
            {
                Some(Outcome::Failed(format!(
                    "every workflow ended but cluster {c} is {} after {} s",
                    s.unwrap_or("unknown"),
                    CLUSTER_GRACE.as_secs()
                )))
            }
            _ => None,
        }
    }
}

/// When a workflow was created (0 when the server's time does not parse).
pub fn created_ms(w: &kiln_api::WorkflowView) -> u64 {
    kiln_api::time::parse_rfc3339_ms(&w.created).unwrap_or(0)
}

/// Why following the machines must end now, if it must: a signal, the deadline, or a lab
/// process (kiln serve, an emulator) that died.
pub fn should_stop(lab: &mut Lab, deadline: Instant, stop: &AtomicBool) -> Option<Outcome> {
    if stop.load(Ordering::SeqCst) {
        return Some(Outcome::Interrupted);
    }
    if Instant::now() > deadline {
        return Some(Outcome::TimedOut);
    }
    lab.exited().map(Outcome::Failed)
}
