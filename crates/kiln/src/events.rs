//! `kiln events [NAME] [--follow]`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kiln_store::{EventRecord, Store};

use crate::output::{Format, rfc3339_ms};

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

fn print(rec: &EventRecord, output: Format) {
    match output {
        Format::Json => println!("{}", serde_json::to_string(rec).expect("events serialize")),
        Format::Table => {
            let e = &rec.event;
            let who = e
                .machine
                .clone()
                .or_else(|| e.mac.map(|m| m.to_string()))
                .or_else(|| e.ip.map(|i| i.to_string()))
                .unwrap_or_else(|| "-".into());
            println!(
                "{}  {:<16} {:<14} {}",
                rfc3339_ms(e.at_ms),
                who,
                e.kind,
                e.detail
            );
        }
    }
}

pub fn run(data_dir: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(data_dir)
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    if let Some(name) = &args.name
        && store.hardware_by_name(name)?.is_none()
    {
        anyhow::bail!("no machine named {name:?} is enrolled");
    }
    let machine = args.name.as_deref();
    // Start far enough back to show the last N of this machine's events.
    let mut all = store.events(machine, 0, i64::MAX)?;
    let skip = all.len().saturating_sub(args.last.max(0) as usize);
    let mut last_id = all.last().map(|r| r.id).unwrap_or(0);
    for rec in all.drain(skip..) {
        print(&rec, args.output);
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        std::thread::sleep(Duration::from_millis(300));
        for rec in store.events(machine, last_id, 1000)? {
            last_id = rec.id;
            print(&rec, args.output);
        }
    }
}
