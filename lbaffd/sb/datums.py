"""A monitor update's column values parsed as python-ovs parses them, faster.

An initial SB sync at N=5000 (realistic: 23.8k rows, 133k column values)
spent most of its Python time in ``Datum.from_json`` (python-ovs 3.1,
``ovs/db/data.py``): per atom it calls ``parser.float_to_int``, builds a
tuple of types, compares the atom's type with ``==`` four ways, and then
``Atom.check_constraints`` looks at enum, range and length.  For the values
a server sends -- of the column's JSON type, within its constraints -- the
result is one ``Atom(type, value)`` per key and value in a ``Datum``.

``datum_parser(type)`` decides once per column what that takes and builds
those same objects directly.  Anything else (another JSON type, a float
for an integer, a value outside the column's range, length or enum, a
malformed set or map, a duplicate, a named UUID) goes to
``Datum.from_json``, which then accepts it as before or raises the same
``ovs.db.error.Error``.  ``tests/unit/test_datums.py`` holds the parser
equal to ``Datum.from_json`` on random values of every column type of the
SB and Open_vSwitch schemas, valid and not.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from ovs import ovsuuid
from ovs.db import data, types

DatumParser = Callable[[Any], Any]  # JSON -> ovs.db.data.Datum
AtomMaker = Callable[[Any], Any]  # JSON -> ovs.db.data.Atom, or _Slow
_REFERENCES = 4096  # distinct UUID texts remembered per column (then forgotten at once)


class _Slow(Exception):
    """This value is not the common case: ``Datum.from_json`` decides."""


def _checked(base: Any, make: AtomMaker) -> AtomMaker:
    """``make``, then the enum check ``Atom.check_constraints`` does."""
    if base.enum is None:
        return make
    allowed = base.enum.values

    def in_enum(j: Any) -> Any:
        atom = make(j)
        if atom not in allowed:
            raise _Slow
        return atom
    return in_enum


def atom_maker(base: Any) -> AtomMaker:
    """A maker of ``base``'s atoms for the JSON a server sends (raises
    ``_Slow`` for anything it does not take as ``Atom.from_json`` would)."""
    t = base.type
    Atom = data.Atom
    if t == types.StringType:
        lo, hi = base.min_length, base.max_length

        def string(j: Any) -> Any:
            if type(j) is not str or not lo <= len(j) <= hi:
                raise _Slow
            return Atom(t, j)
        return _checked(base, string)
    if t == types.IntegerType:
        lo_i, hi_i = base.min, base.max

        def integer(j: Any) -> Any:
            if (type(j) is not int or (lo_i is not None and j < lo_i)
                    or (hi_i is not None and j > hi_i)):
                raise _Slow
            return Atom(t, j)
        return _checked(base, integer)
    if t == types.BooleanType:
        def boolean(j: Any) -> Any:
            if type(j) is not bool:
                raise _Slow
            return Atom(t, j)
        return _checked(base, boolean)
    if t == types.UuidType:
        match = ovsuuid.uuidRE.match
        UUID = uuid.UUID
        # references repeat (16.6k Port_Binding rows name 53 datapaths at
        # N=5000) and ``uuid.UUID`` parses its text in Python: one atom per
        # text, shared as ``SharedValues`` shares datums (python-ovs never
        # changes an atom), at most ``_REFERENCES`` of them
        seen: dict[str, Any] = {}

        def uuid_(j: Any) -> Any:
            if type(j) is not list or len(j) != 2 or j[0] != "uuid" or type(j[1]) is not str:
                raise _Slow
            atom = seen.get(j[1])
            if atom is None:
                if not match(j[1]):
                    raise _Slow
                if len(seen) >= _REFERENCES:
                    seen.clear()
                atom = seen[j[1]] = Atom(t, UUID(j[1]))
            return atom
        return _checked(base, uuid_)

    def slow(j: Any) -> Any:  # reals: rare, and float_to_int applies
        raise _Slow
    return slow


def datum_parser(type_: Any) -> DatumParser:
    """``json -> Datum`` for columns of ``type_`` (an ``ovs.db.types.Type``),
    equal to ``Datum.from_json(type_, json)``: the same atoms, the same
    errors (those come from ``Datum.from_json`` itself)."""
    Datum = data.Datum
    key = atom_maker(type_.key)
    n_min, n_max = type_.n_min, type_.n_max

    def reference(j: Any) -> Any:
        return Datum.from_json(type_, j)

    if type_.is_map():
        value = atom_maker(type_.value)

        def map_(j: Any) -> Any:
            try:
                if type(j) is not list or len(j) != 2 or j[0] != "map":
                    raise _Slow
                pairs = j[1]
                if type(pairs) is not list or not n_min <= len(pairs) <= n_max:
                    raise _Slow
                values = {}
                for pair in pairs:
                    if type(pair) is not list or len(pair) != 2:
                        raise _Slow
                    k = key(pair[0])
                    if k in values:
                        raise _Slow
                    values[k] = value(pair[1])
                return Datum(type_, values)
            except _Slow:
                return reference(j)
        return map_

    def set_or_scalar(j: Any) -> Any:
        try:
            if type(j) is list and j and j[0] == "set":
                if len(j) != 2:
                    raise _Slow
                members = j[1]
                if type(members) is not list or not n_min <= len(members) <= n_max:
                    raise _Slow
                values: dict[Any, None] = {}
                for member in members:
                    k = key(member)
                    if k in values:
                        raise _Slow
                    values[k] = None
                return Datum(type_, values)
            return Datum(type_, {key(j): None})
        except _Slow:
            return reference(j)
    return set_or_scalar


class SharedValues:
    """Equal single-valued datums of one update, one object for all rows.

    Most columns of a large table repeat a few values: at N=5000 (realistic)
    16.6k Port_Binding rows name 53 datapaths and 51 chassis, have ~330
    tunnel keys and mostly the type ``""``; each was a Datum, a dict, an Atom
    and a value of its own (~300-450 bytes): the IDL's rows took 67 MB, 37 MB
    shared.

    Only datums of at most one value are shared (``n_max == 1``, not empty):
    python-ovs replaces those on a change and never changes them in place
    (``Datum.diff`` returns the new datum; it edits ``values`` in place only
    for sets, maps and empty datums: ``ovs/db/data.py``), and lbaffd writes
    no row through these IDLs.  Kept for one ``Idl.run()`` (``clear``): an
    initial sync or resync is one update, and nothing outlives the rows."""

    __slots__ = ("_by_value",)

    def __init__(self) -> None:
        self._by_value: dict[tuple[int, object], Any] = {}

    def datum(self, column: int, datum: Any) -> Any:
        """``datum``, or an equal one seen before in column ``column`` (an
        id that stays the column's while the update is taken in)."""
        if datum.type.n_max != 1 or len(datum.values) != 1:
            return datum
        for k, v in datum.values.items():
            key = (column, k.value if v is None else (k.value, v.value))
        return self._by_value.setdefault(key, datum)

    def clear(self) -> None:
        self._by_value.clear()
