"""A VIP whose backends' locality alone changed is not compiled again: its
part is derived from the one compiled before (``vip.relocated``,
``VipCache.relocate``), and equals what ``compile_vip`` makes, flow for
flow and in order, on randomized VIPs in every mode."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from lbaffd.compile.layout import STANDALONE, companion, embedded
from lbaffd.compile.state import VipCache
from lbaffd.compile.vip import compile_vip, relocated
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import IPAddress
from lbaffd.model.plan import VipPlan, make_plan, plan_vips, replan, vip_owners
from lbaffd.model.topology import Topology
from tests.unit.test_mode_layouts import _topology
from tests.unit.test_templates import random_lbs

PIPELINES = {"standalone": STANDALONE, "embedded": embedded(40, 70), "companion": companion()}
MAX_IDLE = 65535


def _plans(seed: int) -> tuple[list[VipPlan], Topology]:
    lbs, base = random_lbs(random.Random(seed), 150)
    topo = _topology(seed, base)
    ids = own.allocate_group_ids(vip_owners(lbs, topo), {})
    planned, _ = plan_vips(lbs, topo)
    return [make_plan(lb, vip, dps, topo, ids, "default", 16)
            for lb, vip, dps in planned], topo


def _moved(rnd: random.Random, plans: list[VipPlan], topo: Topology) -> Topology:
    """``topo`` with a random third of the backends' locality flipped."""
    addrs = sorted({be.ip for p in plans for be in p.live_backends}, key=str)
    flip: frozenset[IPAddress] = frozenset(rnd.sample(addrs, len(addrs) // 3))
    return replace(topo, local_ips=topo.local_ips ^ flip)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", sorted(PIPELINES))
def test_relocated_part_equals_the_compiled_one(seed: int, mode: str) -> None:
    p = PIPELINES[mode]
    plans, was = _plans(seed)
    now = _moved(random.Random(seed), plans, was)
    hairpins_changed = 0
    for plan in plans:
        before = compile_vip(plan, p, MAX_IDLE, was)
        after = compile_vip(plan, p, MAX_IDLE, now)
        assert relocated(before, plan, p, was.local_ips, now.local_ips) == after, plan.owner
        hairpins_changed += before.flow_ids != after.flow_ids
    assert hairpins_changed >= 20  # not vacuous: many VIPs' hairpin flows moved


@pytest.mark.parametrize("templates", [False, True])
def test_cache_relocates_instead_of_compiling(templates: bool) -> None:
    """Through the cache (parts filled from templates too): after
    ``relocate`` the part under the new topology is there without a compile,
    equal to the compiled one; a MAC change is not a relocation."""
    p = STANDALONE
    plans, was = _plans(7)
    now = _moved(random.Random(7), plans, was)
    cache = VipCache(templates=templates)
    for plan in plans:
        cache.get(plan, p, MAX_IDLE, was)
    relocated_parts = 0
    for plan in plans:
        if cache.relocate(plan, p, MAX_IDLE, was, now):
            relocated_parts += 1
            assert cache.get(plan, p, MAX_IDLE, now) == compile_vip(plan, p, MAX_IDLE, now)
    assert relocated_parts >= 20 and cache.relocated == relocated_parts
    mac_moved = replace(was, macs={k: "02:00:00:00:ff:ff" for k in was.macs})
    assert not any(cache.relocate(plan, p, MAX_IDLE, was, mac_moved) for plan in plans
                   if any((tk, be.ip) in was.macs for tk in plan.datapaths
                          for be in plan.vip.backends))


def test_replan_keeps_the_plan_unless_it_would_change() -> None:
    plans, was = _plans(3)
    ids = {p.owner: p.group_id for p in plans}
    now = _moved(random.Random(3), plans, was)
    for plan in plans:
        again = replan(plan, plan.lb, plan.vip, plan.datapaths, now, ids, "default", 16)
        assert again is plan
    plan = next(p for p in plans if p.live_backends)
    be = plan.live_backends[0]
    down = replace(now, down=now.down | {(be.ip, be.port, plan.vip.protocol)})
    again = replan(plan, plan.lb, plan.vip, plan.datapaths, down, ids, "default", 16)
    assert again is not plan and be not in again.live_backends
    assert again == make_plan(plan.lb, plan.vip, plan.datapaths, down, ids, "default", 16)
