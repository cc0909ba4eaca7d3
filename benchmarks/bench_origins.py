"""Origin-zoo benchmark: download clients against realistic web servers on loopback.

Every origin of ``tfeed.testing.origins`` / ``origin_nginx`` serves images, and every
candidate fetches and decodes the whole URL list once per round:

origins    python -m http.server (small PNGs); nginx limit_conn 8 -> 503 in front of a
           100 ms app; nginx limit_req 200 r/s -> 429; a shedding origin (16 open, 100 ms,
           503 + Retry-After 1); 16 hosts x 4 open x 100 ms (503 above); nginx TLS + HTTP/2
           (no added latency: nginx cannot delay a static file)
candidates sequential requests, 32 requests threads (both retry 408/429/5xx with backoff and
           honour Retry-After), tensorpack MultiThreadMapData(32, strict=True) (one attempt),
           tfeed defaults (native engine), tfeed's Python engine, tfeed with fixed windows

    python benchmarks/bench_origins.py                  # ~10 min on 2 cores
    python benchmarks/bench_origins.py --smoke          # < 60 s, tiny corpora, one process
    python benchmarks/bench_origins.py --origins shedding,manyhosts --only tfeed,threads32 --split-cores

Per (origin, candidate): images delivered / total, images/s (delivered / seconds to the end of the
list), failures by reason, the requests the origin saw (--split-cores: origins run on core 0 and
clients on the others, as if the origin were another machine). Per origin: the best peer,
tfeed's ratio to it and to the origin's capacity, whether tfeed delivered every image a peer
delivered. Peers decode (cv2) what they download, as tfeed does. Each candidate runs in a fresh
process with a time cap. Writes OUT/origins.json, .md and .png (OUT: benchmarks/results).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/ (scripts, not a package) and this checkout's tfeed

import common  # noqa: E402
from origins_report import CANDIDATES, CEILING, PEERS, chart, origin_summary, report, summarize  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, "results")
ORIGINS = ("httpserver", "limit_conn", "limit_req", "shedding", "manyhosts", "tls_h2")
ENGINES = {"tfeed python": "python"}  # the others: fetch_engine="auto" (native when it loads)
LATENCY = 0.1  # seconds per request at the latency origins
_warm = []


def make_origin(key: str, root: str, args):
    """The origin ``key`` serving the files below ``root`` (not started)."""
    from tfeed.testing.origin_nginx import NginxOrigin
    from tfeed.testing.origins import HttpServerOrigin, ManyHostsOrigin, SheddingOrigin

    return {
        "httpserver": lambda: HttpServerOrigin(root),
        "limit_conn": lambda: NginxOrigin(root, limit_conn=8, upstream_latency=LATENCY),
        "limit_req": lambda: NginxOrigin(root, limit_req=200, burst=args.burst),
        "shedding": lambda: SheddingOrigin(root, max_concurrency=16, latency=LATENCY, retry_after=1),
        "manyhosts": lambda: ManyHostsOrigin(root, hosts=16, per_host_concurrency=4, latency=LATENCY),
        "tls_h2": lambda: NginxOrigin(root, tls=True, http2=True),
    }[key]()


# -- the worker: one candidate over one origin's URLs ------------------------------------------------


def measure(job: dict) -> dict:
    """Fetch and decode ``job["urls"]`` with ``job["candidate"]``, ``job["epochs"]`` times in this
    process; see origin_peers for the result keys (of the first epoch), and ``later_epochs``."""
    base = {"candidate": job["candidate"], "origin": job["origin"], "total": len(job["urls"])}
    if job["candidate"] == CEILING:
        return {**base, "status": "ok", **measure_ceiling(job)}
    if job["candidate"] in PEERS:
        import origin_peers

        try:
            epochs = [origin_peers.PEERS[job["candidate"]](job) for _ in range(job["epochs"])]
        except origin_peers.Unavailable as exc:
            return {**base, "status": "unavailable", "reason": str(exc)}
    else:
        epochs = measure_tfeed(job)
    later = [{"delivered": len(e["delivered_ids"]), "wall_s": e["wall_s"], "cut": e["cut"],
              "images_per_s": len(e["delivered_ids"]) / e["wall_s"] if e["wall_s"] else 0.0} for e in epochs[1:]]
    return {**base, "status": "ok", **epochs[0], "later_epochs": later}


def tfeed_config(candidate: str, ca_file=None):
    """``(FetchConfig, description)`` of a tfeed candidate."""
    import tfeed

    fields = {f.name: f for f in dataclasses.fields(tfeed.FetchConfig)}
    kwargs = {"ca_file": ca_file} if ca_file else {}
    if "adaptive" not in fields:
        return tfeed.FetchConfig(**kwargs), "FetchConfig() (it has no adaptive field: fixed windows)"
    if candidate == "tfeed fixed windows":
        return tfeed.FetchConfig(adaptive=False, **kwargs), "FetchConfig(adaptive=False)"
    return tfeed.FetchConfig(**kwargs), f"FetchConfig() (adaptive={fields['adaptive'].default})"


def _warm_up(job: dict, config) -> None:
    """One tiny epoch against a private ImageServer: the first iterator's one-time costs
    (op library, tracing) stay out of the measurement; the origin sees no request."""
    if _warm:
        return
    import numpy as np

    import tfeed
    from tfeed.testing import ImageServer, encode

    images = {f"w{i}.png": encode(np.full((32, 32, 3), 40 * i, np.uint8), "png") for i in range(4)}
    with ImageServer(images) as server:
        dataset = tfeed.image_dataset_from_urls([(server.url(n), i) for i, n in enumerate(sorted(images))],
                                                image_size=tuple(job["image_size"]), batch_size=2, shuffle=False,
                                                fetch_config=config.replace(ca_file=None))
        collections.deque(dataset, maxlen=0)  # one epoch
    _warm.append(True)


def measure_tfeed(job: dict) -> list:
    """One result per epoch over one dataset (what tfeed learned of the host carries over)."""
    import tfeed

    config, described = tfeed_config(job["candidate"], job.get("ca_file"))
    _warm_up(job, config)
    urls = job["urls"]
    dataset = tfeed.image_dataset_from_urls(list(zip(urls, range(len(urls)))), image_size=tuple(job["image_size"]),
                                            batch_size=job["batch_size"], shuffle=False, fetch_config=config,
                                            fetch_engine=ENGINES.get(job["candidate"], "auto"))
    return [_tfeed_epoch(dataset, job, described) for _ in range(job["epochs"])]


def _tfeed_epoch(dataset, job: dict, described: str) -> dict:
    delivered, first, cut = [], None, False
    start = time.perf_counter()
    for _, labels in dataset:
        delivered.extend(int(label) for label in labels.numpy())
        first = first if first is not None else time.perf_counter() - start
        if time.perf_counter() - start > job["time_cap"]:
            cut = True
            break
    wall = time.perf_counter() - start
    snapshot = json.loads(json.dumps(dataset.stats.snapshot(), default=str))
    return {"delivered_ids": sorted(delivered), "failures": dict(snapshot.get("failures", {})),
            "attempts": None, "retries": snapshot.get("retries"), "first_s": first, "wall_s": wall, "cut": cut,
            "config": described, "tfeed_stats": snapshot}


def measure_ceiling(job: dict) -> dict:
    """tfeed's decode + resize over the origin's files, read into memory beforehand."""
    import baselines

    bodies = []
    for path in job["files"]:
        with open(path, "rb") as handle:
            bodies.append(handle.read())
    work = baselines.Work(urls=job["urls"], labels=list(range(len(bodies))), bodies=bodies,
                          image_size=job["image_size"], batch_size=job["batch_size"])
    for _ in baselines.ceiling(work).take(2):  # tracing and the first autotune out of the clock
        pass
    delivered, start = [], time.perf_counter()
    for _, labels in baselines.ceiling(work):
        delivered.extend(int(label) for label in labels.numpy())
        last = time.perf_counter()  # the last batch, not the end of the iterator: tf.data may end 1-5 s later
    return {"delivered_ids": sorted(delivered), "failures": {}, "attempts": None, "first_s": None,
            "wall_s": last - start, "cut": False}


def worker_main(job_path: str, result_path: str) -> int:
    with open(job_path) as handle:
        job = json.load(handle)
    common.write_json(result_path, _safe_measure(job))
    sys.stdout.flush()
    os._exit(0)  # a cut tfeed run may leave downloads open: do not wait for them


def _safe_measure(job: dict) -> dict:
    try:
        return measure(job)
    except Exception as exc:  # noqa: BLE001 - an error row, the run goes on
        import traceback

        traceback.print_exc()
        return {"candidate": job["candidate"], "origin": job["origin"], "total": len(job["urls"]),
                "status": "error", "reason": f"{type(exc).__name__}: {exc}"}


# -- the parent: corpora, origins, jobs ---------------------------------------------------------------


def small_pngs(n: int, seed: int) -> dict:
    """``n`` small distinct PNGs (96x96 crops of the sample photos): name -> bytes."""
    import cv2
    import numpy as np

    from tfeed.testing import encode, sample_photos

    photos, rng, out = list(sample_photos().values()), np.random.default_rng(seed), {}
    for i in range(n):
        photo = photos[i % len(photos)]
        side = int(rng.integers(96, min(photo.shape[:2]) + 1))
        top, left = (int(rng.integers(0, photo.shape[k] - side + 1)) for k in (0, 1))
        crop = cv2.resize(photo[top:top + side, left:left + side], (96, 96), interpolation=cv2.INTER_AREA)
        out[f"small_{i:05d}.png"] = encode(crop, "png")
    return out


def load_corpus(kind: str, n: int, seed: int, cache: str) -> tuple:
    """``(directory, names)``: ``n`` images of ``kind`` ("small" PNGs or "web"-like), cached on disk."""
    root = os.path.join(cache, f"origins-{kind}-{n}-seed{seed}")
    manifest = root + ".json"
    if os.path.exists(manifest):
        with open(manifest) as handle:
            return root, json.load(handle)
    from tfeed.testing import web_like_corpus, write_images

    _log(f"making {n} {kind} images in {root} ...")
    corpus = small_pngs(n, seed) if kind == "small" else web_like_corpus(n, seed=seed)
    write_images(corpus, root)
    names = sorted(corpus)
    common.write_json(manifest, names)
    return root, names


def _delta(after: dict, before: dict) -> dict:
    statuses = collections.Counter(after["by_status"])
    statuses.subtract(before["by_status"])
    return {"requests": after["requests"] - before["requests"], "by_status": {k: v for k, v in statuses.items() if v}}


def run_job(job: dict, origin, args) -> dict:
    before = origin.stats()
    started = time.perf_counter()
    if args.isolation == "inline":
        result = _safe_measure(job)
    else:
        try:
            result = common.run_worker([os.path.abspath(__file__)], job, timeout=job["time_cap"] * job["epochs"] + 120,
                                       cpus=args.client_cpus)
        except common.WorkerError as exc:
            result = {"candidate": job["candidate"], "origin": job["origin"], "total": len(job["urls"]),
                      "status": "error", "reason": str(exc)}
    result["process_s"] = time.perf_counter() - started
    result["origin_seen"] = _delta(origin.stats(), before)
    if result["status"] == "ok":
        result["delivered"] = len(result["delivered_ids"])
        result["images_per_s"] = result["delivered"] / result["wall_s"] if result["wall_s"] else 0.0
    _log(f"  {job['candidate']} @ {job['origin']}: " + (
        f"{result['delivered']}/{result['total']} in {result['wall_s']:.1f} s = {result['images_per_s']:.1f}/s, "
        f"failures {result['failures']}, origin saw {result['origin_seen']}" if result["status"] == "ok"
        else f"{result['status']}: {str(result.get('reason'))[-300:]}"))
    time.sleep(args.pause)  # let limit_req's bucket drain and Retry-After windows pass
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=None, help="web-like images per origin (default 1000; smoke 12)")
    parser.add_argument("--small-images", type=int, default=None, help="PNGs at http.server (default 200; smoke 16)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds over all jobs, best kept (default 1)")
    parser.add_argument("--time-cap", type=float, default=None, help="seconds per candidate (default 120; smoke 20)")
    parser.add_argument("--burst", type=int, default=0, help="limit_req burst (nodelay) at the limit_req origin")
    parser.add_argument("--image-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1,
                        help="epochs per candidate in one process (default 1); the tables show the first, "
                             "and the last one too when > 1")
    parser.add_argument("--origins", default=None, help=f"comma-separated subset of {','.join(ORIGINS)}")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(CANDIDATES)}")
    parser.add_argument("--isolation", choices=("process", "inline"), default=None,
                        help="a fresh process per candidate (default) or all in this one (smoke)")
    parser.add_argument("--pause", type=float, default=None, help="seconds between jobs (default 1; smoke 0.1)")
    parser.add_argument("--smoke", action="store_true", help="tiny corpora, 1 round, inline: < 60 s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split-cores", action="store_true", help="origins on core 0, clients on the others")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where origins.json / .md / .png go")
    parser.add_argument("--corpus-cache", default=None, help="where corpora are kept (default OUT/corpus)")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pick = lambda value, normal, small: value if value is not None else (small if args.smoke else normal)  # noqa: E731
    args.images, args.small_images = pick(args.images, 1000, 12), pick(args.small_images, 200, 16)
    args.rounds, args.time_cap = pick(args.rounds, 1, 1), pick(args.time_cap, 120.0, 20.0)
    args.isolation, args.pause = pick(args.isolation, "process", "inline"), pick(args.pause, 1.0, 0.1)
    for flag, names, allowed in (("origins", args.origins, ORIGINS), ("only", args.only, CANDIDATES)):
        chosen = names.split(",") if names else list(allowed)
        unknown = sorted(set(chosen) - set(allowed))
        if unknown:
            parser.error(f"--{flag}: unknown {unknown}; choose from {list(allowed)}")
        setattr(args, flag, [name for name in allowed if name in chosen])
    if min(args.images, args.small_images, args.rounds, args.epochs) < 1 or args.time_cap <= 0:
        parser.error("--images, --small-images, --rounds, --epochs must be >= 1 and --time-cap > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.job:
        return worker_main(args.job, args.result)
    started, info = time.perf_counter(), common.machine_info()
    args.client_cpus = common.split_cores() if args.split_cores and args.isolation == "process" else None
    cache = args.corpus_cache or os.path.join(args.out, "corpus")
    corpora = {"small": load_corpus("small", args.small_images, args.seed, cache),
               "web": load_corpus("web", args.images, args.seed, cache)}
    origins, results = {}, collections.defaultdict(list)
    for round_index in range(args.rounds):
        order = args.only if round_index % 2 == 0 else args.only[::-1]
        for key in args.origins:
            root, names = corpora["small" if key == "httpserver" else "web"]
            with make_origin(key, root, args) as origin:
                origins[key] = {"describe": origin.describe(), "capacity": origin.capacity, "images": len(names)}
                _log(f"round {round_index + 1}/{args.rounds}: {key}: {origin.describe()}")
                for candidate in order:
                    job = {"candidate": candidate, "origin": key, "urls": origin.urls(names),
                           "files": [os.path.join(root, name) for name in names],
                           "ca_file": getattr(origin, "ca_file", None), "image_size": list(args.image_size),
                           "batch_size": args.batch_size, "time_cap": args.time_cap, "epochs": args.epochs}
                    results[(key, candidate)].append(run_job(job, origin, args))
    rows = {key: summarize(runs) for key, runs in results.items()}
    summaries = [origin_summary(key, origins[key], rows, args.only) for key in origins]
    text = report(rows, summaries, origins, args.only, args, info)
    notes = ["TLS origin: no added latency (nginx cannot delay a static file); limit_conn origin: nginx proxies "
             "to a 100 ms ImageServer, since on loopback a static file is done before a second request counts",
             "peers retry 408/429/5xx/timeouts up to 10 attempts honouring Retry-After (tensorpack: one attempt)"]
    notes += sorted({f"{r['candidate']}: {r['config']}" for r in rows.values() if r.get("config")})
    text += "\n\n### Notes\n\n" + "\n".join(f"- {n}" for n in notes)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "origins.md"), "w") as handle:
        handle.write(text + "\n")
    chart(os.path.join(args.out, "origins.png"), rows, list(origins), args.only)
    common.write_json(os.path.join(args.out, "origins.json"), {
        "settings": {k: v for k, v in vars(args).items() if k not in ("job", "result")},
        "machine": info, "wall_s": time.perf_counter() - started, "origins": origins, "summary": summaries,
        "rows": [{k: v for k, v in row.items() if k != "delivered_ids"} for row in rows.values()],
        "notes": notes, "runs": [r for runs in results.values() for r in runs]})
    _log(f"wrote {args.out}/origins.json, origins.md, origins.png in {time.perf_counter() - started:.0f} s")
    return 0


def _log(message: str) -> None:
    print(f"[bench_origins] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
