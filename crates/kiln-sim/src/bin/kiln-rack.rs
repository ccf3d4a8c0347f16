//! `kiln-rack N`: provision N simulated machines with a real `kiln serve` in a namespace of
//! their own and print the figures (see kiln_sim::rack). Root (namespaces).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kiln_sim::machine::Firmware;
use kiln_sim::rack::{self, BmcKind, Options};

#[derive(Parser)]
#[command(
    name = "kiln-rack",
    about = "A simulated rack provisioned by a real kiln serve"
)]
struct Cli {
    /// How many simulated machines.
    machines: u32,
    /// The kiln binary (default: `kiln` next to this program).
    #[arg(long)]
    kiln: Option<PathBuf>,
    /// Workflow template.
    #[arg(long, default_value = "workflows/debian-test-os.yaml")]
    template: PathBuf,
    /// The image the workflows stream (imported as `test-os`); default: a generated one.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Size of the generated image (MiB, pseudo-random: it does not compress).
    #[arg(long, default_value_t = 4)]
    image_mib: u64,
    /// Sizes of the fake agent kernel and initrd the machines fetch (KiB).
    #[arg(long, default_value_t = 1024)]
    kernel_kib: u64,
    #[arg(long, default_value_t = 4096)]
    initrd_kib: u64,
    /// Work directory (default: /tmp/kiln-rack-PID).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep the work directory (events.json, logs, data dir).
    #[arg(long)]
    keep: bool,
    /// Before provisioning, every machine's DHCP at once (a boot storm), measured apart.
    #[arg(long)]
    storm: bool,
    /// The machines' BMCs: redfish, ipmi, or mixed (IPMI for every other machine).
    #[arg(long, value_enum, default_value_t)]
    bmc: BmcKind,
    /// The machines' boot ROM: ipxe (as QEMU's NICs) or pxe (DHCP, then iPXE over TFTP).
    #[arg(long, value_enum, default_value_t)]
    firmware: Firmware,
    /// Seconds from power-on, and from the agent's reboot, to iPXE's DHCP (the firmware's
    /// reset and POST).
    #[arg(long, default_value_t = 3.0)]
    reboot_secs: f64,
    /// Seconds an OS takes from its kernel to the network (agent OS, installed OS).
    #[arg(long, default_value_t = 1.0)]
    os_boot_secs: f64,
    /// How many `kiln serve`: 1, or 2 (an HA pair on the rack's segment; both need the same
    /// PostgreSQL store: `-- --store postgresql://…`).
    #[arg(long, default_value_t = 1)]
    servers: u32,
    /// Cap each `kiln serve` at this many CPUs (a CPU cgroup each), so one server and two
    /// compare at the same CPU per server.
    #[arg(long, value_name = "CPUS")]
    server_cpu: Option<f64>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    /// Output: text or json.
    #[arg(long, short, default_value = "text")]
    output: String,
    /// Extra `kiln serve` arguments (after --).
    #[arg(last = true)]
    serve_args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln-rack: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let kiln = match cli.kiln {
        Some(k) => k,
        None => std::env::current_exe()?.with_file_name("kiln"),
    };
    let work = cli
        .work
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/kiln-rack-{}", std::process::id())));
    let image = match cli.image {
        Some(i) => i.canonicalize()?,
        None => {
            let p =
                std::env::temp_dir().join(format!("kiln-rack-{}-image.raw", std::process::id()));
            rack::write_image(&p, cli.image_mib << 20)?;
            p
        }
    };
    let opts = Options {
        machines: cli.machines,
        kiln,
        template: cli.template.canonicalize()?,
        work,
        keep: cli.keep,
        image: image.clone(),
        kernel_bytes: cli.kernel_kib << 10,
        initrd_bytes: cli.initrd_kib << 10,
        timeout: Duration::from_secs(cli.timeout),
        storm: cli.storm,
        os_boot_delay: Duration::from_secs_f64(cli.os_boot_secs.max(0.0)),
        reboot_delay: Duration::from_secs_f64(cli.reboot_secs.max(0.0)),
        serve_args: cli.serve_args,
        bmc: cli.bmc,
        firmware: cli.firmware,
        servers: cli.servers,
        server_cpu: cli.server_cpu,
    };
    let out = rack::run(&opts);
    if image.starts_with(std::env::temp_dir()) && image.to_string_lossy().contains("kiln-rack-") {
        let _ = std::fs::remove_file(&image);
    }
    let report = out?;
    if cli.output == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", rack::render(&report));
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
