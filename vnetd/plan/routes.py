# SPDX-License-Identifier: MIT
"""Routes: add what is declared and missing, remove what is declared absent.

A declared route is satisfied by any kernel route with the same destination and
table whose written fields (next hop, device, metric) match. If the kernel holds
a different route under the same key (destination, table, metric), it is replaced:
the administrator declared where that destination goes. Routes the kernel made for
an address (protocol ``kernel``) are never removed: remove the address instead.
Neither is the default route through a link whose addresses a DHCP client or
SLAAC owns (``ipv4.dhcp``/``ipv6.autoconf``): it is the client's, and a declared
route that would replace it is a Problem.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from vnetd.model.interfaces import Interface, IpInterface
from vnetd.model.netstate import NetState
from vnetd.model.routes import KERNEL_ROUTE_PROTOCOL, MAIN_TABLE, Route, RouteSpec
from vnetd.plan.actions import Action, AddRoute, Phase, Problem, RemoveAddress, RemoveRoute


def default_metric(family: int) -> int:
    return 0 if family == 4 else 1024


def matches(spec: RouteSpec, route: Route, observed: NetState) -> bool:
    if route.destination != spec.destination or route.table != spec.table_id:
        return False
    if spec.next_hop_address is not None and route.gateway != spec.next_hop_address:
        return False
    if spec.next_hop_interface is not None and observed.name_of(route.oif) != spec.next_hop_interface:
        return False
    return spec.metric is None or route.priority == spec.metric


def flushed_links(actions: Iterable[Action], observed: NetState) -> set[str]:
    """Links whose IPv4 routes the kernel removes while these interface actions run.

    A link that loses its last IPv4 address loses every IPv4 route through it
    (``fib_disable_ip``); removing a subnet's primary address removes its secondaries
    too (unless promote_secondaries), so a link keeping only those loses them as well.
    """
    removed: dict[str, set[IpInterface]] = {}
    for action in actions:
        if isinstance(action.op, RemoveAddress) and action.op.ip.version == 4:
            removed.setdefault(action.op.name, set()).add(action.op.ip)
    flushed = set()
    for name, gone in removed.items():
        link = observed.link(name)
        networks = {ip.network for ip in gone}
        if link is not None and all(a.ip in gone or a.ip.network in networks
                                    for a in observed.addresses_of(link.index) if a.ip.version == 4):
            flushed.add(name)
    return flushed


def foreign_default_routes(interfaces: Iterable[Interface]) -> set[tuple[str, int]]:
    """(link, family) whose default route a DHCP client or SLAAC owns."""
    owned = set()
    for iface in interfaces:
        for version, config in ((4, iface.ipv4), (6, iface.ipv6)):
            if config is not None and config.foreign:
                owned.add((iface.name, version))
    return owned


def is_owned(route: Route, observed: NetState, owned: Collection[tuple[str, int]]) -> bool:
    """Whether a kernel route is the default route of a DHCP-owned link."""
    return (not route.destination.prefixlen and route.table == MAIN_TABLE
            and (observed.name_of(route.oif) or "", route.family) in owned)


def plan_routes(desired: Iterable[RouteSpec], observed: NetState, created: Collection[str] = (),
                flushed: Collection[str] = (), owned: Collection[tuple[str, int]] = ()
                ) -> tuple[list[Action], list[Problem]]:
    """``created``: interfaces this plan creates (a route may use them as next-hop-interface);
    ``flushed``: links whose IPv4 routes the kernel removes during this plan (``flushed_links``
    of the interface actions): a route through one of them is planned as missing;
    ``owned``: (link, family) whose default route belongs to a DHCP client (never touched)."""
    actions: list[Action] = []
    problems: list[Problem] = []
    routes = sorted(observed.routes, key=lambda r: (r.table, str(r.destination), r.priority))
    staying = [r for r in routes if not (r.family == 4 and observed.name_of(r.oif) in flushed)]
    for spec in desired:
        res = spec.resource
        if spec.absent:
            for route in routes:
                if route.protocol != KERNEL_ROUTE_PROTOCOL and matches(spec, route, observed) \
                        and not is_owned(route, observed, owned):
                    actions.append(Action(
                        RemoveRoute(route.destination, route.table, route.gateway, route.oif, route.priority),
                        Phase.REMOVE_ROUTES, res, "state", "absent", _describe(route, observed)))
            continue
        if any(matches(spec, r, observed) for r in staying):
            continue
        if spec.next_hop_interface is not None and observed.link(spec.next_hop_interface) is None \
                and spec.next_hop_interface not in created:
            problems.append(Problem(res, f"next-hop-interface {spec.next_hop_interface!r} does not exist"))
            continue
        metric = spec.metric if spec.metric is not None else default_metric(spec.family)
        # a route through a flushed link may survive (promoted secondaries): replace, not EEXIST
        clash = next((r for r in routes if r.destination == spec.destination and r.table == spec.table_id
                      and r.priority == metric), None)
        if clash is not None and is_owned(clash, observed, owned):
            problems.append(Problem(res, f"the kernel holds one route per destination, table and metric, and "
                                         f"{_describe(clash, observed)} is the DHCP client's (dhcp/autoconf: true); "
                                         "give the declared route another metric"))
            continue
        want = _describe_spec(spec)
        have = _describe(clash, observed) if clash in staying else None
        actions.append(Action(
            AddRoute(spec.destination, spec.table_id, spec.next_hop_address, spec.next_hop_interface,
                     spec.metric, replace=clash is not None),
            Phase.ADD_ROUTES, res, "route", want, have))
    return actions, problems


def _describe_spec(spec: RouteSpec) -> str:
    parts = [str(spec.destination)]
    if spec.next_hop_address:
        parts.append(f"via {spec.next_hop_address}")
    if spec.next_hop_interface:
        parts.append(f"dev {spec.next_hop_interface}")
    if spec.metric is not None:
        parts.append(f"metric {spec.metric}")
    return " ".join(parts)


def _describe(route: Route, observed: NetState) -> str:
    parts = [str(route.destination)]
    if route.gateway:
        parts.append(f"via {route.gateway}")
    dev = observed.name_of(route.oif)
    if dev:
        parts.append(f"dev {dev}")
    parts.append(f"metric {route.priority}")
    return " ".join(parts)
