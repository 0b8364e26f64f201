"""NXT_CT_FLUSH encoding, byte for byte against what ``ovs-ofctl ct-flush``
(OVS 3.1) sends (a fake switch on a unix socket answers the handshake and
the barrier and records the message); which backends a pass flushes."""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import threading
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

from lbaffd.compile.layout import Pipeline, companion
from lbaffd.compile.state import VipCache, compile_state
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import (
    LoadBalancer,
    parse_all,
    parse_endpoint,
    parse_load_balancer,
    parse_vip,
)
from lbaffd.model.plan import VipPlan, vip_owners
from lbaffd.model.records import DatapathRow, LoadBalancerRow
from lbaffd.model.topology import Topology
from lbaffd.openflow.ctflush import CtFlush, CtTuple
from lbaffd.reconcile.ctflush import departures, replaced_departures
from lbaffd.reconcile.incremental import DesiredIndex

ip = ipaddress.ip_address


def ofctl_sends(tmp_path: Path, *args: str) -> bytes:
    """The NXT_CT_FLUSH ``ovs-ofctl -O OpenFlow15 ct-flush`` sends (xid zeroed)."""
    path = str(tmp_path / "sw.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    got: list[bytes] = []

    def switch() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(struct.pack("!BBHI", 6, 0, 8, 1))  # hello, OF1.5
            buf = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while len(buf) >= 8 and len(buf) >= struct.unpack_from("!H", buf, 2)[0]:
                    n = struct.unpack_from("!H", buf, 2)[0]
                    msg, buf = buf[:n], buf[n:]
                    xid = msg[4:8]
                    if msg[1] == 4:  # experimenter
                        got.append(msg[:4] + bytes(4) + msg[8:])
                    elif msg[1] == 20:  # barrier request -> reply
                        conn.sendall(struct.pack("!BBH", 6, 21, 8) + xid)
                    elif msg[1] == 5:  # features request
                        conn.sendall(struct.pack("!BBH", 6, 6, 32) + xid + bytes(24))

    t = threading.Thread(target=switch, daemon=True)
    t.start()
    try:
        subprocess.run(["ovs-ofctl", "-O", "OpenFlow15", "ct-flush", f"unix:{path}", *args],
                       check=True, capture_output=True, timeout=20)
        t.join(5)
    finally:
        srv.close()
    assert len(got) == 1, got
    return got[0]


@pytest.mark.parametrize(("args", "flush"), [
    (("zone=7",), CtFlush(7, 0)),
    (("zone=7", "ct_nw_dst=10.0.0.100,ct_nw_proto=17,ct_tp_dst=53"),
     CtFlush(7, 17, CtTuple(dst=ip("10.0.0.100"), dst_port=53))),
    (("zone=65535", "ct_nw_dst=10.0.0.100,ct_nw_proto=6,ct_tp_dst=80",
      "ct_nw_src=10.0.0.21,ct_tp_src=8080"),
     CtFlush(65535, 6, CtTuple(dst=ip("10.0.0.100"), dst_port=80),
             CtTuple(src=ip("10.0.0.21"), src_port=8080))),
    (("ct_nw_proto=17", "ct_nw_src=10.0.0.21,ct_tp_src=5353"),
     CtFlush(None, 17, reply=CtTuple(src=ip("10.0.0.21"), src_port=5353))),
    (("zone=1", "ct_ipv6_dst=fd00::1,ct_nw_proto=6,ct_tp_dst=80",
      "ct_ipv6_src=fd00::21,ct_tp_src=8080"),
     CtFlush(1, 6, CtTuple(dst=ip("fd00::1"), dst_port=80),
             CtTuple(src=ip("fd00::21"), src_port=8080))),
    (("zone=3", "ct_nw_src=10.0.0.11,ct_nw_dst=10.0.0.100,ct_nw_proto=6,ct_tp_src=4000,"
      "ct_tp_dst=80"),
     CtFlush(3, 6, CtTuple(ip("10.0.0.11"), ip("10.0.0.100"), 4000, 80))),
])
def test_encoding_is_what_ovs_ofctl_sends(tmp_path: Path, args: tuple[str, ...],
                                          flush: CtFlush) -> None:
    assert flush.message().with_xid(0) == ofctl_sends(tmp_path, *args)


# ------------------------------------------------------------ which backends


def plan(backends: str, live: str | None = None, protocol: str = "udp", ct_flush: bool = False,
         datapaths: tuple[int, ...] = (1,), key: str = "10.0.0.100:53") -> VipPlan:
    vip, _ = parse_vip(key, backends, protocol)
    lb = LoadBalancer("lb-uuid", "lb1", (vip,), (), None, ct_flush=ct_flush)
    up = tuple(parse_endpoint(b) for b in (live if live is not None else backends).split(",")
               if b)
    return VipPlan(lb, vip, ("lb-uuid", key), 0xB, datapaths, up)


def test_departures_removed_down_and_kept() -> None:
    old = plan("10.0.0.21:53,10.0.0.22:53,10.0.0.23:53")
    new = plan("10.0.0.21:53,10.0.0.22:53", live="10.0.0.21:53")
    gone = departures([old], [new], Pipeline())
    assert [(d.lb, d.vip, str(d.backend), d.reason) for d in gone] == [
        ("lb1", "10.0.0.100:53", "10.0.0.22:53", "down"),
        ("lb1", "10.0.0.100:53", "10.0.0.23:53", "removed")]
    assert gone[0].flushes == (CtFlush(1, 17, CtTuple(dst=ip("10.0.0.100"), dst_port=53),
                                       CtTuple(src=ip("10.0.0.22"), src_port=53)),)


def test_a_vip_gone_flushes_all_its_backends_in_each_zone_at_once() -> None:
    old = plan("10.0.0.21:53,10.0.0.22:53", datapaths=(1, 0x10002))
    gone = departures([old], [], Pipeline())
    assert {str(d.backend) for d in gone} == {"10.0.0.21:53", "10.0.0.22:53"}
    assert all(d.reason == "removed" for d in gone)
    # one walk of each zone (tunnel key & 0xffff) for the whole VIP, not one per backend
    orig = CtTuple(dst=ip("10.0.0.100"), dst_port=53)
    assert [d.flushes for d in gone] == [(CtFlush(1, 17, orig), CtFlush(2, 17, orig)), ()]


def test_tcp_only_with_ct_flush() -> None:
    old = plan("10.0.0.21:80,10.0.0.22:80", protocol="tcp", key="10.0.0.100:80")
    new = plan("10.0.0.21:80", protocol="tcp", key="10.0.0.100:80")
    assert departures([old], [new], Pipeline()) == []
    old_f = plan("10.0.0.21:80,10.0.0.22:80", protocol="tcp", key="10.0.0.100:80",
                 ct_flush=True)
    new_f = plan("10.0.0.21:80", protocol="tcp", key="10.0.0.100:80", ct_flush=True)
    assert [str(d.backend) for d in departures([old_f], [new_f], Pipeline())] == [
        "10.0.0.22:80"]


def test_nothing_for_added_backends_unchanged_plans_or_unknown_zones() -> None:
    old = plan("10.0.0.21:53")
    assert departures([old], [old], Pipeline()) == []
    assert departures([old], [plan("10.0.0.21:53,10.0.0.22:53")], Pipeline()) == []
    embedded = Pipeline(base=64, mode="embedded", next_table=71)
    assert embedded.zone_of(1) is None
    assert departures([old], [], embedded) == []  # the other controller's zones


def test_companion_flushes_in_its_own_zone() -> None:
    """Next to ovn-controller every balanced connection is committed in
    lbaffd's own zone, whatever the client's datapath."""
    comp = companion(ct_zone=0xFFF1)
    assert comp.zone_of(1) == comp.zone_of(7) == 0xFFF1
    old = plan("10.0.0.21:53,10.0.0.22:53")
    (gone,) = departures([old], [plan("10.0.0.21:53")], comp)
    assert {f.zone for f in gone.flushes} == {0xFFF1}


@pytest.mark.parametrize(("value", "want"), [("true", True), ("TRUE", True), ("yes", False),
                                             ("", False), ("tru\u0435", False)])
def test_ct_flush_option_reads_as_smap_get_bool(value: str, want: bool) -> None:
    row = LoadBalancerRow("u", "n", MappingProxyType({"10.0.0.1:80": "10.0.0.2:80"}),
                          options=MappingProxyType({"ct_flush": value}))
    lb, _ = parse_load_balancer(row, {}, {})
    assert lb is not None and lb.ct_flush is want


def test_ip_only_vip_flushes_every_protocol() -> None:
    old = plan("10.0.0.21,10.0.0.22", key="10.0.0.100")
    (gone,) = departures([old], [plan("10.0.0.21", key="10.0.0.100")], Pipeline())
    assert gone.flushes == (CtFlush(1, 0, CtTuple(dst=ip("10.0.0.100")),
                                    CtTuple(src=ip("10.0.0.22"))),)


def test_an_incremental_pass_flushes_what_a_scan_of_every_plan_finds() -> None:
    """An incremental pass names the plans it replaced (``DesiredIndex.replaced``):
    the departures found from them alone equal those a scan of every plan
    finds, for a health flip and a backend removed."""
    dp = DatapathRow("dp-1", 1, "ls1")
    rows = [LoadBalancerRow(f"u{n}", f"lb{n}", MappingProxyType(
        {f"10.1.0.{n}:53": ",".join(f"10.0.0.{20 + (n + k) % 6}:53" for k in range(3))}),
        protocol="udp" if n % 3 else "tcp", datapaths=("dp-1",)) for n in range(1, 30)]
    lbs, _ = parse_all(rows, {"dp-1": dp}, {})
    topo = Topology((), MappingProxyType({}), attached=frozenset({1}))
    ids = own.allocate_group_ids(vip_owners(lbs, topo), {})
    index = DesiredIndex(compile_state(lbs, topo, ids, Pipeline()), ids)
    cache = VipCache()
    before = tuple(index.plans.values())
    down = replace(topo, down=frozenset({(ip("10.0.0.22"), 53, "udp")}))
    users = {lb.uuid: lb for lb in lbs
             if any(be.ip == ip("10.0.0.22") for v in lb.vips for be in v.backends)}
    assert index.apply(users, down, Pipeline(), cache, 65535, "default", 16,
                       old_topo=topo) is not None
    found = replaced_departures(index.replaced, Pipeline())
    assert found == departures(before, index.plans.values(), Pipeline())
    assert {str(d.backend) for d in found} == {"10.0.0.22:53"} and len(found) >= 5
    before = tuple(index.plans.values())
    (one,) = (lb for lb in lbs if lb.name == "lb1")
    fewer = parse_all([replace(rows[0], vips=MappingProxyType({"10.1.0.1:53": "10.0.0.21:53"}))],
                      {"dp-1": dp}, {})[0][0]
    assert index.apply({one.uuid: fewer}, down, Pipeline(), cache, 65535, "default",
                       16) is not None
    found = replaced_departures(index.replaced, Pipeline())
    assert found == departures(before, index.plans.values(), Pipeline()) != []
