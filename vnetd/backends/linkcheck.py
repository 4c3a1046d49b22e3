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

import errno
import os
from collections.abc import Iterable

from vnetd.backends import rtnl
from vnetd.backends.childcheck import ask_in_new_namespace, namespace_id

TIMEOUT = 10.0
MAX_REPLY = 4096
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
    key = (namespace_id(), wanted)
    if key in _RESULTS:
        return _RESULTS[key]
    reply = ask_in_new_namespace(lambda: _refused(wanted), "the check of the kernel's link kinds", TIMEOUT,
                                 MAX_REPLY)
    if isinstance(reply, str):
        return reply
    assert isinstance(reply, list)
    _RESULTS[key] = frozenset(str(k) for k in reply)
    return _RESULTS[key]


def _refused(kinds: tuple[str, ...]) -> list[str]:
    """In the child, in its own namespace: one link of each kind; the kinds the kernel refused."""
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
    return refused
