"""The per-VIP bookkeeping after an incremental pass (``PassReport``: VIPs
without backends, the reject cookies' map, the per-VIP metric series) looks
only at the plans the pass replaced; held equal to the same bookkeeping
rebuilt from every plan, over random sequences of changes (LBs that share
a name or have none, VIPs losing and regaining their backends, rejecting
ones, VIPs coming and going)."""

from __future__ import annotations

import dataclasses
import random

import pytest
from prometheus_client import generate_latest

from lbaffd.model.plan import VipPlan
from lbaffd.ops.metrics import Metrics
from lbaffd.ops.report import PassReport
from lbaffd.reconcile.result import VipChange
from tests.unit.test_longrun import plans_of, touch

BASE = plans_of(range(40))


def variant(rng: random.Random, i: int) -> VipPlan:
    """VIP ``i`` in one of its possible states."""
    p = BASE[i]
    name = rng.choice([p.lb.name, p.lb.name, "", "shared-name"])
    lb = dataclasses.replace(p.lb, name=name, reject=rng.random() < 0.3)
    live = p.live_backends if rng.random() < 0.6 else ()
    return dataclasses.replace(p, lb=lb, live_backends=live)


def gauges(metrics: Metrics) -> list[str]:
    return sorted(line for line in generate_latest(metrics.registry).decode().splitlines()
                  if line.startswith(("lbaffd_vips_without_backends", "lbaffd_affinity_entries_",
                                      "lbaffd_vip_refusals_total"))
                  and "_created" not in line)


@pytest.mark.parametrize("seed", range(25))
def test_incremental_bookkeeping_equals_a_rebuild(seed: int) -> None:
    rng = random.Random(seed)
    current = {p.owner: p for p in (variant(rng, i) for i in range(0, 40, 2))}
    inc, full = PassReport(Metrics()), PassReport(Metrics())
    for report in (inc, full):
        touch(report.metrics, tuple(current.values()))
        report.empty_vips(tuple(current.values()))
        report.forget_gone_vips(tuple(current.values()))
    for _ in range(30):
        out: list[VipPlan] = []
        came: list[VipPlan] = []
        for i in rng.sample(range(40), rng.randint(1, 6)):
            owner = BASE[i].owner
            if owner in current:
                out.append(current.pop(owner))
                if rng.random() < 0.7:  # a successor (else the VIP went)
                    came.append(variant(rng, i))
            else:
                came.append(variant(rng, i))
        for p in came:
            current[p.owner] = p
        plans = tuple(current.values())
        change = VipChange(tuple(out), tuple(came))
        for report in (inc, full):
            touch(report.metrics, tuple(came))  # entries and refusals seen for them
        inc.empty_vips(plans, change)
        full.empty_vips(plans)
        gone_inc = inc.forget_gone_vips(plans, change)
        gone_full = full.forget_gone_vips(plans)
        assert gone_inc == gone_full
        assert inc.vip_labels == full.vip_labels
        assert inc._empty_vips == full._empty_vips
        assert inc.vip_by_cookie == full.vip_by_cookie
        assert gauges(inc.metrics) == gauges(full.metrics)
    assert full._empty_vips  # the sequences did leave VIPs without backends
