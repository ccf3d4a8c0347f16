#!/usr/bin/env bash
# What kiln's IPv6 router advertisement saves: a BIOS machine (SeaBIOS + iPXE
# ROM) netboots to the test initramfs twice, in a private namespace, once with
# `kiln serve` as it is (sends a minimal RA) and once with --no-router-advert,
# where iPXE waits for IPv6 autoconfiguration to time out. Prints the time to
# the initramfs marker for each, and the difference. Run as root.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
# One benchmark at a time: two would share the CPUs and spoil each other's figures.
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
BENCH_WORK=${BENCH_WORK:-$REPO/target/bench-work}
lock_bench_work router-advert.sh
RUNS=${RUNS:-2}
(cd "$REPO" && cargo build --release -q -p kiln)
export KILN_BIN=$REPO/target/release/kiln
ASSETS=${KILN_E2E_ASSETS:-$REPO/target/e2e-assets}
export KILN_E2E_ASSETS=$ASSETS
"$REPO/images/test-initramfs/build.sh" "$ASSETS/initramfs" >/dev/null

# One boot in its own namespace; prints seconds from power-on to the marker.
one_boot() {
  (
    # shellcheck source=tests/e2e/lib.sh
    source "$REPO/tests/e2e/lib.sh"
    e2e_setup "ra-$1-$2"
    ns_create 1
    write_hardware_csv "$E2E_WORK/hardware.csv" "ra-node,52:54:00:0a:00:01,10.77.0.57"
    kiln enroll "$E2E_WORK/hardware.csv" >/dev/null
    kiln hardware netboot ra-node on >/dev/null
    if [ "$1" = with-ra ]; then kiln_serve >/dev/null; else kiln_serve --no-router-advert >/dev/null; fi
    vm_start ra-node --fw bios --tap tap0 --mac 52:54:00:0a:00:01 >/dev/null
    wait_for_marker "$VM_LOG" "$M_INITRAMFS" 180 "$VM_PID" >/dev/null || { echo fail; exit 1; }
    echo $((SECONDS - VM_START))
  ) | tail -n 1
}

declare -A total=([with-ra]=0 [no-ra]=0)
for run in $(seq "$RUNS"); do
  for mode in with-ra no-ra; do
    t=$(one_boot "$mode" "$run")
    [ "$t" = fail ] && { echo "boot $mode #$run failed"; exit 1; }
    echo "run $run  $mode: power-on -> initramfs in $t s"
    total[$mode]=$((total[$mode] + t))
  done
done
with=$((total[with-ra] / RUNS))
without=$((total[no-ra] / RUNS))
echo "mean: with kiln's RA ${with} s, with --no-router-advert ${without} s: the RA saves $((without - with)) s per netboot"
