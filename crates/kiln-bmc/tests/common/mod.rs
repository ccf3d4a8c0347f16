//! What the emulator-backed tests share: the chassis-control program that both ipmi_sim and
//! sushy_qemu.py drive, so the fake host is written once.

use std::path::Path;
use std::process::Command;

/// A chassis_control program in OpenIPMI's extcmd protocol: `get power boot` prints `power:0|1`
/// and `boot:<dev>`; `set power 1`, `set boot pxe`, ... change them. The state is kept in files in
/// `state/` beside the program (so every change is visible outside the emulator), and every call
/// is logged to `state/log`.
pub struct ChassisControl {
    /// What `get boot` prints before anything was set.
    pub default_boot: &'static str,
    /// How long a power change takes, like starting or stopping a VM (the emulator waits for it).
    pub power_seconds: u32,
}

impl ChassisControl {
    /// Writes the program to `path`, executable.
    pub fn install(&self, path: &Path) {
        std::fs::write(path, self.script()).unwrap();
        set_mode(path, 0o755);
    }

    fn script(&self) -> String {
        let delay = match self.power_seconds {
            0 => String::new(),
            n => format!("sleep {n}; "),
        };
        format!(
            r#"#!/bin/sh
D=$(dirname "$0")/state
mkdir -p "$D"
mc=$1; op=$2; shift 2
echo "$op $*" >> "$D/log"
if [ "$op" = get ]; then
  for k in "$@"; do case $k in
    power) echo "power:$(cat "$D/power" 2>/dev/null || echo 0)" ;;
    boot)  echo "boot:$(cat "$D/boot" 2>/dev/null || echo {default_boot})" ;;
  esac; done
  exit 0
fi
while [ $# -ge 2 ]; do k=$1; v=$2; shift 2; case $k in
  power)    {delay}echo "$v" > "$D/power" ;;
  reset)    {delay}echo 1 > "$D/power" ;;
  shutdown) {delay}echo 0 > "$D/power" ;;      # an OS that honours the ACPI power button
  boot)     echo "$v" > "$D/boot" ;;
  bootmode) echo "$v" > "$D/bootmode" ;;
esac; done
exit 0
"#,
            default_boot = self.default_boot,
        )
    }
}

/// Runs `command` and returns what it printed; `what` names it when it cannot start or fails
/// (with its stderr).
pub fn stdout_of(command: &mut Command, what: &str) -> Vec<u8> {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run it: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
