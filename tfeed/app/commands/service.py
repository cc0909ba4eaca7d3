"""``tfeed service dispatcher|worker``: run tf.data service processes that can run tfeed pipelines.

    tfeed service dispatcher --port 5050                  # prints grpc://127.0.0.1:5050
    tfeed service worker --dispatcher grpc://HOST:5050    # one per preprocessing machine (or core)

Then, on the trainer: ``image_dataset_from_urls(urls, service="grpc://HOST:5050")``.
The servers listen on 127.0.0.1 only unless --host names another address
(--host 0.0.0.0: every interface).  tf.data service runs any graph it is sent,
without authentication: listen beyond loopback only on a trusted network.
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
DEFAULT_HOST = "127.0.0.1"
HELP = "run a tf.data service dispatcher or worker for image_dataset_from_urls(..., service=...)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(NAME, help=HELP, description=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    roles = parser.add_subparsers(dest="role", metavar="ROLE", required=True)
    dispatcher = roles.add_parser("dispatcher", help="the dispatcher: hands out epochs, tracks workers")
    dispatcher.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    _add_host(dispatcher)
    dispatcher.add_argument("--fault-tolerant", action="store_true",
                            help="journal state in --work-dir so a restarted dispatcher resumes")
    dispatcher.add_argument("--work-dir", default=None, metavar="DIR", help="the dispatcher's journal directory")
    worker = roles.add_parser("worker", help="a worker: fetches and decodes, serves elements to trainers")
    worker.add_argument("--dispatcher", required=True, metavar="grpc://HOST:PORT", help="the dispatcher's address")
    worker.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    _add_host(worker)
    return parser


def _add_host(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, metavar="IP",
                        help="the address to listen on (default 127.0.0.1; 0.0.0.0 or :: for every interface: "
                             "anyone who reaches the port can run graphs, so only on a trusted network)")


def run(args: argparse.Namespace) -> int:
    from tfeed.service import loopback, servers
    from tfeed.service.dataset import NativeOpMissingError

    try:
        host = loopback.check_host(args.host)
        loopback.listen_only_on(host, _argv(args))  # re-executes this command with the bind shim, same PID
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except loopback.BindShimError as exc:
        try:
            servers.load_op()  # without a compiler the op is missing too: name that first
        except NativeOpMissingError as missing:
            raise UsageError(str(missing)) from None
        raise UsageError(str(exc)) from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def ready(address: str) -> None:
        if host not in loopback.WILDCARDS:  # the address it really listens on
            address = address.replace("localhost", f"[{host}]" if ":" in host else host, 1)
        print(address, flush=True)

    try:
        if args.role == "dispatcher":
            servers.serve_dispatcher(ready, stop, port=args.port, fault_tolerant=args.fault_tolerant,
                                     work_dir=args.work_dir)
        else:
            servers.serve_worker(args.dispatcher, ready, stop, port=args.port,
                                 host=None if host in loopback.WILDCARDS else host)
    except NativeOpMissingError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def _argv(args: argparse.Namespace) -> list:
    """This command's arguments, rebuilt from ``args`` (for the re-execution)."""
    argv = [NAME, args.role, "--port", str(args.port), "--host", args.host]
    if args.role == "dispatcher":
        argv += ["--fault-tolerant"] if args.fault_tolerant else []
        argv += ["--work-dir", args.work_dir] if args.work_dir else []
    else:
        argv += ["--dispatcher", args.dispatcher]
    return argv
