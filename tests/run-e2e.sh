#!/bin/bash
# Kiln end-to-end suite: build the test boot assets and kiln, run every tests/e2e/*.sh test
# script, and sum their results into one final "N passed, N failed" line.
#
# Usage: sudo tests/run-e2e.sh [SCRIPT...]     (default: every tests/e2e/*.sh except lib.sh)
# Environment:
#   KILN_BIN=PATH        test this kiln binary instead of building target/release/kiln
#   KILN_E2E_ASSETS=DIR  asset cache (default target/e2e-assets)
#   others: see tests/e2e/lib.sh
# Needs root (network namespaces, taps) and the Debian packages: qemu-system-x86 ipxe
# ipxe-qemu ovmf linux-image-amd64 busybox-static cpio kmod iproute2 dnsmasq-base curl
# grub-efi-amd64-bin grub-common mtools dosfstools.
set -euo pipefail

REPO=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
ASSETS=${KILN_E2E_ASSETS:-$REPO/target/e2e-assets}
export KILN_E2E_ASSETS=$ASSETS

[ "$(id -u)" -eq 0 ] || { echo "run-e2e.sh: must run as root" >&2; exit 2; }

missing=()
for tool in qemu-system-x86_64 ip dnsmasq curl cpio gzip modprobe grub-mkstandalone mkfs.fat mcopy; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
for f in /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi /usr/lib/ipxe/qemu/efi-virtio.rom \
	/usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_VARS_4M.fd /bin/busybox; do
	[ -e "$f" ] || missing+=("$f")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "run-e2e.sh: missing ${missing[*]}" >&2
	echo "  apt-get install qemu-system-x86 ipxe ipxe-qemu ovmf linux-image-amd64 busybox-static cpio kmod iproute2 dnsmasq-base curl grub-efi-amd64-bin grub-common mtools dosfstools" >&2
	exit 2
fi

t0=$SECONDS
echo "# building test assets into $ASSETS"
"$REPO/images/test-initramfs/build.sh" "$ASSETS/initramfs" | sed 's/^/# /'
"$REPO/images/test-initramfs/local-disk.sh" "$ASSETS/local-disk.img" | sed 's/^/# /'
# The agent OS and the test OS image for the workflow suite (both cached by their inputs;
# a middling zstd level keeps a fresh CI build short: ~180 MB instead of ~140 MB at -19).
"$REPO/images/agent/build.sh" "$ASSETS/agent-os" 2>&1 | tail -n 1 | sed 's/^/# /'
KILN_TESTOS_ZSTD_LEVEL=${KILN_TESTOS_ZSTD_LEVEL:-10} \
	"$REPO/images/test-os/build.sh" "$ASSETS/test-os" 2>&1 | tail -n 3 | sed 's/^/# /'

mkdir -p "$REPO/target"
if [ -z "${KILN_BIN:-}" ]; then
	echo "# cargo build --release -p kiln -p kiln-sim"
	if ! (cd "$REPO" && cargo build --release -p kiln -p kiln-sim) >"$REPO/target/e2e-cargo-build.log" 2>&1; then
		tail -n 30 "$REPO/target/e2e-cargo-build.log" | sed 's/^/# /'
		echo "not ok - build: cargo build --release -p kiln -p kiln-sim failed"
		echo "0 passed, 1 failed"
		exit 1
	fi
	export KILN_BIN=$REPO/target/release/kiln
fi
echo "# kiln under test: $KILN_BIN"
echo "# assets and kiln ready after $((SECONDS - t0)) s"

scripts=("$@")
if [ ${#scripts[@]} -eq 0 ]; then
	for s in "$REPO"/tests/e2e/*.sh; do
		# lib.sh is the harness, vm-power.sh a virtual machine's chassis program (not tests)
		case $(basename "$s") in lib.sh | vm-power.sh) ;; *) scripts+=("$s") ;; esac
	done
fi

# Two lanes run side by side (QEMU under TCG keeps one core busy per machine; this machine
# has two): the longest suites (workflow, package, ui: ~15, ~15 and ~5 minutes) in one;
# every other script, in order, in the other (multi alone takes ~15). KILN_E2E_LANES=1 runs
# everything one after the other.
LANE_A="workflow.sh package.sh ui.sh"
lanes=${KILN_E2E_LANES:-2}
results=$(mktemp -d)
lane_pids=()
stop_lanes() {
	# the running test scripts first (their traps stop their VMs and servers), then the lanes
	# each lane is a process group of its own (set -m below): every script, case subshell and
	# VM in it gets the signal, and the cases' traps clean up
	for p in "${lane_pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap 'rm -rf "$results"' EXIT
trap 'echo "# interrupted"; stop_lanes; exit 130' INT
trap 'stop_lanes; exit 143' TERM

run_script() {
	local s=$1 name
	name=$(basename "$s" .sh)
	echo "# $(date -u +%T) started $name.sh"
	local t=$SECONDS
	local rc=0
	bash "$s" >"$results/$name.out" 2>&1 || rc=$?
	echo "$rc" >"$results/$name.rc"
	echo "# $(date -u +%T) finished $name.sh in $((SECONDS - t)) s (exit status $(cat "$results/$name.rc"))"
}
run_lane() {
	local s
	for s in "$@"; do run_script "$s"; done
}

lane_a=()
lane_b=()
for s in "${scripts[@]}"; do
	if [ "$lanes" -ge 2 ] && [[ " $LANE_A " == *" $(basename "$s") "* ]]; then lane_a+=("$s"); else lane_b+=("$s"); fi
done
set -m # lanes in process groups of their own
if [ ${#lane_a[@]} -gt 0 ]; then
	run_lane "${lane_a[@]}" &
	lane_pids+=($!)
fi
if [ ${#lane_b[@]} -gt 0 ]; then
	run_lane "${lane_b[@]}" &
	lane_pids+=($!)
fi
set +m
wait "${lane_pids[@]}" || true

passed=0
failed=0
for s in "${scripts[@]}"; do
	name=$(basename "$s" .sh)
	out=$results/$name.out
	echo "# ===== $name.sh"
	if [ ! -f "$results/$name.rc" ]; then
		echo "not ok - $name.sh: did not run to the end"
		failed=$((failed + 1))
		continue
	fi
	rc=$(cat "$results/$name.rc")
	# Only the suite's final line may read "N passed, N failed" (tests/run-all.sh sums every
	# such line it sees), so a script's own summary is shown reworded.
	sed -E 's/^([0-9]+) passed, ([0-9]+) failed$/# summary: passed=\1 failed=\2/' "$out"
	# A script's own "N passed, N failed" line if it prints one; else its ok / not ok lines;
	# else the script itself counts as one test, by its exit status.
	summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1 || true)
	if [ -n "$summary" ]; then
		p=${summary%% passed*}
		f=${summary#*, }
		f=${f%% failed*}
	else
		p=$(grep -c '^ok - ' "$out" || true)
		f=$(grep -c '^not ok - ' "$out" || true)
		if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
			if [ "$rc" -eq 0 ]; then p=1; else f=1; fi
		fi
	fi
	passed=$((passed + p))
	failed=$((failed + f))
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "not ok - $name.sh: exit status $rc"
		failed=$((failed + 1))
	fi
	echo "# $name.sh: passed=$p failed=$f (exit status $rc)"
done
echo "# suite took $((SECONDS - t0)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
