"""Watching for a task record from inside a lab host, with the time it was first seen."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vxnet.sandbox.lab import Host

__all__ = ["seen_at", "watch"]

WATCH = """
import json, sys, time, httpx
name, present, limit = sys.argv[1], sys.argv[2] == "1", time.monotonic() + 20
with httpx.Client(trust_env=False) as client:
    while time.monotonic() < limit:
        tasks = client.get("http://127.0.0.1:62080/v1/tasks").json()["tasks"]
        if any(t["value"]["name"] == name for t in tasks) == present:
            print(time.time(), flush=True)
            break
        time.sleep(0.01)
"""


def watch(host: Host, name: str, present: bool) -> subprocess.Popen[str]:
    return subprocess.Popen(
        host.command([sys.executable, "-c", WATCH, name, "1" if present else "0"]),
        stdout=subprocess.PIPE,
        text=True,
    )


def seen_at(proc: subprocess.Popen[str]) -> float:
    out, _ = proc.communicate(timeout=30)
    assert out.strip(), "the watcher gave up after 20 s"
    return float(out.strip())
