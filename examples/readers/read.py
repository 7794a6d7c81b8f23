#!/usr/bin/env python3
"""Reads one source of a discocache root, from docs/FORMAT.md alone.

Usage: read.py ROOT TIER/NAME

Prints one JSON line: {"source", "age_seconds", "fresh", "revision", "data"}.
The payload <root>/<tier>/<name>.json is the truth: its bytes are the data
and its mtime is when they were fetched, so age = now - mtime. The sidecar
is optional extra (revision, ttl): FORMAT.md (version 1) puts it at
<tier>/<name>.meta.json; format 2 moves it to <tier>/.discocache/, so both
places are tried and a missing or unreadable sidecar is not an error.
Standard library only. Exit 3 when the source has no data.
"""

import json
import os
import re
import sys
import time

PART = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z")


def sidecar(root, tier, name):
    """The sidecar as a dict, or None (it is optional)."""
    for path in (
        os.path.join(root, tier, name + ".meta.json"),
        os.path.join(root, tier, ".discocache", name + ".meta.json"),
    ):
        try:
            with open(path, "rb") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("format") in (1, 2):
            return meta
    return None


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: read.py ROOT TIER/NAME")
    root, source = argv[1], argv[2]
    tier, _, name = source.partition("/")
    if not (PART.match(tier) and PART.match(name)):
        sys.exit(f"read.py: {source!r} is not tier/name")
    path = os.path.join(root, tier, name + ".json")
    try:
        # One open, then fstat and read on the same file: the payload is
        # replaced by rename, so this is one whole version of it.
        with open(path, "rb") as f:
            mtime = os.fstat(f.fileno()).st_mtime
            data = json.loads(f.read())
    except FileNotFoundError:
        print(f"read.py: {source}: no data ({path} does not exist)", file=sys.stderr)
        sys.exit(3)
    age = max(0.0, time.time() - mtime)
    meta = sidecar(root, tier, name)
    ttl_ms = meta.get("ttl_ms") if meta else None
    out = {
        "source": source,
        "age_seconds": age,
        "fresh": age * 1000 < ttl_ms if isinstance(ttl_ms, int) else None,
        "revision": meta.get("revision") if meta else None,
        "data": data,
    }
    print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main(sys.argv)
