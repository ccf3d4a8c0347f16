#!/usr/bin/env bash
# The CLI over the admin API beside the direct-store CLI it replaced (issue 12, point 6):
# `kiln hardware list` with 1,000 machines, `kiln workflow create` for 100, enrolment, and more,
# timed from process start to exit (what a user or a script waits for).
#
#   bash bench/cli-api.sh [OLD_REV]      (root: runs inside a network namespace of its own)
#
# OLD_REV (default 9306116, the last CLI that opened the store itself) is built in release mode
# in a temporary worktree; the current checkout is built in release mode too. Results:
# bench/results/cli-api.{tsv,md}; BENCH_RUNS (default 7) runs per command.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
bench_settings
OLD_REV=${1:-9306116}
[ "$(id -u)" -eq 0 ] || die "run as root (a network namespace keeps the servers off every real interface)"
lock_bench_work cli-api
new_run cli-api
NS=kiln-bench-cli-$$
OLD_TREE=$RUN/old-tree
trap 'rc=$?; git -C "$REPO" worktree remove --force "$OLD_TREE" 2>/dev/null || true; release_run $rc "$NS"' EXIT

log "building the current kiln (release)"
(cd "$REPO" && cargo build --release --locked -p kiln >&2)
NEW=$REPO/target/release/kiln
log "building kiln at $OLD_REV (release) in $OLD_TREE"
git -C "$REPO" worktree add --detach "$OLD_TREE" "$OLD_REV" >&2
(cd "$OLD_TREE" && CARGO_TARGET_DIR=$REPO/target/bench-old cargo build --release --locked -p kiln >&2)
OLD=$REPO/target/bench-old/release/kiln

ip netns add "$NS"
ip -n "$NS" link set lo up
meta_run "bash bench/cli-api.sh $OLD_REV"
meta old.rev "$OLD_REV"
log "measuring (machine load: $(loadavg))"
machine_busy && log "warning: the machine is busy; figures will be noisy"
mkdir -p "$BENCH_DIR/results"
ip netns exec "$NS" "$PY" "$BENCH_DIR/cli-api.py" "$OLD" "$NEW" "$RUN/work" \
	"$BENCH_DIR/results/cli-api.tsv" "${BENCH_RUNS:-7}" | tee "$BENCH_DIR/results/cli-api.md"
