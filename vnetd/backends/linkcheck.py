# SPDX-License-Identifier: MIT
"""Which virtual link kinds this kernel can create, asked of the kernel itself.

Bonds need the ``bonding`` module, VLANs ``8021q``, VXLANs ``vxlan``: a kernel
without one refuses the link with EOPNOTSUPP, and ``apply`` would fail for every
interface of that kind. ``check`` asks first, so the administrator learns it from
``check``: a forked child unshares a new network namespace (nothing of the host is
touched, the namespace goes with the child), tries to create one link of each kind
there, and reports the kinds the kernel refused. The kernel loads an installed
module itself on such a request, as it would for ``apply``. Without root the
question cannot be asked, and ``check`` says so.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal
import time
from collections.abc import Iterable

from vnetd.backends import rtnl

CLONE_NEWNET = 0x40000000
TIMEOUT = 10.0
#: link kind -> the module that provides it (what the message names)
MODULES = {"bond": "bonding", "vlan": "8021q", "vxlan": "vxlan", "bridge": "bridge", "veth": "veth"}

#: the answers of this process, per namespace: a kernel's link kinds do not change
_RESULTS: dict[tuple[str, tuple[str, ...]], frozenset[str]] = {}


def missing_kinds(kinds: Iterable[str]) -> frozenset[str] | str:
    """The kinds among ``kinds`` this kernel cannot create, or why that is not known."""
    wanted = tuple(sorted(set(kinds) & set(MODULES)))
    if not wanted:
        return frozenset()
    if os.geteuid() != 0:
        return "not root: whether this kernel has the modules for " + ", ".join(wanted) + " links was not checked"
    st = os.stat("/proc/self/ns/net")
    key = (f"{st.st_dev}-{st.st_ino}", wanted)
    if key in _RESULTS:
        return _RESULTS[key]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(wanted, read_fd, write_fd)
    os.close(write_fd)
    try:
        reply = _read(read_fd, pid)
    finally:
        os.close(read_fd)
    if isinstance(reply, str):
        return reply
    _RESULTS[key] = reply
    return reply


def _read(fd: int, pid: int) -> frozenset[str] | str:
    deadline = time.monotonic() + TIMEOUT
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "the check of the kernel's link kinds did not finish in time"
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk or len(data) > 4096:
            break
        data += chunk
    os.waitpid(pid, 0)
    try:
        reply = json.loads(data or b'"no answer from the check of the kernel\'s link kinds"')
    except ValueError:
        return "the check of the kernel's link kinds gave no readable answer"
    if isinstance(reply, str):
        return reply
    return frozenset(str(k) for k in reply)


def _child(kinds: tuple[str, ...], read_fd: int, write_fd: int) -> None:
    """In the forked child: a new namespace, one link of each kind, the refused kinds. Never returns."""
    status = 0
    try:
        os.close(read_fd)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            reply: object = f"cannot make a namespace to check the kernel's link kinds: " \
                            f"{os.strerror(ctypes.get_errno())}"
        else:
            sock = rtnl.RtnlSocket()
            sock.request(rtnl.link_create("probe0", "veth", veth_peer="probe1"))
            base = sock.get(rtnl.link_get("probe0"))
            index = rtnl.decode_link(*base).index if base is not None else 0
            refused = []
            for kind in kinds:
                if kind == "vlan":
                    request = rtnl.link_create("probe.5", "vlan", vlan_base=index, vlan_id=5)
                elif kind == "vxlan":
                    request = rtnl.link_create("probe-vx", "vxlan", data=rtnl.vxlan_data(5, port=4789))
                else:
                    request = rtnl.link_create(f"probe-{kind}", kind)
                if sock.request(request) in (errno.EOPNOTSUPP, errno.ENOENT):
                    refused.append(kind)
            reply = refused
        os.write(write_fd, json.dumps(reply).encode())
    except BaseException as exc:  # never unwind into the parent's code
        try:
            os.write(write_fd, json.dumps(f"the check of the kernel's link kinds failed: {exc!r}").encode())
        except OSError:
            status = 1
    finally:
        os._exit(status)
