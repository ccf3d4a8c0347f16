#!/usr/bin/env bash
# Every test Kiln has: formatting, lints, unit and integration tests, then the
# end-to-end suites (QEMU machines netbooting inside network namespaces that
# the suites create and remove). Ends with one "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

# Runs a step; counts the tests it reports, or the step itself when it reports none.
step() {
  local name=$1
  shift
  echo "=== $name: $*"
  "$@" 2>&1 | tee "$log/$name.out"
  local rc=${PIPESTATUS[0]}
  local p f
  # cargo test: "test result: ok. 12 passed; 0 failed; ..."; suites: "N passed, N failed".
  p=$(grep -Eo '(test result: [a-zA-Z]+\. )?[0-9]+ passed[;,] [0-9]+ failed' "$log/$name.out" |
      awk '{for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed/) s += $i} END {print s + 0}')
  f=$(grep -Eo '(test result: [a-zA-Z]+\. )?[0-9]+ passed[;,] [0-9]+ failed' "$log/$name.out" |
      awk '{for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) s += $i} END {print s + 0}')
  if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
    if [ "$rc" -eq 0 ]; then p=1; else f=1; fi
  elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1 # the step failed outside any counted test (a build error, say)
  fi
  passed=$((passed + p))
  failed=$((failed + f))
  echo "=== $name: rc=$rc, $p passed, $f failed"
}

# The end-to-end suites' test OS image (debootstrap, minutes of mostly dpkg and disk work)
# builds in the background meanwhile; tests/run-e2e.sh then finds it cached.
testos_log=$log/test-os-build.log
if [ "$(id -u)" -eq 0 ]; then
  KILN_TESTOS_ZSTD_LEVEL=${KILN_TESTOS_ZSTD_LEVEL:-10} \
    images/test-os/build.sh "${KILN_E2E_ASSETS:-target/e2e-assets}/test-os" >"$testos_log" 2>&1 &
  testos_pid=$!
fi

step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets --locked -- -D warnings
step unit cargo test --workspace --locked --no-fail-fast
# The end-to-end suites drive the debug build the unit step already compiled most of
# (a second, release build of everything would add minutes to CI, not coverage).
step build cargo build --workspace --locked
export KILN_BIN=$PWD/target/debug/kiln
if [ -n "${testos_pid:-}" ] && ! wait "$testos_pid"; then
  echo "=== test OS image build failed (run-e2e.sh tries again):"
  tail -n 20 "$testos_log"
fi
step e2e bash tests/run-e2e.sh

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
