#!/bin/bash
# Build a small raw disk image that, booted from disk, prints KILN-LOCAL-DISK-BOOT on the
# first serial port under both firmwares:
#   * BIOS (SeaBIOS): the MBR boot code writes the string to COM1 (port 0x3F8), then halts.
#   * UEFI (OVMF):    MBR partition 1 (type 0xEF, an EFI system partition) holds a FAT16
#                     filesystem with \EFI\BOOT\BOOTX64.EFI, a grub-mkstandalone image whose
#                     embedded grub.cfg echoes the string on the serial terminal, then halts
#                     (QEMU exits).
#
# Usage: local-disk.sh OUT.img
# Cached: nothing is rebuilt when OUT.img.stamp matches this script and the grub modules.
# Needs: grub-efi-amd64-bin (+ grub-common for grub-mkstandalone), mtools, dosfstools.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUT.img" >&2; exit 2; }
OUT=$1
MARKER=KILN-LOCAL-DISK-BOOT

GRUB_DIR=/usr/lib/grub/x86_64-efi
for tool in grub-mkstandalone mkfs.fat mmd mcopy; do
	command -v "$tool" >/dev/null || {
		echo "local-disk.sh: $tool missing (apt-get install grub-efi-amd64-bin grub-common mtools dosfstools)" >&2
		exit 1
	}
done
[ -d "$GRUB_DIR" ] || { echo "local-disk.sh: $GRUB_DIR missing (apt-get install grub-efi-amd64-bin)" >&2; exit 1; }

self=$(readlink -f "$0")
stamp=$( {
	sha256sum "$self"
	cat "$GRUB_DIR"/*.mod | sha256sum
} | sha256sum | cut -d' ' -f1)
if [ -s "$OUT" ] && [ -f "$OUT.stamp" ] && [ "$(cat "$OUT.stamp")" = "$stamp" ]; then
	echo "local-disk: up to date ($OUT)"
	exit 0
fi

W=$(mktemp -d "${TMPDIR:-/tmp}/kiln-local-disk.XXXXXX")
trap 'rm -rf "$W"' EXIT

# Layout: 16 MiB disk, partition 1 from sector 2048 (1 MiB) to the end.
SECTOR=512
PART_START=2048
DISK_SECTORS=32768
PART_SECTORS=$((DISK_SECTORS - PART_START))

# ---- UEFI: the ESP ------------------------------------------------------------------------
cat >"$W/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
echo $MARKER
halt
EOF
grub-mkstandalone -O x86_64-efi -o "$W/BOOTX64.EFI" \
	--install-modules="normal configfile echo halt serial terminal part_msdos fat" \
	--modules="serial terminal echo halt" \
	--locales= --fonts= --themes= \
	"boot/grub/grub.cfg=$W/grub.cfg"

truncate -s $((PART_SECTORS * SECTOR)) "$W/esp.img"
mkfs.fat -F 16 -n KILNESP --invariant "$W/esp.img" >/dev/null
mmd -i "$W/esp.img" ::/EFI ::/EFI/BOOT
mcopy -i "$W/esp.img" "$W/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

# ---- BIOS: the MBR ------------------------------------------------------------------------
# Hand-assembled 16-bit code, loaded at 0000:7C00:
#   00 FC        cld
#   01 31 C0     xor ax, ax
#   03 8E D8     mov ds, ax
#   05 BE 17 7C  mov si, 0x7C17        ; msg
#   08 BA F8 03  mov dx, 0x3F8         ; COM1 data register
#   0B AC        loop: lodsb
#   0C 84 C0     test al, al
#   0E 74 03     jz done               ; -> 0x13
#   10 EE        out dx, al
#   11 EB F8     jmp loop              ; -> 0x0B
#   13 FA        done: cli
#   14 F4        hlt
#   15 EB FC     jmp done              ; -> 0x13
#   17           msg: "KILN-LOCAL-DISK-BOOT\r\n\0"
le32() { # little-endian 32-bit value as printf escapes
	printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) \
		$((($1 >> 16) & 255)) $((($1 >> 24) & 255))
}
{
	printf '\xfc\x31\xc0\x8e\xd8\xbe\x17\x7c\xba\xf8\x03\xac\x84\xc0\x74\x03\xee\xeb\xf8\xfa\xf4\xeb\xfc'
	printf '%s\r\n\0' "$MARKER"
} >"$W/code.bin"
code_len=$(wc -c <"$W/code.bin")
[ "$code_len" -le 440 ] || { echo "local-disk.sh: boot code too long" >&2; exit 1; }
{
	cat "$W/code.bin"
	head -c $((440 - code_len)) /dev/zero
	printf '\x4b\x49\x4c\x4e\x00\x00'             # disk signature "KILN", reserved
	# partition entry 1: active, CHS unused (0xFE 0xFF 0xFF), type 0xEF, LBA start, size
	printf '\x80\xfe\xff\xff\xef\xfe\xff\xff'
	# shellcheck disable=SC2059 # le32 prints escapes on purpose
	printf "$(le32 $PART_START)$(le32 $PART_SECTORS)"
	head -c 48 /dev/zero                          # partition entries 2-4
	printf '\x55\xaa'
} >"$W/mbr.bin"
[ "$(wc -c <"$W/mbr.bin")" -eq 512 ] || { echo "local-disk.sh: bad MBR size" >&2; exit 1; }

# ---- assemble -----------------------------------------------------------------------------
truncate -s $((DISK_SECTORS * SECTOR)) "$W/disk.img"
dd if="$W/mbr.bin" of="$W/disk.img" conv=notrunc status=none
dd if="$W/esp.img" of="$W/disk.img" bs=$SECTOR seek=$PART_START conv=notrunc status=none
mkdir -p "$(dirname "$OUT")"
mv "$W/disk.img" "$OUT"
echo "$stamp" >"$OUT.stamp"
echo "local-disk: built $OUT ($((DISK_SECTORS * SECTOR / 1048576)) MiB)"
