"""The ``vxnet`` command: version, help, and ``config check``."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from vxnet import __version__
from vxnet.cli import main

if TYPE_CHECKING:
    from pathlib import Path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"vxnet {__version__}\n"


def test_help_runs_as_a_program() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vxnet", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "usage: vxnet" in out
    for command in ("config", "lab"):
        assert command in out


def test_config_check_prints_effective_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.toml"
    path.write_text("[master]\n[network]\noverlay_mtu = 1400\n")
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "overlay_mtu = 1400" in out
    assert 'vtep_subnet = "44.128.0.0/20"' in out  # defaults filled in
    assert main(["config", "check", "--json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["network"]["overlays"][0]["name"] == "dcos"
    assert data["network"]["overlay_mtu"] == 1400


def test_config_check_lists_every_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        "[network]\nvni = 0\nmtu = 9000\n[[network.overlays]]\nname = 'none'\n"
        "subnet = '9.0.0.0/8'\n"
    )
    assert main(["config", "check", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines == [
        f"{path}: network.mtu: unknown key (did you mean 'vtep_mtu' or 'overlay_mtu'?); "
        "known keys here: "
        "vtep_subnet, vtep_subnet6, vtep_mac_oui, vtep_mtu, overlay_mtu, vni, vxlan_port, "
        "overlays, isolation, allow",
        f"{path}: network.vni: 0 is out of range: a VxLAN VNI must be from 1 to 16777215",
        f"{path}: network.overlays[0].name: 'none' is reserved (Docker owns the networks "
        "host, bridge, default, none)",
        f"{path}: 3 problems",
    ]


def test_config_check_of_a_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", "/nonexistent/vxnet.toml"]) == 2
    assert "cannot read the file" in capsys.readouterr().err


def test_config_check_with_a_forced_role(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text("[agent]\n")
    assert main(["config", "check", "--role", "master", str(path)]) == 2
    assert main(["config", "check", "--role", "agent", str(path)]) == 0


def test_unknown_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_members_without_a_running_agent_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["members", "--api", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert "vxnet members: http://127.0.0.1:1/v1/members" in err
    assert "is the agent running?" in err


def test_agent_with_a_bad_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.toml"
    path.write_text("[agent]\n[gossip]\nprofile = 'fast'\n")
    assert main(["agent", "-c", str(path)]) == 2
    assert "gossip.profile: 'fast' is not a profile" in capsys.readouterr().err


def test_store_put_with_a_value_that_is_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "--api", "127.0.0.1:1", "put", "overlay/a", "{not json"]) == 2
    assert "VALUE is not JSON" in capsys.readouterr().err


def test_master_state_without_a_running_master_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["master", "state", "--api", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert "is the master running?" in err
    assert "agent" not in err


def test_store_ls_without_a_running_agent(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "--api", "127.0.0.1:1", "ls", "overlay/"]) == 1
    assert "is the agent running?" in capsys.readouterr().err


# --- the tables of records (the answers canned: no agent or master runs) ----------------------

AGENT_STATUS = {
    "agent_ip": "198.18.0.11",
    "vtep": "vtep1024",
    "registration": {"source": "master", "last_error": None},
    "info": {
        "ip": "198.18.0.11",
        "overlays": [
            {
                "info": {"name": "small"},
                "state": {"status": "STATUS_FAILED", "error": "no free /25 subnet left"},
            },
            {
                "info": {"name": "dcos", "subnet": "9.0.0.0/8", "prefix": 24},
                "subnet": "9.0.3.0/24",
                "mesos_bridge": {"name": "m-dcos", "ip": "9.0.3.1/25"},
                "backend": {"vxlan": {"vtep_ip": "44.128.0.4/20", "vtep_mac": "70:b3:d5:80:00:04"}},
                "state": {"status": "STATUS_OK", "since": "a newer agent's field"},
            },
            {"info": {"name": "next"}, "state": {"status": "STATUS_CONFIGURING"}},
        ],
    },
    "objects": [],
}


def test_overlay_status_shows_each_network_by_the_one_status_rule(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("vxnet.cli._overlay.fetch", lambda command, url: AGENT_STATUS)
    assert main(["overlay", "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "agent 198.18.0.11: allocation from master; vtep1024 44.128.0.4/20 70:b3:d5:80:00:04"
    )
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:5]}
    assert rows["small"][:2] == ["FAILED:", "no"]
    assert rows["dcos"] == ["OK", "9.0.3.0/24", "m-dcos", "-"]
    assert rows["next"] == ["CONFIGURING:", "-", "-", "-"]


def test_overlay_status_prints_the_security_warnings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    warned = {**AGENT_STATUS, "security_warnings": ["gossip is not encrypted (no gossip.keys)"]}
    monkeypatch.setattr("vxnet.cli._overlay.fetch", lambda command, url: warned)
    assert main(["overlay", "status"]) == 0
    assert (
        "WARNING: gossip is not encrypted (no gossip.keys)" in capsys.readouterr().out.splitlines()
    )


def test_overlay_status_refuses_a_bad_agent_info(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = {**AGENT_STATUS, "info": {"ip": "198.18.0.11", "overlays": [{"info": {"name": 1}}]}}
    monkeypatch.setattr("vxnet.cli._overlay.fetch", lambda command, url: bad)
    assert main(["overlay", "status"]) == 1
    assert "info.overlays[0].info.name: expected a string, got 1" in capsys.readouterr().err


def test_overlay_usage_reads_usage_records_and_skips_bad_ones(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        {
            "key": "usage/198.18.0.12",
            "value": {"networks": {"dcos": {"cni": {"total": 10, "allocated": 10, "free": 0}}}},
        },
        {"key": "usage/198.18.0.2", "value": {"networks": {"dcos": {"cni": {"total": "x"}}}}},
    ]
    monkeypatch.setattr("vxnet.cli._overlay.fetch", lambda command, url: {"records": records})
    main(["overlay", "usage"])
    out, err = capsys.readouterr()
    assert "198.18.0.12  dcos     cni   10         0     100%  LOW" in out
    assert "usage/198.18.0.2: " in err
    assert "198.18.0.2 " not in out


def test_master_state_refuses_a_bad_state(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = {"network": {"overlays": [{"name": "dcos"}]}, "agents": [{"overlays": []}]}
    monkeypatch.setattr("vxnet.cli._master.fetch", lambda command, url, *tls: state)
    assert main(["master", "state"]) == 1
    assert "agents[0].ip: missing" in capsys.readouterr().err
