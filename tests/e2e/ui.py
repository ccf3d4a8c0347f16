#!/usr/bin/env python3
"""The operator web page in headless Chromium, for tests/e2e/ui.sh (stdlib only).

Chromium is driven over the DevTools protocol through --remote-debugging-pipe: JSON
messages ending in NUL, written to its fd 3 and read from its fd 4 (no WebSocket needed).
Prints TAP-like lines (`ok - ...` / `not ok - ...`); the exit code tells whether all passed.

usage:
  ui.py browse --chromium BIN --url https://127.0.0.1:9443 --token-file F --spki B64
               --machine NAME --discovered-mac MAC --out DIR --ready-file F [--timeout S]
  ui.py dhcp-discover IFACE MAC     (a few PXE DISCOVERs from an unenrolled MAC)
"""
import argparse
import base64
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

results = []


def check(name, ok, why=""):
    results.append(bool(ok))
    print(("ok - " if ok else "not ok - ") + name + ("" if ok else f" ({why})"), flush=True)


def log(msg):
    print(f"# {msg}", flush=True)


class CdpError(Exception):
    pass


class Chromium:
    """One headless Chromium and one page (a flat session attached to a new target)."""

    def __init__(self, binary, profile, spki, log_path):
        to_r, self.to_w = os.pipe()
        self.from_r, from_w = os.pipe()

        def child_fds():
            # The pipe ends os.pipe() made are close-on-exec, and may sit at 3 or 4
            # already: copied away first, then to 3 and 4 (dup2 makes them inheritable).
            r, w = os.dup(to_r), os.dup(from_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [
            binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-sync", "--disable-component-update",
            "--user-data-dir=" + profile, "--window-size=1400,1100", "--remote-debugging-pipe",
            # Trust exactly the lab server's certificate (its public key), not every error.
            "--ignore-certificate-errors-spki-list=" + spki,
        ]
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     preexec_fn=child_fds, close_fds=False)
        os.close(to_r)
        os.close(from_w)
        self.buf = b""
        self.next_id = 0
        self.session = None
        self.console = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _message(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                raise CdpError("no answer from Chromium in time")
            ready, _, _ = select.select([self.from_r], [], [], left)
            if ready:
                chunk = os.read(self.from_r, 1 << 20)
                if not chunk:
                    raise CdpError("Chromium closed its pipe (exited?)")
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method, params=None, timeout=60):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self.to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            m = self._message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise CdpError(f"{method}: {m['error']}")
                return m.get("result", {})
            if m.get("method") == "Runtime.consoleAPICalled":
                args = m["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif m.get("method") == "Runtime.exceptionThrown":
                self.console.append(str(m["params"]["exceptionDetails"].get("exception", {}).get("description")))

    def js(self, expression):
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise CdpError(f"{expression}: {r['exceptionDetails'].get('text')}")
        return r.get("result", {}).get("value")

    def wait(self, expression, timeout, every=0.5):
        """Until the expression is truthy; its last value (falsy when the time ran out)."""
        deadline = time.time() + timeout
        value = None
        while time.time() < deadline:
            try:
                value = self.js(expression)
            except CdpError:
                value = None  # the page is between documents
            if value:
                return value
            time.sleep(every)
        return value

    def navigate(self, url):
        self.call("Page.navigate", {"url": url})

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        log(f"screenshot: {path}")

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except (CdpError, OSError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def tile(name):
    return f"document.querySelector('.tile[data-machine={json.dumps(name)}]')"


def browse(a):
    token = open(a.token_file).read().strip()
    os.makedirs(a.out, exist_ok=True)
    b = Chromium(a.chromium, os.path.join(a.out, "profile"), a.spki, os.path.join(a.out, "chromium.log"))

    def stopped(*_):
        # The test's cleanup stops this process: Chromium goes with it.
        b.proc.kill()
        sys.exit(143)

    signal.signal(signal.SIGTERM, stopped)
    try:
        scenario(b, a, token)
    except CdpError as e:
        check("the browser session ran to the end", False, str(e))
    finally:
        for line in b.console[-20:]:
            log(f"console: {line}")
        b.close()


def scenario(b, a, token):
    # No session: the page sends the browser to the login form, the API gives it nothing.
    b.navigate(a.url + "/ui/")
    at_login = b.wait("location.pathname === '/ui/login' && !!document.querySelector('#token')", 60)
    check("without a session /ui/ sends the browser to the login form", at_login)
    status = b.js("fetch('/api/v1/hardware').then(r => r.status)")
    check(f"without a session the API answers the browser 401 (got {status})", status == 401)

    # Log in through the form, as an operator would.
    b.js(f"document.querySelector('#token').value = {json.dumps(token)};"
         "document.querySelector('#login-form').submit(); true")
    loaded = b.wait("location.pathname === '/ui/' && document.body.dataset.loaded === 'yes'", 60)
    check("logging in with the token opens the page", loaded)
    cookie_hidden = b.js("document.cookie.indexOf('kiln_ui') === -1")
    check("the session cookie is out of the page's scripts' reach (HttpOnly)", cookie_hidden)
    first = b.wait(f"{tile(a.machine)} && {tile(a.machine)}.dataset.state", 30)
    check(f"the machine's tile is on the grid before its workflow (state {first})", first == "idle")
    live = b.wait("document.body.dataset.live === 'yes'", 30)
    check("the page follows the event stream", live)
    page_id = b.js("document.documentElement.dataset.pageId")
    b.screenshot(os.path.join(a.out, "ui-before.png"))
    open(a.ready_file, "w").close()

    # The machine provisions: the tile follows it, live.
    seen = []
    progress = []
    shot = False
    deadline = time.time() + a.timeout
    state = None
    while time.time() < deadline:
        try:
            now = b.js(f"(() => {{ const t = {tile(a.machine)}; return t && {{state: t.dataset.state, "
                       "cls: t.className, page: document.documentElement.dataset.pageId, "
                       "progress: (t.querySelector('.progress-text') || {}).textContent || ''}; })()")
        except CdpError:
            now = None
        if now:
            state = now["state"]
            if not seen or seen[-1] != state:
                seen.append(state)
                log(f"tile {a.machine}: {state} ({now['cls']})")
            if now["page"] != page_id:
                check("the page was never reloaded", False, "its page id changed")
                page_id = now["page"]
            if now["progress"] and now["progress"] not in progress:
                progress.append(now["progress"])
                log(f"image progress on the tile: {now['progress']}")
                # The first report with bytes written: the page with the machine open.
                if not shot and not now["progress"].startswith("0 B"):
                    shot = True
                    b.js(f"{tile(a.machine)}.click(); true")
                    b.wait("!!document.querySelector('#image-progress-text')", 10)
                    b.screenshot(os.path.join(a.out, "ui-progress.png"))
            if state in ("succeeded", "failed", "timed-out"):
                break
        time.sleep(1)
    check(f"the tile went through the workflow's states live, one page load ({' > '.join(seen)})",
          len(seen) >= 3 and "running" in seen and b.js("document.documentElement.dataset.pageId") == page_id)
    check(f"the tile ends succeeded, coloured by its class (state {state})",
          state == "succeeded" and b.js(f"{tile(a.machine)}.classList.contains('state-succeeded')"))
    moving = [p for p in progress if not p.startswith("0 B")]
    check(f"the running image stream showed its bytes growing on the tile ({' | '.join(progress[:6])})",
          len(progress) >= 2 and moving)

    # The flight recorder of the machine, and its inventory.
    b.js(f"{tile(a.machine)}.click(); true")
    phases = b.wait("(() => { const rows = [...document.querySelectorAll('#timeline tbody tr.phase')];"
                    " return rows.length >= 5 && rows.map(r => r.dataset.phase); })()", 30)
    check(f"the timeline shows the phases ({phases})",
          phases and all(p in phases for p in ("first-dhcp", "ipxe-script", "kernel-fetch", "agent-up", "action")))
    outcome = b.wait("!document.querySelector('#outcome').hidden && document.querySelector('#outcome').textContent", 20)
    check(f"the timeline says how it ended ({outcome})", outcome and "succeeded" in outcome)
    inv = b.wait("(document.querySelector('#inventory-facts') || {}).textContent", 20)
    check(f"the machine's inventory is shown ({inv})", inv and "memory" in inv)

    # The preflight the shell ran before the browser came.
    rows = b.wait("document.querySelectorAll('#preflight tbody tr').length", 30)
    summary = b.js("document.querySelector('#preflight-summary').textContent")
    check(f"the last preflight shows ({rows} checks; {summary})", rows and summary.startswith("Last run"))

    # The unenrolled MAC that asked for DHCP.
    mac = a.discovered_mac
    row = b.wait(f"!!document.querySelector('#discovered tbody tr[data-mac={json.dumps(mac)}]')", 60)
    check(f"the discovered list shows {mac}", row)
    b.screenshot(os.path.join(a.out, "ui.png"))

    # Logging out ends the session: the API gives the browser nothing again.
    b.js("document.querySelector('#logout-form').submit(); true")
    out = b.wait("location.pathname === '/ui/login'", 30)
    status = b.js("fetch('/api/v1/hardware').then(r => r.status)")
    check(f"after logging out the browser is at the login form and gets 401 (got {status})",
          out and status == 401)


def dhcp_discover(iface, mac):
    hw = bytes(int(x, 16) for x in mac.split(":"))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    for xid in range(3):
        hdr = struct.pack("!BBBBIHHIIII", 1, 1, 6, 0, 0x4B494C00 + xid, 0, 0x8000, 0, 0, 0, 0)
        hdr += hw + b"\0" * 10 + b"\0" * 64 + b"\0" * 128
        opts = b"\x63\x82\x53\x63" + bytes([53, 1, 1]) + bytes([60, 9]) + b"PXEClient"
        opts += bytes([93, 2, 0, 7]) + b"\xff"
        s.sendto(hdr + opts, ("255.255.255.255", 67))
        time.sleep(0.5)
    s.close()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    br = sub.add_parser("browse")
    for opt in ("--chromium", "--url", "--token-file", "--spki", "--machine", "--discovered-mac", "--out",
                "--ready-file"):
        br.add_argument(opt, required=True)
    br.add_argument("--timeout", type=int, default=1500)
    dd = sub.add_parser("dhcp-discover")
    dd.add_argument("iface")
    dd.add_argument("mac")
    a = p.parse_args()
    if a.cmd == "dhcp-discover":
        dhcp_discover(a.iface, a.mac)
        return 0
    browse(a)
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
