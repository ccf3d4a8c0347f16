# shellcheck shell=bash
# shellcheck disable=SC2034 # variables used by the scripts that source this file
# Kiln end-to-end harness helpers. Source from a test script that runs `set -euo pipefail`.
#
# Network safety: everything a test creates lives in its own network namespace
# (kiln-e2e-<pid>-<case>): a bridge br0 (10.77.0.1/24), tap devices for QEMU, and a veth
# pair whose both ends stay inside the namespace (it only gives br0 a carrier, like a switch
# port would). Nothing is linked to the host's interfaces. Servers and QEMU are started as
# `ip netns exec NS cmd &` so $! is the process itself; cleanup kills only those recorded
# PIDs and deletes the namespace.
#
# Environment:
#   KILN_BIN          kiln binary under test      (default: <repo>/target/release/kiln)
#   KILN_E2E_ASSETS   test boot assets            (default: <repo>/target/e2e-assets)
#   KILN_E2E_WORK     per-run scratch directories (default: <repo>/target/e2e-work)
#   KILN_E2E_KEEP=1   keep the scratch directory of passing cases too
#   KILN_E2E_TFTP_ROOT  --tftp-root given to kiln (default /usr/lib/ipxe, Debian's ipxe package)

E2E_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KILN_BIN=${KILN_BIN:-$E2E_REPO/target/release/kiln}
E2E_ASSETS=${KILN_E2E_ASSETS:-$E2E_REPO/target/e2e-assets}
E2E_WORK_BASE=${KILN_E2E_WORK:-$E2E_REPO/target/e2e-work}
E2E_TFTP_ROOT=${KILN_E2E_TFTP_ROOT:-/usr/lib/ipxe}

SERVER_IP=10.77.0.1
SUBNET_PREFIX=24
HTTP_PORT=8080
KILN_URL=http://$SERVER_IP:$HTTP_PORT
KERNEL_ARGS="console=ttyS0,115200 panic=-1 quiet"

OVMF_CODE=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}
OVMF_VARS=${OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}

# Serial markers (see images/test-initramfs/build.sh and local-disk.sh).
M_INITRAMFS=KILN-TEST-INITRAMFS-OK
M_FETCH_OK=KILN-FETCH-OK
M_FETCH_FAIL=KILN-FETCH-FAIL
M_POWEROFF=KILN-POWEROFF
M_LOCAL_DISK=KILN-LOCAL-DISK-BOOT
# OVMF's PXE client fetched its network boot program over TFTP (HTTP boot prints otherwise).
M_UEFI_PXE_TFTP_OK="NBP file downloaded successfully"
# Dead ends: the firmware has nothing left to boot (SeaBIOS / OVMF, which then opens its
# boot manager menu "UiApp").
M_DEAD_ENDS=("No bootable device" "No bootable option or device was found" '"UiApp" from'
	"UEFI Interactive Shell")

# State of the current case (one case per process).
E2E_CASE=
E2E_NS=
E2E_WORK=
E2E_DATA=
E2E_FAILED=0
E2E_PIDS=()     # every background process we started, in start order
E2E_LOGS=()     # "label=path" of logs worth showing on failure
E2E_PIDFILES=() # pid files of processes started for us by others (QEMU behind a virtual BMC)

# ---- output -----------------------------------------------------------------------------

log() { printf '# %s\n' "$*"; }

# ok/not_ok print the TAP-like result lines the runner counts.
ok() { printf 'ok - %s\n' "$*"; }
not_ok() {
	printf 'not ok - %s\n' "$*"
	E2E_FAILED=1
}

# check NAME CMD...: run CMD, report NAME as ok/not ok; never aborts the case.
check() {
	local name=$1
	shift
	if "$@"; then ok "$name"; else not_ok "$name"; fi
}

die() {
	log "harness error: $*"
	exit 1
}

# Printable serial log: no CR, no ANSI escape sequences, no other control characters.
clean_log() {
	[ -f "$1" ] || return 0
	tr -d '\r' <"$1" | sed -e 's/\x1b\[[0-9;?=]*[A-Za-z]//g' -e 's/\x1b[()][A-Za-z0-9]//g' -e 's/\x1b[A-Za-z]//g' |
		tr -d '\000-\010\013-\037\177'
}

# show_log LABEL FILE [LINES]: tail of a log, as TAP comments.
show_log() {
	local label=$1 file=$2 lines=${3:-40}
	log "---- $label ($file), last $lines lines ----"
	if [ -f "$file" ]; then
		clean_log "$file" | { grep -v '^[[:space:]]*$' || true; } | tail -n "$lines" | sed 's/^/#   /'
	else
		log "  (missing)"
	fi
}

show_logs() {
	local entry
	for entry in "${E2E_LOGS[@]}"; do
		show_log "${entry%%=*}" "${entry#*=}" "${1:-40}"
	done
}

# ---- lifecycle --------------------------------------------------------------------------

# e2e_setup CASE: scratch dir, data dir, namespace name, cleanup trap.
e2e_setup() {
	E2E_CASE=$1
	[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, taps)"
	E2E_NS=kiln-e2e-$$-$E2E_CASE
	mkdir -p "$E2E_WORK_BASE"
	E2E_WORK=$(mktemp -d "$E2E_WORK_BASE/$E2E_CASE.XXXXXX")
	E2E_DATA=$E2E_WORK/data
	mkdir -p "$E2E_DATA"
	trap e2e_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	log "case $E2E_CASE: namespace $E2E_NS, work dir $E2E_WORK"
}

# stop_pid PID: TERM, then KILL after 5 s; reap it.
stop_pid() {
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "pid $pid ignored SIGTERM, sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

e2e_cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	set +e # clean up as much as possible, whatever fails
	# machines behind virtual BMCs first, then newest first: QEMU before the servers it talks to
	for i in "${E2E_PIDFILES[@]}"; do
		[ -s "$i" ] && stop_pid "$(cat "$i")"
	done
	for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${E2E_PIDS[i]}"
	done
	if [ -n "$E2E_NS" ] && ip netns list | awk '{print $1}' | grep -qxF -- "$E2E_NS"; then
		ip netns del "$E2E_NS" || log "could not delete namespace $E2E_NS"
	fi
	if [ "$rc" -ne 0 ] || [ "$E2E_FAILED" -ne 0 ]; then
		show_logs 40
		log "case $E2E_CASE: logs kept in $E2E_WORK"
	elif [ "${KILN_E2E_KEEP:-0}" != 1 ] && [ -n "$E2E_WORK" ]; then
		rm -rf "$E2E_WORK"
	fi
	exit "$rc"
}

# ---- network ----------------------------------------------------------------------------

# ns_create NTAPS: namespace with br0 = $SERVER_IP/24 and taps tap0..tap(N-1) enslaved to it.
ns_create() {
	local ntaps=$1 i ns=$E2E_NS
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip -n "$ns" link add br0 type bridge
	ip -n "$ns" link set br0 type bridge stp_state 0 forward_delay 0
	# In-namespace veth pair as a permanent bridge port: br0 gets a carrier (and so a usable
	# IPv6 link-local address) before any QEMU opens its tap. Both ends stay in $ns.
	ip -n "$ns" link add sw0 type veth peer name sw0p
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.sw0p.disable_ipv6=1
	ip -n "$ns" link set sw0 master br0
	ip -n "$ns" link set sw0 up
	ip -n "$ns" link set sw0p up
	for ((i = 0; i < ntaps; i++)); do
		ip -n "$ns" tuntap add dev "tap$i" mode tap
		ip -n "$ns" link set "tap$i" master br0
		ip -n "$ns" link set "tap$i" up
	done
	ip -n "$ns" addr add "$SERVER_IP/$SUBNET_PREFIX" dev br0
	ip -n "$ns" link set br0 up
	# wait until br0 has a link-local address that is no longer tentative (DAD done)
	for i in $(seq 100); do
		if ip -n "$ns" -6 addr show dev br0 scope link | grep -q 'inet6 fe80' &&
			! ip -n "$ns" -6 addr show dev br0 | grep -q tentative; then
			return 0
		fi
		sleep 0.1
	done
	ip -n "$ns" -6 addr show dev br0 | sed 's/^/# /'
	die "br0 link-local address still tentative after 10 s"
}

# nsx CMD...: run CMD inside the case's namespace (foreground).
nsx() { ip netns exec "$E2E_NS" "$@"; }

# ---- kiln -------------------------------------------------------------------------------

# kiln_cli ARGS...: the kiln CLI, a client of the case's server: run inside the namespace,
# where `kiln serve` runs and its admin API listens (127.0.0.1:9443 of the namespace, found
# through DATA_DIR/api.json and DATA_DIR/admin.token). Output and exit status as the CLI's.
# Every kiln command but serve, demo and token needs the server up: call it after kiln_serve.
kiln_cli() { ip netns exec "$E2E_NS" "$KILN_BIN" "$@" --data-dir "$E2E_DATA"; }

# kiln ARGS...: kiln_cli, logged: output goes to $E2E_WORK/kiln-cli.log and, on failure, to
# the test output.
kiln() {
	local out rc=0
	out=$(kiln_cli "$@" 2>&1) || rc=$?
	printf '$ kiln %s --data-dir %s\n%s\n(rc=%d)\n' "$*" "$E2E_DATA" "$out" "$rc" >>"$E2E_WORK/kiln-cli.log"
	if [ "$rc" -ne 0 ]; then
		log "kiln $* failed (rc=$rc):"
		printf '%s\n' "$out" | sed 's/^/#   /'
		return "$rc"
	fi
	printf '%s\n' "$out"
}

# write_hardware_csv FILE ROW...: EKS Anywhere hardware.csv; each ROW is
# "hostname,mac,ip_address" (bmc columns empty, netmask /24, gateway + nameserver = server).
write_hardware_csv() {
	local file=$1 row host mac ip
	shift
	echo "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk" >"$file"
	for row in "$@"; do
		IFS=, read -r host mac ip <<<"$row"
		echo "$host,,,,$mac,$ip,255.255.255.0,$SERVER_IP,$SERVER_IP|1.1.1.1,type=worker|e2e=true,/dev/vda" >>"$file"
	done
}

# kiln_serve [EXTRA ARGS...]: start `kiln serve` in the namespace; sets KILN_PID, KILN_LOG.
kiln_serve() {
	[ -x "$KILN_BIN" ] || die "kiln binary $KILN_BIN missing (cargo build --release -p kiln)"
	KILN_LOG=$E2E_WORK/kiln-serve.log
	local cmd=("$KILN_BIN" serve --data-dir "$E2E_DATA" --interface br0 --address "$SERVER_IP"
		--http-port "$HTTP_PORT" --tftp-root "$E2E_TFTP_ROOT" --artifacts "${KILN_ARTIFACTS:-$E2E_ASSETS/initramfs}"
		--kernel-args "$KERNEL_ARGS" "$@")
	log "starting: ${cmd[*]}"
	# the server writes a fresh one once its admin API listens (a restart reuses the data dir)
	rm -f "$E2E_DATA/api.json"
	ip netns exec "$E2E_NS" "${cmd[@]}" </dev/null >"$KILN_LOG" 2>&1 &
	KILN_PID=$!
	E2E_PIDS+=("$KILN_PID")
	E2E_LOGS+=("kiln serve=$KILN_LOG")
	wait_http_ok "$KILN_URL/healthz" 30 "$KILN_PID" || die "kiln serve did not answer $KILN_URL/healthz"
	wait_admin_api
}

# wait_admin_api: the boot services answer first; the admin API binds (and writes
# DATA_DIR/api.json, which the CLI reads) right after. Dies if it does not come.
wait_admin_api() {
	local i
	for i in $(seq 150); do
		[ -s "$E2E_DATA/api.json" ] && return 0
		kill -0 "$KILN_PID" 2>/dev/null || break
		sleep 0.2
	done
	die "kiln serve wrote no $E2E_DATA/api.json (its admin API is not up)"
}

# kiln_serve_queries: for a data dir whose lab is gone (the cluster suite, after `kiln demo
# --keep`): a namespace without machines and `kiln serve --dhcp-mode off` in it, only so
# that kiln_cli can read what happened through the admin API.
kiln_serve_queries() {
	ns_create 0
	KILN_ARTIFACTS=${KILN_ARTIFACTS:-$E2E_ASSETS/agent-os} kiln_serve --dhcp-mode off
}

# wait_http_ok URL TIMEOUT [PID]: poll URL from inside the namespace until it answers 200.
wait_http_ok() {
	local url=$1 timeout=$2 pid=${3:-} deadline
	deadline=$((SECONDS + timeout))
	while [ "$SECONDS" -lt "$deadline" ]; do
		if nsx curl --noproxy '*' -sf -o /dev/null --max-time 2 "$url"; then return 0; fi
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
			log "process $pid exited before $url answered"
			return 1
		fi
		sleep 0.2
	done
	return 1
}

# kiln_events [NAME]: `kiln events` output (for the whole data dir without NAME).
kiln_events() { kiln events "$@"; }

# kiln_events_all: every event, one per line, with MACs (JSON lines when kiln offers them,
# so that events of machines without a name still show their MAC).
kiln_events_all() {
	kiln_cli events --last 100000 -o json 2>/dev/null || kiln events
}

# http_get PATH: body of $KILN_URL/PATH fetched from inside the namespace ("" on failure).
http_get() { nsx curl --noproxy '*' -s --max-time 10 "$KILN_URL/$1" || true; }

# ---- other servers ----------------------------------------------------------------------

# dnsmasq_dhcp_only FIRST LAST: a plain DHCP server on br0 handing out FIRST..LAST with no
# boot options (no DNS, no TFTP, no PXE, no RA). Sets DNSMASQ_PID, DNSMASQ_LOG.
dnsmasq_dhcp_only() {
	local first=$1 last=$2
	command -v dnsmasq >/dev/null || die "dnsmasq missing (apt-get install dnsmasq-base)"
	DNSMASQ_LOG=$E2E_WORK/dnsmasq.log
	ip netns exec "$E2E_NS" dnsmasq --no-daemon --conf-file=/dev/null --port=0 \
		--interface=br0 --bind-interfaces --except-interface=lo \
		--dhcp-range="$first,$last,255.255.255.0,10m" --dhcp-option=option:router,"$SERVER_IP" \
		--dhcp-leasefile="$E2E_WORK/dnsmasq.leases" --no-ping --log-dhcp --log-facility=- \
		--pid-file= --user=root </dev/null >"$DNSMASQ_LOG" 2>&1 &
	DNSMASQ_PID=$!
	E2E_PIDS+=("$DNSMASQ_PID")
	E2E_LOGS+=("dnsmasq=$DNSMASQ_LOG")
	sleep 0.5
	kill -0 "$DNSMASQ_PID" 2>/dev/null || die "dnsmasq exited at start"
}

# ---- QEMU -------------------------------------------------------------------------------

# ipmi_sim_files DIR PORT CHASSIS [PASSWORD] [NAME]: DIR/lan.conf (0600: it holds the password)
# and DIR/bmc.emu for OpenIPMI's ipmi_sim: one BMC on 127.0.0.1:PORT, user admin, whose
# chassis_control runs the script CHASSIS (power and boot commands); DIR/state for its state.
ipmi_sim_files() {
	local dir=$1 port=$2 chassis=$3 password=${4:-password} name=${5:-kiln-e2e}
	mkdir -p "$dir/state"
	(
		umask 077
		cat >"$dir/lan.conf" <<-EOF
			name "$name"
			set_working_mc 0x20
			  startlan 1
			    addr 127.0.0.1 $port
			    priv_limit admin
			    allowed_auths_callback none md2 md5 straight
			    allowed_auths_user none md2 md5 straight
			    allowed_auths_operator none md2 md5 straight
			    allowed_auths_admin none md2 md5 straight
			    guid a123456789abcdefa123456789abcdef
			  endlan
			  chassis_control "$chassis 0x20"
			  user 2 true "admin" "$password" admin 10 none md2 md5 straight
		EOF
	)
	cat >"$dir/bmc.emu" <<-'EOF'
		mc_setbmc 0x20
		mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
		mc_enable 0x20
	EOF
}

# vm_start NAME --tap TAP --mac MAC [--fw bios|uefi] [--no-rom] [--disk IMG] [--nic MODEL]
#          [--uefi-netstack all|ipv4|none] [--rw-disk] [--reboot] [--mem MB]
# Starts QEMU in the background; boot order: the NIC (bootindex 1), then the disk if given
# (bootindex 2). Sets VM_PID, VM_LOG (serial log) and VM_START ($SECONDS at start).
#   --no-rom          disable the NIC's option ROM (QEMU's iPXE): firmware-native PXE
#   --uefi-netstack   which of OVMF's own network stacks exist (fw_cfg IPv4Support /
#                     IPv6Support; default all). With all, OVMF gives the NIC PXEv4 (again
#                     over iPXE's SNP when the ROM is there), PXEv6, HTTPv4 and HTTPv6 boot
#                     options, all tried before the disk: about 3.5 minutes of timeouts under
#                     TCG on a segment without DHCPv6. none: with the ROM, the iPXE ROM is the
#                     NIC's only boot option. ipv4: PXEv4 and HTTPv4 only.
#   --rw-disk         writes reach the disk image (default: a throw-away snapshot)
#   --reboot          a guest reboot restarts the machine (default: QEMU exits)
#   --mem MB          memory (default 512)
vm_start() {
	local name=$1 tap='' mac='' fw=bios rom=default disk='' nic=virtio-net-pci netstack=all
	local snapshot=on noreboot=1 mem=512 disk_serial='' nvme=()
	shift
	while [ $# -gt 0 ]; do
		case $1 in
		--tap) tap=$2; shift 2 ;;
		--mac) mac=$2; shift 2 ;;
		--fw) fw=$2; shift 2 ;;
		--no-rom) rom=none; shift ;;
		--disk) disk=$2; shift 2 ;;
		--nic) nic=$2; shift 2 ;;
		--uefi-netstack) netstack=$2; shift 2 ;;
		--rw-disk) snapshot=off; shift ;;
		--reboot) noreboot=0; shift ;;
		--mem) mem=$2; shift 2 ;;
		--disk-serial) disk_serial=$2; shift 2 ;;
		--nvme) nvme+=("$2"); shift 2 ;; # FILE:SERIAL, read-write, not bootable
		*) die "vm_start: unknown option $1" ;;
		esac
	done
	if [ -z "$tap" ] || [ -z "$mac" ]; then die "vm_start: --tap and --mac are required"; fi
	VM_LOG=$E2E_WORK/$name.serial.log
	local qlog=$E2E_WORK/$name.qemu.log
	local args=(-accel tcg -machine q35 -m "$mem" -smp 1 -nographic -monitor none
		-serial "file:$VM_LOG")
	if [ "$noreboot" = 1 ]; then args+=(-no-reboot); fi
	case $fw in
	bios) ;;
	uefi)
		cp "$OVMF_VARS" "$E2E_WORK/$name.OVMF_VARS.fd"
		args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE"
			-drive "if=pflash,format=raw,unit=1,file=$E2E_WORK/$name.OVMF_VARS.fd")
		case $netstack in
		all) ;;
		ipv4) args+=(-fw_cfg "name=opt/org.tianocore/IPv6Support,string=no") ;;
		none) args+=(-fw_cfg "name=opt/org.tianocore/IPv4Support,string=no"
			-fw_cfg "name=opt/org.tianocore/IPv6Support,string=no") ;;
		*) die "vm_start: --uefi-netstack all|ipv4|none" ;;
		esac
		;;
	*) die "vm_start: --fw bios|uefi" ;;
	esac
	local nicdev="$nic,netdev=n0,mac=$mac,bootindex=1"
	[ "$rom" = none ] && nicdev+=",romfile="
	args+=(-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" -device "$nicdev")
	if [ -n "$disk" ]; then
		args+=(-drive "file=$disk,format=raw,if=none,id=d0,snapshot=$snapshot"
			-device "virtio-blk-pci,drive=d0,bootindex=2${disk_serial:+,serial=$disk_serial}")
	fi
	local i=0 n
	for n in "${nvme[@]}"; do
		args+=(-drive "file=${n%%:*},format=raw,if=none,id=n$i" -device "nvme,drive=n$i,serial=${n##*:}")
		i=$((i + 1))
	done
	log "vm $name: fw=$fw nic=$nic rom=$rom mac=$mac tap=$tap${disk:+ disk=$(basename "$disk")}$([ "$fw" = bios ] || echo " uefi-netstack=$netstack")"
	: >"$VM_LOG"
	ip netns exec "$E2E_NS" qemu-system-x86_64 "${args[@]}" </dev/null >"$qlog" 2>&1 &
	VM_PID=$!
	VM_START=$SECONDS
	E2E_PIDS+=("$VM_PID")
	E2E_LOGS+=("$name qemu=$qlog" "$name serial=$VM_LOG")
}

# vm_stop PID: stop a VM that is not expected to power itself off.
vm_stop() { stop_pid "$1"; }

# vm_wait_exit PID TIMEOUT: wait for QEMU to exit by itself (guest poweroff).
vm_wait_exit() {
	local pid=$1 deadline=$((SECONDS + $2))
	while [ "$SECONDS" -lt "$deadline" ]; do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.2
	done
	return 1
}

# ---- serial log assertions --------------------------------------------------------------

has_marker() { grep -aqF -- "$2" "$1" 2>/dev/null; }

# wait_for_marker LOG MARKER TIMEOUT [PID]
# 0: MARKER appeared; 1: timeout; 2: process PID exited without printing it.
wait_for_marker() {
	local file=$1 marker=$2 timeout=$3 pid=${4:-} deadline
	deadline=$((SECONDS + timeout))
	while [ "$SECONDS" -lt "$deadline" ]; do
		has_marker "$file" "$marker" && return 0
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
			has_marker "$file" "$marker" && return 0
			log "$(basename "$file"): process $pid exited without printing $marker"
			return 2
		fi
		sleep 0.25
	done
	log "$(basename "$file"): no $marker within ${timeout}s"
	return 1
}

# wait_for_any LOG TIMEOUT PID MARKER...: first of several markers (prints it); 1 on timeout
# or exit of PID without any of them.
wait_for_any() {
	local file=$1 timeout=$2 pid=$3 deadline m
	shift 3
	deadline=$((SECONDS + timeout))
	while [ "$SECONDS" -lt "$deadline" ]; do
		local alive=1
		kill -0 "$pid" 2>/dev/null || alive=0
		for m in "$@"; do
			if has_marker "$file" "$m"; then
				echo "$m"
				return 0
			fi
		done
		[ "$alive" -eq 1 ] || return 1
		sleep 0.25
	done
	return 1
}

# serial_value LOG KEY: value after the last "KEY=" on a line of LOG (e.g. KILN-GUEST-IP).
serial_value() {
	clean_log "$1" | sed -n "s/.*$2=\\([^[:space:]]*\\).*/\\1/p" | tail -n 1 || true
}

# serial_line LOG PREFIX: last line of LOG starting with PREFIX (cleaned).
serial_line() {
	clean_log "$1" | { grep -a -- "$2" || true; } | tail -n 1 | sed "s/^.*\\($2\\)/\\1/"
}

lower() { tr '[:upper:]' '[:lower:]'; }

# Require the test assets; build them if missing (cheap, cached).
require_assets() {
	"$E2E_REPO/images/test-initramfs/build.sh" "$E2E_ASSETS/initramfs" >/dev/null ||
		die "building the test initramfs failed"
	"$E2E_REPO/images/test-initramfs/local-disk.sh" "$E2E_ASSETS/local-disk.img" >/dev/null ||
		die "building the local disk image failed"
}

# write_image_poweroff_template FILE NAME: a workflow template NAME that streams the test OS image
# to the machine's disk, then powers it off (the workflow ends with the agent: no reboot).
write_image_poweroff_template() {
	cat >"$1" <<YAML
name: $2
timeout: 30m
actions:
  - name: stream-image
    kind: image2disk
    timeout: 20m
    retries: 0
    with:
      url: '{{ images["test-os"].url }}'
      sha256: '{{ images["test-os"].sha256 }}'
      size: '{{ images["test-os"].size }}'
  - name: off
    kind: poweroff
    timeout: 2m
YAML
}

# run_cases CASE...: runs case_<name> (dashes as underscores) for each, each in a subshell of
# its own, shows its output, prints "N passed, N failed"; fails when one failed or none passed.
run_cases() {
	local c out passed=0 failed=0
	for c in "$@"; do
		out=$( ("case_${c//-/_}") 2>&1) || true
		printf '%s\n' "$out"
		passed=$((passed + $(grep -c '^ok - ' <<<"$out" || true)))
		failed=$((failed + $(grep -c '^not ok - ' <<<"$out" || true)))
	done
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
}
