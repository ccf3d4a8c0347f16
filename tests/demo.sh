#!/usr/bin/env bash
# Kiln demo: one QEMU machine netboots from `kiln serve` in a private network
# namespace. Enrols a hardware.csv, turns netboot on, boots the machine
# (SeaBIOS + iPXE → DHCP → iPXE script → kernel + initrd over HTTP), shows the
# machine's events and the time to each step, and removes everything on exit.
# Run as root; installs what it needs with apt-get on a fresh Debian machine.
#
#   bash tests/demo.sh [--uefi]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
FW=bios
[ "${1:-}" = --uefi ] && FW=uefi

if ! command -v qemu-system-x86_64 >/dev/null || [ ! -e /usr/lib/ipxe/undionly.kpxe ]; then
  echo "== installing Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends qemu-system-x86 ipxe ipxe-qemu ovmf seabios \
    linux-image-amd64 busybox-static cpio kmod iproute2 curl >/dev/null
fi
echo "== building kiln and the demo's boot files"
(cd "$REPO" && cargo build --release -q -p kiln)
export KILN_BIN=$REPO/target/release/kiln
ASSETS=${KILN_E2E_ASSETS:-$REPO/target/e2e-assets}
export KILN_E2E_ASSETS=$ASSETS
"$REPO/images/test-initramfs/build.sh" "$ASSETS/initramfs" >/dev/null

# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
e2e_setup demo
ns_create 1
MAC=52:54:00:de:00:01
IP=10.77.0.57
write_hardware_csv "$E2E_WORK/hardware.csv" "demo-node,$MAC,$IP"
echo "== hardware.csv"
sed 's/^/   /' "$E2E_WORK/hardware.csv"
echo "== kiln enroll"
kiln enroll "$E2E_WORK/hardware.csv" | sed 's/^/   /'
kiln hardware netboot demo-node on | sed 's/^/   /'
kiln hardware list | sed 's/^/   /'
echo "== kiln serve --interface br0 --address $SERVER_IP (inside namespace $E2E_NS)"
kiln_serve
echo "== powering on demo-node ($FW firmware, TCG)"
vm_start demo-node --fw "$FW" --tap tap0 --mac "$MAC" --uefi-netstack none
for marker in "iPXE" "$M_INITRAMFS" "KILN-GUEST-IP=" "$M_FETCH_OK"; do
  if wait_for_marker "$VM_LOG" "$marker" 180 "$VM_PID"; then
    printf '   %-28s after %3d s\n' "$marker" $((SECONDS - VM_START))
  else
    echo "   $marker never appeared"
    E2E_FAILED=1
    exit 1
  fi
done
echo "== the guest's view"
clean_log "$VM_LOG" | grep -E 'KILN-|Kiln:' | sed 's/^/   /'
echo "== kiln events demo-node"
kiln events demo-node | sed 's/^/   /'
echo "== done: demo-node netbooted and got $(serial_value "$VM_LOG" KILN-GUEST-IP) (reserved: $IP)"
