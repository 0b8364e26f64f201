"""One example per bug the decoder fuzzing (``test_fuzz_decoders``) found, and
the channel's recovery from OVS 3.1's wrapped group-desc lengths on bytes
laid out as ovs-vswitchd sends them (captured shape: a 1200-bucket group 100
arrived as a message claiming 0x2c48 bytes, entry length 0x2c38, bucket list
0x2c00: each the true value minus 65536)."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from lbaffd.openflow import channel, flowdesc, groupdesc, messages, oskenfallback, replies, stream
from lbaffd.openflow.flowdesc import DecodeError
from tests.unit.test_fuzz_decoders import bounded, reply

OUTPUT = struct.pack("!HHIH6x", 0, 16, 1, 0)


def bucket(i: int) -> bytes:
    """A 64-byte bucket: an output action and padding to a typical size."""
    actions = OUTPUT * 3
    return struct.pack("!HHI", 8 + len(actions) + 8, len(actions), i) + actions + \
        struct.pack("!HHH2x", 0, 8, 100)  # weight property


SELECTION = struct.pack("!HHII", 0xFFFF, 40, messages.NTR_EXPERIMENTER, 1) + bytes(4) + \
    b"dp_hash".ljust(16, b"\0") + struct.pack("!Q", 0)


def group_entry(group_id: int, n: int) -> bytes:
    buckets = b"".join(bucket(i) for i in range(n))
    body = buckets + SELECTION
    return struct.pack("!HBxIH6x", (16 + len(body)) & 0xFFFF, 1, group_id,
                       len(buckets) & 0xFFFF) + body


def test_zero_length_flow_entry_does_not_loop() -> None:
    msg = reply(1, bytes(64))
    with bounded(), pytest.raises(DecodeError):
        list(flowdesc.iter_entries(msg))


def test_zero_length_group_entry_does_not_loop() -> None:
    msg = reply(7, bytes(32))
    with bounded(), pytest.raises(DecodeError):
        list(groupdesc.iter_group_entries(msg))


def test_zero_length_bucket_does_not_loop() -> None:
    entry = struct.pack("!HBxIH6x", 32, 1, 5, 16) + bytes(16)  # a bucket of length 0
    with bounded(), pytest.raises(DecodeError):
        oskenfallback.decode_group_entry(entry, 0)
    with bounded(), pytest.raises(DecodeError):
        messages.decode_group(entry, 0)


def test_zero_length_action_nested_in_ct_does_not_loop() -> None:
    """os-ken's NXActionCT parser walks nested actions by their length."""
    ct = struct.pack("!HHIHHIHB3xH", 0xFFFF, 32, oskenfallback.NX_VENDOR, 35, 1, 0, 0, 0xFF, 0) + \
        bytes(8)  # a nested "action" of length 0
    with bounded(), pytest.raises(DecodeError):
        oskenfallback.parse_actions(ct, 0, len(ct))


def test_non_ascii_selection_method_name() -> None:
    data = bytes(4) + b"\xffbad".ljust(16, b"\0") + bytes(8)
    with pytest.raises(DecodeError):
        messages.decode_selection_method(data)


def test_short_multipart_reply_is_not_more() -> None:
    """A 8-byte multipart reply used to raise struct.error in the reader thread
    (which dropped the connection)."""
    assert replies.Reply(19, 1, struct.pack("!BBHI", 6, 19, 8, 1)).more is False


def test_framing_of_real_group_desc_replies() -> None:
    msg = reply(7, group_entry(1, 3) + group_entry(2, 0))
    assert groupdesc.group_desc_framed(msg)
    assert [g for _, g, _ in groupdesc.iter_group_entries(msg)] == [1, 2]


@pytest.mark.parametrize("n", [1200, 2100, 5000])
def test_channel_skips_a_group_too_large_for_openflow(n: int) -> None:
    """The last part of a group-desc reply holds a group of ``n`` 64-byte
    buckets with every length wrapped (true size > 64 KiB): the channel
    reads the rest of it, reports it and hands on the message without it;
    the next message in the stream is read intact."""
    entry = group_entry(100, n)
    true_size = 16 + n * 64 + len(SELECTION)
    assert true_size > 0xFFFF
    whole = struct.pack("!BBHIHH4x", 6, 19, (16 + true_size) & 0xFFFF, 9, 7, 0) + entry
    assert len(whole) == 16 + true_size
    echo = struct.pack("!BBHI", 6, 3, 8, 77)
    a, b = socket.socketpair()
    seen: list[replies.SkippedEntry] = []
    ch = channel.OpenFlowChannel("unix:/nonexistent", on_skipped=seen.append)
    sender = threading.Thread(target=b.sendall, args=(whole + echo,), daemon=True)
    try:
        sender.start()  # a socketpair holds less than the message: send meanwhile
        with bounded(5.0):
            raw = stream.read_msg(a)
            assert stream.last_group_desc_part(raw)
            assert not groupdesc.group_desc_framed(raw)
            kept = ch._read_oversized_group(a, raw)
            assert stream.read_msg(a) == echo  # in step again
        sender.join(5.0)
    finally:
        a.close()
        b.close()
    assert kept == struct.pack("!BBHIHH4x", 6, 19, 16, 9, 7, 0)
    assert seen == [replies.SkippedEntry("group", 100, true_size, n)]



@pytest.mark.parametrize("raw", [
    struct.pack("!BBHIHH", 6, 19, 12, 1, 7, 0),  # a group-desc reply cut to 12 bytes
    reply(7, struct.pack("!HBxIH6x", 40, 1, 5, 16) + bytes(24)),  # bad inner lengths
])
def test_malformed_last_group_desc_part_is_handed_on_as_is(raw: bytes) -> None:
    """Only the wrapped-length shape makes the channel read on; anything else
    stays in the message for the decoders (the socket is not touched)."""
    ch = channel.OpenFlowChannel("unix:/nonexistent")
    a, b = socket.socketpair()
    try:
        assert stream.last_group_desc_part(raw) and not groupdesc.group_desc_framed(raw)
        with bounded(2.0):
            assert ch._read_oversized_group(a, raw) == raw
    finally:
        a.close()
        b.close()
