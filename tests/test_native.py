"""The native fetch op (tfeed.kernels.load_fetch), called directly against real local servers:
bytes, every failure reason, retries, deadlines, size cap, gzip, redirects, local files, sniffing,
keep-alive and per-host limits, concurrent callers.  Its tf.data stages are tested in
test_native_stages.py and test_native_pooled.py, the build and the fallback when the op cannot be
built in test_native_build.py, the core kernels in test_native_core.py."""

from __future__ import annotations

import http.server
import socketserver
import threading
import time

import pytest

from helpers import FAST, fetch, fresh, loop_may_use_realtime


# -- bytes ---------------------------------------------------------------------

def test_bodies_equal_served_bytes(ops, server, small_images, photos):
    names = sorted(small_images) + sorted(photos)
    results = fetch(ops, [server.url(name) for name in names])
    served = {**small_images, **photos}
    for name, (body, reason, attempts, detail) in zip(names, results):
        assert (reason, attempts, detail) == ("", 1, "")
        assert body == served[name]


def test_gzip_is_decoded(ops, server, jpg, small_images):
    [(body, reason, _, _)] = fetch(ops, [server.url(jpg, gzip=1)])
    assert reason == ""
    assert body == small_images[jpg]


def test_corrupt_image_passes_as_bytes(ops, server, jpg):
    """The op only sniffs magic bytes; decoding (and decode_error) is the decode stage's job."""
    [(body, reason, _, _)] = fetch(ops, [server.url(jpg, corrupt=1)])
    assert reason == "" and body[:3] == b"\xff\xd8\xff"


# -- failure reasons -------------------------------------------------------------

@pytest.mark.parametrize("faults,reason", [
    ({"status": 404}, "http_404"), ({"status": 410}, "http_410"), ({"status": 503}, "http_5xx"),
    ({"status": 500}, "http_5xx"), ({"html": 1}, "not_image"), ({"status": 204}, "not_image"),
    ({"truncate": 0.5}, "truncated"), ({"redirect": 9}, "too_many_redirects"),
])
def test_failure_reasons(ops, server, jpg, faults, reason):
    [(body, got, _, detail)] = fetch(ops, [fresh(server, jpg, **faults)])
    assert (body, got) == (b"", reason)
    assert detail


def test_invalid_and_unreachable_urls(ops):
    closed = socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    urls = ["ftp://example.com/a.jpg", "not a url", "", f"http://127.0.0.1:{port}/a.jpg", "http://nothing.invalid/a.jpg"]
    reasons = [r for _, r, _, _ in fetch(ops, urls, FAST.replace(retries=0))]
    assert reasons == ["invalid_url", "invalid_url", "invalid_url", "connection", "dns"]


def test_not_image_detail_shows_the_body(ops, server, jpg):
    [(_, reason, _, detail)] = fetch(ops, [server.url(jpg, html=1)])
    assert reason == "not_image" and "<html>" in detail


# -- retries, Retry-After, deadlines -----------------------------------------------

def test_5xx_is_retried_until_success(ops, server, jpg, small_images):
    [(body, reason, attempts, _)] = fetch(ops, [fresh(server, jpg, fail=2)])
    assert (reason, attempts) == ("", 3)
    assert body == small_images[jpg]


def test_4xx_is_not_retried_but_429_is(ops, server, jpg):
    results = fetch(ops, [fresh(server, jpg, status=404), fresh(server, jpg, fail=1, fail_status=429)])
    assert [(r, a) for _, r, a, _ in results] == [("http_404", 1), ("", 2)]


def test_retry_after_is_honoured(ops, server, jpg):
    start = time.monotonic()
    [(_, reason, attempts, _)] = fetch(ops, [fresh(server, jpg, fail=1, retry_after=1)])
    elapsed = time.monotonic() - start
    assert (reason, attempts) == ("", 2)
    assert 1.0 <= elapsed < 4.0  # backoff alone would be 0.01 s


def test_retries_stop_at_the_limit(ops, server, jpg):
    [(_, reason, attempts, _)] = fetch(ops, [fresh(server, jpg, status=503)], FAST.replace(retries=3))
    assert (reason, attempts) == ("http_5xx", 4)


def test_deadline_bounds_a_hanging_server(ops, server, jpg):
    config = FAST.replace(deadline=1.0, read_timeout=30)
    start = time.monotonic()
    [(_, reason, _, detail)] = fetch(ops, [server.url(jpg, hang=1)], config)
    elapsed = time.monotonic() - start
    assert reason == "timeout" and "deadline" in detail
    assert 0.9 <= elapsed < 4  # read_timeout alone would allow 30 s


def test_read_timeout_aborts_and_retries(ops, server, jpg):
    config = FAST.replace(read_timeout=0.3, retries=1, deadline=10)
    start = time.monotonic()
    [(_, reason, attempts, _)] = fetch(ops, [server.url(jpg, hang=1)], config)
    elapsed = time.monotonic() - start
    assert (reason, attempts) == ("timeout", 2)
    assert 0.55 <= elapsed < 4


def test_drip_feed_is_cut_at_the_deadline(ops, server):
    config = FAST.replace(deadline=1.0, read_timeout=0.5)
    start = time.monotonic()
    [(_, reason, _, _)] = fetch(ops, [server.url("blob", size=100_000, drip=0.05, chunk=64)], config)
    assert reason == "timeout"
    assert time.monotonic() - start < 4  # the whole body would take 78 s


def test_slow_but_steady_body_arrives(ops, server, jpg, small_images):
    [(body, reason, _, _)] = fetch(ops, [server.url(jpg, drip=0.01, chunk=max(1, len(small_images[jpg]) // 20))],
                                   FAST.replace(read_timeout=0.5))
    assert reason == "" and body == small_images[jpg]


# -- size cap, redirects -----------------------------------------------------------

def test_size_cap(ops, server):
    config = FAST.replace(max_bytes=10_000)
    results = fetch(ops, [server.url("blob", size=10_000), server.url("blob", size=10_001),
                          server.url("blob", size=200_000, gzip=1)], config)
    assert [(len(b), r) for b, r, _, _ in results] == [(10_000, ""), (0, "too_large"), (0, "too_large")]
    assert "Content-Length" in results[1][3]  # refused before the body was read


def test_redirects_are_followed_up_to_the_limit(ops, server, jpg, small_images):
    config = FAST.replace(max_redirects=3)
    results = fetch(ops, [server.url(jpg, redirect=3), server.url(jpg, redirect=4)], config)
    assert results[0][:2] == (small_images[jpg], "")
    assert results[1][1] == "too_many_redirects"


# -- local files, sniffing -----------------------------------------------------------

def test_local_files(ops, tmp_path, small_images, jpg):
    path = tmp_path / "a b.jpg"
    path.write_bytes(small_images[jpg])
    config = FAST.replace(schemes=("http", "https", "file"))
    results = fetch(ops, [str(path), "file://" + str(path).replace(" ", "%20"), str(tmp_path / "missing.jpg")], config)
    assert [(b == small_images[jpg], r) for b, r, _, _ in results] == [(True, ""), (True, ""), (False, "read_error")]
    assert fetch(ops, [str(path)])[0][1] == "invalid_url"  # "file" not in the default schemes


def test_op_sniffs_like_python(ops, tmp_path):
    """The op's signatures (generated from tfeed.contract) against tfeed.fetching.sniff, through file:// reads."""
    from tfeed import contract
    from tfeed.fetching import sniff

    bodies = [b"", b"<html>", b"P1\x0b1 1", b"BM" + bytes(24), b"BM" + bytes(25), b"RIFF\0\0\0\0WEBQ"]
    for _, min_length, parts in contract.SIGNATURES:
        body = bytearray(max(min_length, max(offset + len(magic) for offset, magic in parts)))
        for offset, magic in parts:
            body[offset:offset + len(magic)] = magic
        bodies += [bytes(body), bytes(body[:min_length - 1])]
    paths = []
    for i, body in enumerate(bodies):
        paths.append(str(tmp_path / f"{i}.bin"))
        (tmp_path / f"{i}.bin").write_bytes(body)
    results = fetch(ops, paths, FAST.replace(schemes=("file",)), pass_transcodable=True)
    for body, (_, reason, _, detail) in zip(bodies, results):
        verdict = sniff.check(body)
        expected = (verdict.reason or "", "" if verdict.reason else verdict.detail if verdict.transcode else "")
        assert (reason, "" if reason else detail) == expected, body


# -- connections -------------------------------------------------------------------

class _CountingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b"\xff\xd8\xff\xe0" + bytes(2000)

    def setup(self):
        super().setup()
        server = self.server
        with server.lock:
            server.connections += 1
            server.open += 1
            server.peak = max(server.peak, server.open)

    def finish(self):
        super().finish()
        with self.server.lock:
            self.server.open -= 1

    def do_GET(self):
        time.sleep(0.02)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def counting_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _CountingHandler)
    server.daemon_threads = True
    server.lock, server.connections, server.open, server.peak = threading.Lock(), 0, 0, 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_keep_alive_and_per_host_limit(ops, counting_server):
    server, base = counting_server
    config = FAST.replace(connections_per_host=4)
    for round_ in range(3):
        results = fetch(ops, [f"{base}{round_}-{i}.jpg" for i in range(32)], config)
        assert all(r == "" for _, r, _, _ in results)
    assert server.peak <= 4
    assert server.connections <= 4  # 96 requests over the same kept-alive connections


# -- concurrent callers -----------------------------------------------------------------

def test_concurrent_callers(ops, server, small_images):
    names = sorted(small_images)
    results = {}

    def worker(k):
        results[k] = fetch(ops, [server.url(names[(k + i) % len(names)]) for i in range(20)])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k, got in results.items():
        assert [b for b, _, _, _ in got] == [small_images[names[(k + i) % len(names)]] for i in range(20)]


def _loop_thread_scheduling() -> dict:
    """``{"policy": os.SCHED_*, "slice": ns or None}`` of this process's ``tfeed-fetch`` thread."""
    import glob
    import os

    for task in glob.glob(f"/proc/{os.getpid()}/task/*"):
        try:
            name, sched = open(task + "/comm").read().strip(), open(task + "/sched").read()
            policy = os.sched_getscheduler(int(task.rsplit("/", 1)[1]))
        except OSError:  # a thread that ended meanwhile
            continue
        if name == "tfeed-fetch":
            slices = [int(line.split(":")[1]) for line in sched.splitlines() if line.startswith("se.slice")]
            return {"policy": policy, "slice": slices[0] if slices else None}
    raise AssertionError("no tfeed-fetch thread")


def test_the_loop_thread_runs_at_real_time_priority_where_allowed(ops, server, jpg):
    """The loop reads a response as soon as it lands, even next to busy decode threads:
    SCHED_FIFO where the process may use it, a fair thread (see the next test) where not."""
    import os

    time.sleep(0.2)  # after a test that kept the loop busy, one quiet period (see the hot-loop test)
    assert fetch(ops, [server.url(jpg)])[0][1] == ""  # the loop thread exists
    expected = os.SCHED_FIFO if loop_may_use_realtime() else os.SCHED_OTHER
    assert _loop_thread_scheduling()["policy"] == expected


def test_without_real_time_the_loop_thread_asks_for_short_time_slices(server, jpg):
    """``TFEED_LOOP_REALTIME=0`` (or no privilege): a fair thread whose slice is 0.1 ms on
    Linux 6.12+ (EEVDF, where a fair task's slice is settable), so it preempts sooner on waking."""
    import json
    import os
    import platform
    import subprocess
    import sys

    code = ("import json, sys; sys.path.insert(0, 'tests'); import test_native as t, tfeed.kernels as k; "
            "assert t.fetch(k.load_fetch(), [sys.argv[1]])[0][1] == ''; print(json.dumps(t._loop_thread_scheduling()))")
    from tfeed import contract

    env = {**os.environ, contract.LOOP_REALTIME_SWITCH: "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code, server.url(jpg)], env=env, capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["policy"] == os.SCHED_OTHER
    release = tuple(int(part) for part in platform.release().split(".")[:2] if part.isdigit())
    if release < (6, 12) or got["slice"] is None:
        pytest.skip(f"kernel {platform.release()} has no settable slice for fair tasks")
    assert got["slice"] == 100_000, got


def test_a_hot_loop_thread_leaves_real_time_and_returns(ops):
    """Real time is for waking fast, never for holding a core: while the loop inflates large
    gzip bodies (more than half a core), it runs as a fair thread, and returns to SCHED_FIFO
    once it is idle again."""
    import collections
    import os

    from tfeed.testing import ImageServer

    if not loop_may_use_realtime():
        pytest.skip("this process may not use SCHED_FIFO")
    images = {f"zeros{i}.jpg": b"\xff\xd8\xff" + bytes(8 * 2**20) for i in range(4)}
    with ImageServer(images, process=True) as server:
        urls = [server.url(name, gzip=1) for name in sorted(images)]
        assert fetch(ops, urls[:1])[0][1] == ""
        policies, done = collections.Counter(), threading.Event()

        def sample():
            while not done.is_set():
                policies[_loop_thread_scheduling()["policy"]] += 1
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            assert [reason for _, reason, _, _ in fetch(ops, urls * 6)] == [""] * 24
        finally:
            done.set()
            sampler.join()
        assert policies[os.SCHED_OTHER] > 0, policies
        time.sleep(0.2)
        assert fetch(ops, urls[:1])[0][1] == ""  # one quiet period later
        assert _loop_thread_scheduling()["policy"] == os.SCHED_FIFO
