#!/usr/bin/env python3
"""Helpers of bench/bmc.sh: wait for emulators, check results, take statistics, render the
ratio table and the BMC section of BENCHMARKS.md (with bench/benchlib.py).

  bmc-report.py wait-ipmi --timeout S PORT...      until every ipmi_sim on 127.0.0.1:PORT answers
  bmc-report.py wait-http --timeout S URL...       until every URL answers (any HTTP status)
  bmc-report.py stats FILE                         -> "median p90 mean n" of the numbers in FILE
  bmc-report.py kiln-rows FILE WANT                -> "ok total": rows of `kiln bmc -o json` with
                                                      ok=true and result starting with WANT
  bmc-report.py pss PID...                         -> total proportional set size of PIDs, MiB
  bmc-report.py timed OUT ERR CMD...               run CMD (stdout to OUT, stderr to ERR); print
                                                      "wall_µs user_s sys_s peak_rss_KiB": CPU of it
                                                      and every child it waited for (wait4 rusage)
  bmc-report.py render RESULTS.tsv META.tsv [--md FILE] [--benchmarks FILE]

RESULTS.tsv rows: group, id, label, tool, value, unit, note (all times lower-is-better).
META.tsv rows: key, value.
"""

import argparse
import json
import os
import socket
import statistics
import sys
import time
import urllib.error
import urllib.request

from benchlib import fmt, fmt_ratio, md_table, percentile, text_table, update_section

BEGIN = "<!-- bmc:begin -->"
END = "<!-- bmc:end -->"
GROUPS = {
    "single-ipmi": ("One IPMI BMC, `power status`, one process per call", "ipmitool"),
    "single-redfish": ("One Redfish BMC, power state, one process per call", "curl"),
    "many-ipmi": ("100 IPMI BMCs (100 ipmi_sim) at once", "ipmitool"),
    "many-redfish": ("Redfish BMCs (one sushy-emulator each) at once", "curl"),
}


# ---------------------------------------------------------------------------- waiting

def ipmi_probe_packet():
    """RMCP + IPMI 1.5 session (no auth) + Get Channel Authentication Capabilities (admin)."""

    def checksum(data):
        return (-sum(data)) & 0xFF

    header = bytes([0x20, 0x06 << 2])  # rsAddr BMC, netFn App
    body = bytes([0x81, 0x00, 0x38, 0x0E, 0x04])  # rqAddr, seq, cmd, this channel, admin
    msg = header + bytes([checksum(header)]) + body + bytes([checksum(body)])
    session = bytes([0x00]) + bytes(4) + bytes(4) + bytes([len(msg)])
    return bytes([0x06, 0x00, 0xFF, 0x07]) + session + msg


def cmd_wait_ipmi(a):
    pending = set(int(p) for p in a.ports)
    packet = ipmi_probe_packet()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.05)
    deadline = time.monotonic() + a.timeout
    while pending and time.monotonic() < deadline:
        for port in sorted(pending):
            sock.sendto(packet, ("127.0.0.1", port))
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            try:
                _, (_, port) = sock.recvfrom(512)
                pending.discard(port)
                if not pending:
                    break
            except (socket.timeout, ConnectionRefusedError):
                # ICMP port unreachable from a sim still starting shows up as ECONNREFUSED.
                if not pending:
                    break
    if pending:
        sys.exit(f"ipmi_sim did not answer on 127.0.0.1 port(s) {sorted(pending)} within {a.timeout} s")


def cmd_wait_http(a):
    pending = list(a.urls)
    deadline = time.monotonic() + a.timeout
    while pending and time.monotonic() < deadline:
        still = []
        for url in pending:
            try:
                urllib.request.urlopen(url, timeout=1).read()
            except urllib.error.HTTPError:
                pass  # it answered
            except OSError:
                still.append(url)
        pending = still
        if pending:
            time.sleep(0.1)
    if pending:
        sys.exit(f"no answer from {len(pending)} URL(s) within {a.timeout} s, e.g. {pending[0]}")


# ---------------------------------------------------------------------------- figures

def cmd_stats(a):
    with open(a.file) as f:
        vals = [float(x) for x in f.read().split()]
    if not vals:
        sys.exit(f"{a.file}: no values")
    print(f"{statistics.median(vals):.3f} {percentile(vals, 90):.3f} {statistics.mean(vals):.3f} {len(vals)}")


def cmd_kiln_rows(a):
    with open(a.file) as f:
        try:
            rows = json.load(f)
        except json.JSONDecodeError as e:
            sys.exit(f"{a.file}: not kiln's JSON output: {e}")
    ok = sum(1 for r in rows if r.get("ok") and str(r.get("result", "")).startswith(a.want))
    print(ok, len(rows))
    for r in rows:
        if not (r.get("ok") and str(r.get("result", "")).startswith(a.want)):
            print(f"{r.get('machine')}: {r.get('result')} {r.get('error', '')} {r.get('detail', '')}",
                  file=sys.stderr)


def cmd_pss(a):
    total = 0
    for pid in a.pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    print(f"{total / 1024:.1f}")


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmd_timed(a):
    """Wall time, and CPU from wait4 (the child and every descendant it waited for). Peak RSS is
    the child's VmHWM polled every 5 ms: wait4's ru_maxrss would count this Python's image,
    which the forked child carries until its exec."""
    with open(a.out, "wb") as out, open(a.err, "wb") as err:
        t0 = time.monotonic_ns()
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            try:
                os.execvp(a.cmd[0], a.cmd)
            except OSError as e:
                os.write(2, f"{a.cmd[0]}: {e}\n".encode())
            os._exit(127)
        hwm = 0
        while True:
            done, status, ru = os.wait4(pid, os.WNOHANG)
            if done == pid:
                break
            hwm = max(hwm, vm_hwm_kib(pid))
            time.sleep(0.005)
        wall_us = (time.monotonic_ns() - t0) // 1000
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"exit status {code}")
    print(f"{wall_us} {ru.ru_utime:.6f} {ru.ru_stime:.6f} {hwm}")


# ---------------------------------------------------------------------------- rendering

def load_rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 6:
                continue
            group, id_, label, tool, value, unit = parts[:6]
            note = parts[6] if len(parts) > 6 else ""
            rows.append(dict(group=group, id=id_, label=label, tool=tool, value=float(value),
                             unit=unit, note=note))
    return rows


def load_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            if k:
                meta[k] = v
    return meta


def tables(rows):
    """Per group: (title, header, lines); one line per id: kiln, each peer, ratio(s)."""
    out = []
    for group, (title, _) in GROUPS.items():
        grows = [r for r in rows if r["group"] == group]
        if not grows:
            continue
        peers = []
        for r in grows:
            if r["tool"] != "kiln" and r["tool"] not in peers:
                peers.append(r["tool"])
        header = ["test", "unit", "kiln"] + peers + [f"kiln vs {p}" for p in peers]
        ids = []
        for r in grows:
            if r["id"] not in ids:
                ids.append(r["id"])
        lines = []
        for i in ids:
            cells = {r["tool"]: r for r in grows if r["id"] == i}
            any_row = next(iter(cells.values()))
            line = [any_row["label"], any_row["unit"]]
            kiln = cells.get("kiln")
            for tool in ["kiln"] + peers:
                c = cells.get(tool)
                line.append("–" if c is None else fmt(c["value"]) + (f" ({c['note']})" if c["note"] else ""))
            for p in peers:
                c = cells.get(p)
                r = None
                if kiln and c and kiln["value"] > 0:
                    r = c["value"] / kiln["value"]
                line.append(fmt_ratio(r))
            lines.append(line)
        out.append((title, header, lines))
    return out


def md_section(tabs, meta):
    notes = [meta[k] for k in sorted(meta) if k.startswith("note.")]
    parts = [
        BEGIN,
        "## BMC (issue 4, point 9)",
        "",
        "Power control through kiln's BMC drivers (IPMI lanplus, Redfish) against the tools an operator "
        "would use otherwise, side by side in one run, all on loopback in a private network namespace: "
        "`bash bench/bmc.sh` (as root; about 3 minutes). Raw figures: `bench/results/bmc.tsv`. "
        "Emulators: OpenIPMI's `ipmi_sim` and sushy-tools (`tests/e2e/sushy_qemu.py`), each with a "
        "chassis program that keeps power and boot device in files (`bench/bmc-chassis.sh`).",
        "",
        f"- **Date**: {meta.get('date', '?')}; **command**: `{meta.get('command', '?')}` (took {meta.get('seconds', '?')} s)",
        f"- **Machine**: {meta.get('nproc', '?')} CPUs ({meta.get('cpu', '?')}), kernel {meta.get('kernel', '?')}, "
        f"{meta.get('mem', '?')}; load average before/after: {meta.get('load.start', '?')} / {meta.get('load.end', '?')}",
        f"- **Kiln**: {meta.get('kiln.rev', '?')}; **peers**: {meta.get('versions', '?')}",
        f"- **Setup**: {meta.get('setup', '?')}",
    ]
    parts += [f"- {n}" for n in notes]
    parts += [
        "",
        "Ratio columns: the peer's time ÷ kiln's time, so > 1 means kiln is faster (or uses less CPU). "
        "The load average counts runnable processes: the emulators and the 64 parallel peer processes "
        "raise it themselves.",
        "",
    ]
    for title, header, lines in tabs:
        parts += [f"### {title}", "", md_table(header, lines), ""]
    parts.append(END)
    return "\n".join(parts) + "\n"


def cmd_render(a):
    rows = load_rows(a.results)
    meta = load_meta(a.meta)
    tabs = tables(rows)
    for title, header, lines in tabs:
        print(f"\n== {title} ==")
        print(text_table(header, lines))
    for k in sorted(meta):
        if k.startswith("note."):
            print(f"  note: {meta[k]}")
    body = md_section(tabs, meta)
    if a.md:
        with open(a.md, "w") as f:
            f.write(body)
    if a.benchmarks:
        update_section(a.benchmarks, BEGIN, END, body)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("wait-ipmi")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("ports", nargs="+")
    p.set_defaults(f=cmd_wait_ipmi)
    p = sub.add_parser("wait-http")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("urls", nargs="+")
    p.set_defaults(f=cmd_wait_http)
    p = sub.add_parser("stats")
    p.add_argument("file")
    p.set_defaults(f=cmd_stats)
    p = sub.add_parser("kiln-rows")
    p.add_argument("file")
    p.add_argument("want")
    p.set_defaults(f=cmd_kiln_rows)
    p = sub.add_parser("pss")
    p.add_argument("pids", nargs="*")
    p.set_defaults(f=cmd_pss)
    p = sub.add_parser("timed")
    p.add_argument("out")
    p.add_argument("err")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(f=cmd_timed)
    p = sub.add_parser("render")
    p.add_argument("results")
    p.add_argument("meta")
    p.add_argument("--md")
    p.add_argument("--benchmarks")
    p.set_defaults(f=cmd_render)
    a = ap.parse_args()
    a.f(a)


if __name__ == "__main__":
    main()
