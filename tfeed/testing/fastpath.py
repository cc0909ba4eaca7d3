"""ImageServer's fast path: plain GETs answered without aiohttp.

A request for a served name with no query string (what a benchmark's corpus
URLs are) costs aiohttp ~0.13 ms of CPU; on a 2-core machine a server
answering ~1,000 of them a second takes ~6% of the CPU from the client being
measured.  :class:`FastPath` is the protocol of every accepted connection: it
answers such requests itself, from prebuilt bytes after the server's latency,
and hands the connection to aiohttp (faults, stats, errors, anything else)
at the first request it does not answer, with the bytes it has read.
Responses leave in request order, as HTTP/1.1 requires.

Like ``server.py``, this module imports nothing from ``tfeed``.
"""

import asyncio
import collections
import urllib.parse

HEADER_END = b"\r\n\r\n"
MAX_HEAD = 16 << 10  # a longer request head goes to aiohttp (which answers 431 or 400)
_HANDED_HEADERS = (b"content-length:", b"transfer-encoding:", b"connection:", b"expect:", b"upgrade:")
_KEEP_ALIVE = b"connection:keep-alive"  # HTTP/1.1's default said aloud (requests sends it): stays fast


class FastPath(asyncio.Protocol):
    """One connection.

    Args:
      answer: ``fn(method, name) -> [bytes, ...]`` the response for a GET or
        HEAD of ``name`` (percent-decoded, no leading slash), or None to hand over.
      delay: ``fn() -> seconds`` to wait before answering a request.
      fallback: ``fn() -> asyncio.Protocol`` (aiohttp's request handler) that
        takes over the connection.
      connections: a set this connection is in while it is open and not handed over.
    """

    def __init__(self, answer, delay, fallback, connections):
        self._answer, self._delay, self._fallback, self._connections = answer, delay, fallback, connections
        self._transport = None
        self._buffer = b""
        self._pending = collections.deque()  # [parts or None (not due yet), timer] per request, in order
        self._handing = False  # a request needs aiohttp: hand over once pending responses are out
        self._handed = False

    def connection_made(self, transport):
        self._transport = transport
        self._connections.add(self)

    def data_received(self, data):
        self._buffer += data
        while not self._handing:
            end = self._buffer.find(HEADER_END)
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    self._hand_over()
                return
            parts = self._respond(self._buffer[:end])
            if parts is None:
                self._hand_over()
                return
            self._buffer = self._buffer[end + len(HEADER_END):]
            self._schedule(parts)

    def connection_lost(self, exc):
        for _, timer in self._pending:
            timer.cancel()
        self._pending.clear()
        self._connections.discard(self)

    def close(self):
        """Close the connection (when the server stops)."""
        if self._transport is not None and not self._handed:
            self._transport.close()

    def _respond(self, head):
        """The response parts for one request head, or None when aiohttp must answer."""
        line, _, headers = head.partition(b"\r\n")
        fields = line.split(b" ")
        if len(fields) != 3 or fields[2] != b"HTTP/1.1" or fields[0] not in (b"GET", b"HEAD"):
            return None
        target = fields[1]
        if not target.startswith(b"/") or b"?" in target or b"#" in target:
            return None
        for header in headers.lower().split(b"\r\n"):
            header = header.strip()
            if header.startswith(_HANDED_HEADERS) and header.replace(b" ", b"") != _KEEP_ALIVE:
                return None  # a body, a connection change or an upgrade: aiohttp's job
        try:
            name = urllib.parse.unquote(target[1:].decode("ascii"), errors="strict")
        except (UnicodeDecodeError, ValueError):
            return None
        return self._answer(fields[0].decode(), name)

    def _schedule(self, parts):
        entry = [None, None]
        entry[1] = asyncio.get_running_loop().call_later(self._delay(), self._due, entry, parts)
        self._pending.append(entry)

    def _due(self, entry, parts):
        """A request's wait is over: write every answer that is due, in request order."""
        entry[0] = parts
        while self._pending and self._pending[0][0] is not None:
            ready, _ = self._pending.popleft()
            if not self._transport.is_closing():
                self._transport.writelines(ready)
        if self._handing and not self._pending:
            self._hand_over()

    def _hand_over(self):
        self._handing = True
        if self._pending:  # after the answers already promised, in order
            return
        self._handed = True
        self._connections.discard(self)
        protocol = self._fallback()
        self._transport.set_protocol(protocol)
        protocol.connection_made(self._transport)
        if self._buffer:
            protocol.data_received(self._buffer)
        self._buffer = b""
