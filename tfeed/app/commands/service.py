"""``tfeed service dispatcher|worker``: run tf.data service processes that can run tfeed pipelines.

    tfeed service dispatcher --port 5050                  # prints grpc://localhost:5050
    tfeed service worker --dispatcher grpc://HOST:5050    # one per preprocessing machine (or core)

Then, on the trainer: ``image_dataset_from_urls(urls, service="grpc://HOST:5050")``.
The first line on stdout is the bound address (the ready signal); logs go to
stderr; SIGTERM or SIGINT stops the process (exit status 0).  Workers load
(building if needed) the native fetch op first, and exit with status 2 and
the missing prerequisite named when they cannot.
"""

from __future__ import annotations

import argparse
import signal
import threading

from tfeed.app.commands.common import EXIT_OK, UsageError

NAME = "service"
HELP = "run a tf.data service dispatcher or worker for image_dataset_from_urls(..., service=...)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(NAME, help=HELP, description=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    roles = parser.add_subparsers(dest="role", metavar="ROLE", required=True)
    dispatcher = roles.add_parser("dispatcher", help="the dispatcher: hands out epochs, tracks workers")
    dispatcher.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    dispatcher.add_argument("--fault-tolerant", action="store_true",
                            help="journal state in --work-dir so a restarted dispatcher resumes")
    dispatcher.add_argument("--work-dir", default=None, metavar="DIR", help="the dispatcher's journal directory")
    worker = roles.add_parser("worker", help="a worker: fetches and decodes, serves elements to trainers")
    worker.add_argument("--dispatcher", required=True, metavar="grpc://HOST:PORT", help="the dispatcher's address")
    worker.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    return parser


def run(args: argparse.Namespace) -> int:
    from tfeed.service import servers
    from tfeed.service.dataset import NativeOpMissingError

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def ready(address: str) -> None:
        print(address, flush=True)

    try:
        if args.role == "dispatcher":
            servers.serve_dispatcher(ready, stop, port=args.port, fault_tolerant=args.fault_tolerant,
                                     work_dir=args.work_dir)
        else:
            servers.serve_worker(args.dispatcher, ready, stop, port=args.port)
    except NativeOpMissingError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK
