#!/usr/bin/env bash
# Records the event-kind sequence of one real QEMU (BIOS, iPXE ROM) machine provisioned
# like tests/e2e/workflow.sh's bios case, into tests/e2e/fixtures/qemu-bios-events.txt, the
# reference tests/e2e/sim.sh compares a simulated machine with.
#
#   tests/e2e/sim-record-qemu.sh [OUT]      (root; needs the agent OS and test OS assets)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
OUT=${1:-$REPO/tests/e2e/fixtures/qemu-bios-events.txt}
AGENT_OS=$E2E_ASSETS/agent-os
TEST_OS=$E2E_ASSETS/test-os/test-os.raw.zst
[ -s "$TEST_OS" ] || die "test OS image missing: images/test-os/build.sh $E2E_ASSETS/test-os"
[ -s "$AGENT_OS/initrd.img" ] || die "agent OS missing: images/agent/build.sh $AGENT_OS"

host=wf-bios mac=52:54:00:3f:00:01 ip=10.77.0.57
e2e_setup record-qemu
ns_create 1
write_hardware_csv "$E2E_WORK/hardware.csv" "$host,$mac,$ip"
KILN_ARTIFACTS=$AGENT_OS kiln_serve
kiln enroll "$E2E_WORK/hardware.csv" >/dev/null
kiln image import "$TEST_OS" --name test-os >/dev/null
kiln workflow create --template "$REPO/workflows/debian-test-os.yaml" --hardware "$host" | sed 's/^/# /'
truncate -s 3G "$E2E_WORK/disk.raw"
vm_start "$host" --fw bios --tap tap0 --mac "$mac" --disk "$E2E_WORK/disk.raw" --rw-disk --reboot --mem 1024
deadline=$((SECONDS + 900))
state=
while [ "$SECONDS" -lt "$deadline" ]; do
	state=$(kiln_cli workflow show "$host" -o json 2>/dev/null |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null) || state=
	case $state in succeeded | failed | timed-out) break ;; esac
	sleep 2
done
# the installed OS keeps running: give late wire events (its DHCP, if any) a moment
sleep 5
kiln_cli events --last 100000 -o json >"$E2E_WORK/events.json"
[ "$state" = succeeded ] || die "the QEMU machine's workflow ended ${state:-unknown}"
{
	echo "# Event kinds of one QEMU machine (BIOS, QEMU's iPXE ROM, debian-test-os.yaml), in the order they happened."
	echo "# Recorded $(date -u +%Y-%m-%dT%H:%MZ) (kiln at $(git -C "$REPO" rev-parse --short HEAD)) by: tests/e2e/sim-record-qemu.sh (raw events: qemu-bios-events.json)"
	python3 "$REPO/tests/e2e/event_kinds.py" "$host" "$mac" <"$E2E_WORK/events.json"
} >"$OUT"
cp "$E2E_WORK/events.json" "${OUT%.txt}.json"
ok "recorded $(grep -vc '^#' "$OUT") event kinds into $OUT"
