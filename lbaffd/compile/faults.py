"""Test-only fault injection: make the real switch refuse chosen VIPs.

Pass isolation (``isolation``) must hold for refusals lbaffd cannot provoke
with valid input against a healthy OVS.  ``LBAFFD_TEST_FAULTS`` (read once,
at import; empty in production) names what to break, and the switch's own
answer is then real:

- ``refuse-group=LB``: the VIPs of LB get a bucket id above OpenFlow 1.5's
  ``OFPG15_BUCKET_MAX`` (0xffffff00), which ovs-vswitchd refuses when it
  decodes the group mod (``OFPGMFC_BAD_BUCKET``);
- ``bad-match=LB``: each VIP of LB gets one more flow, matching ``pbb_isid``,
  an OXM field OVS has no ``mf_field`` for (``OFPBMC_BAD_FIELD``);
- ``group-limit=BYTES``: split groups above BYTES instead of the group-desc
  limit (an oversized VIP then does not fit in ``groupsplit.MAX_PARTS``).

Several are separated by commas.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from lbaffd.compile import groupsplit
from lbaffd.compile.layout import Pipeline
from lbaffd.model import ownership as own
from lbaffd.openflow.flowspec import FlowSpec, Match
from lbaffd.openflow.packed import flow_id, pack_flow, pack_group, unpack_group

if TYPE_CHECKING:
    from lbaffd.compile.vip import VipPart
    from lbaffd.model.plan import VipPlan

ENV: Final = "LBAFFD_TEST_FAULTS"
BAD_BUCKET_ID: Final = 0xFFFFFFF0  # above OFPG15_BUCKET_MAX
ETH_PBB: Final = 0x88E7


def _parse(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        kind, _, value = item.partition("=")
        out.setdefault(kind, set()).add(value)
    return out


FAULTS: Final = _parse(os.environ.get(ENV, ""))
for _limit in FAULTS.get("group-limit", ()):
    groupsplit.set_limit(int(_limit))


def active() -> bool:
    return bool(FAULTS.get("refuse-group") or FAULTS.get("bad-match"))


def inject(plan: VipPlan, p: Pipeline, part: VipPart) -> VipPart:
    """``part`` broken as ``LBAFFD_TEST_FAULTS`` asks for ``plan``'s LB."""
    name = plan.lb.name
    if name in FAULTS.get("refuse-group", ()) and part.parts == ():
        spec = unpack_group(part.group)
        if spec.buckets:
            bad = (replace(spec.buckets[0], bucket_id=BAD_BUCKET_ID), *spec.buckets[1:])
            part = replace(part, group=pack_group(replace(spec, buckets=bad)))
    if name in FAULTS.get("bad-match", ()):
        flow = pack_flow(FlowSpec(p.dispatch, 1, Match.of(eth_type=ETH_PBB,
                                                           pbb_isid=plan.group_id & 0xFFFFFF),
                                  (), own.owner_cookie(plan.owner)))
        part = replace(part, flow_ids=(*part.flow_ids, flow_id(flow)),
                       flows=(*part.flows, flow))
    return part
