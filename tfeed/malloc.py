"""glibc's malloc thresholds while a tfeed pipeline runs.

TensorFlow's ``from_generator`` (tfeed's URL source) sets glibc's
``M_TRIM_THRESHOLD`` to 128 KB when it starts (it logs "Memory patch
applied"); setting it also freezes glibc's adaptive mmap threshold at its
128 KB start.  Every buffer over 128 KB (an image body, a decoded image) is
then a fresh ``mmap``, zeroed page by page by the kernel and unmapped when
freed: measured on the modern-web corpus of ``benchmarks/bench_decode.py``,
3.5 ms of CPU per image, 15% of the pipeline's.  :func:`restore_thresholds`
sets the values glibc's adaptive rule reaches by itself in a process that
frees MB-sized buffers (mmap threshold 32 MB, trim threshold twice that);
that benchmark's peak RSS rose from 0.92 to 1.24 GB (the full-decode
ceiling, without ``from_generator``, peaked at 1.6 GB).

A no-op where the C library has no ``mallopt`` (not glibc), or when the
environment variable ``TFEED_MALLOC_THRESHOLDS`` is ``0``.
"""

from __future__ import annotations

import ctypes
import os
import threading

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # what glibc's adaptive rule pairs with it

_lock = threading.Lock()
_mallopt = None


def restore_thresholds() -> bool:
    """Set glibc's mmap and trim thresholds as above (call it after
    TensorFlow's generator dataset has started: it sets its own then).
    Returns whether they were set."""
    global _mallopt
    if os.environ.get("TFEED_MALLOC_THRESHOLDS", "1") == "0":
        return False
    with _lock:
        if _mallopt is None:
            try:
                _mallopt = ctypes.CDLL(None).mallopt
                _mallopt.argtypes, _mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            except (OSError, AttributeError):
                _mallopt = False
        if not _mallopt:
            return False
        return bool(_mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(_mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
