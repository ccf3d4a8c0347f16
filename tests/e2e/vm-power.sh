#!/bin/bash
# A virtual machine's "chassis" for virtual BMCs: OpenIPMI ipmi_sim's chassis_control program
# (its extcmd protocol) and the control program of tests/e2e/sushy_qemu.py. It powers a QEMU
# (TCG) machine on and off and keeps its boot device:
#
#   vm-power.sh MC get power boot        prints "power:0|1" and "boot:pxe|default|cdrom|bios"
#   vm-power.sh MC set power 1|0         on / hard off
#   vm-power.sh MC set reset 1           hard reset (off, then on)
#   vm-power.sh MC set boot pxe|default  next boot device
#   vm-power.sh MC set shutdown 1        ACPI power button
#   vm-power.sh MC set identify ...      logged only
#
# The machine is described by the environment: VMDIR (state: qemu.pid, bootdev, serial.log,
# serial-all.log, ctl.log), TAP, MAC, and optionally FW (bios|uefi, OVMF_CODE and OVMF_VARS for
# uefi; UEFI_NETSTACK=none turns OVMF's own IPv4/IPv6 network stacks off, so the NIC's iPXE ROM is
# the network boot), DISK (a raw disk image), MEM (MiB). ipmi_sim popen()s this program and waits for the
# pipe to close, so QEMU is fully detached (-daemonize, no inherited output).
set -u
: "${VMDIR:?}" "${TAP:?}" "${MAC:?}"
FW=${FW:-bios}
MEM=${MEM:-512}
mkdir -p "$VMDIR"

log() { echo "$(date +%T.%N) $*" >>"$VMDIR/ctl.log"; }
running() { [ -s "$VMDIR/qemu.pid" ] && kill -0 "$(cat "$VMDIR/qemu.pid")" 2>/dev/null; }

start_vm() {
	running && return 0
	local dev boot=n
	dev=$(cat "$VMDIR/bootdev" 2>/dev/null || echo pxe)
	case $dev in default | none) boot=c ;; cdrom) boot=d ;; esac
	local args=(-accel tcg -machine q35 -m "$MEM" -smp 1 -display none
		-serial "file:$VMDIR/serial.log" -monitor "unix:$VMDIR/monitor.sock,server,nowait"
		-netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no")
	if [ "$FW" = uefi ]; then
		[ -f "$VMDIR/OVMF_VARS.fd" ] || cp "${OVMF_VARS:?}" "$VMDIR/OVMF_VARS.fd"
		args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE:?}"
			-drive "if=pflash,format=raw,unit=1,file=$VMDIR/OVMF_VARS.fd")
		if [ "${UEFI_NETSTACK:-all}" = none ]; then
			args+=(-fw_cfg "name=opt/org.tianocore/IPv4Support,string=no"
				-fw_cfg "name=opt/org.tianocore/IPv6Support,string=no")
		fi
	fi
	# Boot order the way a BMC's override sets it: the network first for "pxe", else the disk.
	local nic_index=1 disk_index=2
	[ "$boot" = c ] && { nic_index=2; disk_index=1; }
	args+=(-device "virtio-net-pci,netdev=n0,mac=$MAC,bootindex=$nic_index")
	if [ -n "${DISK:-}" ]; then
		args+=(-drive "file=$DISK,format=raw,if=none,id=d0"
			-device "virtio-blk-pci,drive=d0,bootindex=$disk_index")
	fi
	# Keep the serial output of earlier power-ons.
	[ -f "$VMDIR/serial.log" ] && cat "$VMDIR/serial.log" >>"$VMDIR/serial-all.log"
	log "start bootdev=$dev"
	qemu-system-x86_64 "${args[@]}" -daemonize -pidfile "$VMDIR/qemu.pid" \
		</dev/null >>"$VMDIR/qemu.log" 2>&1
}

stop_vm() {
	running || return 0
	local pid
	pid=$(cat "$VMDIR/qemu.pid")
	log "stop pid=$pid"
	kill "$pid"
	for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
	rm -f "$VMDIR/qemu.pid"
}

monitor() {
	python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall((sys.argv[2]+"\n").encode())' \
		"$VMDIR/monitor.sock" "$1"
}

shift # MC (the management controller address; one machine per program here)
op=${1:-}
shift || true
log "$op $*"
if [ "$op" = get ]; then
	for k in "$@"; do
		case $k in
		power) if running; then echo "power:1"; else echo "power:0"; fi ;;
		boot) echo "boot:$(cat "$VMDIR/bootdev" 2>/dev/null || echo pxe)" ;;
		esac
	done
	exit 0
fi
while [ $# -ge 2 ]; do
	k=$1 v=$2
	shift 2
	case $k in
	power) if [ "$v" = 1 ]; then start_vm; else stop_vm; fi ;;
	reset) stop_vm; start_vm ;;
	boot) echo "$v" >"$VMDIR/bootdev" ;;
	shutdown) running && monitor system_powerdown ;;
	identify) ;;
	esac
done
exit 0
