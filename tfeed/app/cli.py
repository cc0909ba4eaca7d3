"""The ``tfeed`` command: a dispatcher over the subcommand modules of :mod:`tfeed.app.commands`.

    tfeed demo                       serve generated images, feed them to Keras, train
    tfeed bench URLS                 images/s per stage, or a concurrency x parallelism grid
    tfeed show URLS -o grid.png      a labelled grid of a batch (optionally augmented)
    tfeed serve-images DIR           the fault-injecting test image server
    tfeed warm URLS --cache-dir DIR  download URLs into a cache ahead of training
    tfeed service dispatcher|worker  tf.data service processes for image_dataset_from_urls(service=...)

Data goes to stdout, logs and progress bars to stderr.  Exit status: 0 success,
1 the command ran but URLs failed, 2 usage error (argparse's convention, also
for missing files), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from tfeed.app.commands import bench, demo, serve_images, service, show, warm
from tfeed.app.commands.common import EXIT_INTERRUPTED, EXIT_USAGE, UsageError

COMMANDS = (demo, bench, show, serve_images, warm, service)
DESCRIPTION = "(image URL, label) pairs in, a fast tf.data.Dataset out: demo, benchmark, viewer, test server."
EPILOG = """\
"tfeed COMMAND --help" describes each command.  Data goes to stdout, logs and progress bars to stderr.
exit status: 0 success, 1 the command ran but URLs failed, 2 usage error, 130 interrupted
"""


def build_parser() -> argparse.ArgumentParser:
    from tfeed import __version__

    parser = argparse.ArgumentParser(prog="tfeed", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tfeed {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log lines (repeatable)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="fewer log lines (repeatable)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(subparsers).set_defaults(run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose - args.quiet)
    try:
        return int(args.run(args))
    except (UsageError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"tfeed {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"tfeed {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `tfeed bench ... | head`: the reader left; not an error
        sys.stderr.close()
        return 0


def _configure_logging(verbosity: int) -> None:
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG if verbosity > 0 else logging.ERROR)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tfeed: %(message)s"))
    logger = logging.getLogger("tfeed")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


if __name__ == "__main__":
    sys.exit(main())
