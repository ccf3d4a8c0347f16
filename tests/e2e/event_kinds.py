"""Reads `kiln events -o json` lines on stdin; prints, one a line, the kinds of the events of
machine HOST (by name, or by MAC for wire events that carry no name), in the order they
happened (wire events reach the store in batches, so their ids can be later than the
workflow events that followed them: order by time, then id).

    python3 event_kinds.py HOST MAC [--normalize] < events.json

--normalize: what differs between two runs of the same provisioning without saying anything
about it: the BMC step (bmc.* and workflow.netbooting: a machine without a BMC is powered on
by hand) and repeats of one kind in a row (a DHCP client resending its DISCOVER).
"""
import json
import sys

host, mac = sys.argv[1], sys.argv[2].lower()
normalize = "--normalize" in sys.argv[3:]
events = []
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    e = json.loads(line)
    if e.get("machine") == host or (e.get("mac") or "").lower() == mac:
        events.append(e)
events.sort(key=lambda e: (e["at_ms"], e["id"]))
last = None
for e in events:
    kind = e["kind"]
    if normalize:
        if kind.startswith("bmc.") or kind == "workflow.netbooting" or kind == last:
            continue
    last = kind
    print(kind)
