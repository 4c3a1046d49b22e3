# SPDX-License-Identifier: MIT
"""The ``routes:`` section (nmstate ``routes.config``)."""

from __future__ import annotations

import ipaddress

import yaml

from vnetd.desired import validate
from vnetd.desired.nodes import FileContext, as_map, join
from vnetd.desired.schema import ROUTE, ROUTES
from vnetd.model.common import Origin
from vnetd.model.routes import RouteSpec


def parse_routes(node: yaml.Node, ctx: FileContext) -> list[RouteSpec]:
    top = as_map(node, "routes", ctx, ROUTES, "routes")
    if top is None:
        return []
    items = top.sequence("config")
    if items is None:
        return []
    routes = []
    for item, path in items:
        route = _parse_route(item, path, ctx)
        if route is not None:
            routes.append(route)
    return routes


def _parse_route(node: yaml.Node, path: str, ctx: FileContext) -> RouteSpec | None:
    r = as_map(node, path, ctx, ROUTE, "a route")
    if r is None:
        return None
    before = len(ctx.issues)
    if not r.require("destination", "a network such as 0.0.0.0/0 or 10.0.0.0/24"):
        return None
    dest = r.string("destination", validate.ip_network)
    gateway = r.string("next-hop-address", validate.ip_address)
    device = r.string("next-hop-interface", validate.link_name)
    metric = r.integer("metric")
    table = r.integer("table-id")
    state = r.choice("state")
    if dest is None or len(ctx.issues) != before:
        return None
    network = ipaddress.ip_network(dest)
    nexthop = ipaddress.ip_address(gateway) if gateway else None
    if nexthop is not None and nexthop.version != network.version:
        ctx.error(r.value_node("next-hop-address"), join(path, "next-hop-address"),
                  f"{nexthop} is IPv{nexthop.version} but the destination {network} is IPv{network.version}")
        return None
    if nexthop is not None and (nexthop.is_multicast or nexthop.is_unspecified):
        ctx.error(r.value_node("next-hop-address"), join(path, "next-hop-address"),
                  f"{nexthop} cannot be a next hop")
        return None
    if state is None and nexthop is None and device is None:
        ctx.error(r.node, path, "a route needs next-hop-address, next-hop-interface or both")
        return None
    if table in (253, 255):
        ctx.error(r.value_node("table-id"), join(path, "table-id"),
                  f"table {table} is the kernel's ({'default' if table == 253 else 'local'}); "
                  "use the main table (254) or your own (1-252, 256-...)")
        return None
    return RouteSpec(network, nexthop, device, metric, table, state == "absent", Origin(ctx.file, r.line))
