"""The imagenet_train pipeline from URLs vs the plain decode + resize ceiling.

    python benchmarks/bench_augment.py [--images 1500] [--size 224] [--repeats 3]

Serves web-like JPEGs (real photos, shorter side 300-500 px) with nginx and
measures, alternating candidates each round:

* ceiling: ``decode_image`` + resize to SIZE on the same bytes in memory
  (tf.data map, AUTOTUNE) -- the yardstick;
* imagenet_train in memory: the same bytes through the fused recipe (draws,
  crop while decoding; jitter, lighting and flip as one native step), no network;
* full-decode crop in memory: the same recipe with its crop taken after a full
  decode, to show what decoding only the window buys;
* URLs, no augment: ``image_dataset_from_urls`` decode + resize from nginx;
* URLs, imagenet_train: ``image_dataset_from_urls(augment=imagenet_train(SIZE))``
  from nginx -- the acceptance row (>= 0.8x the ceiling).

Rates are images / time to the last batch (median over rounds); "per core" is
that over ``os.cpu_count()``, beside the seed's 540 images/s on 8 CPUs
(tensorpack, fb.resnet augmentors).  CPU ms per image (this process: tf.data
and the fetch engine, not nginx) is also shown, as it is steadier than
images/s on a shared machine.  Prints a markdown table and writes
benchmarks/results/augment.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ (scripts, not a package) and this checkout's tfeed

import common  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfeed  # noqa: E402
from tfeed import augment, native  # noqa: E402
from tfeed.augment.stage import plan as augment_plan  # noqa: E402
from tfeed.testing import NginxServer, web_like_corpus, write_images  # noqa: E402

SEED_IMAGES_PER_S, SEED_CPUS = 540.0, 8
BATCH = 32


def in_memory(bodies, urls, step) -> tf.data.Dataset:
    """``(body, url)`` slices -> ``step(body, url) -> image`` -> batches."""
    return (tf.data.Dataset.from_tensor_slices((bodies, urls))
            .map(step, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
            .batch(BATCH).prefetch(tf.data.AUTOTUNE))


def ceiling(bodies, urls, size) -> tf.data.Dataset:
    return in_memory(bodies, urls, lambda body, url: tfeed.resize_image(tfeed.decode_image(body), (size, size)))


def recipe_in_memory(bodies, urls, recipe) -> tf.data.Dataset:
    """The pipeline's wiring without the network: the keys stage (draws and
    the tail's parameters, for groups of examples), the recipe in one map
    (crop while decoding; jitter, lighting and flip as one native step while
    the image is in cache; graph ops where the op library is missing), batches.
    The corpus is all JPEG, so the recipe's JPEG-only decoder runs directly
    where it has one (the pipeline tries it first, then the general one)."""
    steps = augment_plan(recipe, None, 0).with_ops(native.load())
    decoder = steps.jpeg_decoder or steps.decoder
    labels = tf.zeros([len(bodies)], tf.int64)
    drawn = tf.data.Dataset.from_tensor_slices((bodies, labels, urls)).apply(steps.keys())
    return (drawn.map(lambda body, label, url, u: steps.finisher(decoder(body, label, url, u), body, label, url, u),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
            .batch(BATCH).prefetch(tf.data.AUTOTUNE))


def unfused(recipe: augment.Recipe) -> augment.Recipe:
    """The same recipe, but its crop runs after a full decode (Compose does not fuse)."""
    return augment.Recipe([augment.Compose([recipe.ops[0]]), *recipe.ops[1:]], output_size=recipe.output_size)


def measure(dataset, time_cap: float) -> tuple:
    """(images/s, CPU ms per image of this process) over one pass."""
    cpu = common.cpu_seconds()
    result = common.time_iteration(dataset, lambda batch: int((batch[0] if isinstance(batch, tuple) else batch).shape[0]),
                                   time_cap)
    return result["images_per_s"], 1000 * (common.cpu_seconds() - cpu) / max(result["images"], 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each runs every candidate once")
    parser.add_argument("--time-cap", type=float, default=20.0, help="seconds per run at most")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "augment.json"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    info = common.machine_info()

    corpus = web_like_corpus(args.images, seed=0, formats={"jpeg": 1.0})
    names = sorted(corpus)
    bodies = [corpus[name] for name in names]
    recipe = augment.imagenet_train(args.size)
    with tempfile.TemporaryDirectory() as root, NginxServer(root) as server:
        write_images(corpus, root)
        urls = [server.url(name) for name in names]
        pairs = [(url, 0) for url in urls]
        from_urls = lambda aug: tfeed.image_dataset_from_urls(
            pairs, labels=None, image_size=None if aug else (args.size, args.size), batch_size=BATCH, seed=0,
            augment=aug)
        candidates = {
            "ceiling: decode + resize, in memory": ceiling(bodies, urls, args.size),
            "imagenet_train, in memory (fused crop)": recipe_in_memory(bodies, urls, recipe),
            "imagenet_train, in memory (full decode, then crop)": recipe_in_memory(bodies, urls, unfused(recipe)),
            "URLs via nginx: decode + resize": from_urls(None),
            "URLs via nginx: imagenet_train": from_urls(recipe),
        }
        for dataset in candidates.values():  # warm up: iterator start, first connections
            for _ in dataset.take(2):
                pass
        rates = {name: [] for name in candidates}
        cpu_ms = {name: [] for name in candidates}
        for _ in range(args.repeats):
            for name, dataset in candidates.items():
                rate, cost = measure(dataset, args.time_cap)
                rates[name].append(rate)
                cpu_ms[name].append(cost)

    cores = os.cpu_count() or 1
    medians = {name: common.median(values) for name, values in rates.items()}
    cpu_medians = {name: common.median(values) for name, values in cpu_ms.items()}
    ceiling_name, target_name = "ceiling: decode + resize, in memory", "URLs via nginx: imagenet_train"
    top, top_cpu = medians[ceiling_name], cpu_medians[ceiling_name]
    seed_per_core = SEED_IMAGES_PER_S / SEED_CPUS
    rows = [[name, common.fmt(rate), f"{rate / top:.2f}", common.fmt(rate / cores, 1),
             common.fmt(cpu_medians[name], 2), f"{top_cpu / cpu_medians[name]:.2f}"] for name, rate in medians.items()]
    rows.append([f"seed: tensorpack + fb.resnet augmentors, {SEED_CPUS} CPUs", common.fmt(SEED_IMAGES_PER_S), "—",
                 common.fmt(seed_per_core, 1), "—", "—"])
    target = medians[target_name] / top
    print(f"## imagenet_train({args.size}) on {args.images} web-like JPEGs, {cores} cores\n")
    print(common.markdown_table(["pipeline", "images/s", "ratio to ceiling", "images/s per core",
                                 "CPU ms / image", "ceiling CPU / this CPU"], rows))
    print(f"\nURLs + imagenet_train / ceiling: {target:.2f} by images/s, {top_cpu / cpu_medians[target_name]:.2f} "
          f"by CPU per image (acceptance: >= 0.8); per core {medians[target_name] / cores / seed_per_core:.1f}x "
          f"the seed's; median of {args.repeats} rounds, load average at start {info['loadavg_at_start']}; "
          f"{time.perf_counter() - started:.0f} s")
    common.write_json(args.out, {
        "settings": {"images": args.images, "size": args.size, "repeats": args.repeats, "batch_size": BATCH,
                     "formats": {"jpeg": 1.0}},
        "machine": info,
        "images_per_s": rates,
        "median_images_per_s": medians,
        "cpu_ms_per_image": cpu_ms,
        "median_cpu_ms_per_image": cpu_medians,
        "ratio_to_ceiling": {name: rate / top for name, rate in medians.items()},
        "per_core": {name: rate / cores for name, rate in medians.items()},
        "seed": {"images_per_s": SEED_IMAGES_PER_S, "cpus": SEED_CPUS, "per_core": seed_per_core},
        "acceptance_ratio": target,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
