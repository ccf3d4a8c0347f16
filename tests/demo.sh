#!/usr/bin/env bash
# Kiln demo, the README's main command: from powered-off (virtual) metal to a Kubernetes
# cluster on this machine. Installs what is missing (Debian packages, sushy-tools), builds
# kiln, the agent OS and the test OS (both cached), then runs
#
#   kiln demo --assets DIR "$@"
#
# which creates a private network namespace with QEMU machines behind virtual BMCs (IPMI and
# Redfish), enrolls them, creates the cluster, shows each machine's progress live, prints the
# time of each phase, and removes everything at the end (or on Ctrl-C). Run as root.
#
#   sudo tests/demo.sh                 single-node cluster (one untainted control plane)
#   sudo tests/demo.sh --nodes 3       one control plane and two workers
#   sudo tests/demo.sh --help          every option of kiln demo
#
# Environment: KILN_DEMO_ASSETS (default target/e2e-assets, shared with tests/run-e2e.sh),
# KILN_BIN (use this kiln instead of building target/release/kiln).
set -euo pipefail
REPO=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
ASSETS=${KILN_DEMO_ASSETS:-$REPO/target/e2e-assets}

[ "$(id -u)" -eq 0 ] || { echo "tests/demo.sh: run as root (sudo): the demo creates a network namespace, taps and QEMU machines" >&2; exit 2; }

# shellcheck source=.ci/packages.sh
source "$REPO/.ci/packages.sh"
missing=$(kiln_missing_packages | tr '\n' ' ')
if [ -n "$missing" ] || [ ! -x "$KILN_VENV/bin/sushy-emulator" ]; then
	echo "== installing: ${missing:-}${missing:+ }$([ -x "$KILN_VENV/bin/sushy-emulator" ] || echo "sushy-tools (venv $KILN_VENV)")"
	kiln_install_packages
fi
command -v cargo >/dev/null || { echo "tests/demo.sh: cargo is required (a Rust toolchain, rustup.rs)" >&2; exit 1; }

t0=$SECONDS
if [ -z "${KILN_BIN:-}" ]; then
	echo "== cargo build --release -p kiln"
	(cd "$REPO" && cargo build --release -q -p kiln)
	KILN_BIN=$REPO/target/release/kiln
fi
echo "== agent OS and test OS (cached) in $ASSETS"
"$REPO/images/agent/build.sh" "$ASSETS/agent-os" 2>&1 | tail -n 1 | sed 's/^/   /'
KILN_TESTOS_ZSTD_LEVEL=${KILN_TESTOS_ZSTD_LEVEL:-10} \
	"$REPO/images/test-os/build.sh" "$ASSETS/test-os" 2>&1 | tail -n 1 | sed 's/^/   /'
echo "== ready after $((SECONDS - t0)) s; kiln demo --assets $ASSETS $*"
exec "$KILN_BIN" demo --assets "$ASSETS" "$@"
