#!/usr/bin/env python3
"""Minimal TFTP read client for the boot-services benchmark.

Supports blksize (RFC 2348), tsize (RFC 2349) and windowsize (RFC 7440), and
can wait a fixed time before sending each ACK (--ack-delay-ms): a stand-in for
a network round trip when the kernel has no sch_netem. With windowsize W the
client ACKs once per W blocks, so the delay is paid once per window, exactly
as a real round trip would be.

Prints one JSON object: ok, bytes, seconds (RRQ sent -> last DATA received),
negotiated blksize/windowsize, tsize, ack count, timeouts, mean ACK delay
actually slept, sha256 of the data. Exit code 0 when the transfer completed
and (if --sha256 was given) the digest matches.
"""

import argparse
import hashlib
import json
import socket
import struct
import sys
import time

RRQ, DATA, ACK, ERROR, OACK = 1, 3, 4, 5, 6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("server")
    ap.add_argument("file")
    ap.add_argument("--port", type=int, default=69)
    ap.add_argument("--blksize", type=int, default=0, help="ask for this block size (0: do not ask)")
    ap.add_argument("--windowsize", type=int, default=0, help="ask for this window (0: do not ask)")
    ap.add_argument("--no-tsize", action="store_true", help="do not ask for tsize")
    ap.add_argument("--ack-delay-ms", type=float, default=0.0, help="sleep this long before each ACK")
    ap.add_argument("--timeout", type=float, default=1.0, help="seconds before re-sending the last ACK")
    ap.add_argument("--retries", type=int, default=5)
    ap.add_argument("--sha256", default="", help="expected digest of the file")
    a = ap.parse_args()

    delay = a.ack_delay_ms / 1000.0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("0.0.0.0", 0))
    sock.settimeout(a.timeout)

    opts = []
    if a.blksize:
        opts += [b"blksize", str(a.blksize).encode()]
    if a.windowsize:
        opts += [b"windowsize", str(a.windowsize).encode()]
    if not a.no_tsize:
        opts += [b"tsize", b"0"]
    rrq = struct.pack("!H", RRQ) + b"\0".join([a.file.encode(), b"octet"] + opts) + b"\0"

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

    def send_ack(block):
        nonlocal acks, slept, last_sent
        if delay > 0:
            t = time.perf_counter()
            time.sleep(delay)
            slept += time.perf_counter() - t
        last_sent = struct.pack("!HH", ACK, block & 0xFFFF)
        sock.sendto(last_sent, peer)
        acks += 1

    start = time.perf_counter()
    end = start
    sock.sendto(rrq, (a.server, a.port))
    tries = 0
    while not done:
        try:
            pkt, src = sock.recvfrom(65536)
        except socket.timeout:
            timeouts += 1
            tries += 1
            if tries > a.retries:
                error = "timed out"
                break
            sock.sendto(last_sent, peer or (a.server, a.port))
            continue
        if peer is None:
            if src[0] != a.server:
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
    ok = done and (not a.sha256 or hexdigest == a.sha256) and (tsize is None or tsize == received)
    if done and not ok and error is None:
        error = "content mismatch (sha256 or tsize)"
    print(json.dumps({
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
        "sha256": hexdigest,
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
