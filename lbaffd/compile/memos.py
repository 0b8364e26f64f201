"""The memos of encoded and decoded OpenFlow values, emptied after every
pass (``forget``).

They save re-encoding what recurs within a pass (a VIP's addresses in its
flows, the common fields) and re-decoding what recurs in a dump.  Bounded
(8-16k entries each), they still kept every value churn had brought until
full: a replaced backend's ``ct(nat(dst=...))`` stayed, and at an endpoint
change every 2 s they filled over the soak's first half hour (``_encode_ct``
2389 entries after the first audit, +7 per change; ~4 MB of creep at N=1000,
issue 19).  Emptied after each pass, they hold what one pass used: nothing
is re-encoded for the state, since the compile cache
(``compile.state.VipCache``) keeps compiled VIPs and the decode cache
(``reconcile.readback.DecodeCache``) converted switch entries.  Incremental
passes empty them too: kept until the next audit or full pass, what a few
steps had encoded (~300 ``ct`` actions a local pod's VIPs, at N=1000) was
freed among the pass's long-lived objects and left pymalloc arenas pinned
(``bench.memprobe``, local pods and full passes alternating: 67 arenas
instead of 65, RSS +1.7 MB); a step re-encodes the few values it shares
with earlier ones.

Kept: the memos of values that do not churn (field tables, exits,
``distribution``'s slot tables, template markers).  ``ownership.vip_owner``'s
interned keys follow the VIPs in the state instead (``VipCache`` drops a
VIP's key when the VIP leaves it)."""

from __future__ import annotations

from lbaffd.compile import stages
from lbaffd.model import ownership
from lbaffd.openflow import actions, messages, oxm


def forget() -> None:
    """Empty them (the worker's thread, after every pass)."""
    actions.forget()
    oxm.forget()
    messages.forget()
    stages.addr_text.cache_clear()
    ownership.owner_cookie.cache_clear()


def entries() -> dict[str, int]:
    """Entries each memo ``forget`` empties holds now (``memory/show``)."""
    return {"set_field": actions.set_field_bytes.cache_info().currsize,
            "ct": actions._encode_ct.cache_info().currsize,
            "decoded_actions": len(actions._ACTIONS) + len(actions._LEARN_SPECS),
            "match_entry": oxm._match_entry.cache_info().currsize,
            "decoded_tlvs": len(oxm._TLVS),
            "selection_method": messages.selection_method_property.cache_info().currsize,
            "addr_text": stages.addr_text.cache_info().currsize,
            "owner_cookie": ownership.owner_cookie.cache_info().currsize}
