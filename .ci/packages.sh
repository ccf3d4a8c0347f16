# shellcheck shell=bash
# What Kiln's tests and `kiln demo` need on a fresh Debian machine: the Debian packages and
# sushy-tools (PyPI) in its own venv. Sourced by .ci/run and tests/demo.sh; runs as root.
KILN_APT_PACKAGES=(
  qemu-system-x86 ipxe ipxe-qemu ovmf seabios linux-image-amd64 busybox-static cpio
  iproute2 dnsmasq-base curl bc kmod mtools dosfstools grub-efi-amd64-bin grub-pc-bin grub-common
  fdisk python3 debootstrap zstd e2fsprogs binutils qemu-utils cloud-init openipmi ipmitool openssl
  procps python3-venv
)
KILN_VENV=${KILN_VENV:-/opt/kiln-venv}

# missing_packages PKG...: those of the Debian packages that are not installed, one a line.
missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

# kiln_missing_packages: the Debian packages of the list that are not installed.
kiln_missing_packages() { missing_packages "${KILN_APT_PACKAGES[@]}"; }

# kiln_install_packages: apt-get install the list; sushy-tools into $KILN_VENV (Redfish emulator).
kiln_install_packages() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${KILN_APT_PACKAGES[@]}" >/dev/null
  [ -x "$KILN_VENV/bin/sushy-emulator" ] ||
    { python3 -m venv "$KILN_VENV" && "$KILN_VENV/bin/pip" install -q sushy-tools; }
}
