"""The memos of encoded and decoded OpenFlow values, emptied after each
audit and full pass (``forget``).

They save re-encoding what recurs within a pass (a VIP's addresses in its
flows, the common fields) and re-decoding what recurs in a dump.  Bounded
(8-16k entries each), they still kept every value churn had brought until
full: a replaced backend's ``ct(nat(dst=...))`` stayed, and at an endpoint
change every 2 s they filled over the soak's first half hour (``_encode_ct``
2389 entries after the first audit, +7 per change; ~4 MB of creep at N=1000,
issue 19).  Emptied after each audit and full pass, they hold what the state
used since: nothing is re-encoded for it, since the compile cache
(``compile.state.VipCache``) keeps compiled VIPs and the decode cache
(``reconcile.readback.DecodeCache``) converted switch entries.

Kept: the memos of values that do not churn (field tables, exits,
``distribution``'s slot tables, template markers).  ``ownership.vip_owner``'s
interned keys follow the VIPs in the state instead (``VipCache`` drops a
VIP's key when the VIP leaves it)."""

from __future__ import annotations

from lbaffd.compile import stages
from lbaffd.model import ownership
from lbaffd.openflow import actions, messages, oxm


def forget() -> None:
    """Empty them (the worker's thread, after an audit or a full pass)."""
    actions.forget()
    oxm.forget()
    messages.forget()
    stages.addr_text.cache_clear()
    ownership.owner_cookie.cache_clear()
