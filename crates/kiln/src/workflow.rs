//! `kiln workflow create|list|show|watch|logs`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kiln_engine::{Engine, now_ms};
use kiln_model::template::parse_template;
use kiln_model::workflow::{ActionState, StepState, Workflow, WorkflowState};
use kiln_store::Store;

use crate::output::{Format, rfc3339_ms, table};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create one workflow per machine from a template and turn their netboot on.
    Create {
        /// Workflow template (YAML, see workflows/).
        #[arg(long)]
        template: PathBuf,
        /// A machine by hostname (repeatable).
        #[arg(long = "hardware", required_unless_present = "selector")]
        hardware: Vec<String>,
        /// Machines whose labels match every k=v given (repeatable).
        #[arg(long, conflicts_with = "hardware")]
        selector: Vec<String>,
        /// Kiln's URL as machines reach it (default: the one `kiln serve` recorded).
        #[arg(long)]
        server_url: Option<String>,
        /// Do not use the machines' BMCs: power them on (or cycle them) yourself.
        #[arg(long)]
        no_power: bool,
    },
    /// List workflows, newest first.
    List {
        /// Include finished workflows.
        #[arg(long)]
        all: bool,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// One workflow (by id, or a machine's latest) with every action.
    Show {
        id: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Live per-machine progress until the workflows end.
    Watch {
        /// Workflow ids or hostnames (default: every unfinished workflow).
        ids: Vec<String>,
    },
    /// The agent's output, per action.
    Logs {
        id: String,
        #[arg(long, short)]
        follow: bool,
    },
}

/// A workflow by id, or the newest one of a machine.
fn find(store: &Store, key: &str) -> anyhow::Result<Workflow> {
    if let Some(wf) = store.workflow(key)? {
        return Ok(wf);
    }
    store
        .workflows(false)?
        .into_iter()
        .find(|w| w.hardware == key)
        .with_context(|| format!("no workflow or machine with a workflow named {key:?}"))
}

pub fn run(data_dir: &Path, cmd: Command) -> anyhow::Result<ExitCode> {
    let store = Store::open(data_dir)
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    match cmd {
        Command::Create {
            template,
            hardware,
            selector,
            server_url,
            no_power,
        } => {
            let name = template.display().to_string();
            let text =
                std::fs::read_to_string(&template).with_context(|| format!("reading {name}"))?;
            let template = match parse_template(&name, &text) {
                Ok(t) => t,
                Err(errors) => {
                    for e in &errors.0 {
                        eprintln!("{e}");
                    }
                    eprintln!(
                        "kiln: {} problem(s) in {name}; no workflow was created",
                        errors.0.len()
                    );
                    return Ok(ExitCode::FAILURE);
                }
            };
            let machines = crate::select::machines(store.hardware()?, &hardware, &selector)?;
            let server_url = crate::select::server_url(&store, server_url)?;
            let engine = Engine::new(std::sync::Arc::new(store));
            let created = engine.create(
                &template,
                &machines,
                server_url.trim_end_matches('/'),
                !no_power,
            )?;
            let rows: Vec<Vec<String>> = created
                .iter()
                .map(|w| vec![w.id.clone(), w.hardware.clone(), w.template.clone()])
                .collect();
            print!("{}", table(&["WORKFLOW", "MACHINE", "TEMPLATE"], &rows));
            let powered = created
                .iter()
                .filter(|w| w.power.start.state != StepState::NotNeeded)
                .count();
            if powered > 0 {
                println!(
                    "netboot is on; `kiln serve` powers {powered} machine(s) into netboot through their BMCs"
                );
            }
            if powered < created.len() {
                println!(
                    "netboot is on for {} machine(s) without BMC control: power them on (or cycle them) to start",
                    created.len() - powered
                );
            }
        }
        Command::List { all, output } => {
            let wfs = store.workflows(!all)?;
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&wfs)?),
                Format::Table => {
                    let rows: Vec<Vec<String>> = wfs
                        .iter()
                        .map(|w| {
                            vec![
                                w.id.clone(),
                                w.hardware.clone(),
                                w.template.clone(),
                                w.state.to_string(),
                                current_action(w),
                                rfc3339_ms(w.updated_ms),
                                w.message.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &[
                                "WORKFLOW", "MACHINE", "TEMPLATE", "STATE", "ACTION", "UPDATED",
                                "MESSAGE"
                            ],
                            &rows
                        )
                    );
                }
            }
        }
        Command::Show { id, output } => {
            let wf = find(&store, &id)?;
            let phone_home = store.phone_home_of(&wf.id)?;
            match output {
                Format::Json => {
                    let mut v = serde_json::to_value(&wf)?;
                    v["phone_home"] = serde_json::to_value(&phone_home)?;
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Format::Table => {
                    println!(
                        "workflow  {}\nmachine   {}\ntemplate  {}\nstate     {}",
                        wf.id, wf.hardware, wf.template, wf.state
                    );
                    if !wf.message.is_empty() {
                        println!("message   {}", wf.message);
                    }
                    println!("created   {}", rfc3339_ms(wf.created_ms));
                    if let Some(p) = &phone_home {
                        println!(
                            "phoned    {} from {}: {}",
                            rfc3339_ms(p.at_ms),
                            p.peer,
                            p.payload
                        );
                    }
                    let rows: Vec<Vec<String>> = wf
                        .actions
                        .iter()
                        .enumerate()
                        .map(|(i, a)| {
                            vec![
                                i.to_string(),
                                a.spec.name.clone(),
                                a.spec.kind.to_string(),
                                format!("{:?}", a.state).to_lowercase(),
                                format!("{}/{}", a.attempts, a.spec.retries + 1),
                                a.started_ms.map(rfc3339_ms).unwrap_or_else(|| "-".into()),
                                a.ended_ms.map(rfc3339_ms).unwrap_or_else(|| "-".into()),
                                a.message.clone(),
                            ]
                        })
                        .collect();
                    println!();
                    print!(
                        "{}",
                        table(
                            &[
                                "#", "ACTION", "KIND", "STATE", "ATTEMPTS", "STARTED", "ENDED",
                                "MESSAGE"
                            ],
                            &rows
                        )
                    );
                }
            }
        }
        Command::Watch { ids } => watch(&store, &ids)?,
        Command::Logs { id, follow } => {
            let wf = find(&store, &id)?;
            let mut after = 0;
            loop {
                for l in store.action_logs(&wf.id, after, 1000)? {
                    after = l.id;
                    let name = wf
                        .actions
                        .get(l.action)
                        .map(|a| a.spec.name.as_str())
                        .unwrap_or("?");
                    println!("{} [{name}#{}] {}", rfc3339_ms(l.at_ms), l.attempt, l.line);
                }
                if !follow
                    || store
                        .workflow(&wf.id)?
                        .is_some_and(|w| w.state.is_terminal())
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn current_action(w: &Workflow) -> String {
    match w.current() {
        Some(i) => format!("{} ({}/{})", w.actions[i].spec.name, i + 1, w.actions.len()),
        None => format!("done ({}/{})", w.actions.len(), w.actions.len()),
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// One line of `watch`: state, action, and a progress bar with rate and ETA while streaming.
pub fn progress_line(w: &Workflow) -> String {
    let mut line = format!(
        "{:<16} {:<11} {:<28}",
        w.hardware,
        w.state.to_string(),
        current_action(w)
    );
    let running = w
        .current()
        .map(|i| &w.actions[i])
        .filter(|a| a.state == ActionState::Running);
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

fn watch(store: &Store, ids: &[String]) -> anyhow::Result<()> {
    let tty = std::io::stdout().is_terminal();
    let targets: Vec<String> = if ids.is_empty() {
        store.workflows(true)?.into_iter().map(|w| w.id).collect()
    } else {
        ids.iter()
            .map(|k| find(store, k).map(|w| w.id))
            .collect::<anyhow::Result<_>>()?
    };
    if targets.is_empty() {
        println!("no unfinished workflows");
        return Ok(());
    }
    let mut last: Vec<String> = Vec::new();
    let started = now_ms();
    loop {
        let wfs: Vec<Workflow> = targets
            .iter()
            .filter_map(|id| store.workflow(id).ok().flatten())
            .collect();
        let lines: Vec<String> = wfs.iter().map(progress_line).collect();
        if tty {
            // Redraw in place.
            if !last.is_empty() {
                print!("\x1b[{}A", last.len());
            }
            for l in &lines {
                println!("\x1b[2K{l}");
            }
        } else {
            for (i, l) in lines.iter().enumerate() {
                if last.get(i) != Some(l) {
                    println!("{l}");
                }
            }
        }
        std::io::stdout().flush()?;
        last = lines;
        if wfs.iter().all(|w| w.state.is_terminal()) {
            let ok = wfs
                .iter()
                .filter(|w| w.state == WorkflowState::Succeeded)
                .count();
            println!(
                "{ok}/{} succeeded in {} s",
                wfs.len(),
                (now_ms() - started) / 1000
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::workflow::Progress;

    #[test]
    fn progress_line_shows_bytes_rate_and_eta() {
        let t = parse_template("t.yaml", "name: t\nactions:\n  - name: img\n    kind: image2disk\n    with:\n      url: u\n      sha256: \"0000000000000000000000000000000000000000000000000000000000000000\"\n").unwrap();
        let mut w = kiln_engine::new_workflow("w".into(), "node1".into(), &t, t.actions.clone(), 0);
        w.state = WorkflowState::Running;
        w.actions[0].state = ActionState::Running;
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
}

#[cfg(test)]
mod shipped_templates {
    #[test]
    fn every_template_in_workflows_dir_is_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Err(e) =
                    kiln_model::template::parse_template(&path.display().to_string(), &text)
                {
                    panic!("{e}");
                }
                n += 1;
            }
        }
        assert!(
            n >= 2,
            "expected the shipped templates in {}",
            dir.display()
        );
    }
}
