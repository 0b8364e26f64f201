"""A thin OpenFlow 1.5 client for ovs-vswitchd (unix mgmt socket or tcp):
the connection, its requests and its dumps.

Flow and group mods come encoded from ``messages``; the few control
messages and OpenFlow's constants come from ``oskenfallback``.  This module
owns the socket (os-ken's ``Datapath`` sets TCP_NODELAY and fails on a unix
socket, and without its app manager nobody answers echo requests).  One
reader thread answers echoes, routes replies to waiters by xid and hands
asynchronous messages to a callback; callers block on
``request``/``bundle``/``barrier`` from any thread.  A bundle itself
(``open_bundle``) is ``bundle.Bundle``, built over this module's public
methods; what a request gets back (``Reply``) and the errors a wait ends in
live in ``replies``; reading whole messages off the socket (and past a
group too large for OpenFlow's lengths) is ``stream``.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
import tenacity

from lbaffd.openflow import groupdesc, messages, stream
from lbaffd.openflow import oskenfallback as fallback
from lbaffd.openflow.bundle import Bundle
from lbaffd.openflow.oskenfallback import constants as ofp
from lbaffd.openflow.replies import (
    ConnectionLost,
    OpenFlowError,
    OpenFlowTimeout,
    Reply,
    SkippedEntry,
    Waiter,
    XidSpan,
)

log = structlog.get_logger("lbaffd.openflow")

HEADER = stream.HEADER
# Unsolicited messages for on_async; a multipart reply with no waiter is a
# flow-monitor update (they keep the monitor request's xid).
ASYNC_TYPES = {ofp.OFPT_FLOW_REMOVED, ofp.OFPT_PORT_STATUS, ofp.OFPT_PACKET_IN,
               ofp.OFPT_REQUESTFORWARD, ofp.OFPT_ROLE_STATUS, ofp.OFPT_TABLE_STATUS,
               ofp.OFPT_MULTIPART_REPLY, ofp.OFPT_ERROR}


SAFE_FOREIGN_BUCKETS = 250  # more buckets (of > 256 bytes each) could exceed 16 bits


@dataclass(slots=True, eq=False)
class PendingReply:
    """A request on the wire whose reply has not been waited for
    (``OpenFlowChannel.start_request``)."""

    channel: OpenFlowChannel
    xid: int
    waiter: Waiter

    def wait(self, timeout: float | None = None) -> list[Reply]:
        """The reply; raises the switch's error for it, or ``OpenFlowTimeout``."""
        return self.channel._wait(self.xid, self.waiter, timeout)

    def drop(self) -> None:
        """Stop waiting for it (its reply, if one comes, is ignored)."""
        self.channel._forget(self.xid)


class OpenFlowChannel:
    def __init__(self, target: str, *, on_async: Callable[[Reply], None] | None = None,
                 on_disconnect: Callable[[], None] | None = None, echo_interval: float = 5.0,
                 request_timeout: float = 30.0,
                 on_skipped: Callable[[SkippedEntry], None] | None = None,
                 group_desc_window: int = 0) -> None:
        self.target = target
        # >0: ``dump_group_desc`` asks for the owned groups by id, this many
        # requests in flight (see there); 0: one request for every group
        self.group_desc_window = group_desc_window
        self._on_async = on_async
        self._on_disconnect = on_disconnect
        self._on_skipped = on_skipped
        self._echo_interval = echo_interval
        self._timeout = request_timeout
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._waiters: dict[int, Waiter] = {}
        self._spans: list[XidSpan] = []  # under _waiters_lock too
        self._waiters_lock = threading.Lock()
        self._xids = itertools.count(1)
        self._reader: threading.Thread | None = None
        self._closed = threading.Event()
        self._sent: dict[str, int] = {}
        self._skipped_seen: set[tuple[int, int]] = set()
        self.datapath_id = 0
        # foreign groups too large for group-desc to report, seen by the last
        # dump (``dump_group_desc``); logged when the set changes
        self.skipped_groups: tuple[int, ...] = ()

    # ------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        return self._sock is not None and not self._closed.is_set()

    @property
    def sent_counts(self) -> dict[str, int]:
        with self._send_lock:
            return dict(self._sent)

    def connect(self, timeout: float = 10.0) -> None:
        """Connect and negotiate OpenFlow 1.5, retrying until ``timeout``."""
        retry = tenacity.Retrying(
            stop=tenacity.stop_after_delay(timeout),
            wait=tenacity.wait_exponential(multiplier=0.05, max=1.0),
            retry=tenacity.retry_if_exception_type(OSError),
            reraise=True,
        )
        retry(self._connect_once)

    def _open_socket(self) -> socket.socket:
        kind, _, addr = self.target.partition(":")
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5.0)
            sock.connect(addr)
        elif kind == "tcp":
            host, _, port = addr.rpartition(":")
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=5.0)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            raise ValueError(f"unsupported OpenFlow target {self.target!r} (unix: or tcp:)")
        return sock

    def _connect_once(self) -> None:
        sock = self._open_socket()
        try:
            # Hello with a version bitmap offering only OF1.5.
            bitmap = struct.pack("!HHI", 1, 8, 1 << ofp.OFP_VERSION)
            sock.sendall(HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_HELLO, 8 + len(bitmap), 0)
                         + bitmap)
            version, msg_type, _, _ = HEADER.unpack(stream.read_msg(sock)[:8])
            if msg_type != ofp.OFPT_HELLO:
                raise OSError(f"expected HELLO, got message type {msg_type}")
            if version < ofp.OFP_VERSION:
                raise OpenFlowError(ofp.OFPET_HELLO_FAILED, ofp.OFPHFC_INCOMPATIBLE, 0)
            sock.sendall(fallback.features_request(0xFFFFFFF0))
            while True:
                raw = stream.read_msg(sock)
                if raw[1] == ofp.OFPT_FEATURES_REPLY:
                    self.datapath_id = struct.unpack_from("!Q", raw, 8)[0]
                    break
                if raw[1] == ofp.OFPT_ERROR:
                    err_type, code = struct.unpack_from("!HH", raw, 8)
                    raise OpenFlowError(err_type, code, 0)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        self._sock = sock
        self._closed.clear()
        self._reader = threading.Thread(target=self._read_loop, name="of-reader", daemon=True)
        self._reader.start()
        log.debug("openflow_negotiated", target=self.target, dpid=f"{self.datapath_id:016x}")

    def close(self) -> None:
        """Idempotent; fails every waiter with ConnectionLost."""
        if self._closed.is_set():
            return
        self._closed.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._fail_all(ConnectionLost(self.target))

    # ------------------------------------------------------------ reader

    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        silent = 0
        try:
            while not self._closed.is_set():
                # Idle detection with select(): a message, once started, is
                # always read whole, so framing never breaks on a timeout.
                readable, _, _ = select.select([sock], [], [], self._echo_interval)
                if not readable:
                    silent += 1
                    # a switch building a large reply (a group-desc of 60 MB
                    # is ~5 s of ovs-vswitchd's CPU at 5000 VIPs, longer on a
                    # busy host) answers nothing else meanwhile: while a
                    # reply is awaited, the request's own timeout decides
                    if silent >= 3 and not self._awaiting():
                        raise ConnectionLost("no echo reply in 3 intervals")
                    self._send_raw(HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_ECHO_REQUEST, 8,
                                               next(self._xids)), "OFPEchoRequest")
                    continue
                silent = 0
                raw = stream.read_msg(sock)
                if stream.last_group_desc_part(raw) and not groupdesc.group_desc_framed(raw):
                    raw = self._read_oversized_group(sock, raw)
                self._dispatch(raw)
        except (OSError, ValueError, ConnectionLost, struct.error) as exc:
            if not self._closed.is_set():
                log.warning("openflow_disconnected", target=self.target, error=str(exc))
        finally:
            was_open = not self._closed.is_set()
            self.close()
            if was_open and self._on_disconnect is not None:
                self._on_disconnect()

    def _read_oversized_group(self, sock: socket.socket, raw: bytes) -> bytes:
        """``stream.unwrap_oversized_group``, the entry it skipped logged
        once per connection and reported every time."""
        raw, skipped = stream.unwrap_oversized_group(sock, raw)
        if skipped is None:
            return raw
        key = (skipped.group_id, skipped.size)
        if key not in self._skipped_seen:  # said once per connection, counted every time
            self._skipped_seen.add(key)
            log.warning("openflow_entry_skipped", target=self.target, kind="group",
                        group_id=skipped.group_id, bytes=skipped.size, buckets=skipped.buckets,
                        reason="longer than 65535 bytes: OpenFlow cannot report it")
        if self._on_skipped is not None:
            self._on_skipped(skipped)
        return raw

    def _dispatch(self, raw: bytes) -> None:
        _, msg_type, _, xid = HEADER.unpack_from(raw)
        if msg_type == ofp.OFPT_ECHO_REQUEST:
            self._send_raw(HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_ECHO_REPLY, len(raw), xid)
                           + raw[8:], "OFPEchoReply")
            return
        if msg_type == ofp.OFPT_ECHO_REPLY:
            return
        with self._waiters_lock:
            waiter = self._waiters.get(xid)
            if waiter is None and msg_type == ofp.OFPT_ERROR:
                waiter = next((s.waiter for s in self._spans if xid in s), None)
        if waiter is None:
            if self._on_async is not None and msg_type in ASYNC_TYPES:
                self._on_async(Reply(msg_type, xid, raw))
            return
        reply = Reply(msg_type, xid, raw)
        if msg_type == ofp.OFPT_ERROR:
            err_type, code = struct.unpack_from("!HH", raw, 8) if len(raw) >= 12 else (-1, -1)
            if waiter.error is None:  # a bundle's adds share a waiter: keep the first
                waiter.error = OpenFlowError(err_type, code, xid, raw[12:])
            waiter.done.set()
            return
        waiter.replies.append(reply)
        if not reply.more:
            waiter.done.set()

    def _fail_all(self, exc: Exception) -> None:
        with self._waiters_lock:
            waiters, self._waiters = list(self._waiters.values()), {}
            waiters += [s.waiter for s in self._spans]
        for w in waiters:
            if w.error is None:
                w.error = exc
            w.done.set()

    # ------------------------------------------------------------ sending

    def _send_raw(self, data: bytes, name: str) -> None:
        sock = self._sock
        if sock is None:
            raise ConnectionLost(self.target)
        with self._send_lock:
            sock.sendall(data)
            self._sent[name] = self._sent.get(name, 0) + 1

    def send_batch(self, parts: list[bytes], name: str) -> None:
        """Several whole messages of one kind (already stamped with their
        xids) in one write, counted as ``len(parts)`` messages ``name``."""
        sock = self._sock
        if sock is None:
            raise ConnectionLost(self.target)
        data = b"".join(parts)
        try:
            with self._send_lock:
                sock.sendall(data)
                self._sent[name] = self._sent.get(name, 0) + len(parts)
        except OSError as exc:
            raise ConnectionLost(str(exc)) from exc

    def send(self, msg: Any, xid: int | None = None) -> int:
        """Serialize and send; assigns an xid when the message has none.
        ``msg`` is an os-ken message or a ``messages.RawMessage`` (then ``xid``
        is the one to stamp, a fresh one if None)."""
        if isinstance(msg, messages.RawMessage):
            xid = self.next_xid() if xid is None else xid
            data, name = msg.with_xid(xid), msg.name
        else:
            if xid is not None:
                msg.xid = xid
            if msg.xid is None:
                msg.xid = next(self._xids)
            msg.serialize()
            data, name, xid = bytes(msg.buf), type(msg).__name__, int(msg.xid)
        try:
            self._send_raw(data, name)
        except OSError as exc:
            raise ConnectionLost(str(exc)) from exc
        return xid

    def next_xid(self) -> int:
        """A fresh 32-bit xid (also a bundle's id: any unique number will do)."""
        return next(self._xids) & 0xFFFFFFFF

    def watch_errors(self, first: int) -> XidSpan:
        """Route errors for xids from ``first`` on (until ``span.last``, which
        the caller advances before sending each message) to the returned
        span: for messages the switch answers only when they fail.  Pair with
        ``unwatch_errors``; ``close`` fails the span like any waiter."""
        span = XidSpan(first, first)
        with self._waiters_lock:
            self._spans.append(span)
        return span

    def unwatch_errors(self, span: XidSpan) -> None:
        with self._waiters_lock:
            self._spans.remove(span)

    def _register(self) -> tuple[int, Waiter]:
        xid = self.next_xid()
        w = Waiter()
        with self._waiters_lock:
            self._waiters[xid] = w
        return xid, w

    def _awaiting(self) -> bool:
        """A request of ours is waiting for its reply."""
        with self._waiters_lock:
            return bool(self._waiters)

    def _wait(self, xid: int, w: Waiter, timeout: float | None) -> list[Reply]:
        try:
            if not w.done.wait(self._timeout if timeout is None else timeout):
                raise OpenFlowTimeout(f"xid {xid}")
        finally:
            self._forget(xid)
        if w.error is not None:
            raise w.error
        return w.replies

    def request(self, msg: Any, timeout: float | None = None) -> list[Reply]:
        """Send and wait for the whole reply (every multipart part)."""
        return self.start_request(msg).wait(timeout)

    def start_request(self, msg: Any) -> PendingReply:
        """Send a request and return at once; ``wait()`` on the result for its
        reply.  Requests sent one after another are answered in that order
        (one connection's messages are handled in order by ovs-vswitchd), so
        several can be in flight for the price of one round trip."""
        if not self.connected:
            raise ConnectionLost(self.target)
        xid, w = self._register()
        try:
            self.send(msg, xid)
        except ConnectionLost:
            self._forget(xid)
            raise
        return PendingReply(self, xid, w)

    def _forget(self, xid: int) -> None:
        with self._waiters_lock:
            self._waiters.pop(xid, None)

    def send_checked(self, msgs: Iterable[messages.RawMessage], timeout: float | None = None
                     ) -> None:
        """Send messages the switch answers only when they fail (e.g.
        NXT_CT_FLUSH), then a barrier: once it is answered, every error has
        arrived.  Raises the first ``OpenFlowError`` among them."""
        sent: list[tuple[int, Waiter]] = []
        try:
            for m in msgs:
                xid, w = self._register()
                sent.append((xid, w))
                self.send(m, xid)
            self.barrier(timeout)
        finally:
            with self._waiters_lock:
                for xid, _ in sent:
                    self._waiters.pop(xid, None)
        for _, w in sent:
            if w.error is not None:
                raise w.error

    def barrier(self, timeout: float | None = None) -> None:
        self.request(fallback.barrier_request(), timeout)

    def open_bundle(self, timeout: float | None = None) -> Bundle:
        """A bundle written while it is built; ``with channel.open_bundle() as
        b:`` commits when the block ends and discards when it raises."""
        return Bundle(self, timeout)

    def bundle(self, msgs: Iterable[Any], timeout: float | None = None) -> None:
        """Apply ``msgs`` atomically and in order (see ``Bundle``); raises the
        first error the switch reports.  Nothing is sent for no messages."""
        with self.open_bundle(timeout) as b:
            for m in msgs:
                b.add(m)

    def enable_async(self) -> None:
        """Ask for FLOW_REMOVED, PACKET_IN (reject flows) and REQUESTFORWARD
        (group mods by others) on this (service) connection: OVS sends none of
        them to a management-socket connection until its async config asks."""
        self.send(fallback.async_config_request())
        self.barrier()

    def packet_out(self, out_port: int, data: bytes) -> None:
        """Send ``data`` out of ``out_port`` (as if from the controller)."""
        self.send(fallback.packet_out(out_port, data))

    def monitor_flows(self) -> None:
        """Start an OF1.5 flow monitor on every table: flows other controllers
        add, modify or remove are reported to ``on_async`` as multipart replies
        (this connection's own changes arrive abbreviated)."""
        self.request(fallback.flow_monitor_request())

    # ------------------------------------------------------------ dumps

    def dump_flow_desc(self, cookie: int, cookie_mask: int,
                       table_id: int = ofp.OFPTT_ALL,
                       out_port: int = ofp.OFPP_ANY) -> list[Reply]:
        """Raw flow-desc reply parts for flows whose cookie matches (and, with
        ``out_port``, that output to that port)."""
        return self.request(fallback.flow_desc_request(cookie, cookie_mask, table_id, out_port))

    def dump_group_desc(self, owned: Callable[[int], bool]) -> list[Reply]:
        """The groups ``owned`` says are the caller's, as group-desc reports
        them (foreign ones too when that is safe).

        OVS 3.1 writes a group-desc entry's length in 16 bits without a
        check: a group of more than ~64 KB of buckets (another controller's:
        lbaffd splits its own, ``groupsplit``) comes with wrapped lengths,
        which desynchronizes the OpenFlow stream (``bad OpenFlow length``,
        reconnect, same again), and when another group follows it in the
        reply ``ofpmp_postappend()`` asserts and ovs-vswitchd aborts.  So the
        groups are listed with group *stats* first (40 + 16 bytes a bucket:
        readable up to 4093 buckets) and, if a foreign group has more than
        ``SAFE_FOREIGN_BUCKETS`` buckets, only the owned ones are asked for, by
        id; the skipped ones are reported.

        With ``group_desc_window`` set (the audits' connection) the owned
        groups are always asked for by id, that many requests in flight.
        ovs-vswitchd builds a whole group-desc reply in one go in its main
        thread (``handle_group_desc_stats_request`` -> ``handle_group_request``
        walks every group, ofproto/ofproto.c): at 5,000 VIPs (1.3M buckets,
        before balanced groups had a bucket per backend) that was ~3-5 s in
        which it read no other connection, so a change's bundle on the main
        connection waited for it (send 2.3-3.2 s seen during audits at
        N=5000); with ~45k buckets it is ~0.1 s, still more than a change
        may wait.  A request for one group is one lookup,
        and between two rounds of a connection's messages (``ofconn_run``
        handles at most 50 per round, ofproto/connmgr.c) the switch serves
        the others."""
        stats = self.request(fallback.group_stats_request())
        sizes = groupdesc.group_bucket_counts(r.raw for r in stats)
        risky = tuple(sorted(g for g, n in sizes.items()
                             if n > SAFE_FOREIGN_BUCKETS and not owned(g)))
        if risky != self.skipped_groups:
            if risky:
                log.warning("foreign_groups_skipped", groups=[f"{g:#x}" for g in risky],
                            buckets=[sizes[g] for g in risky],
                            reason="group-desc of the switch cannot report groups this large; "
                                   "lbaffd reads its own groups one by one")
            self.skipped_groups = risky
        if not risky and not self.group_desc_window:
            return self.request(fallback.group_desc_request())
        return self._group_descs(sorted(g for g in sizes if owned(g)),
                                 max(1, self.group_desc_window))

    def _group_descs(self, ids: list[int], window: int) -> list[Reply]:
        """The group-desc replies of ``ids``, ``window`` requests in flight;
        a group deleted since it was listed is left out."""
        replies: list[Reply] = []
        for start in range(0, len(ids), window):
            waiting: list[tuple[int, Waiter]] = []
            try:
                for gid in ids[start:start + window]:
                    xid, w = self._register()
                    waiting.append((xid, w))
                    self.send(fallback.group_desc_request(gid), xid)
            except ConnectionLost:
                with self._waiters_lock:
                    for xid, _ in waiting:
                        self._waiters.pop(xid, None)
                raise
            for xid, w in waiting:
                try:
                    replies += self._wait(xid, w, None)
                except OpenFlowError:
                    continue  # deleted since the stats were taken
        return replies
