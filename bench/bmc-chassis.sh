#!/bin/sh
# Chassis of a benchmark BMC (bench/bmc.sh): OpenIPMI's chassis_control protocol, as ipmi_sim and
# tests/e2e/sushy_qemu.py call it, with power and boot device kept in files under $KILN_BENCH_STATE
# (set in the emulator's environment). No machine behind it: changes take effect at once.
#   bmc-chassis.sh MC get power boot | MC set power 0|1 | MC set reset 1 | MC set boot DEV | ...
D=${KILN_BENCH_STATE:?KILN_BENCH_STATE is not set}
shift # MC
op=$1
shift
if [ "$op" = get ]; then
	for k in "$@"; do
		case $k in
		power) echo "power:$(cat "$D/power" 2>/dev/null || echo 0)" ;;
		boot) echo "boot:$(cat "$D/boot" 2>/dev/null || echo none)" ;;
		esac
	done
	exit 0
fi
while [ $# -ge 2 ]; do
	k=$1 v=$2
	shift 2
	case $k in
	power) echo "$v" >"$D/power" ;;
	reset) echo 1 >"$D/power" ;;
	shutdown) echo 0 >"$D/power" ;;
	boot) echo "$v" >"$D/boot" ;;
	bootmode) echo "$v" >"$D/bootmode" ;;
	esac
done
exit 0
