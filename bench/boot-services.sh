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
#   HTTP  kiln's /artifacts/ against nginx (sendfile on): one 1 GiB download, 32 concurrent 64 MiB ones;
#         and image streaming: a 64 MiB image imported with `kiln image import` (stored zstd), fetched by
#         50 concurrent clients from kiln's /images/ and from nginx serving the same stored file.
#
# TFTP and HTTP are measured interleaved, because this machine is shared and its load swings within a
# minute: the servers of a part run at the same time on their own ports (TFTP: kiln 69, tftpd-hpa 1069,
# atftpd 2069; HTTP: kiln 8080, nginx 8081) and the client fetches from them in turn, one transfer (or
# one batch of concurrent ones) per server per round, the order rotated each round, for many rounds.
# Reported: the median per server with its p25–p75, the ratio of the medians with the p25–p75 of the
# per-round ratios. DHCP still measures one server at a time (perfdhcp drives one server at full rate).
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
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
bench_settings
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

# DHCP durations (seconds); TFTP/HTTP rounds: see rounds().
if [ "$QUICK" = 1 ]; then
	DHCP_STEP=1 DHCP_LAT=2 DHCP_SAT=2
else
	DHCP_STEP=3 DHCP_LAT=10 DHCP_SAT=5
fi

# ---- arguments -------------------------------------------------------------------------------

SECTIONS=()
for a in "$@"; do
	case $a in
	dhcp | tftp | http) SECTIONS+=("$a") ;;
	-h | --help)
		usage
		exit 0
		;;
	*) die "unknown section '$a' (expected dhcp, tftp, http)" ;;
	esac
done
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(dhcp tftp http)
[ "$(id -u)" -eq 0 ] || die "run as root (network namespaces)"

# ---- lifecycle ---------------------------------------------------------------------------------

RUN=

cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		stop_pids "${PIDS[i]}"
	done
	release_run "$rc" "$NS_C" "$NS_S"
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

# cli cmd...: run in the client namespace on the client CPU.
cli() { ip netns exec "$NS_C" "${NICE[@]}" taskset -c "$CLI_CPU" "$@"; }

# record SECTION ID LABEL SERVER VALUE UNIT BETTER [NOTE]
record() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "${8:-}" >>"$RESULTS"
	log "  $4: $3 = $5 $6${8:+ ($8)}"
}
calc() { "$PY" -c "import math; print(round($1, 4))"; }
# udp_overflows NS: datagrams the namespace's UDP sockets dropped for a full receive buffer.
udp_overflows() { ip netns exec "$1" awk '/^Udp:/ { n++; if (n == 2) print $6 }' /proc/net/snmp; }
median() { "$PY" "$REPORT" median "$@"; }

# ---- packages ----------------------------------------------------------------------------------

PIDFILES=(/run/nginx.pid /run/tftpd-hpa.pid /var/run/tftpd-hpa.pid /run/kea/kea-dhcp4.kea-dhcp4.pid
	/run/dnsmasq/dnsmasq.pid /run/atftpd.pid)

install_packages() {
	local missing p f pid before=()
	mapfile -t missing < <(missing_packages "${PACKAGES[@]}")
	if [ ${#missing[@]} -gt 0 ]; then
		for f in "${PIDFILES[@]}"; do before+=("$f=$(cat "$f" 2>/dev/null || true)"); done
		apt_install "${missing[@]}"
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

# ---- waiting for servers -----------------------------------------------------------------------

# wait_for_server NAME PID TRIES PAUSE CHECK...: until CHECK... succeeds, at most TRIES times, PAUSE s
# apart; dies should the server (NAME, pid PID) exit meanwhile. Fails when CHECK never succeeded.
wait_for_server() {
	local name=$1 pid=$2 tries=$3 pause=$4
	shift 4
	for _ in $(seq "$tries"); do
		"$@" && return 0
		kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) exited; see $RUN"
		sleep "$pause"
	done
	return 1
}

# wait_http URL PID: until URL answers 200 from the client namespace.
wait_http() {
	wait_for_server server "$2" 100 0.1 cli curl --noproxy '*' -sf -o /dev/null --max-time 1 "$1" ||
		die "$1 did not answer"
}

# wait_tftp PID PORT: until ipxe.efi can be fetched from that port.
wait_tftp() {
	wait_for_server "TFTP server" "$1" 50 0.2 tftp_answers "$2" ||
		die "TFTP server (pid $1) did not answer on port $2"
}
tftp_answers() {
	cli timeout 5 atftp --get -r ipxe.efi -l "$RUN/probe.bin" "$SRV_IP" "$1" >/dev/null 2>&1 &&
		cmp -s "$RUN/probe.bin" "$FILES/ipxe.efi"
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
	wait_for_server "DHCP server" "$1" 30 0.3 dhcp_answers || die "DHCP server did not answer; see $RUN/dhcp/probe.out"
}
dhcp_answers() {
	cli timeout 10 perfdhcp -4 -l "$IF_C" -M "$RUN/dhcp/macs.txt" -r 10 -n 2 -W 500000 >"$RUN/dhcp/probe.out" 2>&1 || true
	eval "$("$PY" "$REPORT" perfdhcp "$RUN/dhcp/probe.out")"
	[ "$do_recv" -ge 1 ]
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
	stop_and_forget "$pid"

	log "DHCP: Kea"
	start_server kea-dhcp4 env KEA_PIDFILE_DIR="$d/kea-run" KEA_LOCKFILE_DIR="$d/kea-run" \
		kea-dhcp4 -c "$d/kea.json"
	pid=$SPID
	dhcp_bench kea "$pid"
	stop_and_forget "$pid"

	log "DHCP: dnsmasq"
	start_server dnsmasq dnsmasq --no-daemon --conf-file="$d/dnsmasq.conf" --pid-file="$d/dnsmasq.pid" \
		--log-facility="$d/dnsmasq-syslog.log"
	pid=$SPID
	dhcp_bench dnsmasq "$pid"
	stop_and_forget "$pid"

	meta dhcp.versions "Kea $(kea-dhcp4 -v 2>/dev/null | head -1) (kea-dhcp4, memfile leases persisted to CSV, single-threaded default), dnsmasq $(dnsmasq --version | awk 'NR == 1 {print $3}') (reservations only: static dhcp-range + dhcp-host), perfdhcp $(perfdhcp -v 2>&1 | head -1 | sed 's/.*: *//')"
	meta dhcp.note.1 "perfdhcp -4 -l $IF_C -M macs.txt -W 500000 in the client namespace; $MACHINES reservations (kiln enroll / dhcp-host / Kea host reservations), every exchange a full DORA for one of them. Rate = completed exchanges (ACKs) per second of the test period."
	meta dhcp.note.2 "Max rate: -r stepped 500, 1000, 2000, … (×2, $DHCP_STEP s each) until drops ≥ 1 % (a failing step is tried once more), then bisected three times; unlimited: no -r for $DHCP_SAT s. Latency: -r 1000 for $DHCP_LAT s with -x t (per-exchange timers, p99 computed from them)."
	meta dhcp.note.3 "dnsmasq runs with quiet-dhcp (no per-packet log lines) and rewrites its lease file on every change; kiln logs each answer at info level (to a file) and stores an event per answer, as shipped."
}

# =========================================================================================== TFTP
#
# All servers of a part run at the same time, each on its own port, and the client fetches from them in
# turn: one transfer (or one batch of concurrent transfers) per server per round, the order rotated every
# round (ABC, BCA, CAB, … ; AB, BA, … for two) so that each server takes each position equally often.
# A change of load on the machine then hits every server alike, and the ratio of the medians compares
# like with like. Rounds: at least MIN, then more while less than BUDGET seconds have passed, at most MAX;
# past the part's DEADLINE (epoch seconds) no row starts more than 2 rounds, which bounds the run on a
# loaded machine (the rows that decide the targets run first).
# Every timed transfer becomes a sample (section, id, server, round, value) in $SAMPLES; the report takes
# the median and p25–p75 per server, and the p25–p75 of the per-round ratios.

# The start of the interleaved inner scripts below (run with `bash -c` in the client namespace):
#   interleave MIN MAX BUDGET DEADLINE NAME=IP:PORT...
# runs `one ROUND NAME IP:PORT` (the script's own) for every server of every round, as said above.
INTERLEAVE_INNER='
set -u
interleave() {
	local min=$1 max=$2 budget=$3 deadline=$4 start=$SECONDS round k target
	shift 4
	local targets=("$@") count=$#
	for ((round = 0; ; round++)); do
		((round < max && (round < min && round < 2 || EPOCHSECONDS < deadline && (round < min || SECONDS - start < budget)))) || break
		for ((k = 0; k < count; k++)); do
			target=${targets[(round + k) % count]}
			one "$round" "${target%%=*}" "${target#*=}"
		done
	done
}
'

# Interleaved atftp fetches of one file.
#   FILE BLKSIZE WINDOWSIZE MIN MAX BUDGET DEADLINE DIR SRC NAME=IP:PORT...
# Prints "ROUND NAME MICROSECONDS" per transfer (wall time of the atftp process, file compared byte for
# byte), or "FAIL NAME why" and stops.
TFTP_MATRIX_INNER=$INTERLEAVE_INNER'
file=$1 bs=$2 ws=$3 min=$4 max=$5 budget=$6 deadline=$7 dir=$8 src=$9
shift 9
opts=(--option "blksize $bs")
[ "$ws" = - ] || opts+=(--option "windowsize $ws")
one() {
	local r=$1 name=$2 addr=$3 out=$dir/$2.out t0 t1
	rm -f "$out"
	t0=${EPOCHREALTIME/./}
	timeout 300 atftp "${opts[@]}" --get -r "$file" -l "$out" "${addr%:*}" "${addr#*:}" >/dev/null 2>&1 ||
		{ echo "FAIL $name atftp rc=$? (round $r)"; exit 1; }
	t1=${EPOCHREALTIME/./}
	cmp -s "$out" "$src" || { echo "FAIL $name content differs (round $r)"; exit 1; }
	rm -f "$out"
	echo "$r $name $((t1 - t0))"
}
interleave "$min" "$max" "$budget" "$deadline" "$@"
'

# Interleaved batches of N concurrent atftp fetches of ipxe.efi.
#   N BLKSIZE WINDOWSIZE MIN MAX BUDGET DEADLINE DIR SRC NAME=IP:PORT...
# Prints "ROUND NAME MICROSECONDS GOOD" per batch (wall time until the last exits; GOOD = exit 0 and
# byte-identical).
TFTP_CONC_INNER=$INTERLEAVE_INNER'
n=$1 bs=$2 ws=$3 min=$4 max=$5 budget=$6 deadline=$7 dir=$8 src=$9
shift 9
opts=(--option "blksize $bs")
[ "$ws" = - ] || opts+=(--option "windowsize $ws")
one() {
	local r=$1 name=$2 addr=$3 t0 t1 i rc good=0
	rm -rf "$dir/batch"
	mkdir -p "$dir/batch"
	t0=${EPOCHREALTIME/./}
	for ((i = 0; i < n; i++)); do
		( timeout 120 atftp "${opts[@]}" --get -r ipxe.efi -l "$dir/batch/$i.bin" "${addr%:*}" "${addr#*:}" >/dev/null 2>&1
		  echo $? >"$dir/batch/$i.rc" ) &
	done
	wait
	t1=${EPOCHREALTIME/./}
	for ((i = 0; i < n; i++)); do
		rc=x
		read -r rc <"$dir/batch/$i.rc" 2>/dev/null
		if [ "$rc" = 0 ] && cmp -s "$dir/batch/$i.bin" "$src"; then good=$((good + 1)); fi
	done
	echo "$r $name $((t1 - t0)) $good"
}
interleave "$min" "$max" "$budget" "$deadline" "$@"
rm -rf "$dir/batch"
'

# take_samples SECTION ID div|inv K: lines "ROUND NAME RAW ..." on stdin become samples with value
# RAW / K (div) or K / RAW (inv). A FAIL line (or no line at all) ends the run with its message.
take_samples() {
	local sec=$1 id=$2 mode=$3 k=$4 lines
	lines=$(cat)
	if grep -q '^FAIL' <<<"$lines"; then die "$sec $id: $(grep -m1 '^FAIL' <<<"$lines" | cut -d' ' -f2-)"; fi
	[ -n "$lines" ] || die "$sec $id: the client printed nothing"
	awk -v s="$sec" -v id="$id" -v mode="$mode" -v k="$k" 'NF >= 3 {
		v = (mode == "div") ? $3 / k : k / $3
		printf "%s\t%s\t%s\t%s\t%.6f\n", s, id, $2, $1, v
	}' <<<"$lines" >>"$SAMPLES"
}

# record_samples SECTION ID LABEL UNIT BETTER [NOTES]: one result row per server, the median of its
# samples; NOTES names an associative array server -> note.
record_samples() {
	local sec=$1 id=$2 label=$3 unit=$4 better=$5 srv vals note
	local -n servers=${sec^^}_SERVERS
	[ -z "${6:-}" ] || local -n notes=$6
	for srv in "${servers[@]}"; do
		mapfile -t vals < <(awk -F'\t' -v s="$sec" -v id="$id" -v srv="$srv" '$1 == s && $2 == id && $3 == srv { print $5 }' "$SAMPLES")
		[ ${#vals[@]} -gt 0 ] || die "$sec $id: no samples for $srv"
		note=
		[ -z "${6:-}" ] || note=${notes[$srv]:-}
		record "$sec" "$id" "$label" "$srv" "$(median "${vals[@]}")" "$unit" "$better" "$note"
	done
	log "  ($(awk -F'\t' -v s="$sec" -v id="$id" '$1 == s && $2 == id && $4 + 1 > n { n = $4 + 1 } END { print n }' "$SAMPLES") rounds)"
}

# rounds KIND: "MIN MAX BUDGET DEADLINE" for one kind of row (DEADLINE: the part's, $DEADLINE).
rounds() {
	if [ "$QUICK" = 1 ]; then
		echo "1 1 0 $DEADLINE"
		return
	fi
	case $1 in
	lan-small) echo "7 15 4 $DEADLINE" ;;  # ipxe.efi over the bare veth: tens of ms per transfer
	lan-big) echo "3 7 20 $DEADLINE" ;;    # 64 MiB: 1–12 s per transfer (25 s when loaded)
	rtt) echo "7 13 20 $DEADLINE" ;;       # 1 ms RTT: 0.05–3 s per transfer; the lock-step rows decide a target
	tftp-conc) echo "3 6 12 $DEADLINE" ;;  # 200 at once: 1–3 s per batch
	http-1g) echo "5 15 15 $DEADLINE" ;;   # ~1 s per download
	http-conc) echo "5 15 15 $DEADLINE" ;; # ~1 s per batch of 32
	esac
}
# Seconds after the start of a part past which rows stop at 2 rounds (see above).
TFTP_SECONDS=300
HTTP_SECONDS=90
DEADLINE=0

TFTP_SERVERS=(kiln tftpd-hpa atftpd)
KILN_TFTP_PORT=69
HPA_TFTP_PORT=1069
ATFTPD_TFTP_PORT=2069
TFTP_TARGETS=("kiln=$SRV_IP:$KILN_TFTP_PORT" "tftpd-hpa=$SRV_IP:$HPA_TFTP_PORT" "atftpd=$SRV_IP:$ATFTPD_TFTP_PORT")

# wlabel W: "windowsize W", or "no windowsize" for -.
wlabel() { if [ "$1" = - ]; then echo "no windowsize"; else echo "windowsize $1"; fi; }

# tftp_lan: ipxe.efi and rand64M over the bare veth with atftp, every blksize/windowsize.
tftp_lan() {
	local f bs ws size label id lines kind
	for f in ipxe.efi rand64M; do
		size=$(stat -c %s "$FILES/$f")
		kind=lan-big
		[ "$f" != ipxe.efi ] || kind=lan-small
		for bs in 512 1468; do
			for ws in - 4 16; do
				id="lan:$f:$bs:$ws"
				label="LAN, atftp: $f, blksize $bs, $(wlabel "$ws")"
				# shellcheck disable=SC2046 # rounds prints three numbers
				lines=$(cli bash -c "$TFTP_MATRIX_INNER" _ "$f" "$bs" "$ws" $(rounds "$kind") "$RUN/tftp" "$FILES/$f" "${TFTP_TARGETS[@]}") || true
				if [ "$f" = ipxe.efi ]; then
					take_samples tftp "$id" div 1000 <<<"$lines" # µs -> ms
					record_samples tftp "$id" "$label" ms lower
				else
					take_samples tftp "$id" inv "$size" <<<"$lines" # bytes/µs = MB/s
					record_samples tftp "$id" "$label" MB/s higher
				fi
			done
		done
	done
}

# tftp_rtt: ipxe.efi at a 1 ms round trip with bench/tftp-client.py, interleaved in one client process.
# With netem the delay is on the client's veth only while these rows run; otherwise the client sleeps
# 1 ms before each ACK.
tftp_rtt() {
	local bs ws json lines delay=1 wopt id t rmin rmax budget deadline targets=()
	for t in "${TFTP_TARGETS[@]}"; do targets+=(--target "$t"); done
	if [ "$RTT_METHOD" = netem ]; then
		ip netns exec "$NS_C" tc qdisc add dev "$IF_C" root netem delay 1ms
		delay=0
	fi
	for bs in 512 1468; do
		for ws in - 4 16; do
			wopt=()
			[ "$ws" = - ] || wopt=(--windowsize "$ws")
			id="rtt:ipxe.efi:$bs:$ws"
			read -r rmin rmax budget deadline <<<"$(rounds rtt)"
			json=$(cli timeout 900 "$PY" "$TFTP_CLIENT" ipxe.efi "${targets[@]}" --rounds-min "$rmin" --rounds-max "$rmax" \
				--budget "$budget" --deadline "$deadline" --blksize "$bs" "${wopt[@]}" --ack-delay-ms "$delay" --sha256 "$SHA_IPXE") || true
			lines=$("$PY" -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    d = json.loads(line)
    if d["ok"]:
        t = d.get("turnaround_us") or {"mean": 0, "p50": 0}
        print(d["round"], d["target"], d["seconds"], d["ack_delay_mean_ms"], t["mean"], t["p50"])
    else:
        print("FAIL", d["target"], d["error"], "(round %d)" % d["round"])
' <<<"$json")
			take_samples tftp "$id" div 0.001 <<<"$lines" # s -> ms
			mapfile -t -O "${#ACK_DELAYS[@]}" ACK_DELAYS < <(awk '{ print $4 }' <<<"$lines")
			record_samples tftp "$id" "1 ms RTT: ipxe.efi, blksize $bs, $(wlabel "$ws")" ms lower
			# Lock-step: the round trip is the same for every server, so what a server adds is
			# its turnaround: ACK sent -> next DATA received, at the client, per ACK.
			if [ "$ws" = - ]; then
				local -A p50s=()
				# shellcheck disable=SC2034 # read through a nameref in record_samples
				for t in "${TFTP_SERVERS[@]}"; do
					p50s[$t]="p50 $(awk -v s="$t" '$2 == s { print $6 }' <<<"$lines" | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }') µs"
				done
				awk '{ print $1, $2, $5 }' <<<"$lines" | take_samples tftp "$id:turnaround" div 1
				record_samples tftp "$id:turnaround" "1 ms RTT: ipxe.efi, blksize $bs, no windowsize: server turnaround per ACK (ACK sent → next DATA received, mean per transfer)" µs lower p50s
			fi
		done
	done
	if [ "$RTT_METHOD" = netem ]; then
		ip netns exec "$NS_C" tc qdisc del dev "$IF_C" root
	fi
}

# tftp_conc: 200 concurrent fetches of ipxe.efi, one batch per server per round.
tftp_conc() {
	local n=200 ws id lines srv
	local -A good
	for ws in - 16; do
		id="conc:ipxe.efi:1468:$ws"
		# shellcheck disable=SC2046
		lines=$(cli bash -c "$TFTP_CONC_INNER" _ "$n" 1468 "$ws" $(rounds tftp-conc) "$RUN/tftp" "$FILES/ipxe.efi" "${TFTP_TARGETS[@]}") || true
		take_samples tftp "$id" div 1000 <<<"$lines"
		for srv in "${TFTP_SERVERS[@]}"; do
			good[$srv]=$(awk -v s="$srv" -v n="$n" '$2 == s { g += $4; t += n } END { printf "%d/%d ok", g, t }' <<<"$lines")
			awk -v s="$srv" '$2 == s && $4 != '"$n"' { bad = 1 } END { exit bad }' <<<"$lines" ||
				log "WARNING: $srv: only ${good[$srv]}: some concurrent transfers were incomplete or wrong"
		done
		record_samples tftp "$id" "$n concurrent ipxe.efi, blksize 1468, $(wlabel "$ws") (wall time)" ms lower good
	done
}

section_tftp() {
	local pids=() pid i t
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

	log "TFTP: kiln, tftpd-hpa and atftpd side by side (${TFTP_TARGETS[*]})"
	start_server kiln-tftp "$KILN" --data-dir "$RUN/tftp/kiln-data" serve --dhcp-mode off --address "$SRV_IP" \
		--tftp-port "$KILN_TFTP_PORT" --http-port "$HTTP_PORT" --tftp-root "$FILES" --artifacts "$FILES" \
		--tftp-max-per-source 256 # the 200-concurrent row fetches from one client address
	pids+=("$SPID")
	start_server tftpd-hpa in.tftpd -L -a "$SRV_IP:$HPA_TFTP_PORT" -u root -s "$FILES"
	pids+=("$SPID")
	start_server atftpd "$ATFTPD" --daemon --no-fork --bind-address "$SRV_IP" --port "$ATFTPD_TFTP_PORT" \
		--user root --group root --maxthread 256 --logfile "$RUN/tftp/atftpd-syslog.log" "$FILES"
	pids+=("$SPID")
	for i in "${!pids[@]}"; do
		t=${TFTP_TARGETS[i]#*=}
		wait_tftp "${pids[i]}" "${t#*:}"
	done

	# The rows that decide the targets first; the 64 MiB LAN rows (the longest) last.
	DEADLINE=$((EPOCHSECONDS + TFTP_SECONDS))
	log "TFTP: 1 ms RTT, bench/tftp-client.py"
	tftp_rtt
	log "TFTP: 200 concurrent"
	tftp_conc
	log "TFTP: LAN, atftp"
	tftp_lan
	for pid in "${pids[@]}"; do stop_and_forget "$pid"; done

	local mean_delay rtt_note
	mean_delay=$(median "${ACK_DELAYS[@]:-0}")
	meta tftp.versions "tftpd-hpa $(dpkg-query -W -f='${Version}' tftpd-hpa) (in.tftpd -L -a IP:$HPA_TFTP_PORT -u root -s DIR), atftpd $(basename "$(ls "$BENCH_WORK"/atftpd/atftpd_*.deb)" .deb | sed 's/^atftpd_//') (unpacked .deb, --port $ATFTPD_TFTP_PORT --maxthread 256), client atftp $(dpkg-query -W -f='${Version}' atftp)"
	meta tftp.setup "kiln (TFTP port $KILN_TFTP_PORT), tftpd-hpa ($HPA_TFTP_PORT) and atftpd ($ATFTPD_TFTP_PORT) run at the same time; the client fetches from them in turn, one transfer (or one batch) per server per round, the order rotated every round (ABC, BCA, CAB, …), so load changes on this shared machine hit all three alike"
	meta tftp.note.1 "Cells: median [p25–p75] over the rounds; ratio columns: ratio of the medians [p25–p75 of the per-round ratios]. Rounds per row: at least the minimum, then more while the row's time budget lasts (LAN ipxe.efi $(rounds lan-small | awk '{print $1 "–" $2 " rounds, " $3 " s"}'); 64 MiB $(rounds lan-big | awk '{print $1 "–" $2 ", " $3 " s"}'); 1 ms RTT $(rounds rtt | awk '{print $1 "–" $2 ", " $3 " s"}'); concurrent $(rounds tftp-conc | awk '{print $1 "–" $2 ", " $3 " s"}')); once the part has run $TFTP_SECONDS s, no row starts a third round (measured in this order: 1 ms RTT, concurrent, LAN ipxe.efi, LAN 64 MiB)."
	meta tftp.note.2 "LAN rows: atftp --option 'blksize N' [--option 'windowsize W'] in the client namespace over the veth, wall time of the atftp process, every file compared byte for byte. tftpd-hpa ignores windowsize (it answers windowsize 1)."
	meta tftp.note.5 "Turnaround rows: in lock-step every server waits out the same round trip per block, so what a server adds is its turnaround, measured by the client per ACK from sending it to receiving the next DATA. An idle server that sleeps in recv pays a wake-up from idle per block (tens of µs on these virtual CPUs); kiln learns a slow client's pace from its previous ACK, wakes 50 µs before the next is due and polls across it (only while no more transfers run than there are CPUs; about 0.09 s of CPU per MB at blksize 512, 4× a sleeping server's)."
	rtt_note="client bench/tftp-client.py (blksize, windowsize, tsize; sha256 checked) fetching from the three servers in turn in one process, time from RRQ to last DATA"
	if [ "$RTT_METHOD" = netem ]; then
		meta tftp.note.3 "1 ms RTT rows: tc netem delay 1ms on the client's veth; $rtt_note."
	else
		meta tftp.note.3 "1 ms RTT rows: this kernel has no sch_netem ('$(head -1 "$RUN/tftp/netem.err" 2>/dev/null)'), so the client sleeps 1 ms before each ACK (measured median $(printf '%.3f' "$mean_delay") ms) — one delay per window, as a round trip would be; $rtt_note."
	fi
	meta tftp.note.4 "Concurrent rows: per round one batch of 200 atftp processes per server, started at once from one shell in the client namespace (all on the client CPU), wall time until the last exits; 'ok' = exit 0 and byte-identical, summed over the rounds."
}

# =========================================================================================== HTTP

HTTP_SERVERS=(kiln nginx)
NGINX_HTTP_PORT=8081
NGINX_IMAGES=$BENCH_WORK/nginx-images
HTTP_TARGETS=("kiln=$SRV_IP:$HTTP_PORT" "nginx=$SRV_IP:$NGINX_HTTP_PORT")

# Interleaved single downloads (see INTERLEAVE_INNER).   PATH SIZE MIN MAX BUDGET DEADLINE NAME=IP:PORT...
# Prints "ROUND NAME SECONDS" (curl's time_total), or "FAIL NAME why" and stops.
HTTP_GET_INNER=$INTERLEAVE_INNER'
path=$1 size=$2 min=$3 max=$4 budget=$5 deadline=$6
shift 6
one() {
	local r=$1 name=$2 addr=$3 res code got secs
	res=$(curl --noproxy "*" -s -o /dev/null --max-time 120 -w "%{http_code} %{size_download} %{time_total}" "http://$addr$path")
	read -r code got secs <<<"$res"
	if [ "$code" != 200 ] || [ "$got" != "$size" ]; then echo "FAIL $name download: $res (round $r)"; exit 1; fi
	echo "$r $name $secs"
}
interleave "$min" "$max" "$budget" "$deadline" "$@"
'

# Interleaved batches of N concurrent downloads (see INTERLEAVE_INNER).
#   PATH SIZE N MIN MAX BUDGET DEADLINE DIR NAME=IP:PORT...
# Prints "ROUND NAME MICROSECONDS" per batch (wall time until the last curl exits), or "FAIL ..." and stops.
HTTP_CONC_INNER=$INTERLEAVE_INNER'
path=$1 size=$2 n=$3 min=$4 max=$5 budget=$6 deadline=$7 dir=$8
shift 8
one() {
	local r=$1 name=$2 addr=$3 t0 t1 i res good=0
	rm -rf "$dir/batch"
	mkdir -p "$dir/batch"
	t0=${EPOCHREALTIME/./}
	for ((i = 0; i < n; i++)); do
		curl --noproxy "*" -s -o /dev/null --max-time 120 -w "%{http_code} %{size_download}\n" "http://$addr$path" >"$dir/batch/$i.res" &
	done
	wait
	t1=${EPOCHREALTIME/./}
	for ((i = 0; i < n; i++)); do
		res=
		read -r res <"$dir/batch/$i.res" 2>/dev/null
		[ "$res" != "200 $size" ] || good=$((good + 1))
	done
	[ "$good" = "$n" ] || { echo "FAIL $name only $good of $n concurrent downloads complete (round $r)"; exit 1; }
	echo "$r $name $((t1 - t0))"
}
interleave "$min" "$max" "$budget" "$deadline" "$@"
rm -rf "$dir/batch"
'

http_bench() {
	local t sum lines srv size64=67108864
	local -A complete
	cat "$FILES/rand1G" "$FILES/rand64M" >/dev/null # page cache: both servers read from memory
	for t in "${HTTP_TARGETS[@]}"; do
		sum=$(cli curl --noproxy '*' -s --max-time 60 "http://${t#*=}/artifacts/rand64M" | sha256sum | cut -d' ' -f1)
		[ "$sum" = "$SHA_64M" ] || die "${t%%=*}: /artifacts/rand64M content differs"
	done
	log "HTTP: one 1 GiB download"
	# shellcheck disable=SC2046 # rounds prints three numbers
	lines=$(cli bash -c "$HTTP_GET_INNER" _ /artifacts/rand1G 1073741824 $(rounds http-1g) "${HTTP_TARGETS[@]}") || true
	take_samples http get1g inv 1073.741824 <<<"$lines" # bytes / s / 1e6 = MB/s
	record_samples http get1g "one 1 GiB download" MB/s higher
	log "HTTP: 32 concurrent 64 MiB downloads"
	# shellcheck disable=SC2046
	lines=$(cli bash -c "$HTTP_CONC_INNER" _ /artifacts/rand64M "$size64" 32 $(rounds http-conc) "$RUN/http" "${HTTP_TARGETS[@]}") || true
	take_samples http conc_wall div 1000 <<<"$lines" # µs -> ms
	take_samples http conc_rate inv $((32 * size64)) <<<"$lines" # bytes/µs = MB/s
	for srv in "${HTTP_SERVERS[@]}"; do
		# shellcheck disable=SC2034 # read through a nameref in record_samples
		complete[$srv]="$(awk -v s="$srv" '$2 == s { n++ } END { printf "%d/%d complete", 32 * n, 32 * n }' <<<"$lines")"
	done
	record_samples http conc_wall "32 concurrent 64 MiB downloads, wall time" ms lower complete
	record_samples http conc_rate "32 concurrent 64 MiB downloads, aggregate" MB/s higher
	log "HTTP: 50 concurrent streams of an imported image"
	# shellcheck disable=SC2046
	lines=$(cli bash -c "$HTTP_CONC_INNER" _ "$IMAGE_PATH" "$IMAGE_SIZE" 50 $(rounds http-conc) "$RUN/http" "${HTTP_TARGETS[@]}") || true
	take_samples http image50_rate inv $((50 * IMAGE_SIZE)) <<<"$lines"
	record_samples http image50_rate "50 concurrent image streams (64 MiB image, stored zstd), aggregate" MB/s higher
}

# import_image: `kiln image import` of rand64M into the HTTP part's kiln, and the stored file copied
# for nginx; sets IMAGE_PATH (/images/FILE, the same on both) and IMAGE_SIZE (the served bytes).
import_image() {
	local data=$RUN/http/kiln-data file stored
	ip netns exec "$NS_S" "$KILN" image import "$FILES/rand64M" --name bench --data-dir "$data" >"$RUN/image-import.log" 2>&1 ||
		die "kiln image import failed: $(tail -3 "$RUN/image-import.log")"
	file=$(ip netns exec "$NS_S" "$KILN" image list -o json --data-dir "$data" |
		"$PY" -c 'import json,sys; print(next(i["file"] for i in json.load(sys.stdin) if i["name"] == "bench"))')
	stored=$(find "$data" -type f -name "$file" | head -n 1)
	[ -n "$stored" ] || die "the imported image $file is not under $data"
	# Where nginx's workers (not root) can read it, like $FILES.
	rm -rf "$NGINX_IMAGES"
	mkdir -p "$NGINX_IMAGES"
	cp "$stored" "$NGINX_IMAGES/$file"
	chmod 755 "$NGINX_IMAGES"
	chmod 644 "$NGINX_IMAGES/$file"
	IMAGE_PATH=/images/$file
	IMAGE_SIZE=$(stat -c %s "$stored")
	cat "$stored" >/dev/null
}

section_http() {
	local pids=() ng=$RUN/http/nginx i
	mkdir -p "$RUN/http" "$ng"
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
		    listen $SRV_IP:$NGINX_HTTP_PORT;
		    location /artifacts/ { alias $FILES/; }
		    location /images/ { alias $NGINX_IMAGES/; }
		  }
		}
	EOF
	log "HTTP: kiln and nginx side by side (${HTTP_TARGETS[*]})"
	start_server kiln-http "$KILN" --data-dir "$RUN/http/kiln-data" serve --dhcp-mode off --address "$SRV_IP" \
		--http-port "$HTTP_PORT" --tftp-root "$FILES" --artifacts "$FILES"
	pids+=("$SPID")
	start_server nginx nginx -e "$ng/error.log" -c "$ng/nginx.conf" -g 'daemon off;'
	pids+=("$SPID")
	for i in "${!pids[@]}"; do
		wait_http "http://${HTTP_TARGETS[i]#*=}/artifacts/rand64M" "${pids[i]}"
	done
	import_image
	DEADLINE=$((EPOCHSECONDS + HTTP_SECONDS))
	http_bench
	for i in "${pids[@]}"; do stop_and_forget "$i"; done

	meta http.versions "$(nginx -v 2>&1 | sed 's/^nginx version: //') (nginx-light; worker_processes auto, sendfile on, tcp_nopush on, access log to a file)"
	meta http.setup "kiln (port $HTTP_PORT) and nginx ($NGINX_HTTP_PORT) run at the same time; the client alternates between them, one download (or one batch of 32) per server per round, the order swapped every round (AB, BA, …), so load changes on this shared machine hit both alike"
	meta http.note.1 "Cells: median [p25–p75] over the rounds; ratio column: ratio of the medians [p25–p75 of the per-round ratios]. Rounds: 1 GiB $(rounds http-1g | awk '{print $1 "–" $2 " rounds, " $3 " s budget"}'); concurrent $(rounds http-conc | awk '{print $1 "–" $2 ", " $3 " s"}'); after $HTTP_SECONDS s, at most 2."
	meta http.note.2 "Client curl $(curl --version | head -1 | cut -d' ' -f2) in the client namespace; files read once beforehand (page cache), one sha256 of rand64M per server; 1 GiB: curl's time_total, MB = 10^6 bytes; concurrent: 32 curl processes on the client CPU, wall time until the last exits, every status and size checked."
}

# =========================================================================================== main

T0=$SECONDS
lock_bench_work boot-services # the test files in BENCH_WORK are shared too
new_run run
SAMPLES=$RUN/samples.tsv
: >"$SAMPLES"

install_packages
fetch_atftpd
prepare_files
build_kiln
setup_netns
log "namespaces $NS_S / $NS_C; server CPU $SRV_CPU, client CPU $CLI_CPU; scratch $RUN"

CMD="bash bench/boot-services.sh${*:+ $*}"
[ "$QUICK" = 1 ] && CMD="BENCH_QUICK=1 $CMD"
meta_run "$CMD"
meta setup "servers in one network namespace, clients in another, one veth pair between them ($SRV_IP ↔ $CLI_IP); every server pinned to CPU $SRV_CPU, every client to CPU $CLI_CPU (taskset)${BENCH_NICE:+, both under nice -n $BENCH_NICE}"
meta dhcp.setup "one server at a time"
log "load average: $(loadavg)"

for s in "${SECTIONS[@]}"; do
	t=$SECONDS
	meta "$s.load.start" "$(loadavg)"
	if machine_busy; then
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
	"$PY" "$REPORT" render "$RESULTS" "$META" --samples "$SAMPLES" --sections "$SECTION_LIST" \
		--md-dir "$BENCH_DIR/results" --benchmarks "$REPO/BENCHMARKS.md"
	for s in "${SECTIONS[@]}"; do
		awk -F'\t' -v s="$s" '$1 == s' "$RESULTS" >"$BENCH_DIR/results/boot-services-$s.tsv"
		if [ "$s" != dhcp ]; then
			awk -F'\t' -v s="$s" '$1 == s' "$SAMPLES" >"$BENCH_DIR/results/boot-services-$s-samples.tsv"
		fi
	done
	log "written: BENCHMARKS.md and, for ${SECTIONS[*]}, bench/results/boot-services-<part>.{md,tsv} (+ -samples.tsv: every round)"
else
	"$PY" "$REPORT" render "$RESULTS" "$META" --samples "$SAMPLES" --sections "$SECTION_LIST" --md-dir "$RUN/md"
	log "figures not written to BENCHMARKS.md (BENCH_QUICK=1 or BENCH_WRITE=0)"
fi
log "total $((SECONDS - T0)) s; load average now $(loadavg)"
