"""The network-namespace lab: hosts that reach each other, and nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vxnet.cli import main
from vxnet.sandbox.lab import LAB_ROOT, UNDERLAY, Lab, LabError, cleanup, namespace_pids

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("lab_ready")]


def netns_names() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def root_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running(pid):
            return True
        time.sleep(0.05)
    return False


def test_three_hosts_ping_each_other_and_leave_nothing_behind() -> None:
    links_before = root_links()
    with Lab(3) as lab:
        assert len(lab.hosts) == 3
        assert lab.subnet.subnet_of(UNDERLAY)
        addresses = [h.address for h in lab.hosts]
        assert len(set(addresses)) == 3
        assert all(a in lab.subnet for a in addresses)
        for src in lab.hosts:
            for dst in lab.hosts:
                if src is not dst:
                    src.run(["ping", "-c", "1", "-W", "2", str(dst.address)])
        # Each host sees only its own underlay address on eth0.
        out = lab.hosts[0].run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
        assert f"{addresses[0]}/24" in out
        assert str(addresses[1]) not in out
        sleepers = [h.spawn(["sleep", "300"]) for h in lab.hosts]
        names = {h.netns for h in lab.hosts} | {lab.switch_netns}
        assert names <= netns_names()
        assert set(namespace_pids(sorted(names))) >= {p.pid for p in sleepers}
        slot_file = LAB_ROOT / f"{lab.slot}.json"
        assert slot_file.exists()
    assert not names & netns_names()
    assert all(p.returncode is not None for p in sleepers)
    assert root_links() == links_before
    assert not slot_file.exists()


def test_teardown_runs_when_the_body_raises_and_kills_stubborn_processes() -> None:
    links_before = root_links()
    with (  # noqa: PT012 - the whole body must run inside the lab
        pytest.raises(RuntimeError, match="test body failed"),
        Lab(["alpha", "beta"]) as lab,
    ):
        names = {h.netns for h in lab.hosts} | {lab.switch_netns}
        # One process ignores SIGTERM; another was started in the background by a shell, so
        # the lab never saw its PID: both must still be stopped.
        stubborn = lab.host("alpha").spawn(["sh", "-c", "trap '' TERM; exec sleep 300"])
        detached = int(
            lab.host("beta").run(["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!"]).stdout
        )
        assert running(stubborn.pid)
        assert running(detached)
        raise RuntimeError("test body failed")
    assert not names & netns_names()
    assert wait_gone(stubborn.pid, 1)
    assert wait_gone(detached, 1)
    assert root_links() == links_before


def test_two_labs_coexist_with_separate_names_and_addresses() -> None:
    with Lab(2) as a, Lab(2) as b:
        assert a.prefix != b.prefix
        assert not a.subnet.overlaps(b.subnet)
        a.hosts[0].run(["ping", "-c", "1", "-W", "2", str(a.hosts[1].address)])
        b.hosts[0].run(["ping", "-c", "1", "-W", "2", str(b.hosts[1].address)])
        # The labs are separate networks: a host of one cannot reach a host of the other.
        crossed = a.hosts[0].run(
            ["ping", "-c", "1", "-W", "1", str(b.hosts[0].address)], check=False
        )
        assert crossed.returncode != 0


OWNER = textwrap.dedent("""
    import os, signal, sys, time
    from vxnet.sandbox.lab import Lab
    with Lab(2) as lab:
        lab.hosts[0].spawn(["sleep", "300"])
        print(lab.prefix, flush=True)
        if sys.argv[1] == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
""")


def start_owner(mode: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", OWNER, mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    prefix = proc.stdout.readline().strip()
    proc.stdout.close()  # the owner prints nothing more
    assert prefix.startswith("vxl-"), prefix
    return proc, prefix


def lab_namespaces(prefix: str) -> set[str]:
    return {n for n in netns_names() if n.startswith(prefix + "-")}


def test_interrupted_owner_tears_its_lab_down() -> None:
    proc, prefix = start_owner("wait")
    assert len(lab_namespaces(prefix)) == 3
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) != 0
    assert lab_namespaces(prefix) == set()


def test_cleanup_removes_the_lab_of_a_dead_run_and_keeps_live_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    proc, prefix = start_owner("crash")
    assert proc.wait(timeout=30) == -signal.SIGKILL
    leftovers = lab_namespaces(prefix)
    assert len(leftovers) == 3
    pids = namespace_pids(sorted(leftovers))
    assert pids, "the crashed run's sleeper should still be running"
    with Lab(1) as live:
        assert main(["lab", "cleanup"]) == 0
        assert f"removed lab {prefix} (3 namespaces)" in capsys.readouterr().out
        assert lab_namespaces(prefix) == set()
        assert all(wait_gone(p, 1) for p in pids)
        assert lab_namespaces(live.prefix) == {live.switch_netns, live.hosts[0].netns}
        live.hosts[0].run(["true"])


def test_a_kept_lab_outlives_its_owner_until_its_keeper_goes(tmp_path: Path) -> None:
    root = tmp_path / "slots"
    keeper = tmp_path / "keeper.json"
    keeper.write_text("{}")
    lab = Lab(["m1", "a1"], root=root, keeper=keeper)
    lab.create()
    try:
        slot_file = root / f"{lab.slot}.json"
        record = json.loads(slot_file.read_text())
        assert record["keeper"] == str(keeper)
        assert record["hosts"] == [
            ["m1", str(lab.hosts[0].address)],
            ["a1", str(lab.hosts[1].address)],
        ]
        # as if the process that built it had died
        record["owner_pid"], record["owner_start"] = 2**22 + 1, 1
        slot_file.write_text(json.dumps(record))
        assert cleanup(root=root) == []
        again = Lab.reopen(lab.slot, root=root)
        assert [(h.name, h.netns, h.address) for h in again.hosts] == [
            (h.name, h.netns, h.address) for h in lab.hosts
        ]
        again.host("a1").run(["ping", "-c", "1", "-W", "2", str(again.host("m1").address)])
        keeper.unlink()
        assert cleanup(root=root) == [f"removed lab {lab.prefix} (3 namespaces)"]
        assert lab_namespaces(lab.prefix) == set()
        with pytest.raises(LabError, match="no lab is recorded"):
            Lab.reopen(lab.slot, root=root)
    finally:
        lab.close()


def test_bad_host_names_are_refused_before_anything_is_built() -> None:
    before = netns_names()
    for hosts in (["ok", "Bad"], ["sw"], ["a", "a"], [], ["x" * 13]):
        with pytest.raises(LabError):
            Lab(hosts)
    assert netns_names() == before
