#!/usr/bin/env bash
# Issue 13 point 4, checked against the real thing: one simulated machine (kiln-rack: the
# wire of iPXE, the agent OS and the installed OS, behind a simulated Redfish BMC) provisioned
# by a real `kiln serve` with workflows/debian-test-os.yaml produces the same sequence of event
# kinds as a QEMU machine does in tests/e2e/workflow.sh's bios case. The QEMU sequence is a
# fixture (tests/e2e/fixtures/qemu-bios-events.txt, recorded by tests/e2e/fixtures/record-qemu-events.sh);
# both are compared normalized (tests/e2e/event_kinds.py --normalize: without the BMC step
# the QEMU machine does not have, and without resent DHCP packets).
#
#   tests/e2e/sim.sh            (root; KILN_BIN and KILN_RACK name the binaries under test)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
KILN_RACK=${KILN_RACK:-$(dirname "$KILN_BIN")/kiln-rack}
FIXTURE=$REPO/tests/e2e/fixtures/qemu-bios-events.json

[ -x "$KILN_RACK" ] || die "kiln-rack missing: cargo build --release -p kiln-sim"

# If kiln-rack is stopped early it cannot tear down: stop what is left in its namespaces.
RACK_PID=
rack_cleanup() {
	local ns pid
	[ -n "$RACK_PID" ] || return 0
	for ns in "kiln-demo-$RACK_PID" "kiln-rack-$RACK_PID"; do
		ip netns list | awk '{print $1}' | grep -qxF "$ns" || continue
		for pid in $(ip netns pids "$ns"); do stop_pid "$pid"; done
		ip netns del "$ns" || true
	done
}
on_exit() {
	local rc=$?
	[ -z "$RACK_PID" ] || stop_pid "$RACK_PID"
	rack_cleanup
	(exit "$rc")
	e2e_cleanup
}
e2e_setup sim
trap on_exit EXIT
# kiln-rack makes (and removes) its own namespaces; the work dir is this case's.
rack_work=$E2E_WORK/rack
E2E_LOGS+=("kiln serve=$rack_work/logs/kiln-serve.log")
out=$E2E_WORK/rack.out
"$KILN_RACK" 1 --kiln "$KILN_BIN" --template "$REPO/workflows/debian-test-os.yaml" \
	--work "$rack_work" --keep --timeout 240 >"$out" 2>&1 &
RACK_PID=$!
if wait "$RACK_PID"; then
	ok "sim: one simulated machine provisioned by kiln serve, powered on by kiln's Redfish job: workflow succeeded"
else
	not_ok "sim: kiln-rack 1 failed"
fi
sed 's/^/#   /' "$out"
python3 "$REPO/tests/e2e/event_kinds.py" sim-0001 52:54:00:5a:00:00 --normalize \
	<"$rack_work/events.json" >"$E2E_WORK/sim.kinds" || true
python3 "$REPO/tests/e2e/event_kinds.py" wf-bios 52:54:00:3f:00:01 --normalize \
	<"$FIXTURE" >"$E2E_WORK/qemu.kinds"
check "sim: the simulated machine's events are those of the QEMU machine, in the same order ($(grep -c . "$E2E_WORK/qemu.kinds") kinds)" \
	diff -u "$E2E_WORK/qemu.kinds" "$E2E_WORK/sim.kinds"
check "sim: the BMC step is there: boot device, power on, done, netbooting" \
	bash -c 'python3 "$1" sim-0001 52:54:00:5a:00:00 <"$2" | grep -E "^(bmc|workflow.netbooting)" | tr "\n" " " | grep -q "bmc.boot-device bmc.power bmc.done workflow.netbooting"' \
	_ "$REPO/tests/e2e/event_kinds.py" "$rack_work/events.json"
check "sim: kiln-rack removed its namespaces" \
	bash -c '! ip netns list | grep -qE "^kiln-(rack|demo)-$1( |\$)"' _ "$RACK_PID"

# The simulated IPMI BMCs (RMCP+, as ipmi_sim answers) and PXE firmware: four machines, every
# other one behind IPMI, each booting as a PXE ROM does (DHCP, iPXE over TFTP, then iPXE's
# DHCP), all powered on by Kiln's BMC job and provisioned.
mixed_work=$E2E_WORK/mixed
mixed=$E2E_WORK/mixed.json
"$KILN_RACK" 4 --bmc mixed --firmware pxe --kiln "$KILN_BIN" --template "$REPO/workflows/debian-test-os.yaml" \
	--work "$mixed_work" --keep --timeout 300 -o json >"$mixed" 2>"$E2E_WORK/mixed.err" &
RACK_PID=$!
wait "$RACK_PID" || true
check "sim: four machines, two behind simulated IPMI BMCs and two behind Redfish, all provisioned" \
	python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r["succeeded"] == 4 and not r["failed"] else 1)' "$mixed"
check "sim: Kiln powered the IPMI machine on through its BMC (sim-0001: bmc.power, bmc.done)" \
	bash -c 'python3 "$1" sim-0001 52:54:00:5a:00:00 <"$2" | tr "\n" " " | grep -q "bmc.power bmc.done"' \
	_ "$REPO/tests/e2e/event_kinds.py" "$mixed_work/events.json"
check "sim: the PXE firmware fetched iPXE over TFTP before iPXE's script (sim-0001: tftp.sent, then http.script)" \
	bash -c 'python3 "$1" sim-0001 52:54:00:5a:00:00 <"$2" | tr "\n" " " | grep -q "tftp.sent.* http.script"' \
	_ "$REPO/tests/e2e/event_kinds.py" "$mixed_work/events.json"
check "sim: the IPMI machine's BMC address is ipmi://" \
	grep -q "^sim-0001,ipmi://" "$mixed_work/hardware.csv"
[ "$E2E_FAILED" -eq 0 ]
