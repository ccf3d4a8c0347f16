#!/usr/bin/env bash
# Issue 13 point 3, several servers on one state. Each case starts a PostgreSQL cluster of its
# own (tests/lib/postgres.sh: initdb + pg_ctl in a temp dir, unix socket only, as `nobody` when
# root; stopped and removed at the end) shared by two or three `kiln serve`, and provisions QEMU machines
# to `succeeded` with the agent OS and workflows/debian-test-os.yaml. The test OS image is
# imported once, through the first server; the second serves the same files (its images dir is
# the first's: README "Several servers"). Each case is a child process of its own.
#
# segments (3(a), and the HA pair of point 2): two segments (bridges br0 10.77.0.0/24 and br1
#   10.78.0.0/24); on br0 an HA pair (seg-a 10.77.0.1 and seg-c .2), on br1 seg-b, all three
#   `kiln serve --dhcp-serve own`. One machine per segment, both provisioned at once, both
#   workflows created through seg-a: each machine is answered and served by its own segment's
#   servers (DHCP answers name them, they streamed its image, the URLs rendered for seg-a are
#   handed out naming the server the machine reached). The pair offers seg-a-1 the same
#   address, each REQUEST is acked once, by the server it chose, and never NAKed.
# takeover (3(b)): an HA pair on one segment (10.77.0.1 and .2, both answering DHCP) and one
#   machine behind OpenIPMI's ipmi_sim, whose chassis starts and stops its QEMU machine
#   (tests/e2e/vm-power.sh). The server that claimed the machine's BMC step, the one its
#   workflow was created through, is killed with SIGKILL right after it sent the power-on. The
#   other takes the step over (≤ 30 s) and sends nothing, answers the machine's netboot, hands
#   it the workflow's URLs naming itself, streams its image and takes its phone-home: the
#   workflow succeeds, the chassis saw one power-on, and every event (the dead server's first
#   ones included) is there.
# agent (point 2, an agent already running): an HA pair, only a answering DHCP. The machine
#   netboots through a; its kernel line names b's agent API (and b's CA) after a's. a is killed
#   with SIGKILL while the image streams: the agent moves to b, b hands out the same attempt
#   with its own image URL and the download resumes there; the workflow succeeds without a
#   second netboot or a second attempt.
#
#   tests/e2e/multi.sh [CASE...]     (root; KILN_BIN names the kiln under test)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

AGENT_OS=$E2E_ASSETS/agent-os
TEST_OS=$E2E_ASSETS/test-os/test-os.raw.zst
IPMI_PORT=9001
B_IP=10.77.0.2 # the second server of an HA pair on br0
# Generous: two TCG machines at once on two shared cores (one install alone takes ~3 min).
WORKFLOW_TIMEOUT=${KILN_E2E_WORKFLOW_TIMEOUT:-1200}

# shellcheck source=tests/lib/postgres.sh
source "$REPO/tests/lib/postgres.sh"
# The cluster, its log kept with the test's.
pg_up() {
	pg_start || die "could not start PostgreSQL"
	E2E_LOGS+=("postgres=$E2E_WORK/postgres.log")
}
pg_down() { pg_stop "$E2E_WORK/postgres.log"; }

# Servers, machines and ipmi_sim first (newest first), then PostgreSQL; then the harness's own
# cleanup (the QEMU machine behind ipmi_sim, the namespace, the logs).
multi_cleanup() {
	local rc=$? i
	trap - EXIT
	set +e
	for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${E2E_PIDS[i]}"; done
	pg_down
	(exit "$rc")
	e2e_cleanup
}

# setup CASE NTAPS: work dir, PostgreSQL, namespace with br0 and NTAPS taps.
setup() {
	e2e_setup "$1"
	trap multi_cleanup EXIT
	[ -s "$TEST_OS" ] || die "test OS image missing: images/test-os/build.sh $E2E_ASSETS/test-os"
	[ -s "$AGENT_OS/initrd.img" ] || die "agent OS missing: images/agent/build.sh $AGENT_OS"
	pg_up
	ns_create "$2"
}

# serve_a ID [ARGS...]: the first server (lib.sh's kiln_serve: 10.77.0.1 on br0, admin API
# 127.0.0.1:9443, data dir $E2E_DATA) with the agent OS, on the shared store; the images dir
# the second server will share exists from now on.
serve_a() {
	local id=$1
	shift
	KILN_ARTIFACTS=$AGENT_OS kiln_serve --store "$STORE" --server-id "$id" "$@"
	A_PID=$KILN_PID
	A_DATA=$E2E_DATA
	mkdir -p "$(images_dir_of "$A_DATA")"
}
images_dir_of() { echo "$1/images"; }

# serve_peer ID INTERFACE ADDRESS API_PORT [ARGS...]: another server, its own data dir and admin
# API (127.0.0.1:API_PORT), the first one's images dir. Sets PEER_PID, PEER_DATA.
serve_peer() {
	local id=$1 iface=$2 address=$3 api_port=$4
	shift 4
	PEER_DATA=$E2E_WORK/data-$id
	local log=$E2E_WORK/kiln-serve-$id.log
	mkdir -p "$PEER_DATA"
	ln -s "$(images_dir_of "$A_DATA")" "$(images_dir_of "$PEER_DATA")"
	local cmd=("$KILN_BIN" serve --data-dir "$PEER_DATA" --interface "$iface" --address "$address"
		--http-port "$HTTP_PORT" --tftp-root "$E2E_TFTP_ROOT" --artifacts "$AGENT_OS"
		--kernel-args "$KERNEL_ARGS" --api-listen "127.0.0.1:$api_port" --store "$STORE" --server-id "$id" "$@")
	log "starting: ${cmd[*]}"
	ip netns exec "$E2E_NS" "${cmd[@]}" </dev/null >"$log" 2>&1 &
	PEER_PID=$!
	E2E_PIDS+=("$PEER_PID")
	E2E_LOGS+=("kiln serve $id=$log")
	wait_http_ok "http://$address:$HTTP_PORT/healthz" 60 "$PEER_PID" || die "server $id did not start"
	local i
	for i in $(seq 150); do
		[ -s "$PEER_DATA/api.json" ] && break
		sleep 0.2
	done
	[ -s "$PEER_DATA/api.json" ] || die "server $id wrote no $PEER_DATA/api.json"
	# The admin token is the store's (the first server made it): the CLI on this host may
	# talk to any server.
	cp "$A_DATA/admin.token" "$PEER_DATA/admin.token"
}

# serve_b ID INTERFACE ADDRESS [ARGS...]: the second server (admin API 127.0.0.1:9444). Sets
# B_PID, B_DATA.
serve_b() {
	serve_peer "$1" "$2" "$3" 9444 "${@:4}"
	B_PID=$PEER_PID
	B_DATA=$PEER_DATA
}

# enroll_and_import: hardware.csv (written by the caller) enrolled and the test OS imported,
# through the first server.
enroll_and_import() {
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null || die "enrolment failed"
	kiln image import "$TEST_OS" --name test-os >/dev/null || die "image import failed"
}

# install HOST [ARGS...]: a debian-test-os workflow for HOST, created through the first server:
# its rendered URLs (the image's, phone-home's) name that server, and whichever server the
# machine reaches hands them out naming itself.
install() {
	local host=$1
	shift
	kiln workflow create --template "$REPO/workflows/debian-test-os.yaml" --hardware "$host" "$@" >/dev/null ||
		die "workflow create $host failed"
}

# wf_state HOST / wf_field HOST SQL-JSON-PATH: the machine's workflow, read from the shared
# store (whichever server is alive).
wf_state() { psql_q "SELECT state FROM workflows WHERE hardware = '$1' ORDER BY created_ms DESC LIMIT 1"; }
wf_field() { psql_q "SELECT record::json$2 FROM workflows WHERE hardware = '$1' ORDER BY created_ms DESC LIMIT 1"; }

# wait_ended TIMEOUT HOST...: until every HOST's workflow ended (or TIMEOUT s passed).
wait_ended() {
	local deadline=$((SECONDS + $1)) h s left
	shift
	while [ "$SECONDS" -lt "$deadline" ]; do
		left=0
		for h in "$@"; do
			s=$(wf_state "$h")
			case $s in succeeded | failed | timed-out) ;; *) left=1 ;; esac
		done
		[ "$left" = 0 ] && return 0
		sleep 3
	done
	return 1
}

# machine_disk NAME: a blank 3 GiB sparse disk.
machine_disk() {
	truncate -s 3G "$E2E_WORK/$1.disk.raw"
	echo "$E2E_WORK/$1.disk.raw"
}

# events_json FILE: every event (JSON lines), through the admin API of the server whose data
# dir $E2E_DATA is.
events_json() { kiln_cli events --last 100000 -o json >"$1"; }

# metric URL SAMPLE: one sample of URL/metrics (0 when absent).
metric() {
	nsx curl --noproxy '*' -s --max-time 5 "$1/metrics" |
		awk -v s="$2" '$1 == s { v = $2 } END { printf "%d\n", (v == "" ? 0 : v) }'
}

# succeeded_checks LABEL HOST IP: the workflow succeeded and the installed OS phoned home from
# its reserved address.
succeeded_checks() {
	local label=$1 host=$2 ip=$3 state peer
	state=$(wf_state "$host")
	check "$label: $host's workflow succeeded (got $state)" [ "$state" = succeeded ]
	peer=$(kiln_cli workflow show "$host" -o json 2>/dev/null |
		python3 -c 'import json,sys; print((json.load(sys.stdin).get("phone_home") or {}).get("peer", ""))' 2>/dev/null || true)
	check "$label: $host's installed OS phoned home from its reserved address $ip (got $peer)" [ "$peer" = "$ip" ]
	[ "$state" = succeeded ] || kiln_cli workflow logs "$host" 2>/dev/null | tail -n 20 | sed 's/^/#   logs: /'
}

# ---- segments ---------------------------------------------------------------------------

# The machine's DHCP events, one a line: AT_MS KIND IP DETAIL (see case_segments).
same_address() { [ -s "$1" ] && ! awk -v ip="$2" '$3 != ip' "$1" | grep -q .; }
offered_by() {
	local file=$1 url
	shift
	for url in "$@"; do grep -q "dhcp.offer .*boot=$url/" "$file" || return 1; done
}
no_nak() { ! grep -qE ' dhcp\.(nak|decline) ' "$1"; }
# A second server's ACK to the same REQUEST would follow the first within milliseconds.
one_ack_per_exchange() {
	awk '$2 == "dhcp.ack" { if (last && $1 - last < 3000) bad = 1; last = $1 } END { exit bad }' "$1"
}


case_segments() {
	setup segments 1
	# The second segment: br1 with tap1, no link to br0.
	nsx ip link add br1 type bridge
	nsx ip link set br1 type bridge stp_state 0 forward_delay 0
	nsx ip tuntap add dev tap1 mode tap
	nsx ip link set tap1 master br1
	nsx ip link set tap1 up
	nsx ip addr add 10.78.0.1/24 dev br1
	nsx ip link set br1 up
	serve_a seg-a --dhcp-serve own --no-router-advert
	nsx ip addr add "$B_IP/24" dev br0
	serve_peer seg-c br0 "$B_IP" 9445 --dhcp-serve own --no-router-advert
	serve_b seg-b br1 10.78.0.1 --dhcp-serve own --no-router-advert

	local mac_a=52:54:00:4d:0a:01 mac_b=52:54:00:4d:0b:01 ip_a=10.77.0.57
	cat >"$E2E_WORK/hardware.csv" <<-EOF
		hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
		seg-a-1,,,,$mac_a,$ip_a,255.255.255.0,10.77.0.1,10.77.0.1,,/dev/vda
		seg-b-1,,,,$mac_b,10.78.0.57,255.255.255.0,10.78.0.1,10.78.0.1,,/dev/vda
	EOF
	enroll_and_import
	# Both through seg-a: seg-b-1's rendered URLs name a server its segment cannot reach.
	install seg-a-1
	install seg-b-1
	vm_start seg-a-1 --tap tap0 --mac "$mac_a" --disk "$(machine_disk seg-a-1)" --rw-disk --reboot --mem 1024
	vm_start seg-b-1 --tap tap1 --mac "$mac_b" --disk "$(machine_disk seg-b-1)" --rw-disk --reboot --mem 1024
	wait_ended "$WORKFLOW_TIMEOUT" seg-a-1 seg-b-1 || log "not both ended within $WORKFLOW_TIMEOUT s"
	succeeded_checks segments seg-a-1 "$ip_a"
	succeeded_checks segments seg-b-1 10.78.0.57

	events_json "$E2E_WORK/events.json"
	local a=$KILN_URL b=http://10.78.0.1:$HTTP_PORT c=http://$B_IP:$HTTP_PORT
	# shellcheck disable=SC2016 # python
	check "segments: every DHCP answer with a boot file names a server of the machine's own segment" \
		python3 -c 'import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for host, urls in (("seg-a-1", sys.argv[2:4]), ("seg-b-1", sys.argv[4:5])):
    boots = [e["detail"] for e in ev if e.get("machine") == host and e["kind"] in ("dhcp.offer", "dhcp.ack") and "boot=" in e["detail"]]
    print("#   " + host + ":\n#   " + "\n#   ".join(boots))
    assert boots and all(any(("boot=" + u + "/") in d for u in urls) for d in boots), (host, boots)' \
		"$E2E_WORK/events.json" "$a" "$c" "$b"
	check "segments: seg-b-1's workflow was rendered for seg-a ($a), yet served by seg-b" \
		[ "$(wf_field seg-b-1 "->>'rendered_for'")" = "$a" ]
	# One machine per segment: seg-b streamed one image, seg-a's pair the other.
	local size a_bytes b_bytes c_bytes
	size=$(stat -c %s "$TEST_OS")
	a_bytes=$(metric "$a" 'kiln_http_file_bytes_total{root="images"}')
	b_bytes=$(metric "$b" 'kiln_http_file_bytes_total{root="images"}')
	c_bytes=$(metric "$c" 'kiln_http_file_bytes_total{root="images"}')
	check "segments: seg-b streamed the image to its segment's machine ($b_bytes bytes; image $size)" [ "$b_bytes" -ge "$size" ]
	check "segments: seg-a's HA pair streamed it to theirs ($a_bytes + $c_bytes bytes)" [ $((a_bytes + c_bytes)) -ge "$size" ]
	check "segments: the three servers beat in the servers table" \
		[ "$(psql_q "SELECT string_agg(id, ',' ORDER BY id) FROM servers")" = seg-a,seg-b,seg-c ]

	# The HA pair (point 2): seg-a and seg-c both answer br0; seg-a-1 got one lease.
	python3 - "$E2E_WORK/events.json" seg-a-1 >"$E2E_WORK/dhcp.txt" <<-'EOF'
		import json, sys
		ev = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
		for e in sorted(ev, key=lambda e: (e["at_ms"], e["id"])):
		    if e.get("machine") == sys.argv[2] and e["kind"].startswith("dhcp."):
		        print(e["at_ms"], e["kind"], e.get("ip") or "-", e["detail"])
	EOF
	sed 's/^/#   /' "$E2E_WORK/dhcp.txt"
	check "hapair: every DHCP answer gave seg-a-1 the same address $ip_a" same_address "$E2E_WORK/dhcp.txt" "$ip_a"
	check "hapair: both servers of the pair offered it netbooting (offers naming each one's boot URL)" \
		offered_by "$E2E_WORK/dhcp.txt" "$a" "$c"
	check "hapair: no NAK, no DECLINE (no conflicting answers)" no_nak "$E2E_WORK/dhcp.txt"
	check "hapair: one ACK per exchange (no two ACKs within 3 s)" one_ack_per_exchange "$E2E_WORK/dhcp.txt"
	local acks_a acks_c offers_a offers_c naks ignored acks
	acks_a=$(metric "$a" 'kiln_dhcp_packets_total{outcome="ack"}')
	acks_c=$(metric "$c" 'kiln_dhcp_packets_total{outcome="ack"}')
	offers_a=$(metric "$a" 'kiln_dhcp_packets_total{outcome="offer"}')
	offers_c=$(metric "$c" 'kiln_dhcp_packets_total{outcome="offer"}')
	naks=$(($(metric "$a" 'kiln_dhcp_packets_total{outcome="nak"}') + $(metric "$c" 'kiln_dhcp_packets_total{outcome="nak"}')))
	ignored=$(($(metric "$a" 'kiln_dhcp_packets_total{outcome="ignored_other_server"}') + $(metric "$c" 'kiln_dhcp_packets_total{outcome="ignored_other_server"}')))
	acks=$(grep -c ' dhcp.ack ' "$E2E_WORK/dhcp.txt" || true)
	log "metrics: seg-a offered $offers_a, acked $acks_a; seg-c offered $offers_c, acked $acks_c; naks $naks; REQUESTs left to the other server $ignored; ACK events $acks"
	check "hapair: both servers offered (seg-a $offers_a, seg-c $offers_c)" [ "$((offers_a > 0))$((offers_c > 0))" = 11 ]
	check "hapair: the pair's ACKs are the machine's ACK events ($acks_a + $acks_c = $acks): none unseen, none twice" \
		[ $((acks_a + acks_c)) = "$acks" ]
	check "hapair: REQUESTs that chose one server were left to it by the other ($ignored), none NAKed ($naks)" \
		[ "$((ignored > 0))/$naks" = 1/0 ]
}

# ---- takeover ---------------------------------------------------------------------------

# bmc_machine DIR VMDIR MAC TAP DISK: ipmi_sim's files for one BMC on 127.0.0.1:$IPMI_PORT whose
# chassis is tests/e2e/vm-power.sh driving that QEMU machine (bios, 1 GiB, the disk). While
# DIR/kill-on-power-on holds a PID, the chassis sends that process SIGKILL the moment a power-on
# reaches it, before carrying it out, and then empties the file: the server that sent the command
# dies between sending it and recording it as done, the worst moment for a takeover.
bmc_machine() {
	local dir=$1 vmdir=$2 mac=$3 tap=$4 disk=$5
	mkdir -p "$dir"
	cat >"$dir/machine.sh" <<-EOF
		#!/bin/sh
		if [ "\$2 \$3 \$4" = "set power 1" ] && [ -s "$dir/kill-on-power-on" ]; then
			pid=\$(cat "$dir/kill-on-power-on")
			: >"$dir/kill-on-power-on"
			kill -KILL "\$pid" && echo "\$(date +%T.%N) SIGKILL to \$pid on power-on" >>"$vmdir/ctl.log"
		fi
		VMDIR=$vmdir MAC=$mac TAP=$tap MEM=1024 DISK=$disk exec $REPO/tests/e2e/vm-power.sh "\$@"
	EOF
	chmod +x "$dir/machine.sh"
	ipmi_sim_files "$dir" "$IPMI_PORT" "$dir/machine.sh" "password" kiln-multi
}

case_takeover() {
	setup takeover 1
	command -v ipmi_sim >/dev/null || die "ipmi_sim missing: apt-get install openipmi"
	local mac=52:54:00:4d:00:01 vmdir=$E2E_WORK/vm
	bmc_machine "$E2E_WORK/bmc" "$vmdir" "$mac" tap0 "$(machine_disk m1)"
	E2E_PIDFILES+=("$vmdir/qemu.pid")
	ip netns exec "$E2E_NS" ipmi_sim -c "$E2E_WORK/bmc/lan.conf" -f "$E2E_WORK/bmc/bmc.emu" \
		-s "$E2E_WORK/bmc/state" -n </dev/null >"$E2E_WORK/ipmi_sim.log" 2>&1 &
	E2E_PIDS+=("$!")
	E2E_LOGS+=("ipmi_sim=$E2E_WORK/ipmi_sim.log" "chassis=$vmdir/ctl.log" "m1 serial=$vmdir/serial.log")

	serve_a a
	nsx ip addr add "$B_IP/24" dev br0
	serve_b b br0 "$B_IP"
	cat >"$E2E_WORK/hardware.csv" <<-EOF
		hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
		m1,ipmi://127.0.0.1:$IPMI_PORT,admin,password,$mac,10.77.0.61,255.255.255.0,$SERVER_IP,$SERVER_IP,kiln.dev/boot-mode=legacy,/dev/vda
	EOF
	enroll_and_import
	# Server a claims the step and so is the one to kill: b is paused (SIGSTOP) until a is dead.
	# The chassis kills a as the power-on reaches it (bmc_machine), so a dies with the step
	# claimed and its command sent but not recorded. The workflow is created through a: its
	# rendered URLs (the image's, the phone-home's) name the server that dies; b hands them out
	# naming itself.
	echo "$A_PID" >"$E2E_WORK/bmc/kill-on-power-on"
	kill -STOP "$B_PID"
	install m1
	local i
	for i in $(seq 600); do
		grep -q "SIGKILL to $A_PID on power-on" "$vmdir/ctl.log" 2>/dev/null && break
		sleep 0.1
	done
	# Reap a once it is dead; if the chassis never killed it, kill it here (the check below fails).
	grep -q "SIGKILL to $A_PID on power-on" "$vmdir/ctl.log" || kill -KILL "$A_PID"
	wait "$A_PID" 2>/dev/null || true
	local owner state
	owner=$(wf_field m1 "->'power'->'start'->>'claimed_by'")
	state=$(wf_field m1 "->'power'->'start'->>'state'")
	log "a was killed by the chassis as its power-on arrived; step claimed by $owner ($state); SIGCONT to b"
	kill -CONT "$B_PID"
	local killed_at_ms survivor=b survivor_url=http://$B_IP:$HTTP_PORT
	killed_at_ms=$(date +%s%3N)
	E2E_DATA=$B_DATA # the CLI talks to the survivor from now on
	check "takeover: a died on its power-on (the chassis log)" grep -q "SIGKILL to $A_PID on power-on" "$vmdir/ctl.log"
	check "takeover: the BMC step was running (not done), claimed by a, when a was killed ($owner, $state)" \
		[ "$owner/$state" = a/running ]

	local t0=$SECONDS took
	for i in $(seq 120); do
		[ "$(wf_field m1 "->'power'->'start'->>'state'")" = "done" ] && break
		sleep 0.5
	done
	took=$((SECONDS - t0))
	check "takeover: the other server finished the BMC step (after ${took} s)" \
		[ "$(wf_field m1 "->'power'->'start'->>'state'")" = "done" ]
	check "takeover: within the documented bound, 30 s" [ "$took" -le 30 ]
	check "takeover: the step's last claim is the survivor's ($survivor)" \
		[ "$(wf_field m1 "->'power'->'start'->>'claimed_by'")" = "$survivor" ]

	wait_ended "$WORKFLOW_TIMEOUT" m1 || log "the workflow did not end within $WORKFLOW_TIMEOUT s"
	succeeded_checks takeover m1 10.77.0.61
	# The finish step (next boot from disk) ran too: nothing BMC-wise is left.
	for i in $(seq 60); do
		[ "$(wf_field m1 "->'power'->'finish'->>'state'")" = "done" ] && break
		sleep 1
	done
	check "takeover: the survivor set the machine's next boot to its disk at the end" \
		[ "$(wf_field m1 "->'power'->'finish'->>'state'")/$(wf_field m1 "->'power'->'finish'->>'claimed_by'")" = "done/$survivor" ]
	sed 's/^/#   chassis: /' "$vmdir/ctl.log"
	check "takeover: ipmi_sim's chassis received exactly one power command, the power-on" \
		[ "$(grep -cE "set .*(power|reset) " "$vmdir/ctl.log")/$(grep -c "set power 1" "$vmdir/ctl.log")" = 1/1 ]

	# The survivor served the machine after the kill: DHCP, the image, the agent.
	events_json "$E2E_WORK/events.json"
	# shellcheck disable=SC2016 # python
	check "takeover: after the kill the machine netbooted from the survivor ($survivor_url)" \
		python3 -c 'import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
after = [e["detail"] for e in ev if e.get("machine") == "m1" and e["kind"] == "dhcp.ack" and e["at_ms"] > int(sys.argv[3]) and "boot=" in e["detail"]]
print("#   " + "\n#   ".join(after))
assert after and all(("boot=" + sys.argv[2] + "/") in d for d in after), after' \
		"$E2E_WORK/events.json" "$survivor_url" "$killed_at_ms"
	local size bytes
	size=$(stat -c %s "$TEST_OS")
	bytes=$(metric "$survivor_url" 'kiln_http_file_bytes_total{root="images"}')
	check "takeover: the survivor streamed the image ($bytes bytes of $size)" [ "$bytes" -ge "$size" ]

	# No event lost: the dead server's boot-device and power events, the survivor's done; then
	# the whole workflow, each event once, in order.
	python3 "$REPO/tests/e2e/event_kinds.py" m1 "$mac" <"$E2E_WORK/events.json" >"$E2E_WORK/kinds.txt"
	sed 's/^/#   /' "$E2E_WORK/kinds.txt"
	check "takeover: BMC events: the dead server's boot-device and power, the survivor's done; at the end, done (disk)" \
		[ "$(grep '^bmc\.' "$E2E_WORK/kinds.txt" | tr '\n' ' ')" = "bmc.boot-device bmc.power bmc.done bmc.done " ]
	check "takeover: workflow events: created, running, three actions started and succeeded, rebooting, succeeded" \
		[ "$(grep -E '^(workflow|action)\.' "$E2E_WORK/kinds.txt" | grep -v '^workflow.netbooting$' | tr '\n' ' ')" = \
		"workflow.created workflow.running action.started action.succeeded action.started action.succeeded action.started action.succeeded workflow.rebooting workflow.succeeded " ]
}

# ---- agent ------------------------------------------------------------------------------

# An agent already running moves to another server when its own dies: the kernel line names
# the other live servers' agent APIs (each with its own CA), the download resumes from the
# survivor's URL for the same image, and the workflow goes on without a second netboot.
case_agent() {
	setup agent 1
	local mac=52:54:00:4d:00:03 ip=10.77.0.63
	serve_a a
	nsx ip addr add "$B_IP/24" dev br0
	# b answers no DHCP: the machine netboots through a, the one that dies.
	serve_b b br0 "$B_IP" --dhcp-mode off
	cat >"$E2E_WORK/hardware.csv" <<-EOF
		hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
		m1,,,,$mac,$ip,255.255.255.0,$SERVER_IP,$SERVER_IP,,/dev/vda
	EOF
	enroll_and_import
	install m1
	# a lists its peers from the heartbeats (every 5 s): wait for one of a's beats after b's.
	local i
	for i in $(seq 100); do
		[ "$(psql_q "SELECT count(*) FROM servers a, servers b WHERE a.id = 'a' AND b.id = 'b' AND a.seen_ms > b.seen_ms + 500")" = 1 ] && break
		sleep 0.2
	done
	vm_start m1 --tap tap0 --mac "$mac" --disk "$(machine_disk m1)" --rw-disk --reboot --mem 1024
	local serial=$VM_LOG
	E2E_LOGS+=("m1 serial=$serial")

	# SIGKILL to a once the image is streaming (the agent reported bytes written).
	local written='' raw
	raw=$(cat "$E2E_ASSETS/test-os/test-os.raw.size")
	for i in $(seq 3000); do
		written=$(wf_field m1 "->'actions'->0->'progress'->>'done'")
		[ -n "$written" ] && [ "$written" -gt 0 ] && break
		sleep 0.3
	done
	local state
	state=$(wf_field m1 "->'actions'->0->>'state'")
	log "the image action is $state, ${written:-0} of $raw bytes written: SIGKILL to a"
	kill -KILL "$A_PID"
	wait "$A_PID" 2>/dev/null || true
	E2E_DATA=$B_DATA # the CLI talks to the survivor from now on
	check "agent: a died mid-stream (the image action running, ${written:-0} of $raw bytes written)" \
		[ "$state/$((${written:-0} > 0))/$((${written:-0} < raw))" = running/1/1 ]

	wait_ended "$WORKFLOW_TIMEOUT" m1 || log "the workflow did not end within $WORKFLOW_TIMEOUT s"
	succeeded_checks agent m1 "$ip"
	local b_url=http://$B_IP:$HTTP_PORT b_api=https://$B_IP:8443
	check "agent: the kernel line named b's agent API after a's" \
		grep -q "kiln-agent: working for https://$SERVER_IP:8443 (m1) at .* s; then $b_api" "$serial"
	check "agent: the agent moved to b when a stopped answering" grep -q "moving to $b_api" "$serial"
	check "agent: the download resumed from b's URL for the image" \
		grep -q "the image is now served at $b_url/images/.*: resuming there" "$serial"
	local bytes size attempts
	size=$(stat -c %s "$TEST_OS")
	bytes=$(metric "$b_url" 'kiln_http_file_bytes_total{root="images"}')
	check "agent: b streamed the rest of the image, not all of it ($bytes of $size bytes)" \
		[ "$((bytes > 0))/$((bytes < size))" = 1/1 ]
	attempts=$(wf_field m1 "->'actions'->0->>'attempts'")
	check "agent: the image action took one attempt (got $attempts)" [ "$attempts" = 1 ]
	check "agent: the machine netbooted once (one iPXE script's kernel on its console)" \
		[ "$(grep -c "kiln-agent: working for" "$serial")" = 1 ]

	events_json "$E2E_WORK/events.json"
	python3 "$REPO/tests/e2e/event_kinds.py" m1 "$mac" <"$E2E_WORK/events.json" >"$E2E_WORK/kinds.txt"
	sed 's/^/#   /' "$E2E_WORK/kinds.txt"
	check "agent: workflow events: created, running, three actions started and succeeded, rebooting, succeeded" \
		[ "$(grep -E '^(workflow|action)\.' "$E2E_WORK/kinds.txt" | grep -v '^workflow.netbooting$' | tr '\n' ' ')" = \
		"workflow.created workflow.running action.started action.succeeded action.started action.succeeded action.started action.succeeded workflow.rebooting workflow.succeeded " ]
}

CASES=(takeover segments agent)

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
