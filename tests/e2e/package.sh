#!/usr/bin/env bash
# shellcheck disable=SC2016 # the checks' bash -c scripts take their arguments as $1, $2
# Issue 12 point 4 end to end: Kiln as a Debian package and a service. Builds the .deb with
# packaging/build-deb.sh (cargo-deb), installs it on this machine with dpkg -i, checks what
# it installed (stripped binary with its debug info in kiln-dbgsym, the agent OS, the
# workflows, /var/lib/kiln 0700, /etc/kiln/kiln.toml as a conffile), checks kiln.service
# with `systemd-analyze verify`, then starts the INSTALLED `/usr/bin/kiln serve --config`
# (a copy of /etc/kiln/kiln.toml naming the namespace's interface and address; only the
# unit's two capabilities, no new privileges) in a network namespace; a QEMU machine netboots the installed agent OS (/usr/lib/kiln/agent) and runs
# the installed wipe-disk workflow to the end. The packages are purged on exit, whatever
# happened: the machine is left as found.
# kiln.service itself, started by systemd as PID 1, is tests/e2e/systemd.sh (same .deb).
#
#   tests/e2e/package.sh
#
# The package is built with lighter compression (KILN_DEB_FAST=1): same contents, minutes less.
# Environment: KILN_AGENT_OS=DIR packages that agent OS (default: $KILN_E2E_ASSETS/agent-os
# when run-e2e.sh built it, else images/agent/build.sh runs). Root; CI machines only (it
# installs and removes the package `kiln`; it refuses to run where kiln is installed).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

PKG_LOG=
PKG_INSTALLED=0
DATA_DIR_EXISTED=0

# wait_workflow HOST TIMEOUT: poll until the machine's workflow ends; prints its state.
wait_workflow() {
	local host=$1 timeout=$2 deadline state=
	deadline=$((SECONDS + timeout))
	while [ "$SECONDS" -lt "$deadline" ]; do
		state=$(kiln_cli workflow show "$host" -o json 2>/dev/null |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null) || state=
		case $state in succeeded | failed | timed-out) break ;; esac
		kill -0 "$VM_PID" 2>/dev/null || { log "the machine stopped"; sleep 2; }
		sleep 2
	done
	echo "${state:-unknown}"
}

# Purges the packages (after the case's processes stopped), then the harness's cleanup.
package_exit() {
	local rc=$? i
	set +e
	for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${E2E_PIDS[i]}"; done
	if [ "$PKG_INSTALLED" = 1 ]; then
		dpkg --purge kiln-dbgsym kiln >>"$PKG_LOG" 2>&1 || log "dpkg --purge failed (see $PKG_LOG)"
		[ "$DATA_DIR_EXISTED" = 1 ] || rm -rf /var/lib/kiln
	fi
	(exit "$rc")
	e2e_cleanup
}

run_case() {
	e2e_setup package
	trap package_exit EXIT
	PKG_LOG=$E2E_WORK/package.log
	E2E_LOGS+=("package build and dpkg=$PKG_LOG")

	if ! command -v dpkg >/dev/null || ! command -v systemd-analyze >/dev/null; then
		die "needs dpkg and systemd-analyze (apt-get install systemd)"
	fi
	if dpkg-query -W -f='${Status}\n' kiln 2>/dev/null | grep -q 'installed$'; then
		die "the package kiln is already installed on this machine: not touching it"
	fi
	[ -e /var/lib/kiln ] && DATA_DIR_EXISTED=1

	# ---- build -----------------------------------------------------------------------------
	agent_os=${KILN_AGENT_OS:-}
	if [ -z "$agent_os" ] && [ -s "$E2E_ASSETS/agent-os/initrd.img" ]; then agent_os=$E2E_ASSETS/agent-os; fi
	log "building the package (agent OS: ${agent_os:-built now by images/agent/build.sh})"
	t=$SECONDS
	if ! debs=$(KILN_AGENT_OS=$agent_os KILN_DEB_FAST=1 "$REPO/packaging/build-deb.sh" 2>>"$PKG_LOG"); then
		not_ok "build: packaging/build-deb.sh failed"
		exit 1
	fi
	DEB=$(grep '\.deb$' <<<"$debs")
	DDEB=$(grep '\.ddeb$' <<<"$debs")
	ok "build: $(basename "$DEB") and $(basename "$DDEB") in $((SECONDS - t)) s"
	check "package: Depends names ipxe (the TFTP root), Recommends the BMC tools" \
		bash -c 'dpkg-deb -f "$1" Depends | grep -qw ipxe && dpkg-deb -f "$1" Recommends | grep -qw ipmitool' _ "$DEB"

	# ---- install ---------------------------------------------------------------------------
	if ! dpkg -i "$DEB" "$DDEB" >>"$PKG_LOG" 2>&1; then
		PKG_INSTALLED=1
		not_ok "install: dpkg -i failed"
		exit 1
	fi
	PKG_INSTALLED=1
	ok "install: dpkg -i $(basename "$DEB") $(basename "$DDEB")"
	KILN_BIN=/usr/bin/kiln

	size=$(stat -c %s /usr/bin/kiln)
	log "installed /usr/bin/kiln: $size bytes ($((size / 1024 / 1024)) MiB)"
	check "binary: /usr/bin/kiln is stripped (no .debug_info section)" \
		bash -c '! readelf -S --wide /usr/bin/kiln | grep -q "\.debug_info"'
	build_id=$(readelf -n /usr/bin/kiln | sed -n 's/.*Build ID: *\([0-9a-f]*\).*/\1/p')
	debug_file=/usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug
	check "binary: its debug info is in kiln-dbgsym, by build id ($debug_file has .debug_info)" \
		bash -c '[ -n "$2" ] && readelf -S --wide "$1" | grep -q "\.debug_info"' _ "$debug_file" "$build_id"
	check "binary: the installed kiln runs (kiln --version: $(/usr/bin/kiln --version 2>&1))" \
		/usr/bin/kiln --version
	check "agent OS: /usr/lib/kiln/agent/vmlinuz and initrd.img are installed" \
		test -s /usr/lib/kiln/agent/vmlinuz -a -s /usr/lib/kiln/agent/initrd.img
	check "workflows: /usr/share/kiln/workflows holds the repo's templates" \
		bash -c 'for f in "$1"/workflows/*.yaml; do cmp -s "$f" "/usr/share/kiln/workflows/$(basename "$f")" || exit 1; done' _ "$REPO"
	check "data dir: /var/lib/kiln exists with mode 0700 ($(stat -c %a /var/lib/kiln 2>&1))" \
		test "$(stat -c %a /var/lib/kiln 2>/dev/null)" = 700
	check "conffile: /etc/kiln/kiln.toml is a dpkg conffile" \
		bash -c "dpkg-query -W -f='\${Conffiles}\n' kiln | grep -q '^ /etc/kiln/kiln.toml '"
	unit=$(dpkg -L kiln | grep -E '/systemd/system/kiln\.service$' | head -n 1)
	log "unit: $unit"
	verify=$(systemd-analyze verify "$unit" 2>&1) && verify_rc=0 || verify_rc=$?
	printf '%s\n' "$verify" | { grep . || true; } | sed 's/^/#   verify: /'
	check "unit: systemd-analyze verify $unit passes, without a warning" \
		test "$verify_rc" = 0 -a -z "$verify"
	check "unit: ExecStart runs kiln serve --config /etc/kiln/kiln.toml, LimitNOFILE, hardening" \
		bash -c 'grep -qx "ExecStart=/usr/bin/kiln serve --config /etc/kiln/kiln.toml" "$1" &&
			grep -q "^LimitNOFILE=" "$1" && grep -q "^ProtectSystem=strict" "$1" &&
			grep -q "^CapabilityBoundingSet=" "$1"' _ "$unit"
	printed=$(/usr/bin/kiln serve --config /etc/kiln/kiln.toml --address 10.77.0.1 --print-config 2>&1) || true
	check "config: the shipped kiln.toml serves the installed agent OS and Debian's iPXE" \
		bash -c 'grep -q "^artifacts = \"/usr/lib/kiln/agent\" *# file" <<<"$1" &&
			grep -q "^tftp_root = \"/usr/lib/ipxe\" *# file" <<<"$1"' _ "$printed"

	# ---- run the installed kiln against a QEMU machine ---------------------------------------
	host=pkg-vm
	mac=52:54:00:3f:0c:01
	ns_create 1
	config=$E2E_WORK/kiln.toml
	{
		cat /etc/kiln/kiln.toml
		printf '\n# the test namespace\ninterface = "br0"\naddress = "%s"\ndata_dir = "%s"\nlog_format = "json"\n' \
			"$SERVER_IP" "$E2E_DATA"
	} >"$config"
	write_hardware_csv "$E2E_WORK/hardware.csv" "$host,$mac,10.77.0.58"
	KILN_LOG=$E2E_WORK/kiln-serve.log
	# As kiln.service runs it: only the unit's two capabilities (CapabilityBoundingSet=) and
	# NoNewPrivileges (there is no systemd to start the unit itself here).
	local caps=(setpriv '--bounding-set=-all,+net_bind_service,+net_raw' --no-new-privs)
	grep -qx 'CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW' "$unit" ||
		not_ok "unit: the capabilities this test grants are not the unit's any more"
	log "starting: ${caps[*]} /usr/bin/kiln serve --config $config"
	ip netns exec "$E2E_NS" "${caps[@]}" /usr/bin/kiln serve --config "$config" </dev/null >"$KILN_LOG" 2>&1 &
	KILN_PID=$!
	E2E_PIDS+=("$KILN_PID")
	E2E_LOGS+=("kiln serve=$KILN_LOG")
	wait_http_ok "$KILN_URL/healthz" 30 "$KILN_PID" || die "the installed kiln serve did not answer $KILN_URL/healthz"
	wait_admin_api
	# The CLI is the admin API's client: it runs in the namespace, once the server is up.
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null
	ok "serve: the installed kiln serves from the config file (interface br0, $SERVER_IP:$HTTP_PORT) with only CAP_NET_BIND_SERVICE and CAP_NET_RAW"
	kiln workflow create --template /usr/share/kiln/workflows/wipe-disk.yaml --hardware "$host" | sed 's/^/# /'
	truncate -s 256M "$E2E_WORK/disk.raw"
	vm_start "$host" --fw bios --tap tap0 --mac "$mac" --disk "$E2E_WORK/disk.raw" --mem 1024
	state=$(wait_workflow "$host" 420)
	kiln_cli workflow show "$host" | sed 's/^/#   /'
	events=$(kiln_cli events "$host" --last 1000 2>&1 || true)
	printf '%s\n' "$events" >"$E2E_WORK/events.txt"
	E2E_LOGS+=("kiln events=$E2E_WORK/events.txt")
	check "agent: the agent reached the installed server and claimed its credential (agent.claimed)" \
		grep -q 'agent.claimed' <<<"$events"
	check "workflow: the installed wipe-disk workflow ran to the end (got $state)" [ "$state" = succeeded ]
	check "netboot: the machine fetched the agent OS from the installed server (http.artifact initrd.img 200)" \
		grep -qE 'http.artifact +GET /artifacts/initrd.img 200' <<<"$events"
	local off=0
	vm_wait_exit "$VM_PID" 60 && off=1
	check "poweroff: the agent powered the machine off at the end (QEMU exited, 'reboot: Power down')" \
		bash -c '[ "$1" = 1 ] && grep -q "reboot: Power down" "$2"' _ "$off" "$VM_LOG"
	check "logs: --log-format json from the file: every line of the server's log is a JSON object" \
		python3 -c 'import json, sys; lines = [l for l in open(sys.argv[1]) if l.strip()]; [json.loads(l) for l in lines]; sys.exit(not lines)' "$KILN_LOG"

	# ---- purge -----------------------------------------------------------------------------
	stop_pid "$KILN_PID"
	if dpkg --purge kiln-dbgsym kiln >>"$PKG_LOG" 2>&1; then
		PKG_INSTALLED=0
		[ "$DATA_DIR_EXISTED" = 1 ] || rm -rf /var/lib/kiln
		check "purge: dpkg --purge leaves no /usr/bin/kiln, /etc/kiln, /usr/lib/kiln or unit behind" \
			bash -c '! [ -e /usr/bin/kiln ] && ! [ -e /etc/kiln ] && ! [ -e /usr/lib/kiln ] && ! [ -e "$1" ]' _ "$unit"
	else
		not_ok "purge: dpkg --purge failed"
	fi
}

out=$E2E_WORK_BASE/package.$$.out
mkdir -p "$E2E_WORK_BASE"
(run_case) 2>&1 | tee "$out" || true
passed=$(grep -c '^ok - ' "$out" || true)
failed=$(grep -c '^not ok - ' "$out" || true)
rm -f "$out"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
