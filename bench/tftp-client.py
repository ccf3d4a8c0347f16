#!/usr/bin/env python3
"""Minimal TFTP read client for the boot-services benchmark.

  tftp-client.py SERVER FILE [options]                       one transfer, one JSON object
  tftp-client.py FILE --target NAME=IP:PORT ... [--rounds-min N --rounds-max M --budget S] [options]
                                                             interleaved: one JSON object per transfer

Supports blksize (RFC 2348), tsize (RFC 2349) and windowsize (RFC 7440), and
can wait a fixed time before sending each ACK (--ack-delay-ms): a stand-in for
a network round trip when the kernel has no sch_netem. With windowsize W the
client ACKs once per W blocks, so the delay is paid once per window, exactly
as a real round trip would be.

With --target (repeated), the client fetches FILE from every target once per
round, the order rotated each round (ABC, BCA, CAB, ...) so that every target
takes every position equally often, and load changes on the machine hit all
targets alike. It runs at least --rounds-min rounds, then more while less than
--budget seconds have passed, at most --rounds-max; past --deadline (epoch
seconds) it starts no round beyond the second. It stops at the first failed
transfer.

Each JSON object: ok, error, bytes, seconds (RRQ sent -> last DATA received),
turnaround_us (p50/p90/p99/mean of ACK sent -> next packet received: the
server's share of each round trip, with the client's own delay left out),
negotiated blksize/windowsize, tsize, ack count, timeouts, mean ACK delay
actually slept, sha256 of the data (plus round and target when interleaved).
Exit code 0 when every transfer completed and (if --sha256 was given) the
digest matched.
"""

import argparse
import hashlib
import json
import socket
import struct
import sys
import time

RRQ, DATA, ACK, ERROR, OACK = 1, 3, 4, 5, 6


def fetch(server, port, file, blksize=0, windowsize=0, tsize=True, ack_delay_ms=0.0,
          timeout=1.0, retries=5, sha256=""):
    """One read transfer; returns the result dictionary."""
    delay = ack_delay_ms / 1000.0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("0.0.0.0", 0))
        sock.settimeout(timeout)
        return _transfer(sock, server, port, file, blksize, windowsize, tsize, delay, retries, sha256)
    finally:
        sock.close()


def _transfer(sock, server, port, file, want_blksize, want_windowsize, want_tsize, delay, retries, sha256):
    opts = []
    if want_blksize:
        opts += [b"blksize", str(want_blksize).encode()]
    if want_windowsize:
        opts += [b"windowsize", str(want_windowsize).encode()]
    if want_tsize:
        opts += [b"tsize", b"0"]
    rrq = struct.pack("!H", RRQ) + b"\0".join([file.encode(), b"octet"] + opts) + b"\0"

    blksize, windowsize, tsize = 512, 1, None
    digest = hashlib.sha256()
    received = 0
    expected = 1          # next block number wanted (unwrapped)
    in_window = 0         # blocks received since the last ACK
    acks = timeouts = 0
    slept = 0.0
    peer = None
    last_sent = rrq
    gap_acked = False     # one ACK per gap, not one per out-of-order packet
    done = False
    error = None
    acked_at = None       # when the last ACK left, until the next packet arrives
    turnarounds = []      # ACK sent -> next packet received: the server's share of a round trip

    def send_ack(block):
        nonlocal acks, slept, last_sent, acked_at
        if delay > 0:
            t = time.perf_counter()
            time.sleep(delay)
            slept += time.perf_counter() - t
        last_sent = struct.pack("!HH", ACK, block & 0xFFFF)
        sock.sendto(last_sent, peer)
        acked_at = time.perf_counter()
        acks += 1

    start = time.perf_counter()
    end = start
    sock.sendto(rrq, (server, port))
    tries = 0
    while not done:
        try:
            pkt, src = sock.recvfrom(65536)
            if acked_at is not None:
                turnarounds.append(time.perf_counter() - acked_at)
                acked_at = None
        except socket.timeout:
            acked_at = None
            timeouts += 1
            tries += 1
            if tries > retries:
                error = "timed out"
                break
            sock.sendto(last_sent, peer or (server, port))
            continue
        if peer is None:
            if src[0] != server:
                continue
            peer = src
        elif src != peer:
            continue  # another TID: not ours
        tries = 0
        if len(pkt) < 4:
            continue
        op = struct.unpack("!H", pkt[:2])[0]
        if op == ERROR:
            code = struct.unpack("!H", pkt[2:4])[0]
            error = "server error %d: %s" % (code, pkt[4:].split(b"\0")[0].decode(errors="replace"))
            break
        if op == OACK and expected == 1 and received == 0:
            fields = pkt[2:].split(b"\0")
            for k, v in zip(fields[0::2], fields[1::2]):
                k = k.lower()
                if k == b"blksize":
                    blksize = int(v)
                elif k == b"windowsize":
                    windowsize = int(v)
                elif k == b"tsize":
                    tsize = int(v)
            send_ack(0)
            continue
        if op != DATA:
            continue
        block = struct.unpack("!H", pkt[2:4])[0]
        payload = pkt[4:]
        if block == expected & 0xFFFF:
            digest.update(payload)
            received += len(payload)
            expected += 1
            in_window += 1
            gap_acked = False
            if len(payload) < blksize:
                end = time.perf_counter()
                send_ack(expected - 1)
                done = True
            elif in_window >= windowsize:
                in_window = 0
                send_ack(expected - 1)
        elif ((block - expected) & 0xFFFF) < 0x8000 and not gap_acked:
            # a block from the future: one was lost; ACK the last in-order one (RFC 7440)
            gap_acked = True
            in_window = 0
            send_ack(expected - 1)
        # else: a duplicate of something already received; ignore

    hexdigest = digest.hexdigest()
    ok = done and (not sha256 or hexdigest == sha256) and (tsize is None or tsize == received)
    if done and not ok and error is None:
        error = "content mismatch (sha256 or tsize)"
    return {
        "ok": ok,
        "error": error,
        "bytes": received,
        "seconds": round(end - start, 6) if done else None,
        "blksize": blksize,
        "windowsize": windowsize,
        "tsize": tsize,
        "acks": acks,
        "timeouts": timeouts,
        "ack_delay_mean_ms": round(slept / acks * 1000, 4) if acks else 0,
        "turnaround_us": percentiles_us(turnarounds),
        "sha256": hexdigest,
    }


def percentiles_us(samples):
    """p50/p90/p99 and mean of `samples` (seconds) in µs, or None when there are none."""
    if not samples:
        return None
    s = sorted(samples)
    pick = lambda q: round(s[min(len(s) - 1, int(q * len(s)))] * 1e6, 1)
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99),
            "mean": round(sum(s) / len(s) * 1e6, 1), "n": len(s)}


def parse_target(text):
    """NAME=IP:PORT (or NAME=IP, port 69) -> (name, ip, port)."""
    name, sep, addr = text.partition("=")
    if not sep or not name or not addr:
        raise argparse.ArgumentTypeError(f"--target {text!r}: expected NAME=IP:PORT")
    ip, _, port = addr.partition(":")
    try:
        return name, ip, int(port or 69)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--target {text!r}: port {port!r} is not a number") from None


def rotated(items, r):
    """The round-r order: items rotated left by r, so each takes each position equally often."""
    k = r % len(items)
    return items[k:] + items[:k]


def want_round(r, rounds_min, rounds_max, elapsed, budget, past_deadline):
    """Whether round r (0-based) should run."""
    if r >= rounds_max:
        return False
    if r < min(rounds_min, 2):
        return True
    return not past_deadline and (r < rounds_min or elapsed < budget)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("args", nargs="+", metavar="ARG", help="SERVER FILE, or FILE with --target")
    ap.add_argument("--port", type=int, default=69)
    ap.add_argument("--target", type=parse_target, action="append", default=[],
                    help="NAME=IP:PORT; repeat to interleave transfers from several servers")
    ap.add_argument("--rounds-min", type=int, default=1)
    ap.add_argument("--rounds-max", type=int, default=1)
    ap.add_argument("--budget", type=float, default=0.0,
                    help="seconds: start another round (up to --rounds-max) while less has passed")
    ap.add_argument("--deadline", type=float, default=0.0,
                    help="epoch seconds: past it, no round beyond the second starts (0: none)")
    ap.add_argument("--blksize", type=int, default=0, help="ask for this block size (0: do not ask)")
    ap.add_argument("--windowsize", type=int, default=0, help="ask for this window (0: do not ask)")
    ap.add_argument("--no-tsize", action="store_true", help="do not ask for tsize")
    ap.add_argument("--ack-delay-ms", type=float, default=0.0, help="sleep this long before each ACK")
    ap.add_argument("--timeout", type=float, default=1.0, help="seconds before re-sending the last ACK")
    ap.add_argument("--retries", type=int, default=5)
    ap.add_argument("--sha256", default="", help="expected digest of the file")
    a = ap.parse_args()

    if a.target:
        if len(a.args) != 1:
            ap.error("with --target, give only FILE")
        targets, file = a.target, a.args[0]
    else:
        if len(a.args) != 2:
            ap.error("give SERVER FILE (or FILE with --target)")
        targets, file = [("-", a.args[0], a.port)], a.args[1]
        a.rounds_min = a.rounds_max = 1

    def one(ip, port):
        return fetch(ip, port, file, blksize=a.blksize, windowsize=a.windowsize, tsize=not a.no_tsize,
                     ack_delay_ms=a.ack_delay_ms, timeout=a.timeout, retries=a.retries, sha256=a.sha256)

    if not a.target:
        res = one(targets[0][1], targets[0][2])
        print(json.dumps(res))
        return 0 if res["ok"] else 1

    start = time.monotonic()
    r = 0
    while want_round(r, a.rounds_min, a.rounds_max, time.monotonic() - start, a.budget,
                     a.deadline and time.time() >= a.deadline):
        for name, ip, port in rotated(targets, r):
            res = one(ip, port)
            print(json.dumps({"round": r, "target": name, **res}), flush=True)
            if not res["ok"]:
                return 1
        r += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
