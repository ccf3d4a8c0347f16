#!/usr/bin/env python3
"""Fires thousands of malformed DHCP and TFTP packets at a running kiln, then
checks it still answers a valid DISCOVER and a valid RRQ, and refuses
traversal paths. Runs inside the test's client namespace; prints TAP-like
lines; the exit code tells whether all passed.

usage: malformed.py SERVER_IP CLIENT_IF ENROLLED_MAC RESERVED_IP TFTP_FILE COUNT
"""
import os
import random
import socket
import struct
import sys
import time

SERVER, IFACE, MAC, RESERVED, TFTP_FILE, COUNT = sys.argv[1:7]
COUNT = int(COUNT)
rng = random.Random(20261122)  # deterministic: a failure can be replayed
results = []


def check(name, ok, why=""):
    results.append(ok)
    print(("ok - " if ok else "not ok - ") + name + ("" if ok else f" ({why})"), flush=True)


def mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(":"))


def dhcp_packet(mac, msg_type=1, options=b"", xid=None):
    xid = rng.getrandbits(32) if xid is None else xid
    hdr = struct.pack("!BBBBIHHIIII", 1, 1, 6, 0, xid, 0, 0x8000, 0, 0, 0, 0)
    hdr += mac_bytes(mac) + b"\0" * 10 + b"\0" * 64 + b"\0" * 128
    opts = b"\x63\x82\x53\x63" + bytes([53, 1, msg_type])
    opts += bytes([60, 9]) + b"PXEClient" + bytes([93, 2, 0, 0]) + options + b"\xff"
    return hdr + opts, xid


def mutations():
    """Malformed DHCP payloads of many shapes."""
    valid, _ = dhcp_packet("02:00:00:00:00:01")
    yield b""
    yield b"\x01"
    yield valid[:235]  # header cut short
    yield valid[:240]  # no options at all
    for _ in range(COUNT):
        kind = rng.randrange(6)
        if kind == 0:  # random bytes
            yield os.urandom(rng.randrange(0, 700))
        elif kind == 1:  # bit flips in a valid packet
            b = bytearray(valid)
            for _ in range(rng.randrange(1, 20)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            yield bytes(b)
        elif kind == 2:  # option lengths that overrun the packet
            code = rng.choice([1, 3, 6, 12, 43, 50, 51, 53, 54, 55, 60, 61, 77, 80, 81, 82, 93, 94, 97, 151, 175])
            yield valid[:240] + bytes([code, rng.randrange(256)]) + os.urandom(rng.randrange(0, 8))
        elif kind == 3:  # absurd hlen/htype
            b = bytearray(valid)
            b[1] = rng.randrange(256)
            b[2] = rng.randrange(256)
            yield bytes(b)
        elif kind == 4:  # truncated anywhere
            yield valid[: rng.randrange(len(valid))]
        else:  # garbage after a valid cookie
            yield valid[:240] + os.urandom(rng.randrange(1, 400))


def tftp_mutations():
    yield b""
    yield b"\x00"
    yield b"\x00\x01"  # RRQ with nothing
    yield b"\x00\x01undionly.kpxe"  # no NUL terminators
    yield b"\x00\x09x\x00octet\x00"  # unknown opcode
    yield b"\x00\x03\x00\x01" + b"x" * 512  # DATA to the request port
    yield b"\x00\x04\x00\x01"  # ACK to the request port
    yield b"\x00\x01f\x00octet\x00blksize\x00" + b"9" * 100 + b"\x00"
    yield b"\x00\x01f\x00octet\x00" + b"o\x00" * 300
    for _ in range(COUNT):
        n = rng.randrange(6)
        if n == 0:
            yield os.urandom(rng.randrange(0, 600))
        elif n == 1:
            yield b"\x00" + bytes([rng.randrange(0, 8)]) + os.urandom(rng.randrange(0, 100))
        elif n == 2:
            name = os.urandom(rng.randrange(0, 40)).replace(b"\0", b"")
            yield b"\x00\x01" + name + b"\x00octet\x00" + os.urandom(rng.randrange(0, 30))
        elif n == 3:
            yield b"\x00\x02" + b"upload.bin\x00octet\x00"  # write request
        elif n == 4:
            opt = rng.choice([b"blksize", b"windowsize", b"tsize", b"timeout", b"BLKSIZE"])
            val = rng.choice([b"0", b"-1", b"65536", b"99999999999999999999", b"abc", b""])
            yield b"\x00\x01" + TFTP_FILE.encode() + b"\x00octet\x00" + opt + b"\x00" + val + b"\x00"
        else:
            yield b"\x00\x05\x00\x01oops\x00"


def flood():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, IFACE.encode())
    sent = 0
    for i, p in enumerate(mutations()):
        dst = "255.255.255.255" if i % 2 else SERVER
        s.sendto(p, (dst, 67))
        sent += 1
        if i % 200 == 0:
            time.sleep(0.01)  # bounded rate: stay a test, not a storm
    for i, p in enumerate(tftp_mutations()):
        s.sendto(p, (SERVER, 69))
        sent += 1
        if i % 200 == 0:
            time.sleep(0.01)
    s.close()
    return sent


def discover_gets_offer():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, IFACE.encode())
    s.bind(("0.0.0.0", 68))
    s.settimeout(1.0)
    pkt, xid = dhcp_packet(MAC, 1)
    deadline = time.time() + 15
    while time.time() < deadline:
        s.sendto(pkt, ("255.255.255.255", 67))
        end = time.time() + 1.0
        while time.time() < end:
            try:
                data, _ = s.recvfrom(2048)
            except socket.timeout:
                break
            if len(data) >= 240 and data[0] == 2 and struct.unpack("!I", data[4:8])[0] == xid:
                yiaddr = socket.inet_ntoa(data[16:20])
                s.close()
                return yiaddr
    s.close()
    return None


def rrq(name, opts=b""):
    """Reads a whole file over TFTP (lock-step); returns (bytes, error)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3.0)
    s.sendto(b"\x00\x01" + name + b"\x00octet\x00" + opts, (SERVER, 69))
    out = bytearray()
    expect = 1
    blksize = 512
    try:
        while True:
            data, peer = s.recvfrom(70000)
            op = struct.unpack("!H", data[:2])[0]
            if op == 5:
                return None, data[4:].split(b"\0")[0].decode(errors="replace")
            if op == 6:  # OACK
                fields = data[2:].split(b"\0")
                d = dict(zip(fields[0::2], fields[1::2]))
                blksize = int(d.get(b"blksize", b"512"))
                s.sendto(b"\x00\x04\x00\x00", peer)
                continue
            if op == 3:
                block = struct.unpack("!H", data[2:4])[0]
                if block == expect & 0xFFFF:
                    out += data[4:]
                    expect += 1
                s.sendto(b"\x00\x04" + data[2:4], peer)
                if block == (expect - 1) & 0xFFFF and len(data) - 4 < blksize:
                    return bytes(out), None
    except socket.timeout:
        return None, "timeout"
    finally:
        s.close()


sent = flood()
print(f"# sent {sent} malformed packets", flush=True)
got = discover_gets_offer()
check("a valid DISCOVER after the flood gets an OFFER of the reserved address", got == RESERVED, f"got {got}")
want = open(f"/usr/lib/ipxe/{TFTP_FILE}", "rb").read()
data, err = rrq(TFTP_FILE.encode(), b"blksize\x001468\x00")
check(f"a valid RRQ after the flood returns {TFTP_FILE} intact", data == want, err or f"{len(data or b'')} bytes")
for bad in [b"../../etc/passwd", b"/etc/passwd", b"..\\..\\etc\\passwd", b"a/../../etc/passwd"]:
    data, err = rrq(bad)
    check(f"traversal path {bad.decode()!r} refused", data is None and err not in (None, "timeout"), err)
# A NUL inside the name ends it (RFC 1350 strings are NUL-terminated): the rest is mode/options.
data, err = rrq(b"../etc/passwd\x00")
check("traversal before an embedded NUL refused", data is None and err not in (None, "timeout"), err)
sys.exit(0 if all(results) else 1)
