"""URLs that hang: does one stall the images that did arrive?

    python benchmarks/bench_hanging.py [--images 2000] [--hanging 0.02] [--read-timeout 5]

Real URL lists have hosts that accept a connection and never answer. Here an
``ImageServer`` (0 ms) serves web-like images, and a share of the URLs (``?hang=1``)
hangs until the client's read timeout. Each engine runs one epoch. The table shows:

* when the good images were in: the time of the batch that brought the count
  to all good URLs less one batch (the epoch's last batch waits for the hanging ones
  by design: every URL yields one example or one counted failure);
* when the epoch ended: at least the read timeout;
* the images and the ``timeout`` count.

Candidates: the native engine (default, ``deterministic=False``: the calls of an
iterator share their results), the native engine with ``deterministic=True`` (groups
of 32 in source order: a hanging URL holds its group, and the groups after it), and
the Python engine. Writes benchmarks/results/hanging.json.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ (scripts, not a package) and this checkout's tfeed

import common  # noqa: E402

CANDIDATES = {  # name -> image_dataset_from_urls arguments
    "native": dict(fetch_engine="native"),
    "native, deterministic=True": dict(fetch_engine="native", deterministic=True),
    "python": dict(fetch_engine="python"),
}
BATCH_SIZE = 32


def run(pairs, good: int, config, options: dict) -> dict:
    """One epoch: when the good images were in, when it ended, what it counted."""
    import tfeed

    dataset = tfeed.image_dataset_from_urls(pairs, image_size=(224, 224), batch_size=BATCH_SIZE, seed=0,
                                            fetch_config=config, **options)
    start, count, good_in = time.perf_counter(), 0, None
    for images, _ in dataset:
        count += int(images.shape[0])
        if good_in is None and count >= good - BATCH_SIZE:
            good_in = time.perf_counter() - start
    snapshot = dataset.stats.snapshot()
    return {"images": count, "good_in_s": good_in, "end_s": time.perf_counter() - start,
            "failures": dict(snapshot["failures"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--hanging", type=float, default=0.02, help="share of URLs that hang")
    parser.add_argument("--read-timeout", type=float, default=5.0, help="the client's read timeout, s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "hanging.json"))
    args = parser.parse_args(argv)
    import tfeed
    from tfeed.testing import ImageServer, web_like_corpus

    corpus = web_like_corpus(args.images, seed=args.seed)
    names = sorted(corpus)
    rng = random.Random(args.seed)
    hangs = {name for name in names if rng.random() < args.hanging}
    config = tfeed.FetchConfig(read_timeout=args.read_timeout, deadline=2 * args.read_timeout, retries=0)
    rows = {}
    with ImageServer(corpus, process=True) as server:
        pairs = [(server.url(name, hang=1) if name in hangs else server.url(name), 0) for name in names]
        for name, options in CANDIDATES.items():
            rows[name] = run(pairs, len(names) - len(hangs), config, options)
    table = [[name, f"{row['images']:,}", common.fmt(row["good_in_s"], 1), common.fmt(row["end_s"], 1),
              str(row["failures"].get("timeout", 0))] for name, row in rows.items()]
    print(f"## {len(names):,} URLs, {len(hangs)} hanging ({args.hanging:.0%}), read timeout {args.read_timeout:g} s, "
          f"2 cores\n")
    print(common.markdown_table(["engine", "images", f"good images in (s), all but the last batch",
                                 "epoch ended (s)", "timeouts"], table, align="lrrrr"))
    common.write_json(args.out, {"images": len(names), "hanging": len(hangs), "read_timeout_s": args.read_timeout,
                                 "machine": common.machine_info(), "rows": rows})
    expected = {name: len(names) - len(hangs) for name in rows}
    return 0 if all(rows[name]["images"] == expected[name] for name in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
