# SPDX-License-Identifier: MIT
"""The state directory, watched with watchdog (inotify); the main loop is woken through its pipe.

watchdog's threads read and sort the kernel's events; a handler that only looks at
names decides whether the state files may have changed, notes what it saw in a set
(``set.add``, like ``Wakeup.post``) and posts ``"files"``. Everything else happens in
the main loop's thread (``read``): moving the watch to a re-created directory,
restarting a failed observer, logging. No thread but the main one touches the loop's
state, and nothing polls while the observer runs.

Only finished writes count. A file is (re)loaded after ``IN_CLOSE_WRITE`` (a writer
closed it: ``FileClosedEvent``), a rename into, out of or within the directory (the
atomic way, see docs/OPERATIONS.md; the full emitter reports one without its other
half as a move from or to ``""``), ``IN_DELETE``, ``IN_ATTRIB`` (ownership or mode: a
file, or the directory itself, may have become insecure) or ``IN_CREATE`` of what is
complete when created (a symlink, a FIFO, a hard link: never written, so never
closed). A file opened with ``O_TRUNC`` and written in several steps sends
``IN_MODIFY`` for each; the watch does not even ask for those, so a half-written file
is not read while its writer still has it open.

Debouncing (``FileDebounce``): a load starts once the directory has been quiet for
``QUIET`` seconds, so a burst (``cp *.yaml``, an editor's rename dance) is read
once. A file closed less than ``SETTLE`` seconds ago that does not parse is given
until ``MAX_SETTLE`` before its errors are reported (a writer that closes and
reopens, ``echo a > f; echo b >> f``); either way nothing is applied from an
invalid file.

The directory itself may be renamed away, removed and re-created (``mv vnetd.d
vnetd.old; mkdir vnetd.d``): its parent is watched for its name, and the watch is
moved to the new directory, which is then loaded. A periodic ``check_identity`` (on
the slow resync timer) catches what the parent watch cannot see (the state directory
path being a symlink whose target is replaced).

Events lost (the kernel's queue overflowed, ``IN_Q_OVERFLOW``) mean a full re-read.
If one of watchdog's threads dies, or the handler fails, the failure is logged once
(``files.watch_failed``), the directory is read again, and a new observer is started,
after 1, 2, 4 ... ``RESTART_MAX`` seconds if it keeps failing; while none runs, the
loop lists the directory every ``FALLBACK_EVERY`` seconds and reloads when anything
in it changed (``files.watch_restarted`` when the watch is back).

Hidden files and editor or package-manager leftovers (``.x.swp``, ``x~``,
``x.dpkg-new``) never trigger anything.

Which parts of watchdog this relies on (pinned below 8 for them): ``BaseObserver``
(``schedule``/``unschedule``, the dispatch thread), ``InotifyFullEmitter`` with its
mask chosen by ``get_event_mask_from_filter`` and events built by
``build_and_queue_event`` (which drops ``IN_MOVE_SELF`` and ``IN_UNMOUNT``: mapped here
to a move or deletion of the watched directory), and ``InotifyFD``, whose
``handle_event`` is where an overflow arrives (watchdog itself only discards its
pending move pairs there and tells no handler).
"""

from __future__ import annotations

import logging
import os
import stat
import time
import traceback
from collections.abc import Callable
from typing import Any

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyFullEmitter
from watchdog.observers.inotify_c import InotifyConstants as IN
from watchdog.observers.inotify_c import InotifyEvent, InotifyFD, Mask
from watchdog.observers.inotify_move_event_grouper import GroupedInotifyEvent, PathedInotifyEvent

from vnetd import log as vlog
from vnetd.desired.loader import is_leftover, is_state_file

QUIET = 0.15
SETTLE = 1.0
MAX_SETTLE = 3.0
RESTART_FIRST, RESTART_MAX = 1.0, 60.0  # delays between restarts of an observer that keeps failing
FALLBACK_EVERY = 2.0  # while no observer runs: how often the directory is listed and compared
WAKE_REASON = "watch"  # what the watch posts to the main loop's Wakeup

#: what each watch asks the kernel for (the event classes are also watchdog's filter)
DIR_EVENTS: list[type[FileSystemEvent]] = [
    FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileMovedEvent, FileAttribEvent,
    DirAttribEvent, DirDeletedEvent, DirMovedEvent]
DIR_MASK = Mask(IN.IN_CLOSE_WRITE | IN.IN_MOVE | IN.IN_DELETE | IN.IN_ATTRIB | IN.IN_CREATE
                | IN.IN_DELETE_SELF | IN.IN_MOVE_SELF | IN.IN_ONLYDIR | IN.IN_EXCL_UNLINK)
PARENT_EVENTS: list[type[FileSystemEvent]] = [
    DirCreatedEvent, DirDeletedEvent, DirMovedEvent, FileCreatedEvent, FileDeletedEvent, FileMovedEvent]
PARENT_MASK = Mask(IN.IN_CREATE | IN.IN_MOVE | IN.IN_DELETE | IN.IN_DELETE_SELF | IN.IN_MOVE_SELF | IN.IN_ONLYDIR)
_MASKS = {frozenset(DIR_EVENTS): DIR_MASK, frozenset(PARENT_EVENTS): PARENT_MASK}

# watchdog logs through the standard library, which vnetd does not set up: its lines
# would reach stderr unstructured (the overflow it reports is logged here instead)
logging.getLogger("watchdog").addHandler(logging.NullHandler())
logging.getLogger("watchdog").propagate = False

Failed = Callable[[str, BaseException | None], None]


def _report_death(thread: Any, failed: Failed, run: Callable[[], None]) -> None:
    """Run a thread's loop; tell the watcher if it ends other than by being stopped."""
    try:
        run()
    except BaseException as exc:  # a dying thread is reported, whatever killed it
        failed(thread.name, exc)
        return
    if not thread.stopped_event.is_set():
        failed(thread.name, None)


class _InotifyFD(InotifyFD):
    """watchdog's inotify reader, telling vnetd of a queue overflow and of its own death."""

    def __init__(self, overflowed: Callable[[], None], failed: Failed) -> None:
        super().__init__()
        os.set_inheritable(self._inotify_fd, False)  # watchdog's inotify_init() leaves it open across exec
        self.name = "vnetd-inotify"
        self._overflowed = overflowed
        self._failed = failed
        self._resources_closed = False

    def handle_event(self, event: InotifyEvent) -> None:
        if event.is_queue_overflow:
            self._overflowed()
        super().handle_event(event)

    def run(self) -> None:
        try:
            super().run()
        except BaseException as exc:  # a dying thread is reported, whatever killed it
            with self._lock:  # watchdog's reading loop would have closed them: no descriptor left open
                self._is_reading = False
                if self._closed:
                    self._close_resources()
            self._failed(self.name, exc)
            return
        if not self.stopped_event.is_set():
            self._failed(self.name, None)

    def _close_resources(self) -> None:
        if not self._resources_closed:
            self._resources_closed = True
            super()._close_resources()


class _Emitter(InotifyFullEmitter):
    """Asks the kernel only for the events vnetd uses (no IN_OPEN/IN_MODIFY/IN_CLOSE_NOWRITE:
    every read of a file, vnetd's own included, would be an event), and reports the watched
    directory moving or its file system going away, which watchdog drops."""

    def __init__(self, *args: Any, failed: Failed, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = "vnetd-watch-emitter"
        self._failed = failed

    def get_event_mask_from_filter(self) -> Mask:
        return _MASKS[self.watch.event_filter or frozenset()]

    def build_and_queue_event(self, event: GroupedInotifyEvent, *, full_events: bool = True) -> None:
        if isinstance(event, PathedInotifyEvent) and event.path == os.fsencode(self.watch.path):
            path = self._decode_path(event.path)
            if event.ev.is_move_self:
                self.queue_event(DirMovedEvent(path, ""))
                return
            if event.ev.mask & IN.IN_UNMOUNT:
                self.queue_event(DirDeletedEvent(path))
                return
        super().build_and_queue_event(event, full_events=full_events)

    def run(self) -> None:
        _report_death(self, self._failed, super().run)


class _Observer(BaseObserver):
    """watchdog's inotify observer with the emitter and reader above (one inotify instance)."""

    inotify_class = _InotifyFD

    def __init__(self, overflowed: Callable[[], None], failed: Failed) -> None:
        self._inotify_fd = self.inotify_class(overflowed, failed)
        self._inotify_fd.start()
        super().__init__(_Emitter, inotify_fd=self._inotify_fd, failed=failed)
        self.name = "vnetd-watch"
        self._failed = failed

    def run(self) -> None:
        _report_death(self, self._failed, super().run)

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self._inotify_fd.stop()

    def close(self) -> None:
        """Stop every thread (also when the observer never started)."""
        if self.is_alive():
            self.stop()
            self.join(timeout=5)
        else:
            self.on_thread_stop()
        self._inotify_fd.join(timeout=5)


class _Handler(FileSystemEventHandler):
    """Runs on the observer's thread: sorts an event, notes it, wakes the loop. Never raises."""

    def __init__(self, watcher: StateDirWatcher, judge: Callable[[FileSystemEvent], str | None]) -> None:
        self.watcher = watcher
        self.judge = judge
        self.generation = watcher._generation

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            news = self.judge(event)
        except Exception as exc:  # a bug here must not silence the watch: re-read, restart
            self.watcher._failed(self.generation, "vnetd-watch-handler", exc)
            return
        if news is not None:
            self.watcher._note(news, self.generation)


class StateDirWatcher:
    """The state directory and its parent (to follow a re-created directory), watched by
    watchdog's threads; ``read`` (main loop) says whether the state files may have changed."""

    def __init__(self, path: str, post: Callable[[str], None],
                 observer_factory: Callable[..., Any] = _Observer) -> None:
        self.path = os.path.abspath(path)
        self.name = os.path.basename(self.path)
        self.parent = os.path.dirname(self.path)
        self.log = vlog.get_logger()
        self._post = post
        self._factory = observer_factory
        self._news: set[str] = set()  # filled by watchdog's threads (set.add), emptied by read (set.pop)
        self._failure: tuple[str, BaseException | None] | None = None
        self._generation = 0  # of the observer: what an observer already dropped reports is ignored
        self._started_at = 0.0
        self._observer: Any = None
        self._dir_watch: ObservedWatch | None = None
        self._parent_watch: ObservedWatch | None = None
        self._identity: tuple[int, int] | None = None
        self.failures = 0  # restarts in a row that did not bring a working observer back
        self.restart_at: float | None = None  # while failed: when the next restart is tried
        self.fallback_at: float | None = None  # while failed: when the directory is listed next
        self._listing: object = None
        if not self._start():  # the loop lists the directory until an observer can be started
            self._lost(time.monotonic())

    # -- watchdog's threads -------------------------------------------------------------

    def _note(self, news: str, generation: int) -> None:
        if generation != self._generation:
            return  # from an observer already stopped
        self._news.add(news)  # before the wake-up, as Wakeup.post does: never news without one
        self._post(WAKE_REASON)

    def _failed(self, generation: int, where: str, exc: BaseException | None) -> None:
        if generation == self._generation and self._failure is None:
            self._failure = (where, exc)
        self._note("failed", generation)

    def _dir_event(self, event: FileSystemEvent) -> str | None:
        src, dest = os.fsdecode(event.src_path), os.fsdecode(event.dest_path)
        if event.is_directory:
            if src != self.path:
                return None  # a subdirectory: never read
            # the directory itself: moved or removed (watch it again), or its mode or owner changed
            return "changed" if event.event_type == "attrib" else "rewatch"
        names = [os.path.basename(p) for p in (src, dest) if p and os.path.dirname(p) == self.path]
        names = [n for n in names if n and not is_leftover(n)]
        if not names:
            return None
        if isinstance(event, FileCreatedEvent):  # IN_CREATE (a rename in is a move from "")
            try:
                st = os.lstat(src)
            except OSError:
                return None
            # complete when created (never written, so never closed): a symlink, a FIFO or
            # other special file (refused when read), a hard link to an existing file
            return "changed" if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1 else None
        return "changed"

    def _parent_event(self, event: FileSystemEvent) -> str | None:
        paths = [os.fsdecode(p) for p in (event.src_path, event.dest_path) if p]
        if self.parent in paths:
            return "reparent"  # the parent itself moved or went away
        return "rewatch" if self.path in paths else None

    # -- the main loop's thread ---------------------------------------------------------

    def read(self, now: float | None = None) -> bool:
        """What watchdog's threads noted since the last call (after a ``WAKE_REASON`` wake-up,
        or when ``next_due`` came); True when the state files may have changed."""
        now = time.monotonic() if now is None else now
        news: set[str] = set()
        while True:
            try:
                news.add(self._news.pop())
            except KeyError:
                break
        changed = "changed" in news
        if "overflow" in news:
            self.log.info("files.events_lost", state_dir=self.path,
                          note="the kernel's inotify queue overflowed; reading every file again")
            changed = True
        if "failed" in news and self._observer is not None:
            self._lost(now)
            changed = True
        if self._observer is None:
            changed |= self._recover(now)
            return changed
        if "reparent" in news:
            self._schedule_parent()
        if news & {"rewatch", "reparent"}:
            self.rewatch(force=True)
            changed = True
        return changed

    def next_due(self) -> float | None:
        """When ``read`` must run without a wake-up (only while no observer runs)."""
        if self._observer is not None:
            return None
        times = [t for t in (self.restart_at, self.fallback_at) if t is not None]
        return min(times) if times else None

    def check_identity(self) -> bool:
        """The slow timer's check: True (and watched again) if the path names another
        directory, or the observer is gone (a thread that died without a word)."""
        if self._observer is not None and not self._healthy():
            self._failed(self._generation, "vnetd-watch", None)
            return self.read()
        return self.rewatch() if self._observer is not None else False

    def rewatch(self, force: bool = False) -> bool:
        """Watch whatever directory the path names now; True when that changed."""
        if self._observer is None:
            return False
        identity = _identity(self.path)
        if not force and identity == self._identity and (identity is None or self._dir_watch is not None):
            return False
        if self._dir_watch is not None:
            self._observer.unschedule(self._dir_watch)
            self._dir_watch = None
        self._identity = identity
        if identity is not None:
            self._dir_watch = self._schedule(self._dir_event, self.path, DIR_EVENTS)
            if self._dir_watch is None:
                self._identity = None
        return True

    def close(self) -> None:
        if self._observer is not None:
            self._observer.close()
            self._observer = None

    # -- starting, failing, restarting ---------------------------------------------------

    def _start(self) -> bool:
        """A new observer on the parent and the directory; False (noted) if that failed."""
        self._generation += 1
        self._failure = None
        self._news.discard("failed")
        self._started_at = time.monotonic()
        generation = self._generation
        try:
            self._observer = self._factory(lambda: self._note("overflow", generation),
                                           lambda where, exc: self._failed(generation, where, exc))
            self._parent_watch = self._dir_watch = None
            self._identity = None
            self._observer.start()
            self._schedule_parent()
            self.rewatch(force=True)
        except Exception as exc:  # no inotify instance left (EMFILE), a bug
            self._failure = self._failure or ("start", exc)
        if self._failure is not None:  # (also: a watch refused, or a thread dead already)
            self._stop_observer()
            return False
        return True

    def _schedule_parent(self) -> None:
        if self._parent_watch is not None:
            self._observer.unschedule(self._parent_watch)
            self._parent_watch = None
        self._parent_watch = self._schedule(self._parent_event, self.parent, PARENT_EVENTS)

    def _schedule(self, judge: Callable[[FileSystemEvent], str | None], path: str,
                  events: list[type[FileSystemEvent]]) -> ObservedWatch | None:
        """A watch, or None: the path is gone (replaced again meanwhile: the parent's watch or
        the slow timer tells), or no inotify watch is left (ENOSPC: the observer failed)."""
        try:
            watch: ObservedWatch = self._observer.schedule(_Handler(self, judge), path, event_filter=events,
                                                           follow_symlink=True)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            self._failed(self._generation, "vnetd-watch", exc)
            return None
        return watch

    def _healthy(self) -> bool:
        threads = [self._observer, self._observer._inotify_fd] if isinstance(self._observer, _Observer) \
            else [self._observer]
        return all(t.is_alive() for t in threads) and self._failure is None

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        self._dir_watch = self._parent_watch = None
        if observer is not None:
            try:
                observer.close()
            except Exception:  # noqa: S110 - a broken observer is dropped whatever it does
                pass

    def _lost(self, now: float) -> None:
        """The observer failed: log it once, drop it, restart it now or after a delay."""
        where, exc = self._failure or ("vnetd-watch", None)
        self._stop_observer()
        if now - self._started_at >= RESTART_MAX:
            self.failures = 0  # it had worked for a while: restart at once
        delay = 0.0 if self.failures == 0 else min(RESTART_FIRST * 2 ** (self.failures - 1), RESTART_MAX)
        self.log.error("files.watch_failed", state_dir=self.path, thread=where,
                       error=f"{type(exc).__name__}: {exc}" if exc else "the thread ended",
                       traceback="".join(traceback.format_exception(exc)) if exc else "",
                       restart_in_s=delay, fallback_every_s=FALLBACK_EVERY)
        self.failures += 1
        self.restart_at = now + delay
        self.fallback_at = now + FALLBACK_EVERY
        self._listing = _listing(self.path)

    def _recover(self, now: float) -> bool:
        """Without an observer: restart it when due; meanwhile compare the directory's listing."""
        changed = False
        if self.fallback_at is not None and now >= self.fallback_at:
            self.fallback_at = now + FALLBACK_EVERY
            listing = _listing(self.path)
            changed, self._listing = listing != self._listing, listing
        if self.restart_at is not None and now >= self.restart_at:
            if self._start():
                self.log.info("files.watch_restarted", state_dir=self.path, failures=self.failures)
                self.restart_at = self.fallback_at = None
                self._listing = None
                return True  # events between the failure and now are lost: read everything
            delay = min(RESTART_FIRST * 2 ** (self.failures - 1), RESTART_MAX)
            self.log.debug("files.watch_restart_failed", state_dir=self.path, error=self._failure_text(),
                           retry_in_s=delay)
            self.failures += 1
            self.restart_at = now + delay
        return changed

    def _failure_text(self) -> str:
        where, exc = self._failure or ("", None)
        return f"{where}: {type(exc).__name__}: {exc}" if exc else where


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _listing(path: str) -> object:
    """What a change of the directory changes (the fallback when nothing watches it): the
    directory's own identity, mode and owner, and each entry's kind, inode, size and times."""
    try:
        st = os.stat(path)
        entries = []
        with os.scandir(path) as it:
            for entry in it:
                try:
                    est = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                entries.append((entry.name, est.st_mode, est.st_ino, est.st_size, est.st_mtime_ns, est.st_ctime_ns,
                                est.st_nlink, est.st_uid, est.st_gid))
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, frozenset(entries))


class FileDebounce:
    """Turns a burst of changes into one load once the directory is quiet."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.due: float | None = None
        self.settle_started: float | None = None

    def touched(self, now: float) -> None:
        self.due = now + QUIET

    def ready(self, now: float) -> bool:
        return self.due is not None and now >= self.due

    def done(self) -> None:
        self.due = None

    def give_more_time(self, now: float) -> bool:
        """After a load that found invalid files: True (and a new load scheduled) when a
        state file was written within SETTLE seconds and MAX_SETTLE has not run out."""
        if not self.recently_written():
            self.settle_started = None
            return False
        self.settle_started = self.settle_started or now
        if now - self.settle_started >= MAX_SETTLE:
            self.settle_started = None
            return False
        self.due = now + QUIET
        return True

    def settled(self) -> None:
        self.settle_started = None

    def recently_written(self) -> bool:
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
