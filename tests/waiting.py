"""Waiting for a condition in tests that watch real processes (importable from every test dir:
``tests/`` is on ``sys.path`` through its ``conftest.py``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable


def wait_until(
    what: str, check: Callable[[], bool], timeout: float = 30.0, poll: float = 0.05
) -> float:
    """Poll ``check`` until it is true; the seconds that took. Fails the test after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)
    return time.monotonic() - start
