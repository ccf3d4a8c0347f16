#!/usr/bin/env bash
# Issue 14 point 3: discovery with inspection. A QEMU machine that is NOT in hardware.csv
# (virtio 3 GiB `VIRTIO-A`, NVMe 4 GiB `NVME-B`, 1 GiB of memory) netboots.
#
#   inspect:  `kiln serve --discovery inspect --discovery-pool …`: it gets a pool lease, the
#             agent in inspection-only mode reports its inventory and powers the machine off;
#             `kiln discovered -o json` holds the disks and memory QEMU was given, the table a
#             summary line; `kiln enroll --from-discovered` with rules on inventory facts
#             enrols it with the labels those facts earn.
#   list:     the default (`--discovery list`): the same machine is listed, gets no address,
#             no agent, no inspection.
#
#   tests/e2e/discovery.sh [--list] [CASE...]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

AGENT_OS=$E2E_ASSETS/agent-os
MAC=52:54:00:3f:03:01
POOL=10.77.0.200-10.77.0.209/24

# discovered PYTHON-EXPR: evaluates EXPR over this MAC's `kiln discovered -o json` entry as `d`
# (None when it is not listed).
discovered() {
	kiln_cli discovered -o json 2>/dev/null |
		python3 -c "import json,sys; d=next((x for x in json.load(sys.stdin) if x['mac']=='$MAC'), None); print($1)"
}

# wait_discovered PYTHON-CONDITION TIMEOUT: until the condition on `d` holds.
wait_discovered() {
	local deadline=$((SECONDS + $2))
	while [ "$SECONDS" -lt "$deadline" ]; do
		[ "$(discovered "bool($1)" 2>/dev/null)" = True ] && return 0
		sleep 3
	done
	return 1
}

start_machine() {
	truncate -s 3G "$E2E_WORK/virtio.raw"
	truncate -s 4G "$E2E_WORK/nvme-b.raw"
	vm_start insp-1 --fw bios --tap tap0 --mac "$MAC" --disk "$E2E_WORK/virtio.raw" \
		--disk-serial VIRTIO-A --rw-disk --nvme "$E2E_WORK/nvme-b.raw:NVME-B" --mem 1024
}

case_inspect() {
	e2e_setup discovery-inspect
	ns_create 1
	KILN_ARTIFACTS=$AGENT_OS kiln_serve --discovery inspect --discovery-pool "$POOL"
	start_machine
	local vm=$VM_PID
	check "inspect: the machine powered itself off after its inspection" vm_wait_exit "$vm" 1200
	check "inspect: the agent ran in inspection-only mode" has_marker "$VM_LOG" "inspection-only mode"
	check "inspect: kiln discovered lists it with an inspection" \
		wait_discovered 'd and d.get("inspection")' 60
	check "inspect: two disks, as QEMU was given them" \
		[ "$(discovered 'sorted((x["serial"], x["size_bytes"]) for x in d["inspection"]["inventory"]["disks"])')" \
			= "[('NVME-B', 4294967296), ('VIRTIO-A', 3221225472)]" ]
	check "inspect: memory about 1 GiB" \
		[ "$(discovered 'd["inspection"]["inventory"]["memory_bytes"] > 700 << 20')" = True ]
	check "inspect: its NIC is the MAC that netbooted" \
		grep -q "$MAC" <<<"$(discovered '[n["mac"] for n in d["inspection"]["inventory"]["nics"]]')"
	check "inspect: the table has a summary line under it" \
		grep -q '^  inspected .*GiB.*NVME-B' <<<"$(kiln_cli discovered)"
	check "inspect: inspection.claimed and inspection.reported events" \
		bash -c "grep -q inspection.claimed <<<\"\$1\" && grep -q inspection.reported <<<\"\$1\"" _ \
		"$(kiln_cli events --last 1000 2>/dev/null)"
	check "inspect: the agent spoke from its pool lease" \
		grep -q 'inspection ticket from 10.77.0.20[0-9]' <<<"$(kiln_cli events --last 1000 2>/dev/null)"
	kiln_cli discovered | sed 's/^/#   /'

	local out
	out=$(kiln_cli enroll --from-discovered --pool 10.77.0.60-10.77.0.69/24 --mac "$MAC" \
		--rule 'inventory.memory_gib>=1:size=small' --rule 'inventory.memory_gib>=64:size=large' \
		--rule 'disk.size>=4G:storage=nvme' --rule 'inventory.disks=2:disks=two' 2>&1) || true
	printf '%s\n' "$out" | sed 's/^/#   /'
	local name=node-${MAC//:/}
	local labels
	labels=$(kiln_cli hardware show "$name" -o json 2>/dev/null |
		python3 -c 'import json,sys; h=json.load(sys.stdin); h=h.get("hardware", h); print(",".join(f"{k}={v}" for k,v in sorted(h["labels"].items())))' 2>/dev/null) || labels=
	check "enrol: $name has the labels its inventory earns ($labels)" \
		[ "$labels" = "disks=two,size=small,storage=nvme" ]
	check "enrol: it left the discovered list" [ "$(discovered 'd is None')" = True ]
	check "enrol: the inspection is its first inventory report" \
		[ "$(kiln_cli hardware inventory "$name" -o json 2>/dev/null |
			python3 -c 'import json,sys; m=json.load(sys.stdin); print(len(m["latest"]["inventory"]["disks"]))' 2>/dev/null)" = 2 ]
}

case_list() {
	e2e_setup discovery-list
	ns_create 1
	KILN_ARTIFACTS=$AGENT_OS kiln_serve
	start_machine
	local vm=$VM_PID
	# It asks again and again; once it has asked a few times, nothing has answered it.
	check "list: kiln discovered lists it (it asked several times)" wait_discovered 'd and d["count"] >= 3' 300
	check "list: no inspection" [ "$(discovered '"inspection" in d')" = False ]
	check "list: the machine is still up, stuck asking (nothing booted it)" kill -0 "$vm"
	check "list: no agent ran" bash -c "! grep -aq kiln-agent '$VM_LOG'"
	check "list: no inspection events" \
		bash -c "! grep -q inspection <<<\"\$1\"" _ "$(kiln_cli events --last 1000 2>/dev/null)"
	vm_stop "$vm"
}

CASES=(inspect list)
if [ "${1:-}" = --list ]; then
	printf '%s\n' "${CASES[@]}"
	exit 0
fi
[ -s "$AGENT_OS/initrd.img" ] || die "agent OS missing: images/agent/build.sh $AGENT_OS"
selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${CASES[@]}")
run_cases "${selected[@]}"
