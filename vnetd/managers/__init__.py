# SPDX-License-Identifier: MIT
"""One manager per resource kind, behind one typed seam (``managers.base.Manager``).

The engine (one pass) and the daemon (caches, events, health) only iterate
``Managers.all``: they never name a kind. Each manager owns its kind's backend,
caches and events (``net``: links, addresses, routes, route rules and guests'
taps; ``sysctl``; ``firewall``: generic over ``backends.firewall.FirewallBackend``,
with the backend selection; ``libvirt``). The order of ``all`` is the order in
which kinds are observed (the sysctl manager reads keys at the names the links
observed before it resolve to) and listed.

Managers are cheap to make: each opens its sockets and imports its libraries on
first use, so a command imports only what it uses.
"""

from __future__ import annotations

from typing import Any

from vnetd.managers.base import Manager
from vnetd.managers.firewall import FirewallManager
from vnetd.managers.libvirt import LibvirtManager
from vnetd.managers.net import NetManager
from vnetd.managers.sysctl import SysctlManager
from vnetd.plan.actions import Op


class Managers:
    """Every kind's manager. ``all`` is what generic code iterates; the named attributes
    are for the few places that do one kind's work on purpose (a checkpoint's records)."""

    def __init__(self, log: Any = None) -> None:
        if log is None:
            from vnetd.log import get_logger

            log = get_logger()
        self.net = NetManager(log)
        self.sysctl = SysctlManager()
        self.firewall = FirewallManager(log)
        self.libvirt = LibvirtManager(log)
        self.all: tuple[Manager, ...] = (self.net, self.sysctl, self.firewall, self.libvirt)

    def of(self, op: Op) -> Manager:
        """The manager that carries out ``op``."""
        for manager in self.all:
            if manager.handles(op):
                return manager
        raise LookupError(f"no manager handles {type(op).__name__}")

    def close(self) -> None:
        for manager in self.all:
            manager.close()


__all__ = ["Manager", "Managers"]
