"""One https + HTTP/2 host at 100 ms: tfeed against the decode ceiling, and the TCP connections it used.

The origin is nginx over TLS (a CA from ``trustme``) offering HTTP/2 by ALPN, proxying every
request to a 100 ms app (``tfeed.testing.origin_nginx.NginxOrigin(tls=True, http2=True,
upstream_latency=0.1)``), serving bench_fetch's web-like corpus. In one run, alternating:
the decode ceiling (decode + resize of the same bytes in memory) and tfeed with defaults
(native engine: libcurl multiplexes streams over a few connections; each stream counts in
the host's window). Each job runs in a fresh process; the best of ``--rounds`` rounds counts
(a ceiling's autotune can settle low). nginx's access log says how many TCP connections
carried tfeed's requests. ``--split-cores`` runs nginx and its app on core 0 and the ceiling and
tfeed on the others, as if the origin were another machine: on 2 cores without it, the origin's TLS
and its Python app take CPU from the client that the ceiling never pays.

    python benchmarks/bench_h2.py                 # 2,000 images, 3 rounds, ~3 min on 2 cores
    python benchmarks/bench_h2.py --split-cores   # the origin on core 0, the client on core 1
    python benchmarks/bench_h2.py --images 600 --rounds 1

Writes OUT/h2.json and OUT/h2.md (OUT: benchmarks/results).
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import common  # noqa: E402
import fetch_jobs  # noqa: E402

LATENCY = 0.1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds of measured iteration per job (with the pilot's rate, it plans the run: 2,000 images)")
    parser.add_argument("--pilot", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=os.path.join(HERE, "results", "corpus"))
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--isolation", choices=("process", "inline"), default="process")
    parser.add_argument("--split-cores", action="store_true",
                        help="nginx and its 100 ms app on core 0, the ceiling and tfeed on the others")
    return parser.parse_args(argv)


def best_rate(runs: list) -> float:
    rates = [r["epochs"][0]["images_per_s"] for r in runs if r["status"] == "ok" and r["epochs"]]
    return max(rates, default=0.0)


def main(argv=None) -> int:
    from tfeed.testing.origin_nginx import NginxOrigin

    args = parse_args(argv)
    args.client_cpus = common.split_cores() if args.split_cores and args.isolation == "process" else None
    root, names = fetch_jobs.load_corpus(args.images, args.seed, args.cache)
    paths = [os.path.join(root, name) for name in names]
    runs = {"ceiling": [], "tfeed": []}
    connections = []
    with NginxOrigin(root, tls=True, http2=True, upstream_latency=LATENCY) as origin:
        urls = [origin.url(name) for name in names]
        jobs = {"ceiling": fetch_jobs.make_job("ceiling", "memory", urls, paths, args),
                "tfeed": fetch_jobs.make_job("tfeed", "h2", urls, paths, args, options={"ca_file": origin.ca_file})}
        for _ in range(args.rounds):
            for name, job in jobs.items():
                before = origin.stats()["connections"]
                runs[name].append(fetch_jobs.run_job(job, args))
                if name == "tfeed":
                    connections.append(origin.stats()["connections"] - before)
        described = origin.describe()
    ceiling, tfeed_rate = best_rate(runs["ceiling"]), best_rate(runs["tfeed"])
    summary = {"origin": described, "latency_s": LATENCY, "images": args.images, "rounds": args.rounds,
               "ceiling_images_per_s": ceiling, "tfeed_images_per_s": tfeed_rate,
               "tfeed_x_ceiling": tfeed_rate / ceiling if ceiling else None,
               "tfeed_connections_per_round": connections, "machine": common.machine_info(), "runs": runs}
    os.makedirs(args.out, exist_ok=True)
    common.write_json(os.path.join(args.out, "h2.json"), summary)
    table = common.markdown_table(
        ["origin", "ceiling/s (best)", "tfeed/s (best)", "tfeed × ceiling", "TCP connections (per round)"],
        [[described, common.fmt(ceiling, 1), common.fmt(tfeed_rate, 1), common.fmt(summary["tfeed_x_ceiling"], 2, "×"),
          ", ".join(str(c) for c in connections)]], align="lrrrl")
    text = f"## HTTP/2 at {LATENCY * 1000:.0f} ms: {args.images} images, best of {args.rounds} rounds\n\n{table}\n"
    with open(os.path.join(args.out, "h2.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
