"""Who owns a flow or group on the switch: cookies and group ids.

Like ovn-controller's ofctrl, ownership is written on the switch itself, so
after a restart lbaffd can tell its flows from anyone else's and map them back
to the load balancer that produced them.

Cookie layout (64 bits)::

  63..48  magic  0x1baf = flow managed by lbaffd (diffed and repaired)
                 0x1bae = flow *learned* by an lbaffd learn action (never diffed)
  47..0   48-bit hash of the owner key, e.g. ("vip", lb_uuid, "10.0.0.100:80")

OVN's cookies are 32-bit (a logical flow's uuid prefix), so both magics keep
lbaffd out of OVN's cookie space.  Groups have no cookie in OpenFlow: lbaffd
uses ids in ``GROUP_ID_MIN..GROUP_ID_MAX`` (OVN allocates small ids from 1),
and ``PART_GROUP_MIN..PART_GROUP_MAX`` for the parts of split VIP groups.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping

OwnerKey = tuple[str, ...]

MAGIC_SHIFT = 48
MAGIC_MASK = 0xFFFF << MAGIC_SHIFT
MANAGED_MAGIC = 0x1BAF
LEARNED_MAGIC = 0x1BAE
MANAGED_COOKIE = MANAGED_MAGIC << MAGIC_SHIFT
LEARNED_COOKIE = LEARNED_MAGIC << MAGIC_SHIFT
OWNER_MASK = (1 << MAGIC_SHIFT) - 1
FULL_MASK = (1 << 64) - 1

GROUP_ID_MIN = 0xB0000000
GROUP_ID_SPACE = 1 << 28
GROUP_ID_MAX = GROUP_ID_MIN + GROUP_ID_SPACE - 1
# the part groups of VIPs too large for one group (``groupsplit``): no flow
# names them, only their VIP's top group does
PART_GROUP_MIN = 0xC0000000
PART_GROUP_MAX = PART_GROUP_MIN + GROUP_ID_SPACE - 1

GLOBAL_OWNER: OwnerKey = ("global",)


def _hash(key: OwnerKey, bits: int) -> int:
    digest = hashlib.blake2b("\x1f".join(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << bits) - 1)


@functools.lru_cache(maxsize=1 << 12)
def owner_cookie(key: OwnerKey) -> int:
    """Cookie of the flows ``key`` owns."""
    return MANAGED_COOKIE | _hash(key, MAGIC_SHIFT)


def learned_cookie(key: OwnerKey) -> int:
    """Cookie given to flows learned for ``key`` (a VIP's backend)."""
    return LEARNED_COOKIE | _hash(key, MAGIC_SHIFT)


def is_managed(cookie: int) -> bool:
    return cookie & MAGIC_MASK == MANAGED_COOKIE


def is_learned(cookie: int) -> bool:
    return cookie & MAGIC_MASK == LEARNED_COOKIE


def is_lbaffd_group(group_id: int) -> bool:
    """A group lbaffd owns: a VIP's group or a part of a split one."""
    return GROUP_ID_MIN <= group_id <= GROUP_ID_MAX or PART_GROUP_MIN <= group_id <= PART_GROUP_MAX


def is_vip_group(group_id: int) -> bool:
    """A VIP's own group id (the one its flows name), not a part group."""
    return GROUP_ID_MIN <= group_id <= GROUP_ID_MAX


# The owner key of every VIP in use, interned: one tuple per VIP, shared by
# the dozen indexes it keys.  Held while the VIP is in the state and dropped
# when it leaves (``retain_vip_owners`` after a full pass, ``drop_vip_owners``
# after a step).  An ``lru_cache`` of 16k did this before and kept every VIP
# churn ever brought until full: ~360 bytes each with the strings it kept
# alive, ~5.9 MB on a node whose services are replaced for weeks (issue 19).
# Dropping a key that is still referenced costs only its sharing: the next
# call makes an equal tuple, and nothing compares owners by identity.
_VIP_OWNERS: dict[OwnerKey, OwnerKey] = {}
VIP_OWNERS_MAX = 1 << 15  # a bound all the same (cleared when reached)


def vip_owner(lb_uuid: str, vip_key: str) -> OwnerKey:
    """The owner key of a VIP: ``("vip", lb_uuid, vip_key)``, one tuple per VIP."""
    key = ("vip", lb_uuid, vip_key)
    owner = _VIP_OWNERS.get(key)
    if owner is None:
        if len(_VIP_OWNERS) >= VIP_OWNERS_MAX:
            _VIP_OWNERS.clear()
        owner = _VIP_OWNERS[key] = key
    return owner


def retain_vip_owners(live: Iterable[OwnerKey]) -> None:
    """Keep only the interned owners of ``live`` (the VIPs a full pass kept)."""
    kept = {o: owner for o in live if (owner := _VIP_OWNERS.get(o)) is not None}
    _VIP_OWNERS.clear()  # (a new table: a dict does not shrink as keys go)
    _VIP_OWNERS.update(kept)


def drop_vip_owners(gone: Iterable[OwnerKey]) -> None:
    """Forget the interned owners of VIPs that left the state."""
    for owner in gone:
        _VIP_OWNERS.pop(owner, None)


def vip_owners_held() -> int:
    """How many owners are interned (``bench.memprobe``)."""
    return len(_VIP_OWNERS)


def allocate_group_ids(
    owners: Iterable[OwnerKey], previous: Mapping[OwnerKey, int]
) -> dict[OwnerKey, int]:
    """Stable group id per owner.

    An owner keeps the id it already has (``previous``, recovered from the
    switch after a restart); a new owner gets its hash slot, or the next free
    one on a collision.  Pure: same inputs, same ids.
    """
    wanted = sorted(set(owners))
    result: dict[OwnerKey, int] = {}
    taken: set[int] = set()
    for owner in wanted:
        gid = previous.get(owner)
        if gid is not None and is_lbaffd_group(gid) and gid not in taken:
            result[owner] = gid
            taken.add(gid)
    for owner in wanted:
        if owner not in result:
            result[owner] = allocate_one(owner, taken)
    return result


def allocate_one(owner: OwnerKey, taken: set[int]) -> int:
    """A new owner's id: its hash slot, or the next free one; added to ``taken``."""
    slot = _hash(owner, 28)
    while GROUP_ID_MIN + slot in taken:
        slot = (slot + 1) % GROUP_ID_SPACE
    taken.add(GROUP_ID_MIN + slot)
    return GROUP_ID_MIN + slot


AUDIT_CHUNKS = 64  # slices of the owner-hash space an audit reads one at a time
CHUNK_SHIFT = MAGIC_SHIFT - 6  # the top 6 bits of the owner hash in the cookie
CHUNK_MASK = (AUDIT_CHUNKS - 1) << CHUNK_SHIFT


def audit_chunk(cookie: int) -> int:
    """Which audit slice a managed flow's cookie falls in."""
    return (cookie & CHUNK_MASK) >> CHUNK_SHIFT
