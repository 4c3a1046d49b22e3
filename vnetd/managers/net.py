# SPDX-License-Identifier: MIT
"""Links, addresses, routes and policy routing rules (and guests' taps on their bridges).

Full reads dump everything (``backends.netlink``); the daemon keeps a ``NetState``
filled by one dump and kept current from rtnetlink notifications, which its main
thread drains itself before every plan (``NetCache``). An overrun (ENOBUFS) or the
slow timer re-dumps everything. This view is the one that can be stale when an
action fails (the kernel announces one change in several notifications): its
``view_version`` lets the engine re-plan such a failure at once.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vnetd.managers.base import BaseManager, Results
from vnetd.model.netstate import NetState
from vnetd.model.state import DesiredState
from vnetd.plan.actions import FIREWALL_OPS, EnsureNetwork, Op, SetSysctl
from vnetd.plan.planner import Observed

if TYPE_CHECKING:
    from vnetd.backends.netlink import NetlinkBackend
    from vnetd.backends.rtnl import RtnlSocket
    from vnetd.plan.actions import Action

EVENT_RCVBUF = 8 * 1024 * 1024


class NetCache:
    """The event-maintained view of links, addresses, routes and rules."""

    def __init__(self, backend: NetlinkBackend) -> None:
        from vnetd.backends import rtnl

        self.backend = backend
        self.events: RtnlSocket = rtnl.RtnlSocket(groups=rtnl.EVENT_GROUPS, rcvbuf=EVENT_RCVBUF)
        self.state = NetState()
        self.overrun = False
        self.routes_stale = False
        self.events_seen = 0

    def resync(self) -> None:
        """Re-read everything: drop queued notifications (older than the dump), then dump
        and bring the cache in line (in place: what did not change stays as it was)."""
        self.drain(apply=False)
        self.state.sync_from(self.backend.observe())
        self.overrun = False

    def drain(self, apply: bool = True) -> int:
        """Read every queued notification into the cache; returns how many changed it."""
        from vnetd.backends import rtnl

        changed = 0
        self.routes_stale = False
        while True:
            try:
                data = self.events.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if self.routes_stale and apply:
                    # The kernel flushes IPv4 routes whose address or link went away
                    # without sending RTM_DELROUTE: re-read the routes instead.
                    self.state.replace_routes(self.backend.dump_routes())
                return changed
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped notifications: the cache is stale
                    self.overrun = True
                    continue
                raise
            if not apply:
                continue
            for mtype, _flags, _seq, off, length in rtnl.iter_messages(data):
                changed += self._apply(data, mtype, off, length)

    def _apply(self, data: bytes, mtype: int, off: int, length: int) -> int:
        from vnetd.backends import rtnl

        self.events_seen += 1
        if mtype in (rtnl.RTM_NEWLINK, rtnl.RTM_DELLINK) and rtnl.link_family(data, off) == socket.AF_BRIDGE:
            return 0  # a bridge-port notification, not the link itself
        if mtype == rtnl.RTM_NEWLINK:
            link = rtnl.decode_link(data, off, length)
            old = self.state.links.get(link.index)
            if old is not None and old.up and not link.up:
                self.routes_stale = True
            self.state.put_link(link)
        elif mtype == rtnl.RTM_DELLINK:
            self.state.drop_link(rtnl.decode_link(data, off, length).index)
            self.routes_stale = True
        elif mtype in (rtnl.RTM_NEWADDR, rtnl.RTM_DELADDR):
            addr = rtnl.decode_address(data, off, length)
            if addr is None:
                return 0
            if mtype == rtnl.RTM_NEWADDR:
                self.state.put_address(addr)
            else:
                self.state.drop_address(addr)
                self.routes_stale = True
        elif mtype in (rtnl.RTM_NEWROUTE, rtnl.RTM_DELROUTE):
            route = rtnl.decode_route(data, off, length)
            if route is None:
                return 0
            if mtype == rtnl.RTM_NEWROUTE:
                self.state.put_route(route)
            else:
                self.state.drop_route(route)
        elif mtype in (rtnl.RTM_NEWRULE, rtnl.RTM_DELRULE):
            rule = rtnl.decode_rule(data, off, length)
            if rule is None:
                return 0
            if mtype == rtnl.RTM_NEWRULE:
                self.state.put_rule(rule)
            else:
                self.state.drop_rule(rule)
        elif mtype == rtnl.NLMSG_OVERRUN:
            self.overrun = True
        else:
            return 0
        return 1

    def close(self) -> None:
        self.events.close()


class NetManager(BaseManager):
    """``interface/``, ``route/``, ``route-rule/`` resources, and guests' taps (``AttachTap``:
    a tap is put on its bridge with the same netlink request as any port)."""

    name = "netlink"
    event_source = "netlink"
    prefixes = ("interface/", "route/", "route-rule/")

    def __init__(self, log: Any) -> None:
        self.log = log
        self._backend: NetlinkBackend | None = None
        self._cache: NetCache | None = None

    @property
    def backend(self) -> NetlinkBackend:
        """The netlink request socket (made on first use)."""
        if self._backend is None:
            from vnetd.backends.netlink import NetlinkBackend

            self._backend = NetlinkBackend()
        return self._backend

    @property
    def cache(self) -> NetCache:
        """The daemon's view (its notification socket is opened on first use, before the first dump)."""
        if self._cache is None:
            self._cache = NetCache(self.backend)
        return self._cache

    def handles(self, op: Op) -> bool:
        # every op that is not a firewall's, a sysctl's or a libvirt network's: links,
        # addresses, routes, rules and guests' taps
        return not isinstance(op, (*FIREWALL_OPS, SetSysctl, EnsureNetwork))

    def resources(self, desired: DesiredState) -> list[str]:
        return ([i.resource for i in desired.interfaces] + [r.resource for r in desired.routes]
                + [r.resource for r in desired.route_rules])

    def observe(self, desired: DesiredState, observed: Observed) -> None:
        observed.net = self.backend.observe()

    def observe_cached(self, desired: DesiredState, observed: Observed) -> None:
        cache = self.cache
        cache.drain()
        if cache.overrun:
            self.log.warning("netlink.overrun", action="full resync")
            cache.resync()
        observed.net = cache.state

    def apply(self, actions: Sequence[Action], observed: Observed) -> Results:
        return self.backend.execute_batch(actions, observed.net)

    def view_version(self) -> int | None:
        return self._cache.state.version if self._cache is not None else None

    def event_fileno(self) -> int | None:
        return self.cache.events.fileno()

    def drain_events(self) -> bool:
        return self.cache.drain() > 0

    def needs_pass(self) -> bool:
        return self._cache is not None and self._cache.overrun

    def invalidate(self) -> None:
        if self._cache is not None:
            self._cache.overrun = True

    def resync(self) -> None:
        self.cache.resync()

    def show(self, desired: DesiredState | None) -> str:
        from vnetd.show import net_sections

        return net_sections(self.backend.observe())

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
        if self._backend is not None:
            self._backend.close()
