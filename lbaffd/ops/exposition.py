"""Per-VIP and per-backend metrics, streamed in the Prometheus text format.

At 5000 VIPs a scrape has ~65k such samples.  Built as prometheus_client
metric families they were a sample object and a label dict each, then the
whole text at once: ~40 MB on top of the daemon for every scrape.  These
families are read from the switch at scrape time anyway, so they are written
a line at a time instead (in the text format 0.0.4, byte-identical to what
prometheus_client writes for the same family: ``tests/unit/test_exposition.py``),
while the daemon's own counters stay in its prometheus_client registry.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import structlog
from prometheus_client import utils as prom_utils

from lbaffd.compile.layout import Pipeline
from lbaffd.ops import observe
from lbaffd.ops.status import Status

log = structlog.get_logger("lbaffd.metrics")

CHUNK = 64 * 1024  # bytes handed to the HTTP server at a time


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(doc: str) -> str:
    return doc.replace("\\", r"\\").replace("\n", r"\n")


def _number(value: float) -> str:
    text: str = prom_utils.floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def family(name: str, doc: str, kind: str, labels: Sequence[str],
           rows: Iterable[tuple[Sequence[str], float]]) -> Iterator[str]:
    """One family (``kind``: ``gauge`` or ``counter``), a line at a time, as
    prometheus_client's text exposition writes it (counters get ``_total``)."""
    mname = f"{name}_total" if kind == "counter" else name
    yield f"# HELP {mname} {_escape_help(doc)}\n# TYPE {mname} {kind}\n"
    order = sorted(range(len(labels)), key=lambda i: labels[i])  # labels are written sorted
    for values, value in rows:
        if labels:
            text = ",".join(f'{labels[i]}="{_escape_label(values[i])}"' for i in order)
            yield f"{mname}{{{text}}} {_number(value)}\n"
        else:
            yield f"{mname} {_number(value)}\n"


def chunked(lines: Iterable[str], size: int = CHUNK) -> Iterator[bytes]:
    """``lines`` encoded, in pieces of about ``size`` bytes."""
    buf: list[str] = []
    n = 0
    for line in lines:
        buf.append(line)
        n += len(line)
        if n >= size:
            yield "".join(buf).encode()
            buf, n = [], 0
    if buf:
        yield "".join(buf).encode()


class LiveSource(Protocol):
    def status(self) -> Status: ...
    def live_channel(self) -> Any: ...


def live_families(source: LiveSource, pipeline: Pipeline) -> Iterator[str]:
    """The per-VIP families; those read from the switch only when it answers
    (a scrape while it is unreachable omits them)."""
    status = source.status()
    plans = status.plans
    yield from family(
        "lbaffd_vip_expected_share",
        "Expected largest/smallest backend share of a VIP's new connections "
        "(OVS dp_hash slot model; even for the client hash)", "gauge", ("lb", "vip", "bound"),
        (row for p in plans if p.expected_shares
         for row in (((p.lb.name, p.vip.key, "max"), max(p.expected_shares)),
                     ((p.lb.name, p.vip.key, "min"), min(p.expected_shares)))))
    try:
        ch = source.live_channel()
        start = time.monotonic()
        per_vip = observe.entries_per_vip(observe.read_affinity_entries(ch), plans)
        counts = observe.read_backend_counts(ch, plans, pipeline)
        took = time.monotonic() - start
    except Exception as exc:  # the switch went away meanwhile: the rest of the scrape stands
        log.warning("scrape_switch_read_failed", error=str(exc) or type(exc).__name__)
        return
    yield from family("lbaffd_affinity_entries", "Live learned affinity entries", "gauge",
                      ("lb", "vip"), sorted(per_vip.items()))
    del per_vip
    yield from family("lbaffd_backend_packets",
                      "First packets of new connections sent to the backend "
                      "(select-group bucket + affinity hit flow)", "counter",
                      ("lb", "vip", "backend"),
                      ((k, c.packets) for k, c in observe.backend_rows(plans, counts)))
    yield from family("lbaffd_backend_bytes", "Bytes of those packets", "counter",
                      ("lb", "vip", "backend"),
                      ((k, c.bytes) for k, c in observe.backend_rows(plans, counts)))
    yield from family("lbaffd_scrape_switch_read_seconds",
                      "Time spent reading live state from the switch for this scrape", "gauge",
                      (), (((), took),))
