"""A local HTTP image server with fault injection, for tests, demos and benchmarks.

Every image path accepts faults as query parameters (see :class:`ImageServer`), so
one server can play a healthy CDN and every way the web misbehaves.

Run standalone with ``python -m tfeed.testing.server DIR``: the first line on
stdout is the base URL, logs go to stderr, SIGTERM/SIGINT stop it.

This module imports nothing from ``tfeed`` on purpose: process mode runs it by
file path, so the server starts in a fraction of a second without TensorFlow.
"""

import argparse
import asyncio
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from aiohttp import web

if __package__:
    from .fastpath import FastPath
    from .handler import STATS_PATH, Handler
else:  # run by file path (process mode): the directory is on sys.path, tfeed is not imported
    from fastpath import FastPath
    from handler import STATS_PATH, Handler

log = logging.getLogger(__name__)

BACKLOG = 1024
SHUTDOWN_TIMEOUT = 0.25  # seconds open handlers get before stop() cancels them


def catalog(images):
    """Return ``{name: bytes | Path}`` for a mapping, or for every file below a directory.

    Directory entries are named by their POSIX relative path ("cls/a.jpg") and read
    when first requested; the server keeps up to ``handler.MEMO_BYTES`` of them in memory.
    """
    if isinstance(images, (str, os.PathLike)):
        root = Path(images)
        if not root.is_dir():
            raise NotADirectoryError(f"ImageServer: {root} is not a directory")
        return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
    entries = dict(images)
    for name, data in entries.items():
        if not isinstance(name, str) or not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"ImageServer: expected a mapping str -> bytes, got {name!r}: {type(data).__name__}")
    return {name.lstrip("/"): bytes(data) for name, data in entries.items()}


class _Site:
    """A listening socket: each connection starts on the fast path
    (:mod:`fastpath`) and moves to aiohttp's handler when it needs it."""

    def __init__(self, runner, listener, connections, port):
        self.runner, self.listener, self.connections, self.port = runner, listener, connections, port

    async def close(self):
        self.listener.close()
        for connection in list(self.connections):
            connection.close()
        await self.runner.cleanup()


async def _start_site(handler, host, port):
    """Start serving ``handler`` on ``host:port`` (0 = free port); return a :class:`_Site`."""
    server = web.Server(handler.dispatch, handler_cancellation=True, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    connections = set()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        listener = await asyncio.get_running_loop().create_server(
            lambda: FastPath(handler.plain, handler.wait, server, connections), sock=sock, backlog=BACKLOG)
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return _Site(runner, listener, connections, sock.getsockname()[1])


def _format_url(host, port):
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class ImageServer:
    """Serve images over HTTP on loopback, with latency and per-request fault injection.

    Args:
      images: mapping name -> bytes, or a directory (every file below it is served
        by its POSIX relative path, e.g. ``"cls/a.jpg"``).
      latency, jitter: every request waits ``latency + uniform(-jitter, jitter)``
        seconds (clamped at 0) without blocking the others.
      host, port: where to listen; port 0 picks a free port.
      seed: seeds the jitter and the ``corrupt`` bytes.
      process: serve from a subprocess (so the server's CPU does not compete with a
        client being measured) instead of a daemon thread of this process.

    Faults, as query parameters on an image path (see :meth:`url`): ``status=CODE``,
    ``delay=S``, ``hang=1``, ``drip=S&chunk=N``, ``truncate=FRACTION``, ``corrupt=1``,
    ``html=1``, ``redirect=N``, ``location=URL`` (a 302 to URL), ``fail=K&fail_status=503&retry_after=S`` (the first K
    requests for that exact URL fail), ``gzip=1``; ``/blob?size=N`` serves N bytes
    that sniff as JPEG. Unknown names answer 404, malformed faults 400.
    """

    def __init__(self, images, *, latency=0.0, jitter=0.0, host="127.0.0.1", port=0, seed=0, process=False):
        if latency < 0 or jitter < 0:
            raise ValueError(f"ImageServer: latency and jitter must be >= 0, got {latency}, {jitter}")
        self._images = images
        self._entries = catalog(images)
        self.latency, self.jitter, self.host, self.seed, self.process = latency, jitter, host, seed, process
        self._port = port
        self._running = None  # _ThreadRun or _ProcessRun while started

    @property
    def names(self):
        """Sorted list of the served names."""
        return sorted(self._entries)

    @property
    def port(self):
        """The listening port (known before start() only when a fixed port was given)."""
        return self._running.port if self._running else (self._port or None)

    @property
    def base_url(self):
        """``"http://HOST:PORT/"``; raises RuntimeError before start()."""
        if not self._running:
            raise RuntimeError("ImageServer is not started")
        return _format_url(self.host, self._running.port)

    def url(self, name, **faults):
        """Full URL of ``name`` with ``faults`` as query parameters (True -> 1)."""
        query = {k: int(v) if isinstance(v, bool) else v for k, v in faults.items()}
        suffix = "?" + urllib.parse.urlencode(query) if query else ""
        return self.base_url + urllib.parse.quote(name.lstrip("/")) + suffix

    def start(self):
        """Start serving (idempotent); returns self."""
        if not self._running:
            run = _ProcessRun if self.process else _ThreadRun
            self._running = run(self)
        return self

    def stop(self):
        """Stop serving (idempotent); hanging requests are cancelled, not waited for."""
        running, self._running = self._running, None
        if running:
            running.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def request_count(self, name=None):
        """Requests received since start or reset_counts(): all, or for one name (any query)."""
        stats = self._stats("GET", "")
        return stats["total"] if name is None else stats["by_name"].get(name.lstrip("/"), 0)

    def reset_counts(self):
        """Zero the request counters and the ``fail=K`` counters."""
        self._stats("POST", "/reset")

    def _stats(self, method, suffix):
        request = urllib.request.Request(self.base_url.rstrip("/") + STATS_PATH + suffix, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)


class _ThreadRun:
    """An asyncio loop in a daemon thread serving one ImageServer."""

    def __init__(self, server):
        handler = Handler(server._entries, server.latency, server.jitter, server.seed)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tfeed-image-server", daemon=True)
        self.thread.start()
        try:
            started = asyncio.run_coroutine_threadsafe(_start_site(handler, server.host, server._port), self.loop)
            self.site = started.result(timeout=30)
            self.port = self.site.port
        except BaseException:
            self._stop_loop()
            raise

    def close(self):
        try:
            asyncio.run_coroutine_threadsafe(self.site.close(), self.loop).result(timeout=10)
        finally:
            self._stop_loop()

    def _stop_loop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class _ProcessRun:
    """A ``server.py`` subprocess serving one ImageServer (a mapping goes via a temp dir)."""

    def __init__(self, server):
        self.tmp = tempfile.mkdtemp(prefix="tfeed-image-server-")
        try:
            root = server._images if isinstance(server._images, (str, os.PathLike)) else self._dump(server._entries)
            argv = [str(root), "--host", server.host, "--port", str(server._port), "--latency", str(server.latency),
                    "--jitter", str(server.jitter), "--seed", str(server.seed)]
            self.log_path = os.path.join(self.tmp, "server.log")
            # Run the file, not ``-m tfeed.testing.server``: importing the tfeed package would import TensorFlow.
            here = os.path.abspath(__file__)
            code = (f"import runpy, sys; sys.path.insert(0, {os.path.dirname(here)!r}); "
                    f"runpy.run_path({here!r}, run_name='__main__')")
            with open(self.log_path, "wb") as log_file:
                self.proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE,
                                             stderr=log_file, stdin=subprocess.DEVNULL)
            self.port = urllib.parse.urlsplit(self._first_line(timeout=30)).port
        except BaseException:
            self.close()
            raise

    def _dump(self, entries):
        root = os.path.join(self.tmp, "images")
        for name, data in entries.items():
            path = os.path.join(root, *name.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        return root

    def _first_line(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.05)
            if ready:
                line = self.proc.stdout.readline().decode().strip()
                if line.startswith("http://"):
                    return line
            if self.proc.poll() is not None:
                break
        with open(self.log_path, errors="replace") as f:
            raise RuntimeError(f"ImageServer subprocess did not start:\n{f.read()[-4000:]}")

    def close(self):
        proc = getattr(self, "proc", None)
        stop_process(proc)
        if proc is not None:
            proc.stdout.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


async def _serve_until_signal(entries, args):
    handler = Handler(entries, args.latency, args.jitter, args.seed)
    site = await _start_site(handler, args.host, args.port)
    port = site.port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(_format_url(args.host, port), flush=True)
    log.info("serving %d files from %s on port %d", len(entries), args.root, port)
    try:
        await stop.wait()
    finally:
        await site.close()


def stop_process(proc, timeout: float = 10.0) -> None:
    """SIGTERM ``proc`` (a Popen or None), SIGKILL it after ``timeout`` s; waits."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv=None):
    """CLI: serve DIR until SIGTERM/SIGINT; the first stdout line is the base URL."""
    parser = argparse.ArgumentParser(prog="tfeed.testing.server", description=ImageServer.__doc__.split("\n")[0])
    parser.add_argument("root", metavar="DIR", help="directory of images to serve (by relative path)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--jitter", type=float, default=0.0, help="latency varies by +- this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    entries = catalog(args.root)
    _run(_serve_until_signal(entries, args))
    return 0


def _run(coroutine):
    """``asyncio.run`` on uvloop when it is installed (~30% less CPU per request)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


if __name__ == "__main__":
    sys.exit(main())

