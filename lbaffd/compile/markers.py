"""Marker values and slotted bodies: how a VIP's encoded flows are made
from the bytes of another VIP shaped like it (``shapes``, ``unrolled``).

A VIP compiled twice with two sets of marker values (A, B) in place of its
own (addresses, group id, identity) gives two encodings equal but for those
values; a *slot* is an offset where A's bytes hold one of A's values and B's
the same value of B (``SlotBody.find``).  Filling the slots with a real VIP's
values gives its bytes.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from lbaffd.compile.stages import addr_text, vip_mac
from lbaffd.model import ownership as own
from lbaffd.model.loadbalancer import Endpoint, IPAddress, Vip
from lbaffd.model.plan import VipPlan
from lbaffd.openflow.packed import FlowBody

# an owner key of a shared flow with the VIP's addresses as their index
OwnerPattern = tuple[str | int, ...]


@dataclass(frozen=True)
class Marks:
    """One set of marker values (A or B)."""

    uuid: str
    group_id: int
    first_addr: int
    tag6: int  # the first byte of each 32-bit word of an IPv6 marker
    mac_prefix: str

    def addr(self, k: int, v6: bool = False) -> IPAddress:
        """Address ``k`` of the marker set.  An IPv6 one has a distinct 32-bit
        word at each of its four positions (``tag6 + i``, then ``k``): the
        stages load an IPv6 address into registers word by word, so each word
        is a value of its own and must tell its address and position apart."""
        if v6:
            return ipaddress.IPv6Address(b"".join(
                bytes((self.tag6 + i, k >> 16 & 0xFF, k >> 8 & 0xFF, k & 0xFF))
                for i in range(4)))
        return ipaddress.IPv4Address(self.first_addr + k)

    def mac(self, i: int) -> str:
        return f"{self.mac_prefix}:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"


MARKS_A: Final = Marks("\x00template-a", 0xB0A1A2A3, int(ipaddress.IPv4Address("198.18.0.1")),
                        0xA4, "02:a0:a1")
MARKS_B: Final = Marks("\x00template-b", 0xB0B1B2B3, int(ipaddress.IPv4Address("198.19.0.1")),
                        0xC4, "02:b0:b1")
MARKER_VIP_KEY: Final = "vip"


def distinct_addresses(plan: VipPlan) -> tuple[IPAddress, ...]:
    """The VIP's distinct addresses, its own first, then its backends' in order."""
    seen = {int(ip): ip for ip in (plan.vip.endpoint.ip, *(be.ip for be in plan.vip.backends))}
    return tuple(seen.values())


@functools.lru_cache(maxsize=4096)
def marker_endpoint(marks: Marks, k: int, port: int | None, v6: bool) -> Endpoint:
    """One object per marker endpoint: it remembers its hash (shapes are dict keys)."""
    return Endpoint(marks.addr(k, v6), port)


def marked_plan(plan: VipPlan, addrs: Sequence[IPAddress], marks: Marks) -> VipPlan:
    """``plan`` with its values replaced by ``marks``' (everything else kept)."""
    index = {int(ip): k for k, ip in enumerate(addrs)}
    v6 = addrs[0].version == 6

    def ep(e: Endpoint) -> Endpoint:
        return marker_endpoint(marks, index[int(e.ip)], e.port, v6)

    vip = plan.vip
    mvip = Vip(MARKER_VIP_KEY, ep(vip.endpoint), vip.protocol, tuple(map(ep, vip.backends)))
    lb = replace(plan.lb, uuid=marks.uuid, name="", vips=(mvip,))
    return replace(plan, lb=lb, vip=mvip, owner=own.vip_owner(marks.uuid, MARKER_VIP_KEY),
                   group_id=marks.group_id, live_backends=tuple(map(ep, plan.live_backends)),
                   buckets=(), expected_shares=())


def mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def slot_values(plan: VipPlan, addrs: Sequence[IPAddress], macs: Sequence[str]) -> list[bytes]:
    """The VIP's values, in slot-index order (shared cookies are appended)."""
    vals = [own.owner_cookie(plan.owner).to_bytes(8, "big"), plan.group_id.to_bytes(4, "big"),
            mac_bytes(vip_mac(addr_text(plan.vip.endpoint.ip)))]
    vals += [ip.packed for ip in addrs]
    vals += [plan.learned_cookie(be).to_bytes(8, "big") for be in plan.live_backends]
    vals += [mac_bytes(m) for m in macs]
    if addrs and addrs[0].version == 6:  # loaded into registers a 32-bit word at a time
        vals += [w for ip in addrs for w in address_words(ip)]
    return vals


def address_words(ip: IPAddress) -> list[bytes]:
    """An IPv6 address's four 32-bit words, as the stages load it into registers."""
    packed = ip.packed
    return [packed[i:i + 4] for i in range(0, 16, 4)]


def shared_cookies(owners: Sequence[own.OwnerKey]) -> list[bytes]:
    """The cookies of the distinct owners of a VIP's shared flows, in order
    (flows of one owner share its cookie: one value, not two slots)."""
    return [own.owner_cookie(o).to_bytes(8, "big") for o in dict.fromkeys(owners)]


def owner_pattern(owner: own.OwnerKey, addr_texts: Sequence[str]) -> OwnerPattern:
    index = {t: k for k, t in enumerate(addr_texts)}
    return tuple(index.get(e, e) for e in owner)


def owner_from(pattern: OwnerPattern, addr_texts: Sequence[str]) -> own.OwnerKey:
    return tuple(addr_texts[e] if isinstance(e, int) else e for e in pattern)


@dataclass(frozen=True, slots=True)
class SlotBody:
    """A body as constant runs between slots: ``consts[0] v0 consts[1] v1 ...``."""

    consts: tuple[bytes, ...]
    refs: tuple[int, ...]  # value index of each slot

    def fill(self, vals: Sequence[bytes]) -> FlowBody:
        parts = [self.consts[0]]
        for ref, const in zip(self.refs, self.consts[1:], strict=True):
            parts.append(vals[ref])
            parts.append(const)
        return b"".join(parts)

    def around(self, ref: int, vals: Sequence[bytes]) -> tuple[bytes, bytes] | None:
        """The body filled with ``vals`` but for its one slot of value
        ``ref``: the bytes before and after it (None: ``ref`` fills no slot
        or more than one)."""
        if self.refs.count(ref) != 1:
            return None
        at = self.refs.index(ref)
        parts = [self.consts[0]]
        for i, (r, const) in enumerate(zip(self.refs, self.consts[1:], strict=True)):
            parts.append(b"\0" if i == at else vals[r])  # (a stand-in, split off below)
            if i == at:
                before = b"".join(parts[:-1])
                parts = []
            parts.append(const)
        return before, b"".join(parts)

    @classmethod
    def find(cls, a: bytes, b: bytes, va: Sequence[bytes], vb: Sequence[bytes]) -> SlotBody | None:
        """Slots of ``a``/``b`` (equal but for the values), or None."""
        if len(a) != len(b):
            return None
        slots: list[tuple[int, int, int]] = []
        for ref, (x, y) in enumerate(zip(va, vb, strict=True)):
            at = a.find(x)
            while at >= 0:
                if b[at:at + len(x)] == y:
                    slots.append((at, at + len(x), ref))
                at = a.find(x, at + 1)
        slots.sort(key=lambda s: (s[0], -s[1]))  # the longer first where two start together
        consts: list[bytes] = []
        refs: list[int] = []
        pos = 0
        for start, end, ref in slots:
            if start < pos:
                if end <= pos:
                    continue  # inside the slot before (a word of an IPv6 address): filled by it
                return None  # overlapping slots: ambiguous
            consts.append(a[pos:start])
            refs.append(ref)
            pos = end
        consts.append(a[pos:])
        return cls(tuple(consts), tuple(refs))


MARK_BUCKET_A: Final = 0x0A1A2A00
MARK_BUCKET_B: Final = 0x0B1B2B00


def bucketed_plan(plan: VipPlan, first_bucket: int) -> VipPlan:
    """A marker plan with one bucket per live backend, ids from ``first_bucket``."""
    return replace(plan, buckets=tuple((first_bucket + i, be)
                                       for i, be in enumerate(plan.live_backends)))
