"""A new version of a large mapping in O(change): ``Overlay``.

An incremental step replaces a few of the worker's 5000 parsed LBs (and their
labels), and the step's inputs must stay a value of their own until the
step is on the switch (``reconcile.changes``).  Copying the dicts did that in
O(N): at N=5000 a copy touches the reference count of every key and value,
objects scattered over a heap of ~250 MB, and two of them were ~2.2 ms of an
LB change (issue 17), more than the rest of the step.
"""

from __future__ import annotations

import math
from collections.abc import ItemsView, Iterable, Iterator, Mapping, ValuesView
from typing import Any, Final, Generic, TypeVar, cast

K = TypeVar("K")
V = TypeVar("V")

_GONE: Final = object()  # a key of the base removed
_MISSING: Final = object()


class Overlay(Mapping[K, V], Generic[K, V]):
    """``base`` with some keys put or dropped (``top``); never changes once
    made.  ``updated`` makes a new version sharing the base and copying only
    the changes made since the last flattening, which happens once these
    outnumber about sqrt(2N) (the copy of N then amortized over as many
    steps: the total per step is least there).

    Iteration order: the base's (a key put again keeps its place), then the
    keys new to the base, in the order first put."""

    __slots__ = ("_base", "_len", "_top")

    def __init__(self, base: dict[K, V] | None = None) -> None:
        """``base`` is taken over, not copied: its maker must not change it."""
        self._base: dict[K, V] = {} if base is None else base
        self._top: dict[K, object] = {}
        self._len = len(self._base)

    def updated(self, put: Mapping[K, V], drop: Iterable[K] = ()) -> Overlay[K, V]:
        """A new version with ``drop`` removed, then ``put`` set."""
        base, top, n = self._base, dict(self._top), self._len
        for k in drop:
            if k in self:
                n -= 1
            if k in base:
                top[k] = _GONE
            else:
                top.pop(k, None)
        for k, v in put.items():
            if top.get(k, _MISSING) is _GONE or (k not in top and k not in base):
                n += 1
            top[k] = v
        out: Overlay[K, V] = Overlay.__new__(Overlay)
        out._base, out._top, out._len = base, top, n
        if len(top) > max(16, math.isqrt(2 * len(base))):
            return Overlay({k: out[k] for k in out})
        return out

    def __getitem__(self, key: K) -> V:
        v = self._top.get(key, _MISSING)
        if v is _MISSING:
            return self._base[key]
        if v is _GONE:
            raise KeyError(key)
        return cast(V, v)

    def get(self, key: K, default: V | None = None) -> V | None:  # type: ignore[override]
        v = self._top.get(key, _MISSING)
        if v is _MISSING:
            return self._base.get(key, default)
        return default if v is _GONE else cast(V, v)

    def __contains__(self, key: object) -> bool:
        v = self._top.get(key, _MISSING)  # type: ignore[arg-type]
        return key in self._base if v is _MISSING else v is not _GONE

    def __iter__(self) -> Iterator[K]:
        base, top = self._base, self._top
        if not top:
            yield from base
            return
        for k in base:
            if top.get(k, _MISSING) is not _GONE:
                yield k
        for k in top:
            if k not in base:
                yield k

    def __len__(self) -> int:
        return self._len

    def _items(self) -> Iterator[tuple[K, V]]:
        """Every item in order, without a lookup per key (``lbs`` of 5000)."""
        base, top = self._base, self._top
        if not top:
            yield from base.items()
            return
        for k, v in base.items():
            t = top.get(k, _MISSING)
            if t is _MISSING:
                yield k, v
            elif t is not _GONE:
                yield k, cast(V, t)
        for k, t in top.items():
            if k not in base:
                yield k, cast(V, t)

    def items(self) -> ItemsView[K, V]:
        return _Items(self)

    def values(self) -> ValuesView[V]:
        return _Values(self)

    def __repr__(self) -> str:
        return f"Overlay({dict(self)!r})"


class _Items(ItemsView[K, V]):
    _mapping: Overlay[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return self._mapping._items()


class _Values(ValuesView[V]):
    _mapping: Overlay[Any, V]

    def __iter__(self) -> Iterator[V]:
        return (v for _, v in self._mapping._items())
