"""Fixtures for tests against real ovsdb-server / ovs-vswitchd."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lbaffd.openflow.channel import OpenFlowChannel
from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import Topology
from tests.integration.lbaffd_proc import LbaffdProcess, sandbox_in_tmp


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """A private sandbox per test module."""
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, ovs-vswitchd)")
    with sandbox_in_tmp() as sb:
        yield sb


@pytest.fixture(scope="module")
def daemon(sandbox: Sandbox, topo: Topology) -> Iterator[LbaffdProcess]:
    """lbaffd with default flags on the module's ``topo``; modules that need
    other flags define their own ``daemon``."""
    proc = LbaffdProcess(sandbox)
    try:
        proc.start()
        yield proc
    finally:  # also when it never synced: no daemon outlives its module
        proc.stop()


@pytest.fixture
def channel(sandbox: Sandbox) -> Iterator[OpenFlowChannel]:
    """An OpenFlow channel to the module's br-int, emptied of flows and groups."""
    sandbox.ofctl("del-flows", "br-int")
    sandbox.ofctl("del-groups", "br-int")
    ch = OpenFlowChannel(f"unix:{sandbox.mgmt_socket}")
    ch.connect(5)
    yield ch
    ch.close()
