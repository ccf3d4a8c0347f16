//! Workflows: what `create` made, the list, one workflow, and `watch`'s progress lines.

use kiln_api::WorkflowView;

use super::{dash, human_bytes, table};

/// What `kiln workflow create` prints (also shown by `kiln demo`).
pub fn created(created: &[WorkflowView]) -> String {
    let rows: Vec<Vec<String>> = created
        .iter()
        .map(|w| vec![w.id.clone(), w.machine.clone(), w.template.clone()])
        .collect();
    let mut text = table(&["WORKFLOW", "MACHINE", "TEMPLATE"], &rows);
    let powered = created
        .iter()
        .filter(|w| w.bmc.start.state != "not-needed")
        .count();
    if powered > 0 {
        text += &format!(
            "netboot is on; `kiln serve` powers {powered} machine(s) into netboot through their BMCs\n"
        );
    }
    if powered < created.len() {
        text += &format!(
            "netboot is on for {} machine(s) without BMC control: power them on (or cycle them) to start\n",
            created.len() - powered
        );
    }
    text
}

pub fn list(wfs: &[WorkflowView]) -> String {
    let rows: Vec<Vec<String>> = wfs
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.machine.clone(),
                w.template.clone(),
                w.state.to_string(),
                current_action(w),
                w.updated.clone(),
                w.message.clone(),
            ]
        })
        .collect();
    let header = [
        "WORKFLOW", "MACHINE", "TEMPLATE", "STATE", "ACTION", "UPDATED", "MESSAGE",
    ];
    table(&header, &rows)
}

/// One workflow: its facts, then a row per action.
pub fn show(wf: &WorkflowView) -> String {
    let mut text = format!(
        "workflow  {}\nmachine   {}\ntemplate  {}\nstate     {}\n",
        wf.id, wf.machine, wf.template, wf.state
    );
    if !wf.message.is_empty() {
        text += &format!("message   {}\n", wf.message);
    }
    if let Some(old) = &wf.retry_of {
        text += &format!("retry of  {old}\n");
    }
    text += &format!("created   {}\n", wf.created);
    if let Some(c) = &wf.agent_claim {
        text += &format!("agent     credential claimed {} from {}\n", c.at, c.peer);
    }
    if let Some(at) = &wf.seed_served {
        text += &format!("seed      handed to the agent {at} (once)\n");
    }
    if let Some(p) = &wf.phone_home {
        text += &format!("phoned    {} from {}: {}\n", p.at, p.peer, p.payload);
    }
    let rows: Vec<Vec<String>> = wf
        .actions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            vec![
                i.to_string(),
                a.name.clone(),
                a.kind.clone(),
                a.state.replace('-', ""), // as it always printed: `timedout`
                format!("{}/{}", a.attempts, a.max_attempts),
                dash(a.started.clone()),
                dash(a.ended.clone()),
                a.message.clone(),
            ]
        })
        .collect();
    let header = [
        "#", "ACTION", "KIND", "STATE", "ATTEMPTS", "STARTED", "ENDED", "MESSAGE",
    ];
    text + "\n" + &table(&header, &rows)
}

/// `kiln workflow cancel`'s line for one cancelled workflow.
pub fn cancelled(w: &WorkflowView) -> String {
    format!(
        "{}  {}: cancelled; netboot off, the machine is free\n",
        w.id, w.machine
    )
}

fn current_action(w: &WorkflowView) -> String {
    match w.current() {
        Some(i) => format!("{} ({}/{})", w.actions[i].name, i + 1, w.actions.len()),
        None => format!("done ({}/{})", w.actions.len(), w.actions.len()),
    }
}

/// One line of `watch`: state, action, and a progress bar with rate and ETA while streaming.
pub fn progress_line(w: &WorkflowView) -> String {
    let mut line = format!(
        "{:<16} {:<11} {:<28}",
        w.machine,
        w.state.to_string(),
        current_action(w)
    );
    let running = w
        .current()
        .map(|i| &w.actions[i])
        .filter(|a| a.state == "running");
    match running.and_then(|a| a.progress.as_ref()) {
        Some(p) if p.total.is_some_and(|t| t > 0) => {
            let total = p.total.unwrap_or(1);
            let frac = (p.done as f64 / total as f64).clamp(0.0, 1.0);
            let filled = (frac * 20.0).round() as usize;
            let eta = match total.saturating_sub(p.done).checked_div(p.rate_bps) {
                Some(secs) => format!("ETA {secs}s"),
                None => "ETA -".into(),
            };
            line += &format!(
                " [{}{}] {:>3.0}% {} / {}  {}/s  {eta}",
                "#".repeat(filled),
                ".".repeat(20 - filled),
                frac * 100.0,
                human_bytes(p.done),
                human_bytes(total),
                human_bytes(p.rate_bps)
            );
        }
        Some(p) => line += &format!(" {}  {}/s", human_bytes(p.done), human_bytes(p.rate_bps)),
        None => {}
    }
    if w.state.is_terminal() && !w.message.is_empty() {
        line += &format!(" {}", w.message);
    }
    line.trim_end().to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kiln_api::agent::{Progress, WorkflowState};
    use kiln_api::{ActionView, BmcStepsView, StepView};

    /// A one-action workflow view in `state`.
    pub fn view(id: &str, state: WorkflowState) -> WorkflowView {
        let step = || StepView {
            state: "not-needed".into(),
            attempts: 0,
            message: String::new(),
        };
        WorkflowView {
            id: id.into(),
            machine: "node1".into(),
            template: "t".into(),
            state,
            message: String::new(),
            created: String::new(),
            updated: String::new(),
            ended: None,
            deadline: String::new(),
            duration_seconds: 0.0,
            retry_of: None,
            current_action: None,
            actions: vec![ActionView {
                name: "img".into(),
                kind: "image2disk".into(),
                state: "pending".into(),
                attempts: 0,
                max_attempts: 1,
                timeout_seconds: 60.0,
                started: None,
                ended: None,
                duration_seconds: None,
                message: String::new(),
                progress: None,
            }],
            bmc: BmcStepsView {
                start: step(),
                finish: step(),
            },
            phone_home: None,
            agent_claim: None,
            seed_served: None,
            log_lines_dropped: 0,
        }
    }

    #[test]
    fn progress_line_shows_bytes_rate_and_eta() {
        let mut w = view("w", WorkflowState::Running);
        w.actions[0].state = "running".into();
        w.actions[0].progress = Some(Progress {
            done: 512 << 20,
            total: Some(1 << 30),
            rate_bps: 64 << 20,
        });
        let l = progress_line(&w);
        assert!(
            l.contains("node1") && l.contains("running") && l.contains("img (1/1)"),
            "{l}"
        );
        assert!(
            l.contains("[##########..........]  50% 512.0 MiB / 1.0 GiB  64.0 MiB/s  ETA 8s"),
            "{l}"
        );
    }

    #[test]
    fn created_says_who_powers_the_machines() {
        let mut a = view("a", WorkflowState::Pending);
        a.bmc.start.state = "pending".into();
        let b = view("b", WorkflowState::Pending);
        let text = created(&[a, b]);
        assert!(text.contains("powers 1 machine(s)"), "{text}");
        assert!(
            text.contains("for 1 machine(s) without BMC control"),
            "{text}"
        );
    }
}
