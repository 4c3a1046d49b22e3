# SPDX-License-Identifier: MIT
"""What the kernel has (links, addresses, routes), indexed for the planner.

The CLI fills one from a dump; the daemon keeps one up to date from netlink
notifications (``apply_*`` below), re-filling it from a dump on overruns and on the
slow periodic resync. Either way the planner reads the same structure.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from vnetd.model.interfaces import Address, Link
from vnetd.model.routes import Route


@dataclass
class NetState:
    links: dict[int, Link] = field(default_factory=dict)
    names: dict[str, int] = field(default_factory=dict)
    addresses: dict[int, set[Address]] = field(default_factory=dict)
    routes: set[Route] = field(default_factory=set)

    @classmethod
    def build(cls, links: Iterable[Link], addresses: Iterable[Address], routes: Iterable[Route]) -> NetState:
        state = cls()
        for link in links:
            state.put_link(link)
        for addr in addresses:
            state.put_address(addr)
        state.routes = set(routes)
        return state

    # -- lookups ------------------------------------------------------------------

    def link(self, name: str) -> Link | None:
        index = self.names.get(name)
        return self.links.get(index) if index is not None else None

    def name_of(self, index: int | None) -> str | None:
        link = self.links.get(index) if index is not None else None
        return link.name if link is not None else None

    def addresses_of(self, index: int) -> set[Address]:
        return self.addresses.get(index, set())

    def ports_of(self, index: int) -> Iterator[Link]:
        return (link for link in self.links.values() if link.master == index)

    # -- updates (dump results and notifications) ----------------------------------

    def put_link(self, link: Link) -> None:
        old = self.links.get(link.index)
        if old is not None and old.name != link.name and self.names.get(old.name) == link.index:
            del self.names[old.name]
        self.links[link.index] = link
        self.names[link.name] = link.index

    def drop_link(self, index: int) -> None:
        old = self.links.pop(index, None)
        if old is not None and self.names.get(old.name) == index:
            del self.names[old.name]
        self.addresses.pop(index, None)
        self.routes = {r for r in self.routes if r.oif != index}

    def put_address(self, addr: Address) -> None:
        self.addresses.setdefault(addr.index, set()).add(addr)

    def drop_address(self, addr: Address) -> None:
        known = self.addresses.get(addr.index)
        if known is not None:
            known.discard(addr)

    def put_route(self, route: Route) -> None:
        self.routes.add(route)

    def drop_route(self, route: Route) -> None:
        self.routes.discard(route)
