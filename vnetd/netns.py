# SPDX-License-Identifier: MIT
"""``--netns NAME``: move the whole process into a named network namespace.

The move happens once, in the main thread, before any other thread starts: new
threads inherit the namespace of the thread that creates them, so every socket
(netlink, libiptc's raw socket, libvirt's event thread) and every
``/proc/sys/net`` file opened afterwards belongs to NAME. The namespace must
exist: pyroute2 creates missing ones unless told not to (``flags=0``).
"""

from __future__ import annotations

import os
import re
import threading

from vnetd.errors import NamespaceError

NETNS_DIR = "/run/netns"
_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")


def enter(name: str) -> None:
    if not _NAME.match(name) or name in (".", ".."):
        raise NamespaceError(f"{name!r} is not a network namespace name")
    path = os.path.join(NETNS_DIR, name)
    if not os.path.exists(path):
        raise NamespaceError(f"network namespace {name!r} does not exist ({path}); create it with: ip netns add {name}")
    if threading.active_count() > 1:
        raise NamespaceError("internal: the namespace must be entered before any thread starts")
    from pyroute2 import netns  # the library's setns, without its create-on-missing default

    try:
        netns.setns(path, flags=0)
    except OSError as exc:
        raise NamespaceError(f"cannot enter network namespace {name!r}: {exc.strerror or exc}") from exc
