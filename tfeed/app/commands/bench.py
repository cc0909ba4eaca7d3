"""``tfeed bench URLS``: the seed's speed test -- images/s over N images, stage by stage.

Stages, each a fresh pass over the same first N URLs:

* ``fetch``: the fetch stage alone (bytes downloaded, nothing decoded);
* ``fetch+decode``: :func:`tfeed.image_dataset_from_urls` with ``--size``;
* ``fetch+decode+augment``: the same with a :mod:`tfeed.augment` preset.

``--grid`` instead measures fetch+decode for every pair of downloads in
flight (``--concurrency``) and decode parallelism (``--parallelism``) -- the
seed's "threads x processes" table.  Tables go to stdout (markdown, or JSON
with ``--json``), progress bars and logs to stderr, a chart to ``-o PNG``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

from tfeed.app.commands import common
from tfeed.app.commands.common import EXIT_FAILURES, EXIT_OK, UsageError, log

NAME = "bench"
HELP = "images/s over N URLs: per stage (fetch, decode, augment) or a concurrency x parallelism grid"
STAGES = ("fetch", "decode", "augment")
STAGE_NAMES = {"fetch": "fetch", "decode": "fetch+decode", "augment": "fetch+decode+augment"}
DEFAULT_PRESET = "imagenet_train"
EPILOG = """\
examples:
  tfeed bench urls.txt -n 2000                      per-stage images/s (markdown table)
  tfeed bench urls.csv --grid -o grid.png           the concurrency x parallelism grid and a chart
  tfeed bench urls.txt --json | jq .stages          machine-readable
  tfeed serve-images photos/ --latency 0.1 --urls urls.txt &   a local server to measure against

exit status: 0 all measured URLs delivered, 1 some failed (listed on stderr), 2 usage error
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP + ".",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_source_arguments(parser)
    parser.add_argument("-n", "--images", type=common.positive_int, default=1000, metavar="N",
                        help="measure the first N URLs (default 1000)")
    parser.add_argument("--size", type=common.positive_int, default=224, help="decode to SIZE x SIZE (default 224)")
    parser.add_argument("--batch-size", type=common.positive_int, default=32, help="(default 32)")
    parser.add_argument("--stages", type=_stages, default=STAGES, metavar="LIST",
                        help="comma-separated subset of fetch,decode,augment (default all)")
    parser.add_argument("--augment", default=None, metavar="PRESET",
                        help=f"tfeed.augment preset of the augment stage (default {DEFAULT_PRESET}, "
                             "skipped when tfeed.augment is missing)")
    grid = parser.add_argument_group("grid")
    grid.add_argument("--grid", action="store_true", help="measure fetch+decode for each concurrency x parallelism")
    grid.add_argument("--concurrency", type=common.parse_list, default=[16, 64, 256], metavar="LIST",
                      help="downloads in flight, comma-separated (default 16,64,256)")
    grid.add_argument("--parallelism", type=common.parse_list, default=[1, 2, 4], metavar="LIST",
                      help="decode parallelism (num_parallel_calls), comma-separated (default 1,2,4)")
    output = parser.add_argument_group("output")
    output.add_argument("-o", "--output", metavar="PNG", help="also draw the results as a chart into PNG")
    output.add_argument("--title", help="title of the chart (default: images and size)")
    output.add_argument("--json", action="store_true", help="print JSON instead of markdown tables")
    output.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars on stderr (default: when stderr is a terminal)")
    common.add_fetch_arguments(parser)
    return parser


def _stages(text: str) -> Tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [stage for stage in chosen if stage not in STAGES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"stages are {','.join(STAGES)}; got {text!r}")
    return chosen


def run(args: argparse.Namespace) -> int:
    common.check_output(args.output)
    source = common.read_source(args, limit=args.images)
    urls = [url for url, _ in source()]
    if not urls:
        raise UsageError("no URLs to measure")
    pairs = [(url, None) for url in urls]
    config = common.fetch_config(args)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    log.info("bench: %d URLs, %dx%d, batch %d", len(urls), args.size, args.size, args.batch_size)
    settings = {"images": len(urls), "size": args.size, "batch_size": args.batch_size,
                "max_in_flight": config.max_in_flight}

    if args.grid:
        rows, failures = measure_grid(pairs, args.concurrency, args.parallelism, size=args.size,
                                      batch_size=args.batch_size, config=config, progress=progress)
        report = {"settings": settings, "grid": rows}
        text = _grid_markdown(rows)
    else:
        augment = _augment_for(args) if "augment" in args.stages else None
        stages = [stage for stage in args.stages if stage != "augment" or augment is not None]
        if not stages:
            raise UsageError("no stage left to measure (the augment stage needs tfeed.augment)")
        rows, failures = [], None
        for stage in stages:
            row, stats = measure(pairs, stage, size=args.size, batch_size=args.batch_size, config=config,
                                 augment=augment, progress=progress)
            rows.append(row)
            failures = failures or (stats if row["failed"] else None)
        report = {"settings": settings, "stages": rows}
        text = _stage_markdown(rows)
    print(json.dumps(report, indent=2) if args.json else text, flush=True)

    if args.output:
        _draw(args, rows, settings)
        log.info("wrote %s", args.output)
    if failures is not None:
        common.report_failures(failures)
    bad = any(row["failed"] or not row["images"] for row in rows)
    return EXIT_FAILURES if bad else EXIT_OK


def _augment_for(args: argparse.Namespace) -> Optional[Callable]:
    if args.augment is not None:
        return None if args.augment == "none" else common.augment_preset(args.augment, args.size)
    try:
        return common.augment_preset(DEFAULT_PRESET, args.size)
    except UsageError as exc:
        log.warning("augment stage skipped: %s", exc)
        return None


# -- measurement --------------------------------------------------------------------
def measure(pairs, stage: str, *, size: int, batch_size: int, config, augment=None,
            parallelism: Optional[int] = None, progress: bool = False, desc: Optional[str] = None):
    """One pass of ``stage`` over ``pairs``; returns ``(row, stats)`` where row
    has ``stage, images, failed, failures, seconds, images_per_s,
    concurrency, parallelism, engine`` (``native`` or ``python``).  Time runs
    from creating the iterator to its end (dataset construction excluded)."""
    from tqdm import tqdm

    if stage == "fetch":
        dataset, stats = _fetch_only(pairs, config, batch_size)
    else:
        dataset, stats = _decoded(pairs, size, batch_size, config, parallelism,
                                  augment if stage == "augment" else None)
    bar = tqdm(total=len(pairs), desc=desc or STAGE_NAMES[stage], unit="img", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    count = 0
    start = time.perf_counter()
    for batch in dataset:
        count += int(batch.shape[0])
        bar.update(int(batch.shape[0]))
    seconds = time.perf_counter() - start
    bar.close()
    snapshot = stats.snapshot()
    row = {"stage": STAGE_NAMES[stage], "images": count, "failed": int(snapshot["failed"]),
           "failures": dict(snapshot["failures"]), "seconds": round(seconds, 4),
           "images_per_s": round(count / seconds, 2) if seconds > 0 else 0.0,
           "concurrency": config.max_in_flight, "parallelism": parallelism or "auto",
           "engine": dataset.fetch_engine}
    return row, stats


def _fetch_only(pairs, config, batch_size: int):
    """The fetch stage alone, on the engine training would use (native when it
    loads): a dataset of batches of body lengths."""
    import tensorflow as tf

    from tfeed.batching.stage import finish
    from tfeed.fetching.stage import choose_fetch_stage
    from tfeed.stats import Stats

    stats = Stats()
    stage = choose_fetch_stage("auto", config, stats, 0, None, on_error="skip", deterministic=False)
    urls = tf.constant([url for url, _ in pairs], dtype=tf.string)
    dataset = (tf.data.Dataset.from_tensor_slices((urls, tf.zeros_like(urls, dtype=tf.int64)))
               .apply(stage.apply)
               .map(_body_length)
               .batch(batch_size))
    dataset = finish(dataset)
    dataset._tfeed_engine = stage.python_engine
    dataset.fetch_engine = stage.engine
    return dataset, stats


def _body_length(body, label, url):
    import tensorflow as tf

    del label, url
    return tf.strings.length(body)


def _decoded(pairs, size: int, batch_size: int, config, parallelism: Optional[int], augment):
    import tensorflow as tf

    from tfeed.api import image_dataset_from_urls

    dataset = image_dataset_from_urls(pairs, labels=None, image_size=(size, size), batch_size=batch_size,
                                      shuffle=False, fetch_config=config, augment=augment,
                                      num_parallel_calls=parallelism or tf.data.AUTOTUNE)
    return dataset, dataset.stats


def measure_grid(pairs, concurrencies: List[int], parallelisms: List[int], *, size: int, batch_size: int,
                 config, progress: bool = False):
    """fetch+decode for every (concurrency, parallelism); returns ``(rows, stats with failures or None)``."""
    rows, failures = [], None
    for concurrency in concurrencies:
        for parallelism in parallelisms:
            row, stats = measure(pairs, "decode", size=size, batch_size=batch_size,
                                 config=config.replace(max_in_flight=concurrency), parallelism=parallelism,
                                 progress=progress, desc=f"in flight {concurrency}, parallelism {parallelism}")
            rows.append(row)
            failures = failures or (stats if row["failed"] else None)
    return rows, failures


# -- output -----------------------------------------------------------------------
def _stage_markdown(rows: List[Dict]) -> str:
    lines = ["| stage | images | failed | seconds | images/s |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['stage']} | {r['images']} | {r['failed']} | {r['seconds']:.2f} | {r['images_per_s']:,.1f} |"
              for r in rows]
    return "\n".join(lines)


def _grid_markdown(rows: List[Dict]) -> str:
    from tfeed.app.viz import markdown_grid

    return "images/s, fetch+decode\n\n" + markdown_grid(rows)


def _draw(args: argparse.Namespace, rows: List[Dict], settings: Dict) -> None:
    from tfeed.app import viz

    title = args.title or f"tfeed bench: {settings['images']} images at {settings['size']}x{settings['size']}"
    fig = viz.grid_chart(rows, title=title) if args.grid else viz.throughput_chart(rows, title=title)
    viz.save_figure(fig, args.output, dpi=120)
