# SPDX-License-Identifier: MIT
"""structlog set-up: one event per line, JSON for machines, colour for terminals.

Event names are stable (``drift.detected``, ``action.applied``, ``reconcile.done``,
...) and values travel as fields, never baked into the message, so that
``jq 'select(.resource=="interface/br0")'`` works on the log.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, TextIO

import structlog

from vnetd.errors import VnetdError

LEVELS = ("debug", "info", "warning", "error")


class ReopeningFile:
    """A log file that follows logrotate: reopened when the path's inode changes.

    One ``stat`` per line is cheap at a daemon's logging rate and needs no signal
    (logrotate's default ``create`` mode renames the file and makes a new one).
    Opened as every file vnetd creates outside its state directory
    (``vnetd.safefiles``): never through a symlink, only in a directory only root
    can write. If a reopen is refused (a symlink planted at the path), lines go on
    to the file already open, and the reopen is tried again at most every
    ``RETRY_REOPEN`` seconds.
    """

    RETRY_REOPEN = 10.0

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = self._open()
        self._retry_at = 0.0

    def _open(self) -> TextIO:
        from vnetd.safefiles import open_private

        fd = open_private(self.path, "log file", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        return os.fdopen(fd, "a", buffering=1, encoding="utf-8")

    def fileno(self) -> int:
        return self._file.fileno()

    def _current(self) -> TextIO:
        try:
            st = os.stat(self.path, follow_symlinks=False)
            fst = os.fstat(self._file.fileno())
            if (st.st_ino, st.st_dev) == (fst.st_ino, fst.st_dev):
                return self._file
        except FileNotFoundError:
            pass
        now = time.monotonic()
        if now < self._retry_at:
            return self._file
        try:
            new = self._open()
        except VnetdError:
            self._retry_at = now + self.RETRY_REOPEN
            return self._file
        self._file.close()
        self._file = new
        return self._file

    def write(self, text: str) -> int:
        with self._lock:
            return self._current().write(text)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def isatty(self) -> bool:
        return False


def open_log_file(path: str) -> ReopeningFile:
    """``--log-file``: refused (StartupError) if it is a symlink or in a directory others can write."""
    return ReopeningFile(path)


def configure(fmt: str | None = None, level: str = "info", log_file: str | None = None,
              stream: Any = None) -> None:
    """Set up structlog for the process. ``fmt`` None: console on a terminal, else JSON."""
    out: Any = ReopeningFile(log_file) if log_file else (stream or sys.stderr)
    if fmt is None:
        fmt = "console" if hasattr(out, "isatty") and out.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty() and "NO_COLOR" not in os.environ)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    return structlog.get_logger("vnetd")
