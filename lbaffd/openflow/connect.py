"""The daemon's OpenFlow connections to the switch, made when needed.

A pass asks for it with ``ensure`` (a lost connection is replaced, its
replacement gets the asynchronous messages and the flow monitor the daemon
relies on); start-up ``wait``s for it, since lbaffd may start before
ovs-vswitchd; the control socket and the metrics use it only when it is up
(``live``).  A second connection carries only audits' dumps
(``reads``): ovs-vswitchd answers one connection in order, so a change's
bundle must not queue behind an audit's group dump; that connection asks
for the groups by id (``OpenFlowChannel.group_desc_window``), so the switch
is never busy with one reply for seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from lbaffd.openflow.channel import OpenFlowChannel
from lbaffd.openflow.replies import ConnectionLost, Reply, SkippedEntry

log = structlog.get_logger("lbaffd")

# group-desc requests in flight on the audits' connection: few enough that
# the switch serves other connections in between.  Realistic SB, N=5000,
# audits every 1 s, a change's bundle (send_ms): one request for every group
# 2.3-3.2 s, 32 in flight 69-116 ms, 4 in flight 11-65 ms (what is left is
# the flow-desc slices: a cookie-masked dump walks every rule, ofproto.c
# ``collect_rules_loose``); the audit itself got faster (2.1-3.8 s vs 5-7 s)
GROUP_DESC_WINDOW = 4


class ChannelKeeper:
    def __init__(self, target: Callable[[], str], on_async: Callable[[Reply], None],
                 on_disconnect: Callable[[], None],
                 on_skipped: Callable[[SkippedEntry], None],
                 stopping: threading.Event) -> None:
        self._target = target  # read at each connect: settings resolve after start
        self._on_async = on_async
        self._on_disconnect = on_disconnect
        self._on_skipped = on_skipped
        self._stopping = stopping
        self.channel: OpenFlowChannel | None = None
        self._reads: OpenFlowChannel | None = None  # audits' dumps
        self.connects = 0  # connections attempted (either one): what a reconnect left is swept

    @property
    def connected(self) -> bool:
        return self.channel is not None and self.channel.connected

    def live(self) -> OpenFlowChannel:
        """The channel if it is up, else ConnectionLost (never connects)."""
        ch = self.channel
        if ch is None or not ch.connected:
            raise ConnectionLost("OpenFlow channel is down")
        return ch

    def ensure(self) -> OpenFlowChannel:
        """The channel, connected anew if it was lost (flow-removed, packet-in
        and request-forward enabled, every table's flows monitored)."""
        if self.channel is not None and self.channel.connected:
            return self.channel
        if self.channel is not None:
            self.channel.close()
        target = self._target()
        self.channel = OpenFlowChannel(
            target, on_async=self._on_async, on_disconnect=self._on_disconnect,
            on_skipped=self._on_skipped)
        self.connects += 1
        self.channel.connect(timeout=2.0)
        self.channel.enable_async()
        self.channel.monitor_flows()
        log.info("openflow_connected", target=target)
        self.reads()  # with the main one: the daemon's fds and threads stay constant
        return self.channel

    def reads(self) -> OpenFlowChannel | None:
        """The second connection, for an audit's dumps (see
        ``Reconciler.audit_unchanged``); None (the main one is used) when it
        cannot be had."""
        ch = self._reads
        if ch is not None and ch.connected:
            return ch
        if ch is not None:
            ch.close()
        self._reads = None
        try:
            ch = OpenFlowChannel(self._target(), on_skipped=lambda e: None,
                                 group_desc_window=GROUP_DESC_WINDOW)
            self.connects += 1
            ch.connect(timeout=2.0)
        except Exception as exc:
            log.warning("openflow_read_connection_failed", target=self._target(),
                        error=str(exc))
            return None
        self._reads = ch
        return ch

    def wait(self) -> OpenFlowChannel:
        """The switch, waited for (a daemon may start before ovs-vswitchd);
        SystemExit(0) when the daemon is stopped meanwhile."""
        delay = 0.1
        while not self._stopping.is_set():
            try:
                return self.ensure()
            except Exception as exc:
                log.warning("openflow_unreachable", target=self._target(),
                            error=str(exc), retry_in=delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)
        raise SystemExit(0)

    def packet_out(self, port: int, data: bytes) -> None:
        """Best effort: nothing when the switch is away."""
        ch = self.channel
        if ch is not None and ch.connected:
            ch.packet_out(port, data)

    def close(self) -> None:
        for ch in (self.channel, self._reads):
            if ch is not None:
                ch.close()
