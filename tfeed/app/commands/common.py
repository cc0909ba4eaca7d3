"""What several subcommands share: the URLS argument, fetch options, exit codes, failure reports."""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
from typing import Callable, Iterator, List, Optional, Tuple

EXIT_OK = 0
EXIT_FAILURES = 1  # the command ran, but some URLs failed or nothing came out
EXIT_USAGE = 2  # bad arguments, missing files (argparse also exits 2)
EXIT_INTERRUPTED = 130

log = logging.getLogger("tfeed.app.cli")

Pair = Tuple[str, Optional[object]]

URLS_HELP = ("where the URLs come from: URL list files (.txt, .csv, .tsv, .jsonl, .parquet, optionally .gz), "
             "single http(s):// URLs, or - for stdin (one URL per line, optionally TAB and a label)")


class UsageError(Exception):
    """A bad argument found after parsing; the command exits with status 2."""


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", metavar="URLS", nargs="+", help=URLS_HELP)
    parser.add_argument("--url-column", default="url", help="URL column of CSV/TSV/JSONL/Parquet lists (default url)")
    parser.add_argument("--label-column", default="label", help="label column (default label)")


def add_fetch_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fetching")
    group.add_argument("--max-in-flight", type=positive_int, default=None, metavar="N",
                       help="downloads in flight at once (default: tfeed's 256)")
    group.add_argument("--timeout", type=positive_float, default=None, metavar="S",
                       help="total seconds per URL, retries included (default 60)")
    group.add_argument("--retries", type=non_negative_int, default=None, metavar="N",
                       help="retries after a retryable failure (default 3)")
    group.add_argument("--ca-file", default=None, metavar="PEM",
                       help="CA certificates trusted for https instead of the system's")
    group.add_argument("--insecure", action="store_true", help="accept any https certificate (like curl -k)")
    group.add_argument("--deny-private", action="store_true",
                       help="also refuse loopback addresses (by default every private, link-local and cloud "
                            "metadata address is refused, loopback allowed); see docs/security.md")
    group.add_argument("--file-root", default=None, metavar="DIR",
                       help="also read local files (file:// URLs and paths in the lists), but only those that "
                            "resolve beneath DIR; others fail as outside_file_root (default: no local files)")


def fetch_config(args: argparse.Namespace, **overrides):
    """A :class:`tfeed.FetchConfig` from the fetch options (unset ones keep tfeed's defaults)."""
    from tfeed import contract
    from tfeed.config import FetchConfig

    changes = {"max_in_flight": args.max_in_flight, "deadline": args.timeout, "retries": args.retries,
               "ca_file": args.ca_file, "verify_tls": False if args.insecure else None,
               "deny_networks": contract.PRIVATE_NETWORKS if getattr(args, "deny_private", False) else None}
    file_root = getattr(args, "file_root", None)
    if file_root is not None:
        if not os.path.isdir(file_root):
            raise UsageError(f"--file-root {file_root}: not a directory")
        changes.update(schemes=("http", "https", "file"), file_root=file_root)
    changes.update(overrides)
    return FetchConfig(**{key: value for key, value in changes.items() if value is not None})


def read_source(args: argparse.Namespace, limit: Optional[int] = None) -> Callable[[], Iterator[Pair]]:
    """The URLS arguments as a zero-argument factory of ``(url, label)`` iterators
    (what :func:`tfeed.image_dataset_from_urls` takes).  Files are checked now
    and streamed per epoch; stdin is read once.  ``limit`` keeps the first N."""
    from tfeed.source.readers import pair_factory

    factories = []
    for item in args.urls:
        if item == "-":
            pairs = list(stdin_pairs(sys.stdin))
            factories.append(lambda pairs=pairs: iter(pairs))
        elif item.startswith(("http://", "https://")):
            factories.append(lambda url=item: iter([(url, None)]))
        else:
            try:
                factories.append(pair_factory(item, url_column=args.url_column, label_column=args.label_column))
            except (FileNotFoundError, ValueError, ImportError) as exc:
                raise UsageError(str(exc)) from None

    def pairs() -> Iterator[Pair]:
        chained = itertools.chain.from_iterable(factory() for factory in factories)
        return itertools.islice(chained, limit) if limit is not None else chained

    return pairs


def stdin_pairs(stream) -> Iterator[Pair]:
    """``url`` or ``url<TAB>label`` lines; blank lines and ``#`` comments skipped."""
    for line in stream:
        line = line.strip()
        if line and not line.startswith("#"):
            url, _, label = line.partition("\t")
            yield url.strip(), (label.strip() or None)


def has_labels(source: Callable[[], Iterator[Pair]], look: int = 10_000) -> bool:
    """Whether any of the first ``look`` pairs carries a label."""
    return any(label is not None for _, label in itertools.islice(source(), look))


def report_failures(stats, limit: int = 10) -> int:
    """Log the failures of ``stats`` (counts by reason, a few URLs) to stderr;
    returns how many URLs failed."""
    snapshot = stats.snapshot()
    failed = int(snapshot["failed"])
    if failed:
        reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(snapshot["failures"].items()))
        log.warning("%d URLs failed (%s)", failed, reasons)
        for failure in stats.failed_urls(limit):
            log.warning("  %s", failure)
    return failed


def parse_list(text: str, kind=int) -> List:
    """``"8,32,128"`` -> ``[8, 32, 128]`` (for argparse ``type=``)."""
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def augment_preset(name: str, size: int):
    """``tfeed.augment.get_preset(name, size)``, imported only when asked for."""
    try:
        from tfeed.augment import get_preset
    except ImportError as exc:
        raise UsageError(f"--augment needs tfeed.augment, which cannot be imported here ({exc})") from None
    try:
        return get_preset(name, size)
    except (KeyError, ValueError) as exc:
        raise UsageError(f"--augment {name}: {exc}") from None


def check_output(path: Optional[str]) -> None:
    """UsageError now, before any work, when ``path`` cannot be created (``-`` is stdout)."""
    if path and path != "-":
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise UsageError(f"cannot write {path}: no directory {directory}")
