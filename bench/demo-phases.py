#!/usr/bin/env python3
"""Helpers of bench/demo-phases.sh: the floor measurements (QEMU TCG machines in the namespace
the script made) and the report (table, bench/results/demo-phases.md, BENCHMARKS.md section;
with bench/benchlib.py).

  demo-phases.py floors --ns NS --work DIR --agent-os DIR --image ZST --sha256 HEX --size BYTES
                 --agent BIN --runs N --disk-runs N --deadline UNIX_S --out FLOORS.json
  demo-phases.py render --meta META.json --demo1 S1.json --demo3 S3.json --floors FLOORS.json
                 [--md FILE] [--benchmarks FILE]
  demo-phases.py router-advert IFACE      (in the namespace) the RA kiln serve sends, see below

Every floor is one machine at a time, the way the demo's machines are set up (q35, SeaBIOS,
1 GiB, one vCPU, virtio NIC on a bridge, a 3 GiB sparse virtio disk, TCG):
  dhcp        QEMU start -> dnsmasq's DHCPACK to the NIC's iPXE ROM (firmware + one DHCP)
  agent       agent OS kernel+initrd given to QEMU directly (-kernel/-initrd, no download),
              QEMU start -> the agent's first line ("kiln-agent: working for ...")
  image-tcg   the same agent OS with an extra /bench-init (rdinit=): loads the drivers, sets a
              static address, then `kiln-agent image2disk` of the test OS from nginx in the
              namespace onto /dev/vda; its start and end markers on the console
  image-host  `kiln-agent image2disk` on this machine over loopback (in the namespace) into a
              3 GiB sparse file: what the write costs without emulation
  disk        the test OS image (decompressed, grown to 3 GiB, NoCloud seed written into it
              with debugfs, as the agent does) booted from its disk: QEMU start -> kernel banner
              -> cloud-init's init-local -> cloud-init's phone_home POST (the seed has only the
              hostname, static network and phone_home) -> cloud-init finished
"""

import argparse
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

from benchlib import md_table, update_section

BEGIN = "<!-- demo-phases:begin -->"
END = "<!-- demo-phases:end -->"
BRIDGE_IP = "10.78.0.1"
GUEST_IP = "10.78.0.57"
HTTP_PORT = 8080
PHONE_HOME_PORT = 8099
MAC = "52:54:00:d9:00:01"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]")


class Stop(Exception):
    pass


def on_term(signum, _frame):
    raise Stop(f"signal {signum}")


# ---------------------------------------------------------------------------- QEMU runs

class Watch:
    """Lines appended to a file (dnsmasq's log, the phone-home listener's log) since now."""

    def __init__(self, path):
        self.path = path
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0
        self.partial = b""

    def lines(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        self.partial += data
        *done, self.partial = self.partial.split(b"\n")
        return [d.decode("utf-8", "replace") for d in done]


class Machine:
    """One QEMU (in the namespace), its serial console on stdout, read with host timestamps."""

    def __init__(self, ns, work, name, args):
        self.log_path = os.path.join(work, f"{name}.serial.log")
        self.log = open(self.log_path, "w")
        cmd = ["ip", "netns", "exec", ns, "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35",
               "-m", "1024", "-smp", "1", "-display", "none", "-monitor", "none",
               "-serial", "stdio", "-no-reboot"] + args
        self.t0 = time.monotonic()
        # `ip netns exec` execs QEMU: the child's pid is QEMU's. The shell's trap kills the
        # pids in WORK/pids too, should this program die without its finally.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.pidfile = os.path.join(work, "pids", f"qemu-{self.proc.pid}")
        with open(self.pidfile, "w") as f:
            f.write(f"{self.proc.pid}\n")
        self.buf = b""

    def lines(self, wait):
        """(seconds since QEMU start, line) read within `wait` seconds; None at EOF."""
        r, _, _ = select.select([self.proc.stdout], [], [], wait)
        if not r:
            return []
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        now = time.monotonic() - self.t0
        if not chunk:
            return None
        self.buf += chunk
        *done, self.buf = re.split(rb"[\r\n]", self.buf)
        out = []
        for raw in done:
            line = ANSI.sub("", raw.decode("utf-8", "replace")).strip()
            if line:
                self.log.write(f"{now:8.3f} {line}\n")
                out.append((now, line))
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        try:
            os.unlink(self.pidfile)
        except FileNotFoundError:
            pass


def follow(m, timeout, serial_marks, file_marks=(), done=None):
    """Seconds from QEMU start to the first line matching each mark; stops when `done(seen)`
    says so, at EOF, or after `timeout` s. serial_marks: {name: regex}; file_marks:
    [(Watch, name, regex, stamp)] where stamp(line) gives the monotonic time or None."""
    seen = {}
    try:
        while time.monotonic() - m.t0 < timeout:
            got = m.lines(0.05)
            if got is None:
                break
            for t, line in got:
                for name, pat in serial_marks.items():
                    if name not in seen and pat.search(line):
                        seen[name] = t
            for w, name, pat, stamp in file_marks:
                for line in w.lines():
                    if name not in seen and pat.search(line):
                        at = stamp(line) if stamp else None
                        seen[name] = (at if at is not None else time.monotonic()) - m.t0
            if done and done(seen):
                break
    finally:
        m.stop()
    return seen


def need(seen, names, what, m):
    missing = [n for n in names if n not in seen]
    if missing:
        tail = open(m.log_path, errors="replace").read().splitlines()[-15:]
        sys.exit(f"demo-phases: {what}: no {', '.join(missing)} (serial log {m.log_path}):\n  "
                 + "\n  ".join(tail))


def sparse(path, gib):
    with open(path, "wb") as f:
        f.truncate(gib << 30)


def nic(bootindex=None):
    dev = f"virtio-net-pci,netdev=n0,mac={MAC}"
    return ["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", dev + (f",bootindex={bootindex}" if bootindex else "")]


def disk(path, bootindex=None):
    return ["-drive", f"file={path},format=raw,if=none,id=d0",
            "-device", "virtio-blk-pci,drive=d0" + (f",bootindex={bootindex}" if bootindex else "")]


def floor_dhcp(a, n):
    """QEMU start -> DHCPACK from dnsmasq: SeaBIOS, the NIC's iPXE ROM, one DHCP exchange."""
    blank = os.path.join(a.work, "blank.raw")
    sparse(blank, 3)
    w = Watch(os.path.join(a.work, "dnsmasq.log"))
    m = Machine(a.ns, a.work, f"dhcp-{n}", nic(1) + disk(blank, 2))
    ack = re.compile(r"DHCPACK\(br0\) \S+ " + MAC)
    seen = follow(m, 90, {}, [(w, "ack", ack, None)], lambda s: "ack" in s)
    need(seen, ["ack"], f"DHCP floor run {n}", m)
    os.unlink(blank)
    return {"ack": seen["ack"]}


def floor_agent(a, n):
    """QEMU start -> the agent's first line, the agent OS given to QEMU directly."""
    blank = os.path.join(a.work, "blank.raw")
    sparse(blank, 3)
    append = (f"{a.kernel_args} kiln.server=http://{BRIDGE_IP}:{HTTP_PORT + 1} kiln.mac={MAC} "
              "kiln.hostname=bench")
    m = Machine(a.ns, a.work, f"agent-{n}",
                ["-kernel", f"{a.agent_os}/vmlinuz", "-initrd", f"{a.agent_os}/initrd.img",
                 "-append", append] + nic() + disk(blank))
    marks = {"init": re.compile(r"kiln-agent-os: up "),
             "agent": re.compile(r"kiln-agent: working for")}
    seen = follow(m, 120, marks, done=lambda s: "agent" in s)
    need(seen, ["init", "agent"], f"agent floor run {n}", m)
    os.unlink(blank)
    # /init prints the kernel's uptime: the kernel started that long before the line came.
    up = re.search(r"kiln-agent-os: up ([0-9.]+) s", open(m.log_path, errors="replace").read())
    kernel = seen["init"] - float(up.group(1))
    return {"agent": seen["agent"], "kernel": kernel, "kernel_to_agent": seen["agent"] - kernel}


BENCH_INIT = """#!/bin/busybox sh
# demo-phases.py: the agent OS, but instead of the agent's workflow one image2disk, timed.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mkdir -p /run/kiln
echo /bin/modprobe >/proc/sys/kernel/modprobe
kiln-coldplug all >/dev/null 2>&1
IF=
for d in /sys/class/net/*; do [ "${d##*/}" = lo ] || { IF=${d##*/}; break; }; done
ip link set lo up
ip link set "$IF" up
ip addr add @GUEST@/24 dev "$IF"
n=0
until [ -b /dev/vda ] || [ $n -ge 100 ]; do sleep 0.1; n=$((n + 1)); done
read -r up _ </proc/uptime
echo "BENCH-I2D-START $up"
kiln-agent image2disk --url @URL@ --sha256 @SHA@ --size @SIZE@ --disk /dev/vda --progress-interval 5s
rc=$?
read -r up _ </proc/uptime
echo "BENCH-I2D-DONE rc=$rc $up"
poweroff -f
"""


def overlay_initrd(a):
    """The agent OS initrd with /bench-init in front (an uncompressed cpio, then the original
    compressed one: the kernel unpacks both)."""
    d = os.path.join(a.work, "overlay")
    os.makedirs(d, exist_ok=True)
    url = f"http://{BRIDGE_IP}:{HTTP_PORT}/{os.path.basename(a.image)}"
    script = (BENCH_INIT.replace("@GUEST@", GUEST_IP).replace("@URL@", url)
              .replace("@SHA@", a.sha256).replace("@SIZE@", str(a.size)))
    with open(os.path.join(d, "bench-init"), "w") as f:
        f.write(script)
    os.chmod(os.path.join(d, "bench-init"), 0o755)
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=d, input=b"bench-init\n",
                          stdout=subprocess.PIPE, check=True).stdout
    cpio += bytes(-len(cpio) % 512)
    out = os.path.join(a.work, "initrd-bench.img")
    with open(out, "wb") as f, open(f"{a.agent_os}/initrd.img", "rb") as orig:
        f.write(cpio)
        shutil.copyfileobj(orig, f)
    return out


def floor_image_tcg(a, n, initrd):
    target = os.path.join(a.work, "i2d.raw")
    sparse(target, 3)
    m = Machine(a.ns, a.work, f"image-tcg-{n}",
                ["-kernel", f"{a.agent_os}/vmlinuz", "-initrd", initrd,
                 "-append", f"{a.kernel_args} rdinit=/bench-init"] + nic() + disk(target))
    marks = {"start": re.compile(r"^BENCH-I2D-START "), "done": re.compile(r"^BENCH-I2D-DONE ")}
    seen = follow(m, 300, marks, done=lambda s: "done" in s)
    need(seen, ["start", "done"], f"image write (TCG) run {n}", m)
    log = open(m.log_path, errors="replace").read()
    if "BENCH-I2D-DONE rc=0 " not in log:
        sys.exit(f"demo-phases: image write (TCG) run {n} failed (serial log {m.log_path})")
    os.unlink(target)
    return {"write": seen["done"] - seen["start"], "start": seen["start"]}


def floor_image_host(a, n):
    target = os.path.join(a.work, "host-disk.raw")
    sparse(target, 3)
    url = f"http://127.0.0.1:{HTTP_PORT}/{os.path.basename(a.image)}"
    t0 = time.monotonic()
    r = subprocess.run(["ip", "netns", "exec", a.ns, a.agent, "image2disk", "--url", url,
                        "--sha256", a.sha256, "--size", str(a.size), "--disk", target, "-q"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    t = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"demo-phases: image write (host) run {n} failed: {r.stderr.strip()}")
    os.unlink(target)
    return {"write": t}


SEED_USER_DATA = f"""#cloud-config
hostname: bench-floor
manage_etc_hosts: true
phone_home:
  url: http://{BRIDGE_IP}:{PHONE_HOME_PORT}/phone-home/bench-floor
  post: [instance_id, hostname, fqdn]
  tries: 10
"""
SEED_NETWORK = f"""version: 2
ethernets:
  nic0:
    match:
      macaddress: "{MAC}"
    addresses: [ {GUEST_IP}/24 ]
    routes:
      - to: 0.0.0.0/0
        via: {BRIDGE_IP}
    nameservers:
      addresses: [ {BRIDGE_IP} ]
"""


def installed_disk(a, n):
    """The test OS as the agent leaves it: image on a 3 GiB disk, NoCloud seed in partition 3."""
    path = os.path.join(a.work, "os.raw")
    subprocess.run(["zstd", "-q", "-d", "-f", a.image, "-o", path], check=True)
    with open(path, "r+b") as f:
        f.truncate(3 << 30)
    seed = os.path.join(a.work, "seed")
    os.makedirs(seed, exist_ok=True)
    files = {"user-data": SEED_USER_DATA, "network-config": SEED_NETWORK,
             "meta-data": f"instance-id: bench-floor-{n}\nlocal-hostname: bench-floor\n"}
    for name, text in files.items():
        with open(os.path.join(seed, name), "w") as f:
            f.write(text)
    table = subprocess.run(["sfdisk", "-J", path], capture_output=True, text=True, check=True).stdout
    parts = json.loads(table)["partitiontable"]["partitions"]
    root = next(p for p in parts if p["node"].endswith("3"))
    target = f"{path}?offset={root['start'] * 512}"
    cmds = ["mkdir /var/lib/cloud", "mkdir /var/lib/cloud/seed", "mkdir /var/lib/cloud/seed/nocloud"]
    cmds += [f"write {seed}/{name} /var/lib/cloud/seed/nocloud/{name}" for name in files]
    subprocess.run(["debugfs", "-w", "-f", "-", target], input="\n".join(cmds) + "\n", text=True,
                   capture_output=True, check=True)
    check = subprocess.run(["debugfs", "-R", "ls /var/lib/cloud/seed/nocloud", target],
                           capture_output=True, text=True).stdout
    if "user-data" not in check:
        sys.exit(f"demo-phases: writing the NoCloud seed into {path} with debugfs failed")
    return path


def floor_disk(a, n):
    path = installed_disk(a, n)
    w = Watch(os.path.join(a.work, "phone-home.log"))
    m = Machine(a.ns, a.work, f"disk-{n}", nic(2) + disk(path, 1))
    marks = {"kernel": re.compile(r"Linux version "),
             "init_local": re.compile(r"Cloud-init v\. .* running 'init-local'"),
             "finished": re.compile(r"Cloud-init v\. .* finished at ")}

    def stamp(line):  # the listener writes the monotonic time of each POST first
        try:
            return float(line.split()[0])
        except (ValueError, IndexError):
            return None

    post = (w, "phone_home", re.compile(r"POST /phone-home/bench-floor"), stamp)
    seen = follow(m, 600, marks, [post], lambda s: "phone_home" in s and "finished" in s)
    need(seen, ["kernel", "init_local", "phone_home"], f"disk boot floor run {n}", m)
    os.unlink(path)
    return seen


def cmd_floors(a):
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    os.makedirs(os.path.join(a.work, "pids"), exist_ok=True)
    out = {"runs": {}, "loads": {}}

    def timed(name, runs, fn, *args):
        res = []
        out["loads"][name] = [os.getloadavg()]
        for n in range(runs):
            if n > 0 and time.time() > a.deadline:
                print(f"  {name}: time budget spent, {n} run(s) only", flush=True)
                break
            # Start each run with nothing left to write back: a previous run's 1.5 GiB of
            # dirty pages would throttle this one's writes.
            os.sync()
            r = fn(a, n, *args)
            print(f"  {name} run {n + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in r.items()),
                  flush=True)
            res.append(r)
        out["loads"][name].append(os.getloadavg())
        out["runs"][name] = res

    try:
        timed("dhcp", a.runs, floor_dhcp)
        timed("agent", a.runs, floor_agent)
        timed("image-host", a.runs, floor_image_host)
        timed("image-tcg", a.disk_runs, floor_image_tcg, overlay_initrd(a))
        timed("disk", a.disk_runs, floor_disk)
    except Stop as e:
        sys.exit(f"demo-phases: floors interrupted ({e})")
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


# ---------------------------------------------------------------------------- router advert

def cmd_router_advert(a):
    """What `kiln serve` sends on the demo's bridge: an RA that says "no router, no prefixes,
    no DHCPv6" (router lifetime 0), every 4 s and in answer to solicitations (at most 1/s).
    Without one the installed OS's systemd-networkd waits ~13 s for IPv6 autoconfiguration
    before the network counts as configured; with it, as in the demo, it does not."""
    idx = socket.if_nametoindex(a.interface)
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, a.interface.encode())
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                 socket.inet_pton(socket.AF_INET6, "ff02::2") + struct.pack("@I", idx))
    # type 134, code 0, checksum (the kernel's), hop limit 64, no flags, router lifetime 0,
    # reachable time 0, retransmit timer 0; no options.
    ra = bytes([134, 0, 0, 0, 64, 0, 0, 0]) + bytes(8)
    last, periodic = 0.0, 0.0
    while True:
        wait = max(0.0, periodic - time.monotonic())
        ready, _, _ = select.select([s], [], [], wait)
        due = time.monotonic() >= periodic
        if ready:
            data = s.recv(1500)
            due = due or (data[:1] == bytes([133]))
        if due and time.monotonic() - last >= 1.0:
            try:
                s.sendto(ra, ("ff02::1", 0, 0, idx))
                last = time.monotonic()
                periodic = last + 4.0
            except OSError:  # the bridge's link-local address is still tentative
                periodic = time.monotonic() + 0.5


# ---------------------------------------------------------------------------- report

PHASES = ["POWER-ON", "DHCP", "AGENT UP", "IMAGE WRITTEN", "DISK BOOT", "PHONE HOME"]


def fmt(s):
    if s is None:
        return "–"
    if s >= 60:
        return f"{int(s // 60)}m{s % 60:04.1f}s"
    return f"{s:.1f}s"


def ratio(x, floor):
    if x is None or not floor:
        return "–"
    return f"{x / floor:.1f}×"


def machine_rows(summary):
    """Per machine: the demo's six phases plus the parts of disk boot, in seconds."""
    rows = []
    for m in summary["machines"]:
        t = m["timeline"]
        ph = [None if p is None else p / 1000 for p in m["phases_ms"]]

        def span(a, b):
            return (t[b] - t[a]) / 1000 if t.get(a) is not None and t.get(b) is not None else None

        rows.append({
            "host": m["hostname"], "role": m["role"], "bmc": m["bmc"], "result": m["result"],
            "phases": ph, "total": None if m["total_ms"] is None else m["total_ms"] / 1000,
            "seed_reboot": span("image_written_ms", "rebooted_ms"),
            "to_kernel": span("rebooted_ms", "kernel_ms"),
            "kernel_to_ci": span("kernel_ms", "os_up_ms"),
            "image": m.get("image"),
        })
    return rows


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def least(xs):
    xs = [x for x in xs if x is not None]
    return min(xs) if xs else None


def cmd_render(a):
    meta = json.load(open(a.meta))
    floors = json.load(open(a.floors))["runs"]
    demos = {}
    for n, path in (("1", a.demo1), ("3", a.demo3)):
        demos[n] = json.load(open(path)) if path and os.path.exists(path) else None

    # A floor is the fastest run: other work on the machine only ever slows a run down.
    def fl(name, key):
        return least([r[key] for r in floors.get(name, [])])

    def fl_all(name, key):
        return ", ".join(f"{r[key]:.1f}" for r in floors.get(name, []))

    f_dhcp, f_agent = fl("dhcp", "ack"), fl("agent", "kernel_to_agent")
    f_agent_qemu, f_agent_kernel = fl("agent", "agent"), fl("agent", "kernel")
    f_img, f_img_host = fl("image-tcg", "write"), fl("image-host", "write")
    disk_runs = floors.get("disk", [])
    f_kernel = least([r["kernel"] for r in disk_runs])
    f_ci = least([r["init_local"] for r in disk_runs])
    f_k2ci = least([r["init_local"] - r["kernel"] for r in disk_runs])
    f_ph = least([r["phone_home"] - r["init_local"] for r in disk_runs])
    f_fin = least([r["finished"] - r["init_local"] for r in disk_runs if "finished" in r])
    floor_of = [None, None, f_agent, f_img, f_ci, f_ph]
    r1 = machine_rows(demos["1"]) if demos["1"] else []
    r3 = machine_rows(demos["3"]) if demos["3"] else []

    def one(rows, i):
        return rows[0]["phases"][i] if rows else None

    lines = []

    def row(label, v1, vals, floor):
        known = [v for v in vals if v is not None]
        m3 = med(known)
        s3 = f"{fmt(m3)} ({fmt(max(known))})" if known else "–"
        lines.append([label, fmt(v1), s3, fmt(floor), ratio(v1, floor), ratio(m3, floor)])

    def both(r):
        p = r["phases"]
        return None if p[0] is None or p[1] is None else p[0] + p[1]

    for i, name in enumerate(PHASES):
        row(name, one(r1, i), [r["phases"][i] for r in r3], floor_of[i])
        if i == 1:
            # The BMC confirms power on while the firmware already runs: the two phases share
            # the floor QEMU start -> DHCPACK.
            row("POWER-ON + DHCP", both(r1[0]) if r1 else None, [both(r) for r in r3], f_dhcp)
    # Disk boot, in parts: the agent's last actions and reboot, firmware to kernel, kernel to cloud-init.
    parts = [("↳ image written → agent reboots (seed, reboot action)", "seed_reboot", None),
             ("↳ reboot → installed kernel's banner (firmware, netboot → disk, GRUB)", "to_kernel", f_kernel),
             ("↳ kernel banner → cloud-init init-local", "kernel_to_ci", f_k2ci)]
    for label, key, floor in parts:
        row(label, r1[0][key] if r1 else None, [r[key] for r in r3], floor)
    total_floor = sum(x for x in [f_dhcp] + floor_of if x is not None)
    t1 = r1[0]["total"] if r1 else None
    t3 = [r["total"] for r in r3 if r["total"] is not None]
    s3 = f"{fmt(med(t3))} ({fmt(max(t3))})" if t3 else "–"
    lines.append(["**TOTAL** (workflow created → phoned home)", f"**{fmt(t1)}**", f"**{s3}**",
                  f"**{fmt(total_floor)}** (sum of the floors)", ratio(t1, total_floor),
                  ratio(med(t3), total_floor)])
    table = md_table(["phase", "1 machine", "3 machines: median (max)", "floor", "1 machine ÷ floor",
                      "3 machines (median) ÷ floor"], lines)

    per = []
    for label, rows in (("1", r1), ("3", r3)):
        for r in rows:
            per.append([f"{r['host']} ({label}-machine run)", r["role"], r["bmc"]]
                       + [fmt(p) for p in r["phases"]] + [fmt(r["total"]), r["result"]])
    per_table = md_table(["machine", "role", "BMC"] + PHASES + ["total", "result"], per)

    def demo_line(n):
        d = demos[n]
        what = "1 machine" if n == "1" else f"{n} machines"
        if not d:
            return f"- **Demo, {what}**: no summary (the demo failed; see the run's output)"
        imgs = [r["image"] for r in machine_rows(d) if r["image"]]
        rate = ""
        if imgs:
            secs = sorted(i["ms"] / 1000 for i in imgs)
            span = f"{secs[0]:.1f} s" if len(secs) == 1 else f"{secs[0]:.1f}–{secs[-1]:.1f} s"
            rate = (f"; image: {imgs[0]['streamed_bytes'] / 1e6:.0f} MB streamed, "
                    f"{(imgs[0]['written_bytes'] or 0) / 2**30:.1f} GiB written, in {span}")
        return (f"- **Demo, {what}**: {d['outcome'].lower()}, cluster {d.get('cluster_state') or '–'}; "
                f"workflows created → last phone home {fmt(d['install_ms'] / 1000)}, whole command "
                f"{fmt(d['wall_ms'] / 1000)} (lab set-up and clean-up included){rate}; load average "
                f"before/after: {meta['load'][f'demo{n}']}")

    runs = lambda name, key: fl_all(name, key) + " s"  # noqa: E731
    disk_ci = ", ".join(f"{r['init_local']:.1f}" for r in disk_runs) + " s"
    disk_ph = ", ".join(f"{r['phone_home'] - r['init_local']:.1f}" for r in disk_runs) + " s"
    body = f"""## Demo phases (issue 5, point 7)

`sudo bash bench/demo-phases.sh` runs `kiln demo --nodes 1` and `kiln demo --nodes 3` (QEMU TCG machines behind virtual BMCs in a private namespace, kubeadm stand-in, see README) with `--summary-json`, and in the same run, between the two, measures each phase's floor: one QEMU TCG machine at a time, set up like the demo's (q35, SeaBIOS, 1 GiB, one vCPU, virtio NIC on a bridge in a private namespace, 3 GiB sparse virtio disk), doing only that step. Raw figures: `bench/results/demo-phases.json`.

- **Date**: {meta['date']}; **command**: `{meta['command']}` (took {meta['took_s']} s)
- **Machine**: {meta['machine']}; load average at the start/end: {meta['load']['start']} / {meta['load']['end']}. The machine is shared with other engineers' builds and QEMU tests, and under TCG every phase stretches with the load: compare a demo figure with its floor through the loads given for each part.
- **Kiln**: {meta['kiln']}; agent OS initrd {meta['agent_os']}; test OS {meta['test_os']}
{demo_line('1')}
{demo_line('3')}
- **Floors**: the fastest of the runs, all listed (other work on the machine only ever slows a run down); each run starts after a `sync`. Load average before/after: {meta['load']['floors']}.
  - POWER-ON + DHCP: QEMU start → dnsmasq's DHCPACK to the NIC's iPXE ROM: SeaBIOS and one DHCP exchange, dnsmasq sending iPXE's no-pxedhcp option as Kiln does (runs: {runs('dhcp', 'ack')}). The demo's BMC confirms power on while the firmware already runs (the chassis program starts QEMU, Kiln polls the power state), so only the sum of the two phases has a floor; power control itself is measured in the BMC section.
  - AGENT UP: the agent OS kernel and initrd given to QEMU directly (`-kernel/-initrd`, the demo's kernel arguments): kernel start (from the `/proc/uptime` /init prints) → the agent's first console line (runs: {runs('agent', 'kernel_to_agent')}). From QEMU start the agent's line came at {fmt(f_agent_qemu)}, {fmt(f_agent_kernel)} of it before the kernel ran (SeaBIOS, kernel and initrd through fw_cfg). The demo's phase starts at the firmware's DHCP ack and also holds iPXE's own DHCP, the HTTP download of kernel and initrd under TCG, and the agent fetching its workflow.
  - IMAGE WRITTEN: the same agent OS booted with a `/bench-init` (rdinit) that runs only `kiln-agent image2disk` of the test OS ({meta['image']}) from nginx in the namespace onto /dev/vda, console marker to marker (runs: {runs('image-tcg', 'write')}). Without emulation, `kiln-agent image2disk` over loopback on this machine into a 3 GiB sparse file takes {fmt(f_img_host)} (runs: {runs('image-host', 'write')}): the TCG guest, not the stream, sets the pace.
  - DISK BOOT: the test OS decompressed onto a 3 GiB disk with a NoCloud seed written into it (debugfs, where the agent mounts the root file system), booted from that disk: QEMU start → cloud-init's `init-local` line, the demo's end of disk boot (runs: {disk_ci}); QEMU start → the kernel's banner {fmt(f_kernel)}. The demo's phase also holds the agent's last actions (seed, reboot), the reboot itself, and a netboot (firmware, DHCP, iPXE) that hands over to the disk.
  - PHONE HOME: in that boot, `init-local` → cloud-init's `phone_home` POST, with a seed holding only the hostname, the static network and `phone_home` (runs: {disk_ph}; cloud-init finished {fmt(f_fin)} after `init-local`). The demo's user-data also writes the containerd and kubeadm files and runs the bootstrap script (kubeadm stand-in). The floors' namespace sends the IPv6 router advertisement `kiln serve` sends (no router, no prefix): without one, systemd-networkd in the installed OS waits ~13 s longer for IPv6 autoconfiguration before cloud-init's network stage.
- Phase boundaries as `kiln demo` defines them (crates/kiln/src/demo/progress.rs): workflow created → BMC confirmed power on → netboot DHCP ack → agent asked for work → image2disk done → cloud-init started in the installed OS (serial console) → phoned home. The floors are one machine alone; the 3 machines of the second demo share this machine's 2 CPUs under TCG, which the 3-machine column shows. A ratio near or below 1 says the phase costs what its step alone costs, within the run-to-run spread under TCG (see the floors' runs) or the machine was busier while the floor ran.

{table}

Per machine:

{per_table}
"""
    section = f"{BEGIN}\n{body}{END}\n"
    print("\n" + table + "\n\n" + per_table)
    if a.md:
        with open(a.md, "w") as f:
            f.write(body)
    if a.benchmarks:
        update_section(a.benchmarks, BEGIN, END, section)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("floors")
    f.add_argument("--ns", required=True)
    f.add_argument("--work", required=True)
    f.add_argument("--agent-os", required=True)
    f.add_argument("--image", required=True)
    f.add_argument("--sha256", required=True)
    f.add_argument("--size", type=int, required=True)
    f.add_argument("--agent", required=True)
    f.add_argument("--kernel-args", default="console=ttyS0,115200 panic=-1 quiet")
    f.add_argument("--runs", type=int, default=3)
    f.add_argument("--disk-runs", type=int, default=2)
    f.add_argument("--deadline", type=float, default=time.time() + 900)
    f.add_argument("--out", required=True)
    r = sub.add_parser("render")
    r.add_argument("--meta", required=True)
    r.add_argument("--demo1")
    r.add_argument("--demo3")
    r.add_argument("--floors", required=True)
    r.add_argument("--md")
    r.add_argument("--benchmarks")
    ra = sub.add_parser("router-advert")
    ra.add_argument("interface")
    a = p.parse_args()
    {"floors": cmd_floors, "render": cmd_render, "router-advert": cmd_router_advert}[a.cmd](a)


if __name__ == "__main__":
    main()
