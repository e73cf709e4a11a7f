"""Watch one agent while another is flooded (run inside a lab host by test_lab_flood).

``python flood_watch.py SECONDS API NAME [--member M] [--udp HOST:PORT ...] [--tcp HOST:PORT]``:
about ten times a second, for ``SECONDS``: ``GET API/v1/members`` (its time, and the status of
member ``M``), and the question ``NAME`` A to every ``--udp`` server (a stub resolver's way: up
to 3 tries of 0.5 s) and to the ``--tcp`` server. Prints one JSON object: the rounds, the API's
slow answers (over 100 ms) and errors, the member's statuses seen, per server the questions
asked and answered, and the agent's gossip suspicions counted meanwhile.
"""

from __future__ import annotations

import argparse
import json
import re
import time

import dns.exception
import dns.message
import dns.query
import httpx

UDP_TRIES = 3
UDP_TIMEOUT = 0.5
SLOW = 0.1


def suspicions(http: httpx.Client, api: str) -> float:
    text = http.get(f"{api}/metrics").text
    found = re.search(r"^vxnet_gossip_suspicions_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def answered(query: dns.message.Message, server: str, *, tcp: bool) -> bool:
    host, port = server.rsplit(":", 1)
    for _ in range(1 if tcp else UDP_TRIES):
        try:
            if tcp:
                reply = dns.query.tcp(query, host, port=int(port), timeout=2)
            else:
                reply = dns.query.udp(query, host, port=int(port), timeout=UDP_TIMEOUT)
        except (dns.exception.Timeout, OSError):
            continue
        return bool(reply.answer)
    return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("seconds", type=float)
    parser.add_argument("api")
    parser.add_argument("name")
    parser.add_argument("--member")
    parser.add_argument("--udp", action="append", default=[])
    parser.add_argument("--tcp")
    args = parser.parse_args()
    query = dns.message.make_query(args.name, "A")
    servers = [(s, False) for s in args.udp] + ([(args.tcp, True)] if args.tcp else [])
    asked = {s: 0 for s, _ in servers}
    got = {s: 0 for s, _ in servers}
    slow: list[float] = []
    errors: list[str] = []
    statuses: dict[str, int] = {}
    rounds = 0
    with httpx.Client(trust_env=False, timeout=5) as http:
        before = suspicions(http, args.api)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            rounds += 1
            began = time.monotonic()
            try:
                members = http.get(f"{args.api}/v1/members").json()["members"]
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
                members = []
            took = time.monotonic() - began
            if took > SLOW:
                slow.append(round(took, 3))
            if args.member:
                status = next((m["status"] for m in members if m["name"] == args.member), None)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            for server, tcp in servers:
                asked[server] += 1
                got[server] += answered(query, server, tcp=tcp)
            time.sleep(0.1)  # sampling: about ten rounds a second
        after = suspicions(http, args.api)
    print(
        json.dumps(
            {
                "rounds": rounds,
                "slow": slow,
                "errors": errors,
                "statuses": statuses,
                "asked": asked,
                "answered": got,
                "suspicions": after - before,
            }
        )
    )


if __name__ == "__main__":
    main()
