//! `kiln-agent`: the agent binary. `run` works through the machine's workflow; `image2disk`
//! and `wipe` run those actions by hand.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kiln_agent::image2disk::progress::HumanBytes;
use kiln_agent::image2disk::{
    self, Image2Disk, Options, Progress, ProgressReport, RetryPolicy, parse_sha256,
};
use kiln_agent::runner::Leave;

#[derive(Parser)]
#[command(name = "kiln-agent", version, about = "Kiln's in-memory OS agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the machine's workflow (kiln.server=, kiln.mac= on the kernel command line): claim
    /// the machine's credential, fetch each action from the server, run it, report; reboot at
    /// the end.
    Run,
    /// Stream a disk image (raw, gzip, xz or zstd) from a URL onto a disk, verifying its sha256.
    ///
    /// A regular-file target that does not exist or is empty grows to the image size
    /// (sparse); an existing non-empty file is a fixed-size disk, like a block device.
    Image2disk(Image2DiskArgs),
    /// Erase a disk's partition tables and file system signatures (the `wipe` action): discard
    /// where the device supports it, zero the first and last MiB of the disk and of each
    /// partition, flush, re-read the partition table.
    Wipe {
        /// Block device, or a regular file standing in for one
        #[arg(long)]
        disk: PathBuf,
    },
    /// Print the hardware inventory the agent reports (JSON): CPU, memory, disks with their
    /// partition tables and file systems, NICs, PCI devices without a driver, firmware, DMI.
    Inventory {
        /// Where /proc, /sys and /dev are (another root for tests)
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

#[derive(clap::Args)]
struct Image2DiskArgs {
    /// Image URL (http:// or https://, server by IP address)
    #[arg(long)]
    url: String,
    /// sha256 of the served file (the compressed bytes when compressed), 64 hex digits
    #[arg(long, value_parser = parse_sha256)]
    sha256: [u8; 32],
    /// Target block device or file
    #[arg(long)]
    disk: PathBuf,
    /// Size of the raw image in bytes (checked against the disk before writing)
    #[arg(long)]
    size: Option<u64>,
    /// Give up after this long without receiving a byte (e.g. 10m, 30s, 500ms)
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    retry_for: Duration,
    /// First retry delay; doubles up to --backoff-max
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    backoff_initial: Duration,
    /// Longest retry delay
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    backoff_max: Duration,
    /// TCP connect timeout
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    connect_timeout: Duration,
    /// A read waiting longer than this counts as a dropped connection
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    read_timeout: Duration,
    /// Write block devices through the page cache instead of O_DIRECT
    #[arg(long)]
    no_direct: bool,
    /// Progress line interval
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    progress_interval: Duration,
    /// No progress lines, only the result or the error
    #[arg(long, short)]
    quiet: bool,
}

/// Progress and events as lines on stderr.
struct Stderr {
    quiet: bool,
}

impl Progress for Stderr {
    fn update(&self, report: &ProgressReport) {
        if !self.quiet && !report.done {
            let _ = writeln!(std::io::stderr(), "image2disk: {report}");
        }
    }
    fn event(&self, message: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "image2disk: {message}");
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Image2disk(args) => run_image2disk(args),
        Command::Run => run_workflow(),
        Command::Inventory { root } => {
            let inv = kiln_agent::inventory::collect(&root);
            println!(
                "{}",
                serde_json::to_string_pretty(&inv).expect("inventories serialize")
            );
            ExitCode::SUCCESS
        }
        Command::Wipe { disk } => {
            match kiln_agent::wipe::wipe(&disk, &|line| eprintln!("{line}")) {
                Ok(w) => {
                    println!("wipe: {}: {}", disk.display(), w.summary());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kiln-agent: wipe: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_image2disk(a: Image2DiskArgs) -> ExitCode {
    let job = Image2Disk {
        url: a.url,
        sha256: a.sha256,
        disk: a.disk,
        size: a.size,
    };
    let opts = Options {
        retry: RetryPolicy {
            initial: a.backoff_initial,
            max: a.backoff_max,
            give_up_after: a.retry_for,
            connect_timeout: a.connect_timeout,
            read_timeout: a.read_timeout,
        },
        direct_io: !a.no_direct,
        progress_interval: a.progress_interval,
        cancel: None,
    };
    match image2disk::image2disk(&job, &opts, &Stderr { quiet: a.quiet }) {
        Ok(o) => {
            let secs = o.elapsed.as_secs_f64();
            println!(
                "image2disk: wrote {} ({}, {} zeros skipped) to {} in {secs:.1}s ({}/s), sha256 {} ok",
                HumanBytes(o.image_size),
                o.format,
                HumanBytes(o.skipped_zeros),
                job.disk.display(),
                HumanBytes((o.image_size as f64 / secs.max(1e-9)) as u64),
                o.sha256,
            );
            for w in &o.warnings {
                eprintln!("image2disk: warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiln-agent: image2disk: {}", one_line(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `500ms`, `30s`, `10m`, `1h`, or a plain number of seconds (`1.5`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn run_workflow() -> ExitCode {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let id = match kiln_agent::client::Identity::from_cmdline(&cmdline) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("kiln-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    // With the kernel's clock: the agent OS's boot time is measured up to this line.
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let mut apis = id.api.iter().map(|(api, _)| api.as_str());
    let others: Vec<&str> = apis.clone().skip(1).collect();
    println!(
        "kiln-agent: working for {} ({}) at {} s{}",
        apis.next().unwrap_or(&id.server),
        id.hostname.as_deref().unwrap_or("?"),
        uptime.split_whitespace().next().unwrap_or("?"),
        if others.is_empty() {
            String::new()
        } else {
            format!("; then {}", others.join(", "))
        }
    );
    let inspect = id.inspect;
    let client = kiln_agent::client::Client::new(id);
    let left = if inspect {
        println!("kiln-agent: inspection-only mode (this machine is not enrolled)");
        Ok(kiln_agent::runner::inspect(&client))
    } else {
        kiln_agent::runner::run(&client)
    };
    match left {
        Ok(Leave::Kexec) => {
            println!("kiln-agent: starting the installed OS's kernel (kexec)");
            let _ = std::process::Command::new("sync").status();
            let e = kiln_agent::kexec::boot_loaded();
            eprintln!("kiln-agent: kexec failed ({e}); rebooting through the firmware instead");
            reboot()
        }
        Ok(Leave::Reboot) => reboot(),
        Ok(Leave::Poweroff) => {
            println!("kiln-agent: powering off");
            let _ = std::process::Command::new("sync").status();
            let _ = std::process::Command::new("poweroff").arg("-f").status();
            ExitCode::SUCCESS
        }
        Ok(Leave::Stay) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn reboot() -> ExitCode {
    println!("kiln-agent: rebooting");
    let _ = std::process::Command::new("reboot").arg("-f").status();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
