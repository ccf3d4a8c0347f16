#!/bin/bash
# Build the Kiln test OS: a small Debian 12 (bookworm) disk image with cloud-init, which Kiln's
# agent streams onto a machine's disk and which then boots from that disk on BIOS and on UEFI.
#
#   OUT_DIR/test-os.raw.zst          the disk image (raw, GPT), zstd-compressed
#   OUT_DIR/test-os.raw.zst.sha256   sha256 of the .zst file (the bytes Kiln serves), sha256sum format
#   OUT_DIR/test-os.raw.size         size of the raw image in bytes
#   OUT_DIR/test-os.packages         the Debian packages in the image (name version), for the record
#
# Usage: build.sh OUT_DIR [--kube-repo URL [--kube-version X] [--kube-key FILE|URL]]
#
#   --kube-repo URL     also install the real kubeadm, kubelet, kubectl from the apt repository at URL
#                       (e.g. https://pkgs.k8s.io/core:/stable:/v1.30/deb/, a flat "URL /" repository)
#                       and containerd from Debian. Without it the image carries a stand-in
#                       /usr/local/bin/kubeadm (kubeadm-stub next to this script) that records its calls.
#   --kube-version X    pin kubeadm/kubelet/kubectl to version X (an apt version prefix, e.g. 1.30.2)
#   --kube-key F|URL    the repository's signing key (armored or binary); default URL/Release.key
#
# Disk layout (1536 MiB, sparse): GPT with
#   1  BIOS boot (EF02)   1 MiB   GRUB i386-pc core.img (boot.img in the MBR points at it)
#   2  ESP (FAT32)       64 MiB   \EFI\BOOT\BOOTX64.EFI, GRUB x86_64-efi (removable path)
#   3  root (ext4)       rest     label kiln-root; GRUB reads /boot/grub/grub.cfg from it
# Both GRUBs find their config as "(,gpt3)/boot/grub" on the disk they were loaded from; the
# kernel gets root=LABEL=kiln-root. No loop device, mount or host UUID is needed: the root file
# system is populated with `mkfs.ext4 -d`, the ESP with mtools, and the GRUB images are made with
# grub-mkimage and patched into place the way grub-install would (see install_bios_grub).
#
# KILN_TESTOS_ZSTD_LEVEL=N sets the zstd level (default 19; 10 is ~35x faster, ~10% bigger).
# KILN_TESTOS_KEEP_WORK=1 keeps the work area (the root tree, logs) for debugging.
# The Debian mirror is read from this machine's apt sources (KILN_DEBIAN_MIRROR overrides it).
# Cached: nothing is rebuilt when OUT_DIR/.stamp matches the hash of this script, kubeadm-stub and
# the options. The build needs root (debootstrap, chroot) and about 3 GB in ${TMPDIR:-/var/tmp}.
#
# Needs: debootstrap, e2fsprogs (>= 1.43, mkfs.ext4 -d), dosfstools, mtools, fdisk (sfdisk), zstd;
# when run as root they are installed with apt-get if missing.
set -euo pipefail

usage() {
	echo "usage: $0 OUT_DIR [--kube-repo URL [--kube-version X] [--kube-key FILE|URL]]" >&2
	exit 2
}

OUT=
KUBE_REPO=
KUBE_VERSION=
KUBE_KEY=
while [ $# -gt 0 ]; do
	case $1 in
	--kube-repo) [ $# -ge 2 ] || usage; KUBE_REPO=$2; shift 2 ;;
	--kube-repo=*) KUBE_REPO=${1#*=}; shift ;;
	--kube-version) [ $# -ge 2 ] || usage; KUBE_VERSION=$2; shift 2 ;;
	--kube-version=*) KUBE_VERSION=${1#*=}; shift ;;
	--kube-key) [ $# -ge 2 ] || usage; KUBE_KEY=$2; shift 2 ;;
	--kube-key=*) KUBE_KEY=${1#*=}; shift ;;
	-h | --help) usage ;;
	-*) echo "build.sh: unknown option $1" >&2; usage ;;
	*) [ -z "$OUT" ] || usage; OUT=$1; shift ;;
	esac
done
[ -n "$OUT" ] || usage
if [ -z "$KUBE_REPO" ] && { [ -n "$KUBE_VERSION" ] || [ -n "$KUBE_KEY" ]; }; then
	echo "build.sh: --kube-version and --kube-key need --kube-repo" >&2
	exit 2
fi

HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
SUITE=bookworm
IMAGE_MIB=1536
ESP_MIB=64
ROOT_LABEL=kiln-root
ESP_LABEL=KILN-ESP
# partition 1 at 1 MiB (1 MiB), 2 at 2 MiB (ESP_MIB), 3 from ROOT_START_MIB to 1 MiB before the end
ROOT_START_MIB=$((2 + ESP_MIB))
ROOT_MIB=$((IMAGE_MIB - ROOT_START_MIB - 1))
ZSTD_LEVEL=${KILN_TESTOS_ZSTD_LEVEL:-19}

# Packages on top of debootstrap's minbase (no Recommends). grub-*-bin are only used to make the
# boot images and are purged again; in --kube-repo mode more are added below.
PACKAGES=(
	linux-image-amd64 initramfs-tools systemd-sysv udev kmod dbus
	cloud-init cloud-guest-utils e2fsprogs
	systemd-resolved iproute2 iputils-ping netbase ca-certificates curl procps
	grub-pc-bin grub-efi-amd64-bin
)
KUBE_PACKAGES=(
	containerd openssh-server sudo systemd-timesyncd iptables conntrack socat ethtool ebtables
	apt-transport-https gnupg
)

# ---- cache check -------------------------------------------------------------------------
stamp=$( {
	echo "suite=$SUITE size=$IMAGE_MIB esp=$ESP_MIB zstd=$ZSTD_LEVEL"
	echo "kube-repo=$KUBE_REPO kube-version=$KUBE_VERSION kube-key=$KUBE_KEY"
	cd "$HERE" && sha256sum build.sh kubeadm-stub
} | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$stamp" ] &&
	[ -s "$OUT/test-os.raw.zst" ] && [ -s "$OUT/test-os.raw.zst.sha256" ] && [ -s "$OUT/test-os.raw.size" ]; then
	echo "test-os: up to date in $OUT"
	exit 0
fi

[ "$(id -u)" = 0 ] || { echo "build.sh: must run as root (debootstrap, chroot)" >&2; exit 1; }
mkdir -p "$OUT"
rm -f "$OUT/.stamp"

# ---- host tools ----------------------------------------------------------------------------
need=()
for t in debootstrap:debootstrap mkfs.ext4:e2fsprogs mkfs.vfat:dosfstools mcopy:mtools \
	sfdisk:fdisk zstd:zstd; do
	command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
	command -v apt-get >/dev/null || { echo "build.sh: missing packages: ${need[*]}" >&2; exit 1; }
	echo "test-os: installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ---- Debian mirror from this machine's apt sources -----------------------------------------
# prints "URI SUITE..." for every deb source (deb822 .sources files and one-line .list files)
apt_sources() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk '
			function flush() { if (deb && uris != "" && enabled) { n = split(uris, u, " "); for (i = 1; i <= n; i++) print u[i], suites } deb = 0; uris = ""; suites = ""; enabled = 1 }
			BEGIN { enabled = 1 }
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
			tolower($1) == "uris:" { $1 = ""; uris = $0 }
			tolower($1) == "suites:" { $1 = ""; suites = $0 }
			tolower($1) == "enabled:" { if (tolower($2) == "no") enabled = 0 }
			END { flush() }
		' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		# deb [options] URI SUITE COMPONENT...
		sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" { print $2, $3 }'
	done
}
# the first source serving SUITE (or SUITE-security) whose URI is http(s)
mirror_for() {
	apt_sources | awk -v s="$1" '{ for (i = 2; i <= NF; i++) if ($i == s && $1 ~ /^https?:\/\//) { print $1; exit } }' |
		head -1 | sed 's:/*$::'
}
MIRROR=${KILN_DEBIAN_MIRROR:-$(mirror_for "$SUITE")}
SECURITY=${KILN_DEBIAN_SECURITY_MIRROR:-$(mirror_for "$SUITE-security")}
if [ -z "$MIRROR" ]; then
	echo "build.sh: no apt source for $SUITE found in /etc/apt/sources.list{,.d/} (set KILN_DEBIAN_MIRROR)" >&2
	exit 1
fi
echo "test-os: mirror $MIRROR${SECURITY:+ (security: $SECURITY)}"

# ---- work area -----------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-test-os.XXXXXX")
ROOT=$WORK/root
MOUNTS=()
cleanup() {
	local i
	for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
		umount -l "${MOUNTS[$i]}" 2>/dev/null || true
	done
	if [ -n "${KILN_TESTOS_KEEP_WORK:-}" ]; then
		echo "test-os: work area kept in $WORK" >&2
	# never follow anything out of the work area
	elif ! grep -q " $WORK/" /proc/mounts; then
		rm -rf --one-file-system "$WORK"
	else
		echo "build.sh: $WORK still has mounts; not removed" >&2
	fi
}
trap cleanup EXIT
T0=$(date +%s)
step() { echo "test-os: [$(($(date +%s) - T0))s] $*"; }

in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
	DEBIAN_FRONTEND=noninteractive HOME=/root "$@"; }

# ---- debootstrap ---------------------------------------------------------------------------
step "debootstrap $SUITE (minbase)"
debootstrap --variant=minbase --components=main "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
	tail -30 "$WORK/debootstrap.log" >&2
	echo "build.sh: debootstrap failed" >&2
	exit 1
}

mount -t proc proc "$ROOT/proc" && MOUNTS+=("$ROOT/proc")
mount -t sysfs sysfs "$ROOT/sys" && MOUNTS+=("$ROOT/sys")
mount -t tmpfs tmpfs "$ROOT/run" && MOUNTS+=("$ROOT/run")
mount -t tmpfs tmpfs "$ROOT/tmp" && MOUNTS+=("$ROOT/tmp")

# apt sources of the image: the same mirror(s), main only
{
	printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$MIRROR" "$SUITE" "$SUITE"
	printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
	if [ -n "$SECURITY" ]; then
		printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$SECURITY" "$SUITE"
		printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
	fi
} >"$ROOT/etc/apt/sources.list.d/debian.sources"
rm -f "$ROOT/etc/apt/sources.list"

# no documentation, manual pages or translations, now or on later installs
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/90-kiln-nodoc" <<'EOF'
# Kiln test OS: keep the image small
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
cat >"$ROOT/etc/apt/apt.conf.d/90-kiln" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
# services are not started in the chroot
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
# the kernel package makes /vmlinuz and /initrd.img links; no bootloader hooks
printf 'do_symlinks = yes\nlink_in_boot = no\n' >"$ROOT/etc/kernel-img.conf"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
echo localhost >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n' >"$ROOT/etc/hosts"
cat >"$ROOT/etc/fstab" <<EOF
# <file system>  <mount point>  <type>  <options>  <dump>  <pass>
LABEL=$ROOT_LABEL  /  ext4  errors=remount-ro  0  1
EOF

# before the kernel is installed, so that its initramfs already has them:
# ext4 fsck in the initramfs (the hook cannot probe a root device at build time),
# no floppy driver (QEMU's default floppy controller only slows device probing down)
mkdir -p "$ROOT/etc/initramfs-tools/conf.d" "$ROOT/etc/modprobe.d" "$ROOT/etc/default"
printf 'FSTYPE=ext4\n' >"$ROOT/etc/initramfs-tools/conf.d/kiln"
printf '# Kiln test OS\nblacklist floppy\n' >"$ROOT/etc/modprobe.d/kiln.conf"
echo LANG=C.UTF-8 >"$ROOT/etc/default/locale"

if [ -n "$KUBE_REPO" ]; then
	PACKAGES+=("${KUBE_PACKAGES[@]}")
fi

step "apt-get install ${PACKAGES[*]}"
in_root apt-get update -qq --error-on=any
in_root apt-get install -y -qq "${PACKAGES[@]}" >"$WORK/apt.log" 2>&1 || {
	tail -40 "$WORK/apt.log" >&2
	echo "build.sh: apt-get install failed" >&2
	exit 1
}
# systemd-resolved just made /etc/resolv.conf its stub link, which has no server in a chroot;
# name resolution for the rest of the build (the stub link is put back at the end)
rm -f "$ROOT/etc/resolv.conf"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

if [ -n "$KUBE_REPO" ]; then
	step "kubernetes packages from $KUBE_REPO"
	key=${KUBE_KEY:-${KUBE_REPO%/}/Release.key}
	mkdir -p "$ROOT/etc/apt/keyrings"
	case $key in
	http://* | https://*) curl -fsSL "$key" -o "$WORK/kube.key" ;;
	*) cp "$key" "$WORK/kube.key" ;;
	esac
	if grep -q 'BEGIN PGP' "$WORK/kube.key"; then
		in_root gpg --dearmor <"$WORK/kube.key" >"$ROOT/etc/apt/keyrings/kubernetes.gpg"
	else
		cp "$WORK/kube.key" "$ROOT/etc/apt/keyrings/kubernetes.gpg"
	fi
	printf 'Types: deb\nURIs: %s\nSuites: /\nSigned-By: /etc/apt/keyrings/kubernetes.gpg\n' \
		"$KUBE_REPO" >"$ROOT/etc/apt/sources.list.d/kubernetes.sources"
	kpk=(kubeadm kubelet kubectl)
	if [ -n "$KUBE_VERSION" ]; then kpk=("kubeadm=$KUBE_VERSION*" "kubelet=$KUBE_VERSION*" "kubectl=$KUBE_VERSION*"); fi
	in_root apt-get update -qq --error-on=any
	in_root apt-get install -y -qq "${kpk[@]}" >>"$WORK/apt.log" 2>&1 || {
		tail -40 "$WORK/apt.log" >&2
		echo "build.sh: installing kubeadm kubelet kubectl failed" >&2
		exit 1
	}
	in_root apt-mark hold kubeadm kubelet kubectl >/dev/null
	# what kubeadm's preflight checks expect of a node
	printf 'overlay\nbr_netfilter\n' >"$ROOT/etc/modules-load.d/kubernetes.conf"
	printf 'net.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\nnet.ipv4.ip_forward = 1\n' \
		>"$ROOT/etc/sysctl.d/90-kubernetes.conf"
	mkdir -p "$ROOT/etc/containerd"
	in_root containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' \
		>"$ROOT/etc/containerd/config.toml"
	in_root systemctl enable containerd kubelet >/dev/null 2>&1 || true
else
	install -m 0755 "$HERE/kubeadm-stub" "$ROOT/usr/local/bin/kubeadm"
fi

# ---- kernel modules ------------------------------------------------------------------------
# Drop drivers a server or VM does not use (sound, cameras/TV, Wi-Fi, Bluetooth, desktop GPUs,
# industrial I/O, staging), about 40% of /lib/modules; then rebuild the module index and initramfs.
step "prune kernel modules"
for kdir in "$ROOT"/usr/lib/modules/*/; do
	kver=$(basename "$kdir")
	for d in sound drivers/media drivers/net/wireless net/wireless net/mac80211 net/bluetooth \
		drivers/bluetooth drivers/gpu/drm/amd drivers/gpu/drm/i915 drivers/gpu/drm/nouveau \
		drivers/gpu/drm/radeon drivers/iio drivers/staging drivers/comedi drivers/isdn \
		drivers/net/wwan drivers/net/can net/can drivers/input/touchscreen; do
		rm -rf "${kdir}kernel/$d"
	done
	in_root depmod -a "$kver"
done
in_root update-initramfs -u -k all >>"$WORK/apt.log" 2>&1

# ---- system configuration ------------------------------------------------------------------
step "configure"
# cloud-init: NoCloud only (seed written by Kiln's agent, or NoCloud-net named on the command
# line), network config rendered for systemd-networkd, nothing slow at boot
cat >"$ROOT/etc/cloud/cloud.cfg.d/90-kiln.cfg" <<'EOF'
# Kiln test OS. The seed is not in the image: Kiln's agent writes
# /var/lib/cloud/seed/nocloud/{meta-data,user-data,network-config} before the first boot
# (or a seedfrom: URL in that meta-data or in datasource: NoCloud: seedfrom, for NoCloud-net).
datasource_list: [ NoCloud, None ]
system_info:
  network:
    renderers: [ networkd ]
    activators: [ networkd ]
package_update: false
package_upgrade: false
package_reboot_if_required: false
apt:
  preserve_sources_list: true
# C.UTF-8 needs no locale-gen (Debian's default, en_US.UTF-8, is not generated here)
locale: C.UTF-8
EOF
# The module lists of Debian's cloud.cfg without what has nothing to act on here (snap, lxd,
# landscape, puppet, chef, salt, byobu, fan, grub-dpkg, keyboard, ...), which saves start-up time
# under emulation; without an ssh server (the default image) the ssh modules go too, so no host
# keys are made or waited for.
if [ -n "$KUBE_REPO" ]; then ssh_init='  - ssh'; ssh_final=$'  - ssh-authkey-fingerprints\n  - keys-to-console'; else ssh_init=; ssh_final=; fi
sed '/^$/d' >>"$ROOT/etc/cloud/cloud.cfg.d/90-kiln.cfg" <<EOF
cloud_init_modules:
  - migrator
  - seed_random
  - bootcmd
  - write-files
  - growpart
  - resizefs
  - disk_setup
  - mounts
  - set_hostname
  - update_hostname
  - update_etc_hosts
  - ca-certs
  - rsyslog
  - users-groups
$ssh_init
cloud_config_modules:
  - locale
  - set-passwords
  - apt-pipelining
  - apt-configure
  - ntp
  - timezone
  - runcmd
cloud_final_modules:
  - package-update-upgrade-install
  - write-files-deferred
  - scripts-vendor
  - scripts-per-once
  - scripts-per-boot
  - scripts-per-instance
  - scripts-user
$ssh_final
  - phone-home
  - final-message
  - power-state-change
EOF
# network: systemd-networkd (cloud-init writes /etc/systemd/network/10-cloud-init-*.network)
in_root systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
ln -sf ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf.kiln"

# GRUB menu: read by both GRUBs from the root file system
mkdir -p "$ROOT/boot/grub"
cat >"$ROOT/boot/grub/grub.cfg" <<EOF
# Kiln test OS. GRUB is not managed by update-grub here; kernel updates move the /vmlinuz and
# /initrd.img links that this menu boots.
set default=0
set timeout=1
if [ "\$grub_platform" = pc ]; then
	serial --unit=0 --speed=115200
	terminal_input console serial
	terminal_output console serial
fi
menuentry 'Debian GNU/Linux 12 (Kiln test OS)' {
	echo 'Loading Linux ...'
	linux /vmlinuz root=LABEL=$ROOT_LABEL rw console=tty0 console=ttyS0,115200
	echo 'Loading initial ramdisk ...'
	initrd /initrd.img
}
EOF

# GRUB boot images (made with the image's own GRUB), then the GRUB packages go again
GRUB_MODS=(part_gpt ext2 normal linux boot configfile echo test search search_label ls cat halt reboot serial terminal)
in_root grub-mkimage -O i386-pc -o /tmp/core.img -p '(,gpt3)/boot/grub' biosdisk "${GRUB_MODS[@]}"
in_root grub-mkimage -O x86_64-efi -o /tmp/BOOTX64.EFI -p '(,gpt3)/boot/grub' fat efi_gop efi_uga "${GRUB_MODS[@]}"
cp "$ROOT/tmp/core.img" "$ROOT/tmp/BOOTX64.EFI" "$ROOT/usr/lib/grub/i386-pc/boot.img" "$WORK/"
in_root apt-get purge -y -qq --autoremove grub-pc-bin grub-efi-amd64-bin grub-common grub2-common >>"$WORK/apt.log" 2>&1

# shellcheck disable=SC2016
in_root dpkg-query -W -f '${Package} ${Version}\n' | LC_ALL=C sort >"$WORK/packages"

# ---- clean up ------------------------------------------------------------------------------
step "clean"
in_root apt-get clean
for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[$i]}"; done
MOUNTS=()
rm -f "$ROOT/usr/sbin/policy-rc.d"
mv -f "$ROOT/etc/resolv.conf.kiln" "$ROOT/etc/resolv.conf"
# every machine makes its own machine-id on first boot (empty file = "first boot")
: >"$ROOT/etc/machine-id"
[ -L "$ROOT/var/lib/dbus/machine-id" ] || rm -f "$ROOT/var/lib/dbus/machine-id"
rm -f "$ROOT/var/lib/systemd/random-seed" "$ROOT/var/cache/ldconfig/aux-cache"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/* "$ROOT"/var/cache/debconf/*-old \
	"$ROOT"/var/lib/dpkg/*-old "$ROOT"/var/lib/cloud/* "$ROOT"/tmp/* "$ROOT"/var/tmp/* \
	"$ROOT"/root/.bash_history "$ROOT"/etc/ssh/ssh_host_* "${ROOT:?}"/dev/* "${ROOT:?}"/run/*
find "$ROOT/var/log" -type f -delete
find "$ROOT/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/lintian/* "$ROOT"/usr/share/groff/*
find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
[ ! -e "$ROOT/etc/cloud/cloud-init.disabled" ] || rm -f "$ROOT/etc/cloud/cloud-init.disabled"
if [ -d "$ROOT/var/lib/cloud/seed" ]; then
	echo "build.sh: the image must not carry a cloud-init seed" >&2
	exit 1
fi

# ---- disk image ----------------------------------------------------------------------------
step "file systems"
# root: ext4 populated from the tree (no mount); inode tables initialised now, not at first boot
truncate -s "${ROOT_MIB}M" "$WORK/root.img"
mkfs.ext4 -q -F -L "$ROOT_LABEL" -d "$ROOT" -E lazy_itable_init=0,lazy_journal_init=0 \
	"$WORK/root.img" "${ROOT_MIB}M"
# ESP: FAT32 with the removable-media boot path
mkfs.vfat -F 32 -n "$ESP_LABEL" -C "$WORK/esp.img" $((ESP_MIB * 1024)) >/dev/null
mmd -i "$WORK/esp.img" ::/EFI ::/EFI/BOOT
mcopy -i "$WORK/esp.img" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

step "disk image"
DISK=$WORK/test-os.raw
truncate -s "${IMAGE_MIB}M" "$DISK"
sfdisk -q --no-reread --no-tell-kernel "$DISK" <<EOF
label: gpt
first-lba: 2048
start=1MiB, size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name="bios"
start=2MiB, size=${ESP_MIB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="esp"
start=${ROOT_START_MIB}MiB, size=${ROOT_MIB}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"
EOF
dd if="$WORK/esp.img" of="$DISK" bs=1M seek=2 conv=notrunc,sparse status=none
dd if="$WORK/root.img" of="$DISK" bs=1M seek="$ROOT_START_MIB" conv=notrunc,sparse status=none

# BIOS: what grub-install does for a GPT disk with a BIOS boot partition (util/setup.c):
# core.img goes into the partition (LBA 2048); its first sector (diskboot) loads the rest through
# the blocklist at its end; boot.img (the MBR code, partition table kept) loads that first sector.
install_bios_grub() {
	local core=$WORK/core.img boot=$WORK/boot.img lba=2048 sectors
	local size
	size=$(stat -c %s "$core")
	sectors=$(((size + 511) / 512))
	[ "$sectors" -le 2048 ] || { echo "build.sh: core.img ($size bytes) does not fit in 1 MiB" >&2; exit 1; }
	le() { # le VALUE BYTES -> little-endian bytes as printf escapes
		local v=$1 n=$2 i out=
		for ((i = 0; i < n; i++)); do out+=$(printf '\\x%02x' $(((v >> (8 * i)) & 255))); done
		printf '%s' "$out"
	}
	# blocklist at 0x1f4 (512 - 12): start (u64) = lba + 1, len (u16) = sectors - 1, segment (u16) 0x820
	# shellcheck disable=SC2059
	printf "$(le $((lba + 1)) 8)$(le $((sectors - 1)) 2)$(le $((0x820)) 2)" |
		dd of="$core" bs=1 seek=$((0x1f4)) conv=notrunc status=none
	# boot.img: kernel sector (u64) at 0x5c, boot drive 0xff at 0x64 (use the BIOS's DL),
	# the floppy-check jump at 0x66 replaced by two NOPs (hard disk)
	# shellcheck disable=SC2059
	printf "$(le $lba 8)\xff" | dd of="$boot" bs=1 seek=$((0x5c)) conv=notrunc status=none
	printf '\x90\x90' | dd of="$boot" bs=1 seek=$((0x66)) conv=notrunc status=none
	dd if="$core" of="$DISK" bs=512 seek="$lba" conv=notrunc status=none
	# only the code (440 bytes): the protective MBR's disk signature and partition table stay
	dd if="$boot" of="$DISK" bs=440 count=1 conv=notrunc status=none
}
install_bios_grub
sfdisk -q --verify "$DISK" >/dev/null

# ---- outputs -------------------------------------------------------------------------------
step "zstd"
zstd -q -T0 "-$ZSTD_LEVEL" -f "$DISK" -o "$OUT/test-os.raw.zst.tmp"
mv -f "$OUT/test-os.raw.zst.tmp" "$OUT/test-os.raw.zst"
(cd "$OUT" && sha256sum test-os.raw.zst >test-os.raw.zst.sha256)
stat -c %s "$DISK" >"$OUT/test-os.raw.size"
cp "$WORK/packages" "$OUT/test-os.packages"
echo "$stamp" >"$OUT/.stamp"
step "built $OUT/test-os.raw.zst ($(stat -c %s "$OUT/test-os.raw.zst") bytes; raw $(cat "$OUT/test-os.raw.size") bytes, $(du -k "$DISK" | cut -f1) KiB allocated)"
