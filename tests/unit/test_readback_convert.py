"""The restart's byte conversion of flow-desc entries (``readback.flow_body``,
``group_ref_of``, ``canonical_flow``) against decoding, on every flow the
compiler emits in the reference states (standalone, embedded, ...): an
entry made of a compiled body converts back to that very body, its group id
read off the bytes is the decoded flow's, and decoding it gives the body
again (``packed.desc_entry`` makes the entry: its bytes are OVS's layout, checked
by the framing ``iter_entries`` reading them).  (That ovs-vswitchd reports the same bytes is held in
``tests/integration/test_decode_vs_ovs.py``.)"""

from __future__ import annotations

from lbaffd.openflow import packed
from lbaffd.openflow.flowdesc import MULTIPART_REPLY_SIZE, iter_entries
from lbaffd.reconcile.readback import (
    _group_ref,
    canonical_flow,
    flow_body,
    group_ref_of,
)
from tests.unit.test_encode_vs_osken import STATES


def test_conversion_gives_back_every_compiled_body() -> None:
    seen = refs = 0
    for desired in STATES:
        for body in desired.state.flows.values():
            reply = bytes(MULTIPART_REPLY_SIZE) + packed.desc_entry(body)
            [(_, _, identity)] = list(iter_entries(reply))
            assert flow_body(identity) == body
            spec = packed.unpack_flow(body)
            assert group_ref_of(body) == _group_ref(spec)
            assert canonical_flow(body) == (body, spec)
            seen += 1
            refs += bool(_group_ref(spec))
    assert seen > 1000 and refs > 100  # dispatch, miss and learn flows name groups


def test_group_ref_needs_one_apply_actions_instruction() -> None:
    body = next(b for s in STATES for b in s.state.flows.values() if group_ref_of(b))
    match_end = packed.MATCH_AT + (packed.match_length(body) + 7) // 8 * 8
    write_actions = body[:match_end] + (3).to_bytes(2, "big") + body[match_end + 2:]
    assert group_ref_of(write_actions) == 0
