#!/usr/bin/env bash
# The demo's phase times next to their floors, in one run (issue 5, point 7).
#
#   sudo bash bench/demo-phases.sh
#
# 1. `kiln demo --nodes 1 --summary-json …` (a single-node cluster: one QEMU TCG machine behind a
#    virtual BMC, in the demo's own private namespace);
# 2. the floors, each phase's step alone on one QEMU TCG machine set up like the demo's, in a
#    private network namespace made here (bridge + tap, dnsmasq, nginx, a phone-home listener
#    and the IPv6 router advertisement kiln serve sends, all inside it): firmware → DHCPACK;
#    agent OS kernel+initrd → the agent's first line; `kiln-agent image2disk` of the test OS in
#    the guest (and on this machine, no emulation); the installed test OS booted from its disk →
#    cloud-init → phone_home (see bench/demo-phases.py);
# 3. `kiln demo --nodes 3 --summary-json …` (one control plane, two workers);
# then prints the table (phase | 1 machine | 3 machines | floor | ratios), writes
# bench/results/demo-phases.{md,json} and the "Demo phases" section of BENCHMARKS.md.
# About 12–18 minutes on the 2-core development machine, depending on its load.
#
# Environment: KILN_BIN (a kiln binary; default: cargo build --release -p kiln), KILN_DEMO_ASSETS
# (default target/e2e-assets: agent-os/ and test-os/, built by tests/demo.sh or tests/run-e2e.sh),
# RUNS (runs of the short floors, default 3), DISK_RUNS (runs of the image-write-in-guest and
# disk-boot floors, default 2), DEMO_TIMEOUT (per demo, default 10m), PARTS (default
# "demo1 floors demo3"; a subset for trying the script, which then writes no BENCHMARKS.md),
# WRITE=0 (print only), KEEP_LOGS=DIR (keep the serial consoles of the demos' machines and of
# the floor runs there, with host timestamps for the floors; they show the demo's bootstrap
# token). The host image write uses the kiln-agent inside the agent OS's initrd, the very
# binary the demo's machines run. Everything is removed at the end (or on Ctrl-C): the
# namespace, the servers and QEMU machines this script started (by pid), the scratch directory.
# Needs root, qemu-system-x86_64, dnsmasq, nginx, zstd, cpio, e2fsprogs (debugfs), fdisk (sfdisk),
# iproute2, python3; and what `kiln demo` needs (tests/demo.sh installs it).
set -euo pipefail

REPO=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
HELPER=$REPO/bench/demo-phases.py
ASSETS=$(readlink -f "${KILN_DEMO_ASSETS:-$REPO/target/e2e-assets}")
RUNS=${RUNS:-3}
DISK_RUNS=${DISK_RUNS:-2}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-10m}
PARTS=${PARTS:-demo1 floors demo3}
WRITE=${WRITE:-1}
KEEP_LOGS=${KEEP_LOGS:-}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

# This script's own log and die, in place of lib.sh's: to stdout, and prefixed with its name.
log() { echo "demo-phases: $*"; }
die() { echo "demo-phases: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (kiln demo, network namespace, taps, QEMU)"
if [ -n "$KEEP_LOGS" ]; then mkdir -p "$KEEP_LOGS" && chmod 700 "$KEEP_LOGS" && KEEP_LOGS=$(readlink -f "$KEEP_LOGS"); fi
for t in qemu-system-x86_64 dnsmasq nginx zstd cpio debugfs sfdisk ip "$PY"; do
	command -v "$t" >/dev/null || die "needs $t (apt-get install qemu-system-x86 dnsmasq nginx zstd cpio e2fsprogs fdisk iproute2 python3)"
done
for f in agent-os/vmlinuz agent-os/initrd.img test-os/test-os.raw.zst test-os/test-os.raw.zst.sha256 test-os/test-os.raw.size; do
	[ -s "$ASSETS/$f" ] || die "$ASSETS/$f missing: build the assets with tests/demo.sh (or tests/run-e2e.sh) first"
done

# One benchmark at a time: two would share the CPUs and spoil each other's figures.
BENCH_WORK=${BENCH_WORK:-$REPO/target/bench-work}
lock_bench_work demo-phases.sh
T0=$SECONDS
WORK=$(mktemp -d /var/tmp/kiln-bench-demo-phases.XXXXXX)
mkdir -p "$WORK/pids"
NS=kiln-bench-phases-$$
DEMO_PID=
NS_MADE=
cleanup() {
	set +e
	if [ -n "$DEMO_PID" ] && kill -0 "$DEMO_PID" 2>/dev/null; then
		# kiln demo removes its lab on SIGTERM
		kill -TERM "$DEMO_PID"
		wait "$DEMO_PID"
	fi
	local f pid
	for f in "$WORK"/pids/*; do
		[ -f "$f" ] || continue
		pid=$(cat "$f")
		kill "$pid" 2>/dev/null
	done
	for f in "$WORK"/pids/*; do
		[ -f "$f" ] || continue
		pid=$(cat "$f")
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	[ -z "$NS_MADE" ] || ip netns del "$NS"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "load average at the start: $(loadavg) ($(nproc) CPUs)"
LOAD_START=$(loadavg)

if [ -z "${KILN_BIN:-}" ]; then
	log "cargo build --release -p kiln"
	(cd "$REPO" && cargo build --release -q -p kiln)
	KILN_BIN=$REPO/target/release/kiln
fi
# The agent the demo's machines run, for the floor without emulation.
zstd -dc "$ASSETS/agent-os/initrd.img" | (cd "$WORK" && cpio -i --quiet --make-directories bin/kiln-agent)
AGENT=$WORK/bin/kiln-agent
[ -x "$AGENT" ] || die "no bin/kiln-agent in $ASSETS/agent-os/initrd.img"
IMAGE=$ASSETS/test-os/test-os.raw.zst
SHA256=$(cut -d' ' -f1 "$ASSETS/test-os/test-os.raw.zst.sha256")
SIZE=$(cat "$ASSETS/test-os/test-os.raw.size")
(cd "$ASSETS/test-os" && sha256sum -c --quiet test-os.raw.zst.sha256) || die "$IMAGE does not match its .sha256"

declare -A LOAD
demo() { # demo N
	local n=$1
	sync # no write-back of earlier parts during this one
	LOAD[demo$n]="$(loadavg)"
	log "kiln demo --nodes $n (load $(loadavg))"
	"$KILN_BIN" demo --nodes "$n" --assets "$ASSETS" --work "$WORK/demo$n" --timeout "$DEMO_TIMEOUT" \
		--summary-json "$WORK/demo$n.json" ${KEEP_LOGS:+--keep} </dev/null >"$WORK/demo$n.out" 2>&1 &
	DEMO_PID=$!
	local rc=0
	wait "$DEMO_PID" || rc=$?
	DEMO_PID=
	LOAD[demo$n]="${LOAD[demo$n]} / $(loadavg)"
	if [ -n "${KEEP_LOGS:-}" ]; then
		local f
		for f in "$WORK/demo$n"/vm/*/serial*.log; do
			[ -f "$f" ] && cp "$f" "$KEEP_LOGS/demo$n-$(basename "$(dirname "$f")")-$(basename "$f")"
		done
		cp "$WORK/demo$n.out" "$KEEP_LOGS/"
		rm -rf "$WORK/demo$n"
	fi
	sed -n '/^MACHINE/,$p' "$WORK/demo$n.out" | sed 's/^/   /'
	if [ "$rc" -ne 0 ] || [ ! -s "$WORK/demo$n.json" ]; then
		tail -n 40 "$WORK/demo$n.out" >&2
		die "kiln demo --nodes $n failed (exit $rc)"
	fi
}

floors() {
	LOAD[floors]="$(loadavg)"
	log "floors in namespace $NS (load $(loadavg))"
	ip netns add "$NS"
	NS_MADE=1
	nsx() { ip netns exec "$NS" "$@"; }
	nsx ip link set lo up
	nsx ip link add br0 type bridge
	nsx ip link set br0 type bridge stp_state 0 forward_delay 0
	nsx ip tuntap add dev tap0 mode tap
	nsx ip link set tap0 master br0
	nsx ip link set tap0 up
	nsx ip addr add 10.78.0.1/24 dev br0
	nsx ip link set br0 up
	# `ip netns exec` execs the program: $! is the server itself (not so through a function,
	# which would run in a subshell).
	# iPXE's no-pxedhcp (175.176 = 1), as Kiln's DHCP sends it: without it iPXE waits ~3 s for
	# ProxyDHCP offers before it requests the lease.
	ip netns exec "$NS" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --interface=br0 --bind-interfaces \
		--except-interface=lo --dhcp-range=10.78.0.100,10.78.0.150,255.255.255.0,10m \
		--dhcp-option=option:router,10.78.0.1 --dhcp-option=encap:175,176,1b --dhcp-leasefile="$WORK/leases" --no-ping \
		--log-facility="$WORK/dnsmasq.log" --pid-file= --user=root </dev/null >/dev/null 2>&1 &
	echo $! >"$WORK/pids/dnsmasq"
	ip netns exec "$NS" "$PY" "$HELPER" router-advert br0 </dev/null >"$WORK/router-advert.log" 2>&1 &
	echo $! >"$WORK/pids/router-advert"
	mkdir -p "$WORK/www" "$WORK/nginx"
	ln "$IMAGE" "$WORK/www/test-os.raw.zst" 2>/dev/null || cp "$IMAGE" "$WORK/www/test-os.raw.zst"
	{
		echo "user root;" # the workers read WORK, which only root may enter
		nginx_conf "$WORK/nginx" "$WORK/www" 10.78.0.1:8080 127.0.0.1:8080
	} >"$WORK/nginx/nginx.conf"
	ip netns exec "$NS" nginx -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" </dev/null >/dev/null 2>&1 &
	echo $! >"$WORK/pids/nginx"
	cat >"$WORK/phone-home.py" <<-'EOF'
		import http.server, sys, time
		class H(http.server.BaseHTTPRequestHandler):
		    def do_POST(self):
		        self.rfile.read(int(self.headers.get("Content-Length") or 0))
		        with open(sys.argv[2], "a") as f:
		            f.write(f"{time.monotonic():.3f} POST {self.path} from {self.client_address[0]}\n")
		        self.send_response(200); self.end_headers(); self.wfile.write(b"ok\n")
		    def log_message(self, *a): pass
		http.server.HTTPServer((sys.argv[1], 8099), H).serve_forever()
	EOF
	: >"$WORK/phone-home.log"
	ip netns exec "$NS" "$PY" "$WORK/phone-home.py" 10.78.0.1 "$WORK/phone-home.log" </dev/null >/dev/null 2>&1 &
	echo $! >"$WORK/pids/phone-home"
	for _ in $(seq 50); do
		nsx "$PY" -c 'import socket; [socket.create_connection(("10.78.0.1", p), 1).close() for p in (8080, 8099)]' 2>/dev/null && break
		sleep 0.1
	done
	"$PY" "$HELPER" floors --ns "$NS" --work "$WORK" --agent-os "$ASSETS/agent-os" --image "$WORK/www/test-os.raw.zst" \
		--sha256 "$SHA256" --size "$SIZE" --agent "$AGENT" --runs "$RUNS" --disk-runs "$DISK_RUNS" \
		--deadline "$(($(date +%s) + 600))" --out "$WORK/floors.json"
	LOAD[floors]="${LOAD[floors]} / $(loadavg)"
	[ -z "${KEEP_LOGS:-}" ] || cp "$WORK"/*.serial.log "$WORK/dnsmasq.log" "$WORK/phone-home.log" "$KEEP_LOGS/"
	for f in dnsmasq router-advert nginx phone-home; do
		kill "$(cat "$WORK/pids/$f")" 2>/dev/null || true
		wait "$(cat "$WORK/pids/$f")" 2>/dev/null || true
		rm -f "$WORK/pids/$f"
	done
	ip netns del "$NS"
	NS_MADE=
	rm -f "$WORK/www/test-os.raw.zst"
}

for part in $PARTS; do
	case $part in
	demo1) demo 1 ;;
	demo3) demo 3 ;;
	floors) floors ;;
	*) die "unknown part $part (demo1, floors, demo3)" ;;
	esac
done

CMD="bash bench/demo-phases.sh"
[ "$RUNS" = 3 ] || CMD="RUNS=$RUNS $CMD"
[ "$DISK_RUNS" = 2 ] || CMD="DISK_RUNS=$DISK_RUNS $CMD"
KILN_REV=$(kiln_rev)
"$PY" - "$WORK/meta.json" <<EOF
import json, sys
json.dump({
    "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
    "command": "$CMD",
    "took_s": $((SECONDS - T0)),
    "machine": "$(nproc) CPUs ($(cpu_model)), kernel $(uname -r), $(mem_total), QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}') (TCG: no KVM here)",
    "kiln": "$KILN_REV (release build)",
    "agent_os": "$(stat -c %s "$ASSETS/agent-os/initrd.img") bytes, kernel $(stat -c %s "$ASSETS/agent-os/vmlinuz") bytes",
    "test_os": "$(stat -c %s "$IMAGE") bytes zstd, $SIZE bytes raw",
    "image": "$(awk -v z="$(stat -c %s "$IMAGE")" -v r="$SIZE" 'BEGIN { printf "%.0f MB zstd, %.1f GiB raw", z / 1e6, r / 2^30 }')",
    "load": {"start": "$LOAD_START", "end": "$(loadavg)", "demo1": "${LOAD[demo1]:-–}",
             "demo3": "${LOAD[demo3]:-–}", "floors": "${LOAD[floors]:-–}"},
}, open(sys.argv[1], "w"), indent=1)
EOF
log "load average at the end: $(loadavg); took $((SECONDS - T0)) s"

ARGS=(render --meta "$WORK/meta.json" --floors "$WORK/floors.json" --md "$WORK/demo-phases.md")
[ ! -s "$WORK/demo1.json" ] || ARGS+=(--demo1 "$WORK/demo1.json")
[ ! -s "$WORK/demo3.json" ] || ARGS+=(--demo3 "$WORK/demo3.json")
if [ "$WRITE" = 1 ] && [ "$PARTS" = "demo1 floors demo3" ]; then
	ARGS+=(--benchmarks "$REPO/BENCHMARKS.md")
	"$PY" "$HELPER" "${ARGS[@]}"
	mkdir -p "$REPO/bench/results"
	cp "$WORK/demo-phases.md" "$REPO/bench/results/demo-phases.md"
	"$PY" - "$WORK" "$REPO/bench/results/demo-phases.json" <<-'EOF'
		import json, sys
		w = sys.argv[1]
		out = {k: json.load(open(f"{w}/{k}.json")) for k in ("meta", "floors", "demo1", "demo3")}
		json.dump(out, open(sys.argv[2], "w"), indent=1)
	EOF
	log "written: BENCHMARKS.md (Demo phases section), bench/results/demo-phases.{md,json}"
else
	[ -s "$WORK/floors.json" ] || echo '{"runs": {}}' >"$WORK/floors.json"
	"$PY" "$HELPER" "${ARGS[@]}"
	log "PARTS=\"$PARTS\" / WRITE=$WRITE: BENCHMARKS.md not written"
fi
