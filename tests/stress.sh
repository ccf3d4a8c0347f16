#!/usr/bin/env bash
# Flaky-test hunt (not part of CI): runs the unit/integration suite (`cargo test --workspace`)
# N times with CPU load beside it (busy loops, so tests that lean on timing or on a quiet
# machine show up), then lists every test that failed even once and how often.
#
#   bash tests/stress.sh [N]          # N runs (default: $STRESS_RUNS, else 10)
#   STRESS_LOAD=2 bash tests/stress.sh 20    # two busy loops instead of one
#   bash tests/stress.sh 5 -p kiln-bmc       # extra arguments go to `cargo test`
#
# Environment: STRESS_RUNS (N), STRESS_LOAD (busy loops, default 1: on a 2-core machine that
# takes the other core), STRESS_LOAD_MAX_S (the loops stop by themselves after this many
# seconds, default 6 h, in case this script is killed too hard to run its trap),
# STRESS_KEEP=1 (keep the per-run logs; their directory is printed).
# Exit status: 0 when every run passed, 1 when some test failed, 2 on bad usage.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${STRESS_RUNS:-10}
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
	runs=$1
	shift
fi
load=${STRESS_LOAD:-1}
load_max_s=${STRESS_LOAD_MAX_S:-21600}
for v in runs load load_max_s; do
	[[ ${!v} =~ ^[0-9]+$ ]] || { echo "stress.sh: $v must be a number, got '${!v}'" >&2; exit 2; }
done
[ "$runs" -ge 1 ] || { echo "stress.sh: N must be at least 1" >&2; exit 2; }

logs=$(mktemp -d "${TMPDIR:-/tmp}/kiln-stress.XXXXXX")
load_pids=()
stop_load() {
	local p
	for p in "${load_pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${load_pids[@]}"; do wait "$p" 2>/dev/null; done
	load_pids=()
}
finish() {
	stop_load
	if [ "${STRESS_KEEP:-}" = 1 ]; then echo "stress.sh: logs kept in $logs"; else rm -rf "$logs"; fi
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Build everything first, so the runs time the tests and not the compiler.
echo "=== building the tests (cargo test --workspace --no-run $*)"
if ! cargo test --workspace --locked --no-run "$@" >"$logs/build.out" 2>&1; then
	tail -n 30 "$logs/build.out"
	echo "stress.sh: the build failed"
	exit 1
fi

for ((i = 0; i < load; i++)); do
	# A bounded busy loop: ends by itself after load_max_s even if nobody kills it.
	bash -c 'end=$((SECONDS + $1)); while [ "$SECONDS" -lt "$end" ]; do :; done' busy "$load_max_s" &
	load_pids+=($!)
done
echo "=== $runs run(s) with $load busy loop(s) beside (pids ${load_pids[*]:-none})"

# failures.txt: one line per failed test per run: "<binary> <test>" (binary as cargo names it).
: >"$logs/failures.txt"
failed_runs=0
for ((run = 1; run <= runs; run++)); do
	start=$SECONDS
	cargo test --workspace --locked --no-fail-fast "$@" >"$logs/run-$run.out" 2>&1
	rc=$?
	# A binary's section opens with "Running src/lib.rs (target/debug/deps/kiln_dhcp-0123abcd)" (or
	# "Doc-tests crate"); "test NAME ... FAILED" is a failed test in it; with --no-fail-fast cargo
	# names a failed binary right after it: "error: test failed, to rerun pass `-p kiln-bmc --test
	# ipmi_sim`". A binary that failed with no FAILED line (a crash) is "(the whole binary)".
	awk '
		function flush(label,   k) { for (k = 1; k <= n; k++) print label " :: " failed[k]; n = 0 }
		/^ *Running / { flush(section); section = $2 " " $3; next }
		/^ *Doc-tests / { flush(section); section = "doc-tests " $2; next }
		/^test .* \.\.\. FAILED$/ { t = $0; sub(/^test /, "", t); sub(/ \.\.\. FAILED$/, "", t); failed[++n] = t; next }
		/^error: test failed, to rerun pass / {
			label = $0; sub(/^[^`]*`/, "", label); sub(/`.*$/, "", label)
			if (n == 0) print label " :: (the whole binary)"
			flush(label)
		}
		END { flush(section) }
	' "$logs/run-$run.out" | sort -u >"$logs/run-$run.failed"
	if [ "$rc" -ne 0 ] && [ ! -s "$logs/run-$run.failed" ]; then
		echo "(run $run: cargo test exited $rc with no failed test named; see its log) :: (cargo)" >"$logs/run-$run.failed"
	fi
	cat "$logs/run-$run.failed" >>"$logs/failures.txt"
	summary=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$logs/run-$run.out" |
		awk '{p += $4; f += $6} END {printf "%d passed, %d failed", p, f}')
	if [ -s "$logs/run-$run.failed" ]; then
		failed_runs=$((failed_runs + 1))
		echo "run $run/$runs: $summary in $((SECONDS - start)) s: FAILED"
		sed 's/^/    /' "$logs/run-$run.failed"
		cp "$logs/run-$run.out" "$logs/failed-run-$run.out"
		STRESS_KEEP=1
	else
		echo "run $run/$runs: $summary in $((SECONDS - start)) s"
		rm -f "$logs/run-$run.out"
	fi
done

echo "=== $runs run(s), $failed_runs with failures"
if [ -s "$logs/failures.txt" ]; then
	echo "tests that failed at least once (times failed / runs):"
	sort "$logs/failures.txt" | uniq -c | sort -rn | awk -v n="$runs" '{c = $1; $1 = ""; printf "  %d/%d %s\n", c, n, substr($0, 2)}'
	exit 1
fi
echo "no test failed"
