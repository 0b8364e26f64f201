"""``readback.DecodeCache`` across the kinds of dump a daemon alternates:
full passes (one dump of all flows), audits (a dump per cookie slice), and a
switch that lost every flow (ovs-vswitchd restarted) and gets them back.

Each test holds the cache's output equal to a fresh cache's (decoding
everything) and counts what it had to decode (``decoded``).
"""

from __future__ import annotations

from lbaffd.compile.layout import REG_VIP_ID
from lbaffd.model import ownership as own
from lbaffd.openflow import messages, packed
from lbaffd.openflow.flowspec import FlowSpec, Match, Output, SetField
from lbaffd.reconcile.readback import DecodeCache
from tests.fakeswitch import FakeSwitch

SLICES = (0, 1, 17, own.AUDIT_CHUNKS - 1)
PER_SLICE = 25


def cookie(chunk: int, i: int) -> int:
    return own.MANAGED_COOKIE | (chunk << own.CHUNK_SHIFT) | (i + 1)


def flows(group: int = own.GROUP_ID_MIN + 7) -> list[FlowSpec]:
    """Flows in four audit slices; the first of each slice names a VIP group
    (what ``group_ids`` recovers after a restart)."""
    out = []
    for c in SLICES:
        for i in range(PER_SLICE):
            actions = ((SetField(REG_VIP_ID, group), Output(1)) if i == 0
                       else (Output(i + 1),))
            out.append(FlowSpec(1, 100, Match.of(eth_type=0x800, ipv4_dst=f"10.{c}.0.{i}"),
                                actions, cookie(c, i)))
    return out


def switch_with(specs: list[FlowSpec]) -> FakeSwitch:
    fake = FakeSwitch()
    fake.bundle([messages.flow_add(f) for f in specs])
    return fake


def full(cache: DecodeCache, fake: FakeSwitch) -> list[bytes]:
    return sorted(cache.flows(fake.dump_flow_desc(own.MANAGED_COOKIE, own.MAGIC_MASK)))


def sliced(cache: DecodeCache, fake: FakeSwitch, chunk: int) -> list[bytes]:
    return sorted(cache.flows(
        fake.dump_flow_desc(own.MANAGED_COOKIE | (chunk << own.CHUNK_SHIFT),
                            own.MAGIC_MASK | own.CHUNK_MASK), chunk))


def test_audits_and_full_passes_in_turn_decode_each_flow_once() -> None:
    fake = switch_with(flows())
    cache = DecodeCache()
    first = full(cache, fake)
    assert cache.decoded == len(first) == len(SLICES) * PER_SLICE
    for _ in range(2):  # audit, full pass, audit, full pass
        for c in SLICES:
            assert sliced(cache, fake, c) == sliced(DecodeCache(), fake, c)
            assert cache.decoded == 0
        assert full(cache, fake) == first
        assert cache.decoded == 0


def test_a_flow_changed_between_kinds_of_dump_is_decoded_and_the_old_one_gone() -> None:
    specs = flows()
    fake = switch_with(specs)
    cache = DecodeCache()
    full(cache, fake)
    changed = FlowSpec(1, 100, specs[1].match, (Output(99),), specs[1].cookie)
    fake.bundle([messages.flow_add(changed)])  # (same match: replaces the flow)
    got = sliced(cache, fake, SLICES[0])
    assert cache.decoded == 1
    assert got == sliced(DecodeCache(), fake, SLICES[0])
    assert full(cache, fake) == full(DecodeCache(), fake)
    assert cache.decoded == 0


def test_a_switch_that_lost_its_flows_gets_them_back_without_decoding() -> None:
    specs = flows()
    fake = switch_with(specs)
    cache = DecodeCache()
    first = full(cache, fake)
    ids = cache.group_ids()
    assert set(ids.values()) == {own.GROUP_ID_MIN + 7} and len(ids) == len(SLICES)

    empty = FakeSwitch()  # ovs-vswitchd restarted
    assert full(cache, empty) == []
    assert cache.group_ids() == {}  # the switch holds none: memory decides
    refilled = switch_with(specs)  # the pass installed them again
    assert full(cache, refilled) == first
    assert cache.decoded == 0
    assert cache.group_ids() == ids


def test_after_a_loss_an_audit_finds_the_flows_too() -> None:
    specs = flows()
    fake = switch_with(specs)
    cache = DecodeCache()
    full(cache, fake)
    full(cache, FakeSwitch())
    for c in SLICES:
        sliced(cache, fake, c)
        assert cache.decoded == 0


def test_what_was_lost_is_kept_for_one_empty_dump_only() -> None:
    """A bridge that stays without lbaffd's flows (no load balancers left)
    does not keep the old entries for ever."""
    fake = switch_with(flows())
    cache = DecodeCache()
    full(cache, fake)
    full(cache, FakeSwitch())
    full(cache, FakeSwitch())
    full(cache, fake)
    assert cache.decoded == len(SLICES) * PER_SLICE


def test_an_audit_takes_entries_equal_to_the_desired_flows_without_decoding() -> None:
    """The first audit after a cold start meets every flow for the first
    time: each entry whose bytes are its desired flow's is that flow (the
    very object), only an entry that differs is decoded, and the result is
    what decoding everything gives."""
    specs = flows()
    fake = switch_with(specs)
    desired = {packed.flow_id(b): b for b in map(packed.pack_flow, specs)}
    cache = DecodeCache()
    for c in SLICES:
        got = cache.flows(fake.dump_flow_desc(own.MANAGED_COOKIE | (c << own.CHUNK_SHIFT),
                                              own.MAGIC_MASK | own.CHUNK_MASK), c,
                          desired=desired)
        assert cache.decoded == 0
        assert sorted(got) == sliced(DecodeCache(), fake, c)
        assert all(desired[packed.flow_id(b)] is b for b in got)
    changed = FlowSpec(1, 100, specs[1].match, (Output(99),), specs[1].cookie)
    fake.bundle([messages.flow_add(changed)])
    fresh = DecodeCache()
    got = fresh.flows(fake.dump_flow_desc(own.MANAGED_COOKIE, own.MAGIC_MASK), desired=desired)
    assert fresh.decoded == 1
    assert sorted(got) == full(DecodeCache(), fake)
    decoding = DecodeCache()
    full(decoding, fake)
    assert fresh.group_ids() == decoding.group_ids() != {}  # (a full dump's group ids too)
