#!/bin/bash
# Boot the test OS built by build.sh under QEMU (TCG) from its disk, on SeaBIOS and on OVMF, and check
# that cloud-init ran with a NoCloud seed: hostname, static IP (network-config v2 matched by MAC),
# runcmd, a `curl -X POST` phone-home and the kubeadm stand-in.
#
# Usage: verify.sh OUT_DIR [bios|uefi|seed-dir]...     (default: bios uefi)
#   bios      SeaBIOS, the seed on a second disk labelled CIDATA (FAT)
#   uefi      OVMF, the same seed disk
#   seed-dir  SeaBIOS, no seed disk: the seed is written into the image's
#             /var/lib/cloud/seed/nocloud/ (with debugfs, no mount), as Kiln's agent does
#
# (the phone-home POST must come from the static address). Everything runs in a private network namespace (bridge + tap, nothing linked to the host), deleted
# at the end. Prints, per mode, the seconds from QEMU start to the marker line
#   KILN-TESTOS-CLOUDINIT-DONE <hostname> <ip -4 -o addr show ...>
# Serial logs are kept in $KILN_TESTOS_VERIFY_LOGS (default: a temporary directory, printed).
# Needs: root, qemu-system-x86, seabios, ovmf, zstd, dosfstools, mtools, e2fsprogs, iproute2, python3.
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [bios|uefi|seed-dir]..." >&2; exit 2; }
OUT=$(readlink -f "$1")
shift
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(bios uefi)
TIMEOUT=${KILN_TESTOS_VERIFY_TIMEOUT:-900}
DISK_SIZE=4G
MAC=52:54:00:77:00:57
GUEST_IP=10.77.0.57
HOST_IP=10.77.0.1
PORT=8099
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

[ -s "$OUT/test-os.raw.zst" ] || { echo "verify.sh: $OUT/test-os.raw.zst missing (run build.sh first)" >&2; exit 1; }
(cd "$OUT" && sha256sum -c --quiet test-os.raw.zst.sha256)

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-test-os-verify.XXXXXX")
LOGS=${KILN_TESTOS_VERIFY_LOGS:-$WORK/logs}
mkdir -p "$LOGS"
NS=kiln-testos-$$
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	ip netns del "$NS" 2>/dev/null || true
	if [ "$LOGS" = "$WORK/logs" ]; then
		find "$WORK" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
		echo "verify: serial logs in $LOGS"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT

# ---- network namespace: bridge 10.77.0.1/24 + tap for the guest, phone-home listener ------------
ip netns add "$NS"
nsx() { ip netns exec "$NS" "$@"; }
nsx ip link set lo up
nsx ip link add br0 type bridge
nsx ip addr add "$HOST_IP/24" dev br0
nsx ip tuntap add dev tap0 mode tap
nsx ip link set tap0 master br0
nsx ip link set tap0 up
nsx ip link set br0 up

cat >"$WORK/phone-home.py" <<'EOF'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open(sys.argv[2], "ab") as f:
            f.write(b"POST " + self.path.encode() + b" from " + self.client_address[0].encode() + b" " + body + b"\n")
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok\n")
    def log_message(self, *a): pass
http.server.HTTPServer((sys.argv[1], int(sys.argv[3])), H).serve_forever()
EOF
: >"$WORK/phone-home.log"
# started with `ip netns exec ... &` directly, so that $! is the process itself
ip netns exec "$NS" "$PY" "$WORK/phone-home.py" "$HOST_IP" "$WORK/phone-home.log" "$PORT" &
PIDS+=($!)

# ---- NoCloud seed --------------------------------------------------------------------------
mkdir -p "$WORK/seed"
cat >"$WORK/seed/user-data" <<EOF
#cloud-config
hostname: testnode
write_files:
  - path: /etc/kiln-test/kubeadm.yaml
    content: |
      apiVersion: kubeadm.k8s.io/v1beta3
      kind: InitConfiguration
      nodeRegistration:
        name: testnode
runcmd:
  - [ sh, -c, 'kubeadm init --config /etc/kiln-test/kubeadm.yaml --skip-phases=addon >/dev/null' ]
  - [ sh, -c, 'curl -sS -X POST --data "host=\$(hostname)" http://$HOST_IP:$PORT/phone-home/testnode >/dev/null && echo KILN-TESTOS-PHONE-HOME-OK >/dev/ttyS0' ]
  - [ sh, -c, 'echo KILN-TESTOS-CLOUDINIT-DONE \$(hostname) \$(ip -4 -o addr show) uptime=\$(cut -d" " -f1 /proc/uptime) rootfs=\$(df -m --output=size / | tail -1 | tr -d " ")M >/dev/ttyS0' ]
EOF
cat >"$WORK/seed/network-config" <<EOF
version: 2
ethernets:
  nic0:
    match:
      macaddress: "$MAC"
    addresses: [ $GUEST_IP/24 ]
    routes:
      - to: 0.0.0.0/0
        via: $HOST_IP
    nameservers:
      addresses: [ $HOST_IP ]
EOF
seed_meta() { printf 'instance-id: kiln-testos-%s\nlocal-hostname: testnode\n' "$1" >"$WORK/seed/meta-data"; }

make_seed_disk() { # FAT volume labelled CIDATA
	rm -f "$WORK/seed.img"
	mkfs.vfat -n CIDATA -C "$WORK/seed.img" 2048 >/dev/null
	mcopy -i "$WORK/seed.img" "$WORK/seed/user-data" "$WORK/seed/meta-data" "$WORK/seed/network-config" ::/
}

# write the seed into the image's root file system (partition 3) with debugfs, as the agent would
seed_into_image() {
	local disk=$1 start off f
	start=$(sfdisk -d "$disk" 2>/dev/null | awk -F'[=,]' '/^[^ ]*3 :/ { gsub(/ /, "", $2); print $2 }')
	off=$((start * 512))
	{
		echo "mkdir /var/lib/cloud"
		echo "mkdir /var/lib/cloud/seed"
		echo "mkdir /var/lib/cloud/seed/nocloud"
		for f in user-data meta-data network-config; do
			echo "write $WORK/seed/$f /var/lib/cloud/seed/nocloud/$f"
		done
	} | debugfs -w -f - "$disk?offset=$off" >/dev/null 2>"$WORK/debugfs.err"
	for f in user-data meta-data network-config; do
		debugfs -R "stat /var/lib/cloud/seed/nocloud/$f" "$disk?offset=$off" 2>/dev/null | grep -q 'Type: regular' ||
			{ cat "$WORK/debugfs.err" >&2; echo "verify: writing the seed with debugfs failed" >&2; return 1; }
	done
}

monitor() { # monitor SOCKET COMMAND
	"$PY" - "$1" "$2" <<'EOF' >/dev/null 2>&1 || true
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(0.2)
s.sendall(sys.argv[2].encode() + b"\n"); time.sleep(0.5)
EOF
}

FAIL=0
RESULTS=()
for mode in "${MODES[@]}"; do
	case $mode in bios | uefi | seed-dir) ;; *) echo "verify: unknown mode $mode" >&2; exit 2 ;; esac
	log=$LOGS/serial-$mode.log
	: >"$log"
	: >"$WORK/phone-home.log"
	disk=$WORK/disk-$mode.raw
	zstd -q -d -f "$OUT/test-os.raw.zst" -o "$disk"
	# a disk bigger than the image, as on a real machine: cloud-init grows partition 3 and ext4
	truncate -s "$DISK_SIZE" "$disk"
	seed_meta "$mode"
	args=(-accel tcg -m 1024 -smp 1 -nographic -serial "file:$log" -no-reboot
		-monitor "unix:$WORK/mon-$mode,server,nowait"
		-drive "if=none,id=d0,format=raw,file=$disk" -device virtio-blk-pci,drive=d0,bootindex=0
		-netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device "virtio-net-pci,netdev=n0,mac=$MAC")
	if [ "$mode" = seed-dir ]; then
		seed_into_image "$disk"
	else
		make_seed_disk
		args+=(-drive "if=none,id=d1,format=raw,file=$WORK/seed.img" -device virtio-blk-pci,drive=d1)
	fi
	if [ "$mode" = uefi ]; then
		cp "$OVMF_VARS" "$WORK/vars.fd"
		args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE"
			-drive "if=pflash,format=raw,unit=1,file=$WORK/vars.fd")
	fi
	echo "verify: [$mode] booting (TCG, timeout ${TIMEOUT}s)"
	t0=$(date +%s.%N)
	ip netns exec "$NS" qemu-system-x86_64 "${args[@]}" </dev/null >"$LOGS/qemu-$mode.out" 2>&1 &
	qpid=$!
	PIDS+=("$qpid")
	marker_t=
	while kill -0 "$qpid" 2>/dev/null; do
		if grep -q '^KILN-TESTOS-CLOUDINIT-DONE' "$log"; then
			marker_t=$(echo "$(date +%s.%N) - $t0" | bc)
			break
		fi
		if [ "$(echo "$(date +%s.%N) - $t0 > $TIMEOUT" | bc)" = 1 ]; then break; fi
		sleep 1
	done
	ok=1
	if [ -z "$marker_t" ]; then
		echo "verify: [$mode] FAIL: no KILN-TESTOS-CLOUDINIT-DONE within ${TIMEOUT}s (log: $log)" >&2
		tail -20 "$log" | tr -d '\r' >&2
		ok=0
	else
		line=$(grep -a '^KILN-TESTOS-CLOUDINIT-DONE' "$log" | head -1 | tr -d '\r')
		echo "verify: [$mode] marker after ${marker_t}s: $line"
		case $line in *" testnode "*) ;; *) echo "verify: [$mode] FAIL: hostname is not testnode" >&2; ok=0 ;; esac
		case $line in *" inet $GUEST_IP/24 "*) ;; *) echo "verify: [$mode] FAIL: $GUEST_IP/24 not on the guest" >&2; ok=0 ;; esac
		rootfs=$(echo "$line" | sed -n 's/.* rootfs=\([0-9]*\)M.*/\1/p')
		if [ "${rootfs:-0}" -gt 3000 ]; then
			echo "verify: [$mode] root file system grown to the ${DISK_SIZE} disk: ${rootfs} MiB"
		else
			echo "verify: [$mode] FAIL: root file system not grown (${rootfs:-?} MiB on a ${DISK_SIZE} disk)" >&2
			ok=0
		fi
		# the POST comes from the static address: the guest's network works both ways
		if grep -q "POST /phone-home/testnode from $GUEST_IP host=testnode" "$WORK/phone-home.log"; then
			echo "verify: [$mode] phone-home (curl -X POST): $(head -1 "$WORK/phone-home.log")"
		else
			echo "verify: [$mode] FAIL: no phone-home POST received" >&2
			ok=0
		fi
		if grep -aq 'KILN-KUBEADM-STUB call=0001 args: init --config /etc/kiln-test/kubeadm.yaml' "$log" &&
			grep -aq 'KILN-KUBEADM-STUB call=0001 config| kind: InitConfiguration' "$log"; then
			echo "verify: [$mode] kubeadm stub: ok"
		else
			echo "verify: [$mode] FAIL: kubeadm stub lines missing on serial" >&2
			ok=0
		fi
		if grep -aqE 'Failed to start|FAILED' "$log"; then
			echo "verify: [$mode] note: failed units on serial:" >&2
			grep -aE 'Failed to start|FAILED' "$log" | tr -d '\r' | head -5 >&2
		fi
		grep -a -m1 'Cloud-init v. .* finished' "$log" | tr -d '\r' || true
	fi
	# clean shutdown through ACPI, then make sure QEMU is gone
	monitor "$WORK/mon-$mode" system_powerdown
	for _ in $(seq 1 90); do kill -0 "$qpid" 2>/dev/null || break; sleep 1; done
	if kill -0 "$qpid" 2>/dev/null; then
		echo "verify: [$mode] note: guest did not power off within 90 s; stopping QEMU" >&2
		kill "$qpid" 2>/dev/null || true
	fi
	wait "$qpid" 2>/dev/null || true
	rm -f "$disk"
	if [ "$ok" = 1 ]; then RESULTS+=("$mode: ok (${marker_t}s to marker)"); else RESULTS+=("$mode: FAIL"); FAIL=1; fi
done

printf 'verify: %s\n' "${RESULTS[@]}"
exit "$FAIL"
