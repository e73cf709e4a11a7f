"""Egress NAT: containers reach destinations outside the overlay through their agent's address.

vxnet owns the nftables tables ``ip vxnet`` and ``ip6 vxnet`` and nothing else: each has one
``postrouting`` NAT chain that masquerades packets from the overlay's subnets to any address
outside them, except those leaving through the VTEP (overlay traffic is never translated).
A table is replaced in one nftables transaction (create, delete, create again), so there is no
moment without the rule, and the kernel keeps the connections it already translated. With
egress NAT switched off both tables are removed.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["NatError", "apply_ruleset", "nat_ruleset", "present_tables"]

TABLE = "vxnet"
NFT_TIMEOUT = 10.0


class NatError(RuntimeError):
    """nftables refused the ruleset, or ``nft`` is not installed."""


def nat_ruleset(subnets: Sequence[str], subnets6: Sequence[str], vtep: str) -> str:
    """The ``nft -f`` input that sets vxnet's tables for these overlay subnets (may be empty).

    An empty family gets its table removed; both empty remove both.
    """
    lines: list[str] = []
    for family, nets, match in (("ip", subnets, "ip"), ("ip6", subnets6, "ip6")):
        lines.append(f"table {family} {TABLE}")
        lines.append(f"delete table {family} {TABLE}")
        if not nets:
            continue
        space = "{ " + ", ".join(nets) + " }"
        lines += [
            f"table {family} {TABLE} {{",
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            f'    {match} saddr {space} {match} daddr != {space} oifname != "{vtep}" masquerade',
            "  }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _nft(args: Sequence[str], stdin: str | None = None) -> str:
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if nft is None:
        raise NatError("egress NAT needs nftables: install the package nftables")
    try:
        done = subprocess.run(
            [nft, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NatError(f"nft {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        raise NatError(f"nft {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def apply_ruleset(ruleset: str) -> None:
    """Load ``ruleset`` (from :func:`nat_ruleset`) in one transaction.

    Raises:
        NatError: nft is missing or refused it (the message has nft's own words).
    """
    _nft(["-f", "-"], ruleset)


def present_tables() -> set[str]:
    """The families (``ip``, ``ip6``) that have a ``vxnet`` table now.

    Raises:
        NatError: nft is missing or failed.
    """
    found: set[str] = set()
    for line in _nft(["list", "tables"]).splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "table" and words[2] == TABLE:
            found.add(words[1])
    return found
