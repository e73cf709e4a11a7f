"""Egress NAT: containers reach destinations outside the overlay through their agent's address.

vxnet owns the nftables tables ``ip vxnet`` and ``ip6 vxnet`` and nothing else: each has one
``postrouting`` NAT chain that masquerades packets from the overlay's subnets to any address
outside them, except those leaving through the VTEP (overlay traffic is never translated).
A table is replaced in one nftables transaction (create, delete, create again), so there is no
moment without the rule, and the kernel keeps the connections it already translated. With
egress NAT switched off both tables are removed.

Sans-IO: this renders the ruleset; :class:`~._machine.LinuxMachine` loads it with ``nft``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vxnet.overlay._local_model import Nat

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["TABLE", "desired_nat", "nat_ruleset"]

TABLE = "vxnet"


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


def desired_nat(subnets: Sequence[str], subnets6: Sequence[str], vtep: str) -> Nat:
    """The desired :class:`~._local_model.Nat`: the ruleset and the tables it leaves."""
    families = frozenset(f for f, nets in (("ip", subnets), ("ip6", subnets6)) if nets)
    return Nat(nat_ruleset(subnets, subnets6, vtep), families)
