#!/bin/bash
# Build the Kiln end-to-end test boot artifacts:
#   OUT_DIR/vmlinuz     copy of the host's Debian kernel (/boot/vmlinuz-$KVER)
#   OUT_DIR/initrd.img  busybox-static initramfs (gzip, newc) whose /init reports on the
#                       serial console what the netboot handed it, then powers off.
#
# Usage: build.sh OUT_DIR        (env: KVER=<kernel version> to pick a kernel)
#
# Markers printed by /init (the e2e harness greps the serial log for them):
#   KILN-TEST-INITRAMFS-OK
#   KILN-CMDLINE server=<kiln.server> mac=<kiln.mac> hostname=<kiln.hostname>
#   KILN-GUEST-IP=<address from DHCP>          (or KILN-GUEST-IP=none)
#   KILN-FETCH-OK / KILN-FETCH-FAIL           (busybox wget ${kiln.server}/healthz)
# then `poweroff -f`, which makes QEMU exit.
#
# The output is reproducible (fixed mtimes, sorted cpio, gzip -n) and cached: nothing is
# rebuilt when OUT_DIR/.stamp matches the hash of this script and of every input file.
#
# Needs: busybox-static, cpio, gzip, kmod (modprobe/modinfo), a kernel in /boot + /lib/modules.
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR" >&2; exit 2; }
[ $# -eq 1 ] || usage
OUT=$1

BUSYBOX=${BUSYBOX:-/bin/busybox}
# NIC drivers the initramfs loads (QEMU virtio-net-pci and e1000). virtio_pci is the
# transport virtio_net needs to see a PCI device; it is not a symbol dependency of it.
MODULES=(virtio_pci virtio_net e1000)

pick_kver() {
	local k
	if [ -n "${KVER:-}" ]; then echo "$KVER"; return; fi
	for k in $(find /lib/modules -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -rV); do
		if [ -f "/boot/vmlinuz-$k" ]; then echo "$k"; return; fi
	done
	echo "build.sh: no kernel found (need /boot/vmlinuz-<v> and /lib/modules/<v>)" >&2
	exit 1
}
KVER=$(pick_kver)
KERNEL=/boot/vmlinuz-$KVER
[ -r "$KERNEL" ] || { echo "build.sh: $KERNEL not readable" >&2; exit 1; }
[ -x "$BUSYBOX" ] || { echo "build.sh: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 1; }
# a dynamically linked busybox would need its libraries in the initramfs
bb_banner=$("$BUSYBOX" 2>&1 || true)
if [[ $bb_banner != BusyBox* ]] || ldd "$BUSYBOX" >/dev/null 2>&1; then
	echo "build.sh: $BUSYBOX is not a static busybox (apt-get install busybox-static)" >&2
	exit 1
fi

# Module files in dependency order, deduplicated ("insmod /path/x.ko " lines).
mapfile -t MODFILES < <(
	for m in "${MODULES[@]}"; do
		modprobe -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
	done | awk '!seen[$0]++'
)
[ "${#MODFILES[@]}" -gt 0 ] || { echo "build.sh: modprobe found no modules for $KVER" >&2; exit 1; }

# ---- cache check -------------------------------------------------------------------------
self=$(readlink -f "$0")
stamp=$( {
	echo "kver=$KVER modules=${MODULES[*]}"
	sha256sum "$self" "$KERNEL" "$BUSYBOX" "${MODFILES[@]}"
} | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$stamp" ] &&
	[ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ]; then
	echo "test-initramfs: up to date in $OUT (kernel $KVER)"
	exit 0
fi

mkdir -p "$OUT"
ROOT=$(mktemp -d "${TMPDIR:-/tmp}/kiln-initramfs.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT

mkdir -p "$ROOT"/{bin,dev,etc,proc,sys,tmp,lib/modules,usr/share/udhcpc}
cp "$BUSYBOX" "$ROOT/bin/busybox"

: >"$ROOT/lib/modules/load-order"
for f in "${MODFILES[@]}"; do
	base=$(basename "$f")
	case $f in
	*.ko) cp "$f" "$ROOT/lib/modules/$base" ;;
	*.ko.xz) xz -dc "$f" >"$ROOT/lib/modules/${base%.xz}"; base=${base%.xz} ;;
	*.ko.zst) zstd -qdc "$f" >"$ROOT/lib/modules/${base%.zst}"; base=${base%.zst} ;;
	*.ko.gz) gzip -dc "$f" >"$ROOT/lib/modules/${base%.gz}"; base=${base%.gz} ;;
	*) echo "build.sh: unexpected module file $f" >&2; exit 1 ;;
	esac
	echo "$base" >>"$ROOT/lib/modules/load-order"
done

cat >"$ROOT/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
# udhcpc hook: configure the interface, remember the address for /init.
case "$1" in
deconfig)
	ip addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound | renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	if [ -n "$router" ]; then
		ip route add default via "${router%% *}" dev "$interface" 2>/dev/null
	fi
	echo "$ip" >/tmp/guest-ip
	echo "udhcpc: $interface $ip/$mask router=$router serverid=$serverid"
	;;
esac
exit 0
EOF

cat >"$ROOT/init" <<'EOF'
#!/bin/busybox sh
# Kiln e2e test initramfs: report what the netboot handed us, then power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

echo "KILN-TEST-INITRAMFS-OK"

arg() { # arg NAME -> value of NAME= on the kernel command line
	for w in $(cat /proc/cmdline); do
		case "$w" in "$1"=*) echo "${w#*=}"; return ;; esac
	done
}
SERVER=$(arg kiln.server)
MAC=$(arg kiln.mac)
HOST=$(arg kiln.hostname)
echo "KILN-CMDLINE server=$SERVER mac=$MAC hostname=$HOST"

while read -r m; do
	insmod "/lib/modules/$m" 2>&1 | grep -v 'File exists'
done </lib/modules/load-order

# the first NIC that appears (drivers probe asynchronously)
IF=
i=0
while [ $i -lt 50 ] && [ -z "$IF" ]; do
	IF=$(ls /sys/class/net | grep -v '^lo$' | head -1)
	[ -n "$IF" ] || sleep 0.2
	i=$((i + 1))
done
ip link set lo up
if [ -n "$IF" ]; then
	ip link set "$IF" up
	echo "KILN-GUEST-NIC $IF $(cat "/sys/class/net/$IF/address")"
	udhcpc -i "$IF" -n -q -t 10 -T 2 -s /usr/share/udhcpc/default.script
else
	echo "KILN-GUEST-NIC none"
fi
echo "KILN-GUEST-IP=$(cat /tmp/guest-ip 2>/dev/null || echo none)"

# (busybox 1.35 wget -T segfaults; bound it with timeout instead)
if [ -n "$SERVER" ] && BODY=$(timeout 20 wget -q -O - "$SERVER/healthz"); then
	echo "KILN-FETCH-BODY $BODY"
	echo "KILN-FETCH-OK"
else
	echo "KILN-FETCH-FAIL"
fi

echo "KILN-POWEROFF"
poweroff -f
EOF
chmod 0755 "$ROOT/init" "$ROOT/usr/share/udhcpc/default.script" "$ROOT/bin/busybox"

# Reproducible archive: fixed mtimes, sorted names, no gzip timestamp.
find "$ROOT" -exec touch -h -d @0 {} +
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort |
	cpio -o -H newc --quiet --reproducible --owner=0:0) | gzip -9 -n >"$OUT/initrd.img.tmp"
cp "$KERNEL" "$OUT/vmlinuz.tmp"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
echo "$stamp" >"$OUT/.stamp"
echo "test-initramfs: built $OUT/initrd.img ($(wc -c <"$OUT/initrd.img") bytes), $OUT/vmlinuz (kernel $KVER)"
