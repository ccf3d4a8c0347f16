//! `kiln events [NAME] [--follow]`: the latest events, then (with `--follow`) the server's
//! event stream (Server-Sent Events).

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::Context;
use kiln_api::EventView;
use kiln_api::routes::{path, segment};
use kiln_api::sse::SseDecoder;

use crate::Ctx;
use crate::output::Format;

#[derive(clap::Args)]
pub struct Args {
    /// Only this machine's events.
    name: Option<String>,
    /// Keep printing new events as they happen.
    #[arg(long, short)]
    follow: bool,
    /// How many of the latest events to show first.
    #[arg(long, default_value_t = 100)]
    last: i64,
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

fn print(e: &EventView, output: Format) {
    match output {
        Format::Json => println!("{}", serde_json::to_string(e).expect("events serialize")),
        Format::Table => {
            let who = e
                .machine
                .clone()
                .or_else(|| e.mac.clone())
                .or_else(|| e.ip.clone())
                .unwrap_or_else(|| "-".into());
            println!("{}  {:<16} {:<14} {}", e.at, who, e.kind, e.detail);
        }
    }
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let api = ctx.client()?;
    let machine = args
        .name
        .as_deref()
        .map(|n| format!("machine={}", segment(n)));
    let query = |more: Option<String>| {
        let params: Vec<String> = machine.iter().cloned().chain(more).collect();
        params.join("&")
    };
    let events = path("events", None, "");
    // At least the newest one, to follow on from it even when none is shown (`--last 0`).
    let last = args.last.max(0);
    let latest: Vec<EventView> = api.get(&format!(
        "{events}?{}",
        query(Some(format!("last={}", last.max(1))))
    ))?;
    for e in &latest[latest.len().saturating_sub(last as usize)..] {
        print(e, args.output);
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let after = latest.last().map_or(0, |e| e.id);
    let body = api.stream(&format!(
        "{events}/stream?{}",
        query(Some(format!("after={after}")))
    ))?;
    let mut decoder = SseDecoder::default();
    for line in std::io::BufReader::new(body).lines() {
        let line = line.context("reading the event stream")?;
        if let Some(frame) = decoder.push_line(&line) {
            let e: EventView = serde_json::from_str(&frame.data)
                .with_context(|| format!("an event the server sent: {}", frame.data))?;
            print(&e, args.output);
        }
    }
    anyhow::bail!("the Kiln server ended the event stream (it is shutting down)")
}
