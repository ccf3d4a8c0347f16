#!/usr/bin/env bash
# Bad input: thousands of malformed DHCP and TFTP packets at a running kiln,
# then a valid DISCOVER and RRQ must still be answered and traversal refused.
# Everything runs in namespaces this script creates (lib.sh) and removes.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"

COUNT=${KILN_MALFORMED_COUNT:-3000}
MAC=52:54:00:e2:0f:01
IP=10.77.0.61

e2e_setup malformed
ns_create 0
# The client lives in its own namespace on the far end of the bridge port sw0.
CLIENT_NS=$E2E_NS-client
ip netns add "$CLIENT_NS"
trap 'ip netns del "$CLIENT_NS" 2>/dev/null; e2e_cleanup' EXIT
ip -n "$E2E_NS" link set sw0p netns "$CLIENT_NS"
ip -n "$CLIENT_NS" link set lo up
ip -n "$CLIENT_NS" addr add 10.77.0.2/24 dev sw0p
ip -n "$CLIENT_NS" link set sw0p up

write_hardware_csv "$E2E_WORK/hardware.csv" "fuzzed,$MAC,$IP"
kiln_serve --no-router-advert
kiln enroll "$E2E_WORK/hardware.csv" >/dev/null

rc=0
ip netns exec "$CLIENT_NS" python3 "$(dirname "$0")/malformed.py" "$SERVER_IP" sw0p "$MAC" "$IP" undionly.kpxe "$COUNT" || rc=$?
if kill -0 "$KILN_PID" 2>/dev/null; then echo "ok - kiln is still running"; else echo "not ok - kiln died"; rc=1; fi
[ "$rc" -eq 0 ] || E2E_FAILED=1
exit "$rc"
