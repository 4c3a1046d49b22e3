# SPDX-License-Identifier: MIT
"""The state directory's watch (``vnetd.daemon.files``) on the real kernel's inotify, in a
temporary directory: what wakes the main loop (through the Wakeup pipe), an overflowed
event queue, and an observer whose thread dies or cannot be started at all."""

from __future__ import annotations

import errno
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from vnetd.daemon import files
from vnetd.daemon.wake import Wakeup

WAIT = 10.0  # a deadline for conditions, never a measured time


class Loop:
    """The main loop's part: select() on the Wakeup, then ``read`` what the watch noted."""

    def __init__(self, state: Path, factory: Callable[..., Any] = files._Observer) -> None:
        self.wake = Wakeup()
        self.watcher = files.StateDirWatcher(str(state), self.wake.post, observer_factory=factory)

    def changed_within(self, seconds: float) -> bool:
        """Whether a wake-up within ``seconds`` says the files may have changed."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.wake.fileno()], [], [], left)
            if readable and files.WAKE_REASON in self.wake.take() and self.watcher.read():
                return True
        return False

    def settle(self) -> None:
        """Take what earlier steps left (a file's create and close come apart)."""
        while self.changed_within(0.3):
            pass

    def close(self) -> None:
        self.watcher.close()
        self.wake.close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "vnetd.d"
    path.mkdir(mode=0o755)
    return path


@pytest.fixture
def loop(state: Path) -> Iterator[Loop]:
    loop = Loop(state)
    try:
        yield loop
    finally:
        loop.close()


def threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("vnetd-")}


def test_finished_writes_renames_removals_and_chmods_wake_the_loop_and_a_write_in_progress_does_not(
        state: Path, loop: Loop) -> None:
    f = os.open(state / "10-a.yaml", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(f, b"interfaces: []\n")
    assert not loop.changed_within(0.5)  # created and written, still open: not yet
    os.close(f)
    assert loop.changed_within(WAIT)  # closed by its writer
    loop.settle()
    (state / ".10-a.yaml.swp").write_text("x")
    (state / "10-a.yaml~").write_text("x")
    assert not loop.changed_within(0.5)  # leftovers never count
    os.rename(state / ".10-a.yaml.swp", state / "20-b.yaml")  # renamed into place
    assert loop.changed_within(WAIT)
    loop.settle()
    os.chmod(state / "20-b.yaml", 0o666)  # a file that became insecure
    assert loop.changed_within(WAIT)
    os.chmod(state, 0o777)  # the directory itself
    assert loop.changed_within(WAIT)
    os.unlink(state / "20-b.yaml")
    assert loop.changed_within(WAIT)
    os.symlink("/nonexistent", state / "30-link.yaml")  # complete when created
    assert loop.changed_within(WAIT)


def test_a_directory_removed_and_created_again_is_watched_again(state: Path, loop: Loop) -> None:
    os.rename(state, str(state) + ".old")
    assert loop.changed_within(WAIT)
    loop.settle()
    (Path(str(state) + ".old") / "10-old.yaml").write_text("x")
    assert not loop.changed_within(0.5)  # the directory renamed away is not the state directory
    state.mkdir()
    assert loop.changed_within(WAIT)
    (state / "10-new.yaml").write_text("x")
    assert loop.changed_within(WAIT)
    for name in os.listdir(state):
        os.unlink(state / name)
    loop.settle()
    state.rmdir()
    assert loop.changed_within(WAIT)
    state.mkdir()
    assert loop.changed_within(WAIT)
    (state / "10-again.yaml").write_text("x")
    assert loop.changed_within(WAIT)


def test_an_overflowed_inotify_queue_means_everything_is_read_again(state: Path) -> None:
    """The kernel's queue really overflows: the inotify reader is held while more events
    than ``max_queued_events`` happen, all on leftovers (which alone would change nothing)."""
    held = threading.Event()
    release = threading.Event()

    class HeldFD(files._InotifyFD):
        def handle_event(self, event: Any) -> None:
            held.set()
            release.wait(60)
            super().handle_event(event)

    class HeldObserver(files._Observer):
        inotify_class = HeldFD

    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    with capture_logs() as logs:
        loop = Loop(state, HeldObserver)
        try:
            names = [state / ".a.swp", state / ".b.swp"]
            for name in names:
                name.write_text("x")  # held on the first of these events
            assert held.wait(WAIT)
            for i in range(limit + 4096):  # alternating names: the kernel cannot coalesce them
                os.chmod(names[i % 2], 0o600 if i % 4 < 2 else 0o644)
            release.set()
            assert loop.changed_within(WAIT)
        finally:
            release.set()
            loop.close()
    assert [e["event"] for e in logs if e["event"].startswith("files.")] == ["files.events_lost"]


class FailingFD(files._InotifyFD):
    """An inotify reader that dies on its first event."""

    def handle_event(self, event: Any) -> None:
        raise RuntimeError("the reader broke")


class FailingObserver(files._Observer):
    inotify_class = FailingFD


@pytest.mark.parametrize("where", ["reader thread", "handler"])
def test_a_failing_observer_is_logged_once_restarted_and_everything_read_again(
        state: Path, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[files._Observer] = []

    def factory(*args: Any) -> files._Observer:
        observer = (FailingObserver if where == "reader thread" and not made else files._Observer)(*args)
        made.append(observer)
        return observer

    if where == "handler":
        real = files.StateDirWatcher._dir_event
        broken = iter([True])

        def dir_event(self: files.StateDirWatcher, event: Any) -> str | None:
            if next(broken, False):
                raise ValueError("the handler broke")
            return real(self, event)

        monkeypatch.setattr(files.StateDirWatcher, "_dir_event", dir_event)
    with capture_logs() as logs:
        loop = Loop(state, factory)
        try:
            (state / "10-a.yaml").write_text("x")
            assert loop.changed_within(WAIT)  # the failure: read everything again
            assert len(made) == 2 and loop.watcher.next_due() is None  # restarted at once
            loop.settle()
            (state / "20-b.yaml").write_text("x")
            assert loop.changed_within(WAIT)  # the new observer works
        finally:
            loop.close()
    events = [e for e in logs if e["event"].startswith("files.")]
    assert [e["event"] for e in events] == ["files.watch_failed", "files.watch_restarted"]
    assert ("RuntimeError: the reader broke" if where == "reader thread" else "ValueError: the handler broke") \
        in events[0]["error"]
    assert events[0]["traceback"]
    assert not made[0].is_alive() and not made[0]._inotify_fd.is_alive()  # the broken one is gone


def test_without_any_observer_the_directory_is_listed_until_one_starts(state: Path) -> None:
    refusals = iter([True, True, True])

    def factory(*args: Any) -> files._Observer:
        if next(refusals, False):
            raise OSError(errno.EMFILE, "inotify instance limit reached")
        return files._Observer(*args)

    with capture_logs() as logs:
        loop = Loop(state, factory)  # refused at start: the daemon starts anyway
        try:
            watcher = loop.watcher
            assert watcher.next_due() is not None and watcher.fallback_at is not None
            assert not watcher.read(watcher.fallback_at)  # listed: nothing changed (a restart refused)
            (state / "10-a.yaml").write_text("x")
            assert watcher.read(watcher.fallback_at)  # the listing changed (another restart refused)
            while (due := watcher.next_due()) is not None:  # retried after 1, 2 ... s: no waiting here
                watcher.read(due + files.RESTART_MAX)
            assert watcher.failures == 3 and threads() >= {"vnetd-watch", "vnetd-inotify"}
            (state / "20-b.yaml").write_text("x")
            assert loop.changed_within(WAIT)  # watched again
        finally:
            loop.close()
    names = [e["event"] for e in logs if e["event"].startswith("files.") and e["log_level"] != "debug"]
    assert names == ["files.watch_failed", "files.watch_restarted"]  # once each, however many retries


def test_closing_ends_every_thread_and_descriptor(state: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        loop = Loop(state)
        (state / "10-a.yaml").write_text("x")
        assert loop.changed_within(WAIT)
        loop.close()
        assert not threads()
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_watch_the_kernel_refuses_counts_as_a_failed_observer(state: Path) -> None:
    refusals = iter([True])

    class NoWatchLeft(files._Observer):
        def schedule(self, handler: Any, path: Any, **kwargs: Any) -> Any:
            if path == str(state) and next(refusals, False):
                raise OSError(errno.ENOSPC, "inotify watch limit reached")
            return super().schedule(handler, path, **kwargs)

    with capture_logs() as logs:
        loop = Loop(state, NoWatchLeft)
        try:
            watcher = loop.watcher
            due = watcher.next_due()
            assert due is not None  # not silently unwatched: failed, listed meanwhile
            assert watcher.read(due)  # restarted: everything read again
            assert watcher.next_due() is None
            (state / "10-a.yaml").write_text("x")
            assert loop.changed_within(WAIT)
        finally:
            loop.close()
    events = [e for e in logs if e["event"].startswith("files.")]
    assert [e["event"] for e in events] == ["files.watch_failed", "files.watch_restarted"]
    assert "inotify watch limit reached" in events[0]["error"]
