"""A monitor reply split into its rows as its text arrives (``DumpSplitter``).

python-ovs parses a JSON-RPC message whole before the IDL sees any of it:
a ``monitor_cond_since`` reply that is a new dump (a standalone SB restarted
keeps no transaction history) becomes one tree of Python objects, ~13 MB at
N=1000 and ~75 MB at N=5000 for a 6.6 MB reply, allocated at once on top of
the rows the IDL holds.  CPython's small-object allocator takes that from
new 1 MiB arenas and gives an arena back only once every block in it is
free, so the few objects other threads allocate meanwhile keep a couple of
them resident for good: the one-time RSS step ``bench.soak`` saw at every
first SB restart (~2 MB at N=1000).  Split here, a dump is never more than a
few hundred rows of objects at a time.

Only the reply shape ovsdb-server writes is split -- compact JSON, members in
the order ``id``, ``result``, ``error`` (``jsonrpc_create_reply`` and
``json_to_string`` in OVS's ``lib/jsonrpc.c``/``lib/json.c``):
``{"id":N,"result":[found,"last-txn-id",{"Table":{"uuid":{row},...},...}],"error":null}``.
Any other message, or another spelling of this one, goes to python-ovs's
own parser (``classify``); each row's value is parsed by the standard
library's C scanner (``json.decoder``), which gives the same Python values
as python-ovs's parser.  Pure: text in, rows out; ``sb.streamconn`` is the
adapter on python-ovs's connection.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from json.scanner import make_scanner
from typing import Any

# what follows ``{"id":N,"result":[`` in a monitor_cond_since reply
_SINCE_HEAD = re.compile(r'(true|false),("[0-9a-fA-F-]{36}"|null),\{')
_SINCE_HEAD_MAX = len('false,"00000000-0000-0000-0000-000000000000",{')
# one row's text may not pass this unparsed (a truncated value and a
# malformed one look alike until the rest of it has arrived)
MAX_PENDING = 64 << 20

# the C scanner (``_json.make_scanner``) ``json.loads`` uses, for one value at an index
# (typeshed types its argument wrongly: it takes the decoder whose settings it copies)
_scan: Callable[[str, int], tuple[Any, int]] = make_scanner(
    json.decoder.JSONDecoder())  # type: ignore[arg-type]


def _skip(buf: str, i: int) -> int:
    """Past the JSON whitespace at ``i`` (ovsdb-server writes none)."""
    n = len(buf)
    while i < n and buf[i] in " \t\n\r":
        i += 1
    return i


class Verdict(Enum):
    STREAM = "stream"  # a monitor_cond_since reply to the request waited for
    NORMAL = "normal"  # anything else: python-ovs's own parser
    MORE = "more"  # too little text yet to tell


@dataclass(frozen=True, slots=True)
class Head:
    """The part of a monitor_cond_since reply before its rows."""

    found: bool
    last_id: str | None
    length: int  # characters up to and including the table-updates' ``{``


def classify(text: str, request_id: int | None) -> tuple[Verdict, Head | None]:
    """Whether the message ``text`` starts is the reply to monitor request
    ``request_id`` in the shape split here (``STREAM``, with its head),
    something else (``NORMAL``), or cannot be told yet (``MORE``)."""
    if request_id is None or isinstance(request_id, bool) or not isinstance(request_id, int):
        return Verdict.NORMAL, None
    prefix = f'{{"id":{request_id},"result":['
    if len(text) < len(prefix):
        return (Verdict.MORE if prefix.startswith(text) else Verdict.NORMAL), None
    if not text.startswith(prefix):
        return Verdict.NORMAL, None
    m = _SINCE_HEAD.match(text, len(prefix))
    if m is None:
        return (Verdict.MORE if len(text) - len(prefix) < _SINCE_HEAD_MAX
                else Verdict.NORMAL), None
    last = m.group(2)
    return Verdict.STREAM, Head(found=m.group(1) == "true",
                                last_id=None if last == "null" else last[1:-1],
                                length=m.end())


class SplitError(ValueError):
    """The reply's text is not what a monitor_cond_since reply is."""


RowSink = Callable[[dict[str, dict[str, Any]]], None]


class DumpSplitter:
    """Takes the text of one monitor_cond_since reply, after its ``Head``, in
    pieces; passes its rows on in batches of at most ``batch`` rows
    (``{table: {uuid: row-update}}``, the shape python-ovs's
    ``__parse_update`` takes) as soon as each row's text is complete; keeps
    only the text not taken yet.  ``feed`` returns the text after the
    message once its closing ``}`` has arrived, None until then."""

    def __init__(self, sink: RowSink, batch: int = 256) -> None:
        self._sink = sink
        self._batch = batch
        self._buf = ""
        self._table: str | None = None  # inside this table's rows
        self._after = False  # the table-updates object has been closed
        self._pending: dict[str, dict[str, Any]] = {}
        self._count = 0
        self.rows = 0

    def feed(self, text: str) -> str | None:
        buf = self._buf + text if self._buf else text
        pos = 0
        try:
            while True:
                step = self._step(buf, pos)
                if step is None:
                    break
                pos = step
                if self._after and pos < 0:
                    self._flush()
                    return buf[-pos - 1:]
        finally:
            self._buf = buf[pos:] if pos >= 0 else ""
        self._flush()
        if len(self._buf) > MAX_PENDING:
            raise SplitError(f"{len(self._buf)} characters of one value not parsed")
        return None

    def _step(self, buf: str, pos: int) -> int | None:
        """One token or row from ``pos``: the position after it; None for
        more text needed; ``-(end + 1)`` once the message ended at ``end``."""
        i = _skip(buf, pos)
        if i >= len(buf):
            return None
        c = buf[i]
        if self._after:  # "]" then the other members, then "}"
            return self._tail(buf, i)
        if self._table is None:  # in the table-updates object
            if c == "}":
                self._after = True
                return i + 1
            if c == ",":
                return i + 1
            name, j = self._string(buf, i)
            if name is None:
                return None
            j = _skip(buf, j)
            k = _skip(buf, j + 1)
            if k >= len(buf):
                return None
            if buf[j] != ":" or buf[k] != "{":
                raise SplitError(f"no table-update for {name!r}")
            self._table = name
            return k + 1
        if c == "}":
            self._table = None
            return i + 1
        if c == ",":
            return i + 1
        member = self._member(buf, i)
        if member is None:
            return None
        uuid, row, end = member
        self._pending.setdefault(self._table, {})[uuid] = row
        self._count += 1
        self.rows += 1
        if self._count >= self._batch:
            self._flush()
        return end

    def _tail(self, buf: str, i: int) -> int | None:
        """After the table-updates: ``]``, then ``,"key":value`` members
        (``"error":null``), then ``}``."""
        c = buf[i]
        if c == "]":
            return i + 1
        if c == "}":
            return -(i + 1) - 1
        if c != ",":
            raise SplitError(f"unexpected {c!r} after the table-updates")
        member = self._member(buf, _skip(buf, i + 1))
        if member is None:
            return None
        key, value, end = member
        if key == "error" and value is not None:
            raise SplitError(f"reply with an error: {value!r}")
        return end

    @classmethod
    def _member(cls, buf: str, i: int) -> tuple[str, Any, int] | None:
        """The ``"key":value`` at ``i``: key, value and the position after
        it; None while its text is not all here yet."""
        key, j = cls._string(buf, i)
        if key is None:
            return None
        j = _skip(buf, j)
        if j >= len(buf):
            return None
        if buf[j] != ":":
            raise SplitError(f"no ':' after {key!r}")
        try:
            value, end = _scan(buf, _skip(buf, j + 1))
        except (StopIteration, ValueError):
            return None
        return key, value, int(end)

    @staticmethod
    def _string(buf: str, i: int) -> tuple[str | None, int]:
        if i >= len(buf):
            return None, i
        if buf[i] != '"':
            raise SplitError(f"expected a string at {buf[i:i + 20]!r}")
        try:
            value, end = _scan(buf, i)
        except (StopIteration, ValueError):
            return None, i
        return str(value), int(end)

    def _flush(self) -> None:
        if self._pending:
            batch, self._pending, self._count = self._pending, {}, 0
            self._sink(batch)
