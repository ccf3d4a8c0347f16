"""Shared by the report scripts of the benchmarks (bmc-report.py, boot-services-report.py,
demo-phases.py): percentiles, number formats, text and markdown tables, and rewriting one
section of BENCHMARKS.md between its markers. The scripts run as `python3 bench/X.py`, so this
module is found next to them.
"""

import math
import os


# ---------------------------------------------------------------------------- figures

def percentile(values, p):
    """The p-th percentile (0-100), linear between the two nearest values; NaN for no values."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def fmt(v):
    """A measured value to about three significant digits; "–" for none (or NaN)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_ratio(r):
    """A ratio as "1.23×" (or "12×" from 10 up); "–" for none."""
    if r is None:
        return "–"
    return f"{r:,.0f}×" if r >= 10 else f"{r:.2f}×"


# ---------------------------------------------------------------------------- tables

def text_table(header, lines):
    """Columns padded to their widest cell, a dashed rule under the header."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]

    def row(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))

    return "\n".join([row(header), row(["-" * w for w in widths])] + [row(l) for l in lines])


def md_table(header, lines):
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(str(c) for c in l) + " |" for l in lines]
    return "\n".join(out)


# ---------------------------------------------------------------------------- BENCHMARKS.md

def splice(text, begin, end, block):
    """text with its part from marker `begin` to marker `end` replaced by block (which holds both
    markers); where text lacks them, block is appended after a blank line."""
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        _, post = rest.split(end, 1)
        return pre + block.rstrip("\n") + post
    return text.rstrip("\n") + "\n\n" + block.rstrip("\n") + "\n"


def write_atomically(path, text):
    """Write through a temporary file, so a failed run never leaves the file half written."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def update_section(path, begin, end, block):
    """Replace (or append) the section of the file at path between `begin` and `end`."""
    with open(path) as f:
        text = f.read()
    write_atomically(path, splice(text, begin, end, block))
