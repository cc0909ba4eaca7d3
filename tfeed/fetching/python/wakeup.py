"""The Python engine's wake-up for paced and paused hosts: on time to a tenth of a millisecond.

asyncio's loop waits for its next timer in ``epoll_wait``, whose timeout counts whole
milliseconds, rounded up: ``loop.call_at(t, ...)`` runs up to 1 ms after ``t``.  A host
paced at one request per 5 ms (nginx ``limit_req`` 200 r/s) loses that lateness from
every slot, since a rate limiter does not let a late request's slack carry over.  The
native engine waits in ``epoll_pwait2`` with a nanosecond timeout for the same reason.

On Linux, :class:`Wakeup` is a ``timerfd`` on ``CLOCK_MONOTONIC`` (the clock of
``loop.time()``), armed at an absolute time and watched by the loop as a reader, so
the loop's ``epoll`` returns when it expires.  Elsewhere it is ``loop.call_at``.

Measured (``benchmarks/README.md``, "The Python engine's wake-ups"): 1,000 wake-ups 1-6 ms
ahead on an idle loop were 0.61-0.64 ms late at the median with ``call_at`` (p90 1.0 ms)
and 0.06-0.08 ms with the timerfd (p90 0.1 ms), never early; nginx ``limit_req`` 200 r/s,
the client on one core, three alternating runs: 170.0-172.8 -> 176.7-180.4 images/s in
the first epoch, with as many answers of 429.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import math
import os
import time
from typing import Callable, Optional

_TFD_NONBLOCK, _TFD_CLOEXEC, _TFD_TIMER_ABSTIME = 0o4000, 0o2000000, 1  # Linux's values (O_NONBLOCK, O_CLOEXEC)


class Wakeup:
    """Runs ``callback()`` on ``loop`` once ``loop.time()`` reaches the time last armed.

    Create, arm and close it on the loop's own thread.  Never early: the callback runs
    at or after ``when`` (the loop's clock, seconds).  One wake-up is pending at a time;
    :meth:`arm` moves it.  ``when`` is the pending time, or None.  The loop holds the
    wake-up and so ``callback``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]):
        self._loop, self._callback = loop, callback
        self.when: Optional[float] = None
        self._handle: Optional[asyncio.TimerHandle] = None
        # asyncio's own loops read time.monotonic(), which is CLOCK_MONOTONIC, the timerfd's clock
        self._timer = _Timerfd.open() if type(loop).time is asyncio.BaseEventLoop.time else None
        if self._timer is not None:
            loop.add_reader(self._timer.fd, self._expired)

    @property
    def precise(self) -> bool:
        """Whether a timerfd keeps the time (else asyncio's millisecond timers)."""
        return self._timer is not None

    def arm(self, when: float) -> None:
        """Wake at ``when`` (replacing the pending time, earlier or later)."""
        self.when = when
        if self._timer is not None:
            self._timer.set(max(1, math.ceil(when * 1e9)))
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(when, self._expired)

    def close(self) -> None:
        """Disarm and release the timer (idempotent)."""
        self.when = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._timer is not None:
            self._loop.remove_reader(self._timer.fd)
            self._timer.close()
            self._timer = None

    def _expired(self) -> None:
        if self._timer is not None and not self._timer.consume():
            return  # re-armed later after it had expired, before the loop read it
        self.when, self._handle = None, None
        self._callback()


class _Timerfd:
    """A non-blocking CLOCK_MONOTONIC timerfd, armed at absolute nanoseconds (through ctypes;
    Python 3.13's ``os.timerfd_create`` would do the same)."""

    def __init__(self, libc, fd: int):
        self._libc, self.fd = libc, fd

    @classmethod
    def open(cls) -> "Optional[_Timerfd]":
        """A timer, or None where the system has none (not Linux)."""
        libc = _libc()
        if libc is None:
            return None
        fd = libc.timerfd_create(time.CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        return cls(libc, fd) if fd >= 0 else None

    def set(self, ns: int) -> None:
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(*divmod(ns, 1_000_000_000)))
        if self._libc.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

    def consume(self) -> bool:
        """Read the expiry count; False when the timer has not expired since it was last set."""
        try:
            return len(os.read(self.fd, 8)) == 8
        except BlockingIOError:
            return False

    def close(self) -> None:
        os.close(self.fd)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


@functools.lru_cache(maxsize=1)
def _libc():
    """The C library with its timerfd functions declared, or None without them."""
    if not hasattr(time, "CLOCK_MONOTONIC"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes, libc.timerfd_create.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        libc.timerfd_settime.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc
