"""Test-only fault window (tests/test_faults.py): the deploy waits before a step while the test
injects its fault (kills the deployer, a host, fills a disk...)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def pause_before(step: str) -> None:
    """With DEPLOYER_TEST_PAUSE_BEFORE=<step>:<file> the deploy creates <file> before <step> and
    waits (at most 120 s) until the test removes it. Unset, this is one environment lookup."""
    name, _, flag = os.environ.get("DEPLOYER_TEST_PAUSE_BEFORE", "").partition(":")
    if name != step or not flag:
        return
    Path(flag).touch()
    deadline = time.monotonic() + 120
    while os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.05)
