"""What ImageServer answers: one request handler per server run, with the
fault injection (see :class:`~tfeed.testing.server.ImageServer` for the
faults) and the request counters; plain GETs of served names are answered by
:mod:`fastpath` through :meth:`Handler.plain`.

Like ``server.py``, this module imports nothing from ``tfeed``: process mode
runs the server by file path.
"""

import asyncio
import gzip
import os
import random
import urllib.parse
import zlib
from collections import Counter
from pathlib import Path

from aiohttp import web

CONTENT_TYPES = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
    ".bmp": "image/bmp", ".webp": "image/webp", ".tif": "image/tiff", ".tiff": "image/tiff",
    ".avif": "image/avif", ".html": "text/html", ".txt": "text/plain",
}
BLOB_HEADER = b"\xff\xd8\xff\xe0"  # JPEG SOI + APP0: sniffs as JPEG
STATS_PATH = "/__stats"
_CHUNK = 1 << 16
MEMO_BYTES = 512 << 20  # file bytes a server keeps in memory once read


def _content_type(name):
    return CONTENT_TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")


class _BadFault(ValueError):
    """A fault query parameter that does not parse; answered with 400."""


def _param(query, key, kind, default=None):
    if key not in query:
        return default
    try:
        return kind(query[key])
    except ValueError:
        raise _BadFault(f"bad value for {key}: {query[key]!r}") from None


def _blob_chunks(size):
    head = BLOB_HEADER[:size]
    yield head
    zeros = bytes(_CHUNK)
    left = size - len(head)
    while left > 0:
        yield zeros[:min(left, _CHUNK)]
        left -= _CHUNK


def _gzip_chunks(chunks):
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip container
    for chunk in chunks:
        out = packer.compress(chunk)
        if out:
            yield out
    yield packer.flush()


def _rechunk(chunks, size):
    for chunk in chunks:
        for start in range(0, len(chunk), size):
            yield chunk[start:start + size]


def corrupt_bytes(data, seed):
    """Keep the first 32 bytes of ``data`` and replace the rest with seeded random bytes."""
    rest = len(data) - 32
    return data[:32] + (random.Random(seed).randbytes(rest) if rest > 0 else b"")


class Handler:
    """The aiohttp request handler: counters and fault state for one server run."""

    def __init__(self, entries, latency, jitter, seed):
        self.entries = dict(entries)  # _read replaces paths with bytes
        self.latency = latency
        self.jitter = jitter
        self.seed = seed
        self.rng = random.Random(seed)
        self.counts = Counter()
        self.failures = Counter()
        self.memo_left = MEMO_BYTES
        self.heads = {}  # name -> the 200 response's head bytes, for the fast path

    def wait(self):
        """Seconds a request waits: the latency, give or take the jitter."""
        return max(0.0, self.latency + self.rng.uniform(-self.jitter, self.jitter)) if self.jitter else self.latency

    def plain(self, method, name):
        """The fast path's answer to a GET or HEAD of ``name`` without a query
        (response parts), or None when it is not a served name."""
        entry = self.entries.get(name)
        if entry is None:
            return None
        try:
            data = self._read(name, entry) if isinstance(entry, Path) else entry
        except OSError:
            return None  # aiohttp answers (and reports) it
        self.counts[name] += 1
        head = self.heads.get(name)
        if head is None:
            head = self.heads[name] = (f"HTTP/1.1 200 OK\r\nContent-Type: {_content_type(name)}\r\n"
                                       f"Content-Length: {len(data)}\r\n\r\n").encode()
        return [head] if method == "HEAD" else [head, data]

    def _read(self, name, path):
        """The file's bytes; the first ``MEMO_BYTES`` read stay in memory (reading
        a file per request cost ~30% of the server's CPU in benchmarks)."""
        data = path.read_bytes()
        if len(data) <= self.memo_left:
            self.entries[name] = data
            self.memo_left -= len(data)
        return data

    async def dispatch(self, request):
        """Route a request (aiohttp's low-level server: no router or middleware
        work per request, ~20% less CPU than a web.Application)."""
        path, method = request.path, request.method
        if path == STATS_PATH and method in ("GET", "HEAD"):
            return await self.stats(request)
        if path == STATS_PATH + "/reset" and method == "POST":
            return await self.reset(request)
        if method not in ("GET", "HEAD"):
            return web.Response(status=405, text=f"{method} not allowed\n")
        if len(path) < 2:
            return web.Response(status=404, text="no image name in the path\n")
        return await self.serve(request, path[1:])

    async def stats(self, request):
        return web.json_response({"total": sum(self.counts.values()), "by_name": dict(self.counts), "pid": os.getpid()})

    async def reset(self, request):
        self.counts.clear()
        self.failures.clear()
        return await self.stats(request)

    async def serve(self, request, name):
        self.counts[name] += 1
        try:
            return await self._serve(request, name, request.query)
        except _BadFault as exc:
            return web.Response(status=400, text=str(exc))

    async def _serve(self, request, name, query):
        wait = self.wait() + _param(query, "delay", float, 0.0)
        if wait > 0:
            await asyncio.sleep(wait)
        if _param(query, "hang", int, 0):
            await asyncio.Event().wait()  # cancelled by stop() or by the client going away
        fail = _param(query, "fail", int, 0)
        if fail:
            self.failures[request.path_qs] += 1
            if self.failures[request.path_qs] <= fail:
                headers = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
                return web.Response(status=_param(query, "fail_status", int, 503), text="injected failure\n",
                                    headers=headers)
        status = _param(query, "status", int)
        if status is not None:
            silent = status < 200 or status in (204, 304)
            return web.Response(status=status, text=None if silent else f"injected status {status}\n")
        if "location" in query:  # a redirect to any URL (another host, another scheme)
            raise web.HTTPFound(query["location"])
        hops = _param(query, "redirect", int, 0)
        if hops > 0:
            rest = dict(query, redirect=str(hops - 1))
            raise web.HTTPFound(f"{request.path}?{urllib.parse.urlencode(rest)}")
        if _param(query, "html", int, 0):
            return web.Response(text="<html><body><h1>Not an image</h1></body></html>\n", content_type="text/html")
        return await self._send_image(request, name, query)

    async def _send_image(self, request, name, query):
        size = _param(query, "size", int) if name == "blob" else None
        if size is not None:
            chunks, length, ctype = _blob_chunks(size), size, "image/jpeg"
        elif name in self.entries:
            entry = self.entries[name]
            data = self._read(name, entry) if isinstance(entry, Path) else entry
            if _param(query, "corrupt", int, 0):
                data = corrupt_bytes(data, f"{self.seed}:{name}")
            chunks, length = [data], len(data)
            ctype = _content_type(name)
        else:
            return web.Response(status=404, text=f"no such image: {name}\n")
        headers = {}
        if _param(query, "gzip", int, 0):
            headers["Content-Encoding"] = "gzip"
            if size is None:
                chunks = [gzip.compress(chunks[0])]
                length = len(chunks[0])
            else:
                chunks, length = _gzip_chunks(chunks), None
        truncate = _param(query, "truncate", float)
        drip = _param(query, "drip", float)
        if truncate is None and drip is None and size is None:
            return web.Response(body=chunks[0], content_type=ctype, headers=headers)
        return await self._stream(request, chunks, length, ctype, headers, truncate, drip,
                                  _param(query, "chunk", int, 64))

    async def _stream(self, request, chunks, length, ctype, headers, truncate, drip, chunk):
        if truncate is not None and length is None:
            raise _BadFault("truncate needs a known length (not with gzip on /blob)")
        if chunk < 1:
            raise _BadFault("chunk must be >= 1")
        limit = None if truncate is None else int(length * min(max(truncate, 0.0), 1.0))
        response = web.StreamResponse(headers=headers)
        response.content_type = ctype
        if length is not None:
            response.content_length = length
        if limit is not None and limit < length:
            response.force_close()  # the short body ends with the connection closing
        await response.prepare(request)
        sent = 0
        for piece in _rechunk(chunks, chunk) if drip is not None else chunks:
            if limit is not None:
                piece = piece[:limit - sent]
            if piece:
                await response.write(piece)
                sent += len(piece)
            if limit is not None and sent >= limit:
                break
            if drip:
                await asyncio.sleep(drip)
        await response.write_eof()
        return response
