"""Every mode compiles to the very flows and groups it compiled to before the
modes became descriptions (``layout.ModeLayout``): a varied input (the
randomized LBs of ``test_templates``, on ports that are clients and
backends, with OVN's output stage known) compiled in standalone, embedded
and companion mode, with and without templates, against bodies recorded
from the branch-per-mode code (``tests/unit/mode_golden.json``: a digest per mode,
made by ``python -m tests.unit.test_mode_layouts``)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from lbaffd.compile.entry import ENTRIES, PORT_STAGES
from lbaffd.compile.layout import (
    MODE_LAYOUTS,
    MODES,
    STANDALONE,
    Entry,
    Exit,
    Pipeline,
    PortStage,
    Static,
    companion,
    embedded,
)
from lbaffd.compile.stages import EXITS, STATIC, FlowBuilder, exit_actions, static_flows
from lbaffd.compile.state import CompiledFlow, VipCache, collect, compile_stream
from lbaffd.model import ownership as own
from lbaffd.model.ovnlayout import OvnLayout
from lbaffd.model.plan import vip_owners
from lbaffd.model.topology import LocalPort, Topology
from lbaffd.openflow.flowspec import Match
from lbaffd.openflow.packed import cookie
from tests.unit.test_templates import LS, LS2, random_lbs

GOLDEN = Path(__file__).with_name("mode_golden.json")
PIPELINES: dict[str, Pipeline] = {
    "standalone": STANDALONE,
    "standalone-100": Pipeline(base=100),
    "embedded": embedded(40, 70),
    "embedded-low": embedded(1, 0),
    "companion": companion(),
    "companion-150": companion(150, 0xFFF2),
}
SEEDS = (0, 1)


def _topology(seed: int, lbs_topo: Topology) -> Topology:
    """The random LBs' topology with its ports given addresses (some are
    backends: hairpin in every mode) and OVN's output flows (companion's
    reply hooks; ignored by the other modes)."""
    rnd = random.Random(seed)
    local = sorted(lbs_topo.local_ips, key=int)
    ports = (LocalPort(11, "c1", LS, frozenset({ipaddress.ip_address("10.0.0.200")})),
             LocalPort(12, "c2", LS2, frozenset()),
             LocalPort(13, "be1", LS, frozenset(rnd.sample(local, min(3, len(local))))),
             LocalPort(14, "be2", LS2, frozenset(local[:1])))
    layout = OvnLayout(65, ((11, Match.of(metadata=1, reg15=2)),
                            (12, Match.of(metadata=3, reg15=2)),
                            (13, Match.of(metadata=1, reg15=3))))
    return replace(lbs_topo, local_ports=ports, ovn=layout)


def _digest(data: object) -> str:
    return hashlib.sha256(repr(data).encode()).hexdigest()


def compiled(seed: int, p: Pipeline, templates: bool) -> dict[str, object]:
    """How many flows and groups, and digests of their bodies (sorted) and of
    the compile stream (in order)."""
    lbs, topo = random_lbs(random.Random(seed), 120)
    topo = _topology(seed, topo)
    ids = own.allocate_group_ids(vip_owners(lbs, topo), {})
    items, desired = collect(compile_stream(lbs, topo, ids, p,
                                            cache=VipCache(templates=templates)))
    static = own.owner_cookie(own.GLOBAL_OWNER)
    defaults = sorted(i for i in items if isinstance(i, CompiledFlow) and cookie(i.body) == static)
    rest = [i for i in items if not (isinstance(i, CompiledFlow) and cookie(i.body) == static)]
    flows, groups = desired.state.flows.values(), desired.state.groups.values()
    return {"counts": [len(flows), len(groups), len(items)],
            "flows": _digest(sorted(flows)), "groups": _digest(sorted(groups)),
            "stream": _digest((defaults, rest))}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_modes_compile_byte_identical(name: str, seed: int) -> None:
    golden = json.loads(GOLDEN.read_text())[f"{name}/{seed}"]
    flows, groups, _ = golden["counts"]
    assert flows > 1000 and groups > 100  # a varied input, not a toy
    for templates in (False, True):
        assert compiled(seed, PIPELINES[name], templates) == golden, templates


def test_every_description_part_has_its_builder() -> None:
    """A mode names its parts; each name has exactly one builder."""
    assert set(STATIC) == set(Static) and set(PORT_STAGES) == set(PortStage)
    assert set(ENTRIES) == set(Entry) and set(EXITS) == set(Exit)
    assert set(MODE_LAYOUTS) == set(MODES)


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_default_flows_stay_in_the_modes_tables(name: str) -> None:
    """The static stages a layout lists write only to tables it has (and
    companion's reply stage hands back to OVN's output table)."""
    p = PIPELINES[name]
    b = FlowBuilder()
    static_flows(b, p, output_table=65)
    tables = {spec.table for spec in b.flows.values()}
    assert tables <= set(p.tables) and p.dispatch in tables and p.hairpin in tables
    exits = {a for spec in b.flows.values() for a in spec.actions}
    assert set(exit_actions(p)) <= exits  # packets leave the way the layout says


def test_zones_follow_the_layout() -> None:
    assert STANDALONE.zone_of(0x10005) == 5
    assert embedded(40, 70).zone_of(5) is None
    assert companion(ct_zone=0xFFF2).zone_of(5) == 0xFFF2


def record() -> None:
    """Write the fixture from the code as it is (run on the commit before a
    change to the stages or the layouts)."""
    out = {f"{name}/{seed}": compiled(seed, p, False)
           for name, p in PIPELINES.items() for seed in SEEDS}
    GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    record()
