#!/usr/bin/env bash
# Issue 3 end to end: a QEMU machine with a blank disk netboots Kiln's agent
# OS, the agent streams the test OS onto the disk (sha256 checked), writes the
# NoCloud seed and reboots; the machine boots its disk (netboot is now off),
# real cloud-init sets the hostname and the static IP from hardware.csv and
# phones home; the workflow is `succeeded`. On BIOS and UEFI.
#
# The kexec case installs with workflows/debian-test-os-kexec.yaml: the agent
# starts the installed OS's kernel itself, so the firmware runs only once.
#
#   tests/e2e/workflow.sh [--list] [CASE...]      cases: see --list
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

AGENT_OS=$E2E_ASSETS/agent-os
TEST_OS=$E2E_ASSETS/test-os/test-os.raw.zst

# wait_workflow HOST TIMEOUT: poll until the machine's workflow ends; prints its state.
wait_workflow() {
	local host=$1 timeout=$2 deadline state=
	deadline=$((SECONDS + timeout))
	while [ "$SECONDS" -lt "$deadline" ]; do
		state=$(kiln_cli workflow show "$host" -o json 2>/dev/null |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null) || state=
		case $state in succeeded | failed | timed-out) break ;; esac
		kill -0 "$VM_PID" 2>/dev/null || { log "the machine stopped"; break; }
		sleep 2
	done
	echo "${state:-unknown}"
}

run_case() {
	local fw=$1 host=wf-$1 mac ip=10.77.0.57 state json
	mac=52:54:00:3f:00:0$([ "$fw" = bios ] && echo 1 || echo 2)
	e2e_setup "workflow-$fw"
	ns_create 1
	write_hardware_csv "$E2E_WORK/hardware.csv" "$host,$mac,$ip"
	KILN_ARTIFACTS=$AGENT_OS kiln_serve
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null
	kiln image import "$TEST_OS" --name test-os >/dev/null
	kiln workflow create --template "$REPO/workflows/debian-test-os.yaml" --hardware "$host" | sed 's/^/# /'
	truncate -s 3G "$E2E_WORK/disk.raw"
	vm_start "$host" --fw "$fw" --tap tap0 --mac "$mac" --disk "$E2E_WORK/disk.raw" --rw-disk --reboot \
		--mem 1024 --uefi-netstack none
	state=$(wait_workflow "$host" 900)
	kiln_cli workflow show "$host" | sed 's/^/#   /'
	if [ "$state" = succeeded ]; then
		ok "workflow-$fw: agent streamed the test OS, cloud-init ran in the installed OS, workflow succeeded"
	else
		not_ok "workflow-$fw: workflow ended $state"
		kiln_cli workflow logs "$host" | tail -n 20 | sed 's/^/#   logs: /'
		return 0
	fi
	json=$(kiln_cli workflow show "$host" -o json)
	local peer payload
	peer=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["phone_home"]["peer"])' <<<"$json")
	payload=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["phone_home"]["payload"])' <<<"$json")
	check "workflow-$fw static-ip: the installed OS phoned home from its reserved address $ip (got $peer)" \
		[ "$peer" = "$ip" ]
	check "workflow-$fw hostname: cloud-init set the hostname $host (phone-home: $payload)" \
		grep -q "hostname=$host" <<<"$payload"
	local agent_boots
	agent_boots=$(clean_log "$VM_LOG" | grep -c 'kiln-agent-os: up' || true)
	check "workflow-$fw disk-boot: the agent OS booted once, then the installed OS from disk (netboot off)" \
		[ "$agent_boots" = 1 ]
	check "workflow-$fw cloud-init: the installed OS's cloud-init ran from the NoCloud seed" \
		grep -qE 'Cloud-init v\. [0-9.]+ finished.*DataSourceNoCloud' <(clean_log "$VM_LOG")
}

# progress_done HOST: bytes the image action has reported so far.
progress_done() {
	kiln_cli workflow show "$1" -o json 2>/dev/null |
		python3 -c 'import json,sys; a=json.load(sys.stdin)["actions"][0]; print((a.get("progress") or {}).get("done", 0))' 2>/dev/null ||
		echo 0
}

# wait_progress HOST: until the image is streaming (some bytes reported); 0 if it is.
wait_progress() {
	local deadline=$((SECONDS + 300))
	while [ "$SECONDS" -lt "$deadline" ]; do
		[ "$(progress_done "$1")" -gt 0 ] && return 0
		sleep 0.5
	done
	return 1
}

# Starts a BIOS machine on a blank disk with a workflow from TEMPLATE.
start_install() {
	local name=$1 template=$2
	HOST=wf-$name
	MAC=52:54:00:3f:01:0${#name}
	e2e_setup "workflow-$name"
	ns_create 1
	write_hardware_csv "$E2E_WORK/hardware.csv" "$HOST,$MAC,10.77.0.57"
	KILN_ARTIFACTS=$AGENT_OS kiln_serve
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null
	kiln image import "$TEST_OS" --name test-os >/dev/null
	kiln workflow create --template "$template" --hardware "$HOST" >/dev/null
	truncate -s 3G "$E2E_WORK/disk.raw"
	vm_start "$HOST" --fw bios --tap tap0 --mac "$MAC" --disk "$E2E_WORK/disk.raw" --rw-disk --reboot --mem 1024
}

# During one install: kill -9 kiln while the agent streams and restart it on
# the same data dir; then take the machine's network away for 30 s. The agent
# must wait, resume where it was, and the workflow succeed.
case_kill_server_and_network_loss() {
	start_install faults "$REPO/workflows/debian-test-os.yaml"
	wait_progress "$HOST" || { not_ok "faults: the image never started streaming"; return 0; }
	kill -KILL "$KILN_PID"
	wait "$KILN_PID" 2>/dev/null || true
	log "kiln killed with SIGKILL mid-stream; restarting in 5 s"
	sleep 5
	KILN_ARTIFACTS=$AGENT_OS kiln_serve
	local before after state
	before=$(progress_done "$HOST")
	nsx ip link set tap0 down
	log "tap0 down for 30 s (streamed $before bytes so far)"
	sleep 30
	nsx ip link set tap0 up
	state=$(wait_workflow "$HOST" 900)
	check "kill-server: after kill -9 of kiln mid-stream and a restart, the workflow ends succeeded (got $state)" \
		[ "$state" = succeeded ]
	check "kill-server: the agent resumed the download instead of starting over" \
		grep -qiE 'resum' <(kiln_cli workflow logs "$HOST")
	after=$(kiln_cli workflow logs "$HOST" | grep -ciE 'resum' || true)
	check "network-loss: after 30 s without network mid-stream the agent carried on and the workflow succeeded ($after resume(s) logged)" \
		[ "$state" = succeeded ]
}

# The agent leaves by kexec: the installed OS boots without a second pass
# through the firmware and still runs cloud-init and phones home.
case_kexec() {
	start_install kexec "$REPO/workflows/debian-test-os-kexec.yaml"
	local state logs bios_banners agent_boots
	state=$(wait_workflow "$HOST" 900)
	kiln_cli workflow show "$HOST" | sed 's/^/#   /'
	logs=$(kiln_cli workflow logs "$HOST")
	grep -iE 'kexec' <<<"$logs" | sed 's/^/#   logs: /'
	check "kexec: the workflow succeeded (got $state)" [ "$state" = succeeded ]
	check "kexec: the agent loaded the installed OS's kernel, initrd and GRUB command line" \
		grep -qE 'kexec: loading /boot/vmlinuz-[^ ]+ on /dev/vda[0-9]+ with initrd /boot/initrd.img-[^ ]+, command line "root=LABEL=kiln-root' <<<"$logs"
	check "kexec: no fallback to a firmware reboot" \
		bash -c '! grep -q "kexec is not possible" <<<"$1"' _ "$logs"
	bios_banners=$(clean_log "$VM_LOG" | grep -c 'SeaBIOS (version' || true)
	agent_boots=$(clean_log "$VM_LOG" | grep -c 'kiln-agent-os: up' || true)
	check "kexec: the firmware ran once (SeaBIOS banners: $bios_banners), the agent OS once ($agent_boots)" \
		[ "$bios_banners" = 1 -a "$agent_boots" = 1 ]
	check "kexec: the installed OS's cloud-init ran from the NoCloud seed and phoned home" \
		grep -qE 'Cloud-init v\. [0-9.]+ finished.*DataSourceNoCloud' <(clean_log "$VM_LOG")
}

# A wrong sha256: the action fails, the disk is wiped, the machine is not rebooted into it.
case_bad_sha256() {
	local tpl=$E2E_WORK_BASE/bad-sha256.yaml
	mkdir -p "$E2E_WORK_BASE"
	sed -e "s|sha256: '{{ images\[\"test-os\"\].sha256 }}'|sha256: '$(printf '0%.0s' $(seq 64))'|" \
		-e 's/retries: 2/retries: 0/' -e 's/name: debian-test-os/name: bad-sha256/' \
		"$REPO/workflows/debian-test-os.yaml" >"$tpl"
	start_install badsha "$tpl"
	local state msg
	state=$(wait_workflow "$HOST" 900)
	msg=$(kiln_cli workflow show "$HOST" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["message"])')
	check "bad-sha256: the workflow failed (got $state)" [ "$state" = failed ]
	check "bad-sha256: the message says why ($msg)" grep -q 'sha256 mismatch' <<<"$msg"
	sleep 5
	vm_stop "$VM_PID"
	check "bad-sha256: the disk's partition table is wiped (first MiB zero)" \
		cmp -s -n 1048576 "$E2E_WORK/disk.raw" /dev/zero
	check "bad-sha256: the machine was not rebooted into the disk" \
		[ "$(clean_log "$VM_LOG" | grep -c 'kiln-agent-os: up' || true)" = 1 ]
}

CASES=(bios uefi kill-server-and-network-loss bad-sha256 kexec)
if [ "${1:-}" = --list ]; then
	printf '%s\n' "${CASES[@]}"
	exit 0
fi
[ -s "$TEST_OS" ] || die "test OS image missing: images/test-os/build.sh $E2E_ASSETS/test-os"
[ -s "$AGENT_OS/initrd.img" ] || die "agent OS missing: images/agent/build.sh $AGENT_OS"
selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${CASES[@]}")
passed=0
failed=0
for c in "${selected[@]}"; do
	case $c in
	bios | uefi) out=$( (run_case "$c") 2>&1) || true ;;
	*) out=$( ("case_${c//-/_}") 2>&1) || true ;;
	esac
	printf '%s\n' "$out"
	passed=$((passed + $(grep -c '^ok - ' <<<"$out" || true)))
	failed=$((failed + $(grep -c '^not ok - ' <<<"$out" || true)))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
