"""The Python engine's event loop thread in the scheduler: the native loop's rule.

The loop thread runs ``SCHED_FIFO`` at the lowest real-time priority where the
process may (``CAP_SYS_NICE``, or ``RLIMIT_RTPRIO`` >= 1), so a response wakes
it at once instead of leaving it queued behind the decode threads; once per
``LOOP_CHECK_PERIOD_S`` it reads its own CPU time and, above
``LOOP_MAX_REALTIME_SHARE`` of a core, runs as a fair thread for the next
period (the rule and its constants: :mod:`tfeed.contract`; the native twin:
``kernels/fetch/loop_priority.cc``).  ``TFEED_LOOP_REALTIME=0`` leaves real
time out.  Unlike the native loop it does not ask for short fair slices
(Python has no ``sched_setattr``).

Measured with the origin zoo (``bench_origins.py --split-cores``, the client
on one core), first epochs as a fair thread and at ``SCHED_FIFO``: an origin
that sheds above 16 open requests with 503 + ``Retry-After`` (100 ms per
request) 114.2 and 129.1 images/s (a 32-thread pool: 138); nginx
``limit_req`` 200 r/s 147.2 and 174.0; ``python -m http.server`` 620 and 635.
"""

from __future__ import annotations

import asyncio
import os
import time

from tfeed import contract


class LoopPriority:
    """Call :meth:`begin` on the loop's own thread, before ``run_forever``."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self.realtime = False  # the thread runs SCHED_FIFO now
        self._cpu_at_check = 0.0
        self._checked_at = 0.0

    def begin(self) -> None:
        if os.environ.get(contract.LOOP_REALTIME_SWITCH) == "0" or not _enter_realtime():
            return
        self.realtime = True
        self._cpu_at_check, self._checked_at = time.thread_time(), time.monotonic()
        self._loop.call_later(contract.LOOP_CHECK_PERIOD_S, self._check)

    def _check(self) -> None:
        now, cpu = time.monotonic(), time.thread_time()
        hot = cpu - self._cpu_at_check > contract.LOOP_MAX_REALTIME_SHARE * (now - self._checked_at)
        self._cpu_at_check, self._checked_at = cpu, now
        if hot and self.realtime:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            self.realtime = False
        elif not hot and not self.realtime:
            self.realtime = _enter_realtime()
        self._loop.call_later(contract.LOOP_CHECK_PERIOD_S, self._check)


def _enter_realtime() -> bool:
    """Switch the calling thread to SCHED_FIFO at the lowest priority; False where not allowed."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(os.sched_get_priority_min(os.SCHED_FIFO)))
    except (OSError, AttributeError):  # no privilege, or no such call on this platform
        return False
    return True
