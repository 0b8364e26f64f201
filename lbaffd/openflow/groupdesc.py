"""Framing of OF1.5 group-desc and group-stats replies: where each entry and
bucket starts and ends, and the entries OVS reports with wrapped 16-bit lengths.  Decoding
an entry is ``messages.decode_group`` (``oskenfallback`` for the ones it
declines).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Final

from lbaffd.openflow.flowdesc import MULTIPART_REPLY_SIZE, DecodeError

OFPT_MULTIPART_REPLY: Final = 19
OFPGPT_EXPERIMENTER: Final = 0xFFFF
GROUP_DESC = struct.Struct("!HBxIH6x")  # length, type, group_id, bucket_array_len
BUCKET = struct.Struct("!HHI")  # len, action_array_len, bucket_id
PROP = struct.Struct("!HH")


def iter_group_entries(buf: bytes, offset: int = MULTIPART_REPLY_SIZE
                       ) -> Iterator[tuple[int, int, bytes]]:
    """(offset, group id, wire bytes) of each ``ofp_group_desc``, without
    decoding; ``DecodeError`` where an entry's length does not frame it."""
    while offset < len(buf):
        if offset + GROUP_DESC.size > len(buf):
            raise DecodeError(f"truncated group-desc entry at offset {offset}")
        length, _, group_id, _ = GROUP_DESC.unpack_from(buf, offset)
        if length < GROUP_DESC.size or offset + length > len(buf):
            raise DecodeError(f"bad group-desc entry length {length} at offset {offset}")
        yield offset, group_id, bytes(buf[offset:offset + length])
        offset += length


# OpenFlow 1.5 ``ofp_group_stats`` (40 bytes: length, pad, group_id, ref_count,
# pad, packet_count, byte_count, duration) and its ``ofp_bucket_counter``s
# (16 bytes: packet_count, byte_count); OVS: ofputil_encode_group_stats_reply
GROUP_STATS = struct.Struct("!H2xI8xQQ8x")
BUCKET_COUNTER = struct.Struct("!QQ")


def iter_group_stats(raw: bytes) -> Iterator[tuple[int, int, int]]:
    """(group id, offset of its first bucket counter, how many) of each
    ``ofp_group_stats`` in one multipart reply, without decoding the buckets.

    os-ken made an object of every bucket counter: a balanced VIP has 256
    buckets, and a scrape at N=1000 (realistic SB) took ~17 MB of Python
    objects at once for them, which left the RSS ~15 MB higher (issue 19)."""
    offset = MULTIPART_REPLY_SIZE
    while offset + GROUP_STATS.size <= len(raw):
        length, group_id, _, _ = GROUP_STATS.unpack_from(raw, offset)
        if length < GROUP_STATS.size or offset + length > len(raw):
            raise ValueError(f"bad group-stats entry length {length} at offset {offset}")
        yield (group_id, offset + GROUP_STATS.size,
               (length - GROUP_STATS.size) // BUCKET_COUNTER.size)
        offset += length


def group_bucket_counts(raws: Iterable[bytes]) -> dict[int, int]:
    """group id -> number of buckets, from group-stats replies (raw: no
    objects for 5000 groups)."""
    return {gid: n for raw in raws for gid, _, n in iter_group_stats(raw)}



WRAP = 1 << 16  # OpenFlow lengths are 16-bit


def _props_fit(buf: bytes, pos: int, end: int) -> bool:
    """The group properties from ``pos`` end exactly at ``end``.  OF1.5
    defines one group property type, OFPGPT_EXPERIMENTER (OVS writes only
    the NTR selection method), each padded to 8 bytes."""
    while pos < end:
        if pos + PROP.size > end:
            return False
        ptype, plen = PROP.unpack_from(buf, pos)
        if ptype != OFPGPT_EXPERIMENTER or plen < 12:
            return False
        pos += (plen + 7) // 8 * 8
    return pos == end


def entry_framed(buf: bytes, offset: int, length: int, bucket_len: int) -> bool:
    """The entry's buckets (each by its own length) end exactly where the
    bucket list does, and its properties exactly where the entry does."""
    end = offset + length
    pos = offset + GROUP_DESC.size
    buckets_end = pos + bucket_len
    if length < GROUP_DESC.size or end > len(buf) or buckets_end > end:
        return False
    while pos < buckets_end:
        if pos + BUCKET.size > buckets_end:
            return False
        blen, alen, _ = BUCKET.unpack_from(buf, pos)
        if blen < BUCKET.size or alen > blen - BUCKET.size:
            return False
        pos += blen
    return pos == buckets_end and _props_fit(buf, pos, end)


def first_unframed_entry(buf: bytes, offset: int = MULTIPART_REPLY_SIZE) -> int | None:
    """Offset of the first ``ofp_group_desc`` of a reply message whose lengths
    do not add up (None: the whole message is well framed)."""
    while offset < len(buf):
        if offset + GROUP_DESC.size > len(buf):
            return offset
        length, _, _, bucket_len = GROUP_DESC.unpack_from(buf, offset)
        if not entry_framed(buf, offset, length, bucket_len):
            return offset
        offset += length
    return None


def group_desc_framed(buf: bytes) -> bool:
    """A group-desc reply message whose entries add up exactly."""
    return len(buf) >= MULTIPART_REPLY_SIZE and first_unframed_entry(buf) is None


def oversized_entry_fits(buf: bytes, offset: int) -> int | None:
    """Where the bucket list of the entry at ``offset`` ends, if the entry is
    a complete, well-framed group that ends exactly at the end of ``buf``, its
    16-bit entry and bucket-list lengths being the true ones modulo 2^16;
    else None.

    OVS 3.1 reports a group whose description exceeds 64 KiB (~800 buckets)
    with every length wrapped: ``ofputil_append_group_desc_reply`` stores the
    entry and bucket list lengths in 16 bits, ``ofpmp_postappend`` moves the
    entry into a message of its own, which ``ofpmsg_update_length`` then
    labels with the wrapped size.  Buckets keep true lengths, so the bucket
    walk finds the true end of the bucket list.
    """
    if offset + GROUP_DESC.size > len(buf):
        return None
    length, _, _, bucket_len = GROUP_DESC.unpack_from(buf, offset)
    true_len = len(buf) - offset
    if true_len % WRAP != length % WRAP or true_len < WRAP:
        return None
    pos = start = offset + GROUP_DESC.size
    while True:
        if (pos - start) % WRAP == bucket_len and _props_fit(buf, pos, len(buf)):
            return pos
        if pos + BUCKET.size > len(buf):
            return None
        blen, alen, _ = BUCKET.unpack_from(buf, pos)
        if blen < BUCKET.size or alen > blen - BUCKET.size:
            return None
        pos += blen


def looks_wrapped(buf: bytes, offset: int) -> bool:
    """The entry at ``offset`` ends where ``buf`` does by its (16-bit) length,
    yet its buckets, walked by their own lengths, are all well formed and run
    past the claimed end of the bucket list to the end of ``buf``: the head of
    an entry whose lengths wrapped (see ``oversized_entry_fits``), the rest of
    which is still to come."""
    if offset + GROUP_DESC.size > len(buf):
        return False
    length, _, _, bucket_len = GROUP_DESC.unpack_from(buf, offset)
    if offset + length != len(buf):
        return False
    pos = start = offset + GROUP_DESC.size
    while pos + BUCKET.size <= len(buf):
        blen, alen, _ = BUCKET.unpack_from(buf, pos)
        if blen < BUCKET.size or alen > blen - BUCKET.size:
            return False
        pos += blen
    return bool(pos - start > bucket_len)


def count_buckets(buf: bytes, offset: int, bucket_list_end: int | None = None) -> int:
    """How many buckets the entry at ``offset`` has, walking their lengths up
    to ``bucket_list_end`` (default: the entry's own bucket list length)."""
    _, _, _, bucket_len = GROUP_DESC.unpack_from(buf, offset)
    pos = offset + GROUP_DESC.size
    end = bucket_list_end if bucket_list_end is not None else pos + bucket_len
    n = 0
    while pos + BUCKET.size <= min(end, len(buf)):
        blen = BUCKET.unpack_from(buf, pos)[0]
        if blen < BUCKET.size:
            break
        pos += blen
        n += 1
    return n
