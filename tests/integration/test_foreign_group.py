"""A group lbaffd did not write, too large for OpenFlow, on the real switch.

Another client's select group of 1200 buckets (added with ``ovs-ofctl
add-group`` + ``insert-buckets``, as such a client would) installs fine on
OVS 3.1, but its group-desc entry is ~76 KiB: OVS reports it with every
16-bit length wrapped (the message claims 0x2c48 bytes and 65536 more
follow).  lbaffd used to lose the message framing there and disconnect for
good (``openflow_disconnected error='bad OpenFlow length 0'``, on every
reconnect).  Now the daemon never asks group-desc for such a group (groups
are listed by their stats first), and a channel that meets the wrapped reply
anyway skips the entry, reports it and keeps its framing.

What the switch does around it (seen here, OVS 3.1): ``ofpmp_postappend``
moves the big entry into a message of its own, and when another group
follows it in the dump ovs-vswitchd aborts (``assertion start_ofs <=
UINT16_MAX``) - for any client that dumps groups, ovs-ofctl included.  Groups
are dumped in the order of OVS's group hash map, not by id: with group 200
beside the big group 100, 200 came first and the dump worked; with group 50,
100 came first and ovs-vswitchd died.  So the test picks a group id that the
switch dumps last (probing with a one-bucket group) before growing it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lbaffd.openflow import oskenfallback
from lbaffd.openflow.channel import OpenFlowChannel
from lbaffd.openflow.groupdesc import iter_group_entries
from lbaffd.openflow.replies import SkippedEntry
from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import Topology, build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.traffic]

BUCKETS = 1200
VIP = "10.0.0.100"


@pytest.fixture(scope="module")
def topo(sandbox: Sandbox) -> Topology:
    return build_demo_topology(sandbox, affinity_timeout=30)


@pytest.fixture(scope="module")
def daemon(sandbox: Sandbox, topo: Topology) -> Iterator[LbaffdProcess]:
    proc = LbaffdProcess(sandbox, "--audit-interval", "1",
                         "--metrics-address", f"127.0.0.1:{free_port()}")
    proc.start()
    yield proc
    proc.stop()


def foreign_bucket(i: int) -> str:
    return (f"bucket=bucket_id:{i},weight:100,actions=ct(commit,table=2,"
            f"zone=NXM_NX_REG13[0..15],nat(dst=172.{16 + i // 65536 % 16}.{i // 256 % 256}."
            f"{i % 256}:8080))")


def group_order(sb: Sandbox) -> list[int]:
    """Group ids in the order the switch dumps them (ovs-ofctl does not sort)."""
    out = sb.ofctl("dump-groups", "br-int")
    return [int(line.split("group_id=", 1)[1].split(",", 1)[0])
            for line in out.splitlines() if "group_id=" in line]


def add_last_group(sb: Sandbox) -> int:
    """A one-bucket foreign group whose id the switch dumps after all others."""
    for gid in range(100, 400):
        sb.ofctl("add-group", "br-int",
                 f"group_id={gid},type=select,selection_method=dp_hash,{foreign_bucket(0)}")
        if group_order(sb)[-1] == gid:
            return gid
        sb.ofctl("del-groups", "br-int", f"group_id={gid}")
    raise AssertionError("no group id is dumped last")


def test_foreign_group_too_large_to_report_is_skipped(sandbox: Sandbox, topo: Topology,
                                                      daemon: LbaffdProcess) -> None:
    assert wait_until(lambda: any("10.0.0.22:8080" in g for g in sandbox.dump_groups()),
                      what="lbaffd's group for the VIP")
    gid = add_last_group(sandbox)
    mark = daemon.mark()
    try:
        for start in range(1, BUCKETS, 200):
            buckets = ",".join(foreign_bucket(i) for i in range(start, min(BUCKETS,
                                                                            start + 200)))
            sandbox.ofctl("insert-buckets", "br-int",
                          f"group_id={gid},command_bucket_id=last,{buckets}")
        # the daemon never asks group-desc for it (it lists groups by their
        # stats first and reads its own one by one: test_foreign_groups.py)...
        seen = daemon.wait_event("foreign_groups_skipped", after=mark)
        assert f"{gid:#x}" in seen["groups"]  # (logged once it grew past 250 buckets)
        after = daemon.wait_pass(daemon.mark())  # passes after the group is whole
        daemon.wait_pass(after["_index"])
        assert not [e for e in daemon.events()[mark:] if e.get("event") in (
            "openflow_disconnected", "reconcile_failed")]
        # ...and a channel that does meet the wrapped reply (a plain dump of
        # every group, as any client may do) skips the entry, reports it and
        # keeps its framing: the next request on it is answered
        skipped: list[SkippedEntry] = []
        ch = OpenFlowChannel(f"unix:{sandbox.mgmt_socket}", on_skipped=skipped.append)
        ch.connect(5)
        try:
            replies = ch.request(oskenfallback.group_desc_request())
            ids = {g for r in replies for _, g, _ in iter_group_entries(r.raw)}
            assert gid not in ids and ids  # lbaffd's groups are there, the big one left out
            assert [(e.group_id, e.buckets, e.kind) for e in skipped] == [
                (gid, BUCKETS, "group")]
            assert skipped[0].size > 0xFFFF
            ch.barrier()
        finally:
            ch.close()
        # still programming the switch: a backend removed is removed, traffic flows
        sandbox.set_lb_vips(topo.lb_uuid, {f"{VIP}:80": "10.0.0.21:8080"})
        assert wait_until(lambda: not any("10.0.0.22:8080" in g for g in sandbox.dump_groups()),
                          what="the removed backend gone from lbaffd's group")
        results = sandbox.connect("cli1", VIP, 80, count=3)
        assert [r.backend for r in results] == ["be1"] * 3, results
    finally:
        sandbox.ofctl("del-groups", "br-int", f"group_id={gid}")
