#!/usr/bin/env bash
# Issue 14 point 4 end to end: `kiln preflight` before anything is powered, against real virtual
# BMCs inside a namespace this test creates — OpenIPMI's ipmi_sim (one with the right password,
# one given a wrong one), sushy-tools' Redfish emulator, and a BMC address where nothing answers —
# an image that was never imported, and a second DHCP server (dnsmasq on another host of the same
# segment: a second namespace joined to br0). The table and `-o json` both name each failing row
# FILE:LINE; the exit status is non-zero when a check fails, zero when none does. `kiln serve`
# refuses to start without its artifacts directory.
#
#   tests/e2e/preflight.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

VENV=${KILN_VENV:-/opt/kiln-venv}
IPMI_PORT=9021
BADPW_PORT=9022
REDFISH_PORT=8021
ROGUE_IP=10.77.0.250
ROGUE_NS=
ROGUE_PID=

# A chassis that is off and stays off: the preflight only reads (any `set` is logged, and the
# test checks that none came).
write_chassis() {
	cat >"$1" <<-EOF
		#!/bin/sh
		echo "\$*" >>"$E2E_WORK/chassis.log"
		[ "\$2" = get ] || exit 0
		shift 2
		for item in "\$@"; do
		  case \$item in
		    power) echo "power:0" ;;
		    boot) echo "boot:default" ;;
		  esac
		done
	EOF
	chmod +x "$1"
}

# ipmi_sim DIR PORT: one BMC on 127.0.0.1:PORT, user admin / password, in front of the chassis.
start_ipmi_sim() {
	local dir=$1 port=$2
	mkdir -p "$dir/state"
	ipmi_sim_files "$dir" "$port" "$E2E_WORK/chassis.sh" "password" kiln-preflight
	ip netns exec "$E2E_NS" ipmi_sim -c "$dir/lan.conf" -f "$dir/bmc.emu" -s "$dir/state" -n \
		</dev/null >"$dir/ipmi_sim.log" 2>&1 &
	E2E_PIDS+=("$!")
	E2E_LOGS+=("ipmi_sim $port=$dir/ipmi_sim.log")
}

start_sushy() {
	cat >"$E2E_WORK/sushy.conf" <<-EOF
		SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
		SUSHY_EMULATOR_LISTEN_PORT = $REDFISH_PORT
		SUSHY_EMULATOR_FAKE_DRIVER = True
		SUSHY_EMULATOR_STATE_DIR = '$E2E_WORK/sushy-state'
		SUSHY_EMULATOR_AUTH_FILE = '$E2E_WORK/htpasswd'
		KILN_CHASSIS_CONTROL = '$E2E_WORK/chassis.sh'
		SUSHY_EMULATOR_FAKE_SYSTEMS = [{
		    'uuid': '5d3c1a52-6f0e-4a55-9a3e-4e1b2f6d7c01',
		    'name': 'rf1',
		    'power_state': 'Off',
		    'nics': [{'mac': '52:54:00:9f:00:03', 'ip': '10.77.0.73'}],
		}]
	EOF
	"$VENV/bin/python" -c 'import bcrypt; print("admin:" + bcrypt.hashpw(b"password", bcrypt.gensalt(rounds=4)).decode())' \
		>"$E2E_WORK/htpasswd"
	ip netns exec "$E2E_NS" "$VENV/bin/python" "$REPO/tests/e2e/sushy_qemu.py" --config "$E2E_WORK/sushy.conf" \
		</dev/null >"$E2E_WORK/sushy.log" 2>&1 &
	E2E_PIDS+=("$!")
	E2E_LOGS+=("sushy=$E2E_WORK/sushy.log")
}

# Another host on the segment: a namespace of its own, joined to br0 by a veth pair, running a
# plain DHCP server (dnsmasq) at $ROGUE_IP.
start_rogue_dhcp() {
	ROGUE_NS=$E2E_NS-rogue
	ip netns add "$ROGUE_NS"
	ip -n "$ROGUE_NS" link set lo up
	ip -n "$E2E_NS" link add rg0 type veth peer name rg0p
	ip -n "$E2E_NS" link set rg0p netns "$ROGUE_NS"
	ip -n "$E2E_NS" link set rg0 master br0
	ip -n "$E2E_NS" link set rg0 up
	ip -n "$ROGUE_NS" addr add "$ROGUE_IP/24" dev rg0p
	ip -n "$ROGUE_NS" link set rg0p up
	ip netns exec "$ROGUE_NS" dnsmasq --no-daemon --conf-file=/dev/null --port=0 \
		--interface=rg0p --bind-interfaces --dhcp-range=10.77.0.150,10.77.0.160,255.255.255.0,10m \
		--dhcp-leasefile="$E2E_WORK/rogue.leases" --no-ping --log-dhcp --log-facility=- \
		--pid-file= --user=root </dev/null >"$E2E_WORK/rogue-dnsmasq.log" 2>&1 &
	ROGUE_PID=$!
	E2E_LOGS+=("rogue dnsmasq=$E2E_WORK/rogue-dnsmasq.log")
	sleep 0.5
	kill -0 "$ROGUE_PID" 2>/dev/null || die "dnsmasq exited at start"
}

preflight_cleanup() {
	local rc=$?
	[ -n "$ROGUE_PID" ] && stop_pid "$ROGUE_PID"
	[ -n "$ROGUE_NS" ] && ip netns del "$ROGUE_NS" 2>/dev/null
	(exit "$rc")
	e2e_cleanup
}

# json_rows FILE CHECK: "machine|source|status" of every row of CHECK in a JSON report.
json_rows() {
	python3 -c '
import json, sys
for c in json.load(open(sys.argv[1]))["checks"]:
    if c["check"] == sys.argv[2]:
        print("%s|%s|%s" % (c.get("machine", "-"), c.get("source", "-").rsplit("/", 1)[-1], c["status"]))
' "$1" "$2"
}

main() {
	e2e_setup preflight
	trap preflight_cleanup EXIT
	command -v ipmi_sim >/dev/null || die "ipmi_sim missing: apt-get install openipmi"
	command -v dnsmasq >/dev/null || die "dnsmasq missing: apt-get install dnsmasq-base"
	[ -x "$VENV/bin/python" ] || die "sushy-tools venv missing: python3 -m venv $VENV && $VENV/bin/pip install sushy-tools"
	ns_create 0

	# kiln serve checks its own set-up at start: no artifacts directory, no server.
	local out rc=0
	out=$(ip netns exec "$E2E_NS" "$KILN_BIN" serve --data-dir "$E2E_WORK/data-refused" --interface br0 \
		--address "$SERVER_IP" --tftp-root "$E2E_TFTP_ROOT" --artifacts "$E2E_WORK/no-such-dir" 2>&1) || rc=$?
	local refused=no
	[ "$rc" -ne 0 ] && grep -q -- "--artifacts $E2E_WORK/no-such-dir: no such directory" <<<"$out" && refused=yes
	printf '%s\n' "$out" | tail -n 2 | sed 's/^/#   /'
	check "kiln serve refuses to start without its --artifacts directory (rc=$rc)" [ "$refused" = yes ]

	write_chassis "$E2E_WORK/chassis.sh"
	start_ipmi_sim "$E2E_WORK/ipmi-good" "$IPMI_PORT"
	start_ipmi_sim "$E2E_WORK/ipmi-badpw" "$BADPW_PORT"
	start_sushy
	KILN_ARTIFACTS=$E2E_ASSETS/agent-os kiln_serve

	# Line 2: good IPMI; 3: wrong password; 4: nothing listening there (refused); 5: Redfish;
	# 6: an address on the segment where no host answers at all (silence, not a refusal).
	cat >"$E2E_WORK/hardware.csv" <<-EOF
		hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
		m-ipmi,ipmi://127.0.0.1:$IPMI_PORT,admin,password,52:54:00:9f:00:01,10.77.0.71,255.255.255.0,$SERVER_IP,$SERVER_IP,pf=good,/dev/vda
		m-badpw,ipmi://127.0.0.1:$BADPW_PORT,admin,not-the-password,52:54:00:9f:00:02,10.77.0.72,255.255.255.0,$SERVER_IP,$SERVER_IP,pf=bad,/dev/vda
		m-gone,ipmi://127.0.0.1:9,admin,password,52:54:00:9f:00:04,10.77.0.74,255.255.255.0,$SERVER_IP,$SERVER_IP,pf=bad,/dev/vda
		m-redfish,redfish+http://127.0.0.1:$REDFISH_PORT,admin,password,52:54:00:9f:00:03,10.77.0.73,255.255.255.0,$SERVER_IP,$SERVER_IP,pf=good,/dev/vda
		m-silent,ipmi://10.77.0.99,admin,password,52:54:00:9f:00:05,10.77.0.75,255.255.255.0,$SERVER_IP,$SERVER_IP,pf=bad,/dev/vda
	EOF
	local _
	for _ in $(seq 100); do
		nsx curl -s -o /dev/null -u admin:password "http://127.0.0.1:$REDFISH_PORT/redfish/v1/Systems" && break
		sleep 0.2
	done

	start_rogue_dhcp

	# The whole file, a template naming an image never imported, and an image by name.
	local table rc_table=0 rc_json=0 started elapsed
	started=$SECONDS
	table=$(kiln_cli preflight "$E2E_WORK/hardware.csv" --template "$REPO/workflows/debian-test-os.yaml" \
		--image no-such-image 2>"$E2E_WORK/preflight.err") || rc_table=$?
	elapsed=$((SECONDS - started))
	printf '%s\n' "$table" | sed 's/^/#   /'
	kiln_cli preflight "$E2E_WORK/hardware.csv" --template "$REPO/workflows/debian-test-os.yaml" \
		--image no-such-image -o json >"$E2E_WORK/preflight.json" 2>>"$E2E_WORK/preflight.err" || rc_json=$?
	check "preflight exits non-zero when a check fails (table $rc_table, json $rc_json)" \
		[ $((rc_table != 0 && rc_json != 0)) = 1 ]
	check "a silent BMC costs its own bounded timeout (20 s), not the run's: $elapsed s" [ "$elapsed" -lt 45 ]

	check "table: the wrong password fails bmc_credentials, named hardware.csv:3" \
		grep -Eq '^FAIL +bmc_credentials +m-badpw +[^ ]*hardware\.csv:3 +.*authentication' <<<"$table"
	check "table: the BMC where nothing listens fails bmc_reachable, named hardware.csv:4" \
		grep -Eq '^FAIL +bmc_reachable +m-gone +[^ ]*hardware\.csv:4 ' <<<"$table"
	check "table: the BMC address where no host answers fails bmc_reachable, named hardware.csv:6" \
		grep -Eq '^FAIL +bmc_reachable +m-silent +[^ ]*hardware\.csv:6 ' <<<"$table"
	check "table: the missing image fails, named by the template's line" \
		grep -Eq '^FAIL +image +- +[^ ]*debian-test-os\.yaml:[0-9]+ +OS image "test-os": not an imported image' <<<"$table"
	check "table: the second DHCP server is reported with what it offered, and proxy mode suggested" \
		grep -Eq "^FAIL +other_dhcp +- +- +$ROGUE_IP offers 10\.77\.0\.1[56][0-9]: .*--dhcp-mode proxy" <<<"$table"
	check "table: the good IPMI BMC: cipher suite, power state, PXE override" \
		[ "$(grep -Ec '^ok +(bmc_protocol +m-ipmi .*IPMI cipher suite|power_state +m-ipmi .* off$|boot_override +m-ipmi .*PXE offered)' <<<"$table")" = 3 ]
	check "table: the Redfish BMC: its version, power state, PXE among the allowed targets" \
		[ "$(grep -Ec '^ok +(bmc_protocol +m-redfish .*Redfish 1\.|power_state +m-redfish .* off$|boot_override +m-redfish .*PXE offered)' <<<"$table")" = 3 ]
	check "table: artifacts and interface ok" \
		[ "$(grep -Ec '^ok +(artifacts|interface) ' <<<"$table")" = 2 ]

	check "json: the same failing rows, located" \
		[ "$(json_rows "$E2E_WORK/preflight.json" bmc_credentials | grep m-badpw)|$(json_rows "$E2E_WORK/preflight.json" bmc_reachable | grep m-gone)" = \
		"m-badpw|hardware.csv:3|fail|m-gone|hardware.csv:4|fail" ]
	check "json: the image rows fail (template's test-os and --image no-such-image)" \
		[ "$(json_rows "$E2E_WORK/preflight.json" image | cut -d'|' -f2,3 | tr '\n' ' ')" = "debian-test-os.yaml:13|fail -|fail " ]
	check "json: the other DHCP server fails" \
		[ "$(json_rows "$E2E_WORK/preflight.json" other_dhcp)" = "-|-|fail" ]
	local leaked
	leaked=$({ printf '%s' "$table"; cat "$E2E_WORK/preflight.json" "$E2E_WORK/preflight.err" "$KILN_LOG"; } | grep -c 'not-the-password' || true)
	check "the wrong password never appears in output or kiln's log ($leaked times)" [ "$leaked" = 0 ]
	check "dnsmasq saw the probe's DISCOVER from Kiln's probe MAC (0a:6b:69:6c:6e:…)" \
		grep -q 'DHCPDISCOVER(rg0p) 0a:6b:69:6c:6e:' "$E2E_WORK/rogue-dnsmasq.log"

	# Without the other DHCP server, enrolled machines that are ready pass: exit 0.
	stop_pid "$ROGUE_PID"
	ROGUE_PID=
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null || die "enrolment failed"
	local rc_good=0
	kiln_cli preflight --selector pf=good >"$E2E_WORK/good.txt" 2>&1 || rc_good=$?
	sed 's/^/#   /' "$E2E_WORK/good.txt"
	check "the good machines pass with no other DHCP server: exit 0 ($rc_good)" [ "$rc_good" = 0 ]
	check "... and the probe found none" grep -Eq '^ok +other_dhcp .*no other DHCP server answered' "$E2E_WORK/good.txt"
	check "nothing was powered or changed: the chassis was only read" \
		[ "$(grep -vc ' get ' "$E2E_WORK/chassis.log" || true)" = 0 ]
}

out=$( (main) 2>&1) || true
printf '%s\n' "$out"
passed=$(grep -c '^ok - ' <<<"$out" || true)
failed=$(grep -c '^not ok - ' <<<"$out" || true)
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
