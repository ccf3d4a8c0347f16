#!/bin/bash
# Kiln netboot end-to-end tests: real firmware (SeaBIOS / OVMF) in QEMU (TCG) boots from a
# `kiln serve` running in an isolated network namespace.
#
# Usage: tests/e2e/netboot.sh [CASE...]      (default: all cases; `--list` lists them)
# Each case runs in its own process with its own namespace, data dir and cleanup trap.
# Output is TAP-like: "ok - ..." / "not ok - ..." lines, "# ..." diagnostics, and a final
# line "N passed, N failed". Exit status is non-zero if anything failed.
# Needs root, the kiln binary ($KILN_BIN, default target/release/kiln) and the test assets
# (built on demand into target/e2e-assets). See tests/e2e/lib.sh for the environment knobs.
set -euo pipefail

SELF=$(readlink -f "$0")
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$SELF")/lib.sh"

BOOT_TIMEOUT=${KILN_E2E_BOOT_TIMEOUT:-150} # generous: TCG boots take 7-20 s here; slower CI machines may need more
UNKNOWN_MAC_WAIT=90  # bounded wait for "nothing happens" in the unknown-MAC case
# Reaching the disk can take a while: with netboot off, UEFI firmware PXE and HTTP boot each
# retry DHCP for about a minute when the offer carries no boot file.
DISK_TIMEOUT=${KILN_E2E_DISK_TIMEOUT:-300}

# ---- cases ------------------------------------------------------------------------------

# expect_initramfs_boot LABEL HOST MAC: the VM netboots the test initramfs, which sees kiln's
# kernel command line for HOST/MAC and fetches /healthz from kiln; the guest then powers off.
expect_initramfs_boot() {
	local label=$1 host=$2 mac=$3 seen cmdline want
	seen=$(wait_for_any "$VM_LOG" "$BOOT_TIMEOUT" "$VM_PID" "$M_INITRAMFS" "${M_DEAD_ENDS[@]}") ||
		seen="nothing within ${BOOT_TIMEOUT}s (or QEMU exited)"
	if [ "$seen" != "$M_INITRAMFS" ]; then
		not_ok "$label: test initramfs never started (serial: $seen)"
		return 1
	fi
	log "$label: initramfs running after $((SECONDS - VM_START)) s"
	wait_for_any "$VM_LOG" 60 "$VM_PID" "$M_FETCH_OK" "$M_FETCH_FAIL" >/dev/null || true
	vm_wait_exit "$VM_PID" 30 || log "$label: guest did not power off"
	log "$label: guest done after $((SECONDS - VM_START)) s"
	cmdline=$(serial_line "$VM_LOG" KILN-CMDLINE)
	log "$label: $cmdline"
	log "$label: $(serial_line "$VM_LOG" KILN-GUEST-IP) $(serial_line "$VM_LOG" KILN-FETCH-BODY)"
	want="KILN-CMDLINE server=$KILN_URL mac=$(lower <<<"$mac") hostname=$host"
	if [ "$(lower <<<"$cmdline")" != "$(lower <<<"$want")" ]; then
		not_ok "$label: kernel command line from kiln (want '$want')"
		return 1
	fi
	if ! has_marker "$VM_LOG" "$M_FETCH_OK"; then
		not_ok "$label: guest could not fetch $KILN_URL/healthz"
		return 1
	fi
	return 0
}

expect_guest_ip() {
	local label=$1 want=$2 got
	got=$(serial_value "$VM_LOG" KILN-GUEST-IP)
	if [ "$got" = "$want" ]; then
		ok "$label: guest got its reserved address $want"
	else
		not_ok "$label: guest got '$got', hardware.csv reserves $want"
	fi
}

# (a) + (c) + events: SeaBIOS, QEMU's iPXE NIC ROM, kiln in reservation mode.
case_bios_ipxe_rom() {
	local host=node-a mac=52:54:00:4b:00:0a ip=10.77.0.57 ev
	e2e_setup bios-ipxe-rom
	ns_create 1
	write_hardware_csv "$E2E_WORK/hardware.csv" "$host,$mac,$ip" "other-a,52:54:00:4b:00:ff,10.77.0.58"
	kiln_serve
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null
	kiln hardware netboot "$host" on >/dev/null
	vm_start "$host" --fw bios --tap tap0 --mac "$mac"
	if expect_initramfs_boot "bios-ipxe-rom" "$host" "$mac"; then
		ok "bios-ipxe-rom: SeaBIOS + iPXE ROM boots kiln's kernel/initrd, guest fetches /healthz"
	fi
	expect_guest_ip "bios-ipxe-rom reserved-ip" "$ip"

	ev=$(kiln_events "$host") || ev=
	printf '%s\n' "$ev" >"$E2E_WORK/events-$host.txt"
	E2E_LOGS+=("kiln events $host=$E2E_WORK/events-$host.txt")
	printf '%s\n' "$ev" | tail -n 12 | sed 's/^/#   events: /'
	local missing=()
	grep -qiE 'dhcp[._]offer' <<<"$ev" || missing+=(dhcp.offer)
	grep -qiE 'dhcp[._]ack' <<<"$ev" || missing+=(dhcp.ack)
	grep -qiE 'http[._]script' <<<"$ev" || missing+=(http.script)
	grep -qiE 'http[._]artifact' <<<"$ev" || missing+=(http.artifact)
	if [ ${#missing[@]} -eq 0 ]; then
		ok "bios-ipxe-rom events: 'kiln events $host' shows dhcp.offer/ack, http.script, http.artifact"
	else
		not_ok "bios-ipxe-rom events: 'kiln events $host' lacks ${missing[*]}"
	fi
}

# (b) OVMF with the NIC ROM disabled: firmware PXE -> TFTP ipxe.efi -> iPXE -> HTTP script.
case_uefi_firmware_pxe() {
	local host=node-b mac=52:54:00:4b:00:0b ip=10.77.0.61 ev
	e2e_setup uefi-firmware-pxe
	ns_create 1
	write_hardware_csv "$E2E_WORK/hardware.csv" "$host,$mac,$ip"
	kiln_serve
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null
	kiln hardware netboot "$host" on >/dev/null
	# OVMF's IPv6 stack off: on failure, PXEv6/HTTPv6 would only add a minute of timeouts.
	vm_start "$host" --fw uefi --no-rom --uefi-netstack ipv4 --tap tap0 --mac "$mac"
	if expect_initramfs_boot "uefi-firmware-pxe" "$host" "$mac"; then
		if has_marker "$VM_LOG" "$M_UEFI_PXE_TFTP_OK"; then
			ok "uefi-firmware-pxe: OVMF PXE -> TFTP ipxe.efi -> iPXE -> kiln script boots the initramfs"
		else
			not_ok "uefi-firmware-pxe: booted, but not through firmware PXE + TFTP (no '$M_UEFI_PXE_TFTP_OK')"
		fi
	fi
	expect_guest_ip "uefi-firmware-pxe reserved-ip" "$ip"
	ev=$(kiln_events "$host") || ev=
	printf '%s\n' "$ev" | tail -n 12 | sed 's/^/#   events: /'
}

# (d) a MAC that is not in hardware.csv: kiln must not offer it anything. An enrolled machine
# boots at the same time on the same segment as a positive control (kiln is answering).
case_unknown_mac() {
	local mac=52:54:00:4b:00:0d known=node-d known_mac=52:54:00:4b:0d:01 seen ev all
	local k_pid k_log u_pid u_log
	e2e_setup unknown-mac
	ns_create 2
	write_hardware_csv "$E2E_WORK/hardware.csv" "$known,$known_mac,10.77.0.70"
	kiln_serve
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null
	kiln hardware netboot "$known" on >/dev/null
	vm_start "$known" --fw bios --tap tap1 --mac "$known_mac"
	k_pid=$VM_PID k_log=$VM_LOG
	vm_start unknown --fw bios --tap tap0 --mac "$mac"
	u_pid=$VM_PID u_log=$VM_LOG
	# iPXE gives up on DHCP, then SeaBIOS has nothing left to boot.
	seen=$(wait_for_any "$u_log" "$UNKNOWN_MAC_WAIT" "$u_pid" "$M_INITRAMFS" \
		"No configuration methods succeeded" "No more network devices" "${M_DEAD_ENDS[@]}") ||
		seen="(nothing within ${UNKNOWN_MAC_WAIT}s)"
	log "unknown-mac: unknown machine's serial shows: $seen after $((SECONDS - VM_START)) s"
	wait_for_marker "$k_log" "$M_FETCH_OK" 30 "$k_pid" || true
	vm_stop "$u_pid"
	vm_stop "$k_pid"

	all=$(kiln_events_all) || all=
	printf '%s\n' "$all" >"$E2E_WORK/events-all.txt"
	E2E_LOGS+=("kiln events=$E2E_WORK/events-all.txt")
	ev=$(grep -i -- "$mac" <<<"$all" || true)
	[ -z "$ev" ] || printf '%s\n' "$ev" | tail -n 8 | sed 's/^/#   events: /'
	local bad=()
	has_marker "$u_log" "$M_INITRAMFS" && bad+=("guest booted the initramfs")
	grep -qiE 'dhcp[._]?(offer|ack)' <<<"$ev" && bad+=("kiln events show an offer/ack for $mac")
	grep -qiE 'http[._]?(script|artifact)' <<<"$ev" && bad+=("kiln served http to $mac")
	clean_log "$KILN_LOG" | grep -i -- "$mac" | grep -qiE 'dhcp[._ ]?(offer|ack)|offered|acked' &&
		bad+=("kiln log shows an offer/ack for $mac")
	check_local_script "unknown-mac" "$mac" || bad+=("boot.ipxe for $mac does not leave for the disk")
	if [ ${#bad[@]} -eq 0 ]; then
		ok "unknown-mac: MAC not in hardware.csv gets no lease and no boot"
	else
		not_ok "unknown-mac: $(IFS=';'; echo "${bad[*]}")"
	fi
	if has_marker "$k_log" "$M_FETCH_OK"; then
		ok "unknown-mac control: enrolled machine on the same segment boots meanwhile"
	else
		not_ok "unknown-mac control: enrolled machine on the same segment did not boot"
	fi
}

# check_local_script LABEL MAC: kiln's iPXE script for MAC boots nothing from the network and
# leaves for the local disk (exit / sanboot).
check_local_script() {
	local label=$1 mac=$2 script
	script=$(http_get "ipxe/$mac/boot.ipxe")
	printf '%s\n' "$script" | head -n 8 | sed "s/^/#   $label boot.ipxe: /"
	grep -q '^#!ipxe' <<<"$script" &&
		! grep -qE '^[[:space:]]*(kernel|chain|initrd|imgexec)[[:space:]]' <<<"$script" &&
		grep -qE '^[[:space:]]*(exit|sanboot)([[:space:]]|$)' <<<"$script"
}

# (e) netboot off: the machine ends up on its next boot device, the disk.
netboot_off() {
	local label=$1 fw=$2 host=$3 mac=$4 ip=$5 ev seen
	shift 5
	e2e_setup "$label"
	ns_create 1
	write_hardware_csv "$E2E_WORK/hardware.csv" "$host,$mac,$ip"
	kiln_serve
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null   # enrolled with netboot off
	vm_start "$host" --fw "$fw" --tap tap0 --mac "$mac" --disk "$E2E_ASSETS/local-disk.img" "$@"
	seen=$(wait_for_any "$VM_LOG" "$DISK_TIMEOUT" "$VM_PID" "$M_LOCAL_DISK" "$M_INITRAMFS" \
		"${M_DEAD_ENDS[@]}") || seen="nothing within ${DISK_TIMEOUT}s (or QEMU exited)"
	log "$label: serial shows $seen after $((SECONDS - VM_START)) s"
	vm_stop "$VM_PID"
	ev=$(kiln_events "$host") || ev=
	printf '%s\n' "$ev" | tail -n 12 | sed 's/^/#   events: /'
	if [ "$seen" = "$M_INITRAMFS" ]; then
		not_ok "$label: guest booted the netboot initramfs although netboot is off"
	elif [ "$seen" != "$M_LOCAL_DISK" ]; then
		not_ok "$label: guest never reached the local disk (serial: $seen)"
	elif ! grep -qiE 'dhcp[._]?(offer|ack)|http[._]?script' <<<"$ev"; then
		not_ok "$label: reached the disk, but kiln's events show no dhcp/http for $host"
	else
		ok "$label: netboot off -> the machine boots its local disk"
	fi
}
case_netboot_off_bios() {
	netboot_off netboot-off-bios bios node-e 52:54:00:4b:00:0e 10.77.0.80
	# and what kiln would tell iPXE if it asked (kiln is still running)
	check "netboot-off-bios script: boot.ipxe for node-e (netboot off) leaves for the local disk" \
		check_local_script netboot-off-bios 52:54:00:4b:00:0e
}
# UEFI with the NIC's iPXE ROM as the NIC's only boot option, then the disk: a server whose
# boot order is "network, then disk".
case_netboot_off_uefi() {
	netboot_off netboot-off-uefi uefi node-e2 52:54:00:4b:00:1e 10.77.0.81 --uefi-netstack none
}
# UEFI firmware PXE (no iPXE ROM), then the disk. Whichever way kiln sends the machine on
# (an offer without a boot file, or ipxe.efi and a script that exits), the firmware must reach
# the disk: an iPXE `exit` with status 0 from ipxe.efi stops OVMF at its boot manager (UiApp,
# a dead end here) instead of trying the next boot option. OVMF's IPv6 stack is off
# (PXEv6/HTTPv6 would only add minutes of timeouts); its HTTPv4 boot option remains.
case_netboot_off_uefi_firmware_pxe() {
	netboot_off netboot-off-uefi-firmware-pxe uefi node-e3 52:54:00:4b:00:2e 10.77.0.82 \
		--no-rom --uefi-netstack ipv4
}

# (f) proxy mode beside a plain DHCP server (dnsmasq: addresses only, no boot options).
proxy_mode() {
	local label=$1 fw=$2 host=$3 mac=$4 got
	shift 4
	e2e_setup "$label"
	ns_create 1
	# the reservation must not matter in proxy mode: the address comes from dnsmasq
	write_hardware_csv "$E2E_WORK/hardware.csv" "$host,$mac,10.77.0.90"
	dnsmasq_dhcp_only 10.77.0.100 10.77.0.199
	kiln_serve --dhcp-mode proxy
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null
	kiln hardware netboot "$host" on >/dev/null
	vm_start "$host" --fw "$fw" "$@" --tap tap0 --mac "$mac"
	if expect_initramfs_boot "$label" "$host" "$mac"; then
		if [ "$fw" = uefi ] && ! has_marker "$VM_LOG" "$M_UEFI_PXE_TFTP_OK"; then
			not_ok "$label: booted, but not through firmware PXE + TFTP (no '$M_UEFI_PXE_TFTP_OK')"
		else
			ok "$label: kiln --dhcp-mode proxy beside dnsmasq boots the initramfs"
		fi
	fi
	ev=$(kiln_events "$host") || ev=
	printf '%s\n' "$ev" | tail -n 12 | sed 's/^/#   events: /'
	got=$(serial_value "$VM_LOG" KILN-GUEST-IP)
	if [[ $got =~ ^10\.77\.0\.1[0-9][0-9]$ ]]; then
		ok "$label: guest address $got came from the other DHCP server's range"
	else
		not_ok "$label: guest address '$got' is not from dnsmasq's range 10.77.0.100-199"
	fi
}
case_proxy_bios() { proxy_mode proxy-bios bios node-f 52:54:00:4b:00:0f; }
# the classic ProxyDHCP client: UEFI firmware PXE (no iPXE ROM) -> TFTP ipxe.efi -> iPXE
case_proxy_uefi_firmware_pxe() {
	proxy_mode proxy-uefi-firmware-pxe uefi node-f2 52:54:00:4b:00:1f --no-rom --uefi-netstack ipv4
}

CASES=(bios-ipxe-rom uefi-firmware-pxe unknown-mac netboot-off-bios netboot-off-uefi
	netboot-off-uefi-firmware-pxe proxy-bios proxy-uefi-firmware-pxe)

# ---- runner -----------------------------------------------------------------------------

run_one() { # in a child process: run case $1
	local fn=case_${1//-/_}
	declare -F "$fn" >/dev/null || die "unknown case $1"
	"$fn"
}

main() {
	if [ "${1:-}" = --case ]; then
		run_one "$2"
		exit 0
	fi
	if [ "${1:-}" = --list ]; then
		printf '%s\n' "${CASES[@]}"
		exit 0
	fi
	local selected=("$@") c passed=0 failed=0 out rc t0 n_ok n_fail
	trap 'echo "# interrupted"; exit 130' INT TERM
	[ ${#selected[@]} -gt 0 ] || selected=("${CASES[@]}")
	[ "$(id -u)" -eq 0 ] || { echo "netboot.sh: must run as root" >&2; exit 2; }
	require_assets
	[ -x "$KILN_BIN" ] || log "WARNING: $KILN_BIN not found; every case will fail"
	mkdir -p "$E2E_WORK_BASE"
	out=$(mktemp "$E2E_WORK_BASE/netboot-out.XXXXXX")
	for c in "${selected[@]}"; do
		log "=== $c"
		t0=$SECONDS
		set +e
		# tee ignores Ctrl-C so that the case's cleanup output still has a reader
		bash "$SELF" --case "$c" 2>&1 | (trap '' INT TERM; exec tee "$out")
		rc=${PIPESTATUS[0]}
		set -e
		if [ "$rc" -eq 130 ] || [ "$rc" -eq 143 ]; then
			echo "# interrupted during $c"
			rm -f "$out"
			exit "$rc"
		fi
		n_ok=$(grep -c '^ok - ' "$out" || true)
		n_fail=$(grep -c '^not ok - ' "$out" || true)
		if [ "$rc" -ne 0 ] && [ "$n_fail" -eq 0 ]; then
			echo "not ok - $c: harness error (exit status $rc)"
			n_fail=1
		elif [ "$n_ok" -eq 0 ] && [ "$n_fail" -eq 0 ]; then
			echo "not ok - $c: no result reported"
			n_fail=1
		fi
		passed=$((passed + n_ok))
		failed=$((failed + n_fail))
		log "$c took $((SECONDS - t0)) s"
	done
	rm -f "$out"
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}

main "$@"
