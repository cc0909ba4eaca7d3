"""Tests for tfeed.testing's servers (ImageServer: serving, faults, latency, counts, lifecycle;
NginxServer): real servers, real HTTP; no mocks.  The image helpers are in test_testing.py."""

import gzip
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tfeed.testing import ImageServer, NginxServer, NginxUnavailable, encode, synthetic_shapes, write_images

pytestmark = pytest.mark.timeout(60)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def images():
    shapes, _ = synthetic_shapes(2, size=64, seed=1)
    return {"a.jpg": encode(shapes[0], "jpeg"), "cls/b.png": encode(shapes[1], "png")}


@pytest.fixture(scope="module")
def server(images):
    with ImageServer(images) as srv:
        yield srv


# --- ImageServer: plain serving -------------------------------------------------------------

def test_serves_exact_bytes_with_content_type(server, images):
    for name, ctype in [("a.jpg", "image/jpeg"), ("cls/b.png", "image/png")]:
        response = requests.get(server.url(name), timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == ctype
        assert response.content == images[name]


def test_names_urls_and_404(server):
    assert server.names == ["a.jpg", "cls/b.png"]
    assert server.base_url == f"http://127.0.0.1:{server.port}/"
    assert server.url("cls/b.png", delay=0.5, hang=False) == server.base_url + "cls/b.png?delay=0.5&hang=0"
    assert requests.get(server.url("missing.jpg"), timeout=5).status_code == 404


def test_directory_is_served_by_relative_path(tmp_path, images):
    write_images(images, tmp_path)
    with ImageServer(str(tmp_path)) as srv:
        assert srv.names == ["a.jpg", "cls/b.png"]
        assert requests.get(srv.url("cls/b.png"), timeout=5).content == images["cls/b.png"]


# --- ImageServer: faults --------------------------------------------------------------------

def test_status(server):
    response = requests.get(server.url("a.jpg", status=500), timeout=5)
    assert response.status_code == 500 and "500" in response.text
    assert requests.get(server.url("a.jpg", status=404), timeout=5).status_code == 404


def test_delay(server):
    start = time.monotonic()
    assert requests.get(server.url("a.jpg", delay=0.3), timeout=5).status_code == 200
    assert time.monotonic() - start >= 0.3


def test_hang_times_out_the_client(server):
    start = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(server.url("a.jpg", hang=1), timeout=1)
    assert time.monotonic() - start < 3


def test_drip_is_slow_but_complete(server, images):
    data = images["cls/b.png"]
    chunks = -(-len(data) // 2048)
    start = time.monotonic()
    response = requests.get(server.url("cls/b.png", drip=0.05, chunk=2048), timeout=5)
    assert response.content == data
    assert time.monotonic() - start >= 0.05 * (chunks - 1)


def test_truncate_sends_fewer_bytes_than_content_length(server, images):
    data = images["cls/b.png"]
    response = requests.get(server.url("cls/b.png", truncate=0.5), timeout=5, stream=True)
    assert int(response.headers["Content-Length"]) == len(data)
    received = b""
    with pytest.raises(Exception) as error:  # urllib3 reports the short body when the connection closes
        for chunk in response.raw.stream(1024, decode_content=False):
            received += chunk
    assert "IncompleteRead" in repr(error.value) or "Connection broken" in repr(error.value)
    assert received == data[:len(data) // 2]
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(server.url("cls/b.png", truncate=0.5), timeout=5)


def test_corrupt_keeps_magic_and_length(server, images):
    data = images["a.jpg"]
    first = requests.get(server.url("a.jpg", corrupt=1), timeout=5).content
    again = requests.get(server.url("a.jpg", corrupt=1), timeout=5).content
    assert first == again
    assert len(first) == len(data) and first[:32] == data[:32] and first[32:] != data[32:]


def test_html(server):
    response = requests.get(server.url("a.jpg", html=1), timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.startswith("<html>") and response.text.rstrip().endswith("</html>")


def test_redirect_chain_ends_in_the_image(server, images):
    response = requests.get(server.url("a.jpg", redirect=3), timeout=5)
    assert [r.status_code for r in response.history] == [302, 302, 302]
    assert response.status_code == 200 and response.content == images["a.jpg"]
    with pytest.raises(requests.exceptions.TooManyRedirects):
        session = requests.Session()
        session.max_redirects = 2
        session.get(server.url("a.jpg", redirect=3), timeout=5)


def test_fail_then_succeed_per_url(server, images):
    url = server.url("a.jpg", fail=2, retry_after=1)
    responses = [requests.get(url, timeout=5) for _ in range(3)]
    assert [r.status_code for r in responses] == [503, 503, 200]
    assert responses[0].headers["Retry-After"] == "1"
    assert "Retry-After" not in responses[2].headers
    assert responses[2].content == images["a.jpg"]
    other = server.url("a.jpg", fail=1, fail_status=429)  # a different URL has its own counter
    assert [requests.get(other, timeout=5).status_code for _ in range(2)] == [429, 200]


def test_gzip_decodes_to_the_original(server, images):
    response = requests.get(server.url("a.jpg", gzip=1), timeout=5, stream=True)
    raw = response.raw.read(decode_content=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert raw != images["a.jpg"] and gzip.decompress(raw) == images["a.jpg"]
    assert requests.get(server.url("a.jpg", gzip=1), timeout=5).content == images["a.jpg"]


def test_blob_has_size_and_jpeg_magic(server):
    size = 8 * 1024 * 1024 + 3
    response = requests.get(server.url("blob", size=size), timeout=10)
    assert int(response.headers["Content-Length"]) == size
    assert len(response.content) == size
    assert response.content[:4] == b"\xff\xd8\xff\xe0" and not response.content[4:].strip(b"\0")
    squeezed = requests.get(server.url("blob", size=size, gzip=1), timeout=10, stream=True)
    assert len(squeezed.raw.read(decode_content=False)) < size // 100


def test_malformed_fault_is_400(server):
    assert requests.get(server.url("a.jpg", delay="soon"), timeout=5).status_code == 400


# --- ImageServer: latency, counts, lifecycle ------------------------------------------------

def test_latency_is_concurrent_not_serialised(images):
    with ImageServer(images, latency=0.2) as srv, ThreadPoolExecutor(50) as pool:
        def timed(i):
            start = time.monotonic()
            ok = requests.get(srv.url("a.jpg", i=i), timeout=10).status_code == 200
            return ok, time.monotonic() - start
        start = time.monotonic()
        results = list(pool.map(timed, range(50)))
        elapsed = time.monotonic() - start
    assert all(ok for ok, _ in results)
    assert min(t for _, t in results) >= 0.2
    assert elapsed < 2.5  # serialised would be 10 s


def test_jitter_stays_in_bounds(images):
    with ImageServer(images, latency=0.1, jitter=0.05, seed=3) as srv:
        times = []
        for _ in range(8):
            start = time.monotonic()
            requests.get(srv.url("a.jpg"), timeout=5)
            times.append(time.monotonic() - start)
    assert min(times) >= 0.05 and max(times) < 0.5


def test_counts_and_reset(images):
    with ImageServer(images) as srv:
        for query in ({}, {"status": 500}, {"corrupt": 1}):
            requests.get(srv.url("a.jpg", **query), timeout=5)
        requests.get(srv.url("cls/b.png"), timeout=5)
        assert srv.request_count() == 4
        assert srv.request_count("a.jpg") == 3 and srv.request_count("cls/b.png") == 1
        assert srv.request_count("missing.jpg") == 0
        url = srv.url("a.jpg", fail=1)
        assert requests.get(url, timeout=5).status_code == 503
        srv.reset_counts()
        assert srv.request_count() == 0
        assert requests.get(url, timeout=5).status_code == 503  # fail counters were reset too


def raw_exchange(port, payload, responses, timeout=5.0):
    """Send ``payload`` on one connection and read ``responses`` HTTP/1.1 responses
    (each with a Content-Length): a list of (status line, headers dict, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        data, out = b"", []
        while len(out) < responses:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                lines = data[:head_end].decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
                length = int(headers.get("content-length", 0))
                if len(data) >= head_end + 4 + length:
                    out.append((lines[0], headers, data[head_end + 4:head_end + 4 + length]))
                    data = data[head_end + 4 + length:]
                    continue
            chunk = sock.recv(1 << 16)
            assert chunk, f"connection closed after {len(out)} responses"
            data += chunk
    return out


def test_fast_path_answers_pipelined_requests_in_order(images):
    # Plain GETs skip aiohttp; with jitter larger than the gap between requests, later
    # answers could be ready first, but HTTP/1.1 needs them in request order.
    with ImageServer(images, latency=0.05, jitter=0.05, seed=3) as srv:
        names = ["a.jpg", "cls/b.png"] * 4
        payload = b"".join(f"GET /{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for name in names)
        answers = raw_exchange(srv.port, payload, len(names))
        assert [status for status, _, _ in answers] == ["HTTP/1.1 200 OK"] * len(names)
        assert [body for _, _, body in answers] == [images[name] for name in names]
        assert answers[1][1]["content-type"] == "image/png"
        assert srv.request_count("a.jpg") == 4 and srv.request_count("cls/b.png") == 4


def test_fast_path_hands_a_connection_to_the_full_server(images):
    with ImageServer({**images, "with space.jpg": images["a.jpg"]}) as srv:
        # plain (fast path), a fault (the full server), then plain again: one connection
        payload = (b"GET /a.jpg HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"GET /a.jpg?status=418 HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"GET /with%20space.jpg HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"GET /missing.jpg HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = raw_exchange(srv.port, payload, 4)
        assert [status.split(" ")[1] for status, _, _ in answers] == ["200", "418", "200", "404"]
        assert answers[0][2] == answers[2][2] == images["a.jpg"]
        # aiohttp names itself in a Server header, the fast path does not
        assert ["server" in headers for _, headers, _ in answers] == [False, True, True, True]
        closing, = raw_exchange(srv.port, b"GET /a.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1)
        assert "server" in closing[1] and closing[2] == images["a.jpg"]
        with requests.Session() as session:  # keep-alive through a client library; HEAD has no body
            head = session.head(srv.url("cls/b.png"), timeout=5)
            assert head.status_code == 200 and head.content == b""
            assert "Server" not in head.headers  # requests' "Connection: keep-alive" stays on the fast path
            assert int(head.headers["Content-Length"]) == len(images["cls/b.png"])
            assert session.get(srv.url("with space.jpg"), timeout=5).content == images["a.jpg"]
            assert session.post(srv.url("a.jpg"), data=b"x", timeout=5).status_code == 405
            assert session.get(srv.url("a.jpg"), timeout=5).content == images["a.jpg"]
        assert srv.request_count("a.jpg") == 4 and srv.request_count("with space.jpg") == 2  # not the POST


def test_stop_is_prompt_with_hanging_requests_and_idempotent(images):
    srv = ImageServer(images).start()
    assert srv.start() is srv
    errors = []

    def hang():
        try:
            requests.get(srv.url("a.jpg", hang=1), timeout=20)
        except requests.RequestException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hang) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    start = time.monotonic()
    srv.stop()
    assert time.monotonic() - start < 3
    srv.stop()
    for thread in threads:
        thread.join(timeout=5)
    assert len(errors) == 4
    with pytest.raises(RuntimeError):
        srv.base_url


def test_process_mode(images):
    with ImageServer(images, process=True, latency=0.05) as srv:
        assert requests.get(srv.base_url + "__stats", timeout=5).json()["pid"] != os.getpid()
        assert requests.get(srv.url("cls/b.png"), timeout=5).content == images["cls/b.png"]
        url = srv.url("a.jpg", fail=1, retry_after=2)
        first, second = requests.get(url, timeout=5), requests.get(url, timeout=5)
        assert (first.status_code, first.headers["Retry-After"], second.status_code) == (503, "2", 200)
        assert srv.request_count() == 3 and srv.request_count("a.jpg") == 2
        srv.reset_counts()
        assert srv.request_count() == 0
        port = srv.port
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/a.jpg", timeout=2)


def test_cli_prints_url_and_stops_on_sigterm(tmp_path, images):
    write_images(images, tmp_path)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "tfeed.testing.server", str(tmp_path), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/")
        assert requests.get(base_url + "a.jpg", timeout=5).content == images["a.jpg"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


# --- NginxServer ----------------------------------------------------------------------------

def test_nginx_serves_exact_bytes(tmp_path, images):
    write_images(images, tmp_path)
    try:
        srv = NginxServer(tmp_path).start()
    except NginxUnavailable:
        pytest.skip("nginx is not installed")
    try:
        for name, ctype in [("a.jpg", "image/jpeg"), ("cls/b.png", "image/png")]:
            response = requests.get(srv.url(name), timeout=5)
            assert response.content == images[name]
            assert response.headers["Content-Type"] == ctype
        assert requests.get(srv.url("missing.jpg"), timeout=5).status_code == 404
    finally:
        srv.stop()
    srv.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{srv.port}/a.jpg", timeout=2)
