//! `--server-cpu`: each `kiln serve` of a run in a CPU cgroup of its own with a quota, so a
//! server has the same CPU however many run beside it. On a machine whose cores also run
//! PostgreSQL and the load generator, that is how "two servers against one" measures what a
//! second server adds instead of what the shared cores allow.
//!
//! cgroup v2 (`cpu.max`) where the unified hierarchy has the cpu controller, else v1's cpu
//! controller (`cpu.cfs_quota_us`). On drop the process goes back to the parent group and the
//! group is removed.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The scheduler period the quota is a share of.
const PERIOD_US: u64 = 100_000;

/// A CPU cgroup holding one process, limited to `cpus` CPUs.
pub struct CpuCap {
    dir: PathBuf,
}

impl CpuCap {
    /// Moves process `pid` (all its threads) into a new group `name` limited to `cpus`
    /// (0.05 to 64).
    pub fn apply(name: &str, pid: u32, cpus: f64) -> anyhow::Result<CpuCap> {
        if !(0.05..=64.0).contains(&cpus) {
            bail!("--server-cpu takes 0.05 to 64 CPUs, not {cpus}");
        }
        let quota = (cpus * PERIOD_US as f64).round() as u64;
        let (dir, files) = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            let controllers = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")?;
            if !controllers.split_whitespace().any(|c| c == "cpu") {
                bail!("cgroup v2 without the cpu controller: --server-cpu cannot cap a server");
            }
            let dir = Path::new("/sys/fs/cgroup").join(name);
            (dir, vec![("cpu.max", format!("{quota} {PERIOD_US}"))])
        } else if Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists() {
            let dir = Path::new("/sys/fs/cgroup/cpu").join(name);
            let files = vec![
                ("cpu.cfs_period_us", PERIOD_US.to_string()),
                ("cpu.cfs_quota_us", quota.to_string()),
            ];
            (dir, files)
        } else {
            bail!("no CPU cgroup controller mounted: --server-cpu cannot cap a server");
        };
        std::fs::create_dir(&dir).with_context(|| format!("making {}", dir.display()))?;
        let cap = CpuCap { dir };
        for (file, value) in files.iter().chain(&[("cgroup.procs", pid.to_string())]) {
            let path = cap.dir.join(file);
            std::fs::write(&path, value)
                .with_context(|| format!("writing {value} to {}", path.display()))?;
        }
        Ok(cap)
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // Only an empty group can go: what is left in it returns to the parent first.
        let parent = self.dir.parent().map(|p| p.join("cgroup.procs"));
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            if let Some(parent) = &parent {
                let _ = std::fs::write(parent, pid);
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("kiln-rack: removing {}: {e}", self.dir.display());
        }
    }
}
