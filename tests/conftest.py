"""Shared test set-up: lab tests need root; in CI a missing privilege is an error, not a skip."""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

# CI machines are small and shared: no per-example deadline there, print how to reproduce, and
# the same examples every run (exploration is for development, where examples vary per run).
settings.register_profile(
    "ci",
    deadline=None,
    print_blob=True,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=2000)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if (
        os.environ.get("CI")
        and shutil.which("serf") is None
        and any("serf" in item.keywords for item in items)
    ):
        raise pytest.UsageError("CI must run the serf interop tests: install Debian's serf")
    if os.geteuid() == 0:
        return
    lab_items = [item for item in items if "lab" in item.keywords]
    if lab_items and os.environ.get("CI"):
        raise pytest.UsageError("CI must run the lab tests as root (they build network namespaces)")
    for item in lab_items:
        item.add_marker(pytest.mark.skip(reason="lab tests need root"))


@pytest.fixture(scope="session")
def _dead_labs_removed() -> None:
    """Remove labs left by earlier runs that died; labs of live runs (parallel ones) are kept."""
    from vxnet.sandbox.lab import cleanup

    cleanup()


@pytest.fixture
def lab_ready(_dead_labs_removed: None) -> None:
    """Request this in lab tests: the machine is clear of dead runs' labs."""
