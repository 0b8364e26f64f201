"""``XidSpan``: the xids of a bundle's adds, which the switch answers only
when one fails; the channel routes such an error to the span that holds it
(its range, wrapping at 2^32, is checked in ``test_packed``)."""

from __future__ import annotations

from lbaffd.openflow.replies import XidSpan


def test_span_grows_as_adds_are_sent_and_starts_without_error() -> None:
    span = XidSpan(10, 10)
    assert 10 in span and 9 not in span and 11 not in span
    span.last = 20  # advanced before each add is sent
    assert all(x in span for x in range(10, 21)) and 21 not in span
    assert span.error is None
