#!/usr/bin/env bash
# shellcheck disable=SC2154,SC2016 # perfdhcp figures arrive by eval; inner scripts are single-quoted
# Boot-services benchmark: Kiln's DHCP, TFTP and HTTP against established peers, side by side.
#
#   bash bench/boot-services.sh [dhcp] [tftp] [http]        (as root; default: all three)
#
#   DHCP  perfdhcp (-M: every exchange hits one of 1,000 reservations) against kiln, Kea 2.2 (kea-dhcp4,
#         memfile leases) and dnsmasq (dhcp-host reservations): max rate at < 1 % drops, rate with
#         unlimited offered load, and latency (avg, p99 from perfdhcp's per-exchange timers) at 1,000/s.
#   TFTP  ipxe.efi and a 64 MiB random file from kiln, tftpd-hpa and atftpd with atftp (blksize 512/1468,
#         no windowsize/4/16); the same at a 1 ms round trip (netem, or when the kernel has no sch_netem
#         our client bench/tftp-client.py sleeping 1 ms before each ACK); 200 concurrent ipxe.efi fetches.
#   HTTP  kiln's /artifacts/ against nginx (sendfile on): one 1 GiB download, 32 concurrent 64 MiB ones.
#
# Debian packages (installed when missing, with apt-get install --no-install-recommends):
#   kea-admin (perfdhcp) kea-dhcp4-server dnsmasq-base tftpd-hpa atftp nginx-light curl ipxe
#   iproute2 util-linux procps python3
# plus atftpd, fetched with `apt-get download` and unpacked with `dpkg -x` into $BENCH_WORK (it
# conflicts with tftpd-hpa, so it is never installed). /usr/sbin/policy-rc.d keeps packaged services from
# starting during the install (a temporary one is written when none exists); a packaged service that
# started anyway is stopped by its PID file and reported.
#
# Network safety: every server runs in a network namespace this script creates (kiln-bench-<pid>-srv),
# every client in a second one (kiln-bench-<pid>-cli); the two are joined by one veth pair created
# directly inside them, never linked to the host's interfaces. Servers are started as
# `ip netns exec NS taskset ... cmd &` (exec all the way down, so $! is the server), stopped by that PID,
# and the EXIT/INT/TERM trap stops whatever is left by PID and deletes both namespaces. Load is bounded in
# count and time; traffic only goes to 10.79.0.1/20 inside the namespaces.
#
# Environment:
#   KILN_BIN        kiln binary (default: build with `cargo build --release -p kiln`, use target/release/kiln)
#   BENCH_WORK      scratch (default <repo>/target/bench-work; the random test files are kept there, and
#                   a lock file that makes concurrent runs wait for each other)
#   BENCH_QUICK=1   short runs for debugging; figures are not written to BENCHMARKS.md
#   BENCH_WRITE=0/1 write bench/results/ and BENCHMARKS.md (default 1, or 0 with BENCH_QUICK=1)
#   BENCH_KEEP=1    keep the run's scratch directory (logs, perfdhcp output)
#   BENCH_NICE=N    run servers and clients under `nice -n N` (e.g. -5 on a machine shared with other
#                   work; default: not set, normal priority)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=$REPO/bench
BENCH_WORK=${BENCH_WORK:-$REPO/target/bench-work}
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then WRITE=${BENCH_WRITE:-0}; else WRITE=${BENCH_WRITE:-1}; fi
PY=/usr/bin/python3
REPORT=$BENCH_DIR/boot-services-report.py
TFTP_CLIENT=$BENCH_DIR/tftp-client.py

PACKAGES=(kea-admin kea-dhcp4-server dnsmasq-base tftpd-hpa atftp nginx-light curl ipxe iproute2 util-linux procps python3)

NS_S=kiln-bench-$$-srv
NS_C=kiln-bench-$$-cli
IF_S=kb-srv
IF_C=kb-cli
SRV_IP=10.79.0.1
CLI_IP=10.79.0.2
PREFIX=20
NETMASK=255.255.240.0
HTTP_PORT=8080
MACHINES=1000

# Server on one CPU, clients on the other (one CPU for both on a 1-CPU machine).
if [ "$(nproc)" -ge 2 ]; then SRV_CPU=1 CLI_CPU=0; else SRV_CPU=0 CLI_CPU=0; fi

NICE=()
if [ -n "${BENCH_NICE:-}" ]; then NICE=(nice -n "$BENCH_NICE"); fi

# Durations (seconds) and repetitions.
if [ "$QUICK" = 1 ]; then
	DHCP_STEP=1 DHCP_LAT=2 DHCP_SAT=2 TFTP_REPS=1 RTT_REPS=1 HTTP_REPS=1
else
	DHCP_STEP=3 DHCP_LAT=10 DHCP_SAT=5 TFTP_REPS=3 RTT_REPS=3 HTTP_REPS=3
fi

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# ---- arguments -------------------------------------------------------------------------------

SECTIONS=()
for a in "$@"; do
	case $a in
	dhcp | tftp | http) SECTIONS+=("$a") ;;
	-h | --help)
		sed -n '3,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown section '$a' (expected dhcp, tftp, http)" ;;
	esac
done
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(dhcp tftp http)
[ "$(id -u)" -eq 0 ] || die "run as root (network namespaces)"

# ---- lifecycle ---------------------------------------------------------------------------------

PIDS=()      # every background process we started
RUN=
TEMP_POLICY=0

stop_pid() {
	local pid=$1 i
	if ! kill -0 "$pid" 2>/dev/null; then
		wait "$pid" 2>/dev/null || true
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "pid $pid ignored SIGTERM; SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$? i ns
	trap - EXIT INT TERM
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS[i]}"
	done
	for ns in "$NS_C" "$NS_S"; do
		if ip netns list | awk '{print $1}' | grep -qxF -- "$ns"; then
			ip netns del "$ns" || log "could not delete namespace $ns"
		fi
	done
	if [ "$TEMP_POLICY" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
	if [ -n "$RUN" ] && [ -d "$RUN" ]; then
		if [ "$rc" -ne 0 ] || [ "${BENCH_KEEP:-0}" = 1 ]; then
			log "scratch kept: $RUN"
		else
			rm -rf "$RUN"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_server NAME cmd...: run cmd in the server namespace on the server CPU; sets SPID.
start_server() {
	local name=$1
	shift
	ip netns exec "$NS_S" "${NICE[@]}" taskset -c "$SRV_CPU" "$@" </dev/null >"$RUN/$name.log" 2>&1 &
	SPID=$!
	PIDS+=("$SPID")
	log "started $name (pid $SPID): $*"
}

# stop_server PID: stop it and drop it from PIDS.
stop_server() {
	local pid=$1 i
	stop_pid "$pid"
	for i in "${!PIDS[@]}"; do
		[ "${PIDS[i]}" = "$pid" ] && unset 'PIDS[i]'
	done
	PIDS=("${PIDS[@]}")
}

# cli cmd...: run in the client namespace on the client CPU.
cli() { ip netns exec "$NS_C" "${NICE[@]}" taskset -c "$CLI_CPU" "$@"; }

# record SECTION ID LABEL SERVER VALUE UNIT BETTER [NOTE]
record() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "${8:-}" >>"$RESULTS"
	log "  $4: $3 = $5 $6${8:+ ($8)}"
}
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }
calc() { "$PY" -c "import math; print(round($1, 4))"; }
# udp_overflows NS: datagrams the namespace's UDP sockets dropped for a full receive buffer.
udp_overflows() { ip netns exec "$1" awk '/^Udp:/ { n++; if (n == 2) print $6 }' /proc/net/snmp; }
median() { "$PY" "$REPORT" median "$@"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ---- packages ----------------------------------------------------------------------------------

PIDFILES=(/run/nginx.pid /run/tftpd-hpa.pid /var/run/tftpd-hpa.pid /run/kea/kea-dhcp4.kea-dhcp4.pid
	/run/dnsmasq/dnsmasq.pid /run/atftpd.pid)

install_packages() {
	local missing=() p f pid before=()
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing: ${missing[*]}"
		for f in "${PIDFILES[@]}"; do before+=("$f=$(cat "$f" 2>/dev/null || true)"); done
		if [ ! -e /usr/sbin/policy-rc.d ]; then
			printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
			chmod +x /usr/sbin/policy-rc.d
			TEMP_POLICY=1
		fi
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 || {
			DEBIAN_FRONTEND=noninteractive apt-get update >&2
			DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
		}
		if [ "$TEMP_POLICY" = 1 ]; then
			rm -f /usr/sbin/policy-rc.d
			TEMP_POLICY=0
		fi
		# A packaged service that started in the root namespace anyway: stop it by its PID file.
		for f in "${PIDFILES[@]}"; do
			pid=$(cat "$f" 2>/dev/null || true)
			[ -n "$pid" ] || continue
			if [[ " ${before[*]} " != *" $f=$pid "* ]] && kill -0 "$pid" 2>/dev/null; then
				log "WARNING: the install started a packaged service ($f, pid $pid); stopping it by that PID"
				kill -TERM "$pid" || true
			fi
		done
	fi
	for p in perfdhcp kea-dhcp4 dnsmasq in.tftpd atftp nginx curl taskset; do
		command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] || die "$p missing after installing packages"
	done
	[ -x "$PY" ] || die "$PY missing"
}

# atftpd conflicts with tftpd-hpa: unpack the .deb under BENCH_WORK and run it from there.
ATFTPD=
fetch_atftpd() {
	local dir=$BENCH_WORK/atftpd deb
	ATFTPD=$dir/root/usr/sbin/atftpd
	[ -x "$ATFTPD" ] && return 0
	mkdir -p "$dir"
	chmod 755 "$dir"
	deb=$(find "$dir" -maxdepth 1 -name 'atftpd_*.deb' | head -1)
	if [ -z "$deb" ]; then
		log "downloading atftpd (apt-get download; not installed)"
		(cd "$dir" && apt-get download atftpd >&2) || {
			apt-get update >&2
			(cd "$dir" && apt-get download atftpd >&2)
		}
		deb=$(find "$dir" -maxdepth 1 -name 'atftpd_*.deb' | head -1)
		[ -n "$deb" ] || die "apt-get download atftpd produced no .deb"
	fi
	rm -rf "$dir/root"
	dpkg -x "$deb" "$dir/root"
	[ -x "$ATFTPD" ] || die "atftpd not found in $deb"
}

# ---- network -----------------------------------------------------------------------------------

setup_netns() {
	ip netns add "$NS_S"
	ip netns add "$NS_C"
	# Both ends are created inside the namespaces; nothing touches the root namespace's links.
	ip -n "$NS_S" link add "$IF_S" type veth peer name "$IF_C" netns "$NS_C"
	ip -n "$NS_S" addr add "$SRV_IP/$PREFIX" dev "$IF_S"
	ip -n "$NS_C" addr add "$CLI_IP/$PREFIX" dev "$IF_C"
	ip -n "$NS_S" link set lo up
	ip -n "$NS_C" link set lo up
	ip -n "$NS_S" link set "$IF_S" up
	ip -n "$NS_C" link set "$IF_C" up
	if ip -o link show | grep -qE "[[:space:]]($IF_S|$IF_C)[@:]"; then
		die "a benchmark interface showed up in the root namespace"
	fi
	local i
	for i in $(seq 50); do
		if ip -n "$NS_S" link show "$IF_S" | grep -q LOWER_UP && ip -n "$NS_C" link show "$IF_C" | grep -q LOWER_UP; then
			return 0
		fi
		sleep 0.1
	done
	die "the veth between the namespaces did not come up"
}

# ---- test files ------------------------------------------------------------------------------

FILES=
prepare_files() {
	FILES=$BENCH_WORK/files
	mkdir -p "$FILES"
	chmod 755 "$FILES"
	cmp -s /usr/lib/ipxe/ipxe.efi "$FILES/ipxe.efi" || cp -L --remove-destination /usr/lib/ipxe/ipxe.efi "$FILES/ipxe.efi"
	local name size
	for name in rand64M:67108864 rand1G:1073741824; do
		size=${name#*:}
		name=${name%:*}
		if [ "$(stat -c %s "$FILES/$name" 2>/dev/null || echo 0)" != "$size" ]; then
			log "writing $FILES/$name ($size random bytes)"
			head -c "$size" /dev/urandom >"$FILES/$name.tmp"
			mv "$FILES/$name.tmp" "$FILES/$name"
		fi
	done
	chmod 644 "$FILES"/*
	SHA_IPXE=$(sha256sum "$FILES/ipxe.efi" | cut -d' ' -f1)
	SHA_64M=$(sha256sum "$FILES/rand64M" | cut -d' ' -f1)
}

# ---- kiln --------------------------------------------------------------------------------------

KILN_BIN=${KILN_BIN:-}
build_kiln() {
	if [ -z "$KILN_BIN" ]; then
		log "building kiln (cargo build --release -p kiln)"
		(cd "$REPO" && cargo build --release -p kiln >&2)
		KILN_BIN=$REPO/target/release/kiln
	fi
	[ -x "$KILN_BIN" ] || die "kiln binary $KILN_BIN missing"
	# Run a private copy, so a concurrent rebuild cannot swap the binary under a running benchmark.
	cp "$KILN_BIN" "$RUN/kiln"
	KILN=$RUN/kiln
}

# wait_http URL PID: until URL answers 200 from the client namespace.
wait_http() {
	local url=$1 pid=$2 i
	for i in $(seq 100); do
		cli curl --noproxy '*' -sf -o /dev/null --max-time 1 "$url" && return 0
		kill -0 "$pid" 2>/dev/null || die "server (pid $pid) exited; see $RUN"
		sleep 0.1
	done
	die "$url did not answer"
}

# wait_tftp PID: until ipxe.efi can be fetched.
wait_tftp() {
	local pid=$1 i
	for i in $(seq 50); do
		if cli timeout 5 atftp --get -r ipxe.efi -l "$RUN/probe.bin" "$SRV_IP" 69 >/dev/null 2>&1 &&
			cmp -s "$RUN/probe.bin" "$FILES/ipxe.efi"; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || die "TFTP server (pid $pid) exited; see $RUN"
		sleep 0.2
	done
	die "TFTP server did not answer"
}

# =========================================================================================== DHCP

dhcp_files() {
	local d=$RUN/dhcp i mac ip
	mkdir -p "$d"
	echo "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk" >"$d/hardware.csv"
	: >"$d/macs.txt"
	: >"$d/hosts.conf"
	local kea_res=()
	for ((i = 0; i < MACHINES; i++)); do
		mac=$(printf '52:54:01:00:%02x:%02x' $((i >> 8)) $((i & 255)))
		ip=10.79.$((4 + i / 250)).$((1 + i % 250))
		printf 'bench%04d,,,,%s,%s,%s,%s,%s,type=bench,/dev/sda\n' "$i" "$mac" "$ip" "$NETMASK" "$SRV_IP" "$SRV_IP" >>"$d/hardware.csv"
		echo "$mac" >>"$d/macs.txt"
		echo "dhcp-host=$mac,$ip" >>"$d/hosts.conf"
		kea_res+=("{\"hw-address\":\"$mac\",\"ip-address\":\"$ip\"}")
	done
	# dnsmasq: reservations only (static range), no DNS, no ping, lease file in scratch.
	cat >"$d/dnsmasq.conf" <<-EOF
		port=0
		interface=$IF_S
		bind-interfaces
		no-ping
		dhcp-authoritative
		dhcp-lease-max=4000
		dhcp-leasefile=$d/dnsmasq.leases
		dhcp-range=10.79.0.0,static,$NETMASK,24h
		dhcp-option=option:router,$SRV_IP
		dhcp-option=option:dns-server,$SRV_IP
		user=root
		quiet-dhcp
		conf-file=$d/hosts.conf
	EOF
	# Kea: one subnet with the reservations, memfile (persisted CSV) leases, logs at WARN.
	local joined
	joined=$(IFS=,; echo "${kea_res[*]}")
	cat >"$d/kea.json" <<-EOF
		{"Dhcp4": {
		  "interfaces-config": {"interfaces": ["$IF_S"]},
		  "lease-database": {"type": "memfile", "persist": true, "name": "$d/kea-leases4.csv", "lfc-interval": 0},
		  "valid-lifetime": 86400,
		  "authoritative": true,
		  "subnet4": [{"id": 1, "subnet": "10.79.0.0/$PREFIX",
		    "option-data": [{"name": "routers", "data": "$SRV_IP"}, {"name": "domain-name-servers", "data": "$SRV_IP"}],
		    "reservations": [$joined]}],
		  "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "$d/kea.log"}], "severity": "WARN"}]
		}}
	EOF
	mkdir -p "$d/kiln-data" "$d/kea-run"
	"$KILN" --data-dir "$d/kiln-data" enroll "$d/hardware.csv" >&2
}

# perfdhcp OUT ARGS...: perfdhcp in the client namespace against the veth, MACs from macs.txt.
perfdhcp_run() {
	local out=$1 rc=0
	shift
	cli timeout 120 perfdhcp -4 -l "$IF_C" -M "$RUN/dhcp/macs.txt" -W 500000 "$@" >"$out" 2>&1 || rc=$?
	# 3 = some exchanges not completed (drops): a result, not an error.
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
		tail -5 "$out" >&2
		die "perfdhcp failed (rc=$rc), see $out"
	fi
}

# dhcp_wait PID: until one full exchange succeeds.
dhcp_wait() {
	local pid=$1 i
	for i in $(seq 30); do
		cli timeout 10 perfdhcp -4 -l "$IF_C" -M "$RUN/dhcp/macs.txt" -r 10 -n 2 -W 500000 >"$RUN/dhcp/probe.out" 2>&1 || true
		eval "$("$PY" "$REPORT" perfdhcp "$RUN/dhcp/probe.out")"
		[ "$do_recv" -ge 1 ] && return 0
		kill -0 "$pid" 2>/dev/null || die "DHCP server (pid $pid) exited; see $RUN"
		sleep 0.3
	done
	die "DHCP server did not answer; see $RUN/dhcp/probe.out"
}

# dhcp_step NAME RATE: one -r RATE run; sets PASS, ACKS_PER_S, DROP_PCT, SEND_OK.
dhcp_step() {
	local name=$1 rate=$2 out
	local s0 c0
	out=$RUN/dhcp/$name-r$rate.out
	s0=$(udp_overflows "$NS_S") c0=$(udp_overflows "$NS_C")
	perfdhcp_run "$out" -r "$rate" -p "$DHCP_STEP"
	eval "$("$PY" "$REPORT" perfdhcp "$out" --rate "$rate" --period "$DHCP_STEP")"
	PASS=$pass ACKS_PER_S=$acks_per_s DROP_PCT=$drop_pct SEND_OK=$send_ok
	log "  $name -r $rate: $(printf '%.0f' "$ACKS_PER_S") ACKs/s, drops $(printf '%.2f' "$DROP_PCT") %$([ "$SEND_OK" = 1 ] || echo ', perfdhcp could not send at this rate');" \
		"UDP receive-buffer overflows: server side $(($(udp_overflows "$NS_S") - s0)), perfdhcp side $(($(udp_overflows "$NS_C") - c0))"
}

# dhcp_try NAME RATE: dhcp_step, and once more when it fails (a single stall of a few hundred ms on a
# shared machine should not decide the rate); the second try's figures count.
dhcp_try() {
	dhcp_step "$@"
	if [ "$PASS" != 1 ]; then
		log "  $1 -r $2 failed; one more try"
		dhcp_step "$@"
	fi
}

# dhcp_bench NAME PID: the measurements against one running server.
dhcp_bench() {
	local name=$1 pid=$2 out
	dhcp_wait "$pid"
	perfdhcp_run "$RUN/dhcp/$name-warm.out" -r 1000 -p 1 # warm-up: leases exist, caches are hot

	# Latency at a fixed 1,000 exchanges/s, with per-exchange timers (-x t) for percentiles.
	out=$RUN/dhcp/$name-latency.out
	perfdhcp_run "$out" -r 1000 -p "$DHCP_LAT" -x t
	eval "$("$PY" "$REPORT" perfdhcp "$out" --rate 1000 --period "$DHCP_LAT")"
	record dhcp do_avg "DISCOVER→OFFER avg @1,000/s" "$name" "$do_avg" ms lower
	record dhcp do_p99 "DISCOVER→OFFER p99 @1,000/s" "$name" "$do_p99" ms lower
	record dhcp ra_avg "REQUEST→ACK avg @1,000/s" "$name" "$ra_avg" ms lower
	record dhcp ra_p99 "REQUEST→ACK p99 @1,000/s" "$name" "$ra_p99" ms lower
	record dhcp do_max "max latency (DO, RA) @1,000/s" "$name" "$(calc "max($do_max, $ra_max)")" ms lower
	record dhcp lat_drops "exchanges not completed @1,000/s" "$name" "$drop_pct" % info

	# Max rate at < 1 % drops: double the offered rate until it fails, then bisect three times.
	local rate=500 good=0 good_acks=0 bad=0 i note=""
	while :; do
		dhcp_try "$name" "$rate"
		if [ "$PASS" = 1 ]; then
			good=$rate good_acks=$ACKS_PER_S
			[ "$SEND_OK" = 1 ] || { note="perfdhcp-bound"; break; }
			[ "$rate" -lt 64000 ] || break
			rate=$((rate * 2))
		else
			bad=$rate
			break
		fi
	done
	if [ "$good" = 0 ]; then
		# fails at 500/s already: go down
		while [ "$rate" -gt 60 ]; do
			rate=$((rate / 2))
			dhcp_try "$name" "$rate"
			if [ "$PASS" = 1 ]; then good=$rate good_acks=$ACKS_PER_S; break; fi
			bad=$rate
		done
	fi
	if [ "$good" -gt 0 ] && [ "$bad" -gt 0 ] && [ -z "$note" ]; then
		for i in 1 2 3; do
			rate=$(((good + bad) / 2))
			rate=$((rate >= 1000 ? rate / 100 * 100 : rate / 10 * 10))
			if [ "$rate" -le "$good" ] || [ "$rate" -ge "$bad" ]; then break; fi
			dhcp_try "$name" "$rate"
			if [ "$PASS" = 1 ]; then good=$rate good_acks=$ACKS_PER_S; else bad=$rate; fi
		done
	fi
	record dhcp rate "max rate with < 1 % drops" "$name" "$good_acks" "exch/s" higher "$note"

	# Unlimited offered load: completed exchanges per second, whatever the drops.
	out=$RUN/dhcp/$name-unlimited.out
	perfdhcp_run "$out" -p "$DHCP_SAT"
	eval "$("$PY" "$REPORT" perfdhcp "$out" --period "$DHCP_SAT")"
	record dhcp sat "completed at unlimited offered load" "$name" "$acks_per_s" "exch/s" higher "$(printf '%.0f' "$drop_pct") % dropped"
}

section_dhcp() {
	local pid
	dhcp_files
	local d=$RUN/dhcp

	log "DHCP: kiln"
	start_server kiln-dhcp "$KILN" --data-dir "$d/kiln-data" serve --interface "$IF_S" --address "$SRV_IP" \
		--dhcp-mode reservation --http-port "$HTTP_PORT" --tftp-root "$FILES" --artifacts "$FILES"
	pid=$SPID
	dhcp_bench kiln "$pid"
	stop_server "$pid"

	log "DHCP: Kea"
	start_server kea-dhcp4 env KEA_PIDFILE_DIR="$d/kea-run" KEA_LOCKFILE_DIR="$d/kea-run" \
		kea-dhcp4 -c "$d/kea.json"
	pid=$SPID
	dhcp_bench kea "$pid"
	stop_server "$pid"

	log "DHCP: dnsmasq"
	start_server dnsmasq dnsmasq --no-daemon --conf-file="$d/dnsmasq.conf" --pid-file="$d/dnsmasq.pid" \
		--log-facility="$d/dnsmasq-syslog.log"
	pid=$SPID
	dhcp_bench dnsmasq "$pid"
	stop_server "$pid"

	meta dhcp.versions "Kea $(kea-dhcp4 -v 2>/dev/null | head -1) (kea-dhcp4, memfile leases persisted to CSV, single-threaded default), dnsmasq $(dnsmasq --version | awk 'NR == 1 {print $3}') (reservations only: static dhcp-range + dhcp-host), perfdhcp $(perfdhcp -v 2>&1 | head -1 | sed 's/.*: *//')"
	meta dhcp.note.1 "perfdhcp -4 -l $IF_C -M macs.txt -W 500000 in the client namespace; $MACHINES reservations (kiln enroll / dhcp-host / Kea host reservations), every exchange a full DORA for one of them. Rate = completed exchanges (ACKs) per second of the test period."
	meta dhcp.note.2 "Max rate: -r stepped 500, 1000, 2000, … (×2, $DHCP_STEP s each) until drops ≥ 1 % (a failing step is tried once more), then bisected three times; unlimited: no -r for $DHCP_SAT s. Latency: -r 1000 for $DHCP_LAT s with -x t (per-exchange timers, p99 computed from them)."
	meta dhcp.note.3 "dnsmasq runs with quiet-dhcp (no per-packet log lines) and rewrites its lease file on every change; kiln logs each answer at info level (to a file) and stores an event per answer, as shipped."
}

# =========================================================================================== TFTP

# In the client namespace: atftp N times, print one wall time (ns) per run.
TFTP_MATRIX_INNER='
set -u
ip=$1 file=$2 bs=$3 ws=$4 reps=$5 out=$6 src=$7
opts=(--option "blksize $bs")
[ "$ws" = - ] || opts+=(--option "windowsize $ws")
for ((r = 0; r < reps; r++)); do
	rm -f "$out"
	t0=${EPOCHREALTIME/./}
	timeout 300 atftp "${opts[@]}" --get -r "$file" -l "$out" "$ip" 69 >/dev/null 2>&1 || { echo "FAIL atftp rc=$?"; continue; }
	t1=${EPOCHREALTIME/./}
	if cmp -s "$out" "$src"; then echo $((t1 - t0)); else echo "FAIL content"; fi
done
rm -f "$out"
'

# In the client namespace: N concurrent atftp fetches; prints wall µs.
TFTP_CONC_INNER='
set -u
ip=$1 n=$2 bs=$3 ws=$4 dir=$5
opts=(--option "blksize $bs")
[ "$ws" = - ] || opts+=(--option "windowsize $ws")
t0=${EPOCHREALTIME/./}
for ((i = 0; i < n; i++)); do
	( timeout 120 atftp "${opts[@]}" --get -r ipxe.efi -l "$dir/$i.bin" "$ip" 69 >/dev/null 2>&1; echo $? >"$dir/$i.rc" ) &
done
wait
t1=${EPOCHREALTIME/./}
echo $((t1 - t0))
'

tftp_bench() {
	local name=$1 pid=$2 f bs ws times med size mbps label fails reps
	wait_tftp "$pid"
	# LAN (veth, no added delay), atftp client
	for f in ipxe.efi rand64M; do
		size=$(stat -c %s "$FILES/$f")
		for bs in 512 1468; do
			for ws in - 4 16; do
				reps=$TFTP_REPS
				[ "$f" != ipxe.efi ] || reps=$((TFTP_REPS + 2)) # short transfers: a few more
				mapfile -t times < <(cli bash -c "$TFTP_MATRIX_INNER" _ "$SRV_IP" "$f" "$bs" "$ws" "$reps" "$RUN/tftp/out-$f" "$FILES/$f")
				fails=$(printf '%s\n' "${times[@]}" | grep -c FAIL || true)
				label="$f, blksize $bs, $(wlabel "$ws")"
				[ "$fails" = 0 ] || die "$name: $label: $(printf '%s ' "${times[@]}")"
				med=$(median "${times[@]}")
				if [ "$f" = ipxe.efi ]; then
					record tftp "lan:$f:$bs:$ws" "LAN, atftp: $label" "$name" "$(calc "$med / 1000")" ms lower
				else
					mbps=$(calc "$size / ($med / 1e6) / 1e6")
					record tftp "lan:$f:$bs:$ws" "LAN, atftp: $label" "$name" "$mbps" MB/s higher
				fi
			done
		done
	done
}

# tftp_conc NAME: 200 concurrent fetches of ipxe.efi.
tftp_conc() {
	local name=$1 n=200 dir us good i ws
	for ws in - 16; do
		dir=$RUN/tftp/conc-$name-$ws
		rm -rf "$dir"
		mkdir -p "$dir"
		us=$(cli bash -c "$TFTP_CONC_INNER" _ "$SRV_IP" "$n" 1468 "$ws" "$dir")
		good=0
		for ((i = 0; i < n; i++)); do
			if [ "$(cat "$dir/$i.rc" 2>/dev/null)" = 0 ] && cmp -s "$dir/$i.bin" "$FILES/ipxe.efi"; then good=$((good + 1)); fi
		done
		record tftp "conc:ipxe.efi:1468:$ws" "$n concurrent ipxe.efi, blksize 1468, $(wlabel "$ws") (wall time)" "$name" \
			"$(calc "$us / 1000")" ms lower "$good/$n ok"
		[ "$good" = "$n" ] || log "WARNING: $name: only $good of $n concurrent transfers were complete and correct"
		rm -rf "$dir"
	done
}

section_tftp() {
	local pid
	mkdir -p "$RUN/tftp"
	ACK_DELAYS=()
	# A 1 ms round trip: netem if the kernel has it, else our client's 1 ms ACK delay.
	if ip netns exec "$NS_C" tc qdisc add dev "$IF_C" root netem delay 1ms 2>"$RUN/tftp/netem.err"; then
		ip netns exec "$NS_C" tc qdisc del dev "$IF_C" root
		RTT_METHOD=netem
	else
		RTT_METHOD=ack-delay
	fi
	log "TFTP: 1 ms RTT method: $RTT_METHOD ($(head -1 "$RUN/tftp/netem.err" 2>/dev/null))"

	log "TFTP: kiln"
	start_server kiln-tftp "$KILN" --data-dir "$RUN/tftp/kiln-data" serve --dhcp-mode off --address "$SRV_IP" \
		--http-port "$HTTP_PORT" --tftp-root "$FILES" --artifacts "$FILES"
	pid=$SPID
	tftp_with_rtt kiln "$pid"
	stop_server "$pid"

	log "TFTP: tftpd-hpa"
	start_server tftpd-hpa in.tftpd -L -a "$SRV_IP:69" -u root -s "$FILES"
	pid=$SPID
	tftp_with_rtt tftpd-hpa "$pid"
	stop_server "$pid"

	log "TFTP: atftpd"
	start_server atftpd "$ATFTPD" --daemon --no-fork --bind-address "$SRV_IP" --port 69 --user root --group root \
		--maxthread 256 --logfile "$RUN/tftp/atftpd-syslog.log" "$FILES"
	pid=$SPID
	tftp_with_rtt atftpd "$pid"
	stop_server "$pid"

	local mean_delay
	mean_delay=$(median "${ACK_DELAYS[@]:-0}")
	meta tftp.versions "tftpd-hpa $(dpkg-query -W -f='${Version}' tftpd-hpa) (in.tftpd -L -a IP:69 -u root -s DIR), atftpd $(basename "$(ls "$BENCH_WORK"/atftpd/atftpd_*.deb)" .deb | sed 's/^atftpd_//') (unpacked .deb, --maxthread 256), client atftp $(dpkg-query -W -f='${Version}' atftp)"
	meta tftp.note.1 "LAN rows: atftp --option 'blksize N' [--option 'windowsize W'] in the client namespace over the veth, wall time of the atftp process, median of $((TFTP_REPS + 2)) (ipxe.efi) or $TFTP_REPS (64 MiB), every file compared byte for byte. tftpd-hpa ignores windowsize (it answers windowsize 1)."
	if [ "$RTT_METHOD" = netem ]; then
		meta tftp.note.2 "1 ms RTT rows: tc netem delay 1ms on the client's veth; client bench/tftp-client.py (blksize, windowsize, tsize; sha256 checked), time from RRQ to last DATA, median of $RTT_REPS."
	else
		meta tftp.note.2 "1 ms RTT rows: this kernel has no sch_netem ('$(head -1 "$RUN/tftp/netem.err" 2>/dev/null)'), so the same client, bench/tftp-client.py (blksize, windowsize, tsize; sha256 checked), sleeps 1 ms before each ACK (measured mean $(printf '%.3f' "$mean_delay") ms) — one delay per window, as a round trip would be; time from RRQ to last DATA, median of $RTT_REPS."
	fi
	meta tftp.note.3 "Concurrent rows: 200 atftp processes started at once from one shell in the client namespace (all on the client CPU), wall time until the last exits; 'ok' = exit 0 and byte-identical."
}

# wlabel W: "windowsize W", or "no windowsize" for -.
wlabel() { if [ "$1" = - ]; then echo "no windowsize"; else echo "windowsize $1"; fi; }

# tftp_with_rtt NAME PID: LAN rows, the 1 ms RTT rows, concurrency.
tftp_with_rtt() {
	tftp_bench "$@"
	tftp_rtt "$1"
	tftp_conc "$1"
}

# tftp_rtt NAME: ipxe.efi at a 1 ms round trip with bench/tftp-client.py. With netem the delay is on
# the client's veth only while these rows run; otherwise the client sleeps 1 ms before each ACK.
tftp_rtt() {
	local name=$1 bs ws times res med r delay=1 wopt
	if [ "$RTT_METHOD" = netem ]; then
		ip netns exec "$NS_C" tc qdisc add dev "$IF_C" root netem delay 1ms
		delay=0
	fi
	for bs in 512 1468; do
		for ws in - 4 16; do
			times=()
			wopt=()
			[ "$ws" = - ] || wopt=(--windowsize "$ws")
			for ((r = 0; r < RTT_REPS; r++)); do
				res=$(cli timeout 120 "$PY" "$TFTP_CLIENT" "$SRV_IP" ipxe.efi --blksize "$bs" "${wopt[@]}" \
					--ack-delay-ms "$delay" --sha256 "$SHA_IPXE") ||
					die "$name: 1 ms RTT ipxe.efi blksize $bs windowsize $ws failed: $res"
				times+=("$(echo "$res" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')")
				ACK_DELAYS+=("$(echo "$res" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["ack_delay_mean_ms"])')")
			done
			med=$(median "${times[@]}")
			record tftp "rtt:ipxe.efi:$bs:$ws" "1 ms RTT: ipxe.efi, blksize $bs, $(wlabel "$ws")" "$name" "$(calc "$med * 1000")" ms lower
		done
	done
	if [ "$RTT_METHOD" = netem ]; then
		ip netns exec "$NS_C" tc qdisc del dev "$IF_C" root
	fi
}

# =========================================================================================== HTTP

HTTP_CONC_INNER='
set -u
url=$1 n=$2 dir=$3
t0=${EPOCHREALTIME/./}
for ((i = 0; i < n; i++)); do
	curl --noproxy "*" -s -o /dev/null --max-time 120 -w "%{http_code} %{size_download}\n" "$url" >"$dir/$i.res" &
done
wait
t1=${EPOCHREALTIME/./}
echo $((t1 - t0))
'

http_bench() {
	local name=$1 pid=$2 url1g url64 r res code size secs rates=() walls=() us good i dir sum
	url1g=http://$SRV_IP:$HTTP_PORT/artifacts/rand1G
	url64=http://$SRV_IP:$HTTP_PORT/artifacts/rand64M
	wait_http "$url64" "$pid"
	cat "$FILES/rand1G" "$FILES/rand64M" >/dev/null # page cache: both servers read from memory
	sum=$(cli curl --noproxy '*' -s --max-time 60 "$url64" | sha256sum | cut -d' ' -f1)
	[ "$sum" = "$SHA_64M" ] || die "$name: /artifacts/rand64M content differs"
	for ((r = 0; r < HTTP_REPS; r++)); do
		res=$(cli curl --noproxy '*' -s -o /dev/null --max-time 120 -w '%{http_code} %{size_download} %{time_total}' "$url1g")
		read -r code size secs <<<"$res"
		if [ "$code" != 200 ] || [ "$size" != 1073741824 ]; then die "$name: 1 GiB download: $res"; fi
		rates+=("$(calc "$size / $secs / 1e6")")
	done
	record http get1g "one 1 GiB download" "$name" "$(median "${rates[@]}")" MB/s higher
	dir=$RUN/http/conc-$name
	for ((r = 0; r < HTTP_REPS; r++)); do
		rm -rf "$dir"
		mkdir -p "$dir"
		us=$(cli bash -c "$HTTP_CONC_INNER" _ "$url64" 32 "$dir")
		good=0
		for ((i = 0; i < 32; i++)); do
			[ "$(cat "$dir/$i.res" 2>/dev/null)" = "200 67108864" ] && good=$((good + 1))
		done
		[ "$good" = 32 ] || die "$name: only $good of 32 concurrent downloads complete"
		walls+=("$us")
	done
	us=$(median "${walls[@]}")
	record http conc_wall "32 concurrent 64 MiB downloads, wall time" "$name" "$(calc "$us / 1000")" ms lower "32/32 complete"
	record http conc_rate "32 concurrent 64 MiB downloads, aggregate" "$name" "$(calc "32 * 67108864 / ($us / 1e6) / 1e6")" MB/s higher
}

section_http() {
	local pid ng=$RUN/http/nginx
	mkdir -p "$RUN/http" "$ng"
	log "HTTP: kiln"
	start_server kiln-http "$KILN" --data-dir "$RUN/http/kiln-data" serve --dhcp-mode off --address "$SRV_IP" \
		--http-port "$HTTP_PORT" --tftp-root "$FILES" --artifacts "$FILES"
	pid=$SPID
	http_bench kiln "$pid"
	stop_server "$pid"

	cat >"$ng/nginx.conf" <<-EOF
		worker_processes auto;
		pid $ng/nginx.pid;
		error_log $ng/error.log;
		events { worker_connections 1024; }
		http {
		  access_log $ng/access.log;
		  client_body_temp_path $ng/body;
		  proxy_temp_path $ng/proxy;
		  fastcgi_temp_path $ng/fastcgi;
		  uwsgi_temp_path $ng/uwsgi;
		  scgi_temp_path $ng/scgi;
		  default_type application/octet-stream;
		  sendfile on;
		  tcp_nopush on;
		  server {
		    listen $SRV_IP:$HTTP_PORT;
		    location /artifacts/ { alias $FILES/; }
		  }
		}
	EOF
	log "HTTP: nginx"
	start_server nginx nginx -e "$ng/error.log" -c "$ng/nginx.conf" -g 'daemon off;'
	pid=$SPID
	http_bench nginx "$pid"
	stop_server "$pid"

	meta http.versions "$(nginx -v 2>&1 | sed 's/^nginx version: //') (nginx-light; worker_processes auto, sendfile on, tcp_nopush on, access log to a file)"
	meta http.note.1 "Client curl $(curl --version | head -1 | cut -d' ' -f2) in the client namespace; files read once beforehand (page cache); 1 GiB: median of $HTTP_REPS, MB = 10^6 bytes; concurrent: 32 curl processes on the client CPU, wall time median of $HTTP_REPS, every size checked (and one sha256 per server)."
}

# =========================================================================================== main

T0=$SECONDS
mkdir -p "$BENCH_WORK"
# One run at a time: two runs would share the CPUs (and the test files) and spoil each other's figures.
exec 9>"$BENCH_WORK/lock"
if ! flock -n 9; then
	log "another boot-services run holds $BENCH_WORK/lock; waiting for it (up to 30 min)"
	flock -w 1800 9 || die "gave up waiting for the other run"
fi
RUN=$(mktemp -d "$BENCH_WORK/run.XXXXXX")
chmod 755 "$RUN"
RESULTS=$RUN/results.tsv
META=$RUN/meta.tsv
: >"$RESULTS"
: >"$META"

install_packages
fetch_atftpd
prepare_files
build_kiln
setup_netns
log "namespaces $NS_S / $NS_C; server CPU $SRV_CPU, client CPU $CLI_CPU; scratch $RUN"

CMD="bash bench/boot-services.sh${*:+ $*}"
[ "$QUICK" = 1 ] && CMD="BENCH_QUICK=1 $CMD"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta command "$CMD"
meta nproc "$(nproc)"
meta kernel "$(uname -r)"
meta cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
meta mem "$(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
meta kiln.rev "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- crates Cargo.lock 2>/dev/null || echo ' + uncommitted changes in crates/') (release build)"
meta setup "servers in one network namespace, clients in another, one veth pair between them ($SRV_IP ↔ $CLI_IP); every server pinned to CPU $SRV_CPU, every client to CPU $CLI_CPU (taskset)${BENCH_NICE:+, both under nice -n $BENCH_NICE}; one server at a time"
log "load average: $(loadavg)"

for s in "${SECTIONS[@]}"; do
	t=$SECONDS
	meta "$s.load.start" "$(loadavg)"
	if awk '{exit !($1 > 1.0)}' /proc/loadavg; then
		log "WARNING: load average $(loadavg) before $s: other work competes for the CPUs; figures will be noisy"
	fi
	"section_$s"
	meta "$s.load.end" "$(loadavg)"
	meta "$s.seconds" "$((SECONDS - t))"
	log "$s done in $((SECONDS - t)) s"
done
meta total.seconds "$((SECONDS - T0)) s"

SECTION_LIST=$(IFS=,; echo "${SECTIONS[*]}")
if [ "$WRITE" = 1 ]; then
	"$PY" "$REPORT" render "$RESULTS" "$META" --sections "$SECTION_LIST" \
		--md-dir "$BENCH_DIR/results" --benchmarks "$REPO/BENCHMARKS.md"
	for s in "${SECTIONS[@]}"; do
		awk -F'\t' -v s="$s" '$1 == s' "$RESULTS" >"$BENCH_DIR/results/boot-services-$s.tsv"
	done
	log "written: BENCHMARKS.md and, for ${SECTIONS[*]}, bench/results/boot-services-<part>.{md,tsv}"
else
	"$PY" "$REPORT" render "$RESULTS" "$META" --sections "$SECTION_LIST" --md-dir "$RUN/md"
	log "figures not written to BENCHMARKS.md (BENCH_QUICK=1 or BENCH_WRITE=0)"
fi
log "total $((SECONDS - T0)) s; load average now $(loadavg)"
