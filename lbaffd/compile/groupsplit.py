"""Split a VIP's select group that OVS could not report back into two levels.

Why: OVS 3.1 installs a group of any size, but its group-desc reply cannot
carry one whose entry exceeds 16 bits of length (``ofp15_group_desc_stats``
has a 16-bit ``length``; ``ofputil_append_group_desc_reply`` writes it
truncated: ``ovs-ofctl dump-groups`` then shows nothing, and when another
group follows in the same reply ``ofpmp_postappend()`` asserts
``start_ofs <= UINT16_MAX`` and ovs-vswitchd aborts).  The group mod itself
also has a 16-bit length (the OpenFlow header's).  lbaffd reads every group
back (audits, restarts), so it never installs a group group-desc cannot
report: a VIP whose group would be larger becomes a *top* group whose
buckets each jump to one *part* group holding a contiguous slice of the
VIP's buckets.

How the properties of a single group are kept:

- Both levels use OVS's ``hash`` selection method
  (``pick_hash_fields_select_group`` in ofproto-dpif-xlate.c): the hash is
  seeded with ``hash_uint64(selection_method_param)`` and the bucket is chosen
  by rendezvous (``group_best_live_bucket``: the best
  ``hash_int(bucket_id, hash) & 0xffff`` times the weight).  The top group
  has its own ``selection_method_param`` (``TOP_PARAM``), so its hash is
  independent of the parts' (param 0, as an unsplit group's): a part does not
  see only the hash values that led to it.  ``dp_hash`` would not do: the
  datapath computes ``dp_hash`` once per packet and both levels would read the
  same low bits (``pick_dp_hash_select_group``).  So a split ``dp_hash`` VIP
  (no affinity, no ``selection_fields``) hashes its connection's addresses
  and ports instead (OVS already falls back from dp_hash to its default
  symmetric-L4 hash above 256 buckets: ``group_setup_dp_hash_table``).
- Parts are as equal as possible (sizes differ by at most one bucket) and
  the top group's buckets have equal weights: the rendezvous weight is a
  multiplier of a maximum, not a probability, so unequal parts could not be
  compensated exactly.  Each backend then gets 1/(k * part size) ~ 1/n.
- Affinity: the hashed fields are the client address at both levels, so
  the miss path is still a function of the client (back-to-back
  connections reach one backend before the learned entry exists).
- Bucket ids are the plan's (derived from the backends), unchanged in the
  parts; a part's slice is contiguous in the plan's (bucket id) order, so a
  backend added or removed shifts at most one bucket across each part
  boundary.  The top group's bucket ids are the part indexes.
- Part group ids are derived from the VIP's group id (``part_group_id``), in
  a range of their own, so a restart computes the very same ids and sends
  nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from lbaffd.model import ownership as own
from lbaffd.model.plan import VipPlan
from lbaffd.openflow import messages
from lbaffd.openflow.flowspec import Bucket, Group, GroupSpec

# The largest group body (OFPT_GROUP_MOD after its header; the same bytes
# OVS reports as the group-desc entry: both are 16-byte fixed parts followed
# by the buckets and the properties) that group-desc can report: the entry
# must fit its 16-bit length *and* a multipart reply (16-byte header) of its
# own, else the next entry's offset overflows in ofpmp_postappend().
GROUP_DESC_LIMIT: Final = 0xFFFF - 16
# ... and lbaffd sends every group mod inside an OFPT_BUNDLE_ADD_MESSAGE
# (16-byte header + the group mod's own 8), whose length is 16 bits too.
BUNDLE_ADD_LIMIT: Final = 0xFFFF - 16 - 8
GROUP_BODY_LIMIT: Final = min(GROUP_DESC_LIMIT, BUNDLE_ADD_LIMIT)
MAX_PARTS: Final = 16  # part ids: 4 bits under the VIP's id slot
TOP_PARAM: Final = 0x1BAF  # the top group's hash basis: any value but the parts' 0
GROUP_FIXED: Final = messages.GROUP_MOD.size
# no bucket lbaffd writes is larger (its largest, IPv6 with a port, is 96:
# header 16, ct(commit, nat, exec(ct_mark)) 72, weight 8; tested): a group
# with at most limit / this buckets fits without measuring it
MAX_BUCKET_BYTES: Final = 128

# The limit the compiler splits at.  A process setting, not a compile input:
# only tests lower it (``set_limit``), to exercise splitting and refusals
# with small groups; the daemon never changes it.
_limit = GROUP_BODY_LIMIT


def set_limit(limit: int) -> None:
    """Split groups above ``limit`` bytes (tests; at most ``GROUP_BODY_LIMIT``)."""
    global _limit
    if not GROUP_FIXED < limit <= GROUP_BODY_LIMIT:
        raise ValueError(f"group size limit must be in {GROUP_FIXED + 1}..{GROUP_BODY_LIMIT}")
    _limit = limit


def limit() -> int:
    return _limit


def may_split(n_buckets: int) -> bool:
    """Whether a group of ``n_buckets`` buckets could need splitting (the
    properties take at most 128 bytes: a method name and four fields)."""
    return n_buckets * MAX_BUCKET_BYTES > _limit - GROUP_FIXED - 128


class GroupTooLarge(ValueError):
    """The VIP's buckets do not fit in ``MAX_PARTS`` groups group-desc can report."""


def part_group_id(group_id: int, index: int) -> int:
    """The id of part ``index`` of the VIP group ``group_id``.

    Parts live in ``ownership.PART_GROUP_MIN..PART_GROUP_MAX``: the VIP's
    28-bit id slot shifted left by 4 bits plus the index (mod 2^28).  Two
    large VIPs collide only if their slots agree in their low 24 bits; the
    compiler then leaves the second out and reports it (a clash never
    overwrites a group)."""
    slot = (group_id - own.GROUP_ID_MIN) & (own.GROUP_ID_SPACE - 1)
    return own.PART_GROUP_MIN + (((slot << 4) | index) & (own.GROUP_ID_SPACE - 1))


def bucket_sizes(spec: GroupSpec) -> list[int]:
    """Each bucket's encoded size (as ``messages`` encodes it)."""
    return [len(messages.encode_bucket(b)) for b in spec.buckets]


def body_size(spec: GroupSpec, sizes: Sequence[int] | None = None) -> int:
    """The group body's size (group mod after its header = group-desc entry)."""
    props = messages.selection_method_property(spec.selection_method, spec.selection_param,
                                           spec.fields)
    return GROUP_FIXED + sum(bucket_sizes(spec) if sizes is None else sizes) + len(props)


def slices(n: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous slices of ``range(n)`` whose sizes differ by at most one."""
    return [(j * n // k, (j + 1) * n // k) for j in range(k)]


def split(spec: GroupSpec, l4_fields: tuple[str, ...],
          limit: int = GROUP_BODY_LIMIT) -> tuple[GroupSpec, ...]:
    """``spec`` itself when group-desc can report it; else the part groups
    followed by the top group (``spec``'s id), each within ``limit`` bytes.
    ``l4_fields``: what a ``dp_hash`` group hashes instead once split.
    Raises ``GroupTooLarge`` when ``MAX_PARTS`` parts are not enough."""
    sizes = bucket_sizes(spec)
    if body_size(spec, sizes) <= limit:
        return (spec,)
    fields = spec.fields if spec.selection_method == "hash" else l4_fields
    part_template = replace(spec, selection_method="hash", fields=fields, selection_param=0,
                            buckets=())
    fixed = body_size(part_template, ())
    prefix = [0]
    for s in sizes:
        prefix.append(prefix[-1] + s)
    for k in range(2, MAX_PARTS + 1):
        cuts = slices(len(sizes), k)
        if all(fixed + prefix[end] - prefix[start] <= limit for start, end in cuts):
            break
    else:
        raise GroupTooLarge(f"{len(sizes)} buckets ({prefix[-1]} bytes) need more than "
                            f"{MAX_PARTS} groups of at most {limit} bytes")
    parts = tuple(replace(part_template, group_id=part_group_id(spec.group_id, j),
                          buckets=spec.buckets[start:end])
                  for j, (start, end) in enumerate(cuts))
    top = replace(spec, selection_method="hash", fields=fields, selection_param=TOP_PARAM,
                  buckets=tuple(Bucket(j, (Group(p.group_id),)) for j, p in enumerate(parts)))
    if body_size(top) > limit:  # k <= 16 tiny buckets: cannot happen, but never install it
        raise GroupTooLarge(f"top group of {k} parts exceeds {limit} bytes")
    return (*parts, top)


def vip_groups(plan: VipPlan, spec: GroupSpec) -> tuple[GroupSpec, ...]:
    """The groups a VIP installs for its select group ``spec`` (see ``split``);
    a split ``dp_hash`` group hashes the connection's addresses (and ports,
    for a VIP with a port) at both levels."""
    if not may_split(len(spec.buckets)):
        return (spec,)
    ep = plan.vip.endpoint
    family = "ipv4" if ep.ip.version == 4 else "ipv6"
    l4: tuple[str, ...] = (f"{family}_src", f"{family}_dst")
    if ep.port is not None:
        l4 += (f"{plan.vip.protocol}_src", f"{plan.vip.protocol}_dst")
    return split(spec, l4, _limit)


def part_slices(n_buckets: int, n_parts: int) -> list[tuple[int, int]]:
    """Which of the plan's buckets part ``j`` holds (``split``'s layout), for
    reading per-bucket counters back from a split VIP's part groups."""
    return slices(n_buckets, n_parts)
