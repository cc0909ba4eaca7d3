"""An "origin zoo": web servers on loopback that behave like real image origins.

Each origin is a context manager that starts a server on ``__enter__`` and stops it on
``__exit__``; all of them run in subprocesses, so a client measured in this process
never competes with the server for the GIL. Common interface (:class:`Origin`):

* ``url(name)`` / ``urls(names)``: URLs of served names (``urls`` may spread names over hosts);
* ``names``: sorted served names;
* ``capacity``: the most images/s the origin can deliver by construction (its configured
  limit, e.g. ``max_concurrency / latency``), or None when no such bound is known;
* ``describe()``: a short human description;
* ``stats()``: requests the origin received since start, ``{"requests": n, "by_status":
  {"200": n, "503": n, ...}}`` (and ``"peak_open"`` where the origin counts concurrency).

Origins here: :class:`HttpServerOrigin` (Python's ``http.server``: threads, an accept queue
of 5, HTTP/1.0), :class:`SheddingOrigin` (503 + ``Retry-After`` above a concurrency limit)
and :class:`ManyHostsOrigin` (many small hosts on 127.0.0.2, 127.0.0.3, ...).
:class:`tfeed.testing.origin_nginx.NginxOrigin` adds nginx with ``limit_conn``,
``limit_req`` and TLS + HTTP/2. Every origin listens on loopback addresses only.

This module imports nothing from ``tfeed`` at import time: the aiohttp origins run it by
file path in their subprocess.
"""

import asyncio
import collections
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from tfeed.testing.server import stop_process

START_TIMEOUT = 30.0  # seconds a server gets to start listening
STATS_PATH = "/__origin_stats"
_ALL_HOSTS = "*"  # the stats entry that counts requests open over all hosts
_CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                  ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff"}


def _free_port(host):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _wait_accepting(host, port, proc, what, log_path=None, timeout=START_TIMEOUT):
    """Return once ``host:port`` accepts a connection; RuntimeError if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start on {host}:{port}:\n{_tail(log_path)}")


def _tail(path, chars=4000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-chars:]
    except (OSError, TypeError) as exc:
        return f"(no log: {exc})"


def _list_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                  for d, _, files in os.walk(root) for f in files)


class Origin:
    """Base class: a served set of images (a directory, or a mapping ``name -> bytes`` that
    start() writes to a temp dir) and the context-manager protocol. Subclasses set
    ``capacity`` and implement ``_start``, ``_stop`` and ``_base_url(index)``."""

    capacity = None  # images/s the origin can deliver by construction, or None when unknown

    def __init__(self, images):
        if isinstance(images, (str, os.PathLike)):
            if not os.path.isdir(images):
                raise NotADirectoryError(f"{type(self).__name__}: {images} is not a directory")
            self._directory, self._mapping = os.path.abspath(images), None
            self.names = _list_files(self._directory)
        else:
            self._directory, self._mapping = None, dict(images)
            self.names = sorted(name.lstrip("/") for name in self._mapping)
        self.root = None  # the served directory while started
        self._tmp = None
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self):
        """Start serving (idempotent); returns self. Waits until the server accepts connections."""
        if self._started:
            return self
        self._tmp = tempfile.mkdtemp(prefix=f"tfeed-{type(self).__name__.lower()}-")
        try:
            self.root = self._directory or self._write(os.path.join(self._tmp, "root"))
            self._start()
            self._started = True
        except BaseException:
            self._cleanup()
            raise
        return self

    def stop(self):
        """Stop the server and remove its temp dir (idempotent)."""
        self._started = False
        self._cleanup()

    def _cleanup(self):
        try:
            self._stop()
        finally:
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def _write(self, root):
        from tfeed.testing import write_images  # the parent side only; the subprocess never needs it

        write_images(self._mapping, root)
        return root

    # -- URLs --------------------------------------------------------------------------------
    def url(self, name):
        """Full URL of ``name`` (relative to the served root)."""
        return self._base_url(0) + urllib.parse.quote(name.lstrip("/"))

    def urls(self, names):
        """URLs of ``names``, in order."""
        return [self.url(name) for name in names]

    def _base_url(self, index):
        raise NotImplementedError

    def _require_started(self):
        if not self._started:
            raise RuntimeError(f"{type(self).__name__} is not started")

    def describe(self):
        """A short description of what the origin does (for tables and logs)."""
        return type(self).__name__

    def stats(self):
        """Requests received since start: ``{"requests": n, "by_status": {"200": n, ...}}``."""
        raise NotImplementedError

    def _start(self):
        raise NotImplementedError

    def _stop(self):
        pass


class HttpServerOrigin(Origin):
    """``python -m http.server`` serving ``images`` on ``host`` (127.0.0.1): a server tfeed's
    authors did not write. It answers HTTP/1.0 (one request per connection) from one thread
    per connection, and its listening socket has an accept queue of 5, so clients that open
    many connections at once see dropped SYNs (about 1 s retransmission each) or resets.
    ``capacity`` is None. ``stats()`` counts the request lines it logs."""

    def __init__(self, images, *, host="127.0.0.1"):
        super().__init__(images)
        self.host = host
        self.port = None
        self._proc = None
        self._log_path = None

    def _start(self):
        self.port = _free_port(self.host)
        self._log_path = os.path.join(self._tmp, "http.server.log")
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "http.server", "--bind", self.host, str(self.port), "--directory", self.root],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self._tmp)
        _wait_accepting(self.host, self.port, self._proc, "http.server", self._log_path)

    def _stop(self):
        proc, self._proc = self._proc, None
        stop_process(proc)

    def _base_url(self, index):
        self._require_started()
        return f"http://{self.host}:{self.port}/"

    def describe(self):
        return "python -m http.server (HTTP/1.0, accept queue 5)"

    def stats(self):
        counts = collections.Counter()
        with open(self._log_path, errors="replace") as f:
            for line in f:
                match = re.search(r'" (\d{3}) ', line)
                if match:
                    counts[match.group(1)] += 1
        return {"requests": sum(counts.values()), "by_status": dict(counts)}


class _LimitedOrigin(Origin):
    """An aiohttp server (in a subprocess running this file) on one or more loopback hosts,
    each answering at most ``limit`` requests at once after ``latency`` s; a request
    arriving while ``limit`` are open is answered 503 at once (with ``Retry-After`` when
    ``retry_after`` is not None). Every host serves every name."""

    def __init__(self, images, *, hosts, limit, latency, retry_after):
        super().__init__(images)
        if limit < 1 or latency < 0:
            raise ValueError(f"{type(self).__name__}: need a limit >= 1 and latency >= 0, got {limit}, {latency}")
        self.hosts, self.limit, self.latency, self.retry_after = list(hosts), int(limit), float(latency), retry_after
        self.ports = {}
        self._proc = None

    def _start(self):
        config = {"root": self.root, "hosts": self.hosts, "limit": self.limit, "latency": self.latency,
                  "retry_after": self.retry_after}
        here = os.path.abspath(__file__)
        code = f"import runpy; runpy.run_path({here!r}, run_name='__main__')"
        log_path = os.path.join(self._tmp, "server.log")
        with open(log_path, "wb") as log:
            self._proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(config)], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self._proc.poll() is None:
            if select.select([self._proc.stdout], [], [], 0.05)[0]:
                self.ports = json.loads(self._proc.stdout.readline().decode() or "{}")
                if self.ports:
                    return
        raise RuntimeError(f"{type(self).__name__} did not start:\n{_tail(log_path)}")

    def _stop(self):
        proc, self._proc = self._proc, None
        stop_process(proc)
        if proc is not None:
            proc.stdout.close()

    def _base_url(self, index):
        self._require_started()
        host = self.hosts[index % len(self.hosts)]
        return f"http://{host}:{self.ports[host]}/"

    def stats(self):
        """``{"requests", "by_status", "peak_open", "peak_open_all_hosts", "by_host": {host: {...}}}``;
        ``peak_open`` is the most requests one host had open at once (never above the limit),
        ``peak_open_all_hosts`` the most open at once over all hosts."""
        with urllib.request.urlopen(self._base_url(0).rstrip("/") + STATS_PATH, timeout=10) as response:
            by_host = json.load(response)
        everywhere = by_host.pop(_ALL_HOSTS)
        total = collections.Counter()
        for host_stats in by_host.values():
            total.update(host_stats["by_status"])
        return {"requests": sum(h["requests"] for h in by_host.values()), "by_status": dict(total),
                "peak_open": max(h["peak_open"] for h in by_host.values()),
                "peak_open_all_hosts": everywhere["peak_open"], "by_host": by_host}


class SheddingOrigin(_LimitedOrigin):
    """An origin that sheds load: every request waits ``latency`` s; one that arrives while
    ``max_concurrency`` are open is answered ``503`` at once with ``Retry-After:
    <retry_after>`` (seconds; None sends no header). Listens on ``host`` (127.0.0.1).
    ``capacity`` = ``max_concurrency / latency`` images/s (None when latency is 0)."""

    def __init__(self, images, max_concurrency=16, latency=0.1, retry_after=1, *, host="127.0.0.1"):
        super().__init__(images, hosts=[host], limit=max_concurrency, latency=latency, retry_after=retry_after)
        self.max_concurrency = self.limit
        self.capacity = max_concurrency / latency if latency > 0 else None

    def describe(self):
        after = f"Retry-After {self.retry_after}" if self.retry_after is not None else "no Retry-After"
        return f"sheds above {self.limit} open: 503 + {after}; {self.latency * 1000:.0f} ms/request"


class ManyHostsOrigin(_LimitedOrigin):
    """``hosts`` small origins on 127.0.0.2 .. 127.0.0.(hosts+1) (one port each), served by one
    subprocess. Each host answers at most ``per_host_concurrency`` requests at once, each
    after ``latency`` s; a request above that is answered 503 without ``Retry-After`` (a
    small origin behind a limiter). :meth:`urls` spreads names over the hosts round-robin.
    ``capacity`` = ``hosts * per_host_concurrency / latency`` images/s (None when latency is 0)."""

    def __init__(self, images, hosts=16, per_host_concurrency=4, latency=0.1):
        if not 1 <= hosts <= 250:
            raise ValueError(f"ManyHostsOrigin: hosts must be in 1..250, got {hosts}")
        super().__init__(images, hosts=[f"127.0.0.{i + 2}" for i in range(hosts)], limit=per_host_concurrency,
                         latency=latency, retry_after=None)
        self.per_host_concurrency = self.limit
        self.capacity = hosts * per_host_concurrency / latency if latency > 0 else None

    def url(self, name, host_index=None):
        """URL of ``name`` on host ``host_index`` (default: by the name's position in ``names``)."""
        if host_index is None:
            host_index = self.names.index(name.lstrip("/")) if name.lstrip("/") in self.names else 0
        return self._base_url(host_index) + urllib.parse.quote(name.lstrip("/"))

    def urls(self, names):
        """URLs of ``names``, the i-th on host ``i % hosts``."""
        return [self.url(name, i) for i, name in enumerate(names)]

    def describe(self):
        return (f"{len(self.hosts)} hosts x {self.limit} open, {self.latency * 1000:.0f} ms/request, "
                "503 without Retry-After above")


# -- the subprocess of _LimitedOrigin ------------------------------------------------------------


async def _serve(config):
    from aiohttp import web

    root = config["root"]
    files = {}
    for name in _list_files(root):
        with open(os.path.join(root, name), "rb") as f:
            files[name] = f.read()
    limit, latency, retry_after = config["limit"], config["latency"], config["retry_after"]
    stats = {host: {"requests": 0, "by_status": collections.Counter(), "open": 0, "peak_open": 0}
             for host in config["hosts"]}
    everywhere = stats[_ALL_HOSTS] = {"open": 0, "peak_open": 0}

    def handler_for(host):
        counts = stats[host]

        async def handle(request):
            if request.path == STATS_PATH:
                return web.json_response({h: {k: v for k, v in s.items() if k != "open"} for h, s in stats.items()})
            counts["requests"] += 1
            if counts["open"] >= limit:
                counts["by_status"]["503"] += 1
                headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
                return web.Response(status=503, text="overloaded\n", headers=headers)
            for place in (counts, everywhere):
                place["open"] += 1
                place["peak_open"] = max(place["peak_open"], place["open"])
            try:
                if latency:
                    await asyncio.sleep(latency)
                body = files.get(request.path.lstrip("/"))
                status = 200 if body is not None else 404
                counts["by_status"][str(status)] += 1
                if body is None:
                    return web.Response(status=404, text="not found\n")
                content_type = _CONTENT_TYPES.get(os.path.splitext(request.path)[1].lower(), "application/octet-stream")
                return web.Response(body=body, content_type=content_type)
            finally:
                counts["open"] -= 1
                everywhere["open"] -= 1

        return handle

    loop = asyncio.get_running_loop()
    servers, listeners, ports = [], [], {}
    for host in config["hosts"]:
        server = web.Server(handler_for(host), access_log=None)
        listener = await loop.create_server(server, host, 0, backlog=1024, reuse_address=True)
        servers.append(server)
        listeners.append(listener)
        ports[host] = listener.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps(ports), flush=True)
    await stop.wait()
    for listener in listeners:
        listener.close()
    await asyncio.gather(*(server.shutdown(0.25) for server in servers))


if __name__ == "__main__":
    asyncio.run(_serve(json.loads(sys.argv[1])))
