"""Fetch benchmark: tfeed against the ways people download images into tf.data.

One run serves a web-like corpus (real photos as mixed JPEG/PNG/WebP at
ImageNet-like sizes) from nginx (0 ms) and from tfeed's ``ImageServer`` with
100 ms +- 20 ms latency per request, and measures for every candidate of
:mod:`baselines` (decode ceiling, naive, tutorial, threadpool32, tensorpack,
tfeed (default engine: native when built), tfeed-python): images/s, the ratio to the ceiling (also from
the first batch on, without start-up), the time to the first batch, the tail
(time from the last batch to end-of-sequence) and peak RSS.

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
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ (scripts, not a package) and this checkout's tfeed

import common  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

DEFAULT_OUT = os.path.join(HERE, "results")
IMAGE_SIZE = (224, 224)
BATCH_SIZE = 32
PILOT_URLS = 64
LATENCY, JITTER = 0.100, 0.020
FAST, SLOW, MEMORY = "nginx 0 ms", "ImageServer 100±20 ms", "memory"
NETWORK_BOUND = 0.1  # below this fraction of the ceiling a candidate runs one round only
GRID_IN_FLIGHT = (16, 64, 256)
GRID_DECODE = (1, 2, "AUTOTUNE")
# Acceptance targets of issue 3.
TARGET_RATIO, TARGET_VS_PEERS, TARGET_RSS_MB, FLAT_RSS_MB = 0.8, 3.0, 400.0, 50.0
# Issue 6's target for the native engine (tfeed's default where the op builds).
NATIVE_TARGET_RATIO = 0.9


# -- the worker: one candidate, one server, in this process --------------------------


def measure(job: dict) -> dict:
    """Run one candidate over ``job["urls"]``: pilot, then the measured epochs."""
    import tensorflow as tf  # noqa: F401  (imported before the clock starts)

    import baselines

    candidate = baselines.CANDIDATES[job["candidate"]]
    result = {key: job[key] for key in ("candidate", "server", "options")}
    paths, urls, labels = job.get("paths"), job["urls"], job["labels"]

    def work(n: int, batch_size: int) -> baselines.Work:
        bodies = [_read(path) for path in paths[:n]] if candidate.needs_bodies else None
        return baselines.Work(urls[:n], labels[:n], IMAGE_SIZE, batch_size, bodies, dict(job["options"]))

    def count(element) -> int:
        return int(element[0].shape[0])

    try:
        pilot_work = work(min(PILOT_URLS, len(urls)), 1)
        pilot = common.time_iteration(candidate.build(pilot_work), count, job["pilot_s"])
    except baselines.Unavailable as exc:
        return {**result, "status": "unavailable", "reason": str(exc)}
    del pilot_work
    gc.collect()
    rate = pilot["images"] / pilot["last_s"] if pilot["images"] else 1.0 / job["pilot_s"]
    planned = int(min(len(urls), max(job["batch_size"], rate * job["budget_s"])))
    hard_cap = max(2 * job["budget_s"], job["budget_s"] + 10)
    # Built before the memory window opens, and the ceiling's Python copy of the
    # bytes dropped: the window sees what iterating adds (the ceiling's corpus,
    # held once in its tensor, counts in its peak but not in its growth).
    dataset = candidate.build(work(planned, job["batch_size"]))
    gc.collect()

    common.reset_peak_rss()
    rss_before = common.rss_mb()
    cpu_before = common.cpu_seconds()
    epochs = []
    with common.RssSampler() as sampler:
        for _ in range(job["epochs"]):
            timing = common.time_iteration(dataset, count, hard_cap)
            timing["rss_peak_mb"] = sampler.phase()
            timing["rss_end_mb"] = common.rss_mb()
            timing["complete"] = not timing["cut"] and timing["images"] == planned
            epochs.append(timing)
            if timing["cut"]:
                break
    stats = getattr(dataset, "stats", None)
    return {**result, "status": "ok", "pilot_images_per_s": rate, "planned_images": planned,
            "epochs": epochs, "rss_before_mb": rss_before, "peak_rss_mb": common.peak_rss_mb(),
            "cpu_s": common.cpu_seconds() - cpu_before,
            "tfeed_stats": _jsonable(stats.snapshot()) if stats is not None else None}


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _jsonable(snapshot: dict) -> dict:
    return json.loads(json.dumps(snapshot, default=str))


def worker_main(job_path: str, result_path: str) -> int:
    with open(job_path) as handle:
        job = json.load(handle)
    try:
        result = measure(job)
    except Exception as exc:  # noqa: BLE001 - reported as an error row, the run goes on
        import traceback

        traceback.print_exc()
        result = {key: job[key] for key in ("candidate", "server", "options")}
        result.update(status="error", reason=f"{type(exc).__name__}: {exc}")
    common.write_json(result_path, result)
    return 0


# -- the parent: corpus, servers, jobs ---------------------------------------------------


def load_corpus(n: int, seed: int, cache: str) -> tuple:
    """``(directory, names)`` of ``n`` web-like images, generated once and cached on disk."""
    root = os.path.join(cache, f"web-{n}-seed{seed}")
    manifest = os.path.join(root, "MANIFEST.json")
    if os.path.exists(manifest):
        with open(manifest) as handle:
            return root, json.load(handle)
    from tfeed.testing import web_like_corpus, write_images

    _log(f"making a web-like corpus of {n} images (cached in {root}) ...")
    corpus = web_like_corpus(n, seed=seed)
    write_images(corpus, root)
    names = sorted(corpus)
    common.write_json(manifest, names)
    return root, names


class ServerCpu:
    """CPU seconds used by this process's child servers (nginx, ImageServer) during a job."""

    def __init__(self):
        import psutil

        self._processes = psutil.Process().children(recursive=True)

    def total(self) -> float:
        seconds = 0.0
        for process in self._processes:
            try:
                times = process.cpu_times()
                seconds += times.user + times.system
            except Exception:  # noqa: BLE001 - a server that went away counts nothing
                pass
        return seconds


def make_job(candidate: str, server: str, urls: List[str], paths: List[str], args, *, epochs: int = 1,
             options: Optional[dict] = None) -> dict:
    return {"candidate": candidate, "server": server, "urls": urls, "paths": paths,
            "labels": [i % 10 for i in range(len(urls))], "batch_size": BATCH_SIZE, "epochs": epochs,
            "budget_s": args.budget, "pilot_s": args.pilot, "options": options or {}}


def run_job(job: dict, args) -> dict:
    """One measurement, in a fresh process unless ``--isolation inline``."""
    server_cpu = ServerCpu()
    cpu_before = server_cpu.total()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    if args.isolation == "inline":
        try:
            result = measure(job)
        except Exception as exc:  # noqa: BLE001
            result = {"candidate": job["candidate"], "server": job["server"], "options": job["options"],
                      "status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    else:
        timeout = 120 + job["pilot_s"] + job["epochs"] * max(2 * job["budget_s"], job["budget_s"] + 10)
        try:
            result = common.run_worker([os.path.abspath(__file__)], job, timeout=timeout)
        except common.WorkerError as exc:
            result = {"candidate": job["candidate"], "server": job["server"], "options": job["options"],
                      "status": "error", "reason": str(exc)}
    result["server_cpu_s"] = server_cpu.total() - cpu_before
    result["wall_s"] = time.perf_counter() - started
    result["loadavg_1min"] = [load_before, os.getloadavg()[0]]  # others' work on this machine, for judging noise
    _log_result(result)
    return result


def run_rounds(jobs: List[dict], args) -> Dict[tuple, List[dict]]:
    """Every job once per round; odd rounds run in reverse order to spread drift.

    After the first round, candidates below ``NETWORK_BOUND`` x the ceiling are
    not repeated: they wait on the network, not the CPU, so other work on the
    machine barely moves them, and they take the longest.  Unavailable ones
    are not repeated either.
    """
    results: Dict[tuple, List[dict]] = {}
    for round_index in range(args.rounds):
        if round_index == 1:
            ceiling = max((r["epochs"][0]["images_per_s"] for r in results.get(_key(jobs[0]), [])
                           if r["status"] == "ok" and r["epochs"]), default=None)
            jobs = [j for j in jobs if _worth_repeating(results[_key(j)], ceiling)]
        order = jobs if round_index % 2 == 0 else jobs[::-1]
        for i, job in enumerate(order):
            _log(f"round {round_index + 1}/{args.rounds}, job {i + 1}/{len(order)}: "
                 f"{job['candidate']} {job['options'] or ''} @ {job['server']}")
            results.setdefault(_key(job), []).append(run_job(job, args))
    return results


def _worth_repeating(runs: List[dict], ceiling: Optional[float]) -> bool:
    first = runs[0]
    if first["status"] == "unavailable":
        return False
    if first["status"] != "ok" or not ceiling or not first["epochs"]:
        return True
    return first["epochs"][0]["images_per_s"] >= NETWORK_BOUND * ceiling


def _key(job_or_result: dict) -> tuple:
    return (job_or_result["candidate"], job_or_result["server"], json.dumps(job_or_result["options"], sort_keys=True))


# -- summaries -------------------------------------------------------------------------------


def summarize(runs: List[dict]) -> dict:
    """One row from a candidate's rounds: best images/s, median tail, largest peak RSS."""
    ok = [r for r in runs if r["status"] == "ok" and r["epochs"]]
    first = runs[0]
    row = {"candidate": first["candidate"], "server": first["server"], "options": first["options"],
           "rounds": len(runs)}
    if not ok:
        return {**row, "status": first["status"], "reason": first.get("reason")}
    best = max(ok, key=lambda r: r["epochs"][0]["images_per_s"])
    return {**row, "status": "ok",
            "images_per_s": best["epochs"][0]["images_per_s"],
            "images_per_s_rounds": [r["epochs"][0]["images_per_s"] for r in ok],
            "images": best["epochs"][0]["images"],
            "complete": all(e["complete"] for e in best["epochs"]),
            "tail_s": common.median(r["epochs"][0]["tail_s"] for r in ok),
            "first_s": common.median(r["epochs"][0]["first_s"] for r in ok),
            "steady_images_per_s": _steady_rate(best["epochs"][0]),
            "peak_rss_mb": max(r["peak_rss_mb"] or 0 for r in ok),
            "rss_growth_mb": max((r["peak_rss_mb"] or 0) - (r["rss_before_mb"] or 0) for r in ok),
            "cpu_ms_per_image": 1000 * best["cpu_s"] / max(1, sum(e["images"] for e in best["epochs"])),
            "cores_busy": best["cpu_s"] / max(1e-9, sum(e["end_s"] or e["last_s"] or 0 for e in best["epochs"])),
            "server_cpu_s": best["server_cpu_s"],
            "epochs": best["epochs"],
            "epochs_by_round": [r["epochs"] for r in ok]}


def _steady_rate(epoch: dict) -> Optional[float]:
    """images/s from the first batch to the last: the rate without the epoch's start-up."""
    flowing = epoch["last_s"] - epoch["first_s"] if epoch["first_s"] is not None and epoch["last_s"] else 0
    return (epoch["images"] - BATCH_SIZE) / flowing if flowing > 0 and epoch["images"] > BATCH_SIZE else None


def main_table(rows: List[dict], ceiling: Optional[dict]) -> str:
    ceiling_ips = ceiling["images_per_s"] if ceiling else None
    ceiling_steady = ceiling.get("steady_images_per_s") if ceiling else None
    ceiling_rss = ceiling["peak_rss_mb"] if ceiling else None
    lines = []
    for row in rows:
        if row["status"] != "ok":
            continue
        ratio = row["images_per_s"] / ceiling_ips if ceiling_ips else None
        delta = row["peak_rss_mb"] - ceiling_rss if ceiling_rss is not None else None
        steady = row.get("steady_images_per_s")
        steady_ratio = steady / ceiling_steady if steady and ceiling_steady else None
        note = "" if row["complete"] else "cut by time cap"
        lines.append([row["candidate"], row["server"], f"{row['images']:,}", common.fmt(row["images_per_s"], 1),
                      common.fmt(ratio, 3, "×"), common.fmt(row["first_s"], 2), common.fmt(steady_ratio, 3, "×"),
                      common.fmt(row["tail_s"], 2),
                      common.fmt(row["peak_rss_mb"]), common.fmt(delta, 0, signed=True),
                      common.fmt(row["rss_growth_mb"], 0, signed=True), common.fmt(row["cpu_ms_per_image"], 2), note])
    columns = ["candidate", "server", "images", "images/s", "× ceiling", "1st batch s", "× after 1st batch", "tail s",
               "peak RSS MB", "RSS Δ vs ceiling MB", "RSS growth MB", "CPU ms/image", "note"]
    return common.markdown_table(columns, lines, align="llrrrrrrrrrrl")


def epochs_table(row: dict) -> str:
    lines = [[str(r + 1), str(i + 1), f"{e['images']:,}", common.fmt(e["images_per_s"], 1), common.fmt(e["tail_s"], 2),
              common.fmt(e["rss_peak_mb"]), common.fmt(e["rss_end_mb"])]
             for r, epochs in enumerate(row["epochs_by_round"]) for i, e in enumerate(epochs)]
    return common.markdown_table(["round", "epoch", "images", "images/s", "tail s", "peak RSS MB", "RSS at end MB"],
                                 lines)


def acceptance(rows: Dict[tuple, dict], ceiling: Optional[dict]) -> List[dict]:
    """Issue 3's targets, each with the measured value and whether it is met."""
    def ok_row(candidate, server):
        row = rows.get((candidate, server))
        return row if row is not None and row["status"] == "ok" else None

    checks = []
    tfeed_fast, tfeed_slow = ok_row("tfeed", FAST), ok_row("tfeed", SLOW)
    for server, row in ((FAST, tfeed_fast), (SLOW, tfeed_slow)):
        value = row["images_per_s"] / ceiling["images_per_s"] if row and ceiling else None
        checks.append({"target": f"tfeed >= {TARGET_RATIO}x ceiling @ {server}", "value": value,
                       "shown": common.fmt(value, 3, "×"), "met": value is not None and value >= TARGET_RATIO})
    peers = [ok_row(p, SLOW) for p in ("naive", "tutorial", "threadpool32", "tensorpack")]
    peers = [p for p in peers if p is not None]
    best_peer = max(peers, key=lambda p: p["images_per_s"]) if peers else None
    value = tfeed_slow["images_per_s"] / best_peer["images_per_s"] if tfeed_slow and best_peer else None
    checks.append({"target": f"tfeed >= {TARGET_VS_PEERS}x best peer @ {SLOW}", "value": value,
                   "shown": common.fmt(value, 2, "×") + (f" (best peer: {best_peer['candidate']})" if best_peer else ""),
                   "met": value is not None and value >= TARGET_VS_PEERS})
    value = tfeed_slow["peak_rss_mb"] - ceiling["peak_rss_mb"] if tfeed_slow and ceiling else None
    checks.append({"target": f"tfeed peak RSS @ {SLOW} within {TARGET_RSS_MB:.0f} MB of the ceiling's",
                   "value": value, "shown": common.fmt(value, 0, " MB"),
                   "met": value is not None and value <= TARGET_RSS_MB})
    rounds = [epochs for epochs in (tfeed_slow["epochs_by_round"] if tfeed_slow else []) if len(epochs) >= 2]
    if rounds:  # the worst round
        value = max(max(e["rss_peak_mb"] for e in epochs[1:]) - epochs[0]["rss_peak_mb"] for epochs in rounds)
        shown = f"{value:+.0f} MB over {len(rounds[0])} epochs (worst of {len(rounds)} round(s))"
    else:
        value, shown = None, "needs --epochs >= 2"
    checks.append({"target": f"tfeed RSS flat across epochs @ {SLOW} (later peaks <= epoch 1 + {FLAT_RSS_MB:.0f} MB)",
                   "value": value, "shown": shown, "met": value is not None and value <= FLAT_RSS_MB})
    return checks


def native_acceptance(rows: Dict[tuple, dict], ceiling: Optional[dict]) -> List[dict]:
    """Issue 6's target: the tfeed row (the native engine when it builds) at both latencies."""
    checks = []
    for server in (FAST, SLOW):
        row = rows.get(("tfeed", server))
        value = row["images_per_s"] / ceiling["images_per_s"] if row and row["status"] == "ok" and ceiling else None
        checks.append({"target": f"tfeed (native) >= {NATIVE_TARGET_RATIO}x ceiling @ {server}", "value": value,
                       "shown": common.fmt(value, 3, "×"), "met": value is not None and value >= NATIVE_TARGET_RATIO})
    return checks


def grid_table(rows: Dict[tuple, dict], ceiling: Optional[dict]) -> tuple:
    """(markdown, values) of images/s by max_in_flight (rows) x decode parallelism (columns)."""
    values = []
    for in_flight in GRID_IN_FLIGHT:
        line = []
        for calls in GRID_DECODE:
            row = rows.get(("tfeed", SLOW, _options_key(in_flight, calls)))
            line.append(row["images_per_s"] if row and row["status"] == "ok" else None)
        values.append(line)
    ceiling_ips = ceiling["images_per_s"] if ceiling else None
    lines = [[str(in_flight)] + [common.fmt(v, 0) + (f" ({v / ceiling_ips:.2f}×)" if v and ceiling_ips else "")
                                 for v in line] for in_flight, line in zip(GRID_IN_FLIGHT, values)]
    header = ["max_in_flight \\ decode calls"] + [str(c) for c in GRID_DECODE]
    return common.markdown_table(header, lines), values


def _grid_options(in_flight, calls) -> dict:
    return {"max_in_flight": in_flight, "num_parallel_calls": calls}


def _options_key(in_flight, calls) -> str:
    return json.dumps(_grid_options(in_flight, calls), sort_keys=True)


def chart(path: str, rows: Dict[tuple, dict], ceiling: Optional[dict], candidates: List[str]) -> None:
    groups = [c for c in candidates if c != "ceiling"]

    def values(server, field):
        return [rows[(c, server)][field] if rows.get((c, server), {}).get("status") == "ok" else None
                for c in groups]

    hlines = []
    if ceiling:
        hlines = [(ceiling["images_per_s"], f"ceiling {ceiling['images_per_s']:.0f}/s", "-"),
                  (TARGET_RATIO * ceiling["images_per_s"], f"{TARGET_RATIO}× ceiling", "--")]
    rss_lines = [(ceiling["peak_rss_mb"], f"ceiling {ceiling['peak_rss_mb']:.0f} MB", "-"),
                 (ceiling["peak_rss_mb"] + TARGET_RSS_MB, f"ceiling + {TARGET_RSS_MB:.0f} MB", "--")] if ceiling else []
    common.bar_chart(path, groups, {FAST: values(FAST, "images_per_s"), SLOW: values(SLOW, "images_per_s")},
                     title=f"images/s (log scale), {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} batch {BATCH_SIZE}, "
                           f"{os.cpu_count()} cores", ylabel="images/s", log=True, hlines=hlines,
                     panel={"series": {FAST: values(FAST, "peak_rss_mb"), SLOW: values(SLOW, "peak_rss_mb")},
                            "title": "peak RSS of the process (MB)", "ylabel": "MB", "hlines": rss_lines})


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
    from tfeed import native

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
            jobs += [make_job("tfeed", SLOW, urls[SLOW], paths, args, options=_grid_options(m, c))
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
    report += ["", "### Acceptance (issue 3)", ""]
    report += [f"- [{'x' if c['met'] else ' '}] {c['target']}: {c['shown']}" for c in checks]
    if native_checks:
        report += ["", "### Acceptance (issue 6: the native engine, tfeed's default here)", ""]
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
    _log(f"wrote {os.path.join(args.out, 'fetch.json')} and fetch.png in {time.perf_counter() - started:.0f} s")
    return 0


def _log(message: str) -> None:
    print(f"[bench_fetch] {message}", file=sys.stderr, flush=True)


def _log_result(result: dict) -> None:
    name = f"{result['candidate']} {result['options'] or ''} @ {result['server']}"
    if result["status"] != "ok":
        _log(f"  {name}: {result['status']}: {str(result.get('reason'))[:300]}")
        return
    for i, epoch in enumerate(result["epochs"]):
        _log(f"  {name} epoch {i + 1}: {epoch['images']} images, {epoch['images_per_s']:.1f}/s, "
             f"tail {common.fmt(epoch['tail_s'], 2)} s, peak RSS {epoch['rss_peak_mb']:.0f} MB"
             + (" (cut)" if epoch["cut"] else ""))


if __name__ == "__main__":
    sys.exit(main())
