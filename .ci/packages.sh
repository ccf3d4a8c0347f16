# shellcheck shell=bash
# What Kiln's tests and `kiln demo` need on a fresh Debian machine: the Debian packages and
# sushy-tools (PyPI) in its own venv. Sourced by .ci/run and tests/demo.sh; runs as root.
#
# QEMU comes from one origin, consistently: machines of this kind may ship `qemu-utils` from
# bookworm-backports (10.0.x) without a backports entry in their apt sources, and then the
# suite's own qemu-system-x86 (7.2) cannot be installed beside it ("held broken packages").
# So the QEMU family is installed from <codename>-backports whenever that suite is served by
# the machine's own mirror (read from its apt sources at run time; no host name lives here),
# and from the release itself only when it is not and no backport is installed.
KILN_APT_PACKAGES=(
  ipxe ovmf linux-image-amd64 busybox-static cpio
  iproute2 dnsmasq-base curl bc kmod mtools dosfstools grub-efi-amd64-bin grub-pc-bin grub-common
  fdisk python3 debootstrap zstd e2fsprogs binutils cloud-init openipmi ipmitool openssl
  procps python3-venv systemd
  # tests/e2e/systemd.sh: kiln.service under a real systemd in a debootstrap container
  systemd-container
  # the store suite and kiln-server's tests on PostgreSQL (a cluster of their own, initdb in a temp dir)
  postgresql
  # tests/e2e/ui.sh: the operator web page in headless Chromium
  chromium
)
# The QEMU family: installed together from one suite (see above).
KILN_QEMU_PACKAGES=(qemu-system-x86 qemu-utils seabios ipxe-qemu)
KILN_VENV=${KILN_VENV:-/opt/kiln-venv}
KILN_BACKPORTS_LIST=/etc/apt/sources.list.d/kiln-backports.sources

# missing_packages PKG...: those of the Debian packages that are not installed, one a line.
missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

# kiln_missing_packages: the Debian packages of the list that are not installed.
kiln_missing_packages() { missing_packages "${KILN_APT_PACKAGES[@]}" "${KILN_QEMU_PACKAGES[@]}"; }

# kiln_codename: the release's code name (bookworm), from /etc/os-release.
kiln_codename() { (. /etc/os-release && echo "${VERSION_CODENAME:-}"); }

# kiln_debian_mirror CODENAME: the URI the machine's apt sources use for CODENAME itself (not
# -security), from deb822 .sources files or one-line sources.list entries.
kiln_debian_mirror() {
  local codename=$1 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822: paragraphs separated by blank lines; take URIs of one whose Suites names CODENAME.
    awk -v want="$codename" '
      /^[[:space:]]*$/ { if (uri != "" && hit) { print uri; exit } uri = ""; hit = 0; next }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) hit = 1 }
      END { if (uri != "" && hit) print uri }' "$f"
  done | head -n 1 | grep . && return 0
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v want="$codename" '$1 == "deb" {
        i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == want) { print $i; exit } }' "$f"
  done | head -n 1 | grep .
}

# kiln_add_backports: make CODENAME-backports known to apt from the machine's own mirror (once).
# Returns non-zero when no mirror can be found in the apt sources.
kiln_add_backports() {
  local codename mirror
  codename=$(kiln_codename)
  [ -n "$codename" ] || return 1
  grep -rqs "$codename-backports" /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
  mirror=$(kiln_debian_mirror "$codename") || return 1
  cat >"$KILN_BACKPORTS_LIST" <<EOF
# Added by Kiln's .ci/packages.sh: the QEMU family comes from here (see that file).
Types: deb
URIs: $mirror
Suites: $codename-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

# kiln_qemu_suite: the suite to take the QEMU family from: CODENAME-backports when apt offers
# qemu-system-x86 from it, else the default (empty).
kiln_qemu_suite() {
  local bpo policy
  bpo="$(kiln_codename)-backports"
  # Read the whole answer first: grep -q closing the pipe early fails it under pipefail.
  policy=$(apt-cache policy qemu-system-x86 2>/dev/null || true)
  case "$policy" in *" $bpo/"*) echo "$bpo" ;; esac
}

# kiln_qemu_conflict_report: the QEMU family's installed and candidate versions (why apt refused).
kiln_qemu_conflict_report() {
  local p
  echo "kiln: the QEMU packages could not be installed together; installed and candidate versions:" >&2
  for p in "${KILN_QEMU_PACKAGES[@]}" qemu-system-common qemu-system-data qemu-block-extra; do
    printf '  %-20s installed %-40s candidate %s\n' "$p" \
      "$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$p" 2>/dev/null | sed -n 's/^ii *//p' | grep . || echo -)" \
      "$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')" >&2
  done
  echo "kiln: install one origin by hand (e.g. apt-get install -t $(kiln_codename)-backports ${KILN_QEMU_PACKAGES[*]})" >&2
}

# kiln_install_packages: apt-get install the list (the QEMU family from one suite, see above);
# sushy-tools into $KILN_VENV (Redfish emulator).
kiln_install_packages() {
  export DEBIAN_FRONTEND=noninteractive
  kiln_add_backports || echo "kiln: no Debian mirror found in the apt sources; QEMU from the default suite" >&2
  apt-get update -qq
  # Tests start PostgreSQL clusters of their own (initdb in a temp dir): no system cluster.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/kiln-no-main.conf
  apt-get install -y -qq --no-install-recommends "${KILN_APT_PACKAGES[@]}" >/dev/null
  local suite
  suite=$(kiln_qemu_suite)
  # A backport of QEMU already installed and no backports suite served: nothing consistent to install.
  if ! apt-get install -y -qq --no-install-recommends ${suite:+-t "$suite"} "${KILN_QEMU_PACKAGES[@]}" >/dev/null; then
    kiln_qemu_conflict_report
    return 1
  fi
  echo "kiln: QEMU $(dpkg-query -W -f='${Version}' qemu-system-x86) (${suite:-default suite})"
  [ -x "$KILN_VENV/bin/sushy-emulator" ] ||
    { python3 -m venv "$KILN_VENV" && "$KILN_VENV/bin/pip" install -q sushy-tools; }
}
