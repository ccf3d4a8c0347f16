#!/usr/bin/env bash
# How fast Kiln's in-memory OS gets the agent running, under QEMU TCG.
#
# Boots the agent OS kernel + initrd directly (-kernel/-initrd/-append, no netboot) in a
# q35 machine with a virtio NIC and a virtio disk, RUNS times, and reports for each stage
# the seconds from QEMU start and from the kernel's own clock (kernel start = host time of
# the /init marker minus the /proc/uptime it prints):
#   kernel start   first kernel line (only without `quiet`) / estimated from the kernel clock
#   /init start    "kiln-agent-os: up"
#   modules        "kiln-agent-os: modules loaded"   (agent OS from this tree)
#   network up     the udhcpc hook's "kiln-agent-os: <if> <ip>/<n>" line
#   agent running  the agent's first line, "kiln-agent: working for …"
# The NIC sits on a bridge in a private network namespace with a DHCP server (dnsmasq) that
# answers only there; kiln.server points at an address in that namespace where nothing
# listens (the agent's first line comes before it asks the server anything).
#
#   sudo bench/agent-boot.sh [AGENT_OS_DIR]    default target/e2e-assets/agent-os
#
# Environment: RUNS (default 3); APPEND (kernel arguments before the kiln.* ones; default
# "console=ttyS0,115200 panic=-1 quiet", the e2e suite's); TIMEOUT per boot (default 60 s).
# Needs root, qemu-system-x86_64, dnsmasq, iproute2, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OS_DIR=${1:-$ROOT/target/e2e-assets/agent-os}
RUNS=${RUNS:-3}
APPEND=${APPEND:-console=ttyS0,115200 panic=-1 quiet}
TIMEOUT=${TIMEOUT:-60}
[ "$(id -u)" -eq 0 ] || { echo "agent-boot.sh: must run as root (network namespace, tap)" >&2; exit 2; }
for t in qemu-system-x86_64 dnsmasq ip python3; do
	command -v "$t" >/dev/null || { echo "agent-boot.sh: needs $t" >&2; exit 2; }
done
for f in vmlinuz initrd.img; do
	[ -s "$OS_DIR/$f" ] || { echo "agent-boot.sh: $OS_DIR/$f missing (images/agent/build.sh $OS_DIR)" >&2; exit 2; }
done

NS=kiln-bench-boot-$$
WORK=$(mktemp -d /tmp/kiln-agent-boot.XXXXXX)
DNSMASQ_PID=
cleanup() {
	set +e
	if [ -n "$DNSMASQ_PID" ]; then kill "$DNSMASQ_PID" 2>/dev/null; wait "$DNSMASQ_PID" 2>/dev/null; fi
	ip netns del "$NS" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add br0 type bridge
ip -n "$NS" link set br0 type bridge stp_state 0 forward_delay 0
ip -n "$NS" tuntap add dev tap0 mode tap
ip -n "$NS" link set tap0 master br0
ip -n "$NS" link set tap0 up
ip -n "$NS" addr add 10.78.0.1/24 dev br0
ip -n "$NS" link set br0 up
ip netns exec "$NS" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --interface=br0 \
	--bind-interfaces --except-interface=lo --dhcp-range=10.78.0.50,10.78.0.99,255.255.255.0,10m \
	--dhcp-option=option:router,10.78.0.1 --dhcp-leasefile="$WORK/leases" --no-ping \
	--log-facility="$WORK/dnsmasq.log" --pid-file= --user=root </dev/null &
DNSMASQ_PID=$!
truncate -s 4G "$WORK/disk.raw"

MAC=52:54:00:6b:00:01
echo "agent OS: $OS_DIR (initrd $(stat -c %s "$OS_DIR/initrd.img") bytes, kernel $(stat -c %s "$OS_DIR/vmlinuz") bytes)"
echo "append: $APPEND"
echo "load at start: $(uptime)"
python3 - "$NS" "$OS_DIR" "$APPEND kiln.server=http://10.78.0.1:8080 kiln.mac=$MAC kiln.hostname=bench kiln.token=bench" \
	"$MAC" "$WORK/disk.raw" "$RUNS" "$TIMEOUT" "$WORK" <<'EOF'
import os, re, statistics, subprocess, sys, time

ns, os_dir, append, mac, disk, runs, timeout, work = sys.argv[1:]
runs, timeout = int(runs), float(timeout)
qemu = ["ip", "netns", "exec", ns, "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35",
        "-m", "1024", "-smp", "1", "-display", "none", "-monitor", "none", "-serial", "stdio",
        "-no-reboot", "-kernel", f"{os_dir}/vmlinuz", "-initrd", f"{os_dir}/initrd.img",
        "-append", append,
        "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=n0,mac={mac}",
        "-drive", f"file={disk},format=raw,if=none,id=d0,snapshot=on",
        "-device", "virtio-blk-pci,drive=d0"]

STAGES = [  # name, pattern (on the cleaned line), whether the line carries /proc/uptime
    ("kernel start", re.compile(r"Linux version"), False),
    ("/init start", re.compile(r"kiln-agent-os: up ([0-9.]+) s"), True),
    ("modules loaded", re.compile(r"kiln-agent-os: modules loaded ([0-9.]+) s"), True),
    ("network up", re.compile(r"kiln-agent-os: \S+ [0-9.]+/[0-9]+ router="), True),
    ("agent running", re.compile(r"kiln-agent: working for"), False),
]
UP = re.compile(r"\(([0-9.]+) s\)|up ([0-9.]+) s|loaded ([0-9.]+) s")

def boot(n):
    log = open(f"{work}/serial-{n}.log", "w")
    t0 = time.monotonic()
    p = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen, buf, kstart = {}, b"", None
    try:
        while time.monotonic() - t0 < timeout:
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                break
            now = time.monotonic() - t0
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode("utf-8", "replace")).strip()
                log.write(f"{now:8.3f} {line}\n")
                for name, pat, has_up in STAGES:
                    if name in seen or not pat.search(line):
                        continue
                    up = None
                    m = UP.search(line)
                    if has_up and m:
                        up = float(next(g for g in m.groups() if g))
                        if kstart is None:
                            kstart = now - up
                    seen[name] = (now, up)
            if "agent running" in seen:
                break
    finally:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
    if kstart is None:
        sys.exit(f"boot {n}: no /init marker within {timeout:.0f} s (serial log: {work}/serial-{n}.log)")
    if "agent running" not in seen:
        sys.exit(f"boot {n}: the agent did not start within {timeout:.0f} s")
    row = {"kernel start": (seen.get("kernel start", (kstart, None))[0], 0.0)}
    for name, _, _ in STAGES[1:]:
        if name in seen:
            t, up = seen[name]
            row[name] = (t, up if up is not None else t - kstart)
    row["_kstart_est"] = kstart
    return row

rows = []
for n in range(runs):
    r = boot(n)
    rows.append(r)
    print(f"run {n + 1}: " + ", ".join(
        f"{k} {v[0]:.2f}/{v[1]:.2f}" for k, v in r.items() if not k.startswith("_")), flush=True)

print()
# Median, and the fastest run: on a shared machine the other load only ever slows a run down.
print(f"{'stage (%d runs)' % runs:<24} {'from QEMU start':>16} {'kernel clock':>13} {'fastest (kernel)':>17}")
for name, _, _ in STAGES:
    vals = [r[name] for r in rows if name in r]
    if not vals:
        print(f"{name:<24} {'-':>16} {'-':>13} {'-':>17}")
        continue
    q = statistics.median(v[0] for v in vals)
    k = statistics.median(v[1] for v in vals)
    print(f"{name:<24} {q:15.2f}s {k:12.2f}s {min(v[1] for v in vals):16.2f}s")
print(f"{'kernel start (estimated)':<24} {statistics.median(r['_kstart_est'] for r in rows):15.2f}s")
print()
print("target: agent running ≤ 3 s on the kernel clock (medians; fastest in the last column)")
EOF
echo "load at end: $(uptime)"
