#!/usr/bin/env bash
# Builds Kiln's in-memory OS from Debian packages: Debian's kernel, busybox,
# the statically linked kiln-agent and the kernel modules real servers need,
# loaded in dependency order.
#
#   images/agent/build.sh OUT_DIR      -> OUT_DIR/vmlinuz, OUT_DIR/initrd.img
#
# Needs: linux-image-amd64, busybox-static, cpio, kmod, zstd, binutils (apt-get).
# KVER selects the kernel (default: the newest under /lib/modules). COMPRESS picks the
# initramfs compression: zstd (default, level ZSTD_LEVEL, default 19), lz4, gzip or none.
#
# Boot speed under TCG (bench/agent-boot.sh): the agent is stripped (its debug info is 45 MB
# the kernel would unpack at every boot), and the init loads only the drivers whose modalias
# matches a device present (like udev coldplug, with busybox modprobe over a depmod of the
# shipped subset) instead of every module: the NICs' first, then the agent starts while the
# rest load in the background; file systems load on demand when mount asks.
set -euo pipefail

OUT=${1:?usage: build.sh OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KVER=${KVER:-$(ls /lib/modules | sort -V | tail -1)}
VMLINUZ=/boot/vmlinuz-$KVER
[ -f "$VMLINUZ" ] || { echo "build.sh: $VMLINUZ missing (apt-get install linux-image-amd64)" >&2; exit 1; }
command -v busybox >/dev/null || { echo "build.sh: busybox missing (apt-get install busybox-static)" >&2; exit 1; }
command -v strip >/dev/null || { echo "build.sh: strip missing (apt-get install binutils)" >&2; exit 1; }
command -v depmod >/dev/null || { echo "build.sh: depmod missing (apt-get install kmod)" >&2; exit 1; }
COMPRESS=${COMPRESS:-zstd}

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
MODDIR=lib/modules/$KVER
mkdir -p "$ROOT"/{bin,sbin,proc,sys,dev,run,tmp,mnt,etc,"$MODDIR",usr/share/udhcpc}
cp /bin/busybox "$ROOT/bin/busybox"
# The applet links, made here rather than by `busybox --install` at every boot. modprobe goes
# to /bin: the kernel runs /sbin/modprobe for the modules it asks for while it boots, before
# /init says where modprobe is (there are none of those in the initramfs).
busybox --list-full | while read -r applet; do
	case $applet in
	bin/busybox) continue ;;
	sbin/modprobe) applet=bin/modprobe ;;
	esac
	mkdir -p "$ROOT/$(dirname "$applet")"
	ln -sf /bin/busybox "$ROOT/$applet"
done
# Stripped: the debug info (~45 MB) would only slow the kernel's unpacking at every boot.
strip -o "$ROOT/bin/kiln-agent" "$AGENT"
chmod 0755 "$ROOT/bin/kiln-agent"

# 2. Modules and their dependencies, each once, at their usual paths; depmod over this
# subset gives busybox modprobe the dependency order (modules.dep) and the device and
# file system aliases (modules.alias) it loads by.
declare -A seen=()
for m in "${MODULES[@]}"; do
  while read -r verb path _; do
    [ "$verb" = insmod ] || continue
    [ -n "${seen[$path]:-}" ] && continue
    seen[$path]=1
    rel=${path#/lib/modules/$KVER/}
    mkdir -p "$ROOT/$MODDIR/$(dirname "$rel")"
    cp "$path" "$ROOT/$MODDIR/$rel"
  done < <(modprobe -S "$KVER" --show-depends "$m" 2>/dev/null || echo "skip $m")
done
for f in modules.builtin modules.builtin.modinfo modules.order; do
  cp "/lib/modules/$KVER/$f" "$ROOT/$MODDIR/"
done
depmod -b "$ROOT" "$KVER"
# busybox modprobe reads the text files only.
rm -f "$ROOT/$MODDIR"/*.bin "$ROOT/$MODDIR/modules.builtin.modinfo" "$ROOT/$MODDIR/modules.order"
for m in "${MODULES[@]}"; do
  grep -q "/${m//_/[_-]}\.ko:" "$ROOT/$MODDIR/modules.dep" ||
    { echo "build.sh: module $m is not in the initramfs" >&2; exit 1; }
done
# busybox mount without -t tries these in order; mounting one makes the kernel ask
# /sbin/modprobe for fs-<type>, which loads it (and its dependencies) on demand.
printf '%s\n' ext4 xfs vfat >"$ROOT/etc/filesystems"

install -m 0755 "$HERE/udhcpc.script" "$ROOT/usr/share/udhcpc/default.script"
install -m 0755 "$HERE/init" "$ROOT/init"
install -m 0755 "$HERE/coldplug" "$ROOT/bin/kiln-coldplug"

# 3. Pack (the Debian kernel has CONFIG_RD_ZSTD, _LZ4, _GZIP; see BENCHMARKS.md for the
# trade-off measured under TCG).
case $COMPRESS in
  zstd) pack=(zstd -q "-${ZSTD_LEVEL:-19}" -T0) ;;
  lz4) pack=(lz4 -q -l -9) ;;
  gzip) pack=(gzip -9) ;;
  none) pack=(cat) ;;
  *) echo "build.sh: COMPRESS=$COMPRESS: use zstd, lz4, gzip or none" >&2; exit 1 ;;
esac
(cd "$ROOT" && find . -print0 | sort -z | cpio -o -H newc --null --quiet --reproducible) |
  "${pack[@]}" >"$OUT/initrd.img.tmp"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
cp "$VMLINUZ" "$OUT/vmlinuz"
echo "agent OS: kernel $KVER, $(grep -c . "$ROOT/$MODDIR/modules.dep") modules," \
  "initrd $(du -h "$OUT/initrd.img" | cut -f1) ($COMPRESS) -> $OUT" >&2
