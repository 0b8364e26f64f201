"""``compile.memos.forget``: the memos of encoded and decoded values are
emptied after each audit and full pass (issue 19: bounded, they still kept
every value churn brought until full) and nothing encodes differently."""

from __future__ import annotations

from bench.encode import corpus_inputs
from lbaffd.compile import memos, stages
from lbaffd.compile.layout import STANDALONE
from lbaffd.compile.state import VipCache, compile_state
from lbaffd.model import ownership as own
from lbaffd.model.plan import vip_owners
from lbaffd.openflow import actions, messages, oxm
from lbaffd.openflow.packed import unpack_flow


def sizes() -> dict[str, int]:
    return {"set_field": actions.set_field_bytes.cache_info().currsize,
            "ct": actions._encode_ct.cache_info().currsize,
            "match": oxm._match_entry.cache_info().currsize,
            "addr": stages.addr_text.cache_info().currsize,
            "cookie": own.owner_cookie.cache_info().currsize,
            "selection": messages.selection_method_property.cache_info().currsize,
            "decoded actions": len(actions._ACTIONS), "decoded tlvs": len(oxm._TLVS)}


def test_forgetting_the_memos_empties_them_and_changes_no_encoding() -> None:
    lbs, topo = corpus_inputs(40)
    ids = own.allocate_group_ids(vip_owners(lbs, topo), {})
    first = compile_state(lbs, topo, ids, STANDALONE, cache=VipCache(templates=False))
    decoded = [unpack_flow(body) for body in first.state.flows.values()]  # the decode memos
    filled = sizes()
    assert all(filled[k] for k in ("set_field", "ct", "match", "addr", "cookie",
                                   "decoded actions", "decoded tlvs")), filled
    memos.forget()
    assert not any(sizes().values()), sizes()
    again = compile_state(lbs, topo, ids, STANDALONE, cache=VipCache(templates=False))
    assert again.state == first.state
    assert [unpack_flow(body) for body in again.state.flows.values()] == decoded
