"""``compile.memos.forget``: the memos of encoded and decoded values are
emptied after every pass (issue 19: bounded, they still kept every value
churn brought until full) and nothing encodes differently."""

from __future__ import annotations

from bench.encode import corpus_inputs
from lbaffd.compile import memos
from lbaffd.compile.layout import STANDALONE
from lbaffd.compile.state import VipCache, compile_state
from lbaffd.model import ownership as own
from lbaffd.model.plan import vip_owners
from lbaffd.openflow.packed import unpack_flow


def test_forgetting_the_memos_empties_them_and_changes_no_encoding() -> None:
    lbs, topo = corpus_inputs(40)
    ids = own.allocate_group_ids(vip_owners(lbs, topo), {})
    first = compile_state(lbs, topo, ids, STANDALONE, cache=VipCache(templates=False))
    decoded = [unpack_flow(body) for body in first.state.flows.values()]  # the decode memos
    filled = memos.entries()
    assert all(filled[k] for k in ("set_field", "ct", "match_entry", "addr_text",
                                   "owner_cookie", "decoded_actions", "decoded_tlvs")), filled
    memos.forget()
    assert not any(memos.entries().values()), memos.entries()
    again = compile_state(lbs, topo, ids, STANDALONE, cache=VipCache(templates=False))
    assert again.state == first.state
    assert [unpack_flow(body) for body in again.state.flows.values()] == decoded
