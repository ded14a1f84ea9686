"""A CLOCK_MONOTONIC timerfd for the userspace shaper's event loop (microsecond wake-ups).

Python 3.11 has no os.timerfd_*, and epoll's own timeout is rounded up to whole milliseconds,
which alone would cost up to 1 ms of delay error. An absolute-time timerfd registered in the
same epoll wakes the loop within tens of microseconds of a deadline. Owns only that fd.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from netem.errors import UnsupportedError

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class MonotonicTimer:
    """One-shot timer on CLOCK_MONOTONIC (the clock of time.monotonic_ns) as a pollable fd."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [
            ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p,
        ]
        self._settime.restype = ctypes.c_int
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise UnsupportedError(f"timerfd_create failed: {os.strerror(err)}")
        self.fd: int = fd
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        self.armed_ns: int | None = None

    def arm(self, deadline_ns: int) -> None:
        """Fire at monotonic time `deadline_ns` (immediately if it has passed)."""
        if deadline_ns == self.armed_ns:
            return
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(max(deadline_ns, 1), 1_000_000_000)
        if self._settime(self.fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
            err = ctypes.get_errno()
            raise UnsupportedError(f"timerfd_settime failed: {os.strerror(err)}")
        self.armed_ns = deadline_ns

    def disarm(self) -> None:
        """Stop the timer (a zero it_value disarms)."""
        if self.armed_ns is None:
            return
        value = self._spec.it_value
        value.tv_sec = value.tv_nsec = 0
        self._settime(self.fd, 0, self._spec_ref, None)
        self.armed_ns = None

    def consume(self) -> None:
        """Clear the fd's readiness after it fired."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass
        self.armed_ns = None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
