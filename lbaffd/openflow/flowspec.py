"""Immutable, comparable descriptions of OpenFlow flows and groups.

The pipeline stages produce these, ``messages`` encodes them (``packed`` keeps
the encoded form: these objects live only while one VIP compiles), and it
decodes the switch's flow/group-desc replies back into them.  They are therefore
*canonical*: a flow reads back from ovs-vswitchd equal to the one that was sent
(the decoders normalise OVS's re-encodings such as OF1.5 ``copy_field`` for
``move``), so it encodes back to the very bytes that were sent.

Field names and values follow os-ken's OXM conventions (``ipv4_dst`` as a dotted
string, ``eth_dst`` as ``aa:bb:..``, registers as ints), because that is what the
field table ``oxm`` takes from os-ken says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

# Special OpenFlow ports (OF1.3+ 32-bit numbering).
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_NORMAL = 0xFFFFFFFA
OFPP_CONTROLLER = 0xFFFFFFFD
OFPCML_NO_BUFFER = 0xFFFF

MatchValue: TypeAlias = int | str | tuple[int, int] | tuple[str, str]


@dataclass(frozen=True, slots=True)
class Match:
    """A canonical OXM match: fields sorted by name, full masks folded away."""

    fields: tuple[tuple[str, MatchValue], ...] = ()
    # A match is hashed as part of every flow key in every index: a tuple does
    # not remember its hash, so this does (0: not computed yet).
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        h = self._hash
        if not h:
            h = hash(self.fields) or 1
            object.__setattr__(self, "_hash", h)
        return h

    @classmethod
    def of(cls, items: Mapping[str, MatchValue] | None = None, **kw: MatchValue) -> Match:
        merged: dict[str, MatchValue] = dict(items or {})
        merged.update(kw)
        return cls(tuple(sorted(merged.items())))

    def as_dict(self) -> dict[str, MatchValue]:
        return dict(self.fields)

    def __str__(self) -> str:
        return ",".join(f"{k}={_fmt(v)}" for k, v in self.fields)


def _fmt(v: MatchValue) -> str:
    if isinstance(v, tuple):
        a, b = v
        return f"{a:#x}/{b:#x}" if isinstance(a, int) else f"{a}/{b}"
    return f"{v:#x}" if isinstance(v, int) and v > 9 else str(v)


# ---------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Output:
    port: int
    max_len: int = 0  # bytes of the packet sent along when ``port`` is CONTROLLER


@dataclass(frozen=True, slots=True)
class SetField:
    """Set a whole OXM field (no mask) to an immediate value."""

    field: str
    value: int | str


@dataclass(frozen=True, slots=True)
class Move:
    """Copy ``n_bits`` from ``src[src_ofs:]`` to ``dst[dst_ofs:]`` (NXM/OXM names)."""

    src: str
    dst: str
    n_bits: int
    src_ofs: int = 0
    dst_ofs: int = 0


@dataclass(frozen=True, slots=True)
class Resubmit:
    table: int
    in_port: int = 0xFFF8  # OFPP_IN_PORT in the 16-bit NX encoding: "keep in_port"


@dataclass(frozen=True, slots=True)
class Group:
    group_id: int


@dataclass(frozen=True, slots=True)
class Nat:
    """``nat(KIND=ip_min[-ip_max][:port_min[-port_max]])`` inside ``ct()``.

    ``kind`` is ``dst``, ``src`` or ``""`` (plain ``nat``: apply the
    connection's existing translation, as for replies and established traffic).
    """

    kind: str = ""
    ip_min: str = ""
    ip_max: str = ""
    port_min: int = 0
    port_max: int = 0


@dataclass(frozen=True, slots=True)
class Ct:
    """``ct(commit?, zone=reg[ofs..]|imm, table=?, nat?)``.

    ``zone_field`` names a register (e.g. ``reg13``) holding the zone in its low
    16 bits; when empty the immediate ``zone`` is used.  ``table`` of ``None``
    means no recirculation.
    """

    commit: bool = False
    zone_field: str = ""
    zone: int = 0
    table: int | None = None
    nat: Nat | None = None
    mark: int | None = None  # exec(set_field:mark->ct_mark) on commit


@dataclass(frozen=True, slots=True)
class LearnMatchField:
    """Learned flow matches ``dst`` equal to the learning packet's ``src`` field."""

    src: str
    dst: str
    n_bits: int


@dataclass(frozen=True, slots=True)
class LearnMatchValue:
    """Learned flow matches ``dst`` equal to the immediate ``value``."""

    value: int
    dst: str
    n_bits: int


@dataclass(frozen=True, slots=True)
class LearnLoadValue:
    """Learned flow loads the immediate ``value`` into ``dst``."""

    value: int
    dst: str
    n_bits: int


@dataclass(frozen=True, slots=True)
class LearnLoadField:
    """Learned flow loads the learning packet's ``src`` field into ``dst``."""

    src: str
    dst: str
    n_bits: int


LearnSpec: TypeAlias = LearnMatchField | LearnMatchValue | LearnLoadValue | LearnLoadField

LEARN_SEND_FLOW_REM = 1
LEARN_DELETE_LEARNED = 2


@dataclass(frozen=True, slots=True)
class Learn:
    table: int
    specs: tuple[LearnSpec, ...]
    idle_timeout: int = 0
    hard_timeout: int = 0
    priority: int = 0x8000
    cookie: int = 0
    flags: int = 0
    fin_idle_timeout: int = 0
    fin_hard_timeout: int = 0


@dataclass(frozen=True, slots=True)
class Opaque:
    """An installed action or instruction lbaffd never emits (decoded for
    diffing only: a flow holding one never equals a desired flow)."""

    description: str


Action: TypeAlias = Output | SetField | Move | Resubmit | Group | Ct | Learn | Opaque


# ---------------------------------------------------------------- flows and groups


FlowKey: TypeAlias = tuple[int, int, Match]


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """One flow.  OpenFlow identity is ``key`` = (table, priority, match)."""

    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...]
    cookie: int
    idle_timeout: int = 0
    hard_timeout: int = 0
    flags: int = 0  # OFPFF_*; e.g. SEND_FLOW_REM on re-installed affinity entries
    # (table, priority, match): built once, so every index keyed by it shares
    # one tuple per flow instead of making its own
    key: FlowKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.table, self.priority, self.match))


@dataclass(frozen=True, slots=True)
class Bucket:
    bucket_id: int
    actions: tuple[Action, ...]
    weight: int = 100


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """A select group.  ``selection_method`` is ``dp_hash`` or ``hash``.

    ``fields`` are the OXM field names hashed by ``hash`` (e.g. ``ipv4_src``).
    ``owner_cookie`` is not on the wire (OpenFlow groups have no cookie); it
    ties the group to its owner in the desired state.
    """

    group_id: int
    buckets: tuple[Bucket, ...]
    selection_method: str = "dp_hash"
    fields: tuple[str, ...] = ()
    selection_param: int = 0
    owner_cookie: int = field(default=0, compare=False)
