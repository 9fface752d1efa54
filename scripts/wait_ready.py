#!/usr/bin/env python3
"""Wait until each named URL answers 200, saying every few seconds what it waits for.

`make docker-up` runs it after `compose up -d`, which returns before the services answer
(podman-compose does not wait for health checks at all).

    python3 scripts/wait_ready.py [--timeout S] NAME=URL...

Exits 0 once every URL has answered 200, in order; 1 when one has not within the
timeout, or reports that it failed for good (a JSON body with "status": "failed", as
the generator's /readyz does when its model cannot load). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from devtools.processes import probe

NOTE_EVERY_S = 5.0
POLL_S = 0.25


def wait_ready(name: str, url: str, timeout_s: float) -> bool:
    started = time.monotonic()
    last_note = 0.0
    while True:
        status, body = probe(url)
        elapsed = time.monotonic() - started
        if status == 200:
            print(f">> {name} ready ({elapsed:.1f}s): {url}", flush=True)
            return True
        if body.get("status") == "failed":
            print(f">> {name} failed: {json.dumps(body.get('error', body))}", flush=True)
            return False
        if elapsed > timeout_s:
            state = f"HTTP {status}" if status else "no answer"
            print(f">> {name} not ready after {elapsed:.0f}s ({state}): {url}", flush=True)
            return False
        if elapsed - last_note >= NOTE_EVERY_S:
            print(f">> waiting for {name} ({elapsed:.0f}s)", flush=True)
            last_note = elapsed
        time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for each URL")
    parser.add_argument("targets", nargs="+", metavar="NAME=URL")
    args = parser.parse_args(argv)
    for target in args.targets:
        name, sep, url = target.partition("=")
        if not sep or not url:
            parser.error(f"expected NAME=URL, got {target!r}")
        if not wait_ready(name, url, args.timeout):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
