# SPDX-License-Identifier: MIT
"""The state directory, watched with inotify from the main loop's ``select()``.

Only finished writes count. A file is (re)loaded after ``IN_CLOSE_WRITE`` (a writer
closed it), ``IN_MOVED_TO`` (renamed into place: the atomic way, see
docs/OPERATIONS.md), ``IN_MOVED_FROM``/``IN_DELETE`` (gone), ``IN_ATTRIB``
(ownership or mode: a file may have become insecure) or ``IN_CREATE`` of what is
complete when created (a symlink, a FIFO, a hard link: never written, so never
closed). A file opened with ``O_TRUNC`` and
written in several steps sends ``IN_MODIFY`` for each; none of them triggers a load,
so a half-written file is not read while its writer still has it open.

Debouncing (``FileDebounce``): a load starts once the directory has been quiet for
``QUIET`` seconds, so a burst (``cp *.yaml``, an editor's rename dance) is read
once. A file closed less than ``SETTLE`` seconds ago that does not parse is given
until ``MAX_SETTLE`` before its errors are reported (a writer that closes and
reopens, ``echo a > f; echo b >> f``); either way nothing is applied from an
invalid file.

The directory itself may be renamed away and re-created (``mv vnetd.d vnetd.old;
mkdir vnetd.d``): its parent is watched for its name, and the watch is moved to the
new directory, which is then loaded. A periodic ``check_identity`` (on the slow
resync timer) catches what the parent watch cannot see (the state directory path
being a symlink whose target is replaced).

Hidden files and editor or package-manager leftovers (``.x.swp``, ``x~``,
``x.dpkg-new``) never trigger anything.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import time

from vnetd.desired.loader import is_leftover, is_state_file

QUIET = 0.15
SETTLE = 1.0
MAX_SETTLE = 3.0

IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

DIR_EVENTS = (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ATTRIB | IN_CREATE
              | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)
PARENT_EVENTS = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ONLYDIR
_HEADER = struct.Struct("iIII")


class StateDirWatcher:
    """inotify on the state directory and on its parent (to follow a re-created directory)."""

    def __init__(self, path: str) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd
        self.path = os.path.abspath(path)
        self.name = os.path.basename(self.path)
        self._dir_wd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._parent_wd = self._add(os.path.dirname(self.path), PARENT_EVENTS)
        self.rewatch()

    def fileno(self) -> int:
        return self.fd

    def _add(self, path: str, mask: int) -> int | None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        return wd if wd >= 0 else None

    def rewatch(self, force: bool = False) -> bool:
        """Watch whatever directory the path names now; True when that changed."""
        if force and self._dir_wd is not None:
            self._libc.inotify_rm_watch(self.fd, self._dir_wd)
            self._dir_wd = None
            self._identity = None
        try:
            st = os.stat(self.path)
            identity: tuple[int, int] | None = (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
        except OSError:
            identity = None
        if identity == self._identity and (identity is None or self._dir_wd is not None):
            return False
        self._identity = identity
        self._dir_wd = self._add(self.path, DIR_EVENTS) if identity is not None else None
        return True

    def check_identity(self) -> bool:
        """The slow timer's check: True (and watched again) if the path names another directory."""
        return self.rewatch()

    def read(self) -> bool:
        """Consume pending events; True when the state files may have changed."""
        changed = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return changed
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not data:
                return changed
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                raw = data[offset + _HEADER.size: offset + _HEADER.size + length]
                offset += _HEADER.size + length
                name = os.fsdecode(raw.split(b"\0", 1)[0])
                changed |= self._event(wd, mask, name)

    def _event(self, wd: int, mask: int, name: str) -> bool:
        if mask & IN_Q_OVERFLOW:
            return True  # events were lost: read everything again
        if wd == self._parent_wd:
            if name != self.name:
                return False
            self.rewatch(force=True)  # the state directory was renamed, removed or (re-)created
            return True
        if wd != self._dir_wd:
            return False  # a watch already replaced
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
            self._dir_wd = None
            self._identity = None
            self.rewatch()
            return True
        if not name or is_leftover(name):
            return False
        if mask & IN_ISDIR:
            return False
        if mask & IN_CREATE:  # a regular file is loaded when its writer closes it
            try:
                st = os.lstat(os.path.join(self.path, name))
            except OSError:
                return False
            # complete when created (never written, so never closed): a symlink, a FIFO or
            # other special file (refused when read), a hard link to an existing file
            return not stat.S_ISREG(st.st_mode) or st.st_nlink > 1
        return bool(mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ATTRIB))

    def close(self) -> None:
        os.close(self.fd)


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
