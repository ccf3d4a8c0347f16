#!/usr/bin/env python3
"""The hostile host of tests/e2e/attacker.sh: raw TCP, TFTP and HTTP moves that curl cannot
make. Runs inside the attacker's namespace. Every loop is bounded in count and time; results
are printed as one JSON object (the shell script asserts on them).

usage:
  attacker.py idle SERVER PORT COUNT STATUS_FILE STOP_FILE MAX_HOLD_S
      open COUNT TCP connections and send nothing; write {"opened", "failed"} to STATUS_FILE
      once the connects settled, hold them until STOP_FILE exists (or MAX_HOLD_S), then
      write {"opened", "failed", "closed_by_server", "still_open"} and close them all
  attacker.py tftp-get SERVER FILE OUT
      a plain RFC 1350 download (512-byte blocks); prints {"bytes", "error"}
  attacker.py tftp-flood SERVER FILE COUNT
      COUNT read requests at once, from COUNT ports, never acknowledged; prints how many got
      data ("served"), an ERROR ("refused", with the messages) or nothing ("silent")
  attacker.py tftp-rrq SERVER HEX_FILENAME
      one read request whose file name is the given bytes (escape sequences); prints the
      first answer's opcode and message
  attacker.py http-flood SERVER PORT COUNT PATH_TEMPLATE
      COUNT keep-alive GETs; "{mac}" in PATH_TEMPLATE becomes a random locally administered
      MAC; prints {"status": {code: n}, "errors"}
  attacker.py http-raw SERVER PORT HEX_REQUEST
      sends the bytes as they are (a request line with raw escape bytes) and prints the
      status line of the answer
"""
import http.client
import json
import os
import random
import resource
import selectors
import socket
import struct
import sys
import time

OP_RRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK = 1, 3, 4, 5, 6


def out(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def idle(server, port, count, status_file, stop_file, max_hold):
    raise_nofile(count + 256)
    sel = selectors.DefaultSelector()
    pending, opened, failed = {}, [], 0
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((server, port))
        if err not in (0, 115):  # 115: EINPROGRESS
            failed += 1
            s.close()
            continue
        pending[s.fileno()] = s
        sel.register(s, selectors.EVENT_WRITE)
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s = pending.pop(key.fd)
            sel.unregister(s)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                opened.append(s)
            else:
                failed += 1
                s.close()
    for s in pending.values():  # never completed (SYNs dropped): counted as failed
        sel.unregister(s)
        s.close()
        failed += 1
    write_json(status_file, {"opened": len(opened), "failed": failed})
    end = time.monotonic() + max_hold
    while not os.path.exists(stop_file) and time.monotonic() < end:
        time.sleep(0.2)
    closed = 0
    for s in opened:
        try:
            closed += s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    write_json(status_file, {"opened": len(opened), "failed": failed,
                             "closed_by_server": closed, "still_open": len(opened) - closed})


def rrq(name_bytes, options=()):
    pkt = struct.pack("!H", OP_RRQ) + name_bytes + b"\0octet\0"
    for k, v in options:
        pkt += k.encode() + b"\0" + v.encode() + b"\0"
    return pkt


def error_text(pkt):
    return pkt[4:].split(b"\0", 1)[0].decode("utf-8", "replace")


def tftp_get(server, name, path):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(rrq(name.encode()), (server, 69))
    data, expect, tid, tries = bytearray(), 1, None, 0
    while True:
        try:
            pkt, addr = s.recvfrom(65536)
        except socket.timeout:
            tries += 1
            if tries > 5:
                return out({"bytes": len(data), "error": "timeout"})
            continue
        if tid is None:
            tid = addr
        elif addr != tid:
            continue
        op = struct.unpack("!H", pkt[:2])[0]
        if op == OP_ERROR:
            return out({"bytes": len(data), "error": error_text(pkt)})
        if op != OP_DATA:
            return out({"bytes": len(data), "error": f"unexpected opcode {op}"})
        block = struct.unpack("!H", pkt[2:4])[0]
        if block == expect:
            data += pkt[4:]
            expect = (expect + 1) & 0xFFFF
        s.sendto(struct.pack("!HH", OP_ACK, block), tid)
        if block == (expect - 1) & 0xFFFF and len(pkt) - 4 < 512:
            with open(path, "wb") as f:
                f.write(data)
            return out({"bytes": len(data), "error": None})


def tftp_flood(server, name, count):
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        socks.append(s)
    for s in socks:
        s.sendto(rrq(name.encode()), (server, 69))
    first = {}
    deadline = time.monotonic() + 5
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    while len(first) < count and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                pkt = s.recv(65536)
            except BlockingIOError:
                continue
            if s.fileno() not in first:
                first[s.fileno()] = pkt
    served = sum(1 for p in first.values() if p[:2] in (b"\0\3", b"\0\6"))
    refused = [error_text(p) for p in first.values() if p[:2] == b"\0\5"]
    for s in socks:  # no ACK ever: the served transfers hold their slots until they time out
        s.close()
    out({"served": served, "refused": len(refused), "silent": count - len(first),
         "messages": sorted(set(refused))})


def tftp_rrq(server, hex_name):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(rrq(bytes.fromhex(hex_name)), (server, 69))
    try:
        pkt, _ = s.recvfrom(65536)
    except socket.timeout:
        return out({"opcode": None, "message": None})
    op = struct.unpack("!H", pkt[:2])[0]
    out({"opcode": op, "message": error_text(pkt) if op == OP_ERROR else None})


def random_mac(rng):
    return "02:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5))


def http_flood(server, port, count, template):
    rng = random.Random()
    status, errors, conn = {}, 0, None
    for _ in range(count):
        path = template.replace("{mac}", random_mac(rng))
        for _attempt in range(2):  # the server may close a kept-alive connection
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(server, port, timeout=10)
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                status[resp.status] = status.get(resp.status, 0) + 1
                break
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
        else:
            errors += 1
    if conn is not None:
        conn.close()
    out({"status": {str(k): v for k, v in sorted(status.items())}, "errors": errors})


def http_raw(server, port, hex_request):
    with socket.create_connection((server, port), timeout=10) as s:
        s.sendall(bytes.fromhex(hex_request))
        try:
            head = s.recv(4096)
        except socket.timeout:
            head = b""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    out({"status_line": line})


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "idle":
        idle(args[0], int(args[1]), int(args[2]), args[3], args[4], float(args[5]))
    elif cmd == "tftp-get":
        tftp_get(*args[:3])
    elif cmd == "tftp-flood":
        tftp_flood(args[0], args[1], int(args[2]))
    elif cmd == "tftp-rrq":
        tftp_rrq(args[0], args[1])
    elif cmd == "http-flood":
        http_flood(args[0], int(args[1]), int(args[2]), args[3])
    elif cmd == "http-raw":
        http_raw(args[0], int(args[1]), args[2])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
