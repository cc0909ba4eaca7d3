"""tfeed's native kernels: two TensorFlow op libraries, built on first use.

``tfeed_core_ops.so`` (:func:`load_core`, sources in ``core/``) holds the
pipeline's own kernels, which need TensorFlow only: ``tfeed_try_call`` and
``tfeed_keep_rows`` (``try_call.cc``), the delivery journal
``tfeed_journal_append`` / ``tfeed_journal_drain`` (``journal.cc``) and
``tfeed_affine_mirror``, the per-example colour-and-flip step of augmentation
recipes (``affine_mirror.cc``), ``tfeed_image_header``, an image's
format, size and EXIF orientation (``image_header_op.cc``), and
``tfeed_scale_plan`` / ``tfeed_orient``, the decode's scale and its turn
upright (``orient.cc``).

``tfeed_fetch_ops.so`` (:func:`load_fetch`, sources in ``fetch/``) holds the
native fetch engine: ``tfeed_fetch`` takes a vector of URLs and returns their
bodies, failure reasons, attempt counts and details; ``tfeed_fetch_pooled``
does the same for the calls of one iterator sharing their results;
``tfeed_cache_corrupt`` and ``tfeed_curl_version``.  A single process-wide
libcurl loop serves every call, so hundreds of requests are in flight while
no tf.data thread waits on the network.  Being graph ops, they also run where
``py_function`` cannot, e.g. on tf.data service workers.  Building it needs
libcurl's headers; without them only the fetch library is unavailable.

Importing this package builds nothing; the loaders compile a library on
first use (see :mod:`tfeed.kernels.build`) and return None, after one
warning, when that is impossible, so callers fall back (to the Python
engine, to graph ops)::

    from tfeed import kernels
    fetch_ops = kernels.load_fetch()
    if fetch_ops is not None:
        bodies, reasons, attempts, details = fetch_ops.tfeed_fetch(urls)
"""

from __future__ import annotations

import os
import threading
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple

if TYPE_CHECKING:
    from tfeed.kernels.build import BuildError

__all__ = ["load", "load_core", "load_fetch", "image_header_reader", "available", "NativeUnavailableWarning",
           "BuildError"]


def __getattr__(name):
    # tfeed.kernels.build is imported on first use, so `python -m tfeed.kernels.build` runs it fresh.
    if name == "BuildError":
        from tfeed.kernels.build import BuildError

        return BuildError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class NativeUnavailableWarning(RuntimeWarning):
    """A native op library could not be built or loaded; tfeed falls back
    (to the Python engine for fetching, to graph ops for the core kernels)."""


class _Loader:
    """One op library of this process (TensorFlow cannot unload one), and the
    failures already reported, so each is warned about once."""

    def __init__(self, library: str, what: str, fallback: str, check: Callable[[ModuleType], None]):
        self.library, self.what, self.fallback, self.check = library, what, fallback, check
        self.lock = threading.Lock()
        self.module: Optional[ModuleType] = None
        self.path: Optional[str] = None  # the loaded library's file
        self.failures: Dict[Tuple, str] = {}

    def load(self, cache_dir, compiler) -> Optional[ModuleType]:
        key = (str(cache_dir) if cache_dir is not None else None, compiler)
        with self.lock:
            if self.module is not None:
                return self.module
            if key in self.failures:
                return None
            try:
                self.module = self._load_library(cache_dir, compiler)
                return self.module
            except Exception as exc:  # noqa: BLE001 - any failure means: fall back
                from tfeed.kernels.build import BuildError

                message = str(exc) if isinstance(exc, BuildError) else f"{type(exc).__name__}: {exc}"
                self.failures[key] = message
        warnings.warn(f"tfeed: {self.what} unavailable, using {self.fallback}: {message}",
                      NativeUnavailableWarning, stacklevel=3)
        return None

    def _load_library(self, cache_dir, compiler) -> ModuleType:
        import tensorflow as tf

        from tfeed.kernels import build

        path = build.build(cache_dir, compiler=compiler, library=self.library)
        module = tf.load_op_library(str(path))
        self.check(module)
        self.path = str(path)
        return module


def _nothing_to_check(module: ModuleType) -> None:
    del module


def _opens_libcurl(module: ModuleType) -> None:
    """Opens libcurl now, so a missing libcurl fails here, not mid-epoch."""
    import tensorflow as tf

    from tfeed.kernels.build import INSTALL_HINT, BuildError

    try:
        module.tfeed_curl_version()
    except tf.errors.FailedPreconditionError as exc:
        raise BuildError(f"{exc.message}; install it: {INSTALL_HINT}", "libcurl") from None


_CORE = _Loader("core", "native kernels (tfeed_core_ops)", "graph ops", _nothing_to_check)
_FETCH = _Loader("fetch", "native fetch op", "the Python engine", _opens_libcurl)


def load_core(cache_dir: Optional[os.PathLike] = None, compiler: str = "g++") -> Optional[ModuleType]:
    """The pipeline's own kernels (``tfeed_try_call``, ``tfeed_keep_rows``,
    ``tfeed_journal_append``, ``tfeed_journal_drain``, ``tfeed_affine_mirror``,
    ``tfeed_image_header``, ``tfeed_scale_plan``, ``tfeed_orient``),
    whichever engine fetches; None (after one warning) when they cannot be
    built.  Needs a C++ compiler only, not libcurl."""
    return _CORE.load(cache_dir, compiler)


_header_reader: Optional[Callable[[bytes], Tuple[int, ...]]] = None


def image_header_reader() -> Optional[Callable[[bytes], Tuple[int, ...]]]:
    """``read(body) -> (format, height, width, orientation, alpha, animated)``: what
    ``tfeed_image_header`` returns, read through the core library's C entry point
    ``tfeed_image_header_fields`` (ctypes: 2 us per body, where an eager op call took
    ~60 us alone, and more of the calling thread's time with the GIL contended); None when
    the core kernels are unavailable."""
    global _header_reader
    if _header_reader is None and load_core() is not None:
        import ctypes

        function = ctypes.CDLL(_CORE.path).tfeed_image_header_fields
        function.argtypes = (ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int64))
        function.restype = None

        def read(body: bytes) -> Tuple[int, ...]:
            body = body if isinstance(body, bytes) else bytes(body)
            fields = (ctypes.c_int64 * 6)()
            function(body, len(body), fields)
            return tuple(fields)

        _header_reader = read
    return _header_reader


def load_fetch(cache_dir: Optional[os.PathLike] = None, compiler: str = "g++") -> Optional[ModuleType]:
    """The native fetch ops (``tfeed_fetch``, ``tfeed_fetch_pooled``,
    ``tfeed_cache_corrupt``, ``tfeed_curl_version``), or None.

    Builds the library on first use into ``cache_dir`` (default
    ``~/.cache/tfeed/ops``) with ``compiler``.  Never raises: when it cannot
    be built or loaded it emits one :class:`NativeUnavailableWarning` saying
    why (and how to fix it, typically ``apt-get install g++
    libcurl4-openssl-dev``) and returns None; later calls with the same
    arguments return None silently.  Once loaded, the same module is returned
    whatever the arguments (a process holds one copy of the op).
    """
    return _FETCH.load(cache_dir, compiler)


def load(cache_dir: Optional[os.PathLike] = None, compiler: str = "g++") -> Optional[ModuleType]:
    """:func:`load_fetch` (the fetch ops only; the core kernels come from :func:`load_core`)."""
    return _FETCH.load(cache_dir, compiler)


def available(cache_dir: Optional[os.PathLike] = None, compiler: str = "g++") -> bool:
    """Whether :func:`load_fetch` returns the fetch ops (building them if needed)."""
    return _FETCH.load(cache_dir, compiler) is not None
