"""Fixtures for tests against real ovsdb-server / ovs-vswitchd."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbaffd_sandbox.sandbox import Sandbox


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, ovs-vswitchd)")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """A private sandbox per test module; short path: unix sockets max 107 chars."""
    _require_root()
    rundir = Path(tempfile.mkdtemp(prefix="lbx-", dir="/tmp"))
    sb = Sandbox(rundir)
    try:
        sb.start()
        yield sb
    finally:
        sb.stop()
        shutil.rmtree(rundir, ignore_errors=True)
