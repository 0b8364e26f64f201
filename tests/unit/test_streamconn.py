"""``StreamingConnection`` on a real socket: messages that are not the
monitor reply come out as python-ovs's own ``Connection`` gives them, the
monitor reply's rows go to the sink as they arrive, whatever the reads cut,
and no text is left in ``input`` when it waits for more (python-ovs's
``recv_wait`` wakes at once while ``input`` holds any)."""

from __future__ import annotations

import errno
import json
import random
import socket
from typing import Any

import ovs.jsonrpc
import ovs.stream

from lbaffd.sb.dumpstream import Head
from lbaffd.sb.streamconn import StreamingConnection


class Recorder:
    """The sink's calls, in order (the IDL's part is ``test_sb_read.py``'s)."""

    def __init__(self, request: int | None) -> None:
        self.request = request
        self.calls: list[tuple[str, Any]] = []

    def dump_request_id(self) -> int | None:
        return self.request

    def dump_begins(self, head: Head) -> None:
        self.calls.append(("begins", (head.found, head.last_id)))

    def dump_rows(self, rows: dict[str, dict[str, Any]]) -> None:
        self.calls.append(("rows", rows))

    def dump_ends(self) -> None:
        self.calls.append(("ends", None))

    def dump_lost(self) -> None:
        self.calls.append(("lost", None))


def _connection(sink: Recorder) -> tuple[StreamingConnection, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    conn = ovs.jsonrpc.Connection(ovs.stream.Stream(ours, "unix:test", 0))
    conn.__class__ = StreamingConnection
    conn.adopt(sink)
    return conn, theirs


MESSAGES = [
    '{"id":"echo","method":"echo","params":[]}',
    '{"id":3,"result":{"_Server":{"u":{"initial":{"name":"x"}}}},"error":null}',
    '{"id":4,"result":[false,"aaaaaaaa-0000-0000-0000-000000000000",{"Load_Balancer":'
    + "{" + ",".join(f'"{i:08d}-0000-0000-0000-000000000000":{{"initial":{{"name":"lb-{i}é"}}}}'
                     for i in range(300)) + "}}],\"error\":null}",
    '{"id":null,"method":"update3","params":[null,"bbbbbbbb-0000-0000-0000-000000000000",'
    '{"Load_Balancer":{"00000001-0000-0000-0000-000000000000":{"modify":{"name":"n"}}}}]}',
]


def test_messages_and_rows_whatever_the_reads() -> None:
    rng = random.Random(5)
    data = "".join(MESSAGES).encode()
    for _ in range(30):
        sink = Recorder(4)
        conn, theirs = _connection(sink)
        cuts = sorted(rng.sample(range(1, len(data)), 25))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        got = []
        for piece in pieces:
            theirs.sendall(piece)
            while True:
                error, msg = conn.recv()
                if error == errno.EAGAIN:
                    assert conn.input == ""  # nothing for recv_wait to wake on
                    break
                assert error == 0
                got.append(msg)
        assert [m.to_json() for m in got] == [
            json.loads(MESSAGES[0]), json.loads(MESSAGES[1]),
            {"id": 4, "result": [True, "aaaaaaaa-0000-0000-0000-000000000000", {}],
             "error": None},
            json.loads(MESSAGES[3])]
        assert sink.calls[0] == ("begins", (False, "aaaaaaaa-0000-0000-0000-000000000000"))
        assert sink.calls[-1] == ("ends", None)
        rows: dict[str, Any] = {}
        for kind, batch in sink.calls[1:-1]:
            assert kind == "rows"
            rows.update(batch["Load_Balancer"])
        assert rows == json.loads(MESSAGES[2])["result"][2]["Load_Balancer"]
        conn.close()
        theirs.close()


def test_a_reply_lost_half_way_is_reported() -> None:
    sink = Recorder(4)
    conn, theirs = _connection(sink)
    theirs.sendall(MESSAGES[2].encode()[:5000])
    assert conn.recv() == (errno.EAGAIN, None)
    theirs.close()
    error, msg = conn.recv()
    assert (error, msg) == (ovs.jsonrpc.EOF, None)
    conn.close()
    assert sink.calls[0][0] == "begins"
    assert sink.calls[-1] == ("lost", None)


def test_not_split_without_a_monitor_request_waited_for() -> None:
    sink = Recorder(None)
    conn, theirs = _connection(sink)
    theirs.sendall(MESSAGES[2].encode())
    error, msg = conn.recv()
    assert error == 0 and msg.to_json() == json.loads(MESSAGES[2])
    assert sink.calls == []
    conn.close()
    theirs.close()
