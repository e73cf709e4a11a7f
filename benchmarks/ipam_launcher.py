"""CNI ADD latency of the two ways to start ``vxnet-ipam``: the console script that
``pyproject.toml`` declares (the venv's interpreter, ``site`` and the ``vxnet`` package) against
the launcher the agent writes into ``cni_bin_dir`` (:mod:`vxnet.overlay._launcher`: the system
``python3 -I -S``, :mod:`vxnet.ipam_plugin` alone).

Both talk to a unix socket in this process that answers every request at once, so the figures
are the plugin's own cost (process start-up, imports, one round trip); ``--adds`` ADDs each way,
alternating, so that the machine's slow moments hit both. No root, no lab.

Figures (one JSON line per way): ADD p50, p90 and min in ms.

    .venv/bin/python benchmarks/ipam_launcher.py [--adds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import vxnet
from vxnet.overlay._launcher import plugin_file, plugin_python

ANSWER = b'0{"cniVersion": "1.0.0", "ips": [{"address": "9.0.1.2/25", "gateway": "9.0.1.1"}]}\n'


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def serve(server: socket.socket) -> None:
    while True:
        conn, _ = server.accept()
        with conn:
            request = b""
            while not request.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                request += chunk
            conn.sendall(ANSWER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adds", type=int, default=20)
    args = parser.parse_args()
    console = shutil.which("vxnet-ipam", path=str(Path(sys.executable).parent))
    if console is None:
        sys.exit("the console script vxnet-ipam is not installed beside this Python")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "ipam.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(64)
        threading.Thread(target=serve, args=(server,), daemon=True).start()
        source = str(Path(vxnet.__file__).parent.parent)
        launcher = plugin_file(tmp, plugin_python(), source, path)
        Path(launcher.path).write_text(launcher.text)
        os.chmod(launcher.path, launcher.mode)
        conf = json.dumps(
            {"cniVersion": "1.0.0", "name": "dcos", "ipam": {"type": "vxnet-ipam", "socket": path}}
        )
        env = {
            "PATH": "/usr/bin:/bin",
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "c1",
            "CNI_IFNAME": "eth0",
            "CNI_NETNS": "/dev/null",
        }
        ways = {"console script": console, "launcher": launcher.path}
        took: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.adds):
            for way, plugin in ways.items():
                start = time.perf_counter()
                done = subprocess.run(
                    [plugin], input=conf, capture_output=True, text=True, env=env, timeout=30
                )
                took[way].append((time.perf_counter() - start) * 1000)
                if done.returncode != 0 or '"ips"' not in done.stdout:
                    sys.exit(f"{way}: {done.stdout or done.stderr}")
    for way, values in took.items():
        values.sort()
        emit(
            way=way,
            adds=args.adds,
            python=plugin_python() if way == "launcher" else sys.executable,
            add_p50_ms=round(statistics.median(values), 1),
            add_p90_ms=round(values[max(0, int(0.9 * len(values)) - 1)], 1),
            add_min_ms=round(values[0], 1),
        )


if __name__ == "__main__":
    main()
