# SPDX-License-Identifier: MIT
"""Wake-ups: any thread posts a reason; the main loop's select() sees the pipe."""

from __future__ import annotations

import os
import threading


class Wakeup:
    """A self-pipe and a set of pending reasons (coalesced: each reason once)."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._reasons: set[str] = set()

    def fileno(self) -> int:
        return self._r

    def post(self, reason: str) -> None:
        """Thread- and signal-safe enough: a set add under a lock, one byte to the pipe."""
        with self._lock:
            self._reasons.add(reason)
        try:
            os.write(self._w, b"!")
        except BlockingIOError:
            pass  # the pipe is full: the loop is already going to wake

    def take(self) -> set[str]:
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            reasons, self._reasons = self._reasons, set()
        return reasons

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)
