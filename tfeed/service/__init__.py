"""Scale-out on tf.data service: ``tfeed service dispatcher|worker`` and
``image_dataset_from_urls(..., service="grpc://host:port")``.

Modules: :mod:`~tfeed.service.staging` (each epoch's URLs as shard files),
:mod:`~tfeed.service.graph` (the worker side, graph ops only),
:mod:`~tfeed.service.client` (the watchdog reader), :mod:`~tfeed.service.ledger`
(its per-shard accounting),
:mod:`~tfeed.service.dataset` (the wiring), :mod:`~tfeed.service.servers`
(the dispatcher and worker processes), :mod:`~tfeed.service.projection`
(throughput model for 1-64 workers).  See ``docs/service.md``.
"""

from __future__ import annotations

__all__ = ["service_dataset", "NativeOpMissingError", "ServiceUnavailableError", "LOST", "PROCESSING_MODES"]


def __getattr__(name):  # TensorFlow loads only when service mode is used
    if name in ("service_dataset", "NativeOpMissingError"):
        from tfeed.service import dataset

        return getattr(dataset, name)
    if name == "PROCESSING_MODES":
        from tfeed.plan import PROCESSING_MODES

        return PROCESSING_MODES
    if name in ("ServiceUnavailableError", "LOST"):
        from tfeed.service import client

        return getattr(client, name)
    raise AttributeError(f"module 'tfeed.service' has no attribute {name!r}")
