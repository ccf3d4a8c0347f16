//! `kiln workflow create|list|show|watch|logs|cancel|retry`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kiln_api::routes::path;
use kiln_api::{CreateWorkflows, LogPage, StartOptions, WorkflowView};

use kiln_client::follow::follow;
use kiln_client::render::workflow as render;

use crate::Ctx;
use crate::client::{Client, ClientError};
use crate::output::{Format, WaitArgs, ended};
use crate::select::StartArgs;

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

/// After `create`/`retry`: print what was made (unless `--wait -o json`, whose output is the
/// followed states), then follow it with `--wait`.
fn made(
    api: &Client,
    created: &[WorkflowView],
    wait: WaitArgs,
    output: Format,
) -> anyhow::Result<ExitCode> {
    if !(wait.wait && output == Format::Json) {
        output.print(created, render::created)?;
    }
    if !wait.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let ids: Vec<String> = created.iter().map(|w| w.id.clone()).collect();
    Ok(ended(follow(
        api,
        &ids,
        wait.timeout,
        output == Format::Json,
    )?))
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
            output.print(&wfs, |w| render::list(w))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id, output } => {
            let wf: WorkflowView = api.get(&one(&id))?;
            output.print(&wf, render::show)?;
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
    let targets = kiln_client::workflows::ids(api, ids)?;
    if targets.is_empty() {
        output.print(&targets, |_| "no unfinished workflows\n".into())?;
        return Ok(ExitCode::SUCCESS);
    }
    Ok(ended(follow(
        api,
        &targets,
        timeout,
        output == Format::Json,
    )?))
}

/// `cancel`: every named workflow that has not ended is ended; exit 1 if any could not be.
fn cancel(api: &Client, ids: &[String], reason: &str, output: Format) -> anyhow::Result<ExitCode> {
    let (done, refused) = kiln_client::workflows::cancel(api, ids, reason)?;
    for why in &refused {
        eprintln!("kiln: {why}");
    }
    output.print(&done, |d| d.iter().map(render::cancelled).collect())?;
    Ok(if refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The agent's output; with `follow`, until the workflow ended and said all.
fn logs(api: &Client, key: &str, follow: bool, output: Format) -> anyhow::Result<()> {
    let dropped = |page: &LogPage| {
        eprintln!(
            "({} older log line(s) of {} were dropped: kiln keeps the newest {})",
            page.log_lines_dropped, page.workflow, page.log_lines_kept
        )
    };
    kiln_client::logs::each_line(api, key, follow, dropped, |l| {
        match output {
            Format::Json => println!("{}", serde_json::to_string(l).expect("log lines serialize")),
            Format::Table => println!("{} [{}#{}] {}", l.at, l.action, l.attempt, l.line),
        }
        Ok(())
    })?;
    Ok(())
}
