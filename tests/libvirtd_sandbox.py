# SPDX-License-Identifier: MIT
"""Exec a real libvirtd whose state lives in a private directory (stdlib only).

Run as ``ip netns exec NS python libvirtd_sandbox.py ROOT``: the process is already
in the test's network namespace; this script gives it a private mount namespace,
binds ROOT's sub-directories over libvirt's system paths (``/run/libvirt``,
``/etc/libvirt``, ``/var/lib/libvirt``, ``/var/cache/libvirt``,
``/var/log/libvirt``) and becomes libvirtd (``execv``: the pid stays the one the
test started, so the test stops it by that pid). Nothing libvirtd writes —
sockets, network definitions, dnsmasq files, autostart links — lands on the
host's own paths, and its socket is reachable from outside at
``ROOT/run-libvirt/libvirt-sock`` (``qemu:///system?socket=...``).

The mount points must exist: the test creates the missing ones (empty) and
removes them again. The bind mounts are made with mount(2) directly: the
``mount`` command would write ``/run/mount/utab`` on the host.
"""

from __future__ import annotations

import ctypes
import os
import sys

LIBVIRTD = "/usr/sbin/libvirtd"
CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
#: libvirt's system paths, each bound from ROOT/<name with dashes>
PATHS = ("/run/libvirt", "/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")


def private_dir(root: str, path: str) -> str:
    return os.path.join(root, path.strip("/").replace("/", "-"))


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SystemExit(f"libvirtd_sandbox: {what}: {os.strerror(err)}")


def main(root: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    for path in PATHS:
        source = private_dir(root, path)
        os.makedirs(source, exist_ok=True)
        if not os.path.isdir(path):
            raise SystemExit(f"libvirtd_sandbox: mount point {path} is missing")
        _check(libc.mount(source.encode(), path.encode(), None, MS_BIND, None), f"bind {source} on {path}")
    os.execv(LIBVIRTD, [LIBVIRTD, "--config", os.path.join(root, "libvirtd.conf"),
                        "--pid-file", os.path.join(root, "libvirtd.pid")])


if __name__ == "__main__":
    main(sys.argv[1])
