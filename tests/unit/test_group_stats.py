"""Group stats replies read raw: which groups exist and how many buckets each has."""

from __future__ import annotations

import struct

from lbaffd.openflow.groupdesc import group_bucket_counts
from lbaffd.openflow.replies import Reply

MULTIPART = struct.Struct("!BBHIHH4x")  # OF1.5 header + multipart type, flags


def entry(group_id: int, n_buckets: int) -> bytes:
    length = 40 + 16 * n_buckets
    return (struct.pack("!H2xII4xQQII", length, group_id, 1, 7, 700, 3, 0)
            + b"".join(struct.pack("!QQ", i, 10 * i) for i in range(n_buckets)))


def reply(*entries: bytes) -> Reply:
    body = b"".join(entries)
    raw = MULTIPART.pack(6, 19, 16 + len(body), 9, 7, 0) + body
    return Reply(19, 9, raw)


def test_bucket_counts_of_every_group_in_every_part() -> None:
    parts = [reply(entry(100, 1201), entry(0xB0000001, 5)), reply(entry(0xC0000010, 0))]
    assert group_bucket_counts(p.raw for p in parts) == {
        100: 1201, 0xB0000001: 5, 0xC0000010: 0}
    assert group_bucket_counts([reply().raw]) == {}


def test_bucket_counters_read_raw_as_os_ken_reads_them() -> None:
    """``groupdesc.iter_group_stats`` frames each group's counters without an
    object per bucket; the counters at the offsets it gives are those os-ken
    decodes from the same reply."""
    from os_ken.ofproto import ofproto_v1_5 as ofp

    from lbaffd.openflow.groupdesc import BUCKET_COUNTER, iter_group_stats

    body = entry(0xB0000001, 256) + entry(100, 0) + entry(0xB0000002, 3)
    r = Reply(19, 9, MULTIPART.pack(6, 19, 16 + len(body), 9, ofp.OFPMP_GROUP_STATS, 0) + body)
    got = [(gid, [BUCKET_COUNTER.unpack_from(r.raw, at + 16 * k) for k in range(n)])
           for gid, at, n in iter_group_stats(r.raw)]
    msg = r.parse()
    assert msg is not None
    want = [(g.group_id, [(b.packet_count, b.byte_count) for b in g.bucket_stats])
            for g in msg.body]
    assert got == want
    assert [len(b) for _, b in got] == [256, 0, 3]
    assert list(iter_group_stats(reply().raw)) == []
