#!/usr/bin/env bash
# Issue 14 points 1, 2 and 7: hardware inventory, disk hints and the wrong-disk guard on a
# QEMU machine with two disks of different sizes and serials (virtio 3 GiB `VIRTIO-A`, NVMe
# 4 GiB `NVME-B`, both blank).
#
#   hint:  hardware.csv says `disk: serial=NVME-B`; the workflow (image2disk, poweroff) writes
#          the NVMe disk only; `kiln hardware inventory` shows both disks as QEMU was given
#          them, the NVMe disk as the installed one; `disk.overwriting` names it.
#   swap:  the NVMe disk is swapped for another (`NVME-C`, holding a partition table) and the
#          machine installed again on /dev/nvme0n1: the agent refuses before writing (the
#          workflow fails naming both disks), and the swapped disk is untouched.
#
#   tests/e2e/inventory.sh [--list] [CASE...]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

AGENT_OS=$E2E_ASSETS/agent-os
TEST_OS=$E2E_ASSETS/test-os/test-os.raw.zst
HOST=inv-1
MAC=52:54:00:3f:02:01
IP=10.77.0.57

wait_workflow() {
	local deadline=$((SECONDS + $1)) state=
	while [ "$SECONDS" -lt "$deadline" ]; do
		state=$(kiln_cli workflow show "$HOST" -o json 2>/dev/null |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null) || state=
		case $state in succeeded | failed | timed-out) break ;; esac
		sleep 3
	done
	echo "${state:-unknown}"
}

# install DISK_COLUMN VIRTIO NVME: enrol with that disk column, run the workflow; prints its state.
install() {
	local disk=$1 virtio=$2 nvme_disk=$3
	echo "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk" >"$E2E_WORK/hardware.csv"
	echo "$HOST,,,,$MAC,$IP,255.255.255.0,$SERVER_IP,$SERVER_IP,type=worker,$disk" >>"$E2E_WORK/hardware.csv"
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null
	kiln workflow create --template "$E2E_WORK/inventory.yaml" --hardware "$HOST" >/dev/null
	vm_start "$HOST" --fw bios --tap tap0 --mac "$MAC" --disk "$virtio" --disk-serial VIRTIO-A \
		--rw-disk --nvme "$nvme_disk" --mem 1024 >&2
	local state
	state=$(wait_workflow 1200)
	vm_stop "$VM_PID" >&2 || true
	echo "$state"
}

# field PYTHON-EXPR: evaluates EXPR over `kiln hardware inventory -o json` as `m`.
field() {
	kiln_cli hardware inventory "$HOST" -o json |
		python3 -c "import json,sys; m=json.load(sys.stdin); print($1)"
}

zero_mib() { cmp -s -n 1048576 "$1" /dev/zero; }

case_hint_and_swap() {
	e2e_setup inventory
	ns_create 1
	write_image_poweroff_template "$E2E_WORK/inventory.yaml" inventory-install
	KILN_ARTIFACTS=$AGENT_OS kiln_serve
	kiln image import "$TEST_OS" --name test-os >/dev/null
	truncate -s 3G "$E2E_WORK/virtio.raw"
	truncate -s 4G "$E2E_WORK/nvme-b.raw"
	local state
	state=$(install "serial=NVME-B" "$E2E_WORK/virtio.raw" "$E2E_WORK/nvme-b.raw:NVME-B")
	check "hint: the workflow with disk serial=NVME-B succeeded (got $state)" [ "$state" = succeeded ]
	check "inventory: two disks, as QEMU was given them" \
		[ "$(field 'sorted((d["serial"], d["size_bytes"]) for d in m["latest"]["inventory"]["disks"])')" \
			= "[('NVME-B', 4294967296), ('VIRTIO-A', 3221225472)]" ]
	check "inventory: the NVMe disk is nvme0n1 and the virtio one vda" \
		[ "$(field 'sorted(d["name"] for d in m["latest"]["inventory"]["disks"])')" = "['nvme0n1', 'vda']" ]
	check "inventory: the NIC with the enrolled MAC" \
		grep -q "$MAC" <<<"$(field '[n["mac"] for n in m["latest"]["inventory"]["nics"]]')"
	check "inventory: memory about 1 GiB" [ "$(field 'm["latest"]["inventory"]["memory_bytes"] > 700 << 20')" = True ]
	check "hint: the image went to the NVMe disk" bash -c "! cmp -s -n 1048576 '$E2E_WORK/nvme-b.raw' /dev/zero"
	check "hint: the virtio disk is untouched" zero_mib "$E2E_WORK/virtio.raw"
	check "guard: the NVMe disk is recorded as the installed one" [ "$(field 'm["installed_disk"]["serial"]')" = NVME-B ]
	check "events: disk.overwriting names /dev/nvme0n1" \
		grep -q 'disk.overwriting.*/dev/nvme0n1' <<<"$(kiln_cli events "$HOST" 2>/dev/null)"
	kiln_cli hardware show "$HOST" | sed 's/^/#   /'

	# Another disk in the NVMe slot, holding a partition table of someone else's.
	truncate -s 4G "$E2E_WORK/nvme-c.raw"
	printf 'EFI PART' | dd of="$E2E_WORK/nvme-c.raw" bs=1 seek=512 conv=notrunc status=none
	local before
	before=$(sha256sum <"$E2E_WORK/nvme-c.raw")
	state=$(install /dev/nvme0n1 "$E2E_WORK/virtio.raw" "$E2E_WORK/nvme-c.raw:NVME-C")
	local msg
	msg=$(kiln_cli workflow show "$HOST" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["message"])')
	check "swap: the workflow failed (got $state)" [ "$state" = failed ]
	check "swap: the reason names the swapped and the installed disk ($msg)" \
		grep -q 'not the disk of this machine.s last install.*NVME-C.*NVME-B' <<<"$msg"
	check "swap: the swapped disk is untouched" [ "$(sha256sum <"$E2E_WORK/nvme-c.raw")" = "$before" ]
	check "swap: the virtio disk is untouched" zero_mib "$E2E_WORK/virtio.raw"
}

CASES=(hint-and-swap)
if [ "${1:-}" = --list ]; then
	printf '%s\n' "${CASES[@]}"
	exit 0
fi
[ -s "$TEST_OS" ] || die "test OS image missing: images/test-os/build.sh $E2E_ASSETS/test-os"
[ -s "$AGENT_OS/initrd.img" ] || die "agent OS missing: images/agent/build.sh $AGENT_OS"
selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${CASES[@]}")
run_cases "${selected[@]}"
