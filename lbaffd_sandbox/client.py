"""Client in a namespace: N sequential *new* connections, one JSON line each.

``--src-ip`` (repeatable) binds connection i to source address i mod k, so one
namespace can play many clients.  The client always closes first.
"""

from __future__ import annotations

import argparse
import json
import socket
import time


def one(dst: str, port: int, src: str, proto: str, timeout: float) -> dict[str, object]:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.settimeout(timeout)
    start = time.monotonic()
    try:
        if src:
            sock.bind((src, 0))
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
            sock.sendto(b"hello", (dst, port))
            data, _ = sock.recvfrom(256)
            connect_ms = (time.monotonic() - start) * 1000
        name = data.decode().strip()
        return {"src": src or sock.getsockname()[0], "backend": name,
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
    args = p.parse_args()
    for i in range(args.count):
        src = args.src_ip[i % len(args.src_ip)] if args.src_ip else ""
        print(json.dumps(one(args.dst, args.port, src, args.proto, args.timeout)), flush=True)
        if args.pause and i + 1 < args.count:
            time.sleep(args.pause)


if __name__ == "__main__":
    main()
