# SPDX-License-Identifier: MIT
"""Questions asked of the kernel in a throw-away network namespace.

``check`` learns what the kernel would refuse (rules of a table, link kinds) without
changing anything of the host: a forked child unshares a new network namespace (it
goes with the child), does the work there and writes its answer as JSON on a pipe;
the parent reads it with a deadline and a size bound, and kills a child that
overruns either. Every way out of the child is ``os._exit``: it never unwinds into
the parent's code.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import time
from collections.abc import Callable

CLONE_NEWNET = 0x40000000


def namespace_id() -> str:
    """This process's network namespace (device and inode): answers are kept per namespace."""
    st = os.stat("/proc/self/ns/net")
    return f"{st.st_dev}-{st.st_ino}"


def ask_in_new_namespace(work: Callable[[], object], what: str, timeout: float, max_reply: int) -> object:
    """``work()``'s JSON-able answer, computed in a new network namespace by a forked
    child, or a ``str`` saying why there is none (``what`` names the question)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(work, what, read_fd, write_fd)
    os.close(write_fd)
    try:
        return _read(read_fd, pid, what, timeout, max_reply)
    finally:
        os.close(read_fd)


def _child(work: Callable[[], object], what: str, read_fd: int, write_fd: int) -> None:
    """In the forked child: a new namespace, the work, the answer. Never returns."""
    status = 0
    try:
        os.close(read_fd)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            reply: object = f"cannot make a namespace for {what}: {os.strerror(ctypes.get_errno())}"
        else:
            reply = work()
        os.write(write_fd, json.dumps(reply).encode())
    except BaseException as exc:  # never unwind into the parent's code
        try:
            os.write(write_fd, json.dumps(f"{what} failed: {exc!r}").encode())
        except OSError:
            status = 1
    finally:
        os._exit(status)


def _read(fd: int, pid: int, what: str, timeout: float, max_reply: int) -> object:
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"{what} did not finish in time"
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        size += len(chunk)
        if size > max_reply:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"{what} answered too much"
        chunks.append(chunk)
    os.waitpid(pid, 0)
    try:
        reply: object = json.loads(b"".join(chunks) or json.dumps(f"no answer from {what}").encode())
    except ValueError:
        return f"{what} gave no readable answer"
    return reply
