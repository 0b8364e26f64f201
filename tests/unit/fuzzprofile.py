"""Hypothesis profiles for the fuzz tests.

``ci`` (the default, what ``make test`` runs): a bounded number of examples
per property so the suite stays quick; no example database (nothing written
into the tree), no per-example deadline (the 2-core CI machine is shared).
``LBAFFD_FUZZ=long`` (or ``LBAFFD_FUZZ_EXAMPLES=N``): a long local run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=300, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("long", max_examples=20000, **_COMMON)  # type: ignore[arg-type]


def load() -> None:
    n = os.environ.get("LBAFFD_FUZZ_EXAMPLES")
    if n:
        settings.register_profile("custom", max_examples=int(n), **_COMMON)  # type: ignore[arg-type]
        settings.load_profile("custom")
    else:
        settings.load_profile(os.environ.get("LBAFFD_FUZZ", "ci"))
