"""tfeed's native fetch op: URLs downloaded inside TensorFlow, GIL-free.

``TfeedFetch`` (see ``fetch_op.cc``) takes a vector of URLs and returns their
bodies, failure reasons, attempt counts and details.  A single process-wide
libcurl loop serves every call, so hundreds of requests are in flight while
no tf.data thread waits on the network.  Being a graph op, it also runs where
``py_function`` cannot, e.g. on tf.data service workers.  The same library
holds the pipeline's other kernels: ``TfeedTryCall`` / ``TfeedKeepRows``
(``try_op.cc``), the delivery journal (``journal_op.cc``) and
``TfeedAffineMirror``, the per-example colour-and-flip step of augmentation
recipes (``augment_op.cc``).

Importing this package builds nothing; :func:`load` compiles the op on first
use (see :mod:`tfeed.native.build`) and returns None, after one warning, when
that is impossible, so callers fall back to the Python engine::

    from tfeed import native
    ops = native.load()
    if ops is not None:
        bodies, reasons, attempts, details = ops.tfeed_fetch(urls)
"""

from __future__ import annotations

import os
import threading
import warnings
from types import ModuleType
from typing import Dict, Optional, Tuple

from tfeed.native import build as _build
from tfeed.native.build import INSTALL_HINT, BuildError

__all__ = ["load", "available", "NativeUnavailableWarning", "BuildError"]


class NativeUnavailableWarning(RuntimeWarning):
    """The native fetch op could not be built or loaded; tfeed uses the Python engine."""


class _Loader:
    """The op library of this process (TensorFlow cannot unload one), and the
    failures already reported, so each is warned about once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.module: Optional[ModuleType] = None
        self.failures: Dict[Tuple, str] = {}

    def load(self, cache_dir, compiler) -> Optional[ModuleType]:
        key = (str(cache_dir) if cache_dir is not None else None, compiler)
        with self.lock:
            if self.module is not None:
                return self.module
            if key in self.failures:
                return None
            try:
                self.module = _load_library(cache_dir, compiler)
                return self.module
            except Exception as exc:  # noqa: BLE001 - any failure means: fall back
                message = str(exc) if isinstance(exc, BuildError) else f"{type(exc).__name__}: {exc}"
                self.failures[key] = message
        warnings.warn(f"tfeed: native fetch op unavailable, using the Python engine: {message}",
                      NativeUnavailableWarning, stacklevel=3)
        return None


_LOADER = _Loader()


def load(cache_dir: Optional[os.PathLike] = None, compiler: str = "g++") -> Optional[ModuleType]:
    """The loaded op module (``tfeed_fetch``, ``tfeed_curl_version``), or None.

    Builds the op on first use into ``cache_dir`` (default
    ``~/.cache/tfeed/ops``) with ``compiler``.  Never raises: when the op
    cannot be built or loaded it emits one :class:`NativeUnavailableWarning`
    saying why (and how to fix it, typically ``apt-get install g++
    libcurl4-openssl-dev``) and returns None; later calls with the same
    arguments return None silently.  Once loaded, the same module is returned
    whatever the arguments (a process holds one copy of the op).
    """
    return _LOADER.load(cache_dir, compiler)


def available(cache_dir: Optional[os.PathLike] = None, compiler: str = "g++") -> bool:
    """Whether :func:`load` returns the op (building it if needed)."""
    return load(cache_dir, compiler) is not None


def _load_library(cache_dir, compiler) -> ModuleType:
    import tensorflow as tf

    path = _build.build(cache_dir, compiler=compiler)
    module = tf.load_op_library(str(path))
    try:
        module.tfeed_curl_version()  # opens libcurl: fails here, not mid-epoch
    except tf.errors.FailedPreconditionError as exc:
        raise BuildError(f"{exc.message}; install it: {INSTALL_HINT}", "libcurl") from None
    return module
