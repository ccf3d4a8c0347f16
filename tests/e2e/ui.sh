#!/usr/bin/env bash
# Issue 14 point 6: the operator web page, in headless Chromium (Debian's `chromium`), on a
# real `kiln serve` in a namespace this test creates, while a QEMU machine provisions (the
# test OS streamed to its disk, then power off):
#  - no token, no data: the admin API and the page's assets answer curl 401, the page sends
#    a browser to the login form, the API answers the browser 401
#  - logging in through the form with the token opens the page; the machine's tile is on the
#    grid, coloured by its state's class, and changes state live (SSE; the page is never
#    reloaded) to `succeeded`; the running image stream shows its bytes on the tile
#  - the machine's flight-recorder timeline shows its phases and outcome, its inventory shows
#  - the last preflight (kiln preflight, run before) shows; a MAC that asked for DHCP but is
#    not enrolled shows in the discovered list
#  - logging out ends the session
# Screenshots (PNG) are kept in $KILN_E2E_WORK/ui-screenshots/ (target/e2e-work by default)
# whatever the outcome, and in the case's work dir.
#
#   tests/e2e/ui.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

AGENT_OS=$E2E_ASSETS/agent-os
TEST_OS=$E2E_ASSETS/test-os/test-os.raw.zst
UI_PY=$REPO/tests/e2e/ui.py
CHROMIUM=${KILN_CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
HOST=ui-1
MAC=52:54:00:3f:07:01
IP=10.77.0.58
STRANGER_MAC=52:54:00:3f:07:99 # asks for DHCP, never enrolled
SHOTS=$E2E_WORK_BASE/ui-screenshots

# spki_of HOST:PORT: base64 SHA-256 of the public key the TLS server there presents (what
# Chromium's --ignore-certificate-errors-spki-list names: this server's certificate only).
spki_of() {
	nsx openssl s_client -connect "$1" </dev/null 2>/dev/null |
		openssl x509 -pubkey -noout | openssl pkey -pubin -outform der |
		openssl dgst -sha256 -binary | base64
}

keep_screenshots() {
	local f
	mkdir -p "$SHOTS"
	for f in "$E2E_WORK"/browser/*.png; do
		[ -f "$f" ] || continue
		cp "$f" "$SHOTS/$(date -u +%Y%m%dT%H%M%SZ)-$(basename "$f")"
	done
	log "screenshots kept in $SHOTS: $(cd "$SHOTS" && ls -t ./*.png 2>/dev/null | head -n 4 | tr '\n' ' ')"
}

case_provision() {
	e2e_setup ui
	[ -n "$CHROMIUM" ] || die "chromium missing: apt-get install chromium"
	ns_create 1
	# A host of its own on the segment (the far end of the bridge port) for the stranger's DHCP.
	local client_ns=$E2E_NS-client
	ip netns add "$client_ns"
	trap 'ip netns del "'"$client_ns"'" 2>/dev/null; e2e_cleanup' EXIT
	ip -n "$E2E_NS" link set sw0p netns "$client_ns"
	ip -n "$client_ns" link set lo up
	ip -n "$client_ns" link set sw0p up

	write_image_poweroff_template "$E2E_WORK/ui.yaml" ui-install
	KILN_ARTIFACTS=$AGENT_OS kiln_serve
	kiln image import "$TEST_OS" --name test-os >/dev/null
	write_hardware_csv "$E2E_WORK/hardware.csv" "$HOST,$MAC,$IP"
	kiln enroll "$E2E_WORK/hardware.csv" >/dev/null
	# Its result is what the page's preflight section shows (a failed check exits non-zero).
	kiln_cli preflight "$E2E_WORK/hardware.csv" --no-dhcp-probe >"$E2E_WORK/preflight.txt" 2>&1 || true

	local url api
	url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$E2E_DATA/api.json")
	api=${url#https://}
	local ca=$E2E_DATA/tls/ca.crt
	local body code
	code=$(nsx curl -s --cacert "$ca" -o "$E2E_WORK/no-token.json" -w '%{http_code}' "$url/api/v1/hardware")
	body=$(cat "$E2E_WORK/no-token.json")
	check "curl without a token: the API answers 401 and no machine ($code)" \
		bash -c '[ "$1" = 401 ] && ! grep -q "$2" <<<"$3"' _ "$code" "$HOST" "$body"
	code=$(nsx curl -s --cacert "$ca" -o /dev/null -w '%{http_code} %{redirect_url}' -H 'Accept: text/html' "$url/ui/")
	check "curl without a token: /ui/ redirects to the login form ($code)" [ "$code" = "303 $url/ui/login" ]
	code=$(nsx curl -s --cacert "$ca" -o /dev/null -w '%{http_code}' "$url/ui/app.js")
	check "curl without a token: the page's script answers 401 ($code)" [ "$code" = 401 ]

	local spki
	spki=$(spki_of "$api")
	[ -n "$spki" ] || die "could not read the admin API's certificate"
	mkdir -p "$E2E_WORK/browser"
	local ready=$E2E_WORK/browser/ready
	# The browser session, in the server's namespace (the admin API listens on its loopback).
	ip netns exec "$E2E_NS" python3 "$UI_PY" browse --chromium "$CHROMIUM" --url "$url" \
		--token-file "$E2E_DATA/admin.token" --spki "$spki" --machine "$HOST" \
		--discovered-mac "$STRANGER_MAC" --out "$E2E_WORK/browser" --ready-file "$ready" \
		--timeout 1500 >"$E2E_WORK/browser.out" 2>&1 &
	local browser=$!
	E2E_PIDS+=("$browser")
	E2E_LOGS+=("chromium=$E2E_WORK/browser/chromium.log")
	local i
	for i in $(seq 120); do
		[ -e "$ready" ] && break
		kill -0 "$browser" 2>/dev/null || break
		sleep 1
	done
	if [ -e "$ready" ]; then
		ip netns exec "$client_ns" python3 "$UI_PY" dhcp-discover sw0p "$STRANGER_MAC"
		kiln workflow create --template "$E2E_WORK/ui.yaml" --hardware "$HOST" >/dev/null
		truncate -s 4G "$E2E_WORK/disk.raw"
		vm_start "$HOST" --fw bios --tap tap0 --mac "$MAC" --disk "$E2E_WORK/disk.raw" --rw-disk --mem 1024
	else
		log "the browser never got to the page; not starting the machine"
	fi
	wait "$browser" || true
	cat "$E2E_WORK/browser.out"
	[ -n "${VM_PID:-}" ] && vm_stop "$VM_PID"
	local state
	state=$(kiln_cli workflow show "$HOST" -o json 2>/dev/null |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null) || state=unknown
	check "the workflow itself succeeded, as kiln workflow show says ($state)" [ "$state" = succeeded ]
	keep_screenshots
	check "a screenshot of the page was kept" [ -s "$E2E_WORK/browser/ui.png" ]
}

CASES=(provision)
if [ "${1:-}" = --list ]; then
	printf '%s\n' "${CASES[@]}"
	exit 0
fi
[ -s "$TEST_OS" ] || die "test OS image missing: images/test-os/build.sh $E2E_ASSETS/test-os"
[ -s "$AGENT_OS/initrd.img" ] || die "agent OS missing: images/agent/build.sh $AGENT_OS"
selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${CASES[@]}")
run_cases "${selected[@]}"
