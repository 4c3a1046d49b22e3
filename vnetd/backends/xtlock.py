# SPDX-License-Identifier: MIT
"""The xtables lock: the flock on /run/xtables.lock that ``iptables -w`` takes.

libiptc replaces a whole table at commit; two writers that read the table, modify
and commit at the same time lose one writer's change. Every tool that takes this
lock around read-modify-commit (iptables -w, libvirt, firewalld's legacy backend,
docker) is safe against vnetd, and vnetd against them. python-iptables does not
take it, so vnetd does.

How long to wait for it is the caller's choice: ``vnetd apply`` waits up to
``DEFAULT_TIMEOUT`` as ``iptables -w`` would; the daemon waits ``set_wait`` (one
second), because its single thread also repairs links while it waits. A lock not
obtained in time is a ``BackendError`` of the firewall resources being written
(the daemon retries them with back-off), never the end of a pass. The path is
``$XTABLES_LOCKFILE`` when set, as for iptables itself (the tests use their own).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from vnetd.errors import BackendError

DEFAULT_PATH = "/run/xtables.lock"
DEFAULT_TIMEOUT = 5.0
_wait = DEFAULT_TIMEOUT


def lock_path() -> str:
    return os.environ.get("XTABLES_LOCKFILE", DEFAULT_PATH)


def set_wait(seconds: float) -> None:
    """How long ``xtables_lock()`` waits by default in this process."""
    global _wait
    _wait = seconds


@contextmanager
def xtables_lock(timeout: float | None = None, path: str | None = None) -> Iterator[float]:
    """Hold the lock; yields how long it took to get it (seconds)."""
    path = path or lock_path()
    timeout = _wait if timeout is None else timeout
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise BackendError("xtables", "firewall", f"cannot open the xtables lock {path}: {exc.strerror}",
                           exc.errno) from exc
    start = time.monotonic()
    try:
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= timeout:
                    raise BackendError("xtables", "firewall", f"the xtables lock {path} was held by another "
                                       f"process for {timeout:g} s; not writing", errno.EAGAIN) from None
                time.sleep(min(delay, timeout - waited))
                delay = min(delay * 2, 0.05)
        yield time.monotonic() - start
    finally:
        os.close(fd)  # closing releases the flock
