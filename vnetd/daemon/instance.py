# SPDX-License-Identifier: MIT
"""One vnetd per network namespace: a lock named after the namespace itself.

Two daemons on one namespace fight for ever (each prunes the other's rules when
their state directories differ) and, with the same ``--socket``, the second one
takes over and then deletes the first one's socket. A pidfile cannot prevent it:
its path is an option. The namespace is identified by what the kernel says it is,
the device and inode of ``/proc/self/ns/net`` after ``--netns`` was entered, so
``--netns NAME``, ``ip netns exec NAME vnetd run`` and a daemon started inside a
container all find the same lock.

The lock is an ``flock`` on ``RUN_DIR/netns-<dev>-<ino>.lock`` (``RUN_DIR`` is
``/run/vnetd``, created 0700 when missing, refused when someone other than root
could write it). The file holds the owner's pid, control socket and state
directory, so a second instance can say who holds it, and ``vnetd apply`` can find
the daemon of its namespace. The daemon removes the file when it stops (while
still holding the lock); a taker checks that the path still names the file it
locked, so a file removed in between is never mistaken for a free lock.
"""

from __future__ import annotations

import fcntl
import json
import os
from typing import Any

from vnetd.errors import StartupError
from vnetd.safefiles import open_private, private_directory

RUN_DIR = "/run/vnetd"


def namespace_id() -> tuple[int, int]:
    """(device, inode) of the calling thread's network namespace."""
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


def lock_path(run_dir: str = RUN_DIR) -> str:
    dev, ino = namespace_id()
    return os.path.join(run_dir, f"netns-{dev}-{ino}.lock")


def read_owner(path: str) -> dict[str, Any]:
    """What the lock file says about its owner ({} when unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return {}
    try:
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        owner = json.loads(data)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def running_daemon(run_dir: str = RUN_DIR) -> dict[str, Any] | None:
    """The daemon that holds this namespace's lock (its pid, socket, state directory), or None."""
    path = lock_path(run_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_owner(path) or {"pid": None}
    else:
        return None  # nobody holds it: a file left by a killed daemon
    finally:
        os.close(fd)


class InstanceLock:
    """Held for the life of the daemon; a second ``take`` in the same namespace refuses."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def take(cls, netns: str | None, run_dir: str = RUN_DIR) -> InstanceLock:
        private_directory(run_dir, "run directory")
        path = lock_path(run_dir)
        for _attempt in range(10):
            fd = open_private(path, "instance lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = read_owner(path)
                pid = owner.get("pid")
                where = f"network namespace {netns!r}" if netns else "this network namespace"
                who = f"pid {pid}" if pid else "another process"
                extra = "".join(f", {k} {owner[k]}" for k in ("socket", "state_dir") if owner.get(k))
                raise StartupError(f"another vnetd ({who}{extra}) already manages {where} (lock {path}); "
                                   "one vnetd per network namespace: stop it first") from None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return cls(fd, path)
            os.close(fd)  # removed by a daemon that was stopping: take the new file
        raise StartupError(f"cannot take the instance lock {path}: it keeps being replaced")

    def describe(self, **owner: Any) -> None:
        """Record who holds the lock (pid, socket, state directory)."""
        data = json.dumps(owner).encode() + b"\n"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        """Remove the file while still holding the lock, then let go of it."""
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
