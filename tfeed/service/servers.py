"""tf.data service processes: a dispatcher and workers that can run tfeed's graph.

Each ``serve_*`` function starts the server, calls ``ready(address)`` once it
is bound, and blocks until ``stop`` is set (the command sets it on SIGTERM
and SIGINT).  Workers load the native fetch op first: a worker without it
would fail every task of a tfeed job.  The dispatcher loads it too, because
it deserializes the dataset graph to split the epoch (distributed_epoch).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

_log = logging.getLogger("tfeed.service")


def serve_dispatcher(ready: Callable[[str], None], stop: threading.Event, *, port: int = 0,
                     fault_tolerant: bool = False, work_dir: Optional[str] = None) -> None:
    """Run a dispatcher until ``stop``; ``ready("grpc://localhost:PORT")``.

    ``fault_tolerant`` journals its state in ``work_dir`` so that a restarted
    dispatcher with the same ``--port`` and ``--work-dir`` resumes its jobs.
    """
    import tensorflow as tf

    load_op()
    if fault_tolerant and not work_dir:
        raise ValueError("--fault-tolerant needs --work-dir (where the dispatcher journals its state)")
    config = tf.data.experimental.service.DispatcherConfig(port=port, work_dir=work_dir,
                                                           fault_tolerant_mode=fault_tolerant)
    server = tf.data.experimental.service.DispatchServer(config)
    _log.info("dispatcher on %s (fault tolerant: %s)", server.target, fault_tolerant)
    ready(server.target)
    _wait(stop, server)


def serve_worker(dispatcher: str, ready: Callable[[str], None], stop: threading.Event, *, port: int = 0,
                 host: Optional[str] = None) -> None:
    """Run a worker of ``dispatcher`` (``grpc://host:port``) until ``stop``;
    ``ready("grpc://localhost:PORT")`` with the worker's own address.
    ``host``: the address trainers reach it at (default ``localhost``)."""
    import tensorflow as tf

    ops = load_op()
    _log.info("native fetch op loaded (%s)", ops.tfeed_curl_version().numpy().decode())
    address = dispatcher.split("://", 1)[1] if "://" in dispatcher else dispatcher
    advertised = {} if host is None else {"worker_address": f"{f'[{host}]' if ':' in host else host}:%port%"}
    config = tf.data.experimental.service.WorkerConfig(dispatcher_address=address, port=port, **advertised)
    server = tf.data.experimental.service.WorkerServer(config)
    bound = f"grpc://{server._address}"  # noqa: SLF001 - the only place TensorFlow exposes the bound port
    _log.info("worker on %s, dispatcher %s", bound, dispatcher)
    ready(bound)
    _wait(stop, server)


def load_op():
    from tfeed import kernels
    from tfeed.service.dataset import require_native

    kernels.load_core()  # graphs may hold the core kernels too
    return require_native()


def _wait(stop: threading.Event, server) -> None:
    while not stop.wait(0.5):
        pass
    _log.info("stopping")
    server._stop()  # noqa: SLF001 - TensorFlow's servers have no public stop
