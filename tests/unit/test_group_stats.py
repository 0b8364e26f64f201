"""Group stats replies read raw: which groups exist and how many buckets each has."""

from __future__ import annotations

import struct

from lbaffd.openflow.channel import Reply, group_bucket_counts

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
    assert group_bucket_counts(parts) == {100: 1201, 0xB0000001: 5, 0xC0000010: 0}
    assert group_bucket_counts([reply()]) == {}
