# SPDX-License-Identifier: MIT
"""What the kernel has (links, addresses, routes, policy routing rules), indexed for the planner.

The CLI fills one from a dump; the daemon keeps one up to date from netlink
notifications (``apply_*`` below), re-filling it from a dump on overruns and on the
slow periodic resync. Either way the planner reads the same structure.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from vnetd.model.interfaces import Address, Link
from vnetd.model.route_rules import RouteRule
from vnetd.model.routes import Route


@dataclass
class NetState:
    links: dict[int, Link] = field(default_factory=dict)
    names: dict[str, int] = field(default_factory=dict)
    addresses: dict[int, set[Address]] = field(default_factory=dict)
    routes: set[Route] = field(default_factory=set)
    #: the kernel's rules (``ip rule``), as a multiset: the kernel holds identical rules
    #: added without NLM_F_EXCL as many times as they were added
    rules: collections.Counter[RouteRule] = field(default_factory=collections.Counter)
    #: bumped on every change of content (not on a notification that changes nothing)
    version: int = 0
    #: (version, link name) of recent changes to a link or its addresses (see plan.planner)
    log: collections.deque[tuple[int, str]] = field(default_factory=lambda: collections.deque(maxlen=4096))
    _token: tuple[int, object] | None = field(default=None, repr=False, compare=False)

    def version_token(self) -> object:
        """An object that stays the same (identical) while the content does (see PlanMemo)."""
        if self._token is None or self._token[0] != self.version:
            self._token = (self.version, object())
        return self._token[1]

    @classmethod
    def build(cls, links: Iterable[Link], addresses: Iterable[Address], routes: Iterable[Route],
              rules: Iterable[RouteRule] = ()) -> NetState:
        state = cls()
        for link in links:
            state.put_link(link)
        for addr in addresses:
            state.put_address(addr)
        state.routes = set(routes)
        state.rules = collections.Counter(rules)
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

    def _touch(self, name: str) -> None:
        self.version += 1
        self.log.append((self.version, name))

    def changed_since(self, version: int) -> set[str] | None:
        """Names of links changed after ``version``; None if that is too long ago to tell."""
        if version == self.version:
            return set()
        if not self.log or self.log[0][0] > version + 1:
            return None
        return {name for v, name in self.log if v > version}

    def _touch_index(self, index: int) -> None:
        link = self.links.get(index)
        if link is not None:
            self._touch(link.name)
        else:
            self.version += 1

    def put_link(self, link: Link) -> None:
        old = self.links.get(link.index)
        if old == link:
            return
        if old is not None and old.name != link.name:
            if self.names.get(old.name) == link.index:
                del self.names[old.name]
            self._touch(old.name)
            for port in self.ports_of(link.index):
                self._touch(port.name)  # its master, by name, is another one now (a renamed bridge)
        self.links[link.index] = link
        self.names[link.name] = link.index
        self._touch(link.name)

    def drop_link(self, index: int) -> None:
        old = self.links.pop(index, None)
        if old is None:
            return
        if self.names.get(old.name) == index:
            del self.names[old.name]
        self.addresses.pop(index, None)
        self.routes = {r for r in self.routes if r.oif != index}
        self._touch(old.name)

    def put_address(self, addr: Address) -> None:
        known = self.addresses.setdefault(addr.index, set())
        if addr not in known:
            known.add(addr)
            self._touch_index(addr.index)

    def drop_address(self, addr: Address) -> None:
        known = self.addresses.get(addr.index)
        if known is not None and addr in known:
            known.discard(addr)
            self._touch_index(addr.index)

    def put_route(self, route: Route) -> None:
        if route not in self.routes:
            self.routes.add(route)
            self.version += 1

    def drop_route(self, route: Route) -> None:
        if route in self.routes:
            self.routes.discard(route)
            self.version += 1

    def put_rule(self, rule: RouteRule) -> None:
        self.rules[rule] += 1
        self.version += 1

    def drop_rule(self, rule: RouteRule) -> None:
        count = self.rules.get(rule, 0)
        if count:
            if count == 1:
                del self.rules[rule]
            else:
                self.rules[rule] = count - 1
            self.version += 1

    def replace_rules(self, rules: Iterable[RouteRule]) -> None:
        new = collections.Counter(rules)
        if new != self.rules:
            self.rules = new
            self.version += 1

    def sync_from(self, fresh: NetState) -> None:
        """Become equal to ``fresh`` (a full re-read), changing only what differs, so
        that a periodic resync that finds nothing new invalidates nothing."""
        for index in [i for i in self.links if i not in fresh.links]:
            self.drop_link(index)
        for link in fresh.links.values():
            self.put_link(link)
        for index in set(self.addresses) | set(fresh.addresses):
            have = self.addresses.get(index, set())
            want = fresh.addresses.get(index, set())
            for addr in have - want:
                self.drop_address(addr)
            for addr in want - have:
                self.put_address(addr)
        self.replace_routes(fresh.routes)
        self.replace_rules(fresh.rules.elements())

    def replace_routes(self, routes: Iterable[Route]) -> None:

        new = set(routes)
        if new != self.routes:
            self.routes = new
            self.version += 1
