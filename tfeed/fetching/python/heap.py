"""The Python engine keeps CPython's full garbage collections off the objects that were there before.

Every request of the Python engine allocates Python objects (aiohttp's parser,
stream, timers, our bookkeeping) that live for the request's round trip, so
young-generation collections find them alive and promote them.  Those
promotions trigger a full collection every ~1,500 images, and a full
collection walks the whole heap (TensorFlow and Keras bring ~420,000 objects)
while holding the GIL: 0.2 s each on 2 cores, a stall of the fetch loop and
of every pipeline thread.  The engine creates no cyclic garbage (an epoch of
2,000 images left none for the collector), so these walks find nothing.

While requests are in flight, :class:`HeapHold` keeps the objects that
existed before they started in CPython's permanent generation
(:func:`gc.freeze`), so collections walk only what the downloads allocate;
when the last request of every engine in the process has finished, the objects
go back (:func:`gc.unfreeze`) and the collector treats them as before.  A
cycle of those objects that becomes garbage meanwhile is collected after the
downloads pause, not lost.  Measured (``benchmarks/README.md``, "Full
collections in the Python engine"): no full collection over 0.02 s during an
epoch; first epochs against ``python -m http.server`` 721-746 -> 838-846
images/s, against 16 hosts at 100 ms 431-436 -> 480-492.

Nothing is frozen when the process froze objects itself (the application's
own :func:`gc.freeze` is left alone), when the collector is disabled, or with
``TFEED_GC_FREEZE=0`` in the environment.
"""

from __future__ import annotations

import gc
import os
import threading

SWITCH = "TFEED_GC_FREEZE"  # "0": never freeze

_lock = threading.Lock()
_holders = 0     # engines with requests in flight
_frozen = False  # this module froze the heap (and so unfreezes it)


class HeapHold:
    """One engine's share of the process-wide hold; :meth:`set` from any thread."""

    def __init__(self):
        self._held = False

    def set(self, busy: bool) -> None:
        """``busy``: the engine has requests in flight.  Cheap when unchanged."""
        if busy == self._held:
            return
        global _holders, _frozen
        with _lock:
            if busy == self._held:  # another thread (the engine's shutdown) got here first
                return
            self._held = busy
            _holders += 1 if busy else -1
            if busy and _holders == 1 and not _frozen and _may_freeze():
                gc.freeze()
                _frozen = True
            elif not busy and _holders == 0 and _frozen:
                gc.unfreeze()
                _frozen = False


def _may_freeze() -> bool:
    return os.environ.get(SWITCH) != "0" and gc.isenabled() and gc.get_freeze_count() == 0
