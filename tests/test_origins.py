"""The origin zoo (tfeed.testing.origins, origin_nginx) against real clients, and a smoke run of
benchmarks/bench_origins.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import numpy as np
import pytest
import requests

from tfeed.testing import encode
from tfeed.testing.origins import HttpServerOrigin, ManyHostsOrigin, SheddingOrigin
from helpers import nginx_origin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "bench_origins.py")


@pytest.fixture(scope="module")
def images():
    return {f"img{i:02d}.png": encode(np.full((8, 8, 3), 10 * i, np.uint8), "png") for i in range(12)}


def concurrently(urls, **kwargs):
    """GET every URL at once (one thread each, released together): the responses, in order."""
    barrier = threading.Barrier(len(urls))
    out = [None] * len(urls)

    def get(i, url):
        barrier.wait(timeout=10)
        out[i] = requests.get(url, timeout=10, **kwargs)

    threads = [threading.Thread(target=get, args=(i, url)) for i, url in enumerate(urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert all(response is not None for response in out)
    return out


def test_http_server_origin_is_pythons_http_server(images):
    with HttpServerOrigin(images) as origin:
        name = origin.names[3]
        response = requests.get(origin.url(name), timeout=10)
        assert response.status_code == 200 and response.content == images[name]
        assert response.headers["Server"].startswith("SimpleHTTP")  # the stdlib server, not ours
        assert response.raw.version == 10  # HTTP/1.0: a connection per request
        assert requests.get(origin.url("missing.png"), timeout=10).status_code == 404
        assert origin.stats() == {"requests": 2, "by_status": {"200": 1, "404": 1}}
        assert origin.capacity is None and "http.server" in origin.describe()
        url = origin.url(name)
    with pytest.raises(requests.ConnectionError):  # stopped on exit
        requests.get(url, timeout=2)


def test_nginx_limit_conn_answers_503_while_n_requests_are_held_open(tmp_path, images):
    NginxOrigin = nginx_origin()
    limit = 3
    (tmp_path / "big.bin").write_bytes(bytes(64 << 20))  # larger than every socket buffer on the way
    for name, data in images.items():
        (tmp_path / name).write_bytes(data)
    with NginxOrigin(str(tmp_path), limit_conn=limit) as origin:
        assert requests.get(origin.url("img00.png"), timeout=10).status_code == 200
        holders = []
        try:
            for _ in range(limit):  # readers that never read: nginx stays mid-response
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect((origin.host, origin.port))
                sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                holders.append(sock)
            time.sleep(0.3)
            held = [requests.get(origin.url("img01.png"), timeout=10).status_code for _ in range(2)]
        finally:
            for sock in holders:
                sock.close()
        assert held == [503, 503]
        time.sleep(0.3)  # nginx notices the closed connections and finishes those requests
        assert requests.get(origin.url("img01.png"), timeout=10).status_code == 200
        assert origin.stats()["by_status"]["503"] == 2


def test_nginx_limit_conn_in_front_of_a_slow_app_sheds_concurrency(images):
    NginxOrigin = nginx_origin()
    with NginxOrigin(images, limit_conn=4, upstream_latency=0.5) as origin:
        assert origin.capacity == pytest.approx(8.0)
        under = concurrently(origin.urls(origin.names[:4]))
        assert [r.status_code for r in under] == [200] * 4
        assert [r.content for r in under] == [images[n] for n in origin.names[:4]]
        over = [r.status_code for r in concurrently(origin.urls(origin.names[:10]))]
        assert over.count(503) >= 1 and set(over) <= {200, 503}, over


def test_nginx_limit_req_answers_429_above_its_rate(images):
    NginxOrigin = nginx_origin()
    with NginxOrigin(images, limit_req=4) as origin:  # one request per 250 ms
        assert origin.capacity == 4
        with requests.Session() as session:
            burst = [session.get(origin.url(name), timeout=10).status_code for name in origin.names[:6]]
            assert burst[0] == 200 and burst.count(429) >= 4, burst
            time.sleep(0.6)
            assert session.get(origin.url(origin.names[0]), timeout=10).status_code == 200
        by_status = origin.stats()["by_status"]
        assert by_status["429"] == burst.count(429) and by_status["200"] == burst.count(200) + 1


def test_shedding_origin_sheds_above_its_concurrency_with_retry_after(images):
    with SheddingOrigin(images, max_concurrency=4, latency=0.5, retry_after=2) as origin:
        assert origin.capacity == pytest.approx(8.0)
        started = time.monotonic()
        under = concurrently(origin.urls(origin.names[:4]))
        assert [r.status_code for r in under] == [200] * 4
        assert [r.content for r in under] == [images[n] for n in origin.names[:4]]
        assert time.monotonic() - started >= 0.5  # the latency is really served
        over = concurrently(origin.urls(origin.names[:10]))
        shed = [r for r in over if r.status_code == 503]
        codes = [r.status_code for r in over]
        assert codes.count(200) >= 4 and len(shed) >= 1 and set(codes) <= {200, 503}, codes
        assert all(r.headers["Retry-After"] == "2" for r in shed)
        stats = origin.stats()
        assert stats["peak_open"] == 4
        assert stats["by_status"]["503"] == len(shed) and stats["requests"] == 14


def test_many_hosts_origin_listens_on_several_loopback_addresses(images):
    with ManyHostsOrigin(images, hosts=3, per_host_concurrency=2, latency=0.5) as origin:
        assert origin.capacity == pytest.approx(12.0)
        urls = origin.urls(origin.names[:6])
        hosts = [urllib.parse.urlsplit(url).hostname for url in urls]
        assert hosts == ["127.0.0.2", "127.0.0.3", "127.0.0.4"] * 2  # round-robin
        for url, name in zip(urls[:3], origin.names):
            response = requests.get(url, timeout=10)
            assert response.status_code == 200 and response.content == images[name]
        # three at once on one host: one is shed (no Retry-After); two on another host pass
        one_host = [origin.url(origin.names[0], host_index=0)] * 3
        other = [origin.url(origin.names[1], host_index=1)] * 2
        responses = concurrently(one_host + other)
        codes = [r.status_code for r in responses]
        assert sorted(codes[:3]) == [200, 200, 503] and codes[3:] == [200, 200], codes
        assert "Retry-After" not in responses[codes.index(503)].headers
        by_host = origin.stats()["by_host"]
        assert by_host["127.0.0.2"]["peak_open"] == 2 and by_host["127.0.0.2"]["by_status"]["503"] == 1
        assert by_host["127.0.0.3"]["by_status"] == {"200": 3}


def test_nginx_tls_origin_negotiates_http2_with_its_private_ca(images, tmp_path):
    NginxOrigin = nginx_origin()
    with NginxOrigin(images, tls=True, http2=True) as origin:
        url = origin.url(origin.names[5])
        assert url.startswith("https://127.0.0.1:")
        body = tmp_path / "body"
        curl = ["curl", "-sS", "--max-time", "10", "-o", str(body), "-w", "%{http_version} %{http_code}"]
        done = subprocess.run([*curl, "--http2", "--cacert", origin.ca_file, url], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "2 200" and body.read_bytes() == images[origin.names[5]]
        untrusted = subprocess.run([*curl, "--http2", url], capture_output=True, text=True, timeout=30)
        assert untrusted.returncode == 60  # the certificate chains to the private CA only
        assert requests.get(url, verify=origin.ca_file, timeout=10).content == images[origin.names[5]]


@pytest.mark.timeout(250)
def test_bench_origins_smoke_run_covers_every_origin_and_candidate(tmp_path):
    nginx_origin()
    pytest.importorskip("skimage")
    pytest.importorskip("matplotlib")
    done = subprocess.run([sys.executable, BENCH, "--smoke", "--epochs", "2", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "origins.json").read_text())
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_origins

    rows = {(row["origin"], row["candidate"]): row for row in data["rows"]}
    assert set(rows) == {(o, c) for o in bench_origins.ORIGINS for c in bench_origins.CANDIDATES}
    for (origin, candidate), row in rows.items():
        if candidate == "tensorpack" and row["status"] == "unavailable":
            assert row["reason"]
            continue
        assert row["status"] == "ok", row
        assert 0 < row["delivered"] <= row["total"] and row["images_per_s"] > 0
        if candidate == bench_origins.CEILING:  # the same files, read from disk, not from the origin
            assert row["delivered"] == row["total"] and row["origin_seen"]["requests"] == 0
            continue
        (second,) = row["later_epochs"]  # --epochs 2: the same process ran the list again
        assert 0 < second["delivered"] <= row["total"] and second["images_per_s"] > 0
        assert row["origin_seen"]["requests"] >= row["delivered"] + second["delivered"]
        if candidate in ("sequential", "threads32"):  # the polite peers deliver every image of a tiny list
            assert row["delivered"] == row["total"] and not row["failures"], row
    assert [s["origin"] for s in data["summary"]] == list(bench_origins.ORIGINS)
    assert all(s["tfeed"]["x_best_peer"] > 0 and s["tfeed"]["x_ceiling"] > 0 for s in data["summary"])
    shedding = rows[("shedding", "threads32")]["origin_seen"]["by_status"]
    assert shedding.get("200") == 2 * rows[("shedding", "threads32")]["total"]  # two epochs
    assert (tmp_path / "origins.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| origin" in (tmp_path / "origins.md").read_text() and "× peer" in done.stdout
    assert "### Epoch 2 (the same process and dataset)" in done.stdout
