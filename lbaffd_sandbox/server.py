"""A backend in a namespace: answers each TCP connection / UDP datagram with its name.

TCP: the server writes its name and then waits for the *client* to close.
A server that closes first leaves TIME_WAIT sockets whose challenge ACKs
conntrack marks invalid, and quick port reuse then stalls clients for 3 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
from pathlib import Path


def _bind(kind: int, port: int, family: int) -> socket.socket:
    srv = socket.socket(family, kind)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    srv.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    return srv


def serve_tcp(port: int, name: bytes, family: int = socket.AF_INET,
              with_address: bool = False) -> None:
    srv = _bind(socket.SOCK_STREAM, port, family)
    srv.listen(512)

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(30)
                # with_address: which of the host's addresses was reached
                # (a host may stand for many backends: one per address)
                answer = (name + b"@" + conn.getsockname()[0].encode()) if with_address else name
                conn.sendall(answer + b"\n")
                while conn.recv(4096):
                    pass
            except OSError:
                pass

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def serve_udp(port: int, name: bytes, family: int = socket.AF_INET) -> None:
    srv = _bind(socket.SOCK_DGRAM, port, family)
    while True:
        _, peer = srv.recvfrom(2048)
        srv.sendto(name + b"\n", peer)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    p.add_argument("--pidfile", type=Path)
    p.add_argument("--ipv6", action="store_true", help="serve IPv6 as well")
    p.add_argument("--with-address", action="store_true",
                   help="TCP: answer NAME@ADDRESS, the local address the client reached")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if args.proto == "tcp":
        def serve(port: int, name: bytes, family: int = socket.AF_INET) -> None:
            serve_tcp(port, name, family, args.with_address)
    else:
        serve = serve_udp
    if args.ipv6:
        threading.Thread(target=serve, args=(args.port, args.name.encode(), socket.AF_INET6),
                         daemon=True).start()
    ready = threading.Thread(target=serve, args=(args.port, args.name.encode()), daemon=True)
    ready.start()
    if args.pidfile:
        args.pidfile.write_text(str(os.getpid()))
    ready.join()


if __name__ == "__main__":
    main()
