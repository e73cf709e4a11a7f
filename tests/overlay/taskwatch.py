"""Watching for a task record from inside a lab host, with the time it was first seen."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vxnet.sandbox.lab import Host

__all__ = ["seen_at", "watch"]

# The watcher polls the agent's API every 10 ms. It says "watching" once its first answer did not
# yet show what it waits for (so the caller knows it is polling), then the time it first does.
WATCH = """
import json, sys, time, httpx
name, present, limit = sys.argv[1], sys.argv[2] == "1", time.monotonic() + 20
ready = False
with httpx.Client(trust_env=False) as client:
    while time.monotonic() < limit:
        tasks = client.get("http://127.0.0.1:62080/v1/tasks").json()["tasks"]
        if any(t["value"]["name"] == name for t in tasks) == present:
            print("already" if not ready else time.time(), flush=True)
            break
        if not ready:
            print("watching", flush=True)
            ready = True
        time.sleep(0.01)
"""


def watch(host: Host, name: str, present: bool) -> subprocess.Popen[str]:
    """A watcher inside ``host``, polling once this returns."""
    proc = subprocess.Popen(
        host.command([sys.executable, "-c", WATCH, name, "1" if present else "0"]),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    assert first == "watching", f"the watcher did not start polling (it said {first!r})"
    return proc


def seen_at(proc: subprocess.Popen[str]) -> float:
    """When the watcher first saw what it waits for (wall clock)."""
    out, _ = proc.communicate(timeout=30)
    assert out.strip(), "the watcher gave up after 20 s"
    return float(out.strip())
