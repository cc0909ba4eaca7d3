"""Service mode at 10M URLs: graph size, client memory and time to the first batch.

    python benchmarks/bench_service_scale.py [--urls 10000000] [--batches 5] [--json out.json]

A URL list of ``--urls`` lines (``url<TAB>label``, 1000 classes) is written
to a temporary ``.txt``; every URL points at one ImageServer subprocess on
127.0.0.1 (60 small images, each URL a distinct query), but only the few
batches read are ever fetched.  A dispatcher and one worker run as
``tfeed service`` subprocesses.  The trainer reads ``--batches`` batches of
32 (224 px) and stops.  Measured in this process:

* ``graph_bytes``: the serialized dataset graph of each job this epoch
  registered with the dispatcher (the largest is reported);
* ``first_batch_s``: seconds from the ``image_dataset_from_urls`` call to
  the first batch;
* ``rss_growth_mb``: peak RSS during the call and the batches minus RSS
  before it; the same for a 1,000-URL list (``small``) first, so that the
  difference is what the list's size costs;
* ``staging``: then the whole list staged as one epoch does (seconds,
  URLs/s, shards, RSS growth) and the graph of one job over all its shards
  (the largest a job of this list can be).

Targets (one 2-core machine): graph < 1 MB, RSS growth < 300 MB, first
batch < 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RssSampler, add_service_workers, rss_mb, start_service, write_json  # noqa: E402

CLASSES = 1000


def write_list(path: str, base: str, count: int) -> float:
    """``count`` lines of ``url<TAB>label`` to ``path``; returns seconds taken."""
    start = time.perf_counter()
    with open(path, "w") as handle:
        step = 100_000
        for first in range(0, count, step):
            handle.write("".join(f"{base}img{i % 60:03d}.jpg?n={i}\t{i % CLASSES}\n"
                                 for i in range(first, min(count, first + step))))
    return time.perf_counter() - start


def measure(path: str, address: str, batches: int, graphs: list) -> dict:
    import tfeed

    del graphs[:]
    before = rss_mb()
    with RssSampler() as sampler:
        start = time.perf_counter()
        ds = tfeed.image_dataset_from_urls(path, service=address, image_size=(224, 224), batch_size=32, seed=0,
                                           class_names=[str(i) for i in range(CLASSES)])
        first = None
        for n, (images, _) in enumerate(ds.take(batches)):
            first = first if first is not None else time.perf_counter() - start
            assert images.shape[0] == 32 and images.dtype.name == "float32"
        elapsed = time.perf_counter() - start
        peak = sampler.phase()
    return {"first_batch_s": first, "batches_s": elapsed, "graph_bytes": max(graphs), "jobs": len(graphs),
            "rss_before_mb": before, "rss_peak_mb": peak, "rss_growth_mb": peak - before,
            "delivered": ds.stats.snapshot()["delivered"]}


def stage_whole_list(path: str, directory: str) -> dict:
    """Stage all of ``path`` (as one epoch does, to its end) and size the graph of one job over all shards."""
    from tfeed import kernels
    from tfeed.config import FetchConfig
    from tfeed.service.dataset import TRANSFER_GROUP
    from tfeed.service.graph import epoch_dataset
    from tfeed.service.staging import EpochStaging
    from tfeed.source.generator import LabelIndex, Selection
    from tfeed.source.readers import pair_factory

    before = rss_mb()
    with RssSampler() as sampler:
        start = time.perf_counter()
        staging = EpochStaging(directory, pair_factory(path), Selection(), LabelIndex([str(i) for i in range(CLASSES)]))
        shards = staging.next_shards(0, wait_all=None)
        seconds = time.perf_counter() - start
        peak = sampler.phase()
    rows = sum(staging.shard_length(shard) for shard, _ in shards)
    graph = epoch_dataset([p for _, p in shards], FetchConfig(), (224, 224),
                          ops=kernels.load_fetch()).batch(TRANSFER_GROUP)
    staging.remove()
    return {"rows": rows, "shards": len(shards), "seconds": seconds, "urls_per_s": rows / seconds,
            "rss_growth_mb": peak - before, "graph_bytes_all_shards": len(graph._as_serialized_graph().numpy())}


def record_graphs(graphs: list) -> None:
    """Wrap the job builder so that each job's serialized graph size lands in ``graphs``."""
    from tfeed.service import dataset as service_dataset

    original = service_dataset.epoch_dataset

    def recorded(paths, **kwargs):
        ds = original(paths, **kwargs)
        graphs.append(len(ds.batch(service_dataset.TRANSFER_GROUP)._as_serialized_graph().numpy()))
        return ds

    service_dataset.epoch_dataset = recorded


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=int, default=10_000_000)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import numpy as np
    from tfeed.testing import ImageServer, encode
    from tfeed.testing.server import stop_process

    rng = np.random.default_rng(0)
    images = {f"img{i:03d}.jpg": encode(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), "jpeg")
              for i in range(60)}
    graphs: list = []
    record_graphs(graphs)
    results = {"cores": os.cpu_count(), "urls": args.urls, "batches": args.batches}
    procs = []
    with tempfile.TemporaryDirectory() as tmp, ImageServer(images, process=True) as server:
        base = server.url("")
        small, large = os.path.join(tmp, "small.txt"), os.path.join(tmp, "large.txt")
        write_list(small, base, 1000)
        results["write_list_s"] = write_list(large, base, args.urls)
        results["list_mb"] = os.path.getsize(large) / 2**20
        try:
            dispatcher, address = start_service("dispatcher")
            procs.append(dispatcher)
            add_service_workers(address, procs, 1)
            results["small"] = measure(small, address, args.batches, graphs)
            results["large"] = measure(large, address, args.batches, graphs)
            results["staging"] = stage_whole_list(large, os.path.join(tmp, "staging"))
        finally:
            for proc in procs:
                stop_process(proc)
    large_run = results["large"]
    results["checks"] = {"graph_under_1mb": max(large_run["graph_bytes"],
                                                results["staging"]["graph_bytes_all_shards"]) < 2**20,
                         "rss_growth_under_300mb": large_run["rss_growth_mb"] < 300,
                         "first_batch_under_30s": large_run["first_batch_s"] < 30}
    print(json.dumps(results, indent=2))
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
