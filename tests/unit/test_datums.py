"""``sb.datums`` held equal to python-ovs's ``Datum.from_json`` on random
JSON values for every column type of the OVN SB and Open_vSwitch schemas:
the values a server sends (which take the fast path) and values it would
not send (other JSON types, out of range or enum, too many members,
duplicates, malformed sets and maps), which must come out of
``Datum.from_json`` exactly as before -- the same atoms or the same error."""

from __future__ import annotations

import functools
import json
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from ovs.db import data, error, schema, types

from lbaffd.sb.datums import datum_parser

SCHEMAS = (Path("/usr/share/ovn/ovn-sb.ovsschema"),
           Path("/usr/share/openvswitch/vswitch.ovsschema"))


def column_types() -> list[tuple[str, Any]]:
    out = []
    for path in SCHEMAS:
        db = schema.DbSchema.from_json(json.loads(path.read_text()))
        for table in db.tables.values():
            for column in table.columns.values():
                out.append((f"{db.name}.{table.name}.{column.name}", column.type))
    return out


def atom_json(rnd: random.Random, base: Any) -> Any:
    """Mostly a valid atom of ``base``; sometimes one of another type or
    outside its constraints."""
    t = base.type
    roll = rnd.random()
    if roll < 0.04:  # another JSON type
        return rnd.choice([1, 1.0, 2.5, True, False, "x", ["uuid", str(uuid.uuid4())],
                           ["named-uuid", "row1"], None, [], {}, ["set", []]])
    if base.enum is not None and roll < 0.7:
        return rnd.choice(list(base.enum.values)).value
    if t == types.StringType:
        n = rnd.choice([0, 1, 3, 8, 40])
        return "".join(rnd.choice("ab09:.-_é") for _ in range(n))
    if t == types.IntegerType:
        lo = base.min if base.min is not None else -(2 ** 40)
        hi = base.max if base.max is not None else 2 ** 40
        v = rnd.choice([lo, hi, lo - 1, hi + 1, rnd.randint(lo, hi), 0])
        return float(v) if roll > 0.95 else v
    if t == types.RealType:
        return rnd.choice([0, 1.5, -2.25, 10, 1e9])
    if t == types.BooleanType:
        return rnd.choice([True, False])
    assert t == types.UuidType
    u = str(uuid.UUID(int=rnd.getrandbits(128)))
    return rnd.choice([["uuid", u], ["uuid", u], ["uuid", u.upper()], ["uuid", u[:-1]],
                       ["uuid", u.replace("-", "")], ("uuid", u), ["uuid"]])


def datum_json(rnd: random.Random, type_: Any) -> Any:
    n = rnd.choice([0, 1, 1, 2, 3, 5, type_.n_max if type_.n_max < 10 else 9, type_.n_max + 1])
    n = max(0, min(n, 12))
    if type_.is_map():
        pairs = [[atom_json(rnd, type_.key), atom_json(rnd, type_.value)] for _ in range(n)]
        if pairs and rnd.random() < 0.05:
            pairs.append(list(pairs[0]))  # a duplicate key
        if pairs and rnd.random() < 0.03:
            pairs[0] = pairs[0][:1]  # not a pair
        return rnd.choice([["map", pairs]] * 8 + [["map", tuple(pairs)], ["set", pairs],
                                                   pairs, ["map", pairs, 1]])
    members = [atom_json(rnd, type_.key) for _ in range(n)]
    if members and rnd.random() < 0.05:
        members.append(members[0])  # a duplicate
    if members and rnd.random() < 0.5:
        return members[0]  # a one-member set, or a scalar, as its atom
    return rnd.choice([["set", members]] * 8 + [["set", tuple(members)], ["set"],
                                                 ["set", members, 0]])


def outcome(parse: Any, j: Any) -> tuple[str, Any]:
    try:
        d = parse(j)
    except error.Error as e:
        return "error", str(e)
    atoms = []
    for k, v in d.values.items():
        atoms.append((k.type.name, type(k.value).__name__, repr(k.value),
                      None if v is None else (v.type.name, type(v.value).__name__,
                                              repr(v.value))))
    return "datum", (id(d.type), sorted(atoms))


@pytest.mark.parametrize("seed", range(3))
def test_datums_equal_python_ovs_on_random_values(seed: int) -> None:
    rnd = random.Random(seed)
    fast_taken = errors = 0
    for name, type_ in column_types():
        parse = datum_parser(type_)
        for _ in range(60):
            j = datum_json(rnd, type_)
            want = outcome(functools.partial(data.Datum.from_json, type_), j)
            got = outcome(parse, j)
            assert got == want, (name, j)
            fast_taken += want[0] == "datum"
            errors += want[0] == "error"
            if want[0] == "datum":  # equal as python-ovs compares datums, too
                assert parse(j) == data.Datum.from_json(type_, j)
    assert fast_taken > 5000 and errors > 500  # both kinds were exercised


def test_the_common_values_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a server sends never reaches ``Datum.from_json``."""
    def refuse(*_: Any) -> Any:
        raise AssertionError("slow path taken")
    sb = {n: t for n, t in column_types()}
    values = {
        "OVN_Southbound.Load_Balancer.vips": ["map", [["10.0.0.1:80", "10.1.0.1:8080"]]],
        "OVN_Southbound.Load_Balancer.protocol": ["set", ["tcp"]],
        "OVN_Southbound.Load_Balancer.name": "lb1",
        "OVN_Southbound.Load_Balancer.datapaths": ["set", [["uuid", str(uuid.uuid4())]]],
        "OVN_Southbound.Port_Binding.tunnel_key": 7,
        "OVN_Southbound.Port_Binding.mac": "00:00:00:00:00:01 10.0.0.5",
        "OVN_Southbound.Port_Binding.chassis": ["uuid", str(uuid.uuid4())],
        "OVN_Southbound.Service_Monitor.status": "online",
        "Open_vSwitch.Interface.ofport": ["set", [3]],
    }
    parsers = {name: datum_parser(sb[name]) for name in values}
    monkeypatch.setattr(data.Datum, "from_json", refuse)
    for name, j in values.items():
        assert parsers[name](j).values, name


def test_shared_values_are_single_valued_and_per_column() -> None:
    from lbaffd.sb.datums import SharedValues

    by_name = dict(column_types())
    tunnel_key = by_name["OVN_Southbound.Port_Binding.tunnel_key"]
    chassis = by_name["OVN_Southbound.Port_Binding.chassis"]
    mac = by_name["OVN_Southbound.Port_Binding.mac"]
    u = ["uuid", str(uuid.uuid4())]
    shared = SharedValues()
    a, b = (data.Datum.from_json(tunnel_key, 7) for _ in range(2))
    assert shared.datum(1, a) is a and shared.datum(1, b) is a  # equal, one column: shared
    other = data.Datum.from_json(tunnel_key, 7)
    assert shared.datum(2, other) is other  # another column: not
    c1, c2 = (data.Datum.from_json(chassis, u) for _ in range(2))
    assert shared.datum(3, c1) is c1 and shared.datum(3, c2) is c1
    empty = data.Datum.from_json(chassis, ["set", []])
    assert shared.datum(3, empty) is empty  # empty: python-ovs edits those in place
    m1, m2 = (data.Datum.from_json(mac, ["set", ["x", "y"]]) for _ in range(2))
    assert shared.datum(4, m1) is m1 and shared.datum(4, m2) is m2  # sets: never
    shared.clear()
    assert shared.datum(1, b) is b  # a new update shares nothing with the last


def test_references_share_one_atom_per_text_and_stay_bounded() -> None:
    """A reference column parses each UUID text once (16.6k Port_Binding
    rows name 53 datapaths): repeated texts give one atom, equal to python-
    ovs's, and past ``_REFERENCES`` distinct texts the memo starts again."""
    from lbaffd.sb import datums

    type_ = dict(column_types())["OVN_Southbound.Port_Binding.datapath"]
    parse = datum_parser(type_)
    texts = [str(uuid.UUID(int=i + 1)) for i in range(datums._REFERENCES + 10)]
    first = [parse(["uuid", t]) for t in texts]
    again = [parse(["uuid", t]) for t in texts[-10:]]  # (the memo started again before these)
    for t, got in zip(texts, first, strict=True):
        assert got == data.Datum.from_json(type_, ["uuid", t])
    for a, b in zip(first[-10:], again, strict=True):
        assert a == b and next(iter(a.values)) is next(iter(b.values))


@pytest.mark.parametrize("seed", range(2))
def test_datum_value_equals_to_python(seed: int) -> None:
    """``sb.rows.datum_value``, what lbaffd reads every column through, equals
    python-ovs's ``Datum.to_python`` for every column type (references
    resolved by a stand-in for the IDL's ``_uuid_to_row``)."""
    from lbaffd.sb.rows import datum_value

    rnd = random.Random(seed)
    rows: dict[Any, str] = {}

    def uuid_to_row(value: Any, base: Any) -> Any:
        if base.ref_table_name:
            return rows.setdefault(value, f"row-{value}") if rnd.random() < 0.8 else None
        return value

    checked = 0
    for name, type_ in column_types():
        for _ in range(60):
            try:
                d = data.Datum.from_json(type_, datum_json(rnd, type_))
            except error.Error:
                continue
            state = rnd.getstate()
            want = d.to_python(uuid_to_row)
            rnd.setstate(state)  # (the stand-in draws: the same for both)
            assert datum_value(d, uuid_to_row) == want, name
            checked += 1
    assert checked > 5000
