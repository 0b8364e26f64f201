"""python-ovs's JSON-RPC connection, with a monitor reply taken in as it arrives.

``StreamingConnection`` is python-ovs 3.1's ``ovs.jsonrpc.Connection``
(``recv`` as in ``ovs/jsonrpc.py``: read, decode, feed python-ovs's parser,
one message at a time) except for one message: the reply to the IDL's
``monitor_cond_since`` request, which ``sb.dumpstream`` splits into rows
handed to the IDL (``DumpSink``) while the rest of the reply is still on
the socket.  The IDL then gets that reply with its rows already taken in
(``result`` ``[true, last-txn-id, {}]``: python-ovs neither clears nor
parses again).  ``install`` puts it under a ``Session``'s connections.
"""

from __future__ import annotations

import codecs
import errno
from typing import Any, Protocol

import ovs.json
import ovs.jsonrpc
import ovs.vlog

from lbaffd.sb.dumpstream import DumpSplitter, Head, SplitError, Verdict, classify

vlog = ovs.vlog.Vlog("lbaffd_jsonrpc")

READ_SIZE = 65536  # python-ovs reads 4096 bytes at a time: 1700 reads for a 6.6 MB dump


class DumpSink(Protocol):
    """What takes a split monitor reply in (``sb.idl.NotifyingIdl``)."""

    def dump_request_id(self) -> int | None:
        """The monitor_cond_since request whose reply may be split, if any."""

    def dump_begins(self, head: Head) -> None:
        """Before the first row, as python-ovs before it parses the reply."""

    def dump_rows(self, rows: dict[str, dict[str, Any]]) -> None:
        """A batch of the reply's rows, ``{table: {uuid: row-update}}``."""

    def dump_ends(self) -> None:
        """After the last row, before the reply is returned."""

    def dump_lost(self) -> None:
        """The connection closed with the reply partly taken in."""


class StreamingConnection(ovs.jsonrpc.Connection):  # type: ignore[misc]
    """See the module.  Made from a plain ``Connection`` by ``adopt``."""

    input: str
    parser: Any
    received_bytes: int
    _sink: DumpSink
    _splitter: DumpSplitter | None
    _reply_id: int | None
    _last_id: str | None
    _decoder: Any
    _held: str

    def adopt(self, sink: DumpSink) -> None:
        self._sink = sink
        self._splitter = None
        self._reply_id = None
        self._last_id = None
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        # the start of a message too short yet to tell what it is: kept out
        # of ``input``, which python-ovs's ``recv_wait`` takes for text ready
        # to parse (it would wake the poller at once, again and again)
        self._held = ""

    def close(self) -> None:
        if self._splitter is not None:
            self._splitter = None
            self._sink.dump_lost()
        super().close()

    def recv(self) -> tuple[int, Any]:
        if self.status:
            return self.status, None
        while True:
            if not self.input:
                error, data = self.stream.recv(READ_SIZE)
                if not error and data:
                    try:
                        text = self._decoder.decode(data)
                    except UnicodeError:
                        error = errno.EILSEQ
                if error:
                    if error == errno.EAGAIN:
                        return error, None
                    vlog.warn(f"{self.name}: receive error: {errno.errorcode.get(error, error)}")
                    self.error(error)
                    return self.status, None
                if not data:
                    self.error(ovs.jsonrpc.EOF)
                    return ovs.jsonrpc.EOF, None
                self.input, self._held = self._held + text, ""
                self.received_bytes += len(data)
                continue
            if self._splitter is not None:
                reply = self._feed_split()
                if reply is None:
                    continue  # (all its text is in the splitter: read on)
                return reply
            if self.parser is None:
                request = self._sink.dump_request_id()
                verdict, head = classify(self.input, request)
                if verdict is Verdict.MORE:
                    self._held, self.input = self.input, ""
                    continue
                if verdict is Verdict.STREAM and head is not None:
                    self._reply_id = request
                    self._last_id = head.last_id
                    self.input = self.input[head.length:]
                    self._sink.dump_begins(head)
                    self._splitter = DumpSplitter(self._sink.dump_rows)
                    continue
                self.parser = ovs.json.Parser()
            # python-ovs's own (``Connection.recv``, ovs/jsonrpc.py)
            if ovs.json.PARSER == ovs.json.PARSER_C:
                self.input = self.input.encode("utf-8")[self.parser.feed(self.input):].decode()
            else:
                self.input = self.input[self.parser.feed(self.input):]
            if self.parser.is_done():
                msg = self._Connection__process_msg()
                return (0, msg) if msg else (self.status, None)

    def _feed_split(self) -> tuple[int, Any] | None:
        """The split reply's text so far taken in; the reply once it is all in."""
        assert self._splitter is not None
        text, self.input = self.input, ""
        try:
            rest = self._splitter.feed(text)
        except SplitError as e:
            vlog.warn(f"{self.name}: error parsing stream: {e}")
            self.error(errno.EPROTO)  # closes: dump_lost
            return self.status, None
        if rest is None:
            return None
        self.input = rest
        self._splitter = None
        self._sink.dump_ends()
        return 0, ovs.jsonrpc.Message.create_reply([True, self._last_id, {}], self._reply_id)


def install(session: Any, sink: DumpSink) -> None:
    """Every connection ``session`` (a python-ovs ``jsonrpc.Session``) makes
    from now on is a ``StreamingConnection`` feeding ``sink``: python-ovs
    makes a plain one at each (re)connect (``Session.run``), turned into
    ours before anything is read from it (``Session.recv`` is its reader)."""
    recv = session.recv

    def adopting_recv() -> Any:
        rpc = session.rpc
        if rpc is not None and type(rpc) is ovs.jsonrpc.Connection:
            rpc.__class__ = StreamingConnection
            rpc.adopt(sink)
        return recv()

    session.recv = adopting_recv
