#!/usr/bin/env bash
# Builds Kiln's in-memory OS from Debian packages: Debian's kernel, busybox,
# the statically linked kiln-agent and the kernel modules real servers need,
# loaded in dependency order.
#
#   images/agent/build.sh OUT_DIR      -> OUT_DIR/vmlinuz, OUT_DIR/initrd.img
#
# Needs: linux-image-amd64, busybox-static, cpio, kmod, zstd (apt-get).
# KVER selects the kernel (default: the newest under /lib/modules).
set -euo pipefail

OUT=${1:?usage: build.sh OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KVER=${KVER:-$(ls /lib/modules | sort -V | tail -1)}
VMLINUZ=/boot/vmlinuz-$KVER
[ -f "$VMLINUZ" ] || { echo "build.sh: $VMLINUZ missing (apt-get install linux-image-amd64)" >&2; exit 1; }
command -v busybox >/dev/null || { echo "build.sh: busybox missing (apt-get install busybox-static)" >&2; exit 1; }

# Drivers for the NICs and storage controllers of real racks and of QEMU,
# and the filesystems the installed OS may use.
MODULES=(
  virtio_pci virtio_net e1000 e1000e igb ixgbe i40e ice bnxt_en mlx5_core tg3
  virtio_blk virtio_scsi nvme ahci sd_mod megaraid_sas mpt3sas
  ext4 xfs vfat nls_cp437 nls_iso8859_1
)

# 1. The agent, statically linked (busybox userland, no dynamic loader).
TARGET=x86_64-unknown-linux-gnu
(cd "$REPO" && RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --locked -p kiln-agent --target "$TARGET" >&2)
AGENT=$REPO/target/$TARGET/release/kiln-agent
# Static (or static-pie) binaries need no shared libraries.
if readelf -d "$AGENT" | grep -q NEEDED; then
  echo "build.sh: $AGENT needs shared libraries: $(readelf -d "$AGENT" | grep NEEDED | tr -s ' ')" >&2
  exit 1
fi

mkdir -p "$OUT"
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT"/{bin,sbin,proc,sys,dev,run,tmp,mnt,etc,lib/modules,usr/share/udhcpc}
cp /bin/busybox "$ROOT/bin/busybox"
install -m 0755 "$AGENT" "$ROOT/bin/kiln-agent"

# 2. Modules and their dependencies, in load order, each once.
declare -A seen=()
: >"$ROOT/lib/modules/load-order"
for m in "${MODULES[@]}"; do
  while read -r verb path _; do
    [ "$verb" = insmod ] || continue
    name=$(basename "$path")
    [ -n "${seen[$name]:-}" ] && continue
    seen[$name]=1
    cp "$path" "$ROOT/lib/modules/$name"
    echo "$name" >>"$ROOT/lib/modules/load-order"
  done < <(modprobe -S "$KVER" --show-depends "$m" 2>/dev/null || echo "skip $m")
done

install -m 0755 "$HERE/udhcpc.script" "$ROOT/usr/share/udhcpc/default.script"
install -m 0755 "$HERE/init" "$ROOT/init"

# 3. Pack: zstd (the Debian kernel has CONFIG_RD_ZSTD) decompresses fast under TCG.
(cd "$ROOT" && find . -print0 | sort -z | cpio -o -H newc --null --quiet --reproducible) |
  zstd -q -19 -T0 >"$OUT/initrd.img.tmp"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
cp "$VMLINUZ" "$OUT/vmlinuz"
echo "agent OS: kernel $KVER, $(wc -l <"$ROOT/lib/modules/load-order") modules," \
  "initrd $(du -h "$OUT/initrd.img" | cut -f1) -> $OUT" >&2
