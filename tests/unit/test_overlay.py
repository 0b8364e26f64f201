"""``Overlay``: every version equals the dict it stands for, older versions
stay what they were, and its changes stay few (flattened)."""

from __future__ import annotations

import math
import random

import pytest

from lbaffd.model.overlay import Overlay


@pytest.mark.parametrize("seed", range(5))
def test_versions_equal_the_dicts_they_stand_for(seed: int) -> None:
    rnd = random.Random(seed)
    ref = {rnd.randrange(400): rnd.random() for _ in range(300)}
    ov: Overlay[int, float] = Overlay(dict(ref))
    history: list[tuple[Overlay[int, float], dict[int, float]]] = []
    for _ in range(400):
        drop = rnd.sample(range(400), rnd.randrange(4))
        put = {rnd.randrange(400): rnd.random() for _ in range(rnd.randrange(4))}
        ov = ov.updated(put, drop)
        for k in drop:
            ref.pop(k, None)
        ref.update(put)
        assert dict(ov) == ref and len(ov) == len(ref) == len(list(ov))
        assert list(ov.items()) == [(k, ov[k]) for k in ov]
        assert list(ov.values()) == [ov[k] for k in ov]
        for k in range(0, 400, 7):
            assert (k in ov) == (k in ref) and ov.get(k) == ref.get(k)
            if k not in ref:
                with pytest.raises(KeyError):
                    ov[k]
        assert len(ov._top) <= max(16, math.isqrt(2 * len(ov._base)))
        history.append((ov, dict(ref)))
    for old, was in history:  # every version is a value of its own
        assert dict(old) == was


def test_order_is_the_bases_then_new_keys() -> None:
    ov = Overlay({"a": 1, "b": 2, "c": 3})
    ov = ov.updated({"b": 20, "z": 26, "y": 25}, drop=["a"])
    assert list(ov.items()) == [("b", 20), ("c", 3), ("z", 26), ("y", 25)]
    ov = ov.updated({"a": 10})  # back: in its place in the base
    assert list(ov) == ["a", "b", "c", "z", "y"]
