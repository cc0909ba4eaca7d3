"""``tfeed serve-images DIR``: tfeed's fault-injecting test server, for your own tests and benchmarks.

Serves every file below DIR (or generated images) on 127.0.0.1 through
:class:`tfeed.testing.ImageServer`, with the options of ``python -m
tfeed.testing.server`` (``--host --port --latency --jitter --seed``).  As
there, the first line on stdout is the base URL (printed once the ``--urls``
list is written), logs go to stderr, and SIGINT/SIGTERM stop it (exit status 0).

Faults are per URL on this server (query parameters such as ``?status=404``),
so ``--fault`` chooses which URLs of the list written by ``--urls`` carry
which fault::

    tfeed serve-images photos/ --latency 0.05 --urls urls.txt \\
        --fault status=404@0.05 --fault truncate=0.5@0.02 --fault hang=1@0.01
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import threading
from typing import Dict, List, Optional, Sequence, Tuple

from tfeed.app.commands import common
from tfeed.app.commands.common import EXIT_OK, UsageError, log

NAME = "serve-images"
HELP = "serve a directory (or generated images) on 127.0.0.1 with latency and fault injection"
FAULT_KEYS = ("status", "delay", "hang", "drip", "chunk", "truncate", "corrupt", "html", "redirect", "fail",
              "fail_status", "retry_after", "gzip")
LIST_FORMATS = (".txt", ".csv", ".jsonl")
EPILOG = f"""\
faults (--fault KEY=VALUE[,KEY=VALUE...][@FRACTION], repeatable; FRACTION of the listed URLs, default all):
  status=CODE  delay=S  hang=1  drip=S,chunk=N  truncate=FRACTION  corrupt=1  html=1  redirect=N
  fail=K,fail_status=503,retry_after=S (the first K requests fail)  gzip=1
  Each URL carries at most one fault; which ones is decided by --seed.  Any URL of the server also
  takes these as query parameters, e.g. BASE/cat/1.jpg?status=503.

examples:
  tfeed serve-images photos/ --latency 0.1 --jitter 0.02 --urls urls.txt
  tfeed serve-images --generate 2000 --urls urls.txt --fault status=404@0.05 &
  tfeed bench urls.txt

--urls FILE writes {', '.join(LIST_FORMATS)} (by extension); files in subdirectories are labelled
with the subdirectory name (cat/1.jpg -> cat).
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("root", metavar="DIR", nargs="?", help="directory of images, served by relative path")
    what.add_argument("--generate", type=common.positive_int, metavar="N",
                      help="serve N generated web-like photos instead (JPEG/PNG/WebP, 300-500 px)")
    what.add_argument("--shapes", type=common.positive_int, metavar="N",
                      help="serve N generated 64 px shape images in circle/ square/ triangle/ instead")
    server = parser.add_argument_group("server (as python -m tfeed.testing.server)")
    server.add_argument("--host", default="127.0.0.1", help="(default 127.0.0.1)")
    server.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    server.add_argument("--latency", type=common.non_negative_float, default=0.0,
                        help="seconds added to every request (default 0)")
    server.add_argument("--jitter", type=common.non_negative_float, default=0.0,
                        help="latency varies by +- this many seconds (default 0)")
    server.add_argument("--seed", type=int, default=0, help="seeds jitter, corruption, generation and --fault")
    parser.add_argument("--urls", metavar="FILE", help=f"write the URL list ({'/'.join(LIST_FORMATS)}) here")
    parser.add_argument("--fault", type=parse_fault, action="append", default=[], metavar="SPEC",
                        help="give a fraction of the listed URLs a fault (see below)")
    return parser


Fault = Tuple[Dict[str, str], float]


def parse_fault(text: str) -> Fault:
    """``"status=404@0.05"`` -> ``({"status": "404"}, 0.05)``; the fraction defaults to 1."""
    spec, _, fraction_text = text.partition("@")
    try:
        fraction = float(fraction_text) if fraction_text else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad fraction in {text!r}") from None
    if not 0 < fraction <= 1:
        raise argparse.ArgumentTypeError(f"the fraction must be in (0, 1], got {text!r}")
    query = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep or not value or key not in FAULT_KEYS:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY one of {', '.join(FAULT_KEYS)}; "
                                             f"got {part!r} in {text!r}")
        query[key] = value
    return query, fraction


def assign_faults(names: Sequence[str], faults: Sequence[Fault], seed: int) -> Dict[str, Dict[str, str]]:
    """name -> fault query for ``round(fraction * len(names))`` names per fault,
    disjoint, chosen by ``seed``."""
    if sum(fraction for _, fraction in faults) > 1 + 1e-9:
        raise UsageError("the --fault fractions add up to more than 1")
    order = list(names)
    random.Random(seed).shuffle(order)
    chosen, start = {}, 0
    for query, fraction in faults:
        count = round(fraction * len(order))
        for name in order[start:start + count]:
            chosen[name] = query
        start += count
    return chosen


def run(args: argparse.Namespace) -> int:
    from tfeed.testing import ImageServer

    if args.urls and os.path.splitext(args.urls)[1].lower() not in LIST_FORMATS:
        raise UsageError(f"--urls must end in one of {LIST_FORMATS}, got {args.urls!r}")
    common.check_output(args.urls)
    images = _images(args)
    server = ImageServer(images, latency=args.latency, jitter=args.jitter, host=args.host, port=args.port,
                         seed=args.seed)
    faults = assign_faults(server.names, args.fault, args.seed)
    with server:
        if args.urls:  # complete before the base URL is printed: that line means "ready"
            write_url_list(args.urls, [(server.url(name, **faults.get(name, {})), _label(name))
                                       for name in server.names])
            log.info("wrote %d URLs to %s (%d with a fault)", len(server.names), args.urls, len(faults))
        print(server.base_url, flush=True)
        log.info("serving %d images at %s (latency %.3f s +- %.3f s)", len(server.names), server.base_url,
                 args.latency, args.jitter)
        _wait_for_signal()
    log.info("stopped")
    return EXIT_OK


def _images(args: argparse.Namespace):
    from tfeed.testing import encode, synthetic_shapes, web_like_corpus
    from tfeed.testing.images import SHAPE_CLASSES

    if args.root is not None:
        if not os.path.isdir(args.root):
            raise UsageError(f"{args.root} is not a directory")
        return args.root
    if args.generate is not None:
        return web_like_corpus(args.generate, seed=args.seed)
    images, labels = synthetic_shapes(args.shapes, size=64, seed=args.seed)
    return {f"{SHAPE_CLASSES[label]}/{i:06d}.png": encode(image, "png") for i, (image, label) in
            enumerate(zip(images, labels))}


def _label(name: str) -> Optional[str]:
    head, sep, _ = name.rpartition("/")
    return head.split("/")[-1] if sep else None


def write_url_list(path: str, pairs: List[Tuple[str, Optional[str]]]) -> None:
    """Write ``(url, label or None)`` as .txt (URL TAB label), .csv (url,label) or .jsonl."""
    suffix = os.path.splitext(path)[1].lower()
    labelled = any(label is not None for _, label in pairs)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        if suffix == ".csv":
            import csv

            writer = csv.writer(handle)
            writer.writerow(["url", "label"] if labelled else ["url"])
            writer.writerows([url, label or ""] if labelled else [url] for url, label in pairs)
        elif suffix == ".jsonl":
            for url, label in pairs:
                handle.write(json.dumps({"url": url, "label": label} if labelled else {"url": url}) + "\n")
        else:
            for url, label in pairs:
                handle.write(f"{url}\t{label}\n" if label is not None else f"{url}\n")


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
