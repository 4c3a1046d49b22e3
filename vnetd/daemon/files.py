# SPDX-License-Identifier: MIT
"""The state directory, watched with watchdog (inotify): any change posts "files".

Debouncing is the loop's job (``FileDebounce``): a reload happens once the
directory has been quiet for ``QUIET`` seconds, so an editor's
write-to-temp-then-rename, or a file written in several chunks, is read once,
whole. A file modified less than ``SETTLE`` seconds ago that does not parse is
given a moment more before its errors are reported (it is probably still being
written); either way nothing is applied from an invalid file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from vnetd.desired.loader import is_state_file

QUIET = 0.15
SETTLE = 1.0


class StateDirWatcher:
    def __init__(self, path: str, post: Callable[[str], None]) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.path = path
        directory = os.path.realpath(path)

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return  # reads (vnetd's own included) change nothing
                paths = [event.src_path, getattr(event, "dest_path", "") or ""]
                if any(p and (os.path.dirname(p) == directory or p == directory) for p in paths):
                    post("files")

        self._observer = Observer()
        self._observer.daemon = True
        self._observer.schedule(Handler(), directory, recursive=False)

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)


class FileDebounce:
    """Turns a burst of "files" wake-ups into one reload once the directory is quiet."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.due: float | None = None

    def touched(self, now: float) -> None:
        self.due = now + QUIET

    def ready(self, now: float) -> bool:
        return self.due is not None and now >= self.due

    def done(self) -> None:
        self.due = None

    def recently_written(self, now: float) -> bool:
        """Whether a state file changed within SETTLE seconds (it may be half-written)."""
        try:
            names = [n for n in os.listdir(self.path) if is_state_file(n)]
        except OSError:
            return False
        wall = time.time()
        for name in names:
            try:
                if wall - os.stat(os.path.join(self.path, name)).st_mtime < SETTLE:
                    return True
            except OSError:
                continue
        return False
