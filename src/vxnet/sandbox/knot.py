"""A Knot DNS server on loopback (or in a lab host), for DNS tests and benchmarks (Debian
package ``knot``).

:class:`Knot` writes a configuration and one zone file in a directory of its own, starts
``knotd`` in the foreground on ``127.0.0.1:<port>`` (UDP and TCP), waits until it answers the
zone's SOA, and stops it by its PID. It is vxnet-independent: tests forward to it, and the DNS
benchmark measures it beside vxnet on the same zone.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import struct
import subprocess
import time
from typing import TYPE_CHECKING, Self

from vxnet.sandbox.lab import StopsOnExit

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from vxnet.sandbox.lab import Host

__all__ = ["Knot", "KnotError", "free_udp_tcp_port"]

START_TIMEOUT = 20.0


class KnotError(RuntimeError):
    """knotd is missing or did not start (the message says which, with its log)."""


def free_udp_tcp_port() -> int:
    """A loopback port free for both UDP and TCP at the time of asking."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise OSError("no free loopback port for UDP and TCP")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux), so a
    test run that is killed leaves no knotd behind."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _soa_query(zone: str) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in zone.rstrip(".").split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 6, 1)


class Knot(StopsOnExit):
    """knotd serving ``zone`` from ``records`` (zone-file lines relative to the zone).

    Args:
        directory: Where its configuration, zone file, database and log go.
        zone: The zone's name, e.g. ``example.test``.
        records: Zone-file lines after the SOA and NS, e.g. ``"www A 192.0.2.10"``.
        port: The loopback port (default: a free one).
        threads: knotd's UDP and TCP worker threads (default: knotd's choice).
        host: A lab host to run in instead of this machine's namespace, answering on the
            host's underlay address (port 53 unless ``port`` is given), as an outside resolver.
    """

    def __init__(
        self,
        directory: Path,
        zone: str,
        records: Sequence[str],
        *,
        port: int | None = None,
        threads: int | None = None,
        host: Host | None = None,
    ) -> None:
        self.directory = directory
        self.zone = zone.rstrip(".")
        self.records = list(records)
        self.host = host
        self.ip = "127.0.0.1" if host is None else str(host.address)
        self.port = port or (53 if host is not None else free_udp_tcp_port())
        self.threads = threads
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def start(self) -> Self:
        """Start knotd and wait until it answers.

        Raises:
            KnotError: knotd is not installed, exited, or did not answer in time.
        """
        knotd = shutil.which("knotd") or shutil.which("knotd", path="/usr/sbin:/sbin")
        if knotd is None:
            raise KnotError("knotd is not installed: apt-get install knot")
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        zone_file = d / f"{self.zone}.zone"
        zone_file.write_text(
            "\n".join(
                [
                    f"$ORIGIN {self.zone}.",
                    "$TTL 300",
                    f"@ SOA ns.{self.zone}. admin.{self.zone}. 1 60 180 86400 1",
                    f"@ NS ns.{self.zone}.",
                    "ns A 127.0.0.1",
                    *self.records,
                ]
            )
            + "\n"
        )
        workers = (
            f"    udp-workers: {self.threads}\n    tcp-workers: {self.threads}\n"
            if self.threads
            else ""
        )
        (d / "knot.conf").write_text(
            f"server:\n    listen: {self.ip}@{self.port}\n    rundir: {d}\n{workers}"
            f"database:\n    storage: {d}/db\n"
            "log:\n  - target: stderr\n    any: warning\n"
            f"zone:\n  - domain: {self.zone}\n    file: {zone_file}\n"
            "    zonefile-sync: -1\n    journal-content: none\n"
        )
        log = (d / "knotd.log").open("wb")
        with log:
            if self.host is not None:
                self.proc = self.host.spawn(
                    [knotd, "-c", str(d / "knot.conf")], stdout=log, stderr=log
                )
            else:
                self.proc = subprocess.Popen(
                    [knotd, "-c", str(d / "knot.conf")],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
        deadline = time.monotonic() + START_TIMEOUT
        query = _soa_query(self.zone)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise KnotError(f"knotd exited {self.proc.returncode}: {self._log()}")
            if self.host is not None:
                asked = ["dig", f"@{self.ip}", "-p", str(self.port), "+short", "+time=1"]
                if self.host.run([*asked, "+tries=1", self.zone, "SOA"], check=False).stdout:
                    return self
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(0.2)
                try:
                    sock.sendto(query, ("127.0.0.1", self.port))
                    reply = sock.recv(4096)
                except OSError:
                    continue
                if reply[:2] == query[:2] and reply[3] & 0x0F == 0:
                    return self
        self.stop()
        raise KnotError(f"knotd did not answer within {START_TIMEOUT} s: {self._log()}")

    def _log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "knotd.log").read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        """Stop knotd by its PID (SIGTERM, SIGKILL after 5 s); idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> Self:
        return self.start()
