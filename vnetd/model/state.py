# SPDX-License-Identifier: MIT
"""The whole desired state, as the loader produces it from the drop-in files."""

from __future__ import annotations

from dataclasses import dataclass, field

from vnetd.model.common import Origin
from vnetd.model.firewall import AUTO_BACKEND, ChainSpec
from vnetd.model.health import ProbeSpec
from vnetd.model.interfaces import Interface
from vnetd.model.libvirt import LibvirtSpec
from vnetd.model.route_rules import RouteRuleSpec
from vnetd.model.routes import RouteSpec
from vnetd.model.settings import DaemonSettings
from vnetd.model.sysctl import SysctlSpec


@dataclass(frozen=True, slots=True)
class DesiredState:
    interfaces: tuple[Interface, ...] = ()
    routes: tuple[RouteSpec, ...] = ()
    sysctls: tuple[SysctlSpec, ...] = ()
    chains: tuple[ChainSpec, ...] = ()
    libvirt: LibvirtSpec | None = None
    files: tuple[str, ...] = ()
    probes: tuple[ProbeSpec, ...] = ()
    route_rules: tuple[RouteRuleSpec, ...] = ()
    #: ``firewall.backend``: "auto" or a name of model.firewall.FIREWALL_BACKENDS, and where it is written
    firewall_backend: str = AUTO_BACKEND
    firewall_backend_at: Origin | None = None
    #: how `vnetd run` acts (the ``daemon:`` section); not network state
    daemon: DaemonSettings = field(default_factory=DaemonSettings)

    def interface(self, name: str) -> Interface | None:
        for iface in self.interfaces:
            if iface.name == name:
                return iface
        return None

    @property
    def managed_tables(self) -> tuple[str, ...]:
        return tuple(sorted({c.table for c in self.chains}))
