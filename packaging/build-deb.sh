#!/usr/bin/env bash
# Builds Kiln's Debian package with cargo-deb: target/debian/kiln_VERSION_amd64.deb (the
# stripped binary, the agent OS, workflows, kiln.service, /etc/kiln/kiln.toml, man pages)
# and kiln-dbgsym_VERSION_amd64.ddeb (the binary's debug info, by build id).
#
#   packaging/build-deb.sh            builds the agent OS with images/agent/build.sh first
#   KILN_AGENT_OS=DIR packaging/build-deb.sh
#                                     packages an agent OS already built by that script
#                                     (DIR/vmlinuz, DIR/initrd.img; the e2e suites' cache)
#   KILN_DEB_FAST=1 packaging/build-deb.sh
#                                     lighter compression (cargo deb --fast): the tests' build;
#                                     xz over the ~125 MB of debug info takes minutes
#
# Needs: cargo-deb (`cargo install cargo-deb --locked`; installed here if missing), binutils
# (objcopy, strip), dpkg-dev, and what images/agent/build.sh needs (linux-image-amd64,
# busybox-static, cpio, kmod, zstd). Prints the paths of the .deb and the .ddeb.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
STAGE=$REPO/target/deb
cd "$REPO"

if ! command -v cargo-deb >/dev/null; then
	echo "# installing cargo-deb (crates.io)" >&2
	cargo install cargo-deb --locked >&2
fi

# 1. The agent OS (kernel and initrd from Debian packages, the static agent).
mkdir -p "$STAGE"
rm -rf "$STAGE/agent-os"
if [ -n "${KILN_AGENT_OS:-}" ]; then
	if [ ! -s "$KILN_AGENT_OS/vmlinuz" ] || [ ! -s "$KILN_AGENT_OS/initrd.img" ]; then
		echo "build-deb.sh: $KILN_AGENT_OS has no vmlinuz + initrd.img" >&2
		exit 1
	fi
	mkdir -p "$STAGE/agent-os"
	cp "$KILN_AGENT_OS/vmlinuz" "$KILN_AGENT_OS/initrd.img" "$STAGE/agent-os/"
else
	images/agent/build.sh "$STAGE/agent-os" >&2
fi

# 2. The release binary (cargo-deb would build it too; built here for the man pages).
cargo build --release --locked -p kiln >&2
rm -rf "$STAGE/man" "$STAGE/completions"
mkdir -p "$STAGE/completions"
target/release/kiln man --out-dir "$STAGE/man" 2>/dev/null
gzip -9n "$STAGE"/man/*.1
target/release/kiln completions bash >"$STAGE/completions/kiln"

# 3. The packages: cargo-deb strips the binary and moves its debug info to the .ddeb.
rm -f target/debian/kiln_*.deb target/debian/kiln-dbgsym_*.ddeb
fast=()
[ "${KILN_DEB_FAST:-0}" = 1 ] && fast=(--fast)
cargo deb -p kiln --no-build --locked "${fast[@]}" >&2
ls "$REPO"/target/debian/kiln_*.deb "$REPO"/target/debian/kiln-dbgsym_*.ddeb
