//! `kiln workflow create|list|show|watch|logs|cancel|retry`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kiln_api::routes::path;
use kiln_api::{CancelRequest, CreateWorkflows, LOG_PAGE, LogPage, StartOptions, WorkflowView};

use crate::Ctx;
use crate::client::{Client, ClientError};
use crate::output::{Format, WaitArgs, table};
use crate::select::StartArgs;
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

/// Prints workflows as JSON (RFC 3339 times, seconds), pretty.
fn print_json(wfs: &[WorkflowView]) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(wfs)?);
    Ok(())
}

/// What `create` and `retry` print of the workflows they made.
fn print_created(created: &[WorkflowView], output: Format) -> anyhow::Result<()> {
    if output == Format::Json {
        return print_json(created);
    }
    print!("{}", created_text(created));
    Ok(())
}

/// What `kiln workflow create` prints (as a table), also shown by `kiln demo`.
pub fn created_text(created: &[WorkflowView]) -> String {
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

/// After `create`/`retry`: print what was made (unless `--wait -o json`, whose output is the
/// followed states), then follow it with `--wait`.
fn made(
    api: &Client,
    created: &[WorkflowView],
    wait: WaitArgs,
    output: Format,
) -> anyhow::Result<ExitCode> {
    if !(wait.wait && output == Format::Json) {
        print_created(created, output)?;
    }
    if !wait.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let ids: Vec<String> = created.iter().map(|w| w.id.clone()).collect();
    wait::follow_api(api, &ids, wait.timeout, output)
}

fn start_options(start: StartArgs) -> StartOptions {
    StartOptions {
        server_url: start.server_url,
        no_power: start.no_power,
    }
}

fn one(id: &str) -> String {
    path("workflows", Some(id), "")
}

/// `create`: the server parses the template; its problems come back located, one per line.
fn create(
    api: &Client,
    req: CreateWorkflows,
    wait: WaitArgs,
    output: Format,
) -> anyhow::Result<ExitCode> {
    match api.send::<_, Vec<WorkflowView>>("POST", &path("workflows", None, ""), &req) {
        Ok(created) => made(api, &created, wait, output),
        Err(ClientError::Api { status: 422, body }) if !body.details.is_empty() => {
            for d in &body.details {
                eprintln!("{d}");
            }
            eprintln!("kiln: {}", body.message);
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<ExitCode> {
    let api = ctx.client()?;
    match cmd {
        Command::Create {
            template,
            hardware,
            selector,
            start,
            wait,
            output,
        } => {
            let name = template.display().to_string();
            let text =
                std::fs::read_to_string(&template).with_context(|| format!("reading {name}"))?;
            let req = CreateWorkflows {
                template_file: name,
                template: text,
                hardware,
                selector,
                start: start_options(start),
            };
            create(&api, req, wait, output)
        }
        Command::List { all, output } => {
            let query = if all { "?all=true" } else { "" };
            let wfs: Vec<WorkflowView> =
                api.get(&format!("{}{query}", path("workflows", None, "")))?;
            match output {
                Format::Json => print_json(&wfs)?,
                Format::Table => print_list(&wfs),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id, output } => {
            let wf: WorkflowView = api.get(&one(&id))?;
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&wf)?),
                Format::Table => print_show(&wf),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch {
            ids,
            timeout,
            output,
        } => watch(&api, &ids, timeout, output),
        Command::Logs { id, follow, output } => {
            logs(&api, &id, follow, output)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel {
            ids,
            reason,
            output,
        } => cancel(&api, &ids, &reason, output),
        Command::Retry {
            ids,
            start,
            wait,
            output,
        } => {
            let start = start_options(start);
            let mut created = Vec::new();
            for key in &ids {
                let wf: WorkflowView =
                    api.send("POST", &path("workflows", Some(key), "/retry"), &start)?;
                created.push(wf);
            }
            made(&api, &created, wait, output)
        }
    }
}

/// `watch`: the named workflows (by id or hostname), or every unfinished one.
fn watch(
    api: &Client,
    ids: &[String],
    timeout: Option<Duration>,
    output: Format,
) -> anyhow::Result<ExitCode> {
    let targets: Vec<String> = if ids.is_empty() {
        let open: Vec<WorkflowView> = api.get(&path("workflows", None, ""))?;
        open.into_iter().map(|w| w.id).collect()
    } else {
        ids.iter()
            .map(|k| Ok(api.get::<WorkflowView>(&one(k))?.id))
            .collect::<anyhow::Result<_>>()?
    };
    if targets.is_empty() {
        match output {
            Format::Json => println!("[]"),
            Format::Table => println!("no unfinished workflows"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    wait::follow_api(api, &targets, timeout, output)
}

/// `cancel`: every named workflow that has not ended is ended; exit 1 if any could not be.
fn cancel(api: &Client, ids: &[String], reason: &str, output: Format) -> anyhow::Result<ExitCode> {
    let req = CancelRequest {
        reason: Some(reason.to_string()),
    };
    let mut done = Vec::new();
    let mut refused = 0;
    for key in ids {
        match api.send::<_, WorkflowView>("POST", &path("workflows", Some(key), "/cancel"), &req) {
            Ok(w) => done.push(w),
            // A workflow that cannot end now is reported; anything else (an unknown name, a
            // refused token) stops everything.
            Err(ClientError::Api {
                status: 409 | 422,
                body,
            }) => {
                eprintln!("kiln: {}", body.message);
                refused += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    match output {
        Format::Json => print_json(&done)?,
        Format::Table => {
            for w in &done {
                println!(
                    "{}  {}: cancelled; netboot off, the machine is free",
                    w.id, w.machine
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

/// The agent's output, page by page; with `follow`, until the workflow ended and said all.
fn logs(api: &Client, key: &str, follow: bool, output: Format) -> anyhow::Result<()> {
    let mut workflow = key.to_string();
    let mut after = 0;
    let mut first = true;
    loop {
        let page: LogPage = api.get(&format!(
            "{}?after={after}",
            path("workflows", Some(&workflow), "/logs")
        ))?;
        if first && page.log_lines_dropped > 0 {
            eprintln!(
                "({} older log line(s) of {} were dropped: kiln keeps the newest {})",
                page.log_lines_dropped, page.workflow, page.log_lines_kept
            );
        }
        first = false;
        // Later pages by id: the hostname's newest workflow may change meanwhile.
        workflow = page.workflow.clone();
        after = page.after;
        for l in &page.lines {
            match output {
                Format::Json => println!("{}", serde_json::to_string(l)?),
                Format::Table => println!("{} [{}#{}] {}", l.at, l.action, l.attempt, l.line),
            }
        }
        if page.lines.len() >= LOG_PAGE {
            continue; // a full page: more are waiting
        }
        if !follow || page.ended {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn print_list(wfs: &[WorkflowView]) {
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

fn print_show(wf: &WorkflowView) {
    println!(
        "workflow  {}\nmachine   {}\ntemplate  {}\nstate     {}",
        wf.id, wf.machine, wf.template, wf.state
    );
    if !wf.message.is_empty() {
        println!("message   {}", wf.message);
    }
    if let Some(old) = &wf.retry_of {
        println!("retry of  {old}");
    }
    println!("created   {}", wf.created);
    if let Some(c) = &wf.agent_claim {
        println!("agent     credential claimed {} from {}", c.at, c.peer);
    }
    if let Some(at) = &wf.seed_served {
        println!("seed      handed to the agent {at} (once)");
    }
    if let Some(p) = &wf.phone_home {
        println!("phoned    {} from {}: {}", p.at, p.peer, p.payload);
    }
    let dash = |t: &Option<String>| t.clone().unwrap_or_else(|| "-".into());
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
                dash(&a.started),
                dash(&a.ended),
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
}

fn current_action(w: &WorkflowView) -> String {
    match w.current() {
        Some(i) => format!("{} ({}/{})", w.actions[i].name, i + 1, w.actions.len()),
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
mod tests {
    use super::*;
    use kiln_model::template::parse_template;
    use kiln_model::workflow::{ActionState, Progress, WorkflowState};

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
        let l = progress_line(&kiln_server::workflows::view(&w, None, 0));
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
