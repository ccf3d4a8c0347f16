#!/usr/bin/env bash
# bench/rack.sh N [kiln-rack args...]: provisions N simulated machines (kiln-rack, crate kiln-sim)
# with one real `kiln serve` on SQLite, powered on through Kiln's Redfish BMC job, and prints the
# figures: machines per minute, p50/p99 of DHCP, iPXE script, agent calls and phone-home, the
# simulated BMCs' power-on, kiln serve's CPU seconds and peak RSS. Root (namespaces).
#
# Environment: KILN_BIN (default target/release/kiln), KILN_RACK (default: kiln-rack next to
# KILN_BIN), BENCH_OUT (a directory: writes rack-N.json and rack-N.txt there).
# kiln-rack makes and removes its own namespaces (kiln-demo-PID for the server, kiln-rack-PID
# for the machines); if it is killed, the trap below stops what is left in them and removes them.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
N=${1:?usage: bench/rack.sh N [kiln-rack args...]}
shift
KILN_BIN=${KILN_BIN:-$REPO/target/release/kiln}
KILN_RACK=${KILN_RACK:-$(dirname "$KILN_BIN")/kiln-rack}
[ -x "$KILN_BIN" ] || { echo "no kiln at $KILN_BIN (cargo build --release -p kiln)" >&2; exit 1; }
[ -x "$KILN_RACK" ] || { echo "no kiln-rack at $KILN_RACK (cargo build --release -p kiln-sim)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "must run as root (network namespaces)" >&2; exit 1; }

RACK_PID=
# shellcheck disable=SC2317 # run by the trap
cleanup() {
	local ns pid
	[ -n "$RACK_PID" ] || return 0
	if kill -0 "$RACK_PID" 2>/dev/null; then
		kill -TERM "$RACK_PID" 2>/dev/null || true
		wait "$RACK_PID" 2>/dev/null || true
	fi
	for ns in "kiln-demo-$RACK_PID" "kiln-rack-$RACK_PID"; do
		ip netns list | awk '{print $1}' | grep -qxF "$ns" || continue
		for pid in $(ip netns pids "$ns"); do kill -TERM "$pid" 2>/dev/null || true; done
		sleep 1
		for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null || true; done
		ip netns del "$ns" || true
	done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

out=$(mktemp)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"$KILN_RACK" "$N" --kiln "$KILN_BIN" --template "$REPO/workflows/debian-test-os.yaml" -o json "$@" >"$out" &
RACK_PID=$!
rc=0
wait "$RACK_PID" || rc=$?
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
[ -s "$out" ] || { echo "kiln-rack printed no figures (exit status $rc)" >&2; exit 1; }
python3 - "$out" "$N" "$load_before" "$load_after" "$(git -C "$REPO" rev-parse --short HEAD)" <<'PY' | tee "${out}.txt"
import json, sys
path, n, before, after, rev = sys.argv[1:]
r = json.load(open(path))
print(f"rack of {n} simulated machines (checkout {rev}; load average {before} before, {after} after)")
print(f"  succeeded {r['succeeded']}/{r['machines']} in {r['provision_seconds']:.1f} s: {r['machines_per_minute']:.0f} machines/minute")
print(f"  all BMCs powered on {r['power_on_seconds'] or 0:.1f} s after workflow create")
for k, s in r["latency"].items():
    print(f"  {k:<12} n={s['count']:<6} p50 {s['p50_ms']:8.1f} ms  p99 {s['p99_ms']:8.1f} ms  max {s['max_ms']:8.1f} ms")
print(f"  DHCP resent {r['dhcp_resent']}; served {r['boot_bytes'] >> 20} MiB boot files, {r['image_bytes'] >> 20} MiB images")
st = r.get("storm")
if st:
    print(f"  boot storm: {st['machines']} DORAs at once, done in {st['seconds']:.2f} s; {st['resent']} resent, {st['failed']} without a lease")
print(f"  kiln serve: CPU {r['server_cpu_seconds']:.1f} s, peak RSS {r['server_max_rss_mib']:.0f} MiB")
for f in r["failed"][:10]:
    print(f"  not succeeded: {f}")
PY
if [ -n "${BENCH_OUT:-}" ]; then
	mkdir -p "$BENCH_OUT"
	cp "$out" "$BENCH_OUT/rack-$N.json"
	cp "${out}.txt" "$BENCH_OUT/rack-$N.txt"
fi
rm -f "$out" "${out}.txt"
exit "$rc"
