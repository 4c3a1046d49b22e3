# SPDX-License-Identifier: MIT
"""Wake-ups: any thread or signal handler posts a reason; the main loop's select() sees the pipe.

Signal-safe by construction: ``post`` takes no lock. A Python signal handler runs
in the main thread between two bytecodes, possibly while the main thread is inside
``take``; with a lock shared by ``post`` and ``take`` that handler would wait for
a lock its own thread holds, forever. Instead:

* the pending reasons are a ``set``, changed only by ``set.add`` (``post``) and
  ``set.pop`` (``take``): each is one C call that neither a thread switch nor a
  Python signal handler can interrupt half-way (CPython runs handlers between
  bytecodes, and switches threads only there too);
* ``post`` adds its reason *before* writing one byte to the pipe, and ``take``
  empties the pipe *before* popping the reasons: a reason is therefore either
  taken now or its byte is still in the pipe and wakes the next ``select``. At
  worst a wake-up finds no reason (harmless), never a reason without a wake-up;
* a full pipe (64 KiB of unread bytes) loses nothing: the reason is in the set.
"""

from __future__ import annotations

import os
import signal


class Wakeup:
    """A self-pipe and a set of pending reasons (coalesced: each reason once)."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._reasons: set[str] = set()

    def fileno(self) -> int:
        return self._r

    def fds(self) -> tuple[int, int]:
        """Both ends of the pipe (kept open across daemonizing)."""
        return self._r, self._w

    def post(self, reason: str) -> None:
        """Safe from any thread and from signal handlers: no lock, one set.add, one write."""
        self._reasons.add(reason)
        try:
            os.write(self._w, b"!")
        except BlockingIOError:
            pass  # the pipe is full: the loop is going to wake anyway, and the reason is in the set

    def take(self) -> set[str]:
        """Every reason posted since the last call (the pipe is emptied first, see above)."""
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass
        reasons: set[str] = set()
        pending = self._reasons
        while True:
            try:
                reasons.add(pending.pop())
            except KeyError:
                return reasons

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


class SignalRelay:
    """SIGTERM/SIGINT (stop) and SIGHUP (reload) as flags and wake-ups.

    Installed before anything slow at start-up (imports, the first load): a signal
    that arrives while the daemon starts is handled like any other, instead of
    killing it with the default action. The handlers only set a flag and post.
    """

    def __init__(self, wake: Wakeup) -> None:
        self.wake = wake
        self.stop_requested = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._reload)

    def _stop(self, _signum: int, _frame: object) -> None:
        self.stop_requested = True
        self.wake.post("stop")

    def _reload(self, _signum: int, _frame: object) -> None:
        self.wake.post("reload")
