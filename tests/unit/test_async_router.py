"""``packetin.router.AsyncRouter``: what the switch says on its own, sorted.

The messages are the bytes OVS sends (OF1.5 ``ofp_flow_removed`` and
``ofp_packet_in``, built here with lbaffd's own match encoder); os-ken parses
them on the way in, as it does on the reader thread."""

from __future__ import annotations

import struct

from os_ken.lib.packet import ethernet, in_proto, ipv4, ipv6, packet, tcp
from os_ken.lib.packet import icmpv6 as icmp6

from lbaffd.compile.stages import vip_mac
from lbaffd.model import ownership as own
from lbaffd.openflow.flowspec import FlowSpec, Match
from lbaffd.openflow.oxm import encode_match
from lbaffd.openflow.replies import Reply
from lbaffd.packetin.reject import Refuser
from lbaffd.packetin.router import OFPT_FLOW_REMOVED, OFPT_PACKET_IN, AsyncRouter
from lbaffd.reconcile.entries import ExpectedDeletes
from lbaffd.reconcile.longidle import RemovedEntry

HEADER = struct.Struct("!BBHI")
FLOW_REMOVED = struct.Struct("!BBHHHQ")  # table, reason, priority, idle, hard, cookie
PACKET_IN = struct.Struct("!IHBBQ")  # buffer id, total len, reason, table, cookie
EMPTY_STATS = struct.pack("!HH4x", 0, 4)  # ofp_stats with no OXS field, padded to 8
OFPRR_IDLE_TIMEOUT, OFPRR_DELETE = 0, 2
REJECT_COOKIE = own.MANAGED_COOKIE | 0x42


def message(msg_type: int, body: bytes, xid: int = 0) -> Reply:
    return Reply(msg_type, xid, HEADER.pack(6, msg_type, HEADER.size + len(body), xid) + body)


def flow_removed(cookie: int, reason: int, match: Match, table: int = 3,
                 priority: int = 100, idle: int = 0) -> Reply:
    return message(OFPT_FLOW_REMOVED, FLOW_REMOVED.pack(table, reason, priority, idle, 0, cookie)
                   + encode_match(match) + EMPTY_STATS)


def packet_in(cookie: int, in_port: int, frame: bytes) -> Reply:
    return message(OFPT_PACKET_IN, PACKET_IN.pack(0xFFFFFFFF, len(frame), 1, 4, cookie)
                   + encode_match(Match.of(in_port=in_port)) + bytes(2) + frame)


class Seen:
    """What the router handed on."""

    def __init__(self) -> None:
        self.entries: list[RemovedEntry] = []
        self.flushed = self.foreign = 0
        self.sent: list[tuple[int, bytes]] = []
        self.refusals: list[tuple[str, str, str]] = []

    def router(self, expected: ExpectedDeletes | None = None) -> AsyncRouter:
        refuser = Refuser(lambda port, data: self.sent.append((port, data)),
                          lambda c: ("lb0", "10.0.0.100:80") if c == REJECT_COOKIE else None,
                          lambda lb, vip, kind: self.refusals.append((lb, vip, kind)))
        return AsyncRouter(refuser, lambda port, data: self.sent.append((port, data)),
                           expected or ExpectedDeletes(), on_entry=self.entries.append,
                           on_flushed=self.flushed_once, on_foreign=self.foreign_once)

    def flushed_once(self) -> None:
        self.flushed += 1

    def foreign_once(self) -> None:
        self.foreign += 1


ENTRY_MATCH = Match.of(eth_type=0x0800, ipv4_src="10.0.1.5", metadata=7, reg9=0x1234)


def test_a_learned_entry_that_timed_out_goes_to_the_worker_as_an_entry() -> None:
    seen = Seen()
    cookie = own.learned_cookie(("lb-uuid", "10.0.0.100:80", "10.0.2.1:8080"))
    seen.router().on_async(flow_removed(cookie, OFPRR_IDLE_TIMEOUT, ENTRY_MATCH, idle=300))
    assert [(e.cookie, e.table, e.idle_timeout, e.reason) for e in seen.entries] == [
        (cookie, 3, 300, OFPRR_IDLE_TIMEOUT)]
    assert seen.entries[0].match == ENTRY_MATCH
    assert (seen.flushed, seen.foreign, seen.sent) == (0, 0, [])


def test_a_flow_lbaffd_deleted_itself_is_no_news() -> None:
    seen = Seen()
    expected = ExpectedDeletes()
    flow = FlowSpec(4, 200, ENTRY_MATCH, (), own.MANAGED_COOKIE | 7)
    expected.expect([flow])
    seen.router(expected).on_async(flow_removed(flow.cookie, OFPRR_DELETE, flow.match,
                                                table=4, priority=200))
    assert (seen.entries, seen.flushed, seen.foreign) == ([], 0, 0)


def test_a_flow_of_lbaffd_deleted_by_someone_else_is_a_flush_and_foreign() -> None:
    """ovn-controller's flush in companion mode: the worker hears of both
    (the flush recovery and an audit that repairs at once)."""
    seen = Seen()
    expected = ExpectedDeletes()
    mine = FlowSpec(4, 200, ENTRY_MATCH, (), own.MANAGED_COOKIE | 7)
    expected.expect([mine])
    other = Match.of(eth_type=0x0800, metadata=8)  # not the flow lbaffd expects to delete
    seen.router(expected).on_async(flow_removed(mine.cookie, OFPRR_DELETE, other, 4, 200))
    assert (seen.entries, seen.flushed, seen.foreign) == ([], 1, 1)


def syn_to_vip() -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("02:00:00:00:00:01", "02:00:00:00:00:05", 0x0800))
    pkt.add_protocol(ipv4.ipv4(src="10.0.1.5", dst="10.0.0.100", proto=in_proto.IPPROTO_TCP))
    pkt.add_protocol(tcp.tcp(src_port=40000, dst_port=80, seq=1000, bits=tcp.TCP_SYN))
    pkt.serialize()
    return bytes(pkt.data)


def test_a_reject_flows_packet_in_is_answered_with_a_reset_on_its_port() -> None:
    seen = Seen()
    seen.router().on_async(packet_in(REJECT_COOKIE, 5, syn_to_vip()))
    assert [port for port, _ in seen.sent] == [5]
    answer = packet.Packet(seen.sent[0][1])
    rst = answer.get_protocol(tcp.tcp)
    assert rst is not None and rst.has_flags(tcp.TCP_RST) and rst.src_port == 80
    assert seen.refusals == [("lb0", "10.0.0.100:80", "tcp_rst")]
    assert (seen.entries, seen.flushed, seen.foreign) == ([], 0, 0)


def solicitation(target: str) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("33:33:ff:00:01:00", "02:00:00:00:00:05", 0x86DD))
    pkt.add_protocol(ipv6.ipv6(src="fd00::5", dst="ff02::1:ff00:100", nxt=in_proto.IPPROTO_ICMPV6,
                               hop_limit=255))
    pkt.add_protocol(icmp6.icmpv6(type_=icmp6.ND_NEIGHBOR_SOLICIT, data=icmp6.nd_neighbor(
        dst=target, option=icmp6.nd_option_sla(hw_src="02:00:00:00:00:05"))))
    pkt.serialize()
    return bytes(pkt.data)


def test_a_neighbor_solicitation_for_a_vip_is_advertised_with_the_vip_mac() -> None:
    seen = Seen()
    seen.router().on_async(packet_in(own.MANAGED_COOKIE | 9, 6, solicitation("fd00::100")))
    assert [port for port, _ in seen.sent] == [6]
    na = packet.Packet(seen.sent[0][1]).get_protocol(icmp6.icmpv6)
    assert na is not None and na.type_ == icmp6.ND_NEIGHBOR_ADVERT
    assert na.data.dst == "fd00::100"
    eth = packet.Packet(seen.sent[0][1]).get_protocol(ethernet.ethernet)
    assert eth is not None and eth.src == vip_mac("fd00::100")


def test_a_packet_in_of_another_controllers_flow_is_left_alone() -> None:
    seen = Seen()
    seen.router().on_async(packet_in(0x1234, 6, solicitation("fd00::100")))
    seen.router().on_async(packet_in(0x1234, 5, syn_to_vip()))
    assert (seen.sent, seen.refusals, seen.foreign, seen.flushed) == ([], [], 0, 0)
