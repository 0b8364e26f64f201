"""LB datapaths from whichever columns the connected SB schema has: Debian's OVN
23.03 schema (``datapaths``, ``datapath_group``) and a newer variant derived at
run time (adds ``ls_datapath_group`` / ``lr_datapath_group``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lbaffd_sandbox.sandbox import Sandbox, newer_sb_schema
from lbaffd_sandbox.topology import build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess, sandbox_in_tmp, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic]

MANAGED = "cookie=0x1baf000000000000/0xffff000000000000"


@pytest.fixture(params=["23.03", "newer"])
def variant(request: pytest.FixtureRequest,
            tmp_path: Path) -> Iterator[tuple[str, Sandbox]]:
    kwargs = {}
    if request.param == "newer":
        kwargs["sb_schema"] = newer_sb_schema(tmp_path / "ovn-sb-newer.ovsschema")
    with sandbox_in_tmp("lbx-schema-", **kwargs) as sb:
        yield request.param, sb


def test_lb_datapaths_from_every_column_the_schema_has(variant: tuple[str, Sandbox]) -> None:
    name, sb = variant
    topo = build_demo_topology(sb, affinity_timeout=None)
    columns = ["datapath_group"] + (["ls_datapath_group"] if name == "newer" else [])
    for i, column in enumerate(columns):
        sb.add_load_balancer(f"lb-{column}", {f"10.0.0.{120 + i}:80": "10.0.0.21:8080"},
                             groups={column: [topo.datapath_uuid]})
    # a router joined to ls1 (patch ports, as northd writes them) with its own LB
    router = sb.add_datapath("lr1", 2, kind="router")
    sb.add_patch("ls1-lr1", topo.datapath_uuid, 10, "lr1-ls1", router, 1)
    router_column = "lr_datapath_group" if name == "newer" else "datapath_group"
    sb.add_load_balancer("lb-router", {"10.0.0.130:80": "10.0.0.22:8080"},
                         groups={router_column: [router]})
    d = LbaffdProcess(sb)
    d.start()
    try:
        for i, column in enumerate(columns):
            vip = f"10.0.0.{120 + i}"
            assert wait_until(
                lambda v=vip: any(f"nw_dst={v}," in f for f in sb.dump_flows(MANAGED))), column
            (r,) = sb.connect("cli1", vip, 80, count=1)
            assert r.ok and r.backend == "be1", (column, r)
        # the router LB is realized on the router's metadata only
        assert wait_until(lambda: any("metadata=0x2,nw_dst=10.0.0.130," in f
                                      for f in sb.dump_flows(MANAGED))), router_column
        assert not any("metadata=0x1,nw_dst=10.0.0.130," in f for f in sb.dump_flows(MANAGED))
        assert d.count("lb_input_rejected") == 0
    finally:
        d.stop()
