//! Before the lab exists: is everything it needs here, and signals that stop the demo
//! instead of killing it (so that the lab is always taken down).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};

use super::Options;
use crate::{self as lab, BmcKind, Firmware, Machine};

/// The lab creates a namespace, taps and QEMU machines: root only.
pub fn require_root() -> anyhow::Result<()> {
    let uid = std::fs::metadata("/proc/self")
        .context("reading /proc/self")?
        .uid();
    if uid != 0 {
        bail!(
            "kiln demo must run as root: it creates a network namespace, tap devices and QEMU machines (try: sudo kiln demo ...)"
        );
    }
    Ok(())
}

/// Everything the lab needs, checked before anything is created; all gaps named at once.
pub fn preflight(args: &Options, machines: &[Machine]) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    let mut tools = vec!["ip", "qemu-system-x86_64", "curl", "kill"];
    if machines.iter().any(|m| m.bmc == BmcKind::Ipmi) {
        tools.push("ipmi_sim");
    }
    for t in tools {
        if !on_path(t) {
            missing.push(format!("{t} (not on PATH)"));
        }
    }
    let agent = args.assets.join("agent-os");
    let mut files = vec![
        agent.join("vmlinuz"),
        agent.join("initrd.img"),
        args.assets.join("test-os/test-os.raw.zst"),
        args.tftp_root.join("undionly.kpxe"),
    ];
    if machines.iter().any(|m| m.firmware == Firmware::Uefi) {
        files.extend([PathBuf::from(lab::OVMF_CODE), PathBuf::from(lab::OVMF_VARS)]);
    }
    for f in &files {
        if !f.is_file() {
            missing.push(f.display().to_string());
        }
    }
    if machines.iter().any(|m| m.bmc == BmcKind::Redfish) {
        let py = args.venv.join("bin/python");
        let ok = Command::new(&py)
            .args(["-c", "import sushy_tools, bcrypt, flask"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            missing.push(format!(
                "sushy-tools in {} (python3 -m venv {0} && {0}/bin/pip install sushy-tools)",
                args.venv.display()
            ));
        }
    }
    if let Some(t) = &args.template
        && !t.is_file()
    {
        missing.push(format!("template {}", t.display()));
    }
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "kiln demo cannot start; missing:\n  {}\n\
         Debian packages: apt-get install qemu-system-x86 ipxe ipxe-qemu seabios ovmf openipmi iproute2 curl procps python3-venv\n\
         Boot files: images/agent/build.sh {}/agent-os and images/test-os/build.sh {}/test-os (tests/demo.sh does all of this)",
        missing.join("\n  "),
        args.assets.display(),
        args.assets.display()
    )
}

/// SIGINT, SIGTERM and SIGHUP set the returned flag instead of killing the process, so
/// that the lab is always taken down.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    // Registered here, before the lab exists: no window in which a signal kills us.
    let mut sigs = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            ))
        })
        .context("installing signal handlers")?;
    let f = flag.clone();
    std::thread::spawn(move || {
        rt.block_on(async move {
            loop {
                let name = tokio::select! {
                    _ = sigs.0.recv() => "SIGINT",
                    _ = sigs.1.recv() => "SIGTERM",
                    _ = sigs.2.recv() => "SIGHUP",
                };
                f.store(true, Ordering::SeqCst);
                let _ = writeln!(
                    std::io::stderr(),
                    "\nkiln demo: {name}: stopping; removing the lab"
                );
            }
        })
    });
    Ok(flag)
}
