"""What the switch says on its own (flow removed, packet-in, group changed
by others, flow-monitor updates), sorted on the OpenFlow reader thread.

The reader only translates and hands on (the worker acts): a learned
affinity entry's removal goes to ``on_entry``; a flow of lbaffd's deleted by
someone else to ``on_flushed`` (ovn-controller's flush, in companion mode),
unless lbaffd deleted it itself (``ExpectedDeletes``); anything else that
touched lbaffd's part of the switch to ``on_foreign``, so foreign
interference is repaired at once.  A reject flow's packet-in is answered
here (TCP RST / ICMP unreachable, ``reject``), and a neighbor solicitation
for a VIP (``neighbor``), bounded by a token bucket.
"""

from __future__ import annotations

from collections.abc import Callable

from lbaffd.compile.stages import vip_mac
from lbaffd.model import ownership as own
from lbaffd.openflow.flowdesc import monitor_update_cookies
from lbaffd.openflow.replies import Reply
from lbaffd.packetin.neighbor import neighbor_advert
from lbaffd.packetin.reject import Refuser, TokenBucket
from lbaffd.reconcile.entries import ExpectedDeletes, removed_entry, removed_managed_flow
from lbaffd.reconcile.longidle import RemovedEntry

OFPT_PACKET_IN = 10
OFPT_FLOW_REMOVED = 11
OFPT_REQUESTFORWARD = 32


class AsyncRouter:
    def __init__(self, refuser: Refuser, packet_out: Callable[[int, bytes], None],
                 expected_deletes: ExpectedDeletes, *,
                 on_entry: Callable[[RemovedEntry], None],
                 on_flushed: Callable[[], None], on_foreign: Callable[[], None],
                 nd_bucket: TokenBucket | None = None) -> None:
        self._refuser = refuser
        self._packet_out = packet_out
        self._expected = expected_deletes
        self._on_entry = on_entry
        self._on_flushed = on_flushed
        self._on_foreign = on_foreign
        self._nd_bucket = nd_bucket or TokenBucket(rate=200.0, burst=400.0)

    def on_async(self, reply: Reply) -> None:
        if reply.msg_type == OFPT_PACKET_IN:
            msg = reply.parse()
            if msg is not None and own.is_managed(msg.cookie):
                port, frame = int(msg.match["in_port"]), bytes(msg.data)
                if (self._refuser.handle(msg.cookie, port, frame) == "unknown"
                        and self._nd_bucket.take()):
                    answer = neighbor_advert(frame, vip_mac)
                    if answer is not None:
                        self._packet_out(port, answer)
            return
        own_delete = removed_managed_flow(reply)
        if own_delete is not None:
            if self._expected.take(*own_delete):
                return  # a flow this daemon deleted itself
            self._on_flushed()
        entry = removed_entry(reply)
        if entry is not None:
            self._on_entry(entry)
        elif reply.msg_type in (OFPT_FLOW_REMOVED, OFPT_REQUESTFORWARD) or any(
                own.is_managed(c) for c in monitor_update_cookies(reply.raw)):
            self._on_foreign()
