"""Client in a namespace: N sequential *new* connections, one JSON line each.

``--src-ip`` (repeatable) binds connection i to source address i mod k, so one
namespace can play many clients.  The client always closes first.
``--parallel`` opens all connections at once (one thread each: back-to-back
connections of one client, or many new clients arriving together); the lines
are printed in connection order.
"""

from __future__ import annotations

import argparse
import errno
import json
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor


def one(dst: str, port: int, src: str, proto: str, timeout: float,
        sport: int = 0) -> dict[str, object]:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.settimeout(timeout)
    start = time.monotonic()
    try:
        if sport:  # may still be in TIME_WAIT towards another destination
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if src or sport:
            sock.bind((src or ("::" if family == socket.AF_INET6 else "0.0.0.0"), sport))
        if proto == "tcp":
            sock.connect((dst, port))
            connect_ms = (time.monotonic() - start) * 1000
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
        else:
            sock.connect((dst, port))  # connected: an ICMP unreachable raises
            sock.send(b"hello")
            data = sock.recv(256)
            connect_ms = (time.monotonic() - start) * 1000
        name = data.decode().strip()
        here = sock.getsockname()
        return {"src": src or here[0], "sport": here[1], "backend": name,
                "connect_ms": round(connect_ms, 2), "ok": bool(name), "error": ""}
    except OSError as exc:
        return {"src": src, "backend": "", "connect_ms": (time.monotonic() - start) * 1000,
                "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        sock.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--pause", type=float, default=0.0)
    p.add_argument("--src-ip", action="append", default=[])
    p.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--random-sport", action="store_true",
                   help="bind each connection to a random source port")
    p.add_argument("--parallel", action="store_true",
                   help="open all connections at once instead of one after another")
    p.add_argument("--sport", type=int, default=0,
                   help="bind every connection to this source port (UDP: one conntrack "
                        "entry for all of them)")
    p.add_argument("--summary", action="store_true",
                   help="print one JSON line of counts per backend instead of one per connection")
    args = p.parse_args()
    counts: dict[str, int] = {}
    # distinct random ports, each used once: reusing one soon would meet its
    # TIME_WAIT 4-tuple.  A port still held by an earlier socket bound without
    # SO_REUSEADDR (bind: EADDRINUSE) is skipped for the next one.
    free_ports = iter(random.sample(range(1024, 65000), 65000 - 1024))

    def conn(i: int) -> dict[str, object]:
        src = args.src_ip[i % len(args.src_ip)] if args.src_ip else ""
        if not args.random_sport:
            return one(args.dst, args.port, src, args.proto, args.timeout, args.sport)
        for _ in range(100):
            res = one(args.dst, args.port, src, args.proto, args.timeout, next(free_ports))
            if f"[Errno {errno.EADDRINUSE}]" not in str(res["error"]):
                break
        return res

    if args.parallel:
        with ThreadPoolExecutor(max_workers=max(args.count, 1)) as pool:
            results = list(pool.map(conn, range(args.count)))
    else:
        results = []
        for i in range(args.count):
            results.append(conn(i))
            if not args.summary:
                print(json.dumps(results[-1]), flush=True)
            if args.pause and i + 1 < args.count:
                time.sleep(args.pause)
    for res in results:
        if args.summary:
            key = str(res["backend"]) if res["ok"] else "error"
            counts[key] = counts.get(key, 0) + 1
        elif args.parallel:
            print(json.dumps(res), flush=True)
    if args.summary:
        print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
