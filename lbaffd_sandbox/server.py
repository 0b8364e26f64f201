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


def serve_tcp(port: int, name: bytes) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(512)

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(30)
                conn.sendall(name + b"\n")
                while conn.recv(4096):
                    pass
            except OSError:
                pass

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def serve_udp(port: int, name: bytes) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("0.0.0.0", port))
    while True:
        _, peer = srv.recvfrom(2048)
        srv.sendto(name + b"\n", peer)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    p.add_argument("--pidfile", type=Path)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    serve = serve_tcp if args.proto == "tcp" else serve_udp
    ready = threading.Thread(target=serve, args=(args.port, args.name.encode()), daemon=True)
    ready.start()
    if args.pidfile:
        args.pidfile.write_text(str(os.getpid()))
    ready.join()


if __name__ == "__main__":
    main()
