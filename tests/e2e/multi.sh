#!/usr/bin/env bash
# Issue 13, several servers on one state. Two cases, each a child process of its own:
#
# segments (point 3(a), netboot only): two segments (bridges br0 10.77.0.0/24 and br1
# 10.78.0.0/24 in the test's namespace), one `kiln serve --dhcp-serve own` on each, both on one
# PostgreSQL; one QEMU machine per segment, netbooting at the same time: each gets its reserved
# address and the test initramfs from the server of its own segment (kernel command line names
# that server), both enrolled and switched to netboot through the first server only.
#
# takeover (point 3(b), no QEMU machine yet): two `kiln serve` on one PostgreSQL
# cluster that this test starts itself (initdb + pg_ctl in its work dir, unix socket only, as
# `nobody` when root; stopped and removed at the end), and one machine behind OpenIPMI's
# ipmi_sim whose chassis only records commands (power reads "on" a few seconds after "set
# power 1", like a slow BMC). The server that claimed the machine's BMC step is killed with
# SIGKILL right after it sent the power-on; the other server takes the step over once the
# lease runs out, reads the power state and sends nothing: the chassis log shows one power-on,
# the workflow reaches netbooting, and the events the dead server wrote are all there.
#
#   tests/e2e/multi.sh [CASE...]     (root; KILN_BIN names the kiln under test)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

IPMI_PORT=9001
MAC=52:54:00:4d:00:01
POWER_DELAY=6 # seconds before the chassis reports "on" after "set power 1"

PG_DIR=
PG_BIN=
pg_ctl_run() {
	local cmd=("$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" \
		-o "-k $PG_DIR -c listen_addresses='' -p 5432" "$@")
	if [ "$(id -u)" -eq 0 ]; then runuser -u nobody -- "${cmd[@]}"; else "${cmd[@]}"; fi
}
pg_start() {
	PG_BIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
	[ -x "$PG_BIN/initdb" ] || die "PostgreSQL missing: apt-get install postgresql"
	# Outside the work dir (0700): as root the cluster runs as nobody, who must reach it.
	PG_DIR=$(mktemp -d /tmp/kiln-e2e-pg.XXXXXX)
	[ "$(id -u)" -ne 0 ] || chown nobody "$PG_DIR"
	local init=("$PG_BIN/initdb" -D "$PG_DIR/data" -U kiln --auth=trust --no-sync --no-locale -E UTF8)
	if [ "$(id -u)" -eq 0 ]; then (cd "$PG_DIR" && runuser -u nobody -- "${init[@]}") >/dev/null; else "${init[@]}" >/dev/null; fi
	(cd "$PG_DIR" && pg_ctl_run -w start) >/dev/null
	E2E_LOGS+=("postgres=$E2E_WORK/postgres.log")
	STORE="postgresql://kiln@/postgres?host=$PG_DIR&port=5432"
}
pg_stop() {
	[ -n "$PG_DIR" ] || return 0
	(cd "$PG_DIR" && pg_ctl_run -m immediate stop) >/dev/null 2>&1 || true
	cp "$PG_DIR/postgres.log" "$E2E_WORK/postgres.log" 2>/dev/null || true
	rm -rf "$PG_DIR"
}
psql_q() { "$PG_BIN/psql" -h "$PG_DIR" -p 5432 -U kiln -d postgres -At -c "$1"; }

# The chassis of ipmi_sim: records each command in $1/ctl.log; no machine behind it.
write_chassis() {
	local dir=$1
	cat >"$dir/chassis.sh" <<-EOF
		#!/bin/sh
		D=$dir
		shift
		op=\$1; shift
		echo "\$(date +%T.%N) \$op \$*" >>"\$D/ctl.log"
		if [ "\$op" = get ]; then
		  for k in "\$@"; do case \$k in
		    power) if [ -f "\$D/on_at" ] && [ \$((\$(date +%s) - \$(cat "\$D/on_at"))) -ge $POWER_DELAY ]; then echo power:1; else echo power:0; fi ;;
		    boot) echo "boot:\$(cat "\$D/boot" 2>/dev/null || echo default)" ;;
		  esac; done
		  exit 0
		fi
		while [ \$# -ge 2 ]; do
		  case \$1 in
		    power) if [ "\$2" = 1 ]; then [ -f "\$D/on_at" ] || date +%s >"\$D/on_at"; else rm -f "\$D/on_at"; fi ;;
		    boot) echo "\$2" >"\$D/boot" ;;
		  esac
		  shift 2
		done
	EOF
	chmod +x "$dir/chassis.sh"
	ipmi_sim_files "$dir" "$IPMI_PORT" "$dir/chassis.sh" "password" kiln-multi
	mkdir -p "$dir/state"
}

# serve_b: the second server, on 10.77.0.2 of the same segment, its own data dir and admin API.
B_DATA=
B_PID=
serve_b() {
	B_DATA=$E2E_WORK/data-b
	mkdir -p "$B_DATA"
	nsx ip addr add 10.77.0.2/24 dev br0
	ip netns exec "$E2E_NS" "$KILN_BIN" serve --data-dir "$B_DATA" --address 10.77.0.2 --dhcp-mode off \
		--http-port "$HTTP_PORT" --tftp-root "$E2E_TFTP_ROOT" --artifacts "$E2E_WORK" \
		--api-listen 127.0.0.1:9444 --store "$STORE" --server-id b </dev/null >"$E2E_WORK/kiln-serve-b.log" 2>&1 &
	B_PID=$!
	E2E_PIDS+=("$B_PID")
	E2E_LOGS+=("kiln serve b=$E2E_WORK/kiln-serve-b.log")
	wait_http_ok "http://10.77.0.2:$HTTP_PORT/healthz" 60 "$B_PID" || die "server b did not start"
}

# Servers and ipmi_sim first (newest first), then PostgreSQL; then the harness's own cleanup.
multi_cleanup() {
	local rc=$? i
	trap - EXIT
	set +e
	for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${E2E_PIDS[i]}"; done
	pg_stop
	(exit "$rc")
	e2e_cleanup
}

case_takeover() {
	e2e_setup takeover
	command -v ipmi_sim >/dev/null || die "ipmi_sim missing: apt-get install openipmi"
	trap multi_cleanup EXIT
	pg_start
	ns_create 0
	mkdir -p "$E2E_WORK/bmc"
	write_chassis "$E2E_WORK/bmc"
	ip netns exec "$E2E_NS" ipmi_sim -c "$E2E_WORK/bmc/lan.conf" -f "$E2E_WORK/bmc/bmc.emu" \
		-s "$E2E_WORK/bmc/state" -n </dev/null >"$E2E_WORK/ipmi_sim.log" 2>&1 &
	E2E_PIDS+=("$!")
	E2E_LOGS+=("ipmi_sim=$E2E_WORK/ipmi_sim.log" "chassis=$E2E_WORK/bmc/ctl.log")

	KILN_ARTIFACTS=$E2E_WORK kiln_serve --dhcp-mode off --store "$STORE" --server-id a
	local a_pid=$KILN_PID
	serve_b
	check "takeover: both servers beat in the servers table" \
		[ "$(psql_q "SELECT string_agg(id, ',' ORDER BY id) FROM servers")" = a,b ]

	cat >"$E2E_WORK/hardware.csv" <<-EOF
		hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
		m1,ipmi://127.0.0.1:$IPMI_PORT,admin,password,$MAC,10.77.0.61,255.255.255.0,$SERVER_IP,$SERVER_IP,kiln.dev/boot-mode=legacy,/dev/vda
	EOF
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null || die "enrolment failed"
	cat >"$E2E_WORK/t.yaml" <<-'EOF'
		name: reach-agent
		timeout: 30m
		actions:
		  - name: hello
		    kind: exec
		    timeout: 1m
		    with:
		      command: "true"
	EOF
	kiln workflow create --template "$E2E_WORK/t.yaml" --hardware m1 >/dev/null || die "workflow create failed"

	# Whoever claims the step: kill it as soon as its power-on went out.
	local owner="" i
	for i in $(seq 300); do
		grep -q "set .*power 1" "$E2E_WORK/bmc/ctl.log" 2>/dev/null && break
		sleep 0.1
	done
	owner=$(psql_q "SELECT record::json->'power'->'start'->>'claimed_by' FROM workflows")
	local state
	state=$(psql_q "SELECT record::json->'power'->'start'->>'state' FROM workflows")
	log "step claimed by $owner ($state); sending SIGKILL to it"
	local victim=$a_pid survivor=b
	[ "$owner" = b ] && { victim=$B_PID; survivor=a; }
	kill -KILL "$victim"
	check "takeover: the step was running (not done) when its server was killed" [ "$state" = running ]
	local t0=$SECONDS
	for i in $(seq 120); do
		[ "$(psql_q "SELECT state FROM workflows")" = netbooting ] && break
		sleep 0.5
	done
	local took=$((SECONDS - t0))
	check "takeover: the other server finished the BMC step (workflow netbooting after ${took} s, bound 30 s)" \
		[ "$(psql_q "SELECT state FROM workflows")" = netbooting ]
	check "takeover: the step's last claim is the survivor's ($survivor)" \
		[ "$(psql_q "SELECT record::json->'power'->'start'->>'claimed_by' FROM workflows")" = "$survivor" ]
	check "takeover: took over within 30 s" [ "$took" -le 30 ]
	check "takeover: ipmi_sim's chassis received exactly one power-on" \
		[ "$(grep -c "set .*power 1" "$E2E_WORK/bmc/ctl.log")" = 1 ]
	psql_q "SELECT id, record::json->>'kind' FROM events WHERE machine = 'm1' ORDER BY id" >"$E2E_WORK/events.txt"
	sed 's/^/#   /' "$E2E_WORK/events.txt"
	# shellcheck disable=SC2016 # expanded by the inner bash
	check "takeover: no event lost: the dead server's boot-device and power events, then one bmc.done" \
		bash -c 'k=$(cut -d"|" -f2 "$1" | grep "^bmc\." | tr "\n" " "); [ "$k" = "bmc.boot-device bmc.power bmc.done " ]' _ "$E2E_WORK/events.txt"
}

BOOT_TIMEOUT=${KILN_E2E_BOOT_TIMEOUT:-300}

# boots_from VM_LOG VM_PID SERVER_URL HOST IP LABEL: the test initramfs ran with SERVER_URL as
# kiln.server, got IP, and fetched SERVER_URL/healthz.
boots_from() {
	local vmlog=$1 pid=$2 url=$3 host=$4 ip=$5 label=$6 seen
	seen=$(wait_for_any "$vmlog" "$BOOT_TIMEOUT" "$pid" "$M_FETCH_OK" "$M_FETCH_FAIL" "${M_DEAD_ENDS[@]}") ||
		seen="nothing within ${BOOT_TIMEOUT}s (or QEMU exited)"
	log "$label: $(serial_line "$vmlog" KILN-CMDLINE) $(serial_line "$vmlog" KILN-GUEST-IP) ($seen)"
	check "$label: netbooted the test initramfs and fetched /healthz" [ "$seen" = "$M_FETCH_OK" ]
	check "$label: its kernel command line names the server of its segment ($url)" \
		has_marker "$vmlog" "KILN-CMDLINE server=$url mac="
	check "$label: got its reserved address $ip" has_marker "$vmlog" "KILN-GUEST-IP=$ip"
	: "$host"
}

case_segments() {
	e2e_setup segments
	trap multi_cleanup EXIT
	require_assets
	pg_start
	ns_create 1
	# The second segment: br1 with tap1, no link to br0.
	nsx ip link add br1 type bridge
	nsx ip link set br1 type bridge stp_state 0 forward_delay 0
	nsx ip tuntap add dev tap1 mode tap
	nsx ip link set tap1 master br1
	nsx ip link set tap1 up
	nsx ip addr add 10.78.0.1/24 dev br1
	nsx ip link set br1 up
	KILN_ARTIFACTS=$E2E_ASSETS/initramfs kiln_serve --dhcp-serve own --store "$STORE" --server-id seg-a \
		--no-router-advert
	B_DATA=$E2E_WORK/data-b
	mkdir -p "$B_DATA"
	ip netns exec "$E2E_NS" "$KILN_BIN" serve --data-dir "$B_DATA" --interface br1 --address 10.78.0.1 \
		--dhcp-serve own --http-port "$HTTP_PORT" --tftp-root "$E2E_TFTP_ROOT" \
		--artifacts "$E2E_ASSETS/initramfs" --kernel-args "$KERNEL_ARGS" --no-router-advert \
		--api-listen 127.0.0.1:9444 --store "$STORE" --server-id seg-b </dev/null >"$E2E_WORK/kiln-serve-b.log" 2>&1 &
	B_PID=$!
	E2E_PIDS+=("$B_PID")
	E2E_LOGS+=("kiln serve b=$E2E_WORK/kiln-serve-b.log")
	wait_http_ok "http://10.78.0.1:$HTTP_PORT/healthz" 60 "$B_PID" || die "server b did not start"

	local mac_a=52:54:00:4d:0a:01 mac_b=52:54:00:4d:0b:01
	cat >"$E2E_WORK/hardware.csv" <<-EOF
		hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
		seg-a-1,,,,$mac_a,10.77.0.57,255.255.255.0,10.77.0.1,10.77.0.1,,/dev/vda
		seg-b-1,,,,$mac_b,10.78.0.57,255.255.255.0,10.78.0.1,10.78.0.1,,/dev/vda
	EOF
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null || die "enrolment failed"
	kiln hardware netboot seg-a-1 on >/dev/null
	kiln hardware netboot seg-b-1 on >/dev/null
	vm_start seg-a-1 --fw bios --tap tap0 --mac "$mac_a"
	local log_a=$VM_LOG pid_a=$VM_PID
	vm_start seg-b-1 --fw bios --tap tap1 --mac "$mac_b"
	local log_b=$VM_LOG pid_b=$VM_PID
	boots_from "$log_a" "$pid_a" "http://10.77.0.1:$HTTP_PORT" seg-a-1 10.77.0.57 "segments: seg-a-1 on br0"
	boots_from "$log_b" "$pid_b" "http://10.78.0.1:$HTTP_PORT" seg-b-1 10.78.0.57 "segments: seg-b-1 on br1"
}

CASES=(segments takeover)

if [ "${1:-}" = --case ]; then
	"case_$2"
	[ "$E2E_FAILED" -eq 0 ]
	exit
fi
[ "$(id -u)" -eq 0 ] || { echo "multi.sh: must run as root" >&2; exit 2; }
selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${CASES[@]}")
passed=0
failed=0
for c in "${selected[@]}"; do
	log "=== $c"
	out=$(mktemp)
	set +e
	bash "$0" --case "$c" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	set -e
	n_ok=$(grep -c '^ok - ' "$out" || true)
	n_fail=$(grep -c '^not ok - ' "$out" || true)
	rm -f "$out"
	if [ "$rc" -ne 0 ] && [ "$n_fail" -eq 0 ]; then
		echo "not ok - $c: harness error (exit status $rc)"
		n_fail=1
	fi
	passed=$((passed + n_ok))
	failed=$((failed + n_fail))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
