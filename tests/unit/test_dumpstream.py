"""A monitor reply split as it arrives gives the rows python-ovs's own parser
gives for the whole reply, wherever the text is cut, and leaves what follows
the reply untouched (``sb.dumpstream``)."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import ovs.json
import pytest

from lbaffd.sb.dumpstream import DumpSplitter, SplitError, Verdict, classify

NAMES = ["lb-é", 'quo"te', "back\\slash", "tab\t", "😀", "", "x" * 300]


def _row(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["initial", "insert", "modify", "delete"])
    if kind == "delete":
        return {"delete": None}
    columns: dict[str, Any] = {}
    for _ in range(rng.randint(0, 6)):
        columns[rng.choice(["name", "vips", "tunnel_key", "options", "datapath", "mac"])] = (
            rng.choice([
                rng.choice(NAMES),
                rng.randint(-2**63, 2**63 - 1),
                ["uuid", str(uuid.UUID(int=rng.getrandbits(128)))],
                ["set", [rng.choice(NAMES) for _ in range(rng.randint(0, 4))]],
                ["map", [[rng.choice(NAMES), f"10.0.0.{i}:80"] for i in range(rng.randint(0, 5))]],
                rng.random() * 1e6,
                rng.choice([True, False]),
            ]))
    return {kind: columns}


def _reply(rng: random.Random, request: int) -> tuple[str, dict[str, Any]]:
    updates = {table: {str(uuid.UUID(int=rng.getrandbits(128))): _row(rng)
                       for _ in range(rng.randint(0, 40))}
               for table in rng.sample(["Load_Balancer", "Port_Binding", "Chassis", "Empty"],
                                       rng.randint(0, 4))}
    found = rng.choice([True, False])
    last = rng.choice([str(uuid.UUID(int=rng.getrandbits(128))), None])
    reply = {"id": request, "result": [found, last, updates], "error": None}
    # as ovsdb-server writes it: compact, non-ASCII as UTF-8
    return json.dumps(reply, separators=(",", ":"), ensure_ascii=False), reply


def _split(text: str, request: int, rng: random.Random, batch: int) -> tuple[Any, ...]:
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 60))))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    got: dict[str, dict[str, Any]] = {}
    batches: list[int] = []

    def sink(rows: dict[str, dict[str, Any]]) -> None:
        batches.append(sum(map(len, rows.values())))
        for table, these in rows.items():
            got.setdefault(table, {}).update(these)

    buf, splitter, rest, head = "", None, None, None
    for piece in pieces:
        if rest is not None:
            rest += piece
            continue
        if splitter is None:
            buf += piece
            verdict, head = classify(buf, request)
            if verdict is Verdict.MORE:
                continue
            assert verdict is Verdict.STREAM and head is not None
            splitter = DumpSplitter(sink, batch=batch)
            piece = buf[head.length:]
        rest = splitter.feed(piece)
    return head, got, rest, batches


@pytest.mark.parametrize("seed", range(40))
def test_rows_equal_python_ovs_parse_wherever_cut(seed: int) -> None:
    rng = random.Random(seed)
    request = rng.randint(0, 10**6)
    text, _ = _reply(rng, request)
    after = rng.choice(['{"id":"echo","method":"echo","params":[]}', "", '{"id":null,'])
    head, got, rest, batches = _split(text + after, request, rng, batch=rng.randint(1, 50))
    whole = ovs.json.from_string(text)  # the reference: python-ovs's parser
    assert head is not None
    assert head.found is whole["result"][0]
    assert head.last_id == whole["result"][1]
    assert got == {t: rows for t, rows in whole["result"][2].items() if rows}
    assert rest == after
    assert all(n <= 50 for n in batches)


def test_classify() -> None:
    head = '{"id":12,"result":[false,"aaaaaaaa-0000-0000-0000-000000000000",{'
    verdict, parsed = classify(head + '"T":{}}],"error":null}', 12)
    assert verdict is Verdict.STREAM and parsed is not None
    assert (parsed.found, parsed.last_id, parsed.length) == (
        False, "aaaaaaaa-0000-0000-0000-000000000000", len(head))
    for partial in ("", "{", '{"id":1', '{"id":12,"result":[', '{"id":12,"result":[fal'):
        assert classify(partial, 12)[0] is Verdict.MORE, partial
    for other in ('{"id":"echo","result":[],"error":null}',  # an echo reply
                  '{"id":13,"result":[false,null,{}],"error":null}',  # another request's
                  '{"id":12,"result":null,"error":{"error":"unknown"}}',  # an error
                  '{"id":12,"result":{"T":{}},"error":null}',  # a monitor_cond reply
                  '{"method":"update3","params":[null,"x",{}],"id":null}',
                  '{ "id": 12, "result": [false, null, {}], "error": null}'):  # other spelling
        assert classify(other, 12)[0] is Verdict.NORMAL, other
    assert classify('{"id":12,"result":[true,null,{', None)[0] is Verdict.NORMAL


def test_malformed_replies_are_errors() -> None:
    for body in ('"T":[1]', '"T":{"u":{}}],"error":{"error":"x"}}', '"T":{"u"]', "1"):
        with pytest.raises(SplitError):
            DumpSplitter(lambda rows: None).feed(body + "}]}" + " " * 10)


def test_an_unfinished_value_waits_for_its_text() -> None:
    taken: list[dict[str, Any]] = []
    splitter = DumpSplitter(taken.append)
    assert splitter.feed('"T":{"u1":{"initial":{"name":"a"}},"u2":{"initial":{"na') is None
    assert taken == [{"T": {"u1": {"initial": {"name": "a"}}}}]
    assert splitter.feed('me":"b"}}}}],"error":null}{"id"') == '{"id"'
    assert taken[1] == {"T": {"u2": {"initial": {"name": "b"}}}}
    assert splitter.rows == 2
