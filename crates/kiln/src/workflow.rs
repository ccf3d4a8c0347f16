//! `kiln workflow create|list|show|watch|logs|cancel|retry`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kiln_engine::{Engine, now_ms};
use kiln_model::template::parse_template;
use kiln_model::workflow::{ActionState, StepState, Workflow};
use kiln_store::Store;

use crate::output::{Format, WaitArgs, rfc3339_ms, table};
use crate::select::StartArgs;
use crate::views::{LogJson, WorkflowJson};
use crate::wait;

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
        #[command(flatten)]
        start: StartArgs,
        #[command(flatten)]
        wait: WaitArgs,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
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
    /// Live per-machine progress until the workflows end; exit 0 only if all succeeded (1: one
    /// failed, timed out or was cancelled; 3: --timeout ran out first).
    Watch {
        /// Workflow ids or hostnames (default: every unfinished workflow).
        ids: Vec<String>,
        /// Stop watching after this long (90s, 20m, 1h30m).
        #[arg(long, value_parser = crate::output::duration_arg)]
        timeout: Option<Duration>,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// The agent's output, per action.
    Logs {
        id: String,
        #[arg(long, short)]
        follow: bool,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// End unfinished workflows now (by id or hostname): failed, netboot off, the machine free
    /// for a new workflow (a BMC step not yet run is dropped).
    Cancel {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Why, for the machine's events.
        #[arg(long, default_value = "cancelled by the operator")]
        reason: String,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Run ended workflows again (by id or hostname): a new workflow per machine from the same
    /// template, rendered afresh.
    Retry {
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        start: StartArgs,
        #[command(flatten)]
        wait: WaitArgs,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
}

/// A workflow by id, or the newest one of a machine.
pub fn find(store: &Store, key: &str) -> anyhow::Result<Workflow> {
    if let Some(wf) = store.workflow(key)? {
        return Ok(wf);
    }
    store
        .workflows(false)?
        .into_iter()
        .find(|w| w.hardware == key)
        .with_context(|| format!("no workflow or machine with a workflow named {key:?}"))
}

/// Workflows as JSON views (RFC 3339 times, seconds), pretty-printed.
pub fn print_json(store: &Store, wfs: &[Workflow]) -> anyhow::Result<()> {
    let now = now_ms();
    let views = wfs
        .iter()
        .map(|w| {
            Ok(WorkflowJson::new(
                w,
                store.phone_home_of(&w.id)?.as_ref(),
                now,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!("{}", serde_json::to_string_pretty(&views)?);
    Ok(())
}

fn template_from(path: &Path) -> anyhow::Result<Result<kiln_model::template::Template, ExitCode>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
    Ok(parse_template(&name, &text).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        eprintln!(
            "kiln: {} problem(s) in {name}; no workflow was created",
            errors.0.len()
        );
        ExitCode::FAILURE
    }))
}

/// What `create` and `retry` print of the workflows they made.
fn print_created(store: &Store, created: &[Workflow], output: Format) -> anyhow::Result<()> {
    if output == Format::Json {
        return print_json(store, created);
    }
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
    Ok(())
}

/// After `create`/`retry`: follow the new workflows with `--wait`, else done.
fn then_wait(
    store: &Store,
    created: &[Workflow],
    wait: WaitArgs,
    output: Format,
) -> anyhow::Result<ExitCode> {
    if !wait.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let ids: Vec<String> = created.iter().map(|w| w.id.clone()).collect();
    wait::follow(store, &ids, wait.timeout, output)
}

pub fn run(data_dir: &Path, cmd: Command) -> anyhow::Result<ExitCode> {
    let store = Arc::new(
        Store::open(data_dir)
            .with_context(|| format!("opening the store in {}", data_dir.display()))?,
    );
    match cmd {
        Command::Create {
            template,
            hardware,
            selector,
            start: StartArgs {
                server_url,
                no_power,
            },
            wait,
            output,
        } => {
            let template = match template_from(&template)? {
                Ok(t) => t,
                Err(code) => return Ok(code),
            };
            let machines = crate::select::machines(store.hardware()?, &hardware, &selector)?;
            let server_url = crate::select::server_url(&store, server_url)?;
            let engine = Engine::new(Arc::clone(&store));
            let created = engine.create(
                &template,
                &machines,
                server_url.trim_end_matches('/'),
                !no_power,
            )?;
            // With --wait -o json, the followed states are the output.
            if !(wait.wait && output == Format::Json) {
                print_created(&store, &created, output)?;
            }
            then_wait(&store, &created, wait, output)
        }
        Command::List { all, output } => {
            let wfs = store.workflows(!all)?;
            match output {
                Format::Json => print_json(&store, &wfs)?,
                Format::Table => print_list(&wfs),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id, output } => {
            let wf = find(&store, &id)?;
            match output {
                Format::Json => {
                    let view =
                        WorkflowJson::new(&wf, store.phone_home_of(&wf.id)?.as_ref(), now_ms());
                    println!("{}", serde_json::to_string_pretty(&view)?);
                }
                Format::Table => print_show(&store, &wf)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch {
            ids,
            timeout,
            output,
        } => {
            let targets: Vec<String> = if ids.is_empty() {
                store.workflows(true)?.into_iter().map(|w| w.id).collect()
            } else {
                ids.iter()
                    .map(|k| find(&store, k).map(|w| w.id))
                    .collect::<anyhow::Result<_>>()?
            };
            if targets.is_empty() {
                match output {
                    Format::Json => println!("[]"),
                    Format::Table => println!("no unfinished workflows"),
                }
                return Ok(ExitCode::SUCCESS);
            }
            wait::follow(&store, &targets, timeout, output)
        }
        Command::Logs { id, follow, output } => {
            logs(&store, &find(&store, &id)?, follow, output)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel {
            ids,
            reason,
            output,
        } => cancel(&store, &ids, &reason, output),
        Command::Retry {
            ids,
            start: StartArgs {
                server_url,
                no_power,
            },
            wait,
            output,
        } => {
            let server_url = crate::select::server_url(&store, server_url)?;
            let engine = Engine::new(Arc::clone(&store));
            let mut created = Vec::new();
            for key in &ids {
                let old = find(&store, key)?;
                let wf = engine
                    .retry(&old.id, server_url.trim_end_matches('/'), !no_power)
                    .with_context(|| format!("retrying {}", old.id))?;
                created.push(wf);
            }
            if !(wait.wait && output == Format::Json) {
                print_created(&store, &created, output)?;
            }
            then_wait(&store, &created, wait, output)
        }
    }
}

/// `cancel`: every named workflow that has not ended is ended; exit 1 if any could not be.
fn cancel(
    store: &Arc<Store>,
    ids: &[String],
    reason: &str,
    output: Format,
) -> anyhow::Result<ExitCode> {
    let engine = Engine::new(Arc::clone(store));
    let mut done = Vec::new();
    let mut refused = 0;
    for key in ids {
        let wf = find(store, key)?;
        match engine.cancel(&wf.id, reason) {
            Ok(w) => done.push(w),
            Err(e) => {
                eprintln!("kiln: {}: {e}", wf.id);
                refused += 1;
            }
        }
    }
    match output {
        Format::Json => print_json(store, &done)?,
        Format::Table => {
            for w in &done {
                println!(
                    "{}  {}: cancelled; netboot off, the machine is free",
                    w.id, w.hardware
                );
            }
        }
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn logs(store: &Store, wf: &Workflow, follow: bool, output: Format) -> anyhow::Result<()> {
    if wf.log_lines_dropped > 0 {
        eprintln!(
            "({} older log line(s) of {} were dropped: kiln keeps the newest {})",
            wf.log_lines_dropped,
            wf.id,
            kiln_store::MAX_LOG_LINES
        );
    }
    let mut after = 0;
    loop {
        for l in store.action_logs(&wf.id, after, 1000)? {
            after = l.id;
            match output {
                Format::Json => println!("{}", serde_json::to_string(&LogJson::new(wf, &l))?),
                Format::Table => {
                    let name = wf
                        .actions
                        .get(l.action)
                        .map(|a| a.spec.name.as_str())
                        .unwrap_or("?");
                    println!("{} [{name}#{}] {}", rfc3339_ms(l.at_ms), l.attempt, l.line);
                }
            }
        }
        if !follow
            || store
                .workflow(&wf.id)?
                .is_some_and(|w| w.state.is_terminal())
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn print_list(wfs: &[Workflow]) {
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
                "WORKFLOW", "MACHINE", "TEMPLATE", "STATE", "ACTION", "UPDATED", "MESSAGE"
            ],
            &rows
        )
    );
}

fn print_show(store: &Store, wf: &Workflow) -> anyhow::Result<()> {
    println!(
        "workflow  {}\nmachine   {}\ntemplate  {}\nstate     {}",
        wf.id, wf.hardware, wf.template, wf.state
    );
    if !wf.message.is_empty() {
        println!("message   {}", wf.message);
    }
    if let Some(old) = &wf.retry_of {
        println!("retry of  {old}");
    }
    println!("created   {}", rfc3339_ms(wf.created_ms));
    if let Some(c) = &wf.agent_claim {
        println!(
            "agent     credential claimed {} from {}",
            rfc3339_ms(c.at_ms),
            c.peer
        );
    }
    if let Some(at) = wf.seed_served_ms {
        println!("seed      handed to the agent {} (once)", rfc3339_ms(at));
    }
    if let Some(p) = store.phone_home_of(&wf.id)? {
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
                "#", "ACTION", "KIND", "STATE", "ATTEMPTS", "STARTED", "ENDED", "MESSAGE"
            ],
            &rows
        )
    );
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::workflow::{Progress, WorkflowState};

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
