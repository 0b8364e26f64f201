"""What the switch reports, brought to the desired state's form without
decoding it where the bytes already are lbaffd's.

A group-desc entry of a group lbaffd wrote differs from the group-mod body
it sent only in its 16-byte header: OVS parses the buckets and properties and
encodes them again for the reply (``ofputil_append_group_desc_reply``,
lib/ofp-group.c), which for lbaffd's encoding gives back the very bytes
(``tests/integration/test_decode_vs_ovs.py`` holds this against ovs-vswitchd),
so the body of an entry is a byte conversion (``group_body``).  When that equals
the desired body the group *is* the desired one (``messages`` encodes canonically and its
decoders are the inverse: decoding those bytes and encoding them again gives
the same bytes).  Only when they differ is the entry decoded
(``canonical_group``), to tell a real difference (a foreign edit) from bytes
OVS wrote another way.  A restart at N=5000 read 5,219 groups of up to 256
buckets back; decoding and re-encoding them was 20 % of its first pass.
"""

from __future__ import annotations

from typing import Final

from lbaffd.openflow import messages, packed
from lbaffd.openflow.groupdesc import GROUP_DESC
from lbaffd.openflow.packed import GroupBody

HEADER: Final = GROUP_DESC.size  # == messages.GROUP_MOD.size: both 16 bytes
assert messages.GROUP_MOD.size == HEADER


def group_body(entry: bytes) -> GroupBody:
    """The group-mod body (command ADD, as ``packed.pack_group`` writes it)
    with the very buckets and properties of a group-desc ``entry``."""
    _, gtype, gid, bucket_len = GROUP_DESC.unpack_from(entry)
    return messages.GROUP_MOD.pack(messages.OFPGC_ADD, gtype, gid, bucket_len,
                              messages.ANY) + entry[HEADER:]


def canonical_group(body: GroupBody) -> GroupBody:
    """``body`` as decoding its entry and encoding it again gives it (what
    ``packed.installed_group`` makes of the switch's report; foreign actions
    marked).  Idempotent: a body already in that form comes back equal."""
    if packed.is_foreign(body):
        return body  # only a decoded body carries the mark
    return packed.installed_group(packed.unpack_group(body))


class GroupCanonicalizer:
    """``canonical_group`` that counts the foreign groups it met (a pass
    reports how many entries held actions lbaffd never writes)."""

    def __init__(self) -> None:
        self.foreign = 0

    def __call__(self, body: GroupBody) -> GroupBody:
        out = canonical_group(body)
        self.foreign += packed.is_foreign(out)
        return out
