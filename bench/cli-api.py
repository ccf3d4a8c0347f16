#!/usr/bin/env python3
"""The CLI over the admin API beside the direct-store CLI it replaced (issue 12, point 6).

Run by bench/cli-api.sh inside a network namespace of its own (loopback only). Both binaries get
the same 1,000-machine hardware.csv; the old one opens the SQLite file itself, the new one talks
to a `kiln serve` (DHCP off) over TLS. Prints a Markdown table and writes a TSV.

usage: cli-api.py OLD_KILN NEW_KILN WORKDIR OUT_TSV [RUNS]
"""
import json
import os
import statistics
import subprocess
import sys
import time

OLD, NEW, WORK, OUT = sys.argv[1:5]
RUNS = int(sys.argv[5]) if len(sys.argv) > 5 else 7
MACHINES = 1000
SELECTED = 100

TEMPLATE = """name: bench
timeout: 1h
actions:
  - name: boot
    kind: reboot
"""


def csv_text():
    rows = ["hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk"]
    for i in range(MACHINES):
        rack = "rack=r1" if i < SELECTED else f"rack=r{2 + i // 100}"
        rows.append(
            f"m{i:04d},,,,52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x},"
            f"10.{20 + i // 60000}.{i // 250 % 240}.{i % 250 + 2},255.0.0.0,10.20.0.1,10.20.0.1,{rack}|idx={i},/dev/vda"
        )
    return "\n".join(rows) + "\n"


def run(binary, data, args, check=True):
    t0 = time.perf_counter()
    p = subprocess.run([binary, "--data-dir", data, *args], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if check and p.returncode != 0:
        sys.exit(f"{os.path.basename(binary)} {' '.join(args)}: rc={p.returncode}\n{p.stderr}")
    return dt, p


def timed(binary, data, args, runs=RUNS, between=None):
    times = []
    for _ in range(runs):
        dt, _ = run(binary, data, args)
        times.append(dt)
        if between:
            between()
    return times


def cancel_all(binary, data):
    _, p = run(binary, data, ["workflow", "list", "-o", "json"])
    ids = [w["id"] for w in json.loads(p.stdout)]
    if ids:
        run(binary, data, ["workflow", "cancel", *ids])


def main():
    os.makedirs(WORK, exist_ok=True)
    csv = os.path.join(WORK, "hardware.csv")
    with open(csv, "w") as f:
        f.write(csv_text())
    tpl = os.path.join(WORK, "bench.yaml")
    with open(tpl, "w") as f:
        f.write(TEMPLATE)
    old_data, new_data = os.path.join(WORK, "old"), os.path.join(WORK, "new")
    for d in (old_data, new_data):
        os.makedirs(d, mode=0o700, exist_ok=True)

    server = subprocess.Popen(
        [NEW, "--data-dir", new_data, "serve", "--dhcp-mode", "off", "--address", "127.0.0.1",
         "--http-port", "0", "--agent-tls-port", "0", "--tftp-port", "0", "--api-listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, "serve.log"), "w"))
    try:
        for _ in range(300):
            if os.path.exists(os.path.join(new_data, "api.json")):
                break
            time.sleep(0.1)
        else:
            sys.exit("kiln serve did not write api.json")
        rows = []
        # Enrolment of 1,000 machines into an empty store: once each.
        t_old, _ = run(OLD, old_data, ["enroll", csv])
        t_new, _ = run(NEW, new_data, ["enroll", csv])
        rows.append(("enroll (1,000 rows, empty store)", [t_old], [t_new]))
        for label, args in [
            ("hardware list (1,000)", ["hardware", "list"]),
            ("hardware list -o json (1,000)", ["hardware", "list", "-o", "json"]),
            ("hardware show m0500", ["hardware", "show", "m0500"]),
            ("enroll (1,000 rows, unchanged)", ["enroll", csv]),
        ]:
            rows.append((label, timed(OLD, old_data, args), timed(NEW, new_data, args)))
        create = ["workflow", "create", "--template", tpl, "--selector", "rack=r1",
                  "--no-power", "--server-url", "http://127.0.0.1:8080"]
        rows.append((
            f"workflow create ({SELECTED} machines)",
            timed(OLD, old_data, create, between=lambda: cancel_all(OLD, old_data)),
            timed(NEW, new_data, create, between=lambda: cancel_all(NEW, new_data)),
        ))
        run(OLD, old_data, create)
        run(NEW, new_data, create)
        rows.append(("workflow list (100 unfinished)", timed(OLD, old_data, ["workflow", "list"]),
                     timed(NEW, new_data, ["workflow", "list"])))
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(f"| command | direct store: median (max) | over the API: median (max) | ratio |")
    print("| --- | --- | --- | --- |")
    worst = 0.0
    slowest = 0.0
    with open(OUT, "w") as out:
        out.write("command\told_median_s\told_max_s\tnew_median_s\tnew_max_s\tratio\n")
        for label, old, new in rows:
            mo, mn = statistics.median(old), statistics.median(new)
            ratio = mn / mo if mo > 0 else float("inf")
            worst, slowest = max(worst, ratio), max(slowest, max(new))
            print(f"| `{label}` | {mo*1000:.0f} ms ({max(old)*1000:.0f}) | {mn*1000:.0f} ms ({max(new)*1000:.0f}) | {ratio:.2f}× |")
            out.write(f"{label}\t{mo:.4f}\t{max(old):.4f}\t{mn:.4f}\t{max(new):.4f}\t{ratio:.3f}\n")
    print(f"\nworst ratio {worst:.2f}× (goal ≤ 2×); slowest command over the API {slowest*1000:.0f} ms (goal < 1 s)")
    ok = worst <= 2.0 and slowest < 1.0
    print("goals met" if ok else "GOALS NOT MET")
    return 0 if ok else 1


sys.exit(main())
