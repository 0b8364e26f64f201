"""One OpenFlow bundle (``Bundle``), written while it is built and applied
atomically and in order at its commit.

Built over the channel's public surface only: ``next_xid``,
``start_request`` (a ``PendingReply`` to wait for or drop),
``watch_errors``/``unwatch_errors`` (an ``XidSpan`` for the adds, which the
switch answers only when they fail) and ``send_batch``.
``OpenFlowChannel.open_bundle`` makes one; this module types the channel by
what it needs of it as a Protocol (``BundleChannel``), so ``bundle`` does not
import ``channel``.
"""

from __future__ import annotations

from array import array
from typing import Any, Protocol

from lbaffd.openflow import messages
from lbaffd.openflow import oskenfallback as fallback
from lbaffd.openflow.oskenfallback import constants as ofp
from lbaffd.openflow.replies import (
    ConnectionLost,
    OpenFlowError,
    OpenFlowTimeout,
    Reply,
    XidSpan,
)

SEND_CHUNK = 256 * 1024  # bundle adds are written in batches of about this many bytes


class PendingReply(Protocol):
    """A request on the wire whose reply is read later (``channel.PendingReply``)."""

    def wait(self, timeout: float | None = None) -> list[Reply]: ...
    def drop(self) -> None: ...


class BundleChannel(Protocol):
    """What a bundle needs of its connection (``channel.OpenFlowChannel``):
    typed here so that ``channel``, which makes bundles, is the only one of the
    two modules to import the other."""

    def next_xid(self) -> int: ...
    def start_request(self, msg: Any) -> PendingReply: ...
    def watch_errors(self, first: int) -> XidSpan: ...
    def unwatch_errors(self, span: XidSpan) -> None: ...
    def send_batch(self, parts: list[bytes], name: str) -> None: ...


class Bundle:
    """One OpenFlow bundle (OFPBF_ATOMIC|OFPBF_ORDERED), written while it is
    being built: opened at the first ``add``, adds go out in batches of about
    ``SEND_CHUNK`` bytes, so ovs-vswitchd checks them while the caller is
    still producing the rest; nothing applies until ``commit``.

    Messages are ``messages.RawMessage`` (encoded once, without an xid) or os-ken
    messages.  Each goes in an OFPT_BUNDLE_ADD_MESSAGE with an xid of its own
    (the inner message carries the same xid), registered before it is sent so
    that an error the switch reports for that add is routed back here.  The
    switch answers an add only when it fails, and then the commit fails too.

    One round trip a bundle: the open request is not waited for before the
    adds, nor the commit before the barrier that follows it; ``commit``
    returns when that barrier is answered.  ovs-vswitchd handles one
    connection's messages in order (``ofconn_run``, ofproto/connmgr.c), so
    every reply of the bundle has arrived by then.  Waiting for each reply in
    turn cost up to three of ovs-vswitchd's busy spells instead of one: right
    after a port is added to a netdev bridge its main thread is busy for
    tens of milliseconds (the open request of a local port's one-flow bundle
    waited 4-29 ms for its reply at 5000 LBs, the commit then 0.1-6 ms more).
    """

    def __init__(self, channel: BundleChannel, timeout: float | None = None) -> None:
        self._ch = channel
        self._timeout = timeout
        self._id: int | None = None
        self._flags = ofp.OFPBF_ATOMIC | ofp.OFPBF_ORDERED
        self._opened: PendingReply | None = None  # the open request, until its reply is read
        self._span: XidSpan | None = None  # the adds' xids and their first error
        self._error: Exception | None = None  # kept once the span is released
        self._batch: list[bytes] = []
        self._size = 0
        self.count = 0
        # each add's xid, in order (4 bytes an add; other threads' requests
        # may take xids in between, so they are not a plain range)
        self._add_xids = array("I")

    def position(self, xid: int) -> int | None:
        """Which add (0-based, in the order added) ``xid`` was, if it is one of
        this bundle's: the switch names a failing add by its xid (searched
        only when one failed)."""
        try:
            return self._add_xids.index(xid)
        except ValueError:
            return None

    def _ctrl(self, kind: int) -> PendingReply:
        assert self._id is not None
        return self._ch.start_request(fallback.bundle_control(self._id, kind, self._flags))

    def add(self, m: Any) -> None:
        ch = self._ch
        if self._id is None:
            self._id = ch.next_xid()
            self._opened = self._ctrl(ofp.OFPBCT_OPEN_REQUEST)
        xid = ch.next_xid()
        if isinstance(m, messages.RawMessage):
            data = m.bundle_add(xid, self._id, self._flags)
        else:
            m.xid = xid
            m.serialize()
            data = messages.bundle_add(bytes(m.buf), xid, self._id, self._flags)
        self._add_xids.append(xid)
        if self._span is None:
            self._span = ch.watch_errors(xid)
        else:
            self._span.last = xid  # before it is sent: its error finds the span
        self._batch.append(data)
        self._size += len(data)
        self.count += 1
        if self._size >= SEND_CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        batch = self._batch
        self._batch, self._size = [], 0
        self._ch.send_batch(batch, "OFPBundleAddMsg")

    def _release(self) -> None:
        """Nothing of the bundle is waited for any more: the adds' span (its
        first error kept) and the open request, if its reply was not read."""
        if self._span is not None:
            self._error = self._span.error
            self._ch.unwatch_errors(self._span)
            self._span = None
        if self._opened is not None:
            self._opened.drop()
            self._opened = None

    def _open_error(self) -> Exception | None:
        """The open request's error, if it failed (its reply is in by the time
        a later request's is: read without waiting longer)."""
        opened, self._opened = self._opened, None
        if opened is None:
            return None
        try:
            opened.wait(self._timeout)
        except OpenFlowError as exc:
            return exc
        return None

    def commit(self) -> None:
        """Apply everything added and wait until a barrier sent after the
        commit is answered (no-op when nothing was added); raises the open's
        error, else the first error of an add, else the commit's."""
        if self._id is None:
            return
        commit_error: Exception | None = None
        open_error: Exception | None = None
        try:
            self._flush()
            committed = self._ctrl(ofp.OFPBCT_COMMIT_REQUEST)
            try:
                barrier = self._ch.start_request(fallback.barrier_request())
            except ConnectionLost:
                committed.drop()
                raise
            try:
                committed.wait(self._timeout)
            except OpenFlowError as exc:
                commit_error = exc
            except BaseException:
                barrier.drop()
                raise
            barrier.wait(self._timeout)
            open_error = self._open_error()
        finally:
            self._release()
        for error in (open_error, self._error, commit_error):
            if error is not None:
                raise error

    def discard(self) -> None:
        """Drop the bundle (best effort: a lost connection drops it anyway)."""
        if self._id is None:
            return
        try:
            self._ctrl(ofp.OFPBCT_DISCARD_REQUEST).wait(self._timeout)
        except (OpenFlowError, OpenFlowTimeout, ConnectionLost):
            pass
        finally:
            self._release()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """``with channel.open_bundle() as b:`` commits what was added when the
        block ends normally and discards it when the block raises."""
        if exc_type is None:
            self.commit()
        else:
            self.discard()
