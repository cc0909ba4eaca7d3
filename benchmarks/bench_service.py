"""Images/s of the local native pipeline vs tf.data service with 1 and 2 workers, and per-image CPU costs.

    python benchmarks/bench_service.py [--images 400] [--size 224] [--json out.json]

Everything on 127.0.0.1: an ImageServer subprocess (web-like 300-500 px
photos, 0 ms latency), a dispatcher and workers started with ``tfeed service``.
Each row times the second of two epochs.  CPU seconds per image come from
``/proc/<pid>/stat`` (workers) and ``os.times`` (this process): they feed
``tfeed.service.projection``.  Keep runs short on shared machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import tensorflow as tf

import tfeed
from tfeed.config import FetchConfig
from tfeed.images import decode_image, resize_image
from tfeed.fetching.native import fetch_native_graph
from tfeed.service.dataset import service_dataset
from tfeed.testing import ImageServer, web_like_corpus
from tfeed.testing.server import stop_process

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def timed(make, pids=()):
    """(images/s, client CPU s/image, workers CPU s/image) of the second epoch of ``make()``."""
    dataset = make()
    for _ in dataset:
        pass
    c0, w0, t0 = self_cpu(), sum(proc_cpu(p) for p in pids), time.perf_counter()
    n = sum(int(batch[0].shape[0]) if isinstance(batch, tuple) else int(batch.shape[0]) for batch in dataset)
    wall = time.perf_counter() - t0
    return dict(images=n, images_per_s=n / wall, client_cpu_ms=1e3 * (self_cpu() - c0) / n,
                worker_cpu_ms=1e3 * (sum(proc_cpu(p) for p in pids) - w0) / n if pids else None)


def start(*args):
    proc = subprocess.Popen([sys.executable, "-m", "tfeed", "service", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    return proc, proc.stdout.readline().strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    size = (args.size, args.size)
    corpus = web_like_corpus(args.images, seed=0)
    results = {"cores": os.cpu_count(), "images": args.images, "image_size": size,
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
            dispatcher, address = start("dispatcher")
            procs.append(dispatcher)
            for n in (1, 2):
                worker, _ = start("worker", "--dispatcher", address)
                procs.append(worker)
                results[f"service_{n}_workers"] = timed(
                    lambda: service_dataset(urls, service=address, labels=None, image_size=size, batch_size=32,
                                            seed=0, fetch_config=config),
                    pids=[p.pid for p in procs[1:]])
        finally:
            for proc in procs:
                stop_process(proc)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
