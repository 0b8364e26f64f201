"""How lbaffd's IDL takes OVSDB updates in (``NotifyingIdl``).

python-ovs's ``Idl`` with its private steps done cheaper and to the same
result (values parsed by ``sb.datums``, one default per column, equal single
values shared by the rows of an update, each row's JSON freed once taken in),
which rows changed recorded for the worker, and a new dump after a reconnect
compared with the rows held rather than replacing them.  ``sb.monitor``
connects it (ovsdbapp ``Connection``) and watches its tables.
"""

from __future__ import annotations

import dataclasses
import time
import uuid as uuid_
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import structlog
from ovs import ovsuuid
from ovs.db import data as ovs_data
from ovs.db import error as ovs_error
from ovs.db import idl as ovs_idl
from ovs.db import types as ovs_types
from ovsdbapp.backend.ovs_idl import connection, event

from lbaffd.sb import streamconn
from lbaffd.sb.datums import DatumParser, SharedValues, datum_parser
from lbaffd.sb.dumpstream import Head

log = structlog.get_logger("lbaffd.sb")

OnChange = Callable[[str], None]


def is_data_row(tables: Mapping[str, Any], row: Any) -> bool:
    """``row`` belongs to one of ``tables`` (the IDL's tables of the database
    it monitors), not to a table of the same name elsewhere (``_Server``'s)."""
    table = row._table
    return tables.get(table.name) is table


@dataclass(slots=True)
class ResyncCounts:
    """What a dump taken in place did: how many rows were held before it,
    how many of those it changed, how many it did not bring again, and how
    many it brought that were not held."""

    held: int = 0
    changed: int = 0
    gone: int = 0
    added: int = 0


class NotifyingIdl(event.RowEventHandler, connection.OvsdbIdl):  # type: ignore[misc]
    """An ovsdbapp IDL that reports which rows changed, across reconnects too.

    A reconnect the server can answer from its transaction history
    (``monitor_cond_since`` found the last transaction seen: a clustered SB,
    another member) brings row events for what changed meanwhile.  One it
    cannot (a standalone SB restarted keeps no history) sends every row
    again; python-ovs then drops every row it held and builds all anew,
    without row events.  Here that new dump is compared with the rows held
    instead (``_Idl__clear``): a row it brings again is updated in place
    (a row event only if a value differs), a row it does not bring is
    deleted (a row event) once the dump is in.  The rows held after it are
    what python-ovs's own clear-and-rebuild would hold
    (``test_sb_read.py``), the worker learns exactly what changed
    while it was away (no full pass), and the dump's values are parsed only
    to be compared: the held rows, records and compiled state are not built
    a second time beside the first (the one-time RSS step a standalone SB
    restart left, ``bench.soak``).  Every ``run()`` that advances
    ``change_seqno`` reports a change too.
    """

    def __init__(self, remote: str, helper: Any, on_change: OnChange, name: str,
                 gc_pause: AbstractContextManager[object] | None = None) -> None:
        self._on_change = on_change
        self._name = name
        # held while an update is taken in: the daemon's one
        # ``ops.gcpause.GcPause`` (the collector is process-wide: a second
        # instance could resume it under the first); None: never paused
        self._gc_pause: AbstractContextManager[object] = gc_pause or nullcontext()
        connection.OvsdbIdl.__init__(self, remote, helper, leader_only=False)
        event.RowEventHandler.__init__(self)
        # rows changed since the worker last looked, by table; None: unknown
        # (first sync, reconnect), so everything must be read again
        self._dirty: dict[str, set[str]] | None = None
        # when the oldest change the worker has not taken yet was taken in
        # (time.time()), and that time for the last ``take_dirty``: where a
        # change's latency starts (``Delta.arrived_at``)
        self._since: float | None = None
        self.taken_since: float | None = None
        self._session_seqno = -1
        self._resyncing = True  # until the first complete sync
        self._cleared = False  # a reply replaced every row since the last sync said so
        # a new dump taken in place (``_Idl__clear``): by table, the rows held
        # before it that it has not brought again (yet); None: no such dump
        self._unconfirmed: dict[str, set[Any]] | None = None
        self._resync = ResyncCounts()  # of the last such dump, for ``ovsdb_synced``
        self._announced: set[str] = set()  # tables passed to the RowEvents this run()
        self._defaults: dict[str, tuple[tuple[str, Any], ...]] = {}  # see _Idl__add_default
        # by table, then column: (column, its parser, its default Datum); see _Idl__row_update
        self._columns: dict[str, dict[str, tuple[Any, DatumParser, Any]]] = {}
        self._shared = SharedValues()  # emptied after each run()
        # the monitor reply is taken in row by row as it arrives (``sb.streamconn``)
        streamconn.install(self._session, self)
        self._split_rows = 0  # rows of the last monitor reply taken in so, for ``ovsdb_synced``

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        """Called by ``run()`` for every row change: remembered (the worker
        processes just those rows) and passed on to the RowEvents, once per
        table and ``run()``.  Only the
        monitored database's rows count: python-ovs also monitors the server's
        ``_Server`` database and notifies its ``Database`` row, whose ``index``
        moves with every Raft commit of a clustered SB; counted as a change of
        a table lbaffd does not follow row by row it made every SB change a
        full pass (``is_data_row``).

        The RowEvents (``TableChanged``, the only ones lbaffd watches) say
        "table T changed" and wake the worker, which reads the rows itself:
        the second row of a table in the same update adds nothing to the
        first.  Passed on for every row, an initial sync of
        22k rows (N=5000) queued 22k notifications to ovsdbapp's notify
        thread, each matched against every table's event, woken, and run
        while the IDL thread was still taking the update in."""
        table = row._table.name
        if self._dirty is not None and is_data_row(self.tables, row):
            self._dirty.setdefault(table, set()).add(str(row.uuid))
        if table not in self._announced:
            self._announced.add(table)
            super().notify(event, row, updates)

    def _Idl__add_default(self, table: Any, row_update: dict[str, Any]) -> None:
        """python-ovs's private ``__add_default`` with its work done once per
        table: it puts the JSON of the default value of every scalar column an
        ``initial``/``insert`` update left out (the server omits defaults)
        into the update, so that the row holds a real default (python-ovs
        3.1's ``Datum.default`` of a scalar reads back as an ``Atom``, not
        ``""`` or 0).  It worked out which columns and their JSON for every
        row (a loop over every column, a JSON value built for each default);
        the same columns, the same values (``ovs/db/idl.py``,
        ``__add_default``, ``__column_name``)."""
        defaults = self._defaults.get(table.name)
        if defaults is None:
            defaults = self._defaults[table.name] = self._column_defaults(table)
        for name, value in defaults:
            if name not in row_update:
                row_update[name] = value

    def _column_defaults(self, table: Any) -> tuple[tuple[str, Any], ...]:
        """The (column, default JSON) pairs ``__add_default`` fills in."""
        readonly = self.readonly.get(table.name)
        out = []
        for column in table.columns.values():
            if readonly is not None and column.name in readonly:
                continue
            if column.type.n_min != 0 and not column.type.is_map():
                default = column.type.key.type.default
                if column.type.key.type == ovs_types.UuidType:
                    default = ovsuuid.to_json(default)
                out.append((column.name, default))
        return tuple(out)

    def _Idl__row_update(self, table: Any, row: Any, row_json: dict[str, Any]) -> bool:
        """python-ovs's private ``__row_update`` (``ovs/db/idl.py``): each
        column's JSON parsed and set where it differs from the row's value;
        True when an alerting column changed.  The same results, cheaper:
        values are parsed by ``sb.datums`` (equal to ``Datum.from_json``),
        and a column the row does not hold yet is compared with its default
        made once per column -- python-ovs read it through
        ``ColumnDefaultDict.__missing__``, which made a new default ``Datum``
        for every column of every new row only to compare it (with the
        parsing, ~70 % of the Python time of an initial SB sync at N=5000).
        Rows of one update share equal single-valued datums (``SharedValues``)."""
        return self._take_in(table, row, row_json, None)

    def _take_in(self, table: Any, row: Any, row_json: dict[str, Any],
                 old: dict[str, Any] | None) -> bool:
        """``_Idl__row_update``; ``old``: where to keep the datums it replaces."""
        columns = self._columns.setdefault(table.name, {})
        held = row._data
        changed = False
        for name, datum_json in row_json.items():
            known = columns.get(name) or self._column(table, name)
            if known is None:
                ovs_idl.vlog.warn(f"unknown column {name} updating table {table.name}")
                continue
            column, parse, default = known
            try:
                datum = parse(datum_json)
            except ovs_error.Error as e:
                ovs_idl.vlog.warn(f"error parsing column {name} in table {table.name}: {e}")
                continue
            current = held.get(name)  # (dict.get: no ``__missing__``)
            if datum != (default if current is None else current):
                if old is not None:
                    old[name] = default if current is None else current
                held[name] = self._shared.datum(id(column), datum)
                if column.alert:
                    changed = True
        return changed

    def _column(self, table: Any, name: str) -> tuple[Any, DatumParser, Any] | None:
        """A column of ``table``: (column, its parser, its default Datum), made
        once; None for a column the table does not have."""
        columns = self._columns.setdefault(table.name, {})
        known = columns.get(name)
        if known is None:
            column = table.columns.get(name)
            if column is None:
                return None
            known = columns[name] = (column, datum_parser(column.type),
                                     ovs_data.Datum.default(column.type))
        return known

    def _Idl__clear(self) -> None:  # python-ovs's private ``__clear``
        """A new dump follows (no transaction history for this client, or the
        first sync).  python-ovs calls it right before it parses the dump:
        for a ``monitor_cond_since`` reply whose ``found`` is false, and for
        every ``monitor_cond`` and ``monitor`` reply (``Idl.run``,
        ``ovs/db/idl.py`` of python-ovs 3.1).

        With rows held and the dump in ``update2``/``update3`` form (every
        server since OVS 2.6), it is taken in place (see the class): each
        held row is noted as unconfirmed, and ``_Idl__process_update2`` and
        ``_Idl__parse_update`` do the rest.  Otherwise python-ovs's own: the
        rows are dropped, and which rows changed is unknown until the worker
        has read everything (a full pass)."""
        self._cleared = True
        held = {name: set(t.rows.keys()) for name, t in self.tables.items() if t.rows}
        if not held or self.state == ovs_idl.Idl.IDL_S_DATA_MONITOR_REQUESTED:
            ovs_idl.Idl._Idl__clear(self)
            self._dirty = None
            return
        self._unconfirmed = held
        self._resync = ResyncCounts(held=sum(map(len, held.values())))
        self.cond_seqno = 0  # as python-ovs's: the dump is under the acknowledged conditions
        self.change_seqno += 1

    def _Idl__process_update2(self, table: Any, uuid: Any, row_update: dict[str, Any]) -> Any:
        """python-ovs's private ``__process_update2``, but a row of a dump
        taken in place that the IDL holds already is compared with it, not
        replaced: its values set where they differ, columns the dump leaves
        out back to their defaults (the server omits defaults), and a
        ``ROW_UPDATE`` notice with the replaced values if anything
        differed (as for a ``modify``).

        The row's JSON is emptied once taken in: the parsed reply is held
        whole until its last row is in (a 6.6 MB SB dump at N=5000 is ~75 MB
        of Python objects), and what a row's JSON leaves free is where the
        next rows are built; only the strings the row's values are stay."""
        try:
            return self._process_update2(table, uuid, row_update)
        finally:
            row_update.clear()

    def _process_update2(self, table: Any, uuid: Any, row_update: dict[str, Any]) -> Any:
        unconfirmed = self._unconfirmed
        pending = None if unconfirmed is None else unconfirmed.get(table.name)
        new = row_update.get("initial", row_update.get("insert"))
        if pending is None or new is None or uuid not in pending:
            if unconfirmed is not None and uuid not in table.rows:
                self._resync.added += 1
            return ovs_idl.Idl._Idl__process_update2(self, table, uuid, row_update)
        pending.discard(uuid)
        row = table.rows[uuid]
        self._Idl__add_default(table, new)
        old: dict[str, Any] = {}
        held = row._data
        for name in [n for n in dict.keys(held) if n not in new]:
            was = dict.pop(held, name)  # a new row would not hold it: the default
            known = self._column(table, name)
            if known is None or was != known[2]:
                old[name] = was
        self._take_in(table, row, new, old)
        if not old:
            return False
        self._resync.changed += 1
        return ovs_idl.Notice(ovs_idl.ROW_UPDATE, row, ovs_idl.Row(self, table, uuid, old))

    def _Idl__parse_update(self, update: Any, version: int, tables: Any = None) -> None:
        """python-ovs's private ``__parse_update``; after a dump taken in place
        (the data tables' update that follows ``_Idl__clear``), the rows it
        did not bring again are deleted, each with a ``ROW_DELETE`` notice,
        as a ``delete`` would.  (python-ovs logs and swallows a malformed
        update itself; anything else that escapes leaves rows of unknown
        state: everything is read again.)"""
        try:
            ovs_idl.Idl._Idl__parse_update(self, update, version, tables)
        except BaseException:
            if tables is None and self._unconfirmed is not None:
                self._unconfirmed, self._dirty = None, None
            raise
        if tables is not None or self._unconfirmed is None:
            return
        gone, self._unconfirmed = self._unconfirmed, None
        for name, uuids in gone.items():
            rows = self.tables[name].rows
            for uuid in uuids:
                row = rows[uuid]
                del rows[uuid]
                self._resync.gone += 1
                self.change_seqno += 1
                self.notify(ovs_idl.ROW_DELETE, row)

    # ``sb.streamconn.DumpSink``: the monitor reply taken in as it arrives.
    # What ``Idl.run`` does with a whole reply (ovs/db/idl.py, 3.1, the
    # ``IDL_S_DATA_MONITOR_COND_SINCE_REQUESTED`` branch), done in steps: the
    # clear of a new dump first, then the rows batch by batch, then the end
    # of a dump taken in place; the reply ``Idl.run`` is given afterwards
    # says found (no second clear) and holds no rows.  ``connected`` stays
    # false until that reply is in (python-ovs sets MONITORING then), so the
    # worker never reads a dump half taken in.

    def dump_request_id(self) -> int | None:
        if self.state != ovs_idl.Idl.IDL_S_DATA_MONITOR_COND_SINCE_REQUESTED:
            return None
        request = self._monitor_request_id
        return request if isinstance(request, int) else None

    def dump_begins(self, head: Head) -> None:
        if not head.found:
            self._Idl__clear()

    def dump_rows(self, rows: dict[str, dict[str, Any]]) -> None:
        self._split_rows += sum(map(len, rows.values()))
        try:
            ovs_idl.Idl._Idl__parse_update(self, rows, ovs_idl.OVSDB_UPDATE3)
        except BaseException:
            # (python-ovs logs and swallows a malformed update itself) the
            # rest of this reply cannot be trusted to finish it: ask again
            self.dump_lost()
            self.force_reconnect()
            raise

    def dump_ends(self) -> None:
        self._Idl__parse_update({}, ovs_idl.OVSDB_UPDATE3)

    def dump_lost(self) -> None:
        """A reply partly taken in: its rows are a mix of before and after,
        so the next request must be answered with a whole dump (no
        ``monitor_cond_since`` from a transaction id: a delta on rows it
        already changed would apply twice), and everything is read again."""
        self._unconfirmed, self._dirty = None, None
        self.last_id = str(uuid_.UUID(int=0))

    def _on_matching(self, event: str, row: Any, updates: Any = None) -> Any:
        """ovsdbapp copies every matching row (``frozen_row``) for its
        handlers; ours only wake the worker, which reads the rows itself:
        skip the copy (~0.5 s for a transaction of 5000 rows)."""
        return None

    def cooperative_yield(self) -> None:
        """ovsdbapp yields (``time.sleep(0)``) after every row of an update,
        for eventlet.  On native threads that hands the GIL away 5000 times
        for a 5000-row update (~45% of taking it in), and no other thread
        needs it meanwhile: the worker reads only after the update, under
        the same lock.  The ``ovs`` IDL's own default: do nothing."""

    def take_dirty(self) -> dict[str, set[str]] | None:
        """The rows changed since the last call (None: anything may have);
        call with the connection lock held, in the same critical section as
        the read that consumes them."""
        dirty, self._dirty = self._dirty, {}
        self.taken_since, self._since = self._since, None
        return dirty

    def run(self) -> Any:
        before = self.change_seqno
        at = time.time()
        self._announced.clear()
        with self._gc_pause:  # taking in an update builds many acyclic objects
            try:
                result = super().run()
            finally:
                self._shared.clear()
        seqno = self._session.get_seqno()
        if seqno != self._session_seqno or not self.in_sync:
            # (re)connected or resyncing: the worker waits for the monitor
            # reply (``DbMonitor.connected``); its rows come as events, or all
            # anew (``_Idl__clear``)
            self._session_seqno = seqno
            self._resyncing = True
        if self._resyncing and self._synced_this_session(seqno):
            # a (re)sync is complete: said once per session, so that an operator
            # (and a test) sees when a reconnected DB has been read again, with
            # how many rows (what the monitor reply brought: under SB
            # conditions, only what is local), and whether the server resumed
            # from its history (only what changed meanwhile was sent)
            # (a session that was cleared, then lost before it synced, counts)
            self._resyncing = False
            log.info("ovsdb_synced", db=self._name, session=seqno, resumed=not self._cleared,
                     rows={name: len(t.rows) for name, t in self.tables.items()},
                     split_rows=self._split_rows,
                     **({} if not self._cleared or not self._resync.held
                        else {"in_place": dataclasses.asdict(self._resync)}))
            self._cleared = False
            self._resync = ResyncCounts()
            self._split_rows = 0
        if self.change_seqno != before:
            if self._since is None:
                self._since = at
            self._on_change(self._name)
        return result

    @property
    def in_sync(self) -> bool:
        return bool(self.state == ovs_idl.Idl.IDL_S_MONITORING)

    def _synced_this_session(self, seqno: int) -> bool:
        """The monitor reply of connection ``seqno`` is in.  ``in_sync`` alone
        is not that: the session's seqno also moves when the connection drops
        and at every connection attempt (``Session.__disconnect`` and
        ``__connect`` in ovs/jsonrpc.py), while the IDL stays MONITORING on its
        old rows until it is connected again and ``Idl.run`` restarts its FSM
        for the new seqno (``restart_fsm``, which records ``_last_seqno``).
        Without this, ``ovsdb_synced`` was logged at the disconnect and at each
        failed attempt, with the old rows."""
        return (self.in_sync and bool(self._session.is_connected())
                and self._last_seqno == seqno)
