"""The tf.data stages over the native fetch op (fetch_native, fetch_native_graph) against real
local servers: TIFF transcoding, schemes, latency hiding, the stage contract and stats, groups,
error policies, graph mode without Python, a tf.data service worker, and the native engine
through image_dataset_from_urls (undecodable bodies, live stats)."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import tensorflow as tf

import tfeed
from tfeed.fetching.native import fetch_native, fetch_native_graph
from tfeed.testing import ImageServer

from helpers import FAST, fresh


# -- formats that need transcoding, schemes -------------------------------------------

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
    decoded = tf.io.decode_image(kept[1][0], channels=3).numpy()  # transcoded to BMP (PNG with alpha)
    assert np.array_equal(decoded, image[..., ::-1])  # OpenCV arrays are BGR
    snapshot = stats.snapshot()
    assert snapshot["failures"] == {"decode_error": 1, "http_404": 1} and snapshot["fetched"] == 3
    assert snapshot["bytes"] == 2 * len(files["b.jpg"]) + len(kept[1][0])
    graph = list(ds.apply(fetch_native_graph(FAST, deterministic=True)))
    reasons = [r.numpy().decode().partition("\t") for *_, r in graph]  # "<reason>\t<detail>"
    assert [reason for reason, _, _ in reasons] == ["", "unsupported_format", "http_404", "unsupported_format", ""]
    assert reasons[1][2].startswith("tiff needs transcoding") and "service workers" in reasons[1][2]


def test_stage_refuses_schemes_the_op_cannot_read(ops):
    with pytest.raises(ValueError, match="gs"):
        fetch_native(FAST.replace(schemes=("http", "gs")), tfeed.Stats())


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
    out = [(b.numpy(), int(l), u.numpy().decode(), r.numpy().split(b"\t")[0]) for b, l, u, r in ds]
    assert out == [(small_images[jpg], 0, urls[0], b""), (b"", 1, urls[1], b"http_404")]
    pooled = tf.data.Dataset.from_tensor_slices((urls, [0, 1])).apply(fetch_native_graph(FAST))
    pooled_graph = pooled._as_serialized_graph().numpy()
    assert b"PyFunc" not in pooled_graph and b"TfeedFetchPooled" in pooled_graph
    assert sorted((b.numpy(), int(l), u.numpy().decode(), r.numpy().split(b"\t")[0])
                  for b, l, u, r in pooled) == sorted(out)


def test_graph_stage_runs_on_a_tf_data_service_worker(ops, server, jpg, small_images):
    dispatcher = tf.data.experimental.service.DispatchServer()
    address = dispatcher.target.split("://")[1]
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(dispatcher_address=address))
    urls = [server.url(jpg, i=i) for i in range(40)] + [server.url(jpg, status=404)]
    ds = tf.data.Dataset.from_tensor_slices((urls, tf.range(41, dtype=tf.int64))).apply(fetch_native_graph(FAST))
    ds = ds.apply(tf.data.experimental.service.distribute("distributed_epoch", dispatcher.target))
    out = sorted((int(label), reason.numpy().split(b"\t")[0], body.numpy() == small_images[jpg])
                 for body, label, _, reason in ds)
    assert out == [(i, b"", True) for i in range(40)] + [(40, b"http_404", False)]
    worker.stop()
    dispatcher.stop()


# -- through image_dataset_from_urls -------------------------------------------------------

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
