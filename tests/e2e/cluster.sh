#!/usr/bin/env bash
# Issue 5 end to end: `kiln demo` builds its lab (a private namespace, QEMU machines behind
# virtual BMCs: ipmi_sim and sushy-tools), enrolls a hardware.csv and runs `kiln cluster
# create`. Asserted afterwards, from the kept work directory (Kiln's data dir, the machines'
# serial consoles) and the demo's own output:
#   the machine was powered on over its BMC, netbooted Kiln's agent, the agent wrote the test
#   OS and the cloud-init seed, the machine rebooted from its disk, real cloud-init ran the
#   generated commands: the test OS's stand-in kubeadm (images/test-os/kubeadm-stub) printed
#   its arguments and config on the console; after `kubeadm init` the first control plane's
#   bootstrap saw the stand-in API server answer /readyz (TLS, verified with the cluster CA)
#   before cloud-init phoned home; the cluster is ready, every workflow succeeded; the admin
#   kubeconfig Kiln mints (`kiln cluster kubeconfig demo`, and the one kiln demo wrote with
#   --out) holds a client certificate that `openssl verify` accepts against the cluster CA in
#   it, for kubernetes-admin in kubeadm's admin group for the version, and the endpoint as
#   server; and the demo removed its processes and namespace.
#
#   tests/e2e/cluster.sh [--list] [CASE...]
#     single-node   (default) one UEFI machine (OVMF, IPMI): kubeadm init, InitConfiguration, taints: [];
#                   then `kiln demo --delete`: kiln cluster delete power-cycles the node into the
#                   agent, which wipes the disk (no partition table, no file system left where
#                   the test OS had them) and powers the machine off; the BMC reports it off
#     three-node    one control plane (IPMI) and two workers (Redfish, IPMI), SeaBIOS: kubeadm join with
#                   JoinConfiguration, token and caCertHashes. Three TCG machines on two cores
#                   take a while: not run by tests/run-e2e.sh unless asked for
#                   (tests/run-e2e.sh tests/e2e/cluster.sh passes no case; run
#                   `tests/e2e/cluster.sh three-node`, or KILN_E2E_CLUSTER_CASES="single-node three-node").
# shellcheck disable=SC2016 # bash -c '...' _ ARGS: the single quotes are meant
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

K8S_VERSION=1.31      # kubeadm v1beta4 from 1.31
ADMIN_GROUP=kubeadm:cluster-admins # kubeadm's admin group from 1.29 (system:masters before)
CP_IP=10.77.0.11      # demo-cp1, the control-plane endpoint of the demo's cluster

# stub_calls LOG: "NNNN <args>" for each kubeadm call the stand-in printed on the console.
stub_calls() {
	clean_log "$1" | sed -n 's/.*KILN-KUBEADM-STUB call=\([0-9]*\) args: \(.*\)$/\1 \2/p' | sort -u
}

# stub_config LOG CALL: the config file that call was given, as printed on the console.
stub_config() {
	clean_log "$1" | sed -n "s/.*KILN-KUBEADM-STUB call=$2 config| \\(.*\\)\$/\\1/p"
}

# demo_run NODES [ARGS...]: runs kiln demo; sets DEMO, DEMO_LOG, DEMO_RC, E2E_DATA.
demo_run() {
	local nodes=$1
	shift
	DEMO=$E2E_WORK/demo
	DEMO_LOG=$E2E_WORK/demo.log
	E2E_DATA=$DEMO/data
	E2E_LOGS+=("kiln demo=$DEMO_LOG" "kiln serve=$DEMO/logs/kiln-serve.log")
	log "kiln demo --nodes $nodes --keep --work $DEMO $*"
	set +e
	"$KILN_BIN" demo --nodes "$nodes" --keep --work "$DEMO" --assets "$E2E_ASSETS" \
		--kubernetes-version "$K8S_VERSION" --summary-json "$E2E_WORK/summary.json" --timeout 40m "$@" \
		</dev/null >"$DEMO_LOG" 2>&1
	DEMO_RC=$?
	set -e
	sed 's/^/#   /' "$DEMO_LOG" | grep -vE '^#   \[ *[0-9.ms]+\] +demo-' || true
	# The demo stopped its server; the CLI reads the kept data dir through a server of our own.
	[ -d "$E2E_DATA" ] || die "kiln demo kept no data dir ($E2E_DATA)"
	kiln_serve_queries
}

# console_log HOST: a file with all of HOST's serial console output; the chassis program keeps
# the output of earlier power-ons in serial-all.log and the current one in serial.log.
console_log() {
	local dir=$DEMO/vm/$1 all=$E2E_WORK/$1-console.log
	cat "$dir/serial-all.log" "$dir/serial.log" >"$all" 2>/dev/null || true
	echo "$all"
}

# summary_field HOST FIELD: FIELD of HOST's install record in the demo's summary.json.
summary_field() {
	python3 -c 'import json,sys; print([m for m in json.load(open(sys.argv[1]))["machines"] if m["hostname"] == sys.argv[2]][0][sys.argv[3]])' \
		"$E2E_WORK/summary.json" "$1" "$2" 2>/dev/null || echo "?"
}

# node_checks HOST BMC [BOOTS [MODE]]: what every node must show. BOOTS: agent OS boots/installed
# kernel boots seen on the console (default 1/1; a deleted node runs the agent again); MODE: the
# boot override's mode, legacy (SeaBIOS, default) or UEFI.
node_checks() {
	local host=$1 bmc=$2 boots=${3:-1/1} mode=${4:-legacy} serial events json wf
	serial=$(console_log "$host")
	E2E_LOGS+=("$host serial=$serial")
	events=$(kiln_cli events "$host" --last 1000 2>&1 || true)
	wf=$(summary_field "$host" workflow)
	json=$(kiln_cli workflow show "${wf:-?}" -o json 2>/dev/null || echo '{}')
	check "$host: kiln set next boot PXE ($mode) through its BMC ($bmc)" \
		grep -q "bmc.boot-device.*next boot: pxe (once, $mode)" <<<"$events"
	check "$host: kiln powered it on over $bmc and saw it on (machine was off)" \
		grep -q 'bmc.done.*power on into netboot: was off: powered on (confirmed)' <<<"$events"
	check "$host: it netbooted Kiln's agent (iPXE script, agent OS up, agent connected)" \
		bash -c 'grep -q "http.script.*netboot" <<<"$1" && grep -q "workflow.running" <<<"$1" && grep -aq "kiln-agent-os: up" "$2"' _ "$events" "$serial"
	local img seed
	img=$(python3 -c 'import json,sys; a=[x for x in json.load(sys.stdin).get("actions",[]) if x["kind"]=="image2disk"]; print(a[0]["state"] + ": " + a[0]["message"] if a else "none")' <<<"$json")
	seed=$(python3 -c 'import json,sys; a=[x for x in json.load(sys.stdin).get("actions",[]) if x["kind"]=="cloud-init"]; print(a[0]["state"] + ": " + a[0]["message"] if a else "none")' <<<"$json")
	check "$host: the agent wrote the test OS ($img)" grep -q '^succeeded: .*sha256 .* verified' <<<"$img"
	check "$host: the agent wrote the cloud-init seed ($seed)" grep -q '^succeeded' <<<"$seed"
	local agent_boots disk_kernels
	agent_boots=$(clean_log "$serial" | grep -c 'kiln-agent-os: up' || true)
	disk_kernels=$(clean_log "$serial" | sed -n '/kiln-agent: rebooting/,$p' | grep -c 'Command line: BOOT_IMAGE=/vmlinuz root=LABEL=kiln-root' || true)
	check "$host: it rebooted from its disk into the installed OS (agent OS booted $agent_boots time(s), then the installed kernel $disk_kernels time(s))" \
		[ "$agent_boots/$disk_kernels" = "$boots" ]
	check "$host: real cloud-init ran from the NoCloud seed" \
		grep -qE 'Cloud-init v\. [0-9.]+ finished.*DataSourceNoCloud' <(clean_log "$serial")
	local state
	state=$(python3 -c 'import json,sys; print(json.load(sys.stdin).get("state","none"))' <<<"$json")
	check "$host: its workflow succeeded (got $state)" [ "$state" = succeeded ]
}

# kubeconfig_field FILE KEY: the value of KEY (e.g. server, client-certificate-data) in a
# kubeconfig as Kiln writes it (one cluster, one user), quotes removed.
kubeconfig_field() {
	sed -n "s/^ *$2: *\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" "$1" | head -n 1
}

# kubeconfig_checks LABEL FILE: FILE is an admin kubeconfig minted from the cluster CA: its
# client certificate verifies against the CA in it (openssl verify), is for kubernetes-admin
# in the admin group of the demo's Kubernetes version, and the server is the endpoint.
kubeconfig_checks() {
	local label=$1 file=$2 dir verify subject server context
	dir=$(mktemp -d "$E2E_WORK/kubeconfig.XXXXXX")
	kubeconfig_field "$file" certificate-authority-data | base64 -d >"$dir/ca.crt" 2>/dev/null || true
	kubeconfig_field "$file" client-certificate-data | base64 -d >"$dir/admin.crt" 2>/dev/null || true
	kubeconfig_field "$file" client-key-data | base64 -d >"$dir/admin.key" 2>/dev/null || true
	verify=$(openssl verify -CAfile "$dir/ca.crt" -purpose sslclient "$dir/admin.crt" 2>&1 | tail -n 1)
	check "$label: its client certificate verifies against the cluster CA in it ($verify)" \
		[ "$verify" = "$dir/admin.crt: OK" ]
	subject=$(openssl x509 -in "$dir/admin.crt" -noout -subject -nameopt RFC2253 2>&1)
	check "$label: the certificate is kubernetes-admin in $ADMIN_GROUP, kubeadm's admin group for Kubernetes $K8S_VERSION ($subject)" \
		[ "$subject" = "subject=CN=kubernetes-admin,O=$ADMIN_GROUP" ]
	check "$label: its key is the certificate's" \
		bash -c 'a=$(openssl x509 -in "$1" -noout -pubkey 2>&1) && b=$(openssl pkey -in "$2" -pubout 2>&1) && [ "$a" = "$b" ]' _ "$dir/admin.crt" "$dir/admin.key"
	server=$(kubeconfig_field "$file" server)
	context=$(kubeconfig_field "$file" current-context)
	check "$label: server is the endpoint https://$CP_IP:6443 (got $server), context kubernetes-admin@demo (got $context)" \
		[ "$server/$context" = "https://$CP_IP:6443/kubernetes-admin@demo" ]
	rm -rf "$dir"
}

# api_server_checks: demo-cp1's console shows the bootstrap script's /readyz check passing
# against the (stand-in) API server before cloud-init finished, and so before its phone-home.
api_server_checks() {
	local serial ready served finished
	serial=$(clean_log "$(console_log demo-cp1)")
	ready=$(grep -n "kiln-bootstrap: the API server answers /readyz at https://$CP_IP:6443/readyz" <<<"$serial" | head -n 1 | cut -d: -f1)
	served=$(grep -n "KILN-KUBEADM-STUB apiserver GET /readyz from [0-9.]* -> 200" <<<"$serial" | head -n 1 | cut -d: -f1)
	finished=$(grep -nE 'Cloud-init v\. [0-9.]+ finished' <<<"$serial" | tail -n 1 | cut -d: -f1)
	check "demo-cp1: the stand-in API server answered /readyz over TLS (console line ${served:-none})" [ -n "$served" ]
	check "demo-cp1: the bootstrap script saw the API server answer (line ${ready:-none}) before cloud-init finished and phoned home (line ${finished:-none})" \
		bash -c '[ -n "$1" ] && [ -n "$2" ] && [ "$1" -lt "$2" ]' _ "$ready" "$finished"
	check "demo-cp1: no kubeconfig upload in its bootstrap" \
		bash -c '! grep -q "uploading the admin kubeconfig" <<<"$1"' _ "$serial"
}

# common_checks NODES [deleted]: the demo itself and the cluster (deleted: by --delete).
common_checks() {
	local nodes=$1 status state phoned
	check "demo: kiln demo exited 0 (got $DEMO_RC)" [ "$DEMO_RC" = 0 ]
	if [ "${2:-}" = deleted ]; then
		# The cluster is gone from the store: what the demo saw before deleting it.
		state=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cluster_state"])' "$E2E_WORK/summary.json" 2>/dev/null || echo "?")
		phoned=$(python3 -c 'import json,sys; print(sum(1 for m in json.load(open(sys.argv[1]))["machines"] if m["phases_ms"][-1] is not None))' "$E2E_WORK/summary.json" 2>/dev/null || echo "?")
		check "cluster: the demo saw it ready (got $state) before deleting it, $phoned/$nodes node(s) phoned home" \
			[ "$state/$phoned" = "ready/$nodes" ]
	else
		status=$(kiln_cli cluster status demo -o json 2>&1 || true)
		state=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' <<<"$status" 2>/dev/null || echo "?")
		phoned=$(python3 -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin)["nodes"] if n["phone_home"]))' <<<"$status" 2>/dev/null || echo "?")
		check "cluster: kiln cluster status says ready (got $state), $phoned/$nodes node(s) phoned home" \
			[ "$state/$phoned" = "ready/$nodes" ]
		check "cluster: kiln cluster status says the first control plane confirmed its API server" \
			grep -q '"api_server_confirmed": *true' <<<"$status"
		set +e
		kiln_cli cluster kubeconfig demo >"$E2E_WORK/minted.conf" 2>"$E2E_WORK/minted.err"
		local rc=$?
		set -e
		check "cluster: kiln cluster kubeconfig demo printed a kubeconfig (exit $rc$(head -c 200 "$E2E_WORK/minted.err" | tr '\n' ' '))" \
			bash -c '[ "$1" = 0 ] && grep -q "^apiVersion: v1" "$2"' _ "$rc" "$E2E_WORK/minted.conf"
		kubeconfig_checks "kiln cluster kubeconfig demo" "$E2E_WORK/minted.conf"
	fi
	# What kiln demo wrote with `kiln cluster kubeconfig demo --out` once the cluster was ready
	# (before --delete, if any).
	check "cluster: kiln demo wrote the minted kubeconfig to its work dir, mode 0600 (got $(stat -c %a "$DEMO/kubeconfig" 2>&1))" \
		[ "$(stat -c %a "$DEMO/kubeconfig" 2>/dev/null)" = 600 ]
	kubeconfig_checks "kiln demo's kubeconfig" "$DEMO/kubeconfig"
	api_server_checks
	local missing
	missing=$(python3 -c '
import json,sys
s = json.load(open(sys.argv[1]))
print(sum(1 for m in s["machines"] for p in m["phases_ms"] if p is None))' "$E2E_WORK/summary.json" 2>/dev/null || echo "no summary")
	check "summary: a time for every phase of every machine (missing: $missing)" [ "$missing" = 0 ]
	check "summary: the demo printed the phase table" \
		grep -qE '^MACHINE +ROLE +BMC +POWER-ON +DHCP +AGENT UP +IMAGE WRITTEN +DISK BOOT +PHONE HOME +TOTAL +RESULT' "$DEMO_LOG"
	local ns left
	ns=$(sed -n 's/.*network namespace \(kiln-demo-[0-9]*\):.*/\1/p' "$DEMO_LOG" | head -n 1)
	# (the query server kiln_serve_queries started on the kept data dir is ours, not the demo's)
	left=$(pgrep -f -- "$DEMO/" | grep -vx "$KILN_PID" || true)
	check "cleanup: the demo's namespace ${ns:-?} is gone and none of its processes is left${left:+ (left: $left)}" \
		bash -c '[ -n "$1" ] && ! ip netns list | grep -qw -- "$1" && [ -z "$2" ]' _ "$ns" "$left"
}

# gpt_partitions FILE: "START END" (bytes) for each partition of FILE's GPT, 512-byte sectors;
# nothing when FILE has no GPT.
gpt_partitions() {
	python3 -c '
import struct, sys
f = open(sys.argv[1], "rb")
f.seek(512)
h = f.read(92)
if h[:8] != b"EFI PART":
    sys.exit(0)
lba, n, size = struct.unpack_from("<QII", h, 72)
f.seek(lba * 512)
t = f.read(n * size)
for i in range(n):
    e = t[i * size:(i + 1) * size]
    if e[:16] != bytes(16):
        first, last = struct.unpack_from("<QQ", e, 32)
        print(first * 512, (last + 1) * 512)' "$1"
}

# nonzero_ranges FILE RANGES: how many of the 1 MiB ranges at the disk's ends and at both
# ends of each "START END" in RANGES hold a non-zero byte.
nonzero_ranges() {
	python3 -c '
import os, sys
MIB = 1 << 20
f = open(sys.argv[1], "rb")
size = os.fstat(f.fileno()).st_size
spots = [0, size - MIB]
for line in sys.argv[2].split("\n"):
    if line.strip():
        a, b = map(int, line.split())
        spots += [a, max(a, b - MIB)]
bad = 0
for at in spots:
    f.seek(at)
    if f.read(MIB).strip(b"\0"):
        bad += 1
print(f"{bad}/{len(spots)}")' "$1" "$2"
}

# delete_checks HOST: `kiln demo --delete` wiped HOST's disk and left it off.
delete_checks() {
	local host=$1 disk=$DEMO/vm/$1/disk.raw row wipe result power json msg parts left
	row=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1])).get("delete") or {"machines": []}
m = [m for m in d["machines"] if m["hostname"] == sys.argv[2]]
print(" ".join([m[0]["workflow"] or "-", m[0]["result"], m[0]["power"]]) if m else "- none none")' "$E2E_WORK/summary.json" "$host" 2>/dev/null || echo "- ? ?")
	read -r wipe result power <<<"$row"
	check "$host: kiln cluster delete ran a wipe workflow on it, which succeeded (got $result)" [ "$result" = succeeded ]
	json=$(kiln_cli workflow show "$wipe" -o json 2>/dev/null || echo '{}')
	msg=$(python3 -c 'import json,sys; a=[x for x in json.load(sys.stdin).get("actions",[]) if x["kind"]=="wipe"]; print(a[0]["state"] + ": " + a[0]["message"] if a else "none")' <<<"$json")
	check "$host: the agent found the installed OS's GPT and wiped it ($msg)" \
		grep -qE '^succeeded: wiped /dev/vda: [0-9]+ bytes, gpt with [1-9][0-9]* partition' <<<"$msg"
	check "$host: the BMC reports the machine off afterwards (got $power)" [ "$power" = off ]
	check "$host: the BMC power-cycled the running machine into the agent for the wipe" \
		grep -q 'bmc.done.*power on into netboot: was on: cycled, on again (confirmed)' <(kiln_cli events "$host" --last 1000 2>&1)
	parts=$(zstd -dc "$E2E_ASSETS/test-os/test-os.raw.zst" 2>/dev/null | head -c 1048576 >"$E2E_WORK/test-os-head.img"; gpt_partitions "$E2E_WORK/test-os-head.img")
	left=$(gpt_partitions "$disk")
	check "$host: no partition table or signature left on the disk (the test OS had $(grep -c . <<<"$parts") partition(s); wipefs: $(wipefs "$disk" 2>&1 | tail -n +2 | head -n 1))" \
		bash -c '[ -z "$1" ] && [ -z "$(wipefs "$2" 2>&1)" ] && [ -n "$3" ]' _ "$left" "$disk" "$parts"
	check "$host: the first and last MiB of the disk and of each former partition are zero (non-zero: $(nonzero_ranges "$disk" "$parts"))" \
		[ "$(nonzero_ranges "$disk" "$parts")" = "0/$((2 + 2 * $(grep -c . <<<"$parts")))" ]
}

case_single_node() {
	e2e_setup cluster-single
	demo_run 1 --firmware uefi --delete
	node_checks demo-cp1 IPMI 2/1 UEFI
	check "single-node: the machine ran OVMF (UEFI), iPXE handed back to it and it booted the disk" \
		grep -q 'BdsDxe: loading Boot[0-9A-F]* "UEFI Misc Device"' <(clean_log "$(console_log demo-cp1)")
	common_checks 1 deleted
	delete_checks demo-cp1
	local list list_rc=0
	list=$(kiln_cli cluster list 2>&1) || list_rc=$?
	check "delete: kiln cluster list no longer lists the cluster (exit $list_rc)" \
		bash -c '[ "$1" = 0 ] && ! grep -qw demo <<<"$2"' _ "$list_rc" "$list"
	local serial calls call cfg
	serial=$(console_log demo-cp1)
	calls=$(stub_calls "$serial")
	printf '%s\n' "$calls" | sed 's/^/#   kubeadm call /'
	call=$(awk '$2 == "init" {print $1; exit}' <<<"$calls")
	check "single-node: cloud-init ran kubeadm init --config FILE (call ${call:-none})" \
		grep -qE '^[0-9]+ init --config [^ ]+' <<<"$calls"
	check "single-node: no kubeadm join" bash -c '! grep -q " join" <<<"$1"' _ "$calls"
	cfg=$(stub_config "$serial" "${call:-none}")
	check "single-node: the init config has kind: InitConfiguration" grep -qx 'kind: InitConfiguration' <<<"$cfg"
	check "single-node: and kind: ClusterConfiguration for Kubernetes $K8S_VERSION ($(grep '^kubernetesVersion:' <<<"$cfg" | head -n 1))" \
		bash -c 'grep -qx "kind: ClusterConfiguration" <<<"$1" && grep -qE "^kubernetesVersion: \"?(v|stable-)?${2//./\\.}(\.[0-9]+)?\"?\$" <<<"$1"' _ "$cfg" "$K8S_VERSION"
	check "single-node: apiVersion kubeadm.k8s.io/v1beta4 (Kubernetes $K8S_VERSION), no other" \
		bash -c '[ "$(grep "^apiVersion: kubeadm" <<<"$1" | sort -u)" = "apiVersion: kubeadm.k8s.io/v1beta4" ]' _ "$cfg"
	check "single-node: the control plane is untainted: taints: [] in nodeRegistration" \
		grep -qE '^ +taints: \[\]$' <<<"$cfg"
}

case_three_node() {
	e2e_setup cluster-three
	demo_run 3
	node_checks demo-cp1 IPMI
	node_checks demo-worker1 Redfish
	node_checks demo-worker2 IPMI
	common_checks 3
	local cp_calls init cfg host calls call
	cp_calls=$(stub_calls "$(console_log demo-cp1)")
	init=$(awk '$2 == "init" {print $1; exit}' <<<"$cp_calls")
	cfg=$(stub_config "$(console_log demo-cp1)" "${init:-none}")
	check "three-node: demo-cp1 ran kubeadm init with an InitConfiguration" grep -qx 'kind: InitConfiguration' <<<"$cfg"
	check "three-node: the control plane keeps its taint (no taints: [] with workers)" \
		bash -c '! grep -qE "^ +taints: \[\]$" <<<"$1"' _ "$cfg"
	for host in demo-worker1 demo-worker2; do
		calls=$(stub_calls "$(console_log "$host")")
		printf '%s\n' "$calls" | sed "s/^/#   $host kubeadm call /"
		call=$(awk '$2 == "join" {print $1; exit}' <<<"$calls")
		cfg=$(stub_config "$(console_log "$host")" "${call:-none}")
		check "three-node: $host ran kubeadm join --config FILE (call ${call:-none}), no init" \
			bash -c 'grep -qE "^[0-9]+ join --config [^ ]+" <<<"$1" && ! grep -q " init" <<<"$1"' _ "$calls"
		check "three-node: $host's config is a JoinConfiguration (kubeadm.k8s.io/v1beta4)" \
			bash -c 'grep -qx "kind: JoinConfiguration" <<<"$1" && grep -qx "apiVersion: kubeadm.k8s.io/v1beta4" <<<"$1"' _ "$cfg"
		check "three-node: $host joins with a bootstrap token and the CA's caCertHashes, to the control plane" \
			bash -c 'grep -qE "^ +token: \"?[a-z0-9]{6}\.[a-z0-9]{16}\"?$" <<<"$1" && grep -qE "^ +- \"?sha256:[0-9a-f]{64}\"?$" <<<"$1" && grep -q "caCertHashes:" <<<"$1" && grep -q "apiServerEndpoint: \"\?10.77.0.11:6443" <<<"$1"' _ "$cfg"
	done
}

CASES=(single-node three-node)
if [ "${1:-}" = --list ]; then
	printf '%s\n' "${CASES[@]}"
	exit 0
fi
[ -s "$E2E_ASSETS/test-os/test-os.raw.zst" ] || die "test OS image missing: images/test-os/build.sh $E2E_ASSETS/test-os"
[ -s "$E2E_ASSETS/agent-os/initrd.img" ] || die "agent OS missing: images/agent/build.sh $E2E_ASSETS/agent-os"
selected=("$@")
if [ ${#selected[@]} -eq 0 ]; then
	read -r -a selected <<<"${KILN_E2E_CLUSTER_CASES:-single-node}"
fi
passed=0
failed=0
for c in "${selected[@]}"; do
	case $c in
	single-node | three-node) out=$( ("case_${c//-/_}") 2>&1) || true ;;
	*) die "unknown case $c (cases: ${CASES[*]})" ;;
	esac
	printf '%s\n' "$out"
	passed=$((passed + $(grep -c '^ok - ' <<<"$out" || true)))
	failed=$((failed + $(grep -c '^not ok - ' <<<"$out" || true)))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
