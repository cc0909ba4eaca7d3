"""``tfeed warm URLS --cache-dir DIR``: download a URL list into a cache before training."""

from __future__ import annotations

import argparse
import json
import sys

from tfeed.app.commands.common import (EXIT_FAILURES, EXIT_OK, add_fetch_arguments, add_source_arguments, fetch_config,
                                   positive_int, read_source, report_failures)

NAME = "warm"
HELP = "download URLs into a cache directory ahead of training (resumable; prints a summary as JSON)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    add_source_arguments(parser)
    parser.add_argument("--cache-dir", required=True, metavar="DIR", help="the cache directory (created if missing)")
    parser.add_argument("--max-bytes", type=positive_int, default=None, metavar="N",
                        help="evict least recently used entries above N bytes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--shard", type=shard_spec, default=(0, 1), metavar="I/N",
                        help="warm only the I-th of every N URLs (0 <= I < N): run N of these, one per I, "
                             "to fill one cache from one list in parallel")
    add_fetch_arguments(parser)
    return parser


def shard_spec(text: str):
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    index, _, count = text.partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected 0 <= I < N in I/N, got {text!r}")
    return index, count


def run(args: argparse.Namespace) -> int:
    from tfeed.stats import Stats
    from tfeed.app.warm import warm_cache

    stats = Stats()
    snapshot = warm_cache(read_source(args), args.cache_dir, fetch_config=fetch_config(args),
                          progress=not args.no_progress, max_bytes=args.max_bytes, stats=stats, shard=args.shard)
    summary = {key: snapshot[key] for key in ("fetched", "cache_hits", "failed", "failures", "bytes", "retries")}
    json.dump(summary, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return EXIT_FAILURES if report_failures(stats) else EXIT_OK
