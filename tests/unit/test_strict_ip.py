"""``strict_ip``'s fast form held equal to its definition on random texts:
``ipaddress.ip_address`` of an ASCII text without white space or an IPv6
zone, None otherwise (OVN's ``inet_pton``)."""

from __future__ import annotations

import ipaddress
import random

from lbaffd.model.loadbalancer import IPAddress, strict_ip


def reference(text: str) -> IPAddress | None:
    if not text.isascii() or "%" in text or any(c.isspace() for c in text):
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def test_strict_ip_equals_its_definition() -> None:
    rnd = random.Random(7)
    alphabet = "0123456789abcdefABCDEF.:% \t\n\r\x0b\x0c\x00\x85/[]-\u0663"
    texts = ["10.0.0.1", "::1", "fe80::1%eth0", "1.2.3.4 ", " 1.2.3.4", "1.2.3", "", " ",
             "::ffff:1.2.3.4", "1.2.3.04", "FE80::1", "1.2.3.4\n", "\u0661.2.3.4"]
    texts += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 14)))
              for _ in range(20000)]
    texts += [str(ipaddress.IPv4Address(rnd.getrandbits(32))) for _ in range(2000)]
    texts += [str(ipaddress.IPv6Address(rnd.getrandbits(128))) for _ in range(2000)]
    valid = 0
    for text in texts:
        want = reference(text)
        assert strict_ip(text) == want, repr(text)
        valid += want is not None
    assert valid > 4000  # the addresses, and some random texts that are ones
