"""The native fetch op (tfeed.native) against real local servers: bytes,
every failure reason, retries, deadlines, size cap, gzip, redirects,
keep-alive and per-host limits, latency hiding, the stages, the build and
the fallback when the op cannot be built."""

from __future__ import annotations

import fcntl
import http.server
import itertools
import os
import socketserver
import subprocess
import sys
import textwrap
import threading
import time

import cv2
import numpy as np
import pytest
import tensorflow as tf

import tfeed
from tfeed.native import build as native_build
from tfeed.native.stage import fetch_kwargs, fetch_native, fetch_native_graph
from tfeed.testing import ImageServer

FAST = tfeed.FetchConfig(retries=2, backoff=0.01, max_backoff=0.05, deadline=10, read_timeout=5)
_unique = itertools.count()


@pytest.fixture(scope="module")
def jpg(small_images):
    return sorted(n for n in small_images if n.endswith(".jpg"))[0]


def fetch(ops, urls, config=FAST, **attrs):
    """Run the op once; returns a list of (body, reason, attempts, detail)."""
    kwargs = {**fetch_kwargs(config), **attrs}
    bodies, reasons, attempts, details = ops.tfeed_fetch(tf.constant(urls, tf.string), **kwargs)
    return [(b, r.decode(), int(a), d.decode())
            for b, r, a, d in zip(bodies.numpy(), reasons.numpy(), attempts.numpy(), details.numpy())]


def fresh(server, name, **faults):
    """A URL no other test requested (``fail=K`` counts per exact URL)."""
    return server.url(name, n=next(_unique), **faults)


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


# -- formats that need transcoding, local files ---------------------------------------

@pytest.fixture(scope="module")
def tiff_server():
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ok, tiff = cv2.imencode(".tiff", image)
    assert ok
    ok, jpeg = cv2.imencode(".jpg", image)
    files = {"a.tif": tiff.tobytes(), "junk.tif": b"II*\x00" + b"\x00" * 64, "b.jpg": jpeg.tobytes()}
    with ImageServer(files) as srv:
        yield srv, image, files


def test_tiff_is_transcoded_by_the_stage_and_refused_in_graph_mode(ops, tiff_server):
    srv, image, files = tiff_server
    names = ["b.jpg", "a.tif", "missing.jpg", "junk.tif", "b.jpg"]  # one group: transcode, 404, OpenCV failure
    ds = tf.data.Dataset.from_tensor_slices(([srv.url(n) for n in names], list(range(len(names)))))
    stats = tfeed.Stats()
    kept = [(body.numpy(), int(label)) for body, label, _ in ds.apply(fetch_native(FAST, stats, deterministic=True))]
    assert [label for _, label in kept] == [0, 1, 4]
    assert kept[0][0] == kept[2][0] == files["b.jpg"]  # untouched rows keep their bodies
    decoded = tf.io.decode_png(kept[1][0], channels=3).numpy()
    assert np.array_equal(decoded, image[..., ::-1])  # OpenCV arrays are BGR
    snapshot = stats.snapshot()
    assert snapshot["failures"] == {"decode_error": 1, "http_404": 1} and snapshot["fetched"] == 3
    assert snapshot["bytes"] == 2 * len(files["b.jpg"]) + len(kept[1][0])
    graph = list(ds.apply(fetch_native_graph(FAST, deterministic=True)))
    assert [r.numpy() for *_, r in graph] == [b"", b"decode_error", b"http_404", b"decode_error", b""]


def test_local_files(ops, tmp_path, small_images, jpg):
    path = tmp_path / "a b.jpg"
    path.write_bytes(small_images[jpg])
    config = FAST.replace(schemes=("http", "https", "file"))
    results = fetch(ops, [str(path), "file://" + str(path).replace(" ", "%20"), str(tmp_path / "missing.jpg")], config)
    assert [(b == small_images[jpg], r) for b, r, _, _ in results] == [(True, ""), (True, ""), (False, "read_error")]
    assert fetch(ops, [str(path)])[0][1] == "invalid_url"  # "file" not in the default schemes


def test_stage_refuses_schemes_the_op_cannot_read(ops):
    with pytest.raises(ValueError, match="gs"):
        fetch_native(FAST.replace(schemes=("http", "gs")), tfeed.Stats())


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


# -- latency hiding, stages ----------------------------------------------------------

def test_500_urls_at_100ms_latency_overlap(ops, small_images):
    with ImageServer(small_images, latency=0.1) as slow:
        names = sorted(small_images)
        urls = [slow.url(names[i % len(names)], i=i) for i in range(500)]
        ds = tf.data.Dataset.from_tensor_slices((urls, tf.range(500, dtype=tf.int64)))
        stats = tfeed.Stats()
        start = time.monotonic()
        labels = sorted(int(label) for _, label, _ in ds.apply(fetch_native(tfeed.FetchConfig(), stats)))
        elapsed = time.monotonic() - start
    assert labels == list(range(500))
    assert elapsed < 10, f"500 URLs at 100 ms took {elapsed:.1f}s (serially: 50 s)"


def test_stage_contract_and_stats(ops, server, small_images, jpg):
    names = sorted(small_images)[:10]
    good = [server.url(name) for name in names]
    bad = [fresh(server, jpg, status=404), fresh(server, jpg, html=1), fresh(server, jpg, fail=1)]
    urls = good + bad
    ds = tf.data.Dataset.from_tensor_slices((urls, tf.range(len(urls), dtype=tf.int64)))
    stats = tfeed.Stats()
    out = list(ds.apply(fetch_native(FAST, stats, deterministic=True, group_size=4)))
    assert [int(label) for _, label, _ in out] == list(range(10)) + [12]
    assert [body.numpy() for body, _, _ in out[:10]] == [small_images[n] for n in names]
    assert [url.numpy().decode() for _, _, url in out] == good + [bad[2]]
    snap = stats.snapshot()
    assert snap["failures"] == {"http_404": 1, "not_image": 1}
    assert snap["retries"] == 1 and snap["fetched"] == 11
    assert {f.url for f in stats.failed_urls()} == set(bad[:2])


def test_stage_takes_groups(ops, server, small_images):
    names = sorted(small_images)[:6]
    groups = tf.data.Dataset.from_tensor_slices(([server.url(n) for n in names], tf.range(6, dtype=tf.int64))).batch(4)
    out = list(groups.apply(fetch_native(FAST, tfeed.Stats())))
    assert sorted(int(label) for _, label, _ in out) == list(range(6))


def test_error_policies(ops, server, jpg):
    ds = tf.data.Dataset.from_tensor_slices(([server.url(jpg), server.url(jpg, status=404)], [0, 1]))
    seen = []
    list(ds.apply(fetch_native(FAST, tfeed.Stats(), on_error=seen.append)))
    assert [(f.reason, f.url) for f in seen] == [("http_404", server.url(jpg, status=404))]
    stats = tfeed.Stats()
    with pytest.raises(Exception, match="http_404"):
        list(ds.apply(fetch_native(FAST, stats, on_error="raise")))
    with pytest.raises(tfeed.FetchError):  # kept for the accounting stage to re-raise as is
        stats.check()


def test_graph_stage_has_no_python_and_keeps_failures(ops, server, jpg, small_images):
    urls = [server.url(jpg), server.url(jpg, status=404)]
    ds = tf.data.Dataset.from_tensor_slices((urls, [0, 1])).apply(fetch_native_graph(FAST, deterministic=True))
    graph = ds._as_serialized_graph().numpy()
    assert b"PyFunc" not in graph
    out = [(b.numpy(), int(l), u.numpy().decode(), r.numpy()) for b, l, u, r in ds]
    assert out == [(small_images[jpg], 0, urls[0], b""), (b"", 1, urls[1], b"http_404")]
    pooled = tf.data.Dataset.from_tensor_slices((urls, [0, 1])).apply(fetch_native_graph(FAST))
    pooled_graph = pooled._as_serialized_graph().numpy()
    assert b"PyFunc" not in pooled_graph and b"TfeedFetchPooled" in pooled_graph
    assert sorted((b.numpy(), int(l), u.numpy().decode(), r.numpy()) for b, l, u, r in pooled) == sorted(out)


def test_abandoned_iterator_does_not_wait_for_the_deadline(ops, server, jpg):
    config = FAST.replace(deadline=60, read_timeout=60)
    urls = [server.url(jpg)] + [server.url(jpg, hang=1, i=i) for i in range(31)]
    ds = tf.data.Dataset.from_tensor_slices((urls, tf.range(32, dtype=tf.int64)))
    iterator = iter(ds.apply(fetch_native(config, tfeed.Stats(), group_size=1)))
    next(iterator)
    start = time.monotonic()
    del iterator  # cancels the 31 hanging transfers
    assert time.monotonic() - start < 5


def _indexed(urls):
    """``(url, label)`` rows whose label is the URL's index."""
    return tf.data.Dataset.from_tensor_slices((urls, tf.range(len(urls), dtype=tf.int64)))


def test_a_hanging_url_holds_back_only_the_last_group(ops, server, small_images):
    # 8 groups of 8, two with a URL that hangs until read_timeout.  Unpooled, each of
    # those groups would keep its 7 finished bodies until then (48 rows early, not 56).
    config = FAST.replace(read_timeout=4, deadline=5, retries=0)
    names = sorted(small_images)
    urls = [fresh(server, names[i % len(names)]) for i in range(64)]
    hanging = {5, 21}
    for i in hanging:
        urls[i] = fresh(server, names[0], hang=1)
    stats = tfeed.Stats()
    ds = _indexed(urls).apply(fetch_native(config, stats, group_size=8))
    start, arrivals = time.monotonic(), []
    for body, label, url in ds:
        arrivals.append((time.monotonic() - start, int(label)))
        assert url.numpy().decode() == urls[int(label)] and body.numpy() == small_images[names[int(label) % len(names)]]
    assert sorted(label for _, label in arrivals) == sorted(set(range(64)) - hanging)  # each good URL once
    assert stats.snapshot()["failures"] == {"timeout": 2}
    assert sum(1 for t, _ in arrivals if t < 3) >= 56  # all but the last group's 6, before any timeout


def test_two_iterators_of_one_pooled_dataset_never_share_rows(server, small_images):
    # Each iterator draws its own lot: had they shared one, their rows would be split between them.
    names = sorted(small_images)
    urls = [fresh(server, names[i % len(names)]) for i in range(40)]
    ds = _indexed(urls).apply(fetch_native(FAST, tfeed.Stats(), group_size=4))
    first, second = iter(ds), iter(ds)
    seen = {0: [], 1: []}
    for _ in range(40):
        for k, iterator in enumerate((first, second)):
            seen[k].append(int(next(iterator)[1]))
    assert sorted(seen[0]) == sorted(seen[1]) == list(range(40))


def test_abandoned_pooled_iterator_frees_its_request_slots(ops, server, jpg):
    # max_in_flight=4: had the abandoned lot kept its 4 admitted hanging transfers, the
    # next fetch would queue behind them until their 60 s deadline.
    config = FAST.replace(deadline=60, read_timeout=60, max_in_flight=4)
    urls = [fresh(server, jpg)] + [fresh(server, jpg, hang=1) for _ in range(7)]
    iterator = iter(_indexed(urls).apply(fetch_native(config, tfeed.Stats(), group_size=1)))
    assert int(next(iterator)[1]) == 0
    start = time.monotonic()
    del iterator  # cancels the lot: its transfers and its calls
    [(_, reason, _, _)] = fetch(ops, [fresh(server, jpg)], config)
    assert reason == "" and time.monotonic() - start < 5


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


# -- build and fallback ----------------------------------------------------------------

def test_build_reports_a_missing_compiler(tmp_path):
    with pytest.raises(native_build.BuildError, match="apt-get install") as info:
        native_build.build(tmp_path, compiler=str(tmp_path / "no-such-g++"))
    assert info.value.missing == "compiler"


def test_build_reports_missing_curl_headers(tmp_path):
    fake = tmp_path / "fake-g++"
    fake.write_text("#!/bin/sh\necho 'fetch_op.cc:1:10: fatal error: curl/curl.h: No such file or directory' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    with pytest.raises(native_build.BuildError, match="libcurl4-openssl-dev") as info:
        native_build.build(tmp_path, compiler=str(fake))
    assert info.value.missing == "libcurl headers"


def test_build_waits_for_another_builder(tmp_path):
    """A second process finds the library the first one built under the lock."""
    target = native_build.library_path(tmp_path)
    target.parent.mkdir(parents=True)
    result = {}
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        builder = threading.Thread(target=lambda: result.update(path=native_build.build(tmp_path)))
        builder.start()
        time.sleep(0.3)
        assert builder.is_alive()  # blocked on the lock, not compiling
        target.write_bytes(b"built by the other process")
    builder.join(timeout=30)
    assert result["path"] == target and target.read_bytes() == b"built by the other process"


def test_fallback_warns_once_and_never_breaks_import(tmp_path):
    script = textwrap.dedent(f"""
        import os, warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            import tfeed, tfeed.native
            assert os.listdir({str(tmp_path)!r}) == [], "import built something"
            first = tfeed.native.load({str(tmp_path)!r}, compiler="/nonexistent/g++")
            second = tfeed.native.load({str(tmp_path)!r}, compiler="/nonexistent/g++")
            available = tfeed.native.available({str(tmp_path)!r}, compiler="/nonexistent/g++")
        mine = [w for w in caught if issubclass(w.category, tfeed.native.NativeUnavailableWarning)]
        assert first is None and second is None and available is False
        assert len(mine) == 1, [str(w.message) for w in mine]
        assert "apt-get install g++ libcurl4-openssl-dev" in str(mine[0].message)
        print("OK")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]


def test_graph_stage_runs_on_a_tf_data_service_worker(ops, server, jpg, small_images):
    dispatcher = tf.data.experimental.service.DispatchServer()
    address = dispatcher.target.split("://")[1]
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(dispatcher_address=address))
    urls = [server.url(jpg, i=i) for i in range(40)] + [server.url(jpg, status=404)]
    ds = tf.data.Dataset.from_tensor_slices((urls, tf.range(41, dtype=tf.int64))).apply(fetch_native_graph(FAST))
    ds = ds.apply(tf.data.experimental.service.distribute("distributed_epoch", dispatcher.target))
    out = sorted((int(label), reason.numpy(), body.numpy() == small_images[jpg]) for body, label, _, reason in ds)
    assert out == [(i, b"", True) for i in range(40)] + [(40, b"http_404", False)]
    worker.stop()
    dispatcher.stop()


def test_try_call_returns_zeros_and_the_error_instead_of_failing(ops, photos):
    good = photos["astronaut.jpg"]

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def decode(body):
        return tf.cast(tf.image.resize(tf.io.decode_image(body, channels=3, expand_animations=False), (8, 8)),
                       tf.float32)

    def tried(body):
        (image,), ok, error = ops.tfeed_try_call([body], Tout=[tf.float32], output_shapes=[[8, 8, 3]],
                                                 f=decode.get_concrete_function())
        return image, ok, error

    batches = list(tf.data.Dataset.from_tensor_slices([good, b"not an image", good[:60]])
                   .map(tried, num_parallel_calls=2).batch(3))
    (images, ok, error), = batches  # a failing element does not fail the batch
    assert ok.numpy().tolist() == [True, False, False]
    np.testing.assert_allclose(images[0].numpy(), decode(tf.constant(good)).numpy())
    assert not images[1:].numpy().any()
    assert error[0] == b"" and b"image" in error[1].numpy().lower() and b"\n" not in error[1].numpy()


def test_try_call_falls_back_in_order_and_reports_the_last_error(ops, photos, small_images):
    jpeg, png = photos["astronaut.jpg"], small_images["img01.png"]
    spec = [tf.TensorSpec([], tf.string)]

    @tf.function(input_signature=spec)
    def jpeg_only(body):  # fails on anything but a JPEG (decode_jpeg itself would read a PNG)
        height, width = tf.unstack(tf.image.extract_jpeg_shape(body)[:2])
        whole = tf.image.decode_and_crop_jpeg(body, tf.stack([0, 0, height, width]), channels=3)
        return tf.image.resize(whole, (8, 8)) + 1000.0

    @tf.function(input_signature=spec)
    def any_format(body):
        return tf.image.resize(tf.io.decode_image(body, channels=3, expand_animations=False), (8, 8))

    def tried(body):
        (image,), ok, error = ops.tfeed_try_call(
            [body], Tout=[tf.float32], output_shapes=[[8, 8, 3]], f=jpeg_only.get_concrete_function(),
            fallbacks=[any_format.get_concrete_function()])
        return image, ok, error

    (images, ok, error), = list(tf.data.Dataset.from_tensor_slices([jpeg, png, b"neither"]).map(tried).batch(3))
    assert ok.numpy().tolist() == [True, True, False]
    assert images[0].numpy().min() >= 1000.0  # the JPEG took the first function
    np.testing.assert_allclose(images[1].numpy(), any_format(tf.constant(png)).numpy())  # the PNG, the fallback
    assert not images[2].numpy().any()
    assert b"unknown image file format" in error[2].numpy().lower()  # the last one tried: decode_image


def test_keep_rows_forwards_or_drops_rows(ops):
    floats = tf.reshape(tf.range(12, dtype=tf.float32), [3, 2, 2])
    strings = tf.constant(["a", "b", "c"])
    kept = ops.tfeed_keep_rows([True, True, True], [floats, strings])
    assert kept[0].numpy().tolist() == floats.numpy().tolist() and kept[1].numpy().tolist() == [b"a", b"b", b"c"]
    kept = ops.tfeed_keep_rows([True, False, True], [floats, strings])
    np.testing.assert_array_equal(kept[0].numpy(), floats.numpy()[[0, 2]])
    assert kept[1].numpy().tolist() == [b"a", b"c"]
    assert [t.shape[0] for t in ops.tfeed_keep_rows([False] * 3, [floats, strings])] == [0, 0]
    with pytest.raises(tf.errors.InvalidArgumentError, match="rows"):
        ops.tfeed_keep_rows([True, False], [floats])


def test_undecodable_body_is_counted_with_the_decoders_message(ops, server, small_images, jpg):
    names = sorted(small_images)[:6]
    pairs = [(server.url(n), 0) for n in names] + [(server.url(jpg, corrupt=1), 0)]
    ds = tfeed.image_dataset_from_urls(pairs, image_size=(16, 16), batch_size=len(pairs), fetch_engine="native",
                                       shuffle=False)
    (images, labels), = list(ds)  # the batch holding the undecodable body is one example short
    assert images.shape == (len(names), 16, 16, 3)
    snapshot = ds.stats.snapshot()
    assert snapshot["delivered"] == len(names) and snapshot["failures"] == {"decode_error": 1}
    assert snapshot["fetched"] == len(pairs) and snapshot["bytes"] > 0
    (failure,) = ds.stats.failed_urls()
    assert failure.url == server.url(jpg, corrupt=1)
    assert failure.detail.startswith("image could not be decoded: ") and len(failure.detail) > 30


def test_journal_keeps_batches_in_order_until_drained(ops):
    before = time.monotonic()
    ops.tfeed_journal_append(tf.constant(["a", "b"]), journal="test-journal")
    ops.tfeed_journal_append(tf.constant(["c"]), journal="test-journal")
    ops.tfeed_journal_append(tf.constant(["x"]), journal="another-journal")
    urls, sizes, first_time = ops.tfeed_journal_drain(journal="test-journal")
    assert urls.numpy().tolist() == [b"a", b"b", b"c"] and sizes.numpy().tolist() == [2, 1]
    assert before <= float(first_time) <= time.monotonic()  # the clock of Python's time.monotonic()
    urls, sizes, first_time = ops.tfeed_journal_drain(journal="test-journal")
    assert urls.shape == (0,) and sizes.shape == (0,) and float(first_time) == -1
    assert ops.tfeed_journal_drain(journal="another-journal")[0].numpy().tolist() == [b"x"]


def test_native_stats_are_live_and_positions_exact(ops, server, small_images):
    names = sorted(small_images)[:20]
    ds = tfeed.image_dataset_from_urls([(server.url(n), 0) for n in names], image_size=(8, 8), batch_size=4,
                                       fetch_engine="native", shuffle=False)
    iterator = iter(ds)
    first = [next(iterator) for _ in range(2)]
    assert ds.stats.snapshot()["delivered"] >= 8  # read while iterating (prefetched batches count too)
    assert len(ds.stats.position(consumed_batches=2).done) == 8
    assert sum(int(images.shape[0]) for images, _ in first) + sum(int(i.shape[0]) for i, _ in iterator) == 20
    snapshot = ds.stats.snapshot()
    assert snapshot["delivered"] == 20 and snapshot["epochs"] == 1 and snapshot["images_per_s"] > 0
