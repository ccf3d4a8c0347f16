#!/usr/bin/env bash
# shellcheck disable=SC2016 # the inner scripts are single-quoted on purpose
# BMC benchmark (issue 4, point 9): power control through kiln's BMC drivers against ipmitool and
# curl, side by side in one run, on loopback inside a network namespace this script creates.
#
#   bash bench/bmc.sh        (as root)
#
#   single   one ipmi_sim BMC: `kiln bmc status` (one process per call, so session setup included)
#            against `ipmitool -I lanplus -C 3 ... chassis power status`; one sushy-emulator BMC:
#            `kiln bmc status` against one curl GET of the system (and against curl fetching the three
#            resources kiln reads: service root, Systems, the system). Calls alternate, N of each;
#            per-call wall time, median and p90.
#   many     100 ipmi_sim (ports 9101-9200, one process each) with 100 enrolled machines:
#            `kiln bmc status --selector bench=ipmi` against 100 ipmitool processes launched by
#            `xargs -P 64` (kiln talks to 64 BMCs at once too): wall time, CPU time (user+sys), and the
#            same for power on and power off at scale. Then the same with BENCH_REDFISH sushy-emulators
#            (default 50, ports 8001-…; each is a ~30 MiB Python process) and curl. Start-up time and
#            memory of the emulators are noted.
#
# Every emulator's chassis is bench/bmc-chassis.sh: power and boot device in files, no machine behind.
# Every result is checked (all rows ok, right state; the state files afterwards) before it counts.
#
# Debian packages (installed when missing): openipmi ipmitool curl iproute2 util-linux findutils
# python3. sushy-tools in the venv $KILN_VENV (default /opt/kiln-venv, as .ci/run makes it).
#
# Network safety: everything (emulators, kiln, ipmitool, curl) runs in the namespace kiln-bench-bmc-<pid>,
# loopback only, no other interface. Processes are started as `ip netns exec NS env … cmd &` (exec all the
# way down, so $! is the process), stopped by that PID; the EXIT trap stops what is left by PID and
# deletes the namespace.
#
# Environment:
#   KILN_BIN        kiln binary (default: build with `cargo build --release -p kiln`)
#   KILN_VENV       venv with sushy-tools (default /opt/kiln-venv)
#   BENCH_WORK      scratch (default <repo>/target/bench-work; its lock file makes benchmark runs wait
#                   for each other, shared with bench/boot-services.sh)
#   BENCH_SEQ=N     calls of each tool in the single-BMC part (default 50)
#   BENCH_REPS=N    repetitions of each at-scale measurement (default 5; power on/off: 3)
#   BENCH_REDFISH=N sushy-emulators in the at-scale part (default 50, 0 to skip)
#   BENCH_QUICK=1   short runs for debugging; figures are not written to BENCHMARKS.md
#   BENCH_WRITE=0/1 write bench/results/bmc.{tsv,md} and BENCHMARKS.md (default 1, or 0 with BENCH_QUICK=1)
#   BENCH_KEEP=1    keep the run's scratch directory (logs, outputs)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
bench_settings
REPORT=$BENCH_DIR/bmc-report.py
CHASSIS=$BENCH_DIR/bmc-chassis.sh
VENV=${KILN_VENV:-/opt/kiln-venv}
SUSHY=$REPO/tests/e2e/sushy_qemu.py

PACKAGES=(openipmi ipmitool curl iproute2 util-linux findutils python3)

NS=kiln-bench-bmc-$$
N_IPMI=100
IPMI_BASE=9100 # the single BMC; the 100 are IPMI_BASE+1 …
RF_BASE=8000   # likewise for Redfish
PAR=64         # the peers' parallelism: kiln's PARALLEL (crates/kiln-server/src/bmc_actions.rs)
BMC_USER="admin"
BMC_PASS=password
UUID=27946b59-9e44-4fa7-8e91-f3527a1ef094
SYSTEM_PATH=/redfish/v1/Systems/$UUID

if [ "$QUICK" = 1 ]; then
	N_SEQ=${BENCH_SEQ:-10} REPS=${BENCH_REPS:-1} N_RF=${BENCH_REDFISH:-10}
else
	N_SEQ=${BENCH_SEQ:-50} REPS=${BENCH_REPS:-5} N_RF=${BENCH_REDFISH:-50}
fi
POWER_REPS=$((REPS < 3 ? REPS : 3))

# Emulators on one CPU, clients (kiln, ipmitool, curl) on the other.
if [ "$(nproc)" -ge 2 ]; then EMU_CPU=1 CLI_CPU=0; else EMU_CPU=0 CLI_CPU=0; fi

case ${1:-} in
-h | --help)
	usage
	exit 0
	;;
"") ;;
*) die "no arguments expected (see --help)" ;;
esac
[ "$(id -u)" -eq 0 ] || die "run as root (network namespace)"

# ---- lifecycle ---------------------------------------------------------------------------------

RUN=

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_pids "${PIDS[@]}"
	release_run "$rc" "$NS"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# nsx cmd...: in the namespace, on the client CPU.
nsx() { ip netns exec "$NS" taskset -c "$CLI_CPU" "$@"; }

# record GROUP ID LABEL TOOL VALUE UNIT [NOTE]
record() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "${7:-}" >>"$RESULTS"
	log "  $4: $3 = $5 $6${7:+ ($7)}"
}
calc() { "$PY" -c "print(round($1, 4))"; }
median() { printf '%s\n' "$@" >"$RUN/median.in" && "$PY" "$REPORT" stats "$RUN/median.in" | cut -d' ' -f1; }

# ---- packages ----------------------------------------------------------------------------------

install_packages() {
	local missing p
	mapfile -t missing < <(missing_packages "${PACKAGES[@]}")
	# (apt_install's policy-rc.d keeps openipmi's init script from starting during the install.)
	if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
	for p in ipmi_sim ipmitool curl taskset xargs; do
		command -v "$p" >/dev/null || die "$p missing after installing packages"
	done
	[ -x "$PY" ] || die "$PY missing"
	if [ "$N_RF" -gt 0 ]; then
		"$VENV/bin/python" -c 'import sushy_tools, bcrypt' 2>/dev/null ||
			die "sushy-tools missing: python3 -m venv $VENV && $VENV/bin/pip install sushy-tools (or BENCH_REDFISH=0)"
	fi
}

# ---- kiln --------------------------------------------------------------------------------------


# enroll: one store with every machine: the two single BMCs and the many.
enroll() {
	local csv=$RUN/hardware.csv i
	row() { # NAME BMC N LABEL
		printf '%s,%s,%s,%s,52:54:02:00:%02x:%02x,10.80.%d.%d,255.255.0.0,10.80.255.254,10.80.255.254,bench=%s,/dev/sda\n' \
			"$1" "$2" "$BMC_USER" "$BMC_PASS" $(($3 >> 8)) $(($3 & 255)) $(($3 >> 8)) $((($3 & 255) + 1)) "$4"
	}
	{
		echo "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk"
		row m-ipmi "ipmi://127.0.0.1:$IPMI_BASE" 0 single-ipmi
		row m-redfish "redfish+http://127.0.0.1:$RF_BASE" 1 single-redfish
		for ((i = 1; i <= N_IPMI; i++)); do
			row "$(printf 'ipmi-%03d' "$i")" "ipmi://127.0.0.1:$((IPMI_BASE + i))" $((0x100 + i)) ipmi
		done
		for ((i = 1; i <= N_RF; i++)); do
			row "$(printf 'rf-%03d' "$i")" "redfish+http://127.0.0.1:$((RF_BASE + i))" $((0x200 + i)) redfish
		done
	} >"$csv"
	chmod 600 "$csv" # it holds the BMC passwords
	KILN_DATA=$RUN/kiln-data
	"$KILN" --data-dir "$KILN_DATA" enroll "$csv" >&2
}

# ---- emulators -----------------------------------------------------------------------------------

# start_emu DIR cmd...: in the namespace with its chassis state in DIR/chassis; sets EPID.
start_emu() {
	local dir=$1
	shift
	mkdir -p "$dir/chassis"
	echo 0 >"$dir/chassis/power"
	ip netns exec "$NS" env KILN_BENCH_STATE="$dir/chassis" "$@" </dev/null >"$dir/log" 2>&1 &
	EPID=$!
	PIDS+=("$EPID")
}

# start_ipmi_sim PORT: one ipmi_sim in $RUN/ipmi-PORT; sets EPID.
start_ipmi_sim() {
	local port=$1 dir=$RUN/ipmi-$1
	mkdir -p "$dir/state"
	cat >"$dir/lan.conf" <<-EOF
		name "bench-$port"
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
		  chassis_control "$CHASSIS 0x20"
		  user 2 true "$BMC_USER" "$BMC_PASS" admin 10 none md2 md5 straight
	EOF
	chmod 600 "$dir/lan.conf"
	printf '%s\n' 'mc_setbmc 0x20' 'mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr' \
		'mc_enable 0x20' >"$dir/bmc.emu"
	start_emu "$dir" ipmi_sim -c "$dir/lan.conf" -f "$dir/bmc.emu" -s "$dir/state" -n
}

# start_sushy PORT: one sushy-emulator (tests/e2e/sushy_qemu.py) in $RUN/rf-PORT; sets EPID.
start_sushy() {
	local port=$1 dir=$RUN/rf-$1
	mkdir -p "$dir/state"
	cat >"$dir/sushy.conf" <<-EOF
		SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
		SUSHY_EMULATOR_LISTEN_PORT = $port
		SUSHY_EMULATOR_FAKE_DRIVER = True
		SUSHY_EMULATOR_STATE_DIR = '$dir/state'
		SUSHY_EMULATOR_AUTH_FILE = '$RUN/htpasswd'
		KILN_CHASSIS_CONTROL = '$CHASSIS'
		SUSHY_EMULATOR_FAKE_SYSTEMS = [{'uuid': '$UUID', 'name': 'bench-$port', 'power_state': 'Off', 'nics': []}]
	EOF
	start_emu "$dir" "$VENV/bin/python" "$SUSHY" --config "$dir/sushy.conf"
}

write_htpasswd() {
	# Basic auth (bcrypt, as sushy-tools' htpasswd reader accepts; 4 rounds keeps the emulator cheap).
	"$VENV/bin/python" -c 'import bcrypt,sys; print(sys.argv[1] + ":" + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=4)).decode())' \
		"$BMC_USER" "$BMC_PASS" >"$RUN/htpasswd"
	chmod 600 "$RUN/htpasswd"
}

# pin PID...: every thread of each onto the emulator CPU (after start-up, which may use both).
pin() {
	local p
	for p in "$@"; do taskset -a -p -c "$EMU_CPU" "$p" >/dev/null; done
}

# cpu_seconds PID...: user+sys the processes have used so far.
cpu_seconds() {
	local p total=0 t
	for p in "$@"; do
		t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
		total=$((total + t))
	done
	calc "$total / $(getconf CLK_TCK)"
}

# wait_ipmi_sims FROM TO, wait_sushies FROM TO: until every emulator on those ports answers.
wait_ipmi_sims() {
	nsx "$PY" "$REPORT" wait-ipmi --timeout 60 $(seq "$1" "$2") || die "not every ipmi_sim started; see $RUN/ipmi-*/log"
}
wait_sushies() {
	local p urls=()
	for ((p = $1; p <= $2; p++)); do urls+=("http://127.0.0.1:$p/redfish/v1/"); done
	nsx "$PY" "$REPORT" wait-http --timeout 180 "${urls[@]}" || die "not every sushy-emulator started; see $RUN/rf-*/log"
}

# start_many START WAIT FROM TO: `START PORT` for every port FROM..TO, `WAIT FROM TO` until all answer,
# then every emulator pinned. Sets MANY_PIDS, and for the start-up UP_WALL (s, from the first launch
# until all answer), UP_CPU (s, the emulators' in all) and UP_PSS (MiB, theirs in all).
start_many() {
	local start=$1 wait=$2 from=$3 to=$4 p t0
	MANY_PIDS=()
	t0=${EPOCHREALTIME/./}
	for ((p = from; p <= to; p++)); do
		"$start" "$p"
		MANY_PIDS+=("$EPID")
	done
	"$wait" "$from" "$to"
	UP_WALL=$(printf '%.1f' "$(calc "(${EPOCHREALTIME/./} - $t0) / 1e6")")
	UP_CPU=$(printf '%.2f' "$(cpu_seconds "${MANY_PIDS[@]}")")
	UP_PSS=$(printf '%.0f' "$("$PY" "$REPORT" pss "${MANY_PIDS[@]}")")
	pin "${MANY_PIDS[@]}"
}

# power_files DIR_PREFIX PORT_FROM PORT_TO: how many chassis are on, off ("on off").
power_files() {
	local pre=$1 from=$2 to=$3 p on=0 off=0
	for ((p = from; p <= to; p++)); do
		case $(cat "$RUN/$pre-$p/chassis/power") in 1) on=$((on + 1)) ;; 0) off=$((off + 1)) ;; esac
	done
	echo "$on $off"
}

# requests_seen GROUP: HTTP requests all the at-scale Redfish emulators have logged so far (0 for IPMI).
requests_seen() {
	[ "$1" = many-redfish ] || {
		echo 0
		return 0
	}
	# (The single emulator's log is among them; it is stopped by now, so differences are unaffected.)
	cat "$RUN"/rf-*/log | grep -c '"[A-Z]* /redfish' || true
}

# per_bmc GROUP BEFORE N: requests per BMC since BEFORE.
per_bmc() { calc "($(requests_seen "$1") - $2) / $3"; }

# ---- single BMC ----------------------------------------------------------------------------------

# In the namespace: N rounds; each round runs every "LABEL|PATTERN|command" given once, in turn, and
# appends its wall time (µs) to DIR/LABEL.us after checking its output holds PATTERN.
SINGLE_INNER='
set -u
n=$1 dir=$2
shift 2
for ((r = 0; r < n; r++)); do
	for spec in "$@"; do
		label=${spec%%|*} rest=${spec#*|}
		pattern=${rest%%|*} cmd=${rest#*|}
		t0=${EPOCHREALTIME/./}
		if ! eval "$cmd" >"$dir/$label.out" 2>&1; then
			echo "$label failed (round $r): $(head -c 400 "$dir/$label.out")" >&2
			exit 1
		fi
		t1=${EPOCHREALTIME/./}
		if ! grep -qF -- "$pattern" "$dir/$label.out"; then
			echo "$label: output without \"$pattern\" (round $r): $(head -c 400 "$dir/$label.out")" >&2
			exit 1
		fi
		echo $((t1 - t0)) >>"$dir/$label.us"
	done
done
'

# single_stats GROUP LABEL TOOL FILE: median and p90 rows.
single_stats() {
	local group=$1 label=$2 tool=$3 file=$4 med p90 _mean n
	read -r med p90 _mean n < <("$PY" "$REPORT" stats "$file")
	[ "$n" = "$N_SEQ" ] || die "$tool: $n timings in $file, expected $N_SEQ"
	record "$group" median "$label, median" "$tool" "$(calc "$med / 1000")" ms
	record "$group" p90 "$label, p90" "$tool" "$(calc "$p90 / 1000")" ms
}

section_single() {
	local d=$RUN/single ipmi_pid rf_pid=
	mkdir -p "$d"
	log "single: starting one ipmi_sim (port $IPMI_BASE)$([ "$N_RF" -eq 0 ] || echo " and one sushy-emulator (port $RF_BASE)")"
	start_ipmi_sim "$IPMI_BASE"
	ipmi_pid=$EPID
	if [ "$N_RF" -gt 0 ]; then
		start_sushy "$RF_BASE"
		rf_pid=$EPID
	fi
	nsx "$PY" "$REPORT" wait-ipmi --timeout 20 "$IPMI_BASE" || die "ipmi_sim did not start; see $RUN/ipmi-$IPMI_BASE/log"
	pin "$ipmi_pid"
	local ipmitool="ipmitool -I lanplus -C 3 -H 127.0.0.1 -p $IPMI_BASE -U $BMC_USER -P $BMC_PASS chassis power status"
	local kiln="$KILN --data-dir $KILN_DATA bmc status m-ipmi -o json"
	log "single IPMI: $N_SEQ × (kiln bmc status, ipmitool chassis power status), alternating"
	nsx bash -c "$SINGLE_INNER" _ "$N_SEQ" "$d" \
		"kiln-ipmi|\"result\": \"off\"|$kiln" \
		"ipmitool|Chassis Power is off|$ipmitool"
	single_stats single-ipmi "power status, per call" kiln "$d/kiln-ipmi.us"
	single_stats single-ipmi "power status, per call" ipmitool "$d/ipmitool.us"
	stop_and_forget "$ipmi_pid"

	[ -n "$rf_pid" ] || return 0
	nsx "$PY" "$REPORT" wait-http --timeout 60 "http://127.0.0.1:$RF_BASE/redfish/v1/" ||
		die "sushy-emulator did not start; see $RUN/rf-$RF_BASE/log"
	pin "$rf_pid"
	local base=http://127.0.0.1:$RF_BASE
	local curl1="curl -sf --noproxy '*' -u $BMC_USER:$BMC_PASS $base$SYSTEM_PATH"
	local curl3="curl -sf --noproxy '*' -u $BMC_USER:$BMC_PASS $base/redfish/v1/ $base/redfish/v1/Systems $base$SYSTEM_PATH"
	kiln="$KILN --data-dir $KILN_DATA bmc status m-redfish -o json"
	# The HTTP requests one kiln call makes, from the emulator's request log: the first call
	# discovers the system and how to authenticate; it keeps what it found in the store, and
	# later calls (the timed ones) go straight to the system.
	local before after
	before=$(grep -c '"[A-Z]* /redfish' "$RUN/rf-$RF_BASE/log" || true)
	nsx "$KILN" --data-dir "$KILN_DATA" bmc status m-redfish -o json >/dev/null
	after=$(grep -c '"[A-Z]* /redfish' "$RUN/rf-$RF_BASE/log" || true)
	KILN_RF_FIRST_REQUESTS=$((after - before))
	before=$after
	nsx "$KILN" --data-dir "$KILN_DATA" bmc status m-redfish -o json >/dev/null
	after=$(grep -c '"[A-Z]* /redfish' "$RUN/rf-$RF_BASE/log" || true)
	KILN_RF_REQUESTS=$((after - before))
	KILN_RF_REQUEST_LIST=$(grep -o '"[A-Z]* /redfish[^ ]*' "$RUN/rf-$RF_BASE/log" | tail -n "$KILN_RF_REQUESTS" |
		sed "s/^\"//; s|$SYSTEM_PATH|/redfish/v1/Systems/<id>|" | paste -sd, | sed 's/,/, /g')
	log "single Redfish: $N_SEQ × (kiln bmc status, curl GET system, curl GET root+Systems+system), alternating"
	nsx bash -c "$SINGLE_INNER" _ "$N_SEQ" "$d" \
		"kiln-redfish|\"result\": \"off\"|$kiln" \
		"curl|\"PowerState\": \"Off\"|$curl1" \
		"curl3|\"PowerState\": \"Off\"|$curl3"
	single_stats single-redfish "power state, per call" kiln "$d/kiln-redfish.us"
	single_stats single-redfish "power state, per call" "curl (1 GET)" "$d/curl.us"
	single_stats single-redfish "power state, per call" "curl (3 GETs)" "$d/curl3.us"
	stop_and_forget "$rf_pid"
}

# ---- many BMCs ---------------------------------------------------------------------------------

# timed TAG cmd...: run it in the namespace on the client CPU; sets T_WALL (ms), T_CPU (s, user+sys
# of it and every child it waited for, from wait4), T_RSS (MiB, its peak RSS, polled) and T_OUT (its
# stdout file).
timed() {
	local tag=$1 us user sys rss
	shift
	T_OUT=$RUN/many/$tag.out
	read -r us user sys rss < <(nsx "$PY" "$REPORT" timed "$T_OUT" "$T_OUT.err" "$@" 2>"$RUN/many/$tag.fail") ||
		die "$tag failed ($(cat "$RUN/many/$tag.fail")): $(head -c 600 "$T_OUT.err" 2>/dev/null)"
	T_WALL=$(calc "$us / 1000")
	T_CPU=$(calc "$user + $sys")
	T_RSS=$(calc "$rss / 1024")
}

# check_kiln WANT N: kiln's JSON in T_OUT has N rows, all ok with a result starting WANT.
check_kiln() {
	local ok total
	read -r ok total < <("$PY" "$REPORT" kiln-rows "$T_OUT" "$1" 2>"$T_OUT.bad")
	if [ "$ok/$total" != "$2/$2" ]; then
		head -5 "$T_OUT.bad" >&2
		die "kiln: $ok of $total rows are ok and '$1' (expected $2); see $T_OUT"
	fi
}

# check_count PATTERN N: T_OUT (or the files named) holds exactly N lines with PATTERN.
check_count() {
	local n
	n=$(grep -cF -- "$1" "$T_OUT" || true)
	[ "$n" = "$2" ] || die "$n of $2 replies hold '$1'; see $T_OUT"
}

# check_state PREFIX FROM TO WANT(on|off): every chassis file says so.
check_state() {
	local on off
	read -r on off < <(power_files "$1" "$2" "$3")
	local n=$(($3 - $2 + 1))
	if [ "$4" = on ]; then [ "$on" = "$n" ] || die "after power on: $on of $n $1 chassis are on"; fi
	if [ "$4" = off ]; then [ "$off" = "$n" ] || die "after power off: $off of $n $1 chassis are off"; fi
}

# timed_kiln GROUP N SELECTOR ACTION WANT TAG: `kiln bmc ACTION` on the N BMCs of the selector, timed
# (T_*, as TAG) and checked (every row ok, its result starting WANT); sets REQ_PER_BMC, the HTTP
# requests it made per BMC.
timed_kiln() {
	local group=$1 n=$2 selector=$3 action=$4 want=$5 tag=$6 seen
	seen=$(requests_seen "$group")
	timed "$tag" "$KILN" --data-dir "$KILN_DATA" bmc "$action" --selector "$selector" -o json
	check_kiln "$want" "$n"
	REQ_PER_BMC=$(per_bmc "$group" "$seen" "$n")
}

# many_status GROUP N SELECTOR PEER KILN_WANT PEER_PATTERN PEER_CMD…: power status of N BMCs,
# REPS × (kiln, the peer), alternating.
many_status() {
	local group=$1 n=$2 selector=$3 peer=$4 kiln_want=$5 peer_pattern=$6
	shift 6
	local r kw=() kc=() pw=() pc=() rss=()
	for ((r = 0; r < REPS; r++)); do
		timed_kiln "$group" "$n" "$selector" status "$kiln_want" "$group-kiln-status-$r"
		REQ_STATUS=$REQ_PER_BMC
		kw+=("$T_WALL") kc+=("$T_CPU") rss+=("$T_RSS")
		timed "$group-peer-status-$r" "$@"
		check_count "$peer_pattern" "$n"
		pw+=("$T_WALL") pc+=("$T_CPU")
		log "  status round $r: kiln ${kw[-1]} ms wall, ${kc[-1]} s CPU; $peer ${pw[-1]} ms, ${pc[-1]} s CPU"
	done
	record "$group" status-wall "power status of $n BMCs, wall time" kiln "$(median "${kw[@]}")" ms "peak RSS $(printf "%.1f" "$(median "${rss[@]}")") MiB"
	record "$group" status-wall "power status of $n BMCs, wall time" "$peer" "$(median "${pw[@]}")" ms
	record "$group" status-cpu "power status of $n BMCs, CPU (user+sys)" kiln "$(median "${kc[@]}")" s
	record "$group" status-cpu "power status of $n BMCs, CPU (user+sys)" "$peer" "$(median "${pc[@]}")" s
}

# many_power GROUP N SELECTOR PEER PREFIX FROM TO ON_PATTERN OFF_PATTERN -- ON_CMD… -- OFF_CMD…:
# POWER_REPS × (kiln on, kiln off, peer on, peer off), the chassis files checked after each.
many_power() {
	local group=$1 n=$2 selector=$3 peer=$4 prefix=$5 from=$6 to=$7 on_pat=$8 off_pat=$9
	shift 10
	local on_cmd=() off_cmd=()
	while [ "$1" != -- ]; do on_cmd+=("$1") && shift; done
	shift
	off_cmd=("$@")
	local r kon=() koff=() kcon=() kcoff=() pon=() poff=() pcon=() pcoff=()
	check_state "$prefix" "$from" "$to" off
	for ((r = 0; r < POWER_REPS; r++)); do
		timed_kiln "$group" "$n" "$selector" on "on: now on" "$group-kiln-on-$r"
		REQ_ON=$REQ_PER_BMC
		check_state "$prefix" "$from" "$to" on
		kon+=("$T_WALL") kcon+=("$T_CPU")
		timed_kiln "$group" "$n" "$selector" off "off: now off" "$group-kiln-off-$r"
		REQ_OFF=$REQ_PER_BMC
		check_state "$prefix" "$from" "$to" off
		koff+=("$T_WALL") kcoff+=("$T_CPU")
		timed "$group-peer-on-$r" "${on_cmd[@]}"
		check_count "$on_pat" "$n"
		check_state "$prefix" "$from" "$to" on
		pon+=("$T_WALL") pcon+=("$T_CPU")
		timed "$group-peer-off-$r" "${off_cmd[@]}"
		check_count "$off_pat" "$n"
		check_state "$prefix" "$from" "$to" off
		poff+=("$T_WALL") pcoff+=("$T_CPU")
		log "  power round $r: kiln on/off ${kon[-1]}/${koff[-1]} ms; $peer ${pon[-1]}/${poff[-1]} ms"
	done
	record "$group" on-wall "power on $n BMCs, wall time" kiln "$(median "${kon[@]}")" ms "confirmed"
	record "$group" on-wall "power on $n BMCs, wall time" "$peer" "$(median "${pon[@]}")" ms
	record "$group" on-cpu "power on $n BMCs, CPU (user+sys)" kiln "$(median "${kcon[@]}")" s
	record "$group" on-cpu "power on $n BMCs, CPU (user+sys)" "$peer" "$(median "${pcon[@]}")" s
	record "$group" off-wall "power off $n BMCs, wall time" kiln "$(median "${koff[@]}")" ms "confirmed"
	record "$group" off-wall "power off $n BMCs, wall time" "$peer" "$(median "${poff[@]}")" ms
	record "$group" off-cpu "power off $n BMCs, CPU (user+sys)" kiln "$(median "${kcoff[@]}")" s
	record "$group" off-cpu "power off $n BMCs, CPU (user+sys)" "$peer" "$(median "${pcoff[@]}")" s
}

section_many_ipmi() {
	local from=$((IPMI_BASE + 1)) to=$((IPMI_BASE + N_IPMI)) cpu
	mkdir -p "$RUN/many"
	seq "$from" "$to" >"$RUN/many/ipmi-ports"
	log "many IPMI: starting $N_IPMI ipmi_sim (ports $from-$to)"
	start_many start_ipmi_sim wait_ipmi_sims "$from" "$to"
	log "  $N_IPMI ipmi_sim up in $UP_WALL s (their CPU $UP_CPU s), PSS $UP_PSS MiB in all"
	cpu=$UP_CPU
	[ "$cpu" != 0.00 ] || cpu="under 0.01"
	meta note.3 "$N_IPMI ipmi_sim processes: all answering $UP_WALL s after the first was launched (CPU $cpu s in all), $UP_PSS MiB PSS in all."

	local common="-I lanplus -C 3 -H 127.0.0.1 -U $BMC_USER -P $BMC_PASS"
	log "many IPMI: power status, $REPS × (kiln, xargs -P $PAR ipmitool)"
	# shellcheck disable=SC2086 # $common is a list of words
	many_status many-ipmi "$N_IPMI" bench=ipmi "ipmitool ×$N_IPMI" off 'Chassis Power is off' \
		xargs -a "$RUN/many/ipmi-ports" -P "$PAR" -I{} ipmitool $common -p {} chassis power status
	log "many IPMI: power on, power off, $POWER_REPS × (kiln, xargs -P $PAR ipmitool)"
	# shellcheck disable=SC2086
	many_power many-ipmi "$N_IPMI" bench=ipmi "ipmitool ×$N_IPMI" ipmi "$from" "$to" \
		'Chassis Power Control: Up/On' 'Chassis Power Control: Down/Off' -- \
		xargs -a "$RUN/many/ipmi-ports" -P "$PAR" -I{} ipmitool $common -p {} chassis power on -- \
		xargs -a "$RUN/many/ipmi-ports" -P "$PAR" -I{} ipmitool $common -p {} chassis power off
	stop_and_forget "${MANY_PIDS[@]}"
}

section_many_redfish() {
	local from=$((RF_BASE + 1)) to=$((RF_BASE + N_RF))
	mkdir -p "$RUN/many"
	seq "$from" "$to" >"$RUN/many/rf-ports"
	log "many Redfish: starting $N_RF sushy-emulators (ports $from-$to)"
	start_many start_sushy wait_sushies "$from" "$to"
	log "  $N_RF sushy-emulators up in $UP_WALL s (their CPU $UP_CPU s), PSS $UP_PSS MiB in all"
	meta note.4 "$N_RF sushy-emulator processes: all answering $UP_WALL s after the first was launched (CPU $UP_CPU s in all, both CPUs), $UP_PSS MiB PSS in all."

	local auth="$BMC_USER:$BMC_PASS" reset='{"ResetType":"%s"}'
	log "many Redfish: power state, $REPS × (kiln, xargs -P $PAR curl)"
	many_status many-redfish "$N_RF" bench=redfish "curl ×$N_RF" off '"PowerState": "Off"' \
		xargs -a "$RUN/many/rf-ports" -P "$PAR" -I{} curl -sf --noproxy '*' -u "$auth" "http://127.0.0.1:{}$SYSTEM_PATH"
	log "many Redfish: power on, power off, $POWER_REPS × (kiln, xargs -P $PAR curl)"
	# shellcheck disable=SC2059 # the format is ours
	many_power many-redfish "$N_RF" bench=redfish "curl ×$N_RF" rf "$from" "$to" 'HTTP 204' 'HTTP 204' -- \
		xargs -a "$RUN/many/rf-ports" -P "$PAR" -I{} curl -sf --noproxy '*' -u "$auth" -o /dev/null -w 'HTTP %{http_code}\n' \
		-H 'Content-Type: application/json' -d "$(printf "$reset" On)" "http://127.0.0.1:{}$SYSTEM_PATH/Actions/ComputerSystem.Reset" -- \
		xargs -a "$RUN/many/rf-ports" -P "$PAR" -I{} curl -sf --noproxy '*' -u "$auth" -o /dev/null -w 'HTTP %{http_code}\n' \
		-H 'Content-Type: application/json' -d "$(printf "$reset" ForceOff)" "http://127.0.0.1:{}$SYSTEM_PATH/Actions/ComputerSystem.Reset"
	meta note.6 "Redfish at scale: HTTP requests per BMC in kiln's last run (from the emulators' logs): status $REQ_STATUS, on $REQ_ON, off $REQ_OFF (the first call to each BMC also discovers its system; kiln keeps what it found, so later ones do not); curl makes 1. The emulators share one CPU, and each request costs sushy-tools (Flask, a bcrypt check of the Basic credentials, a chassis program run for power reads) far more than it costs either client, so the wall times here mostly count requests."
	stop_and_forget "${MANY_PIDS[@]}"
}

# =========================================================================================== main

T0=$SECONDS
lock_bench_work benchmark
new_run bmc

install_packages
build_kiln
[ "$N_RF" -eq 0 ] || write_htpasswd
enroll
ip netns add "$NS"
ip -n "$NS" link set lo up
log "namespace $NS (loopback only); emulators on CPU $EMU_CPU, clients on CPU $CLI_CPU; scratch $RUN"

CMD="bash bench/bmc.sh"
[ "$N_RF" = 50 ] || CMD="BENCH_REDFISH=$N_RF $CMD"
[ "$QUICK" = 1 ] && CMD="BENCH_QUICK=1 $CMD"
meta_run "$CMD"
meta versions "ipmitool $(dpkg-query -W -f='${Version}' ipmitool), curl $(curl --version | head -1 | cut -d' ' -f2); emulators ipmi_sim (openipmi $(dpkg-query -W -f='${Version}' openipmi))$([ "$N_RF" -eq 0 ] || echo ", sushy-tools $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("sushy-tools"))')")"
meta setup "one network namespace, loopback only; emulators pinned to CPU $EMU_CPU, kiln and the peers to CPU $CLI_CPU (taskset); kiln reads machines and BMC credentials from its store (--data-dir), as an operator's \`kiln bmc\` does"
meta load.start "$(loadavg)"
log "load average: $(loadavg)"
if machine_busy; then
	log "WARNING: load average $(loadavg): other work competes for the CPUs; figures will be noisy"
fi

section_single
meta note.1 "Single BMC: $N_SEQ calls of each tool, alternating, each one process started from a shell in the namespace (process start, kiln's store, session set-up and teardown included); wall time per call. Every output checked (power off). ipmitool is given \`-C 3\`; kiln asks for cipher suite 17 first, which ipmi_sim 2.0.33 refuses, and falls back to 3 by itself."
if [ "$N_RF" -gt 0 ]; then
	meta note.2 "Redfish: the first \`kiln bmc status\` of a machine makes $KILN_RF_FIRST_REQUESTS HTTP requests: it discovers the system and how to authenticate (this emulator offers no sessions, so Basic) and keeps what it found in the store; every later one (the timed calls) makes $KILN_RF_REQUESTS ($KILN_RF_REQUEST_LIST; counted in the emulator's log); curl is given the system's URL (1 GET) or the three resources discovery reads (3 GETs on one connection); all with Basic auth."
fi
section_many_ipmi
[ "$N_RF" -eq 0 ] || section_many_redfish
meta note.5 "At scale: every BMC its own emulator process; kiln: one \`kiln bmc status|on|off --selector bench=…\` (64 BMCs at once, a session each), every row checked; peers: one ipmitool or curl process per BMC from \`xargs -P $PAR\`, every reply checked. CPU = user+sys of kiln, or of xargs and all its children (wait4's rusage). Power on/off: kiln confirms each change by reading the power state back (first after 100 ms, then doubling up to kiln-bmc's 1 s poll interval); it also stores an event per machine. ipmitool and curl send the command only. Every chassis file is checked after each run. Medians of $REPS (status) or $POWER_REPS (power) runs."
meta load.end "$(loadavg)"
meta seconds "$((SECONDS - T0))"

if [ "$WRITE" = 1 ]; then
	mkdir -p "$BENCH_DIR/results"
	cp "$RESULTS" "$BENCH_DIR/results/bmc.tsv"
	"$PY" "$REPORT" render "$RESULTS" "$META" --md "$BENCH_DIR/results/bmc.md" --benchmarks "$REPO/BENCHMARKS.md"
	log "written: BENCHMARKS.md (BMC section), bench/results/bmc.{md,tsv}"
else
	"$PY" "$REPORT" render "$RESULTS" "$META" --md "$RUN/bmc.md"
	log "figures not written to BENCHMARKS.md (BENCH_QUICK=1 or BENCH_WRITE=0)"
fi
log "total $((SECONDS - T0)) s; load average now $(loadavg)"
