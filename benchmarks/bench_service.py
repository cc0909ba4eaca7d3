"""Images/s of the local native pipeline vs tf.data service with 1, 2 and 4 workers; CPU and bytes per image.

    python benchmarks/bench_service.py [--images 400] [--size 224] [--workers 1 2 4] [--json out.json]
        [--compression default none snappy] [--group 16 64]

Everything on 127.0.0.1: an ImageServer subprocess (web-like 300-500 px
photos, 0 ms latency), a dispatcher and workers started with ``tfeed service``.
Worker ``k`` is pinned to core ``k % cores`` (``os.sched_setaffinity``); the
trainer and the image server are not pinned.  Each row times the second of
two epochs.  CPU seconds per image come from ``/proc/<pid>/stat`` (workers)
and ``os.times`` (this process); bytes per image worker -> trainer are the
TCP bytes the workers' sockets sent during the epoch (``ss -ti``
``bytes_sent``, sampled every 0.1 s: gRPC framing included).  They feed
``tfeed.service.projection``.  ``--compression`` and ``--group`` measure
other settings of ``tfeed.service.dataset.COMPRESSION`` (``none``, ``snappy``
for ``"AUTO"``, ``forced`` for ``"SNAPPY"``; ``default``: the library's) and
``TRANSFER_GROUP`` side by side, each service row once per combination (its
key then names them).  Keep runs short on shared machines.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import tensorflow as tf

import tfeed
from tfeed.service import dataset as service_module
from tfeed.config import FetchConfig
from tfeed.images import decode_image, resize_image
from tfeed.fetching.native import fetch_native_graph
from tfeed.service.dataset import service_dataset
from tfeed.testing import ImageServer, web_like_corpus
from tfeed.testing.server import stop_process

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_service_workers, start_service, write_json  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


class SentBytes:
    """TCP bytes sent from local ``ports`` while running: per connection the largest
    ``bytes_sent`` seen, minus what it had sent when measuring began.  Open
    connections are sampled (``ss -tin``, every 0.1 s and at the end); a connection
    closed in between is counted from ``ss -E`` (the kernel's report of each socket
    as it is destroyed, with its final counters), so its last bytes are not lost."""

    def __init__(self, ports):
        self._ports = {str(p) for p in ports}
        self._first, self._last = {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._destroyed = tempfile.TemporaryFile(mode="w+")

    def _record(self, text: str, started: bool):
        for head, info in _ss_entries(text):
            addresses = [field for field in head.split() if ":" in field]  # local, then peer
            if len(addresses) < 2 or addresses[0].rsplit(":", 1)[-1] not in self._ports:
                continue
            sent = re.search(r"bytes_sent:(\d+)", info)
            if sent:
                key = tuple(addresses[:2])
                self._first.setdefault(key, int(sent.group(1)) if not started else 0)
                self._last[key] = max(self._last.get(key, 0), int(sent.group(1)))

    def _sample(self, started: bool = True):
        self._record(subprocess.run(["ss", "-tinH"], capture_output=True, text=True).stdout, started)

    def _run(self):
        while not self._stop.wait(0.1):
            self._sample()

    def __enter__(self):
        self._events = subprocess.Popen(["ss", "-E", "-tinH"], stdout=self._destroyed, stderr=subprocess.DEVNULL)
        self._sample(started=False)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        time.sleep(0.5)  # sockets closing now were still open at the last sample
        self._events.terminate()
        self._events.wait()
        self._destroyed.seek(0)
        self._record(self._destroyed.read(), started=True)
        self._destroyed.close()

    @property
    def total(self) -> int:
        return sum(last - self._first.get(key, 0) for key, last in self._last.items())


def _ss_entries(text: str):
    """``(head, info)`` line pairs of ``ss -ti`` output (info lines are indented)."""
    head = None
    for line in text.split("\n"):
        if line[:1].isspace() and head is not None:
            yield head, line
            head = None
        elif line.strip():
            head = line


def timed(make, pids=(), ports=()):
    """(images/s, client CPU s/image, workers CPU s/image, bytes/image sent from ``ports``)
    of the second epoch of ``make()``."""
    dataset = make()
    for _ in dataset:
        pass
    with SentBytes(ports) as sent:
        c0, w0, t0 = self_cpu(), sum(proc_cpu(p) for p in pids), time.perf_counter()
        n = sum(int(batch[0].shape[0]) if isinstance(batch, tuple) else int(batch.shape[0]) for batch in dataset)
        wall = time.perf_counter() - t0
        c1, w1 = self_cpu(), sum(proc_cpu(p) for p in pids)
    return dict(images=n, images_per_s=n / wall, client_cpu_ms=1e3 * (c1 - c0) / n,
                worker_cpu_ms=1e3 * (w1 - w0) / n if pids else None,
                sent_bytes_per_image=sent.total / n if ports else None)


COMPRESSIONS = {"default": service_module.COMPRESSION, "none": None, "snappy": "AUTO", "forced": "SNAPPY"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--json", default=None)
    parser.add_argument("--compression", nargs="+", choices=sorted(COMPRESSIONS), default=["default"])
    parser.add_argument("--group", type=int, nargs="+", default=[service_module.TRANSFER_GROUP],
                        help="examples per element sent (default: the library's TRANSFER_GROUP)")
    args = parser.parse_args()
    variants = list(itertools.product(args.compression, args.group))
    size = (args.size, args.size)
    corpus = web_like_corpus(args.images, seed=0)
    results = {"cores": os.cpu_count(), "images": args.images, "image_size": size,
               "uint8_image_bytes": size[0] * size[1] * 3, "load_average_before": os.getloadavg(),
               "mean_body_kb": sum(map(len, corpus.values())) / len(corpus) / 1024}
    with ImageServer(corpus, process=True) as server:
        urls = [server.url(name) for name in sorted(corpus)]
        config = FetchConfig(retries=0)

        def fetch_only():
            ds = tf.data.Dataset.from_tensor_slices((urls, [0] * len(urls))).apply(fetch_native_graph(config))
            return ds.map(lambda body, label, url, reason: (tf.strings.length(body)[None],)).prefetch(4)

        results["fetch_only"] = timed(fetch_only)
        bodies = list(corpus.values())

        def decode_only():
            ds = tf.data.Dataset.from_tensor_slices(bodies).map(
                lambda b: resize_image(decode_image(b), size), num_parallel_calls=os.cpu_count())
            return ds.batch(32).map(lambda x: (x,)).prefetch(2)

        results["decode_only"] = timed(decode_only)
        results["local_native"] = timed(lambda: tfeed.image_dataset_from_urls(
            urls, labels=None, image_size=size, batch_size=32, seed=0, fetch_engine="native", fetch_config=config))
        procs = []
        try:
            dispatcher, address = start_service("dispatcher")
            procs.append(dispatcher)
            ports = []
            for n in args.workers:
                ports += add_service_workers(address, procs, n, pin=True)
                for compression, group in variants:
                    service_module.COMPRESSION, service_module.TRANSFER_GROUP = COMPRESSIONS[compression], group
                    key = f"service_{n}_workers" + (f"_{compression}_group{group}" if len(variants) > 1 else "")
                    results[key] = timed(
                        lambda: service_dataset(urls, service=address, labels=None, image_size=size, batch_size=32,
                                                seed=0, fetch_config=config),
                        pids=[p.pid for p in procs[1:]], ports=ports)
                    results[key].update(compression=COMPRESSIONS[compression], group=group)
        finally:
            for proc in procs:
                stop_process(proc)
    results["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
