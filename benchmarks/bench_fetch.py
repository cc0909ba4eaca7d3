"""Fetch benchmark: tfeed against the ways people download images into tf.data.

One run serves a web-like corpus (real photos as mixed JPEG/PNG/WebP at
ImageNet-like sizes) from nginx (0 ms) and from tfeed's ``ImageServer`` with
100 ms +- 20 ms latency per request, and measures for every candidate of
:mod:`baselines` (decode ceiling, naive, tutorial, threadpool32, tensorpack,
tfeed (default engine: native when built), tfeed-python, tfeed-fixed (fixed
windows)): images/s, the ratio to the ceiling (also from the first batch on,
without start-up), the time to the first batch, the tail (time from the last
batch to end-of-sequence) and peak RSS.

    python benchmarks/bench_fetch.py                 # ~10 min: 2000 images, 3 rounds
    python benchmarks/bench_fetch.py --quick         # < 1 min smoke run, no isolation
    python benchmarks/bench_fetch.py --grid          # also tfeed's concurrency x decode grid

How it measures (see benchmarks/README.md):
* each candidate runs in a fresh Python process (``--isolation process``), so
  its peak RSS (VmHWM, reset after start-up) is its own;
* a short pilot (64 URLs, batch 1) first warms the process and estimates the
  rate, then the measured run takes as many URLs as fit in ``--budget``
  seconds (at most ``--images``), so slow peers finish too and have a tail;
* rounds interleave the candidates (the ceiling runs before each server's
  block); images/s is the best round, the tail the median, peak RSS the
  largest; candidates slower than 0.1x the ceiling (network-bound) run once.

This script is the command line; the measurements are in fetch_jobs.py, the
tables, checks and chart in fetch_report.py, the settings and targets in
fetch_settings.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ (scripts, not a package) and this checkout's tfeed

import common  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
from fetch_jobs import load_corpus, log, make_job, run_rounds, worker_main  # noqa: E402
from fetch_report import (acceptance, chart, epochs_table, grid_table, main_table,  # noqa: E402
                          native_acceptance, summarize)
from fetch_settings import (BATCH_SIZE, FAST, GRID_DECODE, GRID_IN_FLIGHT, IMAGE_SIZE, JITTER,  # noqa: E402
                            LATENCY, MEMORY, SLOW, grid_options)

DEFAULT_OUT = os.path.join(HERE, "results")


# -- main -------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="corpus size; most URLs a candidate gets")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of tfeed at 100 ms (RSS per epoch)")
    parser.add_argument("--budget", type=float, default=None, help="seconds of work per candidate (default 20; quick 3)")
    parser.add_argument("--pilot", type=float, default=None, help="seconds the pilot may take (default 4; quick 1)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds over all candidates (default 3; quick 1)")
    parser.add_argument("--isolation", choices=("process", "inline"), default=None,
                        help="a fresh process per measurement (default) or all in this one (quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: budget 3 s, 1 round, inline")
    parser.add_argument("--grid", action="store_true", help="also tfeed's max_in_flight x decode-parallelism grid")
    parser.add_argument("--only", default=None, help="comma-separated candidates to run (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where fetch.json / fetch.png go")
    parser.add_argument("--corpus-cache", default=None, help="where the generated corpus is kept (default OUT/corpus)")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.budget = args.budget if args.budget is not None else (3.0 if quick else 20.0)
    args.pilot = args.pilot if args.pilot is not None else (1.0 if quick else 4.0)
    args.rounds = args.rounds if args.rounds is not None else (1 if quick else 3)
    args.isolation = args.isolation or ("inline" if quick else "process")
    if args.images < 1 or args.epochs < 1 or args.rounds < 1:
        parser.error("--images, --epochs and --rounds must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.job:
        return worker_main(args.job, args.result)
    import baselines  # imports TensorFlow; the worker path above needs it only inside measure()
    from tfeed.testing import ImageServer, NginxServer

    started = time.perf_counter()
    info = common.machine_info()
    candidates = list(baselines.CANDIDATES)
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(candidates))
        if unknown:
            raise SystemExit(f"--only: unknown candidates {unknown}; choose from {candidates}")
        candidates = [c for c in candidates if c in wanted or c == "ceiling"]
    notes = []
    from tfeed import kernels as native

    notes.append("tfeed row: fetch engine " + ("native (libcurl op)" if native.available()
                                                else "python (native op unavailable)"))

    root, names = load_corpus(args.images, args.seed, args.corpus_cache or os.path.join(args.out, "corpus"))
    paths = [os.path.join(root, name) for name in names]
    corpus_mb = sum(os.path.getsize(p) for p in paths) / 2**20
    with NginxServer(root) as nginx, ImageServer(root, latency=LATENCY, jitter=JITTER, process=True) as slow:
        servers = {FAST: nginx, SLOW: slow}
        urls = {label: [server.url(name) for name in names] for label, server in servers.items()}
        jobs = []
        for server in servers:
            # The denominator of every ratio is measured before each server's block,
            # so it gets twice the samples of a candidate: a ceiling caught by a busy
            # moment would flatter everyone.
            jobs.append(make_job("ceiling", MEMORY, urls[FAST], paths, args))
            for candidate in candidates[1:]:
                epochs = args.epochs if (candidate == "tfeed" and server == SLOW) else 1
                jobs.append(make_job(candidate, server, urls[server], paths, args, epochs=epochs))
        if args.grid:
            jobs += [make_job("tfeed", SLOW, urls[SLOW], paths, args, options=grid_options(m, c))
                     for m in GRID_IN_FLIGHT for c in GRID_DECODE]
        results = run_rounds(jobs, args)

    rows = {}
    for key, runs in results.items():
        row = summarize(runs)
        rows[key[:2] if not row["options"] else key] = row
    ceiling = rows.get(("ceiling", MEMORY))
    ceiling = ceiling if ceiling and ceiling["status"] == "ok" else None
    ordered = [rows[k] for k in [("ceiling", MEMORY)] + [(c, s) for s in servers for c in candidates[1:]] if k in rows]
    for row in ordered:
        if row["status"] != "ok":
            notes.append(f"{row['candidate']} @ {row['server']}: {row['status']}: {row.get('reason')}")
    checks = acceptance(rows, ceiling)
    native_checks = native_acceptance(rows, ceiling) if native.available() else []

    loads = [load for runs in results.values() for r in runs for load in r["loadavg_1min"]]
    report = [f"## Fetch benchmark: {args.images} web-like images ({corpus_mb:.0f} MB), "
              f"{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, batch {BATCH_SIZE}, {info['cpus']} cores",
              "", f"best of {args.rounds} round(s), ≤ {args.budget:g} s of work per candidate, "
                  f"isolation: {args.isolation}; tail = end-of-sequence after the last batch (median); "
                  f"1-min load average {min(loads):.1f}–{max(loads):.1f}", "",
              main_table(ordered, ceiling)]
    tfeed_slow = rows.get(("tfeed", SLOW))
    if tfeed_slow and tfeed_slow["status"] == "ok":
        report += ["", f"### tfeed @ {SLOW}, per epoch", "", epochs_table(tfeed_slow)]
    report += ["", "### Checks: tfeed vs the ceiling and the peers", ""]
    report += [f"- [{'x' if c['met'] else ' '}] {c['target']}: {c['shown']}" for c in checks]
    if native_checks:
        report += ["", "### Checks: the native engine (tfeed's default here) at 0.9x the ceiling", ""]
        report += [f"- [{'x' if c['met'] else ' '}] {c['target']}: {c['shown']}" for c in native_checks]
    grid = None
    if args.grid:
        grid_md, grid_values = grid_table(rows, ceiling)
        grid = {"in_flight": list(GRID_IN_FLIGHT), "decode_calls": [str(c) for c in GRID_DECODE],
                "images_per_s": grid_values}
        report += ["", f"### tfeed grid @ {SLOW}: images/s (× ceiling)", "", grid_md]
        common.heatmap(os.path.join(args.out, "fetch_grid.png"), [str(m) for m in GRID_IN_FLIGHT],
                       [str(c) for c in GRID_DECODE], grid_values,
                       title=f"tfeed images/s @ {SLOW}", xlabel="decode num_parallel_calls", ylabel="max_in_flight")
    if notes:
        report += ["", "### Notes", ""] + [f"- {n}" for n in notes]
    print("\n".join(report))

    chart(os.path.join(args.out, "fetch.png"), rows, ceiling, candidates)
    common.write_json(os.path.join(args.out, "fetch.json"), {
        "settings": {"images": args.images, "corpus_mb": corpus_mb, "image_size": IMAGE_SIZE,
                     "batch_size": BATCH_SIZE, "latency_s": LATENCY, "jitter_s": JITTER, "epochs": args.epochs,
                     "budget_s": args.budget, "pilot_s": args.pilot, "rounds": args.rounds,
                     "isolation": args.isolation, "seed": args.seed},
        "machine": info, "wall_s": time.perf_counter() - started,
        "rows": ordered, "grid": grid, "grid_rows": [r for k, r in rows.items() if len(k) == 3],
        "acceptance": checks, "acceptance_native": native_checks, "notes": notes, "runs": [r for runs in results.values() for r in runs]})
    log(f"wrote {os.path.join(args.out, 'fetch.json')} and fetch.png in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
