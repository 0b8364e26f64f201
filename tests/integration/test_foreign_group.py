"""A group lbaffd did not write, too large for OpenFlow, on the real switch.

Another client's select group of 1200 buckets (added with ``ovs-ofctl
add-group`` + ``insert-buckets``, as such a client would) installs fine on
OVS 3.1, but its group-desc entry is ~76 KiB: OVS reports it with every
16-bit length wrapped (the message claims 0x2c48 bytes and 65536 more
follow).  lbaffd used to lose the message framing there and disconnect for
good (``openflow_disconnected error='bad OpenFlow length 0'``, on every
reconnect).  Now the entry is skipped and reported and lbaffd stays in sync.

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

from lbaffd_sandbox.sandbox import Sandbox
from lbaffd_sandbox.topology import Topology, build_demo_topology
from tests.integration.lbaffd_proc import LbaffdProcess, free_port, metric, scrape, wait_until

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
    try:
        for start in range(1, BUCKETS, 200):
            buckets = ",".join(foreign_bucket(i) for i in range(start, min(BUCKETS,
                                                                            start + 200)))
            sandbox.ofctl("insert-buckets", "br-int",
                          f"group_id={gid},command_bucket_id=last,{buckets}")
        mark = daemon.mark()
        skipped = daemon.wait_event("openflow_entry_skipped", after=mark, group_id=gid,
                                    buckets=BUCKETS, kind="group")
        assert skipped["bytes"] > 0xFFFF
        # the audit that met it completed, in sync, and the next ones too
        after = daemon.wait_pass(skipped["_index"])
        daemon.wait_pass(after["_index"])
        assert not [e for e in daemon.events()[mark:] if e.get("event") in (
            "openflow_disconnected", "reconcile_failed")]
        _, text = scrape(daemon)
        assert metric(text, "lbaffd_openflow_entries_skipped_total", kind="group") >= 2
        # still programming the switch: a backend removed is removed, traffic flows
        sandbox.set_lb_vips(topo.lb_uuid, {f"{VIP}:80": "10.0.0.21:8080"})
        assert wait_until(lambda: not any("10.0.0.22:8080" in g for g in sandbox.dump_groups()),
                          what="the removed backend gone from lbaffd's group")
        results = sandbox.connect("cli1", VIP, 80, count=3)
        assert [r.backend for r in results] == ["be1"] * 3, results
        assert daemon.count("openflow_entry_skipped") == 1  # said once, not every audit
    finally:
        sandbox.ofctl("del-groups", "br-int", f"group_id={gid}")
