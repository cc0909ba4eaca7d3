"""The measurements of ``bench_fetch.py``: the worker that runs one candidate against one server
(``measure``, in a fresh process by default), and the parent's side: the corpus, the servers' CPU,
the jobs and their rounds, and the log on stderr.

Imported by ``bench_fetch.py`` after it has put benchmarks/ on ``sys.path``; the worker processes
run ``bench_fetch.py --job ... --result ...``, so the command line stays that script's.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Dict, List, Optional

import common
from fetch_settings import BATCH_SIZE, IMAGE_SIZE, NETWORK_BOUND, PILOT_URLS

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_fetch.py")  # what the workers run


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

    log(f"making a web-like corpus of {n} images (cached in {root}) ...")
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
    """One measurement, in a fresh process unless ``--isolation inline`` (on
    ``args.client_cpus`` only, when the benchmark sets it: see :func:`common.split_cores`)."""
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
            result = common.run_worker([BENCH], job, timeout=timeout, cpus=getattr(args, "client_cpus", None))
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
            log(f"round {round_index + 1}/{args.rounds}, job {i + 1}/{len(order)}: "
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


# -- the log ---------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench_fetch] {message}", file=sys.stderr, flush=True)


def _log_result(result: dict) -> None:
    name = f"{result['candidate']} {result['options'] or ''} @ {result['server']}"
    if result["status"] != "ok":
        log(f"  {name}: {result['status']}: {str(result.get('reason'))[:300]}")
        return
    for i, epoch in enumerate(result["epochs"]):
        log(f"  {name} epoch {i + 1}: {epoch['images']} images, {epoch['images_per_s']:.1f}/s, "
            f"tail {common.fmt(epoch['tail_s'], 2)} s, peak RSS {epoch['rss_peak_mb']:.0f} MB"
            + (" (cut)" if epoch["cut"] else ""))
