# SPDX-License-Identifier: MIT
"""The route planner on hand-built kernel states.

A declared route is satisfied by any kernel route with its destination and table
whose written fields match; another route under the kernel's key (destination,
table, metric) is replaced; ``absent`` removes matching routes, never the ones the
kernel made for an address. Each case names the drift (resource, field, want, have).
"""

from __future__ import annotations

import ipaddress

import pytest

from tests.unit.fake_kernel import FakeKernel, make_link
from vnetd.model.interfaces import Address, AdminState, BridgeConfig, IfType, Interface, IpConfig, Link
from vnetd.model.netstate import NetState
from vnetd.model.routes import KERNEL_ROUTE_PROTOCOL, Route, RouteSpec
from vnetd.model.state import DesiredState
from vnetd.plan.actions import Action, AddRoute, Phase, Plan, RemoveAddress, RemoveRoute
from vnetd.plan.interfaces import plan_interfaces
from vnetd.plan.planner import Observed, plan
from vnetd.plan.routes import default_metric, flushed_links, matches, plan_routes

net4, net6 = ipaddress.ip_network, ipaddress.ip_network
addr = ipaddress.ip_address
STATIC, KERNEL = 4, KERNEL_ROUTE_PROTOCOL
LINK_SCOPE = 253

DEST = net4("198.51.100.0/24")
GW, OTHER_GW = addr("192.0.2.254"), addr("192.0.2.253")


def state(*links: Link, addresses: tuple[Address, ...] = (), routes: tuple[Route, ...] = ()) -> NetState:
    return NetState.build(links, addresses, routes)


def br0_with_address(*routes: Route) -> NetState:
    """br0 (index 3) up with 192.0.2.1/24 and 2001:db8::1/64 and their prefix routes."""
    return state(make_link(3, "br0", "bridge"),
                 addresses=(Address(3, ipaddress.ip_interface("192.0.2.1/24")),
                            Address(3, ipaddress.ip_interface("2001:db8::1/64"))),
                 routes=(Route(net4("192.0.2.0/24"), 254, 3, None, 0, KERNEL, LINK_SCOPE),
                         Route(net6("2001:db8::/64"), 254, 3, None, 256, KERNEL, 0), *routes))


def static(dest: str, gw: ipaddress.IPv4Address | ipaddress.IPv6Address | None, metric: int = 0,
           table: int = 254, oif: int = 3) -> Route:
    return Route(ipaddress.ip_network(dest), table, oif, gw, metric, STATIC, 0 if gw else LINK_SCOPE)


def only(actions: list[Action]) -> Action:
    assert len(actions) == 1, actions
    return actions[0]


def converge(desired: DesiredState, observed: NetState) -> FakeKernel:
    kernel = FakeKernel(observed)
    first = plan(desired, Observed(net=observed))
    assert first.problems == ()
    assert kernel.run(first.actions) == []
    again = plan(desired, Observed(net=kernel.observe()))
    assert again == Plan(), [a.describe() for a in again.actions]
    return kernel


# --------------------------------------------------------------------------- present routes


def test_a_missing_route_is_added() -> None:
    spec = RouteSpec(DEST, GW)
    actions, problems = plan_routes([spec], br0_with_address())
    a = only(actions)
    assert problems == []
    assert (a.op, a.phase) == (AddRoute(DEST, 254, GW, None, None, replace=False), Phase.ADD_ROUTES)
    assert (a.resource, a.field, a.want, a.have) == (
        "route/198.51.100.0/24 via 192.0.2.254", "route", "198.51.100.0/24 via 192.0.2.254", None)
    kernel = converge(DesiredState(routes=(spec,)), br0_with_address())
    assert static("198.51.100.0/24", GW) in kernel.state.routes


def test_a_present_route_is_left_alone_whatever_its_unwritten_fields() -> None:
    observed = br0_with_address(static("198.51.100.0/24", GW, metric=100))
    assert plan_routes([RouteSpec(DEST, GW)], observed) == ([], [])
    assert plan_routes([RouteSpec(DEST, None, "br0")], observed) == ([], [])
    assert plan_routes([RouteSpec(DEST, GW, "br0", 100, 254)], observed) == ([], [])


def test_a_route_under_the_same_key_with_another_gateway_is_replaced() -> None:
    observed = br0_with_address(static("198.51.100.0/24", OTHER_GW))
    spec = RouteSpec(DEST, GW)
    a = only(plan_routes([spec], observed)[0])
    assert a.op == AddRoute(DEST, 254, GW, None, None, replace=True)
    assert (a.field, a.want, a.have) == ("route", "198.51.100.0/24 via 192.0.2.254",
                                         "198.51.100.0/24 via 192.0.2.253 dev br0 metric 0")
    kernel = converge(DesiredState(routes=(spec,)), observed)
    assert [r.gateway for r in kernel.state.routes if r.destination == DEST] == [GW]


def test_a_route_with_another_metric_is_not_in_the_way() -> None:
    observed = br0_with_address(static("198.51.100.0/24", OTHER_GW, metric=100))
    a = only(plan_routes([RouteSpec(DEST, GW)], observed)[0])
    assert a.op == AddRoute(DEST, 254, GW, None, None, replace=False) and a.have is None
    kernel = converge(DesiredState(routes=(RouteSpec(DEST, GW),)), observed)
    assert {r.gateway for r in kernel.state.routes if r.destination == DEST} == {GW, OTHER_GW}


def test_ipv6_routes_clash_at_the_kernels_default_metric_1024() -> None:
    gw, other = addr("2001:db8::fe"), addr("2001:db8::fd")
    observed = br0_with_address(static("::/0", other, metric=1024))
    spec = RouteSpec(net6("::/0"), gw)
    assert default_metric(6) == 1024 and default_metric(4) == 0
    assert only(plan_routes([spec], observed)[0]).op == AddRoute(net6("::/0"), 254, gw, None, None, replace=True)
    converge(DesiredState(routes=(spec,)), observed)
    not_in_the_way = br0_with_address(static("::/0", other, metric=100))
    assert only(plan_routes([spec], not_in_the_way)[0]).op.replace is False  # type: ignore[union-attr]


def test_tables_are_separate() -> None:
    observed = br0_with_address(static("198.51.100.0/24", GW))
    spec = RouteSpec(DEST, GW, table=100)
    a = only(plan_routes([spec], observed)[0])
    assert a.op == AddRoute(DEST, 100, GW, None, None, replace=False)
    assert a.resource == "route/198.51.100.0/24 via 192.0.2.254 table 100"
    converge(DesiredState(routes=(spec,)), observed)


def test_a_written_metric_is_part_of_the_route() -> None:
    observed = br0_with_address(static("198.51.100.0/24", GW, metric=0))
    spec = RouteSpec(DEST, GW, metric=50)
    a = only(plan_routes([spec], observed)[0])
    assert a.op == AddRoute(DEST, 254, GW, None, 50, replace=False) and a.want == "198.51.100.0/24 via 192.0.2.254 metric 50"
    converge(DesiredState(routes=(spec,)), observed)


# --------------------------------------------------------------------------- next-hop interfaces


def test_a_next_hop_interface_that_the_plan_creates_is_an_action_not_a_problem() -> None:
    spec = RouteSpec(DEST, None, "br0")
    desired = DesiredState(interfaces=(Interface("br0", IfType.BRIDGE, bridge=BridgeConfig()),), routes=(spec,))
    p = plan(desired, Observed(net=state()))
    assert p.problems == ()
    assert [type(a.op).__name__ for a in p.actions] == ["CreateLink", "SetLinkUp", "AddRoute"]
    assert p.actions[-1].op == AddRoute(DEST, 254, None, "br0", None, replace=False)
    assert (p.actions[-1].resource, p.actions[-1].want) == ("route/198.51.100.0/24 dev br0", "198.51.100.0/24 dev br0")
    converge(desired, state())


def test_a_next_hop_interface_that_nothing_creates_is_a_problem() -> None:
    actions, problems = plan_routes([RouteSpec(DEST, None, "br9")], state())
    assert actions == []
    assert [(p.resource, p.message) for p in problems] == [
        ("route/198.51.100.0/24 dev br9", "next-hop-interface 'br9' does not exist")]
    # declared, but absent: nothing creates it either
    desired = DesiredState(interfaces=(Interface("br9", IfType.BRIDGE, AdminState.ABSENT),),
                           routes=(RouteSpec(DEST, None, "br9"),))
    assert plan(desired, Observed(net=state())).problems[0].resource == "route/198.51.100.0/24 dev br9"


# --------------------------------------------------------------------------- absent routes


def test_absent_removes_matching_routes_but_not_the_kernels() -> None:
    routes = (static("198.51.100.0/24", GW, metric=0), static("198.51.100.0/24", OTHER_GW, metric=100),
              static("203.0.113.0/24", GW))
    observed = br0_with_address(*routes)
    gone = RouteSpec(DEST, absent=True)
    actions, problems = plan_routes([gone], observed)
    assert problems == []
    assert [a.op for a in actions] == [RemoveRoute(DEST, 254, GW, 3, 0), RemoveRoute(DEST, 254, OTHER_GW, 3, 100)]
    assert [(a.resource, a.field, a.want, a.have, a.phase) for a in actions] == [
        ("route/198.51.100.0/24", "state", "absent", "198.51.100.0/24 via 192.0.2.254 dev br0 metric 0",
         Phase.REMOVE_ROUTES),
        ("route/198.51.100.0/24", "state", "absent", "198.51.100.0/24 via 192.0.2.253 dev br0 metric 100",
         Phase.REMOVE_ROUTES),
    ]
    # the route the kernel made for br0's address stays: remove the address instead
    connected = RouteSpec(net4("192.0.2.0/24"), absent=True)
    assert plan_routes([connected], observed) == ([], [])
    assert plan_routes([RouteSpec(net6("2001:db8::/64"), None, "br0", absent=True)], observed) == ([], [])
    kernel = converge(DesiredState(routes=(gone, connected)), observed)
    assert {r.destination for r in kernel.state.routes} >= {net4("192.0.2.0/24"), net4("203.0.113.0/24")}
    assert DEST not in {r.destination for r in kernel.state.routes}


def test_absent_with_written_fields_removes_only_what_matches_all_of_them() -> None:
    observed = br0_with_address(static("198.51.100.0/24", GW, metric=0), static("198.51.100.0/24", OTHER_GW, 100))
    by_metric = plan_routes([RouteSpec(DEST, metric=100, absent=True)], observed)[0]
    assert [a.op for a in by_metric] == [RemoveRoute(DEST, 254, OTHER_GW, 3, 100)]
    by_gateway = plan_routes([RouteSpec(DEST, GW, absent=True)], observed)[0]
    assert [a.op for a in by_gateway] == [RemoveRoute(DEST, 254, GW, 3, 0)]
    assert plan_routes([RouteSpec(DEST, GW, metric=100, absent=True)], observed) == ([], [])
    assert plan_routes([RouteSpec(DEST, None, "br7", absent=True)], observed) == ([], [])
    assert plan_routes([RouteSpec(DEST, table=100, absent=True)], observed) == ([], [])


def test_matches_needs_every_written_field() -> None:
    observed = br0_with_address()
    route = static("198.51.100.0/24", GW, metric=7)
    assert matches(RouteSpec(DEST), route, observed)
    assert matches(RouteSpec(DEST, GW, "br0", 7, 254), route, observed)
    assert not matches(RouteSpec(DEST, OTHER_GW), route, observed)
    assert not matches(RouteSpec(DEST, None, "eth0"), route, observed)
    assert not matches(RouteSpec(DEST, metric=0), route, observed)
    assert not matches(RouteSpec(net4("198.51.100.0/25")), route, observed)


# --------------------------------------------------------------------------- routes the kernel flushes


def _renumbered() -> tuple[DesiredState, NetState]:
    """br0 moves from 192.0.2.1/24 to 192.0.2.2/24 (its only IPv4 address); a declared route
    through it is there now, and goes with the last address (fib_disable_ip)."""
    observed = br0_with_address(static("198.51.100.0/24", GW))
    iface = Interface("br0", IfType.BRIDGE, bridge=BridgeConfig(),
                      ipv4=IpConfig(True, (ipaddress.ip_interface("192.0.2.2/24"),)))
    return DesiredState(interfaces=(iface,), routes=(RouteSpec(DEST, GW),)), observed


def test_flushed_links_are_the_ones_that_lose_their_last_ipv4_address() -> None:
    desired, observed = _renumbered()
    actions, _ = plan_interfaces(desired.interfaces, observed)
    assert [a.op for a in actions if isinstance(a.op, RemoveAddress)] == [
        RemoveAddress("br0", ipaddress.ip_interface("192.0.2.1/24"))]
    assert flushed_links(actions, observed) == {"br0"}
    keeps_one = Interface("br0", IfType.BRIDGE, ipv4=IpConfig(True, (ipaddress.ip_interface("192.0.2.1/24"),
                                                                     ipaddress.ip_interface("192.0.2.2/24"))))
    assert flushed_links(plan_interfaces([keeps_one], observed)[0], observed) == set()


def test_a_route_through_a_flushed_link_is_planned_again() -> None:
    desired, observed = _renumbered()
    assert plan_routes(desired.routes, observed) == ([], [])  # held now...
    interface_actions, _ = plan_interfaces(desired.interfaces, observed)
    actions, problems = plan_routes(desired.routes, observed, flushed=flushed_links(interface_actions, observed))
    a = only(actions)
    assert problems == [] and a.op == AddRoute(DEST, 254, GW, None, None, replace=True)
    assert (a.want, a.have) == ("198.51.100.0/24 via 192.0.2.254", None)  # gone when the address goes
    kernel = FakeKernel(observed)
    assert kernel.run(interface_actions + actions) == []  # ...and after renumbering, there again
    assert plan(desired, Observed(net=kernel.observe())) == Plan()


@pytest.mark.parametrize("promote", [False, True])
def test_a_route_that_may_survive_the_flush_is_replaced_not_added(promote: bool) -> None:
    """Dropping a subnet's primary keeps the link's IPv4 (and its routes) only when the
    secondaries are promoted: the route is planned either way, as a replace."""
    observed = br0_with_address(static("198.51.100.0/24", GW))
    observed.put_address(Address(3, ipaddress.ip_interface("192.0.2.2/24")))
    iface = Interface("br0", IfType.BRIDGE, ipv4=IpConfig(True, (ipaddress.ip_interface("192.0.2.2/24"),)))
    desired = DesiredState(interfaces=(iface,), routes=(RouteSpec(DEST, GW),))
    interface_actions, _ = plan_interfaces(desired.interfaces, observed)
    flushed = flushed_links(interface_actions, observed)
    assert flushed == {"br0"}
    actions, _ = plan_routes(desired.routes, observed, flushed=flushed)
    assert only(actions).op.replace is True  # type: ignore[union-attr]
    kernel = FakeKernel(observed, promote_secondaries=promote)
    assert kernel.run(interface_actions + actions) == []
    assert plan(desired, Observed(net=kernel.observe())) == Plan()


def test_renumbering_a_link_keeps_its_declared_routes() -> None:
    desired, observed = _renumbered()
    converge(desired, observed)


def test_a_route_through_the_undeclared_peer_of_a_new_veth_is_an_action() -> None:
    desired = DesiredState(interfaces=(Interface("va0", IfType.VETH, veth_peer="vb0"),),
                           routes=(RouteSpec(DEST, None, "vb0"),))
    assert plan(desired, Observed(net=state())).problems == ()
