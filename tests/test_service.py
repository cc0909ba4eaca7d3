"""tf.data service mode with real processes on loopback: a dispatcher and two
workers started through ``tfeed service``, an ImageServer subprocess, no mocks."""

from __future__ import annotations

import collections
import gc
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

import tfeed
import tfeed.service
from tfeed.config import FetchConfig
from tfeed.service import client, staging
from tfeed.service import dataset as service_wiring
from tfeed.testing import ImageServer, encode
from tfeed.testing.server import stop_process

from helpers import free_port

pytestmark = pytest.mark.skipif(not tfeed.kernels.available(), reason="the native fetch op cannot be built here")

START_TIMEOUT = 60.0


class Cluster:
    """A dispatcher and ``workers`` worker processes; every process is stopped by PID on close."""

    def __init__(self, tmp_path: Path, workers: int = 2, dispatcher_args=()):
        self.procs = []
        self.logs = tmp_path
        try:
            dispatcher = self._start("dispatcher", *dispatcher_args)
            self.address = self._ready(dispatcher)
            pending = [self._start("worker", "--dispatcher", self.address) for _ in range(workers)]
            self.workers = [(proc, self._ready(proc)) for proc in pending]
        except BaseException:
            self.close()
            raise

    def _start(self, *args):
        log = open(self.logs / f"{args[0]}-{len(self.procs)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "tfeed", "service", *args], stdout=subprocess.PIPE,
                                stderr=log, stdin=subprocess.DEVNULL, text=True)
        log.close()
        self.procs.append(proc)
        return proc

    def _ready(self, proc) -> str:
        line = proc.stdout.readline().strip()  # the ready line; a dead process gives ""
        assert line.startswith("grpc://"), f"not started: {line!r}; see {self.logs}"
        return line

    def close(self):
        for proc in self.procs:
            stop_process(proc)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("service-logs"))
    yield c
    c.close()
    assert [proc.returncode for proc in c.procs] == [0, 0, 0]  # SIGTERM: a clean exit


def _images(n):
    rng = np.random.default_rng(1)
    return {f"img{i:03d}.{'png' if i % 4 == 0 else 'jpg'}":
            encode(rng.integers(0, 256, (40 + i % 7, 48, 3), dtype=np.uint8), "png" if i % 4 == 0 else "jpeg")
            for i in range(n)}


@pytest.fixture(scope="module")
def server():
    with ImageServer(_images(60), process=True) as srv:
        yield srv


def _pairs(server, good=48):
    """(url, unique label) pairs: ``good`` images, then 2 x 404, 2 x not_image, 1 x connection."""
    names = sorted(server.names)
    urls = [server.url(n) for n in names[:good]]
    urls += [server.url(names[0], status=404), server.url(names[1], status=404),
             server.url(names[2], html=1), server.url(names[3], html=1), "http://127.0.0.1:1/refused.jpg"]
    return [(url, i) for i, url in enumerate(urls)]


EXPECTED_FAILURES = {"http_404": 2, "not_image": 2, "connection": 1}


def _labels(dataset):
    return [int(v) for _, labels in dataset for v in labels.numpy()]


def test_distributed_epoch_yields_every_good_url_exactly_once(cluster, server):
    pairs = _pairs(server)
    ds = tfeed.image_dataset_from_urls(pairs, service=cluster.address, image_size=(32, 32), batch_size=8, seed=1,
                                       fetch_config=FetchConfig(retries=0))
    assert ds.fetch_engine == "service" and ds.class_names == [str(i) for i in range(len(pairs))]
    for epoch in range(2):
        labels = _labels(ds)
        assert sorted(labels) == list(range(48)), f"epoch {epoch}"
    snap = ds.stats.snapshot()
    assert snap["delivered"] == 96 and snap["epochs"] == 2
    assert snap["failures"] == {k: 2 * v for k, v in EXPECTED_FAILURES.items()}


def test_thousands_of_urls_from_shards_reach_two_workers_once_each(cluster, server, tmp_path):
    """3000 URLs: 10 shard files (8 x 256, 512, 440) handed out by file to two workers; then deleted."""
    names = sorted(server.names)
    pairs = [(server.url(names[i % 60]) + f"?n={i}", i) for i in range(2990)]
    pairs += [(server.url(names[i], status=404) + f"&n={i}", 2990 + i) for i in range(10)]
    staging_dir = tmp_path / "staging"
    ds = tfeed.image_dataset_from_urls(pairs, service=cluster.address, image_size=(8, 8), batch_size=100, seed=6,
                                       fetch_config=FetchConfig(retries=0), staging_dir=str(staging_dir))
    assert sorted(_labels(ds)) == list(range(2990))
    assert ds.stats.snapshot()["failures"] == {"http_404": 10}
    assert list(staging_dir.iterdir()) == []  # the epoch's shards were deleted at its end
    for _ in ds.take(2):  # an epoch abandoned after two batches deletes its shards too
        pass
    gc.collect()
    assert list(staging_dir.iterdir()) == []


def test_a_small_job_spreads_over_both_workers(cluster):
    """2,048 URLs make 8 shard files: each worker takes its share (one that read ahead, through a
    parallel interleave and a shuffle buffer, took all 8 while the other had not started)."""
    with ImageServer(_images(40), latency=0.05, process=True) as slow:
        names = sorted(slow.names)
        pairs = [(slow.url(names[i % 40]) + f"?b={i}", i) for i in range(2048)]
        port = urllib.parse.urlsplit(slow.base_url).port
        ds = tfeed.image_dataset_from_urls(pairs, service=cluster.address, image_size=(8, 8), batch_size=64, seed=3,
                                           fetch_config=FetchConfig(max_in_flight=16))
        cpu_before = [_cpu_seconds(proc.pid) for proc, _ in cluster.workers]
        labels, fetching = [], [0] * len(cluster.workers)
        for _, batch in ds:
            labels += batch.numpy().tolist()
            for i, (proc, _) in enumerate(cluster.workers):
                fetching[i] += _connections_to(proc.pid, port) > 0
        cpu = [_cpu_seconds(proc.pid) - before for (proc, _), before in zip(cluster.workers, cpu_before)]
    assert sorted(labels) == list(range(2048))
    assert min(fetching) > 0, fetching  # both workers fetched
    # and shared the work: 0.92 and 0.91, 1.03 and 1.01 CPU seconds; before, 0.15 and 1.8, 0.46 and 1.57
    assert min(cpu) > 0.45 * max(cpu), cpu


def test_an_epoch_that_stages_slowly_runs_as_several_jobs_each_url_once(cluster, server, monkeypatch):
    """The first job starts with the shards written by FIRST_WAVE_WAIT; later jobs take the rest."""
    monkeypatch.setattr(client, "FIRST_WAVE_WAIT", 0.1)
    jobs, build = [], service_wiring.epoch_dataset
    monkeypatch.setattr(service_wiring, "epoch_dataset",
                        lambda paths, **kw: jobs.append(len(paths)) or build(paths, **kw))
    names = sorted(server.names)

    def source():  # the second half of the list comes 1.5 s after the first
        for i in range(1200):
            if i == 600:
                time.sleep(1.5)
            yield server.url(names[i % 60]) + f"?w={i}", i

    # Rows are shuffled while staged: a buffer of 100 lets shards out before the list ends.
    ds = tfeed.image_dataset_from_urls(source, service=cluster.address, image_size=(8, 8), batch_size=100, seed=7,
                                       class_names=[str(i) for i in range(1200)], shuffle_buffer_size=100)
    assert sorted(_labels(ds)) == list(range(1200))
    assert len(jobs) >= 2 and sum(jobs) == 5, jobs  # 4 shards of 256 and one of 176, each in one job
    assert ds.stats.snapshot()["failures"] == {}


def test_failure_counts_match_a_local_run(cluster, server):
    pairs = _pairs(server)
    remote = tfeed.image_dataset_from_urls(pairs, service=cluster.address, image_size=(32, 32), batch_size=None,
                                           seed=2, fetch_config=FetchConfig(retries=0))
    local = tfeed.image_dataset_from_urls(pairs, image_size=(32, 32), batch_size=None, seed=2,
                                          fetch_config=FetchConfig(retries=0), fetch_engine="native")
    remote_images = {int(label): image.numpy() for image, label in remote}
    local_images = {int(label): image.numpy() for image, label in local}
    assert remote.stats.snapshot()["failures"] == local.stats.snapshot()["failures"] == EXPECTED_FAILURES
    assert remote_images.keys() == local_images.keys()
    for label in (0, 5):  # same decode + resize; workers send uint8: the local pixels rounded half to even
        assert remote_images[label].dtype == np.float32
        np.testing.assert_array_equal(remote_images[label], np.round(np.clip(local_images[label], 0, 255)))
    as_sent = tfeed.service.service_dataset(pairs, service=cluster.address, image_size=(32, 32), batch_size=None,
                                            seed=2, fetch_config=FetchConfig(retries=0), image_dtype="uint8")
    sent_images = {int(label): image.numpy() for image, label in as_sent}
    assert sent_images[5].dtype == np.uint8 and sent_images.keys() == remote_images.keys()
    np.testing.assert_array_equal(sent_images[5], remote_images[5])


def test_formats_that_need_transcoding_are_counted_with_a_reason_on_workers(cluster):
    """Workers run graph ops only, so AVIF, animated WebP, TIFF and ICO (which
    a local pipeline transcodes with OpenCV in Python) cannot be decoded there:
    each is counted ``unsupported_format``, named as such, and the epoch goes on."""
    from tfeed.testing import web_images as web

    picture = np.random.default_rng(4).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    files = {"a.avif": web.avif(picture), "b.webp": web.animated_webp([picture, picture[::-1]]),
             "c.tiff": encode(picture, "tiff"), "d.ico": web.ico(picture, sizes=[(48, 40)]),
             "e.jpg": encode(picture, "jpeg"), "f.webp": encode(picture, "webp")}
    with ImageServer(files, process=True) as srv:
        names = sorted(files)
        ds = tfeed.image_dataset_from_urls([(srv.url(n), i) for i, n in enumerate(names)], service=cluster.address,
                                           image_size=(16, 16), batch_size=4, seed=3,
                                           fetch_config=FetchConfig(retries=0))
        assert sorted(_labels(ds)) == [4, 5]
        assert ds.stats.snapshot()["failures"] == {"unsupported_format": 4}
        details = {f.url.rsplit("/", 1)[-1]: f.detail for f in ds.stats.failed_urls(10)}
    assert sorted(details) == ["a.avif", "b.webp", "c.tiff", "d.ico"]
    for name, detail in details.items():
        assert "tf.data service workers" in detail and "transcod" in detail, (name, detail)
    assert details["a.avif"].startswith("avif") and details["b.webp"].startswith("webp (animated)")


def test_parallel_epochs_gives_each_url_once_per_worker(cluster, server):
    pairs = _pairs(server, good=12)[:12]
    ds = tfeed.image_dataset_from_urls(pairs, service=cluster.address, processing_mode="parallel_epochs",
                                       image_size=(16, 16), batch_size=4, seed=3)
    counts = collections.Counter(_labels(ds))
    assert counts == {i: 2 for i in range(12)}
    assert ds.stats.snapshot()["failures"] == {}


def test_trainers_sharing_a_job_name_split_the_epoch_exactly_once(cluster, server):
    pairs = _pairs(server)
    datasets = [tfeed.image_dataset_from_urls(pairs, service=cluster.address, image_size=(16, 16), batch_size=4,
                                              seed=4, job_name="shared", fetch_config=FetchConfig(retries=0))
                for _ in range(2)]
    received = [None, None]

    def read(i):
        received[i] = _labels(datasets[i])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(labels is not None for labels in received), "a trainer did not finish"
    assert sorted(received[0] + received[1]) == list(range(48))  # each good URL once, to one of the two
    snaps = [ds.stats.snapshot() for ds in datasets]
    assert all("lost" not in snap["failures"] for snap in snaps), snaps  # the other's share is not "lost"
    assert sum(snap["delivered"] for snap in snaps) == 48
    assert collections.Counter(snaps[0]["failures"]) + collections.Counter(snaps[1]["failures"]) == EXPECTED_FAILURES


def test_servers_listen_on_loopback_only(cluster):
    """127.0.0.2 is loopback too, so a wildcard listener would accept it: only 127.0.0.1 does."""
    for address in [cluster.address, *(bound for _, bound in cluster.workers)]:
        port = int(address.rsplit(":", 1)[1])
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=10)
    assert cluster.address.startswith("grpc://127.0.0.1:")


def test_invalid_processing_mode_is_refused_before_any_work(cluster):
    with pytest.raises(ValueError, match="processing_mode"):
        tfeed.image_dataset_from_urls(["http://x/a.jpg"], labels=None, service=cluster.address,
                                      processing_mode="sharded")
    with pytest.raises(ValueError, match="augment"):
        tfeed.image_dataset_from_urls(["http://x/a.jpg"], labels=None, service=cluster.address,
                                      augment=lambda image, label: (image, label))


def _cpu_seconds(pid) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _connections_to(pid, port) -> int:
    """TCP connections process ``pid`` holds to ``port``: a worker fetching a shard has some."""
    import psutil

    return sum(1 for conn in psutil.Process(pid).net_connections(kind="tcp") if conn.raddr and conn.raddr.port == port)


def test_sigkill_of_a_worker_mid_epoch_ends_within_the_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(staging, "SMALL_ROWS", 30)  # 8 shards, so that both workers hold some when one dies
    stall = 4.0
    readers_before = set(threading.enumerate())
    with ImageServer(_images(40), latency=0.2, process=True) as slow:
        names = sorted(slow.names)
        pairs = [(slow.url(names[i % 40]) + f"?n={i}", 0) for i in range(240)]
        c = Cluster(tmp_path)
        try:
            ds = tfeed.service.service_dataset(
                pairs, service=c.address, image_size=(16, 16), batch_size=8, seed=4, stall_timeout=stall,
                fetch_config=FetchConfig(max_in_flight=4, retries=0))
            start = time.monotonic()
            delivered, victim, cpu_before = 0, None, [_cpu_seconds(proc.pid) for proc, _ in c.workers]
            for images, _ in ds:
                delivered += int(images.shape[0])
                if delivered >= 16 and victim is None:
                    # Early, while no worker can have finished a 30-row shard: a worker that has sent all
                    # of its shards holds nothing to lose, and the job's later shards go to the survivor
                    # (killed at 40 delivered, 2 runs in 8 lost nothing).  The victim is a worker that is
                    # fetching (connected to the image server), the busier by CPU if both are: a worker
                    # may hold no shard yet, and its start-up alone can look busier.
                    port = urllib.parse.urlsplit(slow.base_url).port
                    busy = [(_connections_to(proc.pid, port) > 0, _cpu_seconds(proc.pid) - before)
                            for (proc, _), before in zip(c.workers, cpu_before)]
                    victim = c.workers[busy.index(max(busy))][0]
                    victim.kill()  # SIGKILL, by PID
                    killed_at = time.monotonic()
            elapsed = time.monotonic() - start
        finally:
            c.close()
    snap = ds.stats.snapshot()
    lost = snap["failures"].get(tfeed.service.LOST, 0)
    assert delivered == snap["delivered"]
    # every URL is delivered or counted
    assert delivered + snap["failed"] == 240, snap
    assert snap["failed"] == lost > 0, snap  # the dead worker's shards: what it had not sent is lost
    # the survivor finishes its share, then the watchdog waits stall_timeout once
    assert time.monotonic() - killed_at < 240 * 0.2 / 4 + stall + 15, elapsed
    # the stalled job's reader was cancelled, not left blocked (heartbeating to a dead dispatcher);
    # readers of earlier tests' abandoned epochs on this worker's module cluster are not this one's.
    # Freeing the cancelled iterator may still be under way on a loaded machine: a bounded wait.
    readers = [t for t in threading.enumerate() if t.name == "tfeed-service-job" and t not in readers_before]
    for reader in readers:
        reader.join(timeout=60)
    assert not [reader for reader in readers if reader.is_alive()]
    lost_urls = [f.url for f in ds.stats.failed_urls(limit=1000)]
    assert {f.reason for f in ds.stats.failed_urls(limit=1000)} == {tfeed.service.LOST}
    assert len(set(lost_urls)) == lost and set(lost_urls) <= {url for url, _ in pairs}
    print(f"\nKILLTEST worker killed at 16 delivered; {delivered} delivered of 240, {lost} lost; "
          f"epoch {elapsed:.1f} s, {time.monotonic() - killed_at:.1f} s after the kill")


def test_a_restarted_dispatcher_serves_the_next_epoch(tmp_path, server):
    """docs/service.md: restart a dead dispatcher on the same port and work dir; workers reconnect."""
    journaled = ["--port", str(free_port()), "--fault-tolerant", "--work-dir", str(tmp_path / "journal")]
    c = Cluster(tmp_path, workers=1, dispatcher_args=journaled)
    dispatcher, worker = c.procs
    try:
        pairs = _pairs(server, good=16)[:16]
        ds = tfeed.image_dataset_from_urls(pairs, service=c.address, image_size=(16, 16), batch_size=4, seed=5)
        assert sorted(_labels(ds)) == list(range(16))
        dispatcher.kill()  # SIGKILL: a crash, not a clean stop
        dispatcher.wait(timeout=30)
        restarted = c._start("dispatcher", *journaled)
        assert c._ready(restarted) == c.address
        assert sorted(_labels(ds)) == list(range(16)), "epoch 2 after the restart"
        assert worker.poll() is None, "the worker outlived the dispatcher's restart"
        assert ds.stats.snapshot()["failures"] == {}
    finally:
        c.close()


FALLBACK_SCRIPT = textwrap.dedent("""
    import warnings
    import tfeed
    import tfeed.service
    from tfeed import kernels as native
    warnings.simplefilter("ignore")
    assert native.load() is None
    try:
        tfeed.image_dataset_from_urls(["http://127.0.0.1:1/a.jpg"], labels=None, service="grpc://localhost:1")
    except tfeed.service.NativeOpMissingError as exc:
        print("ERROR", exc)
    local = tfeed.image_dataset_from_urls(["http://127.0.0.1:1/a.jpg"], labels=None)
    print("LOCAL", local.fetch_engine)
""")


def test_without_the_op_service_mode_names_the_missing_prerequisite(tmp_path):
    # An empty op cache (HOME) and no compiler on PATH: the op cannot be built.
    env = {**os.environ, "HOME": str(tmp_path), "PATH": str(Path(sys.executable).parent)}
    out = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], env=env, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ERROR service= needs tfeed's native fetch op" in out.stdout
    assert "g++" in out.stdout and "libcurl4-openssl-dev" in out.stdout
    assert "LOCAL python" in out.stdout
    worker = subprocess.run([sys.executable, "-m", "tfeed", "service", "worker", "--dispatcher", "grpc://localhost:1"],
                            env=env, capture_output=True, text=True, timeout=90)
    assert worker.returncode == 2 and worker.stdout == ""
    assert "native fetch op" in worker.stderr and "g++" in worker.stderr
