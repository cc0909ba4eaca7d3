"""Projected images/s of service mode for 1-64 workers, from measured per-image CPU costs.

    python -m tfeed.service.projection [--worker-ms 2.6] [--client-ms 1.4] [--worker-cores 2]
                                       [--client-cores 1 8] [--image-size 224] [--network-gbps 10]

A small discrete-event simulation: each worker has ``worker_cores`` cores and
spends ``worker_ms`` CPU per image (native fetch + decode/resize + sending;
measured by ``benchmarks/bench_service.py``), drawn lognormal (sigma 0.5)
around that mean; images go in groups of 16 through a bounded buffer (4
groups per worker, as tf.data service's) to one trainer whose client spends
``client_ms`` per image on ``client_cores`` cores (receive, copy, unbatch,
batch, accounting).  A worker whose buffer is full waits.  Further caps: the
trainer's network (uint8 images of ``image_size`` plus ``--overhead-bytes``
per image, measured) and the dispatcher's split hand-out in distributed_epoch
(one RPC per shard file of up to 32,768 URLs; ``--dispatcher-splits`` per
second, not measured here).  Not modelled: the origin servers (assumed not
to be the bottleneck), latency (the native op hides it with hundreds of
requests in flight), worker start-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import random
from typing import List, Sequence

GROUP = 16
BUFFER_GROUPS = 4


@dataclasses.dataclass(frozen=True)
class Costs:
    worker_ms: float = 2.6
    client_ms: float = 1.4
    worker_cores: int = 2
    client_cores: int = 1
    image_size: int = 224
    network_gbps: float = 10.0
    dispatcher_splits_per_s: float = 1_000.0
    overhead_bytes: float = 0.0
    rows_per_split: int = 32768

    def caps(self) -> dict:
        image_bytes = self.image_size * self.image_size * 3 + self.overhead_bytes  # uint8 pixels on the wire
        return {"client": 1e3 * self.client_cores / self.client_ms,
                "network": self.network_gbps * 1e9 / 8 / image_bytes,
                "dispatcher": self.dispatcher_splits_per_s * self.rows_per_split}


def simulate(costs: Costs, workers: int, images: int = 20_000, seed: int = 0) -> float:
    """Images/s delivered to the trainer with ``workers`` workers (events in ms)."""
    rng = random.Random(seed)
    sigma = 0.5
    mu_shift = -sigma * sigma / 2  # lognormal with mean 1

    def cost(mean):
        return mean * rng.lognormvariate(mu_shift, sigma)

    caps = costs.caps()
    client_ms_per_image = 1e3 / min(caps.values())  # the tightest cap on the trainer side
    core_free: List[List[float]] = [[0.0] * costs.worker_cores for _ in range(workers)]
    ready = []  # (time a group is ready, worker)
    produced = 0
    for w in range(workers):  # every worker fills its buffer first
        for _ in range(BUFFER_GROUPS):
            heapq.heappush(ready, (_make_group(core_free[w], costs.worker_ms, cost, 0.0), w))
            produced += GROUP
    clock, delivered = 0.0, 0
    while delivered < images:
        at, w = heapq.heappop(ready)
        clock = max(clock, at) + GROUP * client_ms_per_image
        delivered += GROUP
        if produced < images:  # a buffer slot freed: the worker makes the next group
            heapq.heappush(ready, (_make_group(core_free[w], costs.worker_ms, cost, at), w))
            produced += GROUP
    return delivered / clock * 1e3


def _make_group(cores: List[float], mean_ms, cost, not_before: float) -> float:
    done = not_before
    for _ in range(GROUP):
        core = min(range(len(cores)), key=cores.__getitem__)
        cores[core] = max(cores[core], not_before) + cost(mean_ms)
        done = max(done, cores[core])
    return done


def table(costs: Costs, workers: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)) -> List[dict]:
    caps = costs.caps()
    return [{"workers": n, "images_per_s": simulate(costs, n), "workers_alone": n * 1e3 * costs.worker_cores /
             costs.worker_ms, "limit": min(caps, key=caps.get)} for n in workers]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Costs()
    parser.add_argument("--worker-ms", type=float, default=defaults.worker_ms)
    parser.add_argument("--client-ms", type=float, default=defaults.client_ms)
    parser.add_argument("--worker-cores", type=int, default=defaults.worker_cores)
    parser.add_argument("--client-cores", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--network-gbps", type=float, default=defaults.network_gbps)
    parser.add_argument("--dispatcher-splits", type=float, default=defaults.dispatcher_splits_per_s)
    parser.add_argument("--overhead-bytes", type=float, default=defaults.overhead_bytes)
    args = parser.parse_args(argv)
    for client_cores in args.client_cores:
        costs = Costs(args.worker_ms, args.client_ms, args.worker_cores, client_cores, args.image_size,
                      args.network_gbps, args.dispatcher_splits, args.overhead_bytes)
        caps = costs.caps()
        print(f"\nclient cores {client_cores}: caps " + ", ".join(f"{k} {v:,.0f}/s" for k, v in caps.items()))
        print("| workers | images/s (simulated) | workers alone | trainer-side limit |")
        print("|---:|---:|---:|---|")
        for row in table(costs):
            print(f"| {row['workers']} | {row['images_per_s']:,.0f} | {row['workers_alone']:,.0f} | {row['limit']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
