#!/usr/bin/env bash
# Issue 4 end to end, against real virtual BMCs: OpenIPMI's ipmi_sim (IPMI 2.0 lanplus) in front
# of one powered-off QEMU machine and sushy-tools' Redfish emulator in front of another, all inside
# a namespace this test creates. `kiln workflow create` → `kiln serve` sets next boot PXE and
# powers each machine on through its BMC; both netboot and reach Kiln's agent. ipmitool and curl,
# reading the same BMCs, agree with `kiln bmc status`. Faults: a BMC that does not answer ends its
# workflow failed after bounded retries; a wrong password fails at once, without retries.
#
#   tests/e2e/bmc.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

AGENT_OS=$E2E_ASSETS/agent-os
VENV=${KILN_VENV:-/opt/kiln-venv}
IPMI_PORT=9001
REDFISH_PORT=8000
BADPW_PORT=9011 # a second ipmi_sim (BMC addresses are unique in hardware.csv), never authenticated
# ipmi_sim (OpenIPMI 2.0.33) has no SHA-256 suites: ipmitool uses suite 3 (kiln falls back to it from 17).
IPMITOOL=(ipmitool -I lanplus -C 3 -N 5 -R 2 -H 127.0.0.1 -p "$IPMI_PORT" -U admin -P password)

# A template whose one action the agent fetches as soon as it is up: reaching `running` proves the
# machine netbooted Kiln's agent. (The action has no disk to work on and fails; that is not tested.)
write_template() {
	cat >"$1" <<-'EOF'
		name: reach-agent
		timeout: 30m
		actions:
		  - name: hello
		    kind: exec
		    timeout: 1m
		    with:
		      command: "true"
	EOF
}

# machine_script FILE VMDIR MAC TAP: the chassis program of one machine (tests/e2e/vm-power.sh
# with the machine's settings), as one executable path for ipmi_sim and sushy.
machine_script() {
	cat >"$1" <<-EOF
		#!/bin/sh
		VMDIR=$2 MAC=$3 TAP=$4 MEM=512 exec $REPO/tests/e2e/vm-power.sh "\$@"
	EOF
	chmod +x "$1"
}

# ipmi_sim config: one BMC on 127.0.0.1:$IPMI_PORT whose chassis is tests/e2e/vm-power.sh.
write_ipmi_sim_config() {
	local dir=$1 vmdir=$2 mac=$3 tap=$4 port=$5
	machine_script "$dir/machine.sh" "$vmdir" "$mac" "$tap"
	ipmi_sim_files "$dir" "$port" "$dir/machine.sh" "password" kiln-e2e
	mkdir -p "$dir/state"
}

write_sushy_config() {
	local file=$1 vmdir=$2 mac=$3 tap=$4
	machine_script "$E2E_WORK/redfish-machine.sh" "$vmdir" "$mac" "$tap"
	cat >"$file" <<-EOF
		SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
		SUSHY_EMULATOR_LISTEN_PORT = $REDFISH_PORT
		SUSHY_EMULATOR_FAKE_DRIVER = True
		SUSHY_EMULATOR_STATE_DIR = '$E2E_WORK/sushy-state'
		SUSHY_EMULATOR_AUTH_FILE = '$E2E_WORK/htpasswd'
		KILN_CHASSIS_CONTROL = '$E2E_WORK/redfish-machine.sh'
		SUSHY_EMULATOR_FAKE_SYSTEMS = [{
		    'uuid': '27946b59-9e44-4fa7-8e91-f3527a1ef094',
		    'name': 'rf1',
		    'power_state': 'Off',
		    'nics': [{'mac': '$mac', 'ip': '10.77.0.62'}],
		}]
	EOF
	# Basic auth: admin / password (bcrypt, as sushy-tools' htpasswd reader accepts).
	"$VENV/bin/python" -c 'import bcrypt,sys; print("admin:" + bcrypt.hashpw(b"password", bcrypt.gensalt(rounds=4)).decode())' \
		>"$E2E_WORK/htpasswd"
}

# workflow_state HOST
workflow_state() {
	kiln_cli workflow show "$1" -o json 2>/dev/null |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null || echo unknown
}

# wait_state HOST TIMEOUT STATE...: until the workflow is in one of STATEs (or ended).
wait_state() {
	local host=$1 timeout=$2 deadline s want
	shift 2
	deadline=$((SECONDS + timeout))
	while [ "$SECONDS" -lt "$deadline" ]; do
		s=$(workflow_state "$host")
		for want in "$@"; do [ "$s" = "$want" ] && { echo "$s"; return 0; }; done
		case $s in succeeded | failed | timed-out) echo "$s"; return 0 ;; esac
		sleep 2
	done
	echo "$s"
}

# kiln_bmc_field HOST FIELD OP: a field of `kiln bmc OP HOST -o json` (run in the namespace,
# where the BMCs are).
kiln_bmc_field() {
	{ kiln_cli bmc "$3" "$1" -o json 2>/dev/null || true; } |
		python3 -c "import json,sys; print(json.load(sys.stdin)[0]['$2'])" 2>/dev/null || echo "?"
}

main() {
	e2e_setup bmc
	command -v ipmi_sim >/dev/null || die "ipmi_sim missing: apt-get install openipmi"
	command -v ipmitool >/dev/null || die "ipmitool missing: apt-get install ipmitool"
	[ -x "$VENV/bin/python" ] || die "sushy-tools venv missing: python3 -m venv $VENV && $VENV/bin/pip install sushy-tools"
	ns_create 2
	local mac_i=52:54:00:4b:00:01 mac_r=52:54:00:4b:00:02
	local vm_i=$E2E_WORK/vm-ipmi vm_r=$E2E_WORK/vm-redfish
	E2E_PIDFILES+=("$vm_i/qemu.pid" "$vm_r/qemu.pid")

	# hardware.csv: two machines behind virtual BMCs, one whose BMC is not there, one with a
	# wrong password on the IPMI BMC.
	cat >"$E2E_WORK/hardware.csv" <<-EOF
		hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
		m-ipmi,ipmi://127.0.0.1:$IPMI_PORT,admin,password,$mac_i,10.77.0.61,255.255.255.0,$SERVER_IP,$SERVER_IP,e2e=bmc|kiln.dev/boot-mode=legacy,/dev/vda
		m-redfish,redfish+http://127.0.0.1:$REDFISH_PORT,admin,password,$mac_r,10.77.0.62,255.255.255.0,$SERVER_IP,$SERVER_IP,e2e=bmc,/dev/vda
		m-gone,ipmi://127.0.0.1:9,admin,password,52:54:00:4b:00:03,10.77.0.63,255.255.255.0,$SERVER_IP,$SERVER_IP,e2e=fault,/dev/vda
		m-badpw,ipmi://127.0.0.1:$BADPW_PORT,admin,not-the-password,52:54:00:4b:00:04,10.77.0.64,255.255.255.0,$SERVER_IP,$SERVER_IP,e2e=fault,/dev/vda
	EOF
	# The CLI is the admin API's client: the server first (no workflow yet: it leaves the
	# BMCs alone), then the enrolment.
	KILN_ARTIFACTS=$AGENT_OS kiln_serve
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null || die "enrolment failed"

	mkdir -p "$E2E_WORK/ipmi"
	write_ipmi_sim_config "$E2E_WORK/ipmi" "$vm_i" "$mac_i" tap0 "$IPMI_PORT"
	ip netns exec "$E2E_NS" ipmi_sim -c "$E2E_WORK/ipmi/lan.conf" -f "$E2E_WORK/ipmi/bmc.emu" \
		-s "$E2E_WORK/ipmi/state" -n </dev/null >"$E2E_WORK/ipmi_sim.log" 2>&1 &
	E2E_PIDS+=("$!")
	mkdir -p "$E2E_WORK/ipmi2"
	write_ipmi_sim_config "$E2E_WORK/ipmi2" "$E2E_WORK/vm-unused" 52:54:00:4b:00:04 tap-none "$BADPW_PORT"
	ip netns exec "$E2E_NS" ipmi_sim -c "$E2E_WORK/ipmi2/lan.conf" -f "$E2E_WORK/ipmi2/bmc.emu" \
		-s "$E2E_WORK/ipmi2/state" -n </dev/null >"$E2E_WORK/ipmi_sim2.log" 2>&1 &
	E2E_PIDS+=("$!")
	E2E_LOGS+=("ipmi_sim=$E2E_WORK/ipmi_sim.log" "vm-ipmi ctl=$vm_i/ctl.log" "vm-ipmi serial=$vm_i/serial.log")

	write_sushy_config "$E2E_WORK/sushy.conf" "$vm_r" "$mac_r" tap1
	ip netns exec "$E2E_NS" "$VENV/bin/python" "$REPO/tests/e2e/sushy_qemu.py" --config "$E2E_WORK/sushy.conf" \
		</dev/null >"$E2E_WORK/sushy.log" 2>&1 &
	E2E_PIDS+=("$!")
	E2E_LOGS+=("sushy=$E2E_WORK/sushy.log" "vm-redfish ctl=$vm_r/ctl.log" "vm-redfish serial=$vm_r/serial.log")

	local i
	for i in $(seq 100); do
		nsx "${IPMITOOL[@]}" chassis power status >/dev/null 2>&1 &&
			nsx curl -s -o /dev/null -u admin:password "http://127.0.0.1:$REDFISH_PORT/redfish/v1/Systems" && break
		sleep 0.2
	done

	check "before: ipmitool says the IPMI machine is off" \
		grep -q 'is off' <(nsx "${IPMITOOL[@]}" chassis power status)
	check "before: kiln bmc status agrees (off)" [ "$(kiln_bmc_field m-ipmi result status)" = off ]
	check "before: kiln bmc status says the Redfish machine is off" [ "$(kiln_bmc_field m-redfish result status)" = off ]

	write_template "$E2E_WORK/reach-agent.yaml"
	kiln workflow create --template "$E2E_WORK/reach-agent.yaml" --selector e2e=bmc | sed 's/^/# /'
	kiln workflow create --template "$E2E_WORK/reach-agent.yaml" --selector e2e=fault | sed 's/^/# /'

	local s_i s_r
	s_i=$(wait_state m-ipmi 300 running)
	s_r=$(wait_state m-redfish 300 running)
	# The one action fails at once without a disk; the machines stay powered.
	kiln events m-ipmi | grep -E 'bmc|workflow' | sed 's/^/#   /' || true
	kiln events m-redfish | grep -E 'bmc|workflow' | sed 's/^/#   /' || true
	check "ipmi: powered on over IPMI (lanplus), netbooted, reached the agent: it fetched its first action (workflow $s_i)" \
		grep -q 'action.started' <(kiln events m-ipmi)
	check "ipmi: kiln set next boot PXE, found the machine off and powered it on (events)" \
		grep -q 'was off: powered on' <(kiln events m-ipmi)
	check "redfish: powered on over Redfish, netbooted, reached the agent: it fetched its first action (workflow $s_r)" \
		grep -q 'action.started' <(kiln events m-redfish)
	check "ipmi: kiln set next boot PXE first (events)" \
		grep -q 'next boot: pxe (once, legacy)' <(kiln events m-ipmi)
	check "redfish: kiln set next boot PXE first, leaving the mode as the system has it (no boot-mode label; events)" \
		grep -q 'next boot: pxe (once, mode unchanged)' <(kiln events m-redfish)
	local ipmitool_says kiln_says rf_state
	ipmitool_says=$(nsx "${IPMITOOL[@]}" chassis power status | awk '{print $NF}')
	kiln_says=$(kiln_bmc_field m-ipmi result status)
	check "ipmi: ipmitool and kiln bmc status agree: $ipmitool_says / $kiln_says" \
		[ "$ipmitool_says/$kiln_says" = on/on ]
	rf_state=$(nsx curl -s -L -u admin:password "http://127.0.0.1:$REDFISH_PORT/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["PowerState"])')
	kiln_says=$(kiln_bmc_field m-redfish result status)
	check "redfish: curl and kiln bmc status agree: $rf_state / $kiln_says" \
		[ "$rf_state/$kiln_says" = On/on ]

	# The workflow ends (its one action has no disk to work on): kiln points the machine back at
	# its disk through the BMC, and ipmitool reads that boot device.
	local i
	for i in $(seq 60); do
		grep -q 'next boot from disk' <(kiln events m-ipmi) && break
		sleep 2
	done
	check "ipmi: at the end, next boot from disk; ipmitool reads it" \
		grep -q 'Hard-Drive' <(nsx "${IPMITOOL[@]}" chassis bootparam get 5)

	local s_bad s_gone msg
	s_bad=$(wait_state m-badpw 120)
	msg=$(kiln_cli workflow show m-badpw -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["message"])')
	check "wrong password: the workflow failed at once, not retried ($s_bad: $msg)" \
		[ "$s_bad|$(grep -c 'authentication' <<<"$msg")|$(grep -c 'not retried' <<<"$msg")" = "failed|1|1" ]
	local leaked
	leaked=$({ kiln_cli events --last 10000; kiln_cli workflow show m-badpw -o json; cat "$KILN_LOG"; } | grep -c 'not-the-password' || true)
	check "wrong password: the password never appears in events, workflow output or kiln's log ($leaked times)" \
		[ "$leaked" = 0 ]
	s_gone=$(wait_state m-gone 400)
	msg=$(kiln_cli workflow show m-gone -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["message"])')
	check "unreachable BMC: bounded retries, then failed ($s_gone: $msg)" \
		[ "$s_gone|$(grep -c 'after 5 attempts' <<<"$msg")" = "failed|1" ]
	check "unreachable BMC: kiln bmc status says unreachable" \
		[ "$(kiln_bmc_field m-gone error status)" = unreachable ]
}

out=$( (main) 2>&1) || true
printf '%s\n' "$out"
passed=$(grep -c '^ok - ' <<<"$out" || true)
failed=$(grep -c '^not ok - ' <<<"$out" || true)
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
