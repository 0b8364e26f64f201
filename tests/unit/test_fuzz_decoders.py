"""Property-based fuzzing of the flow-desc / group-desc decoders and of the
channel's message framing, on random, mutated and truncated bytes.

What the switch sends is untrusted input: a decoder either returns or raises
``DecodeError`` (its documented error, a ``ValueError``); it never raises
anything else, never loops (each call runs under a 10 s CPU-time alarm: far
beyond any real decode) and never allocates more than a bounded amount
(tracemalloc peak per call).  The seeds
are real entries: every kind of flow and group lbaffd compiles, laid out as
OVS reports them, plus foreign ones.
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lbaffd.openflow import channel, flowdesc, groupdesc, messages, oskenfallback, replies
from lbaffd.openflow import stream as framing
from lbaffd.openflow.flowdesc import DecodeError
from tests.unit import fuzzprofile
from tests.unit.test_decode_vs_fallback import FOREIGN, entry, group_entry, groups, varied

fuzzprofile.load()

FLOW_SEEDS = [entry(f) for f in varied()] + list(FOREIGN.values())
GROUP_SEEDS = [group_entry(g) for g in list(groups())[:40]]
MAX_ALLOC = 8 << 20  # bytes a decoder may hold at once for a <=64 KiB message


class Hang(BaseException):
    """Raised by the alarm: not an Exception, so no decoder can swallow it."""


@contextmanager
def bounded(seconds: float = 10.0) -> Iterator[None]:
    """Raise ``Hang`` once the call has used ``seconds`` of CPU time (a virtual
    timer: a process starved on a loaded machine is not mistaken for a loop)
    and check the peak allocation."""
    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"no result within {seconds}s of CPU time")
    old = signal.signal(signal.SIGVTALRM, alarm)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
        assert peak < MAX_ALLOC, f"a decoder held {peak} bytes"
    finally:
        tracemalloc.stop()
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, old)


def only_documented(fn: Callable[[], object]) -> None:
    with suppress(DecodeError):
        fn()


def reply(mp_type: int, body: bytes, flags: int = 0) -> bytes:
    return struct.pack("!BBHIHH4x", 6, 19, (16 + len(body)) & 0xFFFF, 7, mp_type, flags) + body


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A real entry with a few bytes or 16-bit words overwritten, cut short,
    or with random bytes inserted; or random bytes altogether."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 3)) if len(data) > 2 else 3
        pos = draw(st.integers(0, max(0, len(data) - 2)))
        if kind == 0:
            data[pos:pos + 2] = draw(st.sampled_from([b"\0\0", b"\xff\xff", b"\0\x08",
                                                      b"\0\x04", b"\0\x01"]))
        elif kind == 1:
            data[pos] = draw(st.integers(0, 255))
        elif kind == 2:
            del data[draw(st.integers(0, len(data))):]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def decode_flow_reply(msg: bytes) -> None:
    """What the reconciler and the counters do with a flow-desc reply."""
    for offset, _, _ in flowdesc.iter_entries(msg):
        only_documented(lambda o=offset: messages.decode_flow(msg, o))
        only_documented(lambda o=offset: oskenfallback.decode_entry(msg, o, with_actions=False))
        only_documented(lambda o=offset: oskenfallback.decode_entry(msg, o))
    flowdesc.monitor_update_cookies(msg)


def decode_group_reply(msg: bytes) -> None:
    groupdesc.group_desc_framed(msg)
    for offset, _, _ in groupdesc.iter_group_entries(msg):
        only_documented(lambda o=offset: messages.decode_group(msg, o))
        only_documented(lambda o=offset: oskenfallback.decode_group_entry(msg, o))
    for offset, _, _ in groupdesc.iter_group_entries(msg):
        for prop in oskenfallback.decode_group_entry(msg, offset).properties:
            only_documented(lambda p=prop: messages.decode_selection_method(p.data))


@given(entries=st.lists(mutated(FLOW_SEEDS), min_size=1, max_size=3))
def test_flow_desc_decoders(entries: list[bytes]) -> None:
    msg = reply(1, b"".join(entries))
    with bounded():
        only_documented(lambda: decode_flow_reply(msg))
        for e in entries:  # the entry alone, as the decode cache hands it over
            only_documented(lambda x=e: messages.decode_flow(x, 0))


@given(entries=st.lists(mutated(GROUP_SEEDS), min_size=1, max_size=3))
def test_group_desc_decoders(entries: list[bytes]) -> None:
    msg = reply(7, b"".join(entries))
    with bounded():
        only_documented(lambda: decode_group_reply(msg))
        for e in entries:
            only_documented(lambda x=e: messages.decode_group(x, 0))


@given(seed=st.sampled_from(FLOW_SEEDS + GROUP_SEEDS), cut=st.integers(0, 400))
def test_truncated_entries(seed: bytes, cut: int) -> None:
    case = seed[:cut]
    with bounded():
        only_documented(lambda: messages.decode_flow(case, 0))
        only_documented(lambda: messages.decode_group(case, 0))
        only_documented(lambda: decode_flow_reply(reply(1, case)))
        only_documented(lambda: decode_group_reply(reply(7, case)))


@given(raw=st.binary(min_size=8, max_size=600), msg_type=st.sampled_from(
    [0, 1, 10, 11, 12, 19, 20, 30, 255]))
def test_reply_parse_returns_a_message_or_none(raw: bytes, msg_type: int) -> None:
    """``Reply.parse`` (os-ken, for async messages and the rest) never raises."""
    raw = struct.pack("!BBHI", 6, msg_type, len(raw), 1) + raw[8:]
    with bounded():
        r = replies.Reply(msg_type, 1, raw)
        r.parse()
        assert isinstance(r.more, bool)


@given(stream=st.binary(max_size=300))
@example(stream=b"\x06\x13\x00\x00\x00\x00\x00\x01")  # "bad OpenFlow length 0"
def test_read_msg_frames_or_fails_with_connection_lost(stream: bytes) -> None:
    a, b = socket.socketpair()
    try:
        b.sendall(stream)
        b.close()
        with bounded():
            got = 0
            while True:
                try:
                    msg = framing.read_msg(a)
                except replies.ConnectionLost:
                    break
                assert len(msg) >= 8 and len(msg) == struct.unpack_from("!H", msg, 2)[0]
                got += len(msg)
            assert got <= len(stream)
    finally:
        a.close()


def test_alarm_catches_a_hang() -> None:
    """The guard itself works (a decoder that loops would be reported)."""
    done = threading.Event()
    with pytest.raises(Hang), bounded(0.2):
        while not done.is_set():
            pass


@given(msgs=st.lists(st.tuples(st.sampled_from([0, 1, 3, 4, 10, 11, 12, 19, 21, 30, 99]),
                               st.sampled_from([1, 2, 0xFFFFFFFF]),
                               st.binary(max_size=64)), max_size=8))
def test_dispatch_routes_anything_without_raising(
        msgs: list[tuple[int, int, bytes]]) -> None:
    """The reader thread's routing (replies to waiters, errors, async) takes any
    well-framed message; an exception there would drop the connection.  (Echo
    requests are left out: answering one needs the socket.)"""
    seen: list[replies.Reply] = []
    ch = channel.OpenFlowChannel("unix:/nonexistent", on_async=seen.append)
    xid, waiter = ch._register()
    assert xid == 1
    with bounded():
        for msg_type, x, body in msgs:
            ch._dispatch(struct.pack("!BBHI", 6, msg_type, 8 + len(body), x) + body)
    if waiter.error is not None:
        assert isinstance(waiter.error, replies.OpenFlowError)
