#!/usr/bin/env bash
# Issue 11 end to end: a hostile host on the provisioning network. While a real QEMU machine
# (the victim, behind an ipmi_sim BMC) is provisioned with the test OS workflow, a second
# namespace on the same bridge (the attacker, 10.77.0.66, no reserved address) tries every
# attack of the threat model (docs/threat-model.md) with curl and tests/e2e/attacker.py:
#   (a) the victim's iPXE script: no token in it, only the public CA fingerprint
#   (b) claiming the victim's agent credential: 403 (reservation mode), before and after the
#       victim's agent claimed; the victim still provisions
#   (c) made-up Bearer tokens on /v1/agent/next, /report, /seed: 401
#   (d) no credential to steal: the plain-HTTP listener has no agent routes (404/421), the old
#       token-in-path routes are gone, the agent API is TLS with the CA on the command line
#   (e) forged phone-home and failure reports for the victim's workflow: refused, state unchanged
#       (tried early and again in the `rebooting` window, where a signed one would count)
#   (f) a kubeconfig upload: no such route (404)
#   (g) 2,000 idle TCP connections to HTTP: /healthz answers, TFTP answers, the victim goes on
#   (h) 50 TFTP read requests at once from one address: at most the per-source cap served
#   (i) an event flood (1,100 fetches of the victim's script, 1,100 of random MACs) and escape
#       sequences in HTTP paths and TFTP file names: the victim's workflow and BMC history stays,
#       `kiln events` prints no raw ESC
#   (j) a YAML alias bomb as a cluster spec: a clear error in bounded memory (ulimit -v)
# and at the end: the victim's workflow succeeded (phoned home from its own address), every
# refused attempt left one event naming the attacker, and no event, log, output or answer the
# attacker got holds a 64-hex secret, a private key or the BMC password.
#
# Assertions are on outcomes; the waits are bounded and only decide how long to look.
#
#   tests/e2e/attacker.sh
# shellcheck disable=SC2016 # python3 -c '...': the single quotes are meant
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

AGENT_OS=$E2E_ASSETS/agent-os
TEST_OS=$E2E_ASSETS/test-os/test-os.raw.zst
ATTACKER=$REPO/tests/e2e/attacker.py

VICTIM=victim
VICTIM_MAC=52:54:00:a7:7a:01
VICTIM_IP=10.77.0.57
ATT_IP=10.77.0.66
IPMI_PORT=9001
BMC_PASSWORD=KilnE2eBmcPw7q31 # 16 bytes (IPMI 1.5 limit); must never reach the attacker, events or logs
IPMITOOL=(ipmitool -I lanplus -C 3 -N 5 -R 2 -H 127.0.0.1 -p "$IPMI_PORT" -U admin -P "$BMC_PASSWORD")

ATT_NS=
ATT_PIDS=() # the attacker's background processes
ATT_SEEN= # every answer the attacker received, scanned for secrets at the end
API_URL=  # the agent API (https) as the victim's kernel command line names it
CA_FP=    # kiln.ca-sha256= from the victim's kernel command line

# ---- the attacker's namespace -------------------------------------------------------------

# A second namespace with a veth on the case's bridge: another host on the same segment.
attacker_ns() {
	ATT_NS=$E2E_NS-attacker
	ip netns add "$ATT_NS"
	ip -n "$E2E_NS" link add att0 type veth peer name att0p
	ip -n "$E2E_NS" link set att0p netns "$ATT_NS"
	ip -n "$E2E_NS" link set att0 master br0
	ip -n "$E2E_NS" link set att0 up
	ip -n "$ATT_NS" link set lo up
	ip netns exec "$ATT_NS" sysctl -qw net.ipv6.conf.att0p.disable_ipv6=1
	ip -n "$ATT_NS" addr add "$ATT_IP/$SUBNET_PREFIX" dev att0p
	ip -n "$ATT_NS" link set att0p up
}

# The attacker's processes (by PID) and namespace, then the case's own (e2e_cleanup).
attacker_cleanup() {
	local rc=$? pid
	set +e # clean up as much as possible, whatever fails
	for pid in "${ATT_PIDS[@]}"; do stop_pid "$pid"; done
	if [ -n "$ATT_NS" ] && ip netns list | awk '{print $1}' | grep -qxF -- "$ATT_NS"; then
		ip netns del "$ATT_NS" || log "could not delete namespace $ATT_NS"
	fi
	(exit "$rc")
	e2e_cleanup
}

att() { ip netns exec "$ATT_NS" "$@"; }

# att_http METHOD URL [CURL ARGS...]: one request from the attacker; prints the status code
# ("000" when no answer) and keeps the body (and in $E2E_WORK/last-body).
att_http() {
	local method=$1 url=$2 code
	shift 2
	code=$(att curl --noproxy '*' -k -g --path-as-is -s -o "$E2E_WORK/last-body" -w '%{http_code}' \
		--max-time 15 -X "$method" "$@" "$url" 2>/dev/null) || true
	{
		# the request line with the attacker's own made-up 64-hex values masked: the scan at
		# the end looks for secrets in what came back
		printf '== %s %s -> %s\n' "$method" "$(sed -E 's/[0-9a-fA-F]{64}/<made-up>/g' <<<"$url")" "${code:-000}"
		cat "$E2E_WORK/last-body" 2>/dev/null || true
		echo
	} >>"$ATT_SEEN"
	echo "${code:-000}"
}

# code_in CODE 'A|B|…'
code_in() {
	local want
	local IFS='|'
	for want in $2; do [ "$1" = "$want" ] && return 0; done
	return 1
}

random_hex64() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }

# ---- events -------------------------------------------------------------------------------

events_json() { kiln_cli events --last 1000000 -o json 2>/dev/null || true; }

# ev_mark: the newest event id (events after it are the next attempt's).
ev_mark() {
	events_json | python3 -c '
import json, sys
ids = [json.loads(l)["id"] for l in sys.stdin if l.strip()]
print(max(ids) if ids else 0)'
}

# count_events MARK KIND: events after MARK of KIND that name the attacker (address or detail).
count_events() {
	events_json | python3 -c '
import json, sys
mark, kind, ip = int(sys.argv[1]), sys.argv[2], sys.argv[3]
n = 0
for line in sys.stdin:
    if not line.strip():
        continue
    e = json.loads(line)
    if e["id"] > mark and e["kind"] == kind and (e.get("ip") == ip or ip in e.get("detail", "")):
        n += 1
print(n)' "$1" "$2" "$ATT_IP"
}

# refused_since MARK KIND: like count_events, once the event writer caught up (bounded wait).
refused_since() {
	local n=0 i
	for i in $(seq 25); do
		n=$(count_events "$1" "$2")
		[ "$n" -gt 0 ] && break
		sleep 0.2
	done
	if [ "$n" -gt 0 ]; then
		sleep 1
		n=$(count_events "$1" "$2")
	fi
	echo "$n"
}

# refused_attempt NAME 'CODES' METHOD URL [CURL ARGS...]: one request from the attacker; its
# status must be one of CODES and exactly one http.refused event must name the attacker.
refused_attempt() {
	local name=$1 want=$2 method=$3 url=$4 mark code n
	shift 4
	mark=$(ev_mark)
	code=$(att_http "$method" "$url" "$@")
	check "$name: refused with $want (got $code: $(head -c 160 "$E2E_WORK/last-body" | tr -d '\n'))" \
		code_in "$code" "$want"
	n=$(refused_since "$mark" http.refused)
	check "$name: one http.refused event names the attacker $ATT_IP (got $n)" [ "$n" = 1 ]
}

# ---- the victim ---------------------------------------------------------------------------

workflow_json() { kiln_cli workflow show "$VICTIM" -o json 2>/dev/null || true; }

wf_field() {
	workflow_json | python3 -c '
import json, sys
w = json.load(sys.stdin)
if sys.argv[1] == "progress":
    a = w["actions"][0]
    print((a.get("progress") or {}).get("done", 0))
elif sys.argv[1] == "where":  # anything that moves while the machine works
    i = [a.get("state") for a in w["actions"]]
    p = [(a.get("progress") or {}).get("done", 0) for a in w["actions"]]
    print(w["state"], i, p)
else:
    print(w[sys.argv[1]])' "$1" 2>/dev/null || echo unknown
}

terminal() { case $1 in succeeded | failed | timed-out) return 0 ;; esac; return 1; }
is_state() { [ "$(wf_field state)" = "$1" ]; }
moved_from() { [ "$(wf_field where)" != "$1" ]; }
no_esc_in_file() { ! grep -q $'\x1b' "$1"; }
no_esc_in() { ! grep -q $'\x1b' <<<"$1"; }

# wait_until TIMEOUT CMD...: poll CMD until it succeeds or the workflow ended; 0 when CMD did.
wait_until() {
	local deadline=$((SECONDS + $1))
	shift
	while [ "$SECONDS" -lt "$deadline" ]; do
		"$@" && return 0
		terminal "$(wf_field state)" && return 1
		sleep 1
	done
	return 1
}

streaming() { [ "$(wf_field progress)" -gt 0 ] 2>/dev/null; }

# The victim's chassis behind ipmi_sim: tests/e2e/vm-power.sh with a disk (as bmc.sh, plus DISK).
start_bmc() {
	local dir=$E2E_WORK/ipmi vmdir=$E2E_WORK/vm-victim
	mkdir -p "$dir/state" "$vmdir"
	truncate -s 3G "$E2E_WORK/disk.raw"
	cat >"$dir/machine.sh" <<-EOF
		#!/bin/sh
		VMDIR=$vmdir MAC=$VICTIM_MAC TAP=tap0 MEM=1024 DISK=$E2E_WORK/disk.raw exec $REPO/tests/e2e/vm-power.sh "\$@"
	EOF
	chmod +x "$dir/machine.sh"
	ipmi_sim_files "$dir" "$IPMI_PORT" "$dir/machine.sh" "$BMC_PASSWORD" kiln-e2e-attacker
	E2E_PIDFILES+=("$vmdir/qemu.pid")
	ip netns exec "$E2E_NS" ipmi_sim -c "$dir/lan.conf" -f "$dir/bmc.emu" -s "$dir/state" -n \
		</dev/null >"$E2E_WORK/ipmi_sim.log" 2>&1 &
	E2E_PIDS+=("$!")
	E2E_LOGS+=("ipmi_sim=$E2E_WORK/ipmi_sim.log" "victim ctl=$vmdir/ctl.log" "victim serial=$vmdir/serial.log")
	local i
	for i in $(seq 100); do
		nsx "${IPMITOOL[@]}" chassis power status >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	die "ipmi_sim did not answer on 127.0.0.1:$IPMI_PORT"
}

# ---- the attacks --------------------------------------------------------------------------

# (a) The victim's script, as any host that saw its MAC in a DHCP broadcast can fetch it.
attack_script() {
	local code script others i
	# kiln serve reloads the inventory every half second: the netboot flag that workflow create
	# set shows within a few fetches.
	for i in $(seq 20); do
		code=$(att_http GET "$KILN_URL/ipxe/$VICTIM_MAC/boot.ipxe")
		script=$(cat "$E2E_WORK/last-body")
		grep -q '^kernel ' <<<"$script" && break
		sleep 0.5
	done
	printf '%s\n' "$script" | sed 's/^/#   script: /'
	check "script: the attacker gets the victim's netboot script (200, kernel line) (got $code)" \
		bash -c '[ "$1" = 200 ] && grep -q "^kernel " <<<"$2"' _ "$code" "$script"
	check "script: no kiln.token in it" bash -c '! grep -q "kiln.token" <<<"$1"' _ "$script"
	CA_FP=$(sed -n 's/.*kiln\.ca-sha256=\([0-9a-f]\{64\}\).*/\1/p' <<<"$script" | head -n 1)
	API_URL=$(sed -n 's/.*kiln\.api=\(https:\/\/[^[:space:]]*\).*/\1/p' <<<"$script" | head -n 1)
	API_URL=${API_URL%/}
	check "script: the kernel command line names the agent API over TLS (kiln.api=$API_URL)" \
		bash -c '[[ $1 == https://* ]]' _ "$API_URL"
	check "script: the kernel command line carries the CA fingerprint (kiln.ca-sha256=$CA_FP)" [ -n "$CA_FP" ]
	others=$(grep -oE '[0-9a-fA-F]{64}' <<<"$script" | grep -vxF "${CA_FP:-none}" | sort -u | tr '\n' ' ' || true)
	check "script: no 64-hex string other than the CA fingerprint (found: ${others:-none})" [ -z "$others" ]
	if [ -z "$API_URL" ]; then
		log "no kiln.api= on the command line: the agent API checks below go to $KILN_URL"
		API_URL=$KILN_URL
	fi
}

# (b) Claiming the victim's credential from the attacker's address.
attack_claim() {
	local when=$1
	refused_attempt "claim (${when//-/ })" 403 POST "$API_URL/v1/agent/claim" \
		-H 'Content-Type: application/json' \
		--data "{\"mac\":\"$VICTIM_MAC\",\"run\":\"attacker-$when-$$\"}"
	check "claim (${when//-/ }): the refusal carries no 64-hex string" \
		bash -c '! grep -qE "[0-9a-f]{64}" "$1"' _ "$E2E_WORK/last-body"
}

# (c) Made-up credentials on every agent route.
attack_bearer() {
	local token
	token=$(random_hex64)
	refused_attempt "bearer next" 401 GET "$API_URL/v1/agent/next?run=attacker-$$" \
		-H "Authorization: Bearer $token"
	refused_attempt "bearer report" 401 POST "$API_URL/v1/agent/report" \
		-H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
		--data '{"index":0,"attempt":1,"report":"failed","message":"forged by the attacker"}'
	refused_attempt "bearer seed (user-data from another host)" 401 GET "$API_URL/v1/agent/seed" \
		-H "Authorization: Bearer $token"
	refused_attempt "no credential at all on /v1/agent/seed" 401 GET "$API_URL/v1/agent/seed"
}

# (d) Nothing to steal on the wire: the agent speaks TLS to a CA the command line pins; the
# plain-HTTP listener has no agent routes; the token-in-path routes are gone.
attack_plain_http() {
	local code path
	for path in /v1/agent/claim /v1/agent/next /v1/agent/seed /v1/agent/report; do
		if [ "$path" = /v1/agent/claim ] || [ "$path" = /v1/agent/report ]; then
			code=$(att_http POST "$KILN_URL$path" -H "Authorization: Bearer $(random_hex64)" \
				-H 'Content-Type: application/json' --data "{\"mac\":\"$VICTIM_MAC\",\"run\":\"x\"}")
		else
			code=$(att_http GET "$KILN_URL$path" -H "Authorization: Bearer $(random_hex64)")
		fi
		check "plain http: $path is not served on the plain-HTTP listener (got $code)" code_in "$code" '404|421'
	done
	local token
	token=$(random_hex64)
	for path in "/v1/agent/$token/next" "/nocloud/$token/user-data" "/nocloud/$token/meta-data"; do
		code=$(att_http GET "$KILN_URL$path")
		check "plain http: the old token-in-path route ${path//$token/TOKEN} serves nothing (got $code)" \
			code_in "$code" '400|401|403|404|410|421'
	done
	local host port
	host=$(sed -E 's|^https://([^:/]+).*|\1|' <<<"$API_URL")
	port=$(sed -nE 's|^https://[^:/]+:([0-9]+).*|\1|p' <<<"$API_URL")
	local tls
	tls=$(nsx python3 - "$E2E_DATA" "${CA_FP:-none}" "$host" "${port:-443}" <<-'EOF' 2>&1
		import hashlib, os, socket, ssl, sys
		data, fp, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
		ca = None
		for root, dirs, files in os.walk(data):
		    dirs[:] = [d for d in dirs if d != "images"]
		    for f in files:
		        p = os.path.join(root, f)
		        try:
		            if os.path.getsize(p) > 8 << 20:
		                continue
		            text = open(p, encoding="ascii", errors="ignore").read()
		        except OSError:
		            continue
		        for block in text.split("-----END CERTIFICATE-----"):
		            i = block.find("-----BEGIN CERTIFICATE-----")
		            if i < 0:
		                continue
		            pem = block[i:] + "-----END CERTIFICATE-----\n"
		            try:
		                der = ssl.PEM_cert_to_DER_cert(pem)
		            except ValueError:
		                continue
		            if hashlib.sha256(der).hexdigest() == fp:
		                ca = pem
		if ca is None:
		    sys.exit(f"no certificate under {data} has the SHA-256 {fp}")
		ctx = ssl.create_default_context(cadata=ca)
		with socket.create_connection((host, port), timeout=10) as s:
		    with ctx.wrap_socket(s, server_hostname=host) as t:
		        print(f"{t.version()} to {host}:{port}, chain verified against the pinned CA")
	EOF
	) || tls="FAILED: $tls"
	check "tls: the agent API presents a certificate issued by the CA whose fingerprint is on the command line ($tls)" \
		bash -c '[[ $1 != FAILED* ]]' _ "$tls"
}

# (e), (f) Forged reports from "the installed OS".
attack_phone_home() {
	local when=$1 wf before after sig
	wf=$(wf_field id)
	before=$(wf_field state)
	sig=$(random_hex64)
	refused_attempt "phone-home forged ($when, workflow $before)" '401|403|409' POST \
		"$KILN_URL/v1/phone-home/$wf/$sig" --data 'hostname=victim&instance_id=forged'
	refused_attempt "failure report forged ($when)" '401|403|409' POST \
		"$KILN_URL/v1/phone-home/$wf/$sig/failed" --data 'kubeadm exploded (forged)'
	after=$(wf_field state)
	check "phone-home forged ($when): the workflow did not fail by it ($before -> $after)" \
		bash -c '[ "$1" != failed ] && [ "$1" != timed-out ]' _ "$after"
	local code
	code=$(att_http POST "$KILN_URL/v1/phone-home/$wf/$sig/kubeconfig" \
		--data-binary $'apiVersion: v1\nkind: Config\nusers:\n- name: x\n  user:\n    exec: {command: /bin/sh}\n')
	check "kubeconfig upload ($when): no such route (got $code)" code_in "$code" '404|405'
}

# (g) 2,000 idle connections to the HTTP port, held while the victim works.
attack_idle_connections() {
	local status=$E2E_WORK/idle.json stop=$E2E_WORK/idle.stop i before mark n
	rm -f "$status" "$stop"
	mark=$(ev_mark)
	att python3 "$ATTACKER" idle "$SERVER_IP" "$HTTP_PORT" 2000 "$status" "$stop" 600 \
		>"$E2E_WORK/idle.log" 2>&1 &
	local pid=$!
	ATT_PIDS+=("$pid")
	for i in $(seq 300); do
		[ -s "$status" ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	log "idle connections opened: $(cat "$status" 2>/dev/null || echo none)"
	n=$(refused_since "$mark" http.refused)
	check "idle flood: the connections over the per-source cap were closed and left an http.refused event naming the attacker (got $n)" \
		[ "$n" -ge 1 ]
	before=$(wf_field where)
	check "idle flood: /healthz still answers the server's side (within 60 s)" \
		wait_http_ok "$KILN_URL/healthz" 60 "$KILN_PID"
	local got want
	got=$(att python3 "$ATTACKER" tftp-get "$SERVER_IP" undionly.kpxe "$E2E_WORK/tftp-during-flood" 2>&1 || true)
	want=$(stat -c %s "$E2E_TFTP_ROOT/undionly.kpxe")
	check "idle flood: TFTP still serves undionly.kpxe to the attacker's address ($got; file has $want bytes)" \
		cmp -s "$E2E_WORK/tftp-during-flood" "$E2E_TFTP_ROOT/undionly.kpxe"
	check "idle flood: the victim keeps working while the connections are held (was: $before)" \
		wait_until 300 moved_from "$before"
	touch "$stop"
	for i in $(seq 100); do
		grep -q closed_by_server "$status" 2>/dev/null && break
		sleep 0.2
	done
	log "idle connections at the end: $(cat "$status" 2>/dev/null || echo none)"
	stop_pid "$pid"
	check "idle flood: kiln serve is still running" kill -0 "$KILN_PID"
}

# (h) 50 TFTP read requests at once from one address, never acknowledged.
attack_tftp_flood() {
	local mark res served refused silent n
	mark=$(ev_mark)
	res=$(att python3 "$ATTACKER" tftp-flood "$SERVER_IP" undionly.kpxe 50 2>&1 || echo '{}')
	log "tftp flood: $res"
	served=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("served", -1))' "$res" 2>/dev/null || echo -1)
	refused=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("refused", -1))' "$res" 2>/dev/null || echo -1)
	silent=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("silent", -1))' "$res" 2>/dev/null || echo -1)
	check "tftp flood: at most the per-source cap (8) of 50 requests served, at least one (got $served)" \
		[ "$served" -ge 1 -a "$served" -le 8 ]
	check "tftp flood: every other request got an ERROR, none was left unanswered (refused $refused, silent $silent)" \
		[ "$((served + refused))" = 50 -a "$silent" = 0 ]
	n=$(refused_since "$mark" tftp.refused)
	check "tftp flood: one tftp.refused event per refused request names the attacker (got $n of $refused)" \
		[ "$n" = "$refused" ]
	check "tftp flood: another address is still served meanwhile" \
		bash -c 'ip netns exec "$1" python3 "$2" tftp-get "$3" undionly.kpxe "$4" >/dev/null && cmp -s "$4" "$5"' _ \
		"$E2E_NS" "$ATTACKER" "$SERVER_IP" "$E2E_WORK/tftp-other" "$E2E_TFTP_ROOT/undionly.kpxe"
}

# (i) Event flood and escape sequences.
attack_event_flood() {
	local res code
	res=$(att python3 "$ATTACKER" http-flood "$SERVER_IP" "$HTTP_PORT" 1100 "/ipxe/$VICTIM_MAC/boot.ipxe" 2>&1 || true)
	log "1,100 fetches of the victim's script: $res"
	res=$(att python3 "$ATTACKER" http-flood "$SERVER_IP" "$HTTP_PORT" 1100 "/ipxe/{mac}/boot.ipxe" 2>&1 || true)
	log "1,100 fetches of random MACs' scripts: $res"
	code=$(att_http GET "$KILN_URL/ipxe/%1b[31mpwned-mac%1b[0m/boot.ipxe")
	log "escape in a MAC: $code"
	code=$(att_http GET "$KILN_URL/artifacts/%1b%5b2Jpwned-artifact%1b%5b0m")
	log "escape in an artifact path: $code"
	code=$(att_http GET "$KILN_URL/images/%1b]0;pwned-title%07")
	log "OSC sequence in an image path: $code"
	res=$(att python3 "$ATTACKER" http-raw "$SERVER_IP" "$HTTP_PORT" \
		"$(printf 'GET /artifacts/\033[2Jpwned-raw HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\n\r\n' | od -An -tx1 | tr -d ' \n')" 2>&1 || true)
	log "raw ESC in a request line: $res"
	res=$(att python3 "$ATTACKER" tftp-rrq "$SERVER_IP" \
		"$(printf '\033[31mpwned-tftp\033[0m.kpxe' | od -An -tx1 | tr -d ' \n')" 2>&1 || true)
	log "raw ESC in a TFTP file name: $res"
	sleep 1 # let the event writer store the last batch
	local victim_events all
	victim_events=$(kiln_cli events "$VICTIM" --last 100000 2>&1 || true)
	check "event flood: the victim's history still holds its workflow.created event" \
		grep -q 'workflow\.created' <<<"$victim_events"
	check "event flood: the victim's history still holds its BMC power-on (bmc.done)" \
		grep -q 'bmc\.done' <<<"$victim_events"
	all=$E2E_WORK/events-table.txt
	kiln_cli events --last 1000000 >"$all" 2>&1 || true
	check "escapes: the hostile names were recorded (events mentioning pwned: $(grep -c pwned "$all" || true))" \
		grep -q pwned "$all"
	check "escapes: \`kiln events\` prints no raw ESC byte ($(grep -c $'\x1b' "$all" || true) lines with one)" \
		no_esc_in_file "$all"
	check "escapes: \`kiln events $VICTIM\` prints no raw ESC byte" no_esc_in "$victim_events"
	check "event flood: kiln serve is still running" kill -0 "$KILN_PID"
}

# (j) "Billion laughs": nine levels of nine aliases, a few hundred bytes, 9^9 strings expanded.
attack_yaml_bomb() {
	local bomb=$E2E_WORK/bomb.yaml rc=0 out
	python3 - "$bomb" <<-'EOF'
		import sys
		names = "abcdefghi"
		s = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
		for prev, nxt in zip(names, names[1:]):
		    s += f"{nxt}: &{nxt} [" + ", ".join(["*" + prev] * 9) + "]\n"
		open(sys.argv[1], "w").write(s)
	EOF
	out=$( (
		ulimit -v 1048576
		kiln_cli cluster create "$bomb" --dry-run --out-dir "$E2E_WORK/bomb-out"
	) 2>&1) || rc=$?
	log "yaml bomb ($(stat -c %s "$bomb") bytes), under ulimit -v 1 GiB: rc=$rc: $out"
	check "yaml bomb: refused (exit 1-127, not killed by a signal) (rc=$rc)" [ "$rc" -ge 1 -a "$rc" -lt 128 ]
	check "yaml bomb: the error names the file and says why (more than 100000 YAML nodes)" \
		grep -qE "bomb\.yaml:[0-9]+(:[0-9]+)?: .*more than 100000 YAML nodes" <<<"$out"
	check "yaml bomb: nothing written" [ ! -e "$E2E_WORK/bomb-out" ]
	# the CLI hands the spec to the server's admin API: the server parses it, outside the ulimit
	check "yaml bomb: kiln serve is still running" kill -0 "$KILN_PID"
}

# ---- the end: outcome, events, secrets ----------------------------------------------------

final_checks() {
	local state json peer
	state=$(wf_field state)
	kiln_cli workflow show "$VICTIM" | sed 's/^/#   /' || true
	check "victim: the workflow succeeded despite the attacker (got $state)" [ "$state" = succeeded ]
	json=$(workflow_json)
	peer=$(python3 -c 'import json,sys; print((json.load(sys.stdin).get("phone_home") or {}).get("peer"))' <<<"$json" 2>/dev/null || echo none)
	check "victim: the phone-home that counted came from the victim's address $VICTIM_IP (got $peer)" \
		[ "$peer" = "$VICTIM_IP" ]
	local victim_events
	victim_events=$(kiln_cli events "$VICTIM" --last 100000 2>&1 || true)
	check "victim: kiln powered it on through its BMC (bmc.done ... powered on)" \
		grep -qE 'bmc\.done .*powered on' <<<"$victim_events"
	check "victim: the attacker's early script fetch did not stand in for the BMC step (no bmc.skipped)" \
		bash -c '! grep -q "bmc\.skipped" <<<"$1"' _ "$victim_events"
	check "victim: its agent claimed the credential from $VICTIM_IP (agent.claimed)" \
		grep -qE "agent\.claimed .*$VICTIM_IP" <<<"$victim_events"
	check "victim: no credential was ever issued to the attacker (no agent.claimed naming $ATT_IP)" \
		bash -c '! grep -E "agent\.claimed" <<<"$1" | grep -qF "$2"' _ "$victim_events" "$ATT_IP"

	# Secrets: nothing 64-hex beyond the public CA fingerprint and the images' sha256, no key,
	# no BMC password, in anything the attacker got or anything Kiln prints or logs.
	local corpus=$E2E_WORK/secret-scan
	mkdir -p "$corpus"
	events_json >"$corpus/events.json"
	kiln_cli events --last 1000000 >"$corpus/events.txt" 2>&1 || true
	workflow_json >"$corpus/workflow.json"
	kiln_cli workflow logs "$VICTIM" >"$corpus/workflow-logs.txt" 2>&1 || true
	kiln_cli hardware show "$VICTIM" -o json >"$corpus/hardware.json" 2>&1 || true
	att_http GET "$KILN_URL/metrics" >/dev/null
	cp "$ATT_SEEN" "$corpus/attacker-received.txt"
	cp "$KILN_LOG" "$corpus/kiln-serve.log"
	cp "$E2E_WORK/kiln-cli.log" "$corpus/kiln-cli.log" 2>/dev/null || true
	local allowed leaks
	allowed=$(kiln_cli image list -o json 2>/dev/null |
		python3 -c 'import json,sys; print(" ".join(i["sha256"] for i in json.load(sys.stdin)))' 2>/dev/null || true)
	leaks=$(python3 - "$corpus" "${CA_FP:-none} $allowed" "$BMC_PASSWORD" <<-'EOF'
		import os, re, sys
		corpus, allowed, password = sys.argv[1], set(sys.argv[2].split()), sys.argv[3]
		hex64 = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")
		found = []
		for name in sorted(os.listdir(corpus)):
		    text = open(os.path.join(corpus, name), encoding="utf-8", errors="replace").read()
		    for m in sorted(set(hex64.findall(text))):
		        if m.lower() not in allowed:
		            found.append(f"{name}: 64-hex {m[:8]}...")
		    if password in text:
		        found.append(f"{name}: the BMC password")
		    if re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text):
		        found.append(f"{name}: a private key")
		    if "kiln.token" in text and name != "kiln-cli.log":
		        found.append(f"{name}: kiln.token")
		print("; ".join(found))
	EOF
	)
	check "secrets: no 64-hex token, private key or BMC password in events, logs, output or anything the attacker got (${leaks:-none})" \
		[ -z "$leaks" ]
}

main() {
	e2e_setup attacker
	trap attacker_cleanup EXIT
	command -v ipmi_sim >/dev/null || die "ipmi_sim missing: apt-get install openipmi"
	command -v ipmitool >/dev/null || die "ipmitool missing: apt-get install ipmitool"
	[ -s "$TEST_OS" ] || die "test OS image missing: images/test-os/build.sh $E2E_ASSETS/test-os"
	[ -s "$AGENT_OS/initrd.img" ] || die "agent OS missing: images/agent/build.sh $AGENT_OS"
	ns_create 1
	attacker_ns
	ATT_SEEN=$E2E_WORK/attacker-received.txt
	: >"$ATT_SEEN"
	E2E_LOGS+=("what the attacker received=$ATT_SEEN")

	cat >"$E2E_WORK/hardware.csv" <<-EOF
		hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk
		$VICTIM,ipmi://127.0.0.1:$IPMI_PORT,admin,$BMC_PASSWORD,$VICTIM_MAC,$VICTIM_IP,255.255.255.0,$SERVER_IP,$SERVER_IP,e2e=attacker|kiln.dev/boot-mode=legacy,/dev/vda
	EOF
	start_bmc
	KILN_ARTIFACTS=$AGENT_OS kiln_serve
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null || die "enrolment failed"
	kiln image import "$TEST_OS" --name test-os >/dev/null || die "image import failed"
	local i
	for i in $(seq 50); do
		att curl --noproxy '*' -sf -o /dev/null --max-time 2 "$KILN_URL/healthz" && break
		[ "$i" -lt 50 ] || die "the attacker's namespace cannot reach $KILN_URL"
		sleep 0.2
	done
	kiln workflow create --template "$REPO/workflows/debian-test-os.yaml" --hardware "$VICTIM" | sed 's/^/# /'

	# At once, before kiln has even powered the victim on.
	attack_script
	attack_claim early
	attack_bearer
	attack_plain_http
	attack_phone_home early
	attack_yaml_bomb

	if wait_until 900 streaming; then
		log "the victim is streaming its image: $(wf_field where)"
	else
		not_ok "victim: never started streaming its image (workflow $(wf_field state))"
	fi
	attack_claim after-the-agent-claimed
	attack_idle_connections
	attack_tftp_flood
	attack_event_flood
	attack_phone_home running

	# The window where a signed phone-home would count: the agent handed over, the installed
	# OS boots. Forged ones must still be refused.
	if wait_until 900 is_state rebooting; then
		attack_phone_home rebooting
	else
		log "the rebooting window was not seen (workflow $(wf_field state)); forged phone-home tried before it only"
	fi
	local deadline=$((SECONDS + 900))
	while [ "$SECONDS" -lt "$deadline" ] && ! terminal "$(wf_field state)"; do sleep 2; done
	final_checks
}

out=$( (main) 2>&1) || true
printf '%s\n' "$out"
passed=$(grep -c '^ok - ' <<<"$out" || true)
failed=$(grep -c '^not ok - ' <<<"$out" || true)
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
