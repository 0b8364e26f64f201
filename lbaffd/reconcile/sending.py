"""What a pass needs from the OpenFlow channel, and the order its changes go
in: the bundle's message order (groups before the flows that point at them,
flows gone before their group) and ``cleanup``, which takes exactly
lbaffd's flows and groups off the switch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from lbaffd.model import ownership as own
from lbaffd.openflow import messages, packed
from lbaffd.reconcile import readback
from lbaffd.reconcile.diff import ChangeSet


class BundleWriter(Protocol):
    """An atomic bundle written while it is built (``bundle.Bundle``); as a
    context manager it commits when its block ends and discards on an error.
    ``commit`` returns once a barrier sent after the commit is answered: the
    change is on the switch (what ``audit.ChangeLedger`` counts on)."""

    count: int

    def add(self, msg: Any) -> None: ...
    def commit(self) -> None: ...
    def discard(self) -> None: ...
    def position(self, xid: int) -> int | None: ...
    def __enter__(self) -> BundleWriter: ...
    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None: ...


class Channel(Protocol):
    """What the reconciler needs from the OpenFlow channel."""

    def dump_flow_desc(self, cookie: int, cookie_mask: int) -> list[Any]: ...
    def dump_group_desc(self, owned: Callable[[int], bool]) -> list[Any]: ...
    def bundle(self, msgs: list[Any]) -> None: ...
    def open_bundle(self) -> BundleWriter: ...


def to_messages(cs: ChangeSet) -> list[messages.RawMessage]:
    """Order matters inside the bundle: groups must exist before flows point
    at them, and flows must be gone before their group is deleted."""
    return [msg for _, msg in keyed_messages(cs)]


def keyed_messages(cs: ChangeSet) -> list[tuple[int, messages.RawMessage]]:
    """``to_messages``, each with its ledger key (``isolation.BundleLedger``:
    a group's id or a flow's cookie)."""
    msgs: list[tuple[int, messages.RawMessage]] = []
    msgs += [(packed.group_id(g), packed.group_add_message(g)) for g in cs.add_groups]
    msgs += [(packed.group_id(g), packed.group_modify_message(g)) for g in cs.mod_groups]
    msgs += [(packed.cookie(f), packed.delete_message(f)) for f in cs.del_flows]
    msgs += [(packed.cookie(f), packed.add_message(f)) for f in cs.add_flows]
    msgs += [(packed.cookie(f), packed.modify_message(f)) for f in cs.mod_flows]
    msgs += [(gid, messages.group_delete(gid)) for gid in cs.del_groups]
    return msgs


def cleanup(channel: Channel) -> int:
    """Remove exactly lbaffd's flows (managed and learned, by cookie magic) and
    groups (by id range) in one bundle; returns how many groups went."""
    installed, _ = readback.read_installed(channel)
    msgs: list[Any] = [messages.flow_delete_by_cookie(own.MANAGED_COOKIE, own.MAGIC_MASK),
                       messages.flow_delete_by_cookie(own.LEARNED_COOKIE, own.MAGIC_MASK)]
    msgs += [messages.group_delete(gid) for gid in sorted(installed.groups)]
    channel.bundle(msgs)
    return len(installed.groups)
