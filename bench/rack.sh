#!/usr/bin/env bash
# bench/rack.sh N [--postgres] [kiln-rack args...]: provisions N simulated machines (kiln-rack,
# crate kiln-sim) with real `kiln serve` (SQLite; with --postgres, on a PostgreSQL cluster this
# script starts itself: initdb/pg_ctl in a temp dir, unix socket only, removed at the end),
# powered on through Kiln's BMC job, and prints the figures: machines per minute, p50/p99 of
# DHCP, iPXE script, agent calls and phone-home, the simulated BMCs' power-on, each kiln serve's
# CPU seconds and peak RSS. `--postgres --servers 2` runs an HA pair on the rack's segment;
# `--server-cpu 0.4` caps each kiln serve at 0.4 CPU (a CPU cgroup each), so one server and two
# compare at the same CPU per server on a machine whose cores PostgreSQL and the generator share.
# Root (namespaces).
#
# Environment: KILN_BIN (default target/release/kiln), KILN_RACK (default: kiln-rack next to
# KILN_BIN), BENCH_OUT (a directory: writes rack-N[-LABEL].json and .txt there; LABEL from
# BENCH_LABEL).
# kiln-rack makes and removes its own namespaces (kiln-demo-PID for the server, kiln-rack-PID
# for the machines, kiln-srv2-PID for a second server); if it is killed, the trap below stops
# what is left in them and removes them.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
N=${1:?usage: bench/rack.sh N [--postgres] [kiln-rack args...]}
shift
USE_PG=0
RACK_ARGS=()
for a in "$@"; do
	if [ "$a" = --postgres ]; then USE_PG=1; else RACK_ARGS+=("$a"); fi
done
# shellcheck source=tests/lib/postgres.sh
source "$REPO/tests/lib/postgres.sh"
KILN_BIN=${KILN_BIN:-$REPO/target/release/kiln}
KILN_RACK=${KILN_RACK:-$(dirname "$KILN_BIN")/kiln-rack}
[ -x "$KILN_BIN" ] || { echo "no kiln at $KILN_BIN (cargo build --release -p kiln)" >&2; exit 1; }
[ -x "$KILN_RACK" ] || { echo "no kiln-rack at $KILN_RACK (cargo build --release -p kiln-sim)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "must run as root (network namespaces)" >&2; exit 1; }

RACK_PID=
# shellcheck disable=SC2317 # run by the trap
cleanup() {
	local ns pid
	if [ -z "$RACK_PID" ]; then
		pg_stop ""
		return 0
	fi
	if kill -0 "$RACK_PID" 2>/dev/null; then
		kill -TERM "$RACK_PID" 2>/dev/null || true
		wait "$RACK_PID" 2>/dev/null || true
	fi
	for ns in "kiln-demo-$RACK_PID" "kiln-rack-$RACK_PID" "kiln-srv2-$RACK_PID"; do
		ip netns list | awk '{print $1}' | grep -qxF "$ns" || continue
		for pid in $(ip netns pids "$ns"); do kill -TERM "$pid" 2>/dev/null || true; done
		sleep 1
		for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null || true; done
		ip netns del "$ns" || true
	done
	pg_stop ""
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$USE_PG" = 1 ]; then
	pg_start
	# kiln serve's flags come after kiln-rack's `--`.
	case " ${RACK_ARGS[*]} " in
	*" -- "*) RACK_ARGS+=(--store "$STORE") ;;
	*) RACK_ARGS+=(-- --store "$STORE") ;;
	esac
fi
out=$(mktemp)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"$KILN_RACK" "$N" --kiln "$KILN_BIN" --template "$REPO/workflows/debian-test-os.yaml" -o json "${RACK_ARGS[@]}" >"$out" &
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
cap = r.get("server_cpu_cap")
print(f"  kiln serve: CPU {r['server_cpu_seconds']:.1f} s, peak RSS {r['server_max_rss_mib']:.0f} MiB; load generator CPU {r['generator_cpu_seconds']:.1f} s"
      + (f"; each server capped at {cap:g} CPU" if cap else ""))
if len(r["servers"]) > 1:
    for s in r["servers"]:
        print(f"    {s['id']} ({s['address']}): CPU {s['cpu_seconds']:.1f} s, peak RSS {s['max_rss_mib']:.0f} MiB, {s['netboots']} netboots")
for f in r["failed"][:10]:
    print(f"  not succeeded: {f}")
PY
if [ -n "${BENCH_OUT:-}" ]; then
	mkdir -p "$BENCH_OUT"
	name=rack-$N${BENCH_LABEL:+-$BENCH_LABEL}
	cp "$out" "$BENCH_OUT/$name.json"
	cp "${out}.txt" "$BENCH_OUT/$name.txt"
fi
rm -f "$out" "${out}.txt"
exit "$rc"
