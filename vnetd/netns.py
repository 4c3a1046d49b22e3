# SPDX-License-Identifier: MIT
"""``--netns NAME``: move the whole process into a named network namespace.

The move happens once, in the main thread, before any other thread starts: new
threads inherit the namespace of the thread that creates them, so every socket
(netlink, libiptc's raw socket, libvirt's event thread) and every
``/proc/sys/net`` file opened afterwards belongs to NAME. The namespace must
exist; it is never created here (pyroute2's ``setns`` creates a missing one unless
told otherwise, and importing pyroute2 costs ~0.1 s and ~10 MB for one syscall).
"""

from __future__ import annotations

import ctypes
import os
import re
import threading

from vnetd.errors import NamespaceError

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}\Z")


def enter(name: str) -> None:
    if not _NAME.match(name) or name in (".", ".."):
        raise NamespaceError(f"{name!r} is not a network namespace name")
    path = os.path.join(NETNS_DIR, name)
    if threading.active_count() > 1:
        raise NamespaceError("internal: the namespace must be entered before any thread starts")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NamespaceError(f"network namespace {name!r} does not exist ({path}); "
                             f"create it with: ip netns add {name}") from None
    except OSError as exc:
        raise NamespaceError(f"cannot open network namespace {name!r}: {exc.strerror}") from exc
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NamespaceError(f"cannot enter network namespace {name!r}: {os.strerror(err)}")
    finally:
        os.close(fd)
