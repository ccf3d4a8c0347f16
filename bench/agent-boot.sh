#!/usr/bin/env bash
# How fast Kiln's in-memory OS gets the agent running, under QEMU TCG.
#
# Boots the agent OS kernel + initrd directly (-kernel/-initrd/-append, no netboot) in a
# q35 machine with a virtio NIC and a virtio disk, RUNS times, and reports for each stage
# the seconds from QEMU start and from the kernel's own clock (kernel start = host time of
# the /init marker minus the /proc/uptime it prints):
#   kernel start   first kernel line (only without `quiet`) / estimated from the kernel clock
#   /init start    "kiln-agent-os: up"
#   NIC drivers    "kiln-agent-os: NIC drivers loaded"
#   network up     the udhcpc hook's "kiln-agent-os: <if> <ip>/<n>" line
#   agent running  the agent's first line, "kiln-agent: working for … at N s"
#   all modules    "kiln-agent-os: modules loaded" (in the background since the NIC-first init;
#                  before it, ahead of the network)
# Older agent OS builds print fewer markers; their missing stages show as "-".
# The NIC sits on a bridge in a private network namespace with a DHCP server (dnsmasq) that
# answers only there; kiln.server points at an address in that namespace where nothing
# listens (the agent's first line comes before it asks the server anything).
#
#   sudo bench/agent-boot.sh [VARIANT...]
#
# A VARIANT is an agent OS directory (default target/e2e-assets/agent-os), optionally followed
# by `:` and extra kernel arguments (`DIR:lpj=4000000 quiet`). With several variants the runs
# alternate between them (A B A B …), so a machine shared with other work slows all of them
# alike and their difference stays meaningful; each gets its own table.
#
# Environment: RUNS per variant (default 3); APPEND (kernel arguments before the variant's and
# the kiln.* ones; default "console=ttyS0,115200 panic=-1 quiet", the e2e suite's); TIMEOUT
# per boot (default 60 s); KEEP_LOGS=DIR keeps each boot's timestamped serial log there;
# NICE=-10 runs QEMU at that priority, so other work on a shared machine (compilers at nice 0)
# stretches the boots less (default 0); ICOUNT=N runs the guest with `-icount shift=N,sleep=on`:
# its clock then counts instructions (2^N ns each) instead of following the host, so the
# kernel-clock figures no longer depend on what else the machine runs — for comparing
# variants on a busy machine (the absolute figures depend on N).
# Needs root, qemu-system-x86_64, dnsmasq, iproute2, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- "$ROOT/target/e2e-assets/agent-os"
RUNS=${RUNS:-3}
APPEND=${APPEND:-console=ttyS0,115200 panic=-1 quiet}
TIMEOUT=${TIMEOUT:-60}
[ "$(id -u)" -eq 0 ] || { echo "agent-boot.sh: must run as root (network namespace, tap)" >&2; exit 2; }
for t in qemu-system-x86_64 dnsmasq ip python3; do
	command -v "$t" >/dev/null || { echo "agent-boot.sh: needs $t" >&2; exit 2; }
done
for v in "$@"; do
	d=${v%%:*}
	for f in vmlinuz initrd.img; do
		[ -s "$d/$f" ] || { echo "agent-boot.sh: $d/$f missing (images/agent/build.sh $d)" >&2; exit 2; }
	done
	echo "agent OS: $d (initrd $(stat -c %s "$d/initrd.img") bytes, kernel $(stat -c %s "$d/vmlinuz") bytes)"
done

# One benchmark at a time: two would share the CPUs and spoil each other's figures.
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BENCH_WORK=${BENCH_WORK:-$ROOT/target/bench-work}
lock_bench_work agent-boot.sh

NICE=${NICE:-0}
ICOUNT=${ICOUNT:-}
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
echo "append: $APPEND; QEMU at nice $NICE${ICOUNT:+; -icount shift=$ICOUNT,sleep=on}"
echo "load at start: $(uptime)"
python3 - "$NS" "$APPEND" "kiln.server=http://10.78.0.1:8080 kiln.mac=$MAC kiln.hostname=bench" \
	"$MAC" "$WORK/disk.raw" "$RUNS" "$TIMEOUT" "$WORK" "${KEEP_LOGS:-}" "$NICE" "$ICOUNT" "$@" <<'EOF'
import os, re, shutil, statistics, subprocess, sys, time

ns, append, kiln_args, mac, disk, runs, timeout, work, keep, nice, icount, *variants = sys.argv[1:]
runs, timeout = int(runs), float(timeout)

def qemu(variant):
    os_dir, _, extra = variant.partition(":")
    args = " ".join(a for a in (append, extra, kiln_args) if a)
    return ["nice", "-n", nice, "ip", "netns", "exec", ns, "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35",
            "-m", "1024", "-smp", "1", "-display", "none", "-monitor", "none", "-serial", "stdio",
            "-no-reboot", "-kernel", f"{os_dir}/vmlinuz", "-initrd", f"{os_dir}/initrd.img",
            "-append", args,
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac}",
            "-drive", f"file={disk},format=raw,if=none,id=d0,snapshot=on",
            "-device", "virtio-blk-pci,drive=d0"] + (
            ["-icount", f"shift={icount},sleep=on"] if icount else [])

STAGES = [  # name, pattern (on the cleaned line); a line's "N.NN s" is the kernel clock
    ("kernel start", re.compile(r"Linux version")),
    ("/init start", re.compile(r"kiln-agent-os: up [0-9.]+ s")),
    ("NIC drivers", re.compile(r"kiln-agent-os: NIC drivers loaded")),
    ("network up", re.compile(r"kiln-agent-os: \S+ [0-9.]+/[0-9]+ router=")),
    ("agent running", re.compile(r"kiln-agent: working for")),
    ("all modules", re.compile(r"kiln-agent-os: modules loaded")),
]
UP = re.compile(r"(?<![0-9.])([0-9]+\.[0-9]+) s\b")

def boot(variant, n):
    name = f"serial-{n}.log"
    log = open(f"{work}/{name}", "w")
    log.write(f"# {variant}\n")
    t0 = time.monotonic()
    p = subprocess.Popen(qemu(variant), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
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
                for stage, pat in STAGES:
                    if stage in seen or not pat.search(line):
                        continue
                    m = UP.search(line) if stage != "kernel start" else None
                    up = float(m.group(1)) if m else None
                    if up is not None and kstart is None:
                        kstart = now - up
                    seen[stage] = (now, up)
            # Stop once the agent runs and the drivers loaded in the background are in too
            # (an agent OS without background loading prints "modules loaded" before).
            if "agent running" in seen and "all modules" in seen:
                break
    finally:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
        if keep:
            os.makedirs(keep, exist_ok=True)
            shutil.copy(f"{work}/{name}", keep)
    if kstart is None:
        sys.exit(f"boot {n}: no /init marker within {timeout:.0f} s (serial log: {work}/{name})")
    if "agent running" not in seen:
        sys.exit(f"boot {n}: the agent did not start within {timeout:.0f} s")
    row = {"kernel start": (seen.get("kernel start", (kstart, None))[0], 0.0)}
    for stage, _ in STAGES[1:]:
        if stage in seen:
            t, up = seen[stage]
            row[stage] = (t, up if up is not None else t - kstart)
    row["_kstart_est"] = kstart
    return row

rows = {v: [] for v in variants}
n = 0
for r in range(runs):
    for v in variants:
        row = boot(v, n)
        n += 1
        rows[v].append(row)
        label = f" [{variants.index(v) + 1}]" if len(variants) > 1 else ""
        print(f"run {r + 1}{label}: " + ", ".join(
            f"{k} {t[0]:.2f}/{t[1]:.2f}" for k, t in row.items() if not k.startswith("_")), flush=True)

for i, v in enumerate(variants):
    print()
    if len(variants) > 1:
        print(f"[{i + 1}] {v}")
    # Median, and the fastest run: on a shared machine the other load only ever slows a run down.
    print(f"{'stage (%d runs)' % runs:<24} {'from QEMU start':>16} {'kernel clock':>13} {'fastest (kernel)':>17}")
    for stage, _ in STAGES:
        vals = [r[stage] for r in rows[v] if stage in r]
        if not vals:
            print(f"{stage:<24} {'-':>16} {'-':>13} {'-':>17}")
            continue
        q = statistics.median(t[0] for t in vals)
        k = statistics.median(t[1] for t in vals)
        print(f"{stage:<24} {q:15.2f}s {k:12.2f}s {min(t[1] for t in vals):16.2f}s")
    print(f"{'kernel start (estimated)':<24} {statistics.median(r['_kstart_est'] for r in rows[v]):15.2f}s")
print()
print("target: agent running ≤ 3 s on the kernel clock (medians; fastest in the last column)")
EOF
echo "load at end: $(uptime)"
