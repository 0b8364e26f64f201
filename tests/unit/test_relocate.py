"""A VIP whose backends' locality or health alone changed is not compiled
again: its part is derived from the one compiled before (``vip.relocated``,
``vip.derived``, ``VipCache.derive``), and equals what ``compile_vip``
makes, flow for flow and in order, on randomized VIPs in every mode."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from lbaffd.compile.layout import STANDALONE, companion, embedded
from lbaffd.compile.state import VipCache
from lbaffd.compile.vip import compile_vip, derived, relocated
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


def _cached(seed: int, templates: bool,
            change: Callable[[random.Random, list[VipPlan], Topology], Topology]
            ) -> tuple[list[VipPlan], Topology, Topology, VipCache]:
    """The plans of ``seed``, their topology, that topology after ``change``,
    and a cache holding their parts (standalone) under the first."""
    plans, was = _plans(seed)
    now = change(random.Random(seed), plans, was)
    cache = VipCache(templates=templates)
    for plan in plans:
        cache.get(plan, STANDALONE, MAX_IDLE, was)
    return plans, was, now, cache


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
    plans, was, now, cache = _cached(7, templates, _moved)
    relocated_parts = 0
    for plan in plans:
        if cache.derive(plan, plan, p, MAX_IDLE, was, now):
            relocated_parts += 1
            assert cache.get(plan, p, MAX_IDLE, now) == compile_vip(plan, p, MAX_IDLE, now)
    assert relocated_parts >= 20 and 20 <= cache.derived <= relocated_parts
    mac_moved = replace(was, macs={k: "02:00:00:00:ff:ff" for k in was.macs})
    assert not any(cache.derive(plan, plan, p, MAX_IDLE, was, mac_moved) for plan in plans
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


def _flipped(rnd: random.Random, plans: list[VipPlan], topo: Topology) -> Topology:
    """``topo`` with a random fifth of the backends' health checks flipped
    (down ones up, up ones down)."""
    checks = sorted({(be.ip, be.port, p.vip.protocol) for p in plans for be in p.vip.backends},
                    key=str)
    flip = frozenset(rnd.sample(checks, len(checks) // 5))
    return replace(topo, down=topo.down ^ flip)


def _replanned(plans: list[VipPlan], topo: Topology) -> list[VipPlan]:
    ids = {p.owner: p.group_id for p in plans}
    return [replan(p, p.lb, p.vip, p.datapaths, topo, ids, p.distribution, 16) for p in plans]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", sorted(PIPELINES))
def test_part_after_a_health_flip_equals_the_compiled_one(seed: int, mode: str) -> None:
    """Backends going down and coming back, alone and with their locality
    moved too: the derived part is the compiled one; a VIP whose live set
    empties or fills is not derived (its dispatch flows change)."""
    p = PIPELINES[mode]
    plans, was = _plans(seed)
    rnd = random.Random(seed)
    down = _flipped(rnd, plans, was)
    back_and_moved = _moved(rnd, plans, replace(_flipped(rnd, plans, down), down=frozenset()))
    derived_parts = declined = 0
    for before_topo, after_topo in ((was, down), (down, back_and_moved)):
        befores = _replanned(plans, before_topo)
        afters = _replanned(plans, after_topo)
        for before, after in zip(befores, afters, strict=True):
            part = compile_vip(before, p, MAX_IDLE, before_topo)
            out = derived(part, before, after, p, MAX_IDLE, before_topo.local_ips,
                          after_topo.local_ips, after_topo)
            if out is None:
                declined += 1
                assert (not before.live_backends or not after.live_backends
                        or part.parts), after.owner
                continue
            assert out == compile_vip(after, p, MAX_IDLE, after_topo), after.owner
            derived_parts += before.live_backends != after.live_backends
    assert derived_parts >= 20 and declined >= 1  # not vacuous


def test_a_plan_that_differs_beyond_its_live_backends_is_not_derived() -> None:
    plans, was = _plans(5)
    down = _flipped(random.Random(5), plans, was)
    after = next(a for b, a in zip(plans, _replanned(plans, down), strict=True)
                 if b.live_backends != a.live_backends and a.live_backends)
    before = next(b for b in plans if b.owner == after.owner)
    part = compile_vip(before, STANDALONE, MAX_IDLE, was)
    assert derived(part, before, replace(after, group_id=after.group_id + 1), STANDALONE,
                   MAX_IDLE, was.local_ips, down.local_ips, down) is None
    other = replace(after.vip, backends=after.vip.backends[:-1])
    assert derived(part, before, replace(after, vip=other), STANDALONE, MAX_IDLE,
                   was.local_ips, down.local_ips, down) is None


@pytest.mark.parametrize("templates", [False, True])
def test_cache_derives_a_health_flip_instead_of_compiling(templates: bool) -> None:
    p = STANDALONE
    plans, was, down, cache = _cached(9, templates, _flipped)
    flipped = 0
    for before, after in zip(plans, _replanned(plans, down), strict=True):
        if before.live_backends == after.live_backends:
            continue
        flipped += 1
        if cache.derive(before, after, p, MAX_IDLE, was, down):
            assert cache.get(after, p, MAX_IDLE, down) == compile_vip(after, p, MAX_IDLE, down)
    assert flipped >= 20 and cache.derived >= flipped * 2 // 3
