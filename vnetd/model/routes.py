# SPDX-License-Identifier: MIT
"""Routes: nmstate ``routes.config`` entries and kernel routes."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from vnetd.model.common import Origin

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

MAIN_TABLE = 254
#: rtm_protocol of the routes the kernel adds for an address (RTPROT_KERNEL)
KERNEL_ROUTE_PROTOCOL = 2


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One desired route. ``None`` fields are not part of the match (nmstate semantics).

    For ``absent`` routes every written field must match for a kernel route to be
    removed; for present routes ``metric`` and ``table`` default to the kernel's
    defaults (0 for IPv4, 1024 for IPv6; main table) when the route is created.
    """

    destination: IpNetwork
    next_hop_address: IpAddr | None = None
    next_hop_interface: str | None = None
    metric: int | None = None
    table: int | None = None
    absent: bool = False
    origin: Origin | None = field(default=None, compare=False)

    @property
    def family(self) -> int:
        return self.destination.version

    @property
    def table_id(self) -> int:
        return self.table if self.table is not None else MAIN_TABLE

    @property
    def resource(self) -> str:
        via = f" via {self.next_hop_address}" if self.next_hop_address else ""
        dev = f" dev {self.next_hop_interface}" if self.next_hop_interface else ""
        table = f" table {self.table}" if self.table not in (None, MAIN_TABLE) else ""
        return f"route/{self.destination}{via}{dev}{table}"

    def key(self) -> tuple[object, ...]:
        """Identity for duplicate detection between files."""
        return (self.destination, self.next_hop_address, self.next_hop_interface,
                self.metric, self.table_id, self.absent)


@dataclass(frozen=True, slots=True)
class Route:
    """A kernel route (RTM_NEWROUTE), unicast routes only."""

    destination: IpNetwork
    table: int
    oif: int | None
    gateway: IpAddr | None
    priority: int
    protocol: int
    scope: int
    type: int = 1

    @property
    def family(self) -> int:
        return self.destination.version
