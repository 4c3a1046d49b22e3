# SPDX-License-Identifier: MIT
"""Addresses owned by a DHCP client or SLAAC (``ipv4.dhcp``, ``ipv6.autoconf``): the
planner removes none of the link's addresses of that family, replaces or removes
none of its default routes, adds only what is listed, and says so in the plan (a
note, not an action). Pure; the kernel side is tests/integration/test_dhcp_owned.py.
"""

from __future__ import annotations

import ipaddress

from tests.unit.fake_kernel import make_link
from vnetd.desired.loader import SourceFile, load_sources
from vnetd.model.interfaces import Address
from vnetd.model.netstate import NetState
from vnetd.model.routes import Route
from vnetd.plan.actions import AddAddress, AddRoute, RemoveAddress, RemoveRoute
from vnetd.plan.planner import Observed, plan
from vnetd.plan.render import plan_json, plan_text

IP = ipaddress.ip_interface
NET = ipaddress.ip_network
GW = ipaddress.ip_address("192.0.2.1")
LEASE = IP("192.0.2.57/24")  # what the DHCP client got
SLAAC = IP("2001:db8:1::5054:ff:fe00:1/64")


def gateway_guest() -> NetState:
    """eth0 (2) with a lease and the client's default route; eth1 (3) static."""
    eth0, eth1 = make_link(2, "eth0", "veth"), make_link(3, "eth1", "veth")
    addresses = [Address(2, LEASE, permanent=False), Address(2, SLAAC, permanent=False),
                 Address(3, IP("10.0.0.10/24"))]
    routes = [Route(NET("0.0.0.0/0"), 254, 2, GW, 0, 16, 0), Route(NET("::/0"), 254, 2,
                                                                    ipaddress.ip_address("fe80::1"), 1024, 9, 0)]
    return NetState.build([eth0, eth1], addresses, routes)


def desired(text: str):  # type: ignore[no-untyped-def]
    return load_sources([SourceFile("/etc/vnetd.d/10-gw.yaml", text)])


GATEWAY = """\
interfaces:
- name: eth0
  type: ethernet
  state: up
  ipv4: {enabled: true, dhcp: true}
  ipv6: {enabled: true, autoconf: true}
- name: eth1
  type: ethernet
  state: up
  ipv4:
    enabled: true
    address: [10.0.0.10/24]
"""


def test_a_dhcp_link_is_left_to_its_client_and_the_plan_says_so() -> None:
    result = plan(desired(GATEWAY), Observed(net=gateway_guest()))
    assert result.empty and not result.problems
    notes = [n.describe() for n in result.notes]
    assert notes == [
        "interface/eth0: IPv4 addresses and default route belong to the host's DHCP client "
        "(ipv4.dhcp: true): left alone",
        "interface/eth0: IPv6 addresses and default route belong to the host's router advertisements (SLAAC) "
        "(ipv6.autoconf: true): left alone"]
    text = plan_text(result)
    assert text.startswith("= interface/eth0: IPv4 addresses") and text.endswith("nothing to do: the system "
                                                                                 "matches the state files\n")
    assert '"notes": [' in plan_json(result)


def test_the_lease_changing_is_still_nothing_to_do() -> None:
    net = gateway_guest()
    net.drop_address(Address(2, LEASE))
    net.put_address(Address(2, IP("192.0.2.99/24"), permanent=False))
    net.replace_routes([Route(NET("0.0.0.0/0"), 254, 2, ipaddress.ip_address("192.0.2.2"), 0, 16, 0)])
    assert plan(desired(GATEWAY), Observed(net=net)).empty


def test_listed_addresses_are_added_and_none_removed() -> None:
    text = GATEWAY.replace("ipv4: {enabled: true, dhcp: true}",
                           "ipv4: {enabled: true, dhcp: true, address: [198.51.100.1/24]}")
    result = plan(desired(text), Observed(net=gateway_guest()))
    assert [a.op for a in result.actions] == [AddAddress("eth0", IP("198.51.100.1/24"))]
    assert "the listed 198.51.100.1/24 kept too" in result.notes[0].message
    assert not any(isinstance(a.op, RemoveAddress) for a in result.actions)


def test_without_dhcp_the_same_addresses_would_go() -> None:
    static = GATEWAY.replace("ipv4: {enabled: true, dhcp: true}", "ipv4: {enabled: true, address: []}")
    result = plan(desired(static), Observed(net=gateway_guest()))
    assert RemoveAddress("eth0", LEASE) in [a.op for a in result.actions]  # the contrast: dhcp is what protects


def test_the_clients_default_route_is_never_removed_or_replaced() -> None:
    absent = "routes:\n  config:\n  - destination: 0.0.0.0/0\n    state: absent\n"
    assert plan(desired(GATEWAY + absent), Observed(net=gateway_guest())).empty
    clash = """
routes:
  config:
  - destination: 0.0.0.0/0
    next-hop-address: 10.0.0.1
    next-hop-interface: eth1
    metric: 0
"""
    result = plan(desired(GATEWAY + clash), Observed(net=gateway_guest()))
    assert not any(isinstance(a.op, RemoveRoute | AddRoute) for a in result.actions), result.actions
    assert [p.resource for p in result.problems] == ["route/0.0.0.0/0 via 10.0.0.1 dev eth1"]
    assert "is the DHCP client's (dhcp/autoconf: true); give the declared route another metric" in \
        result.problems[0].message
    second = plan(desired(GATEWAY + clash.replace("metric: 0", "metric: 200")), Observed(net=gateway_guest()))
    assert [type(a.op) for a in second.actions] == [AddRoute] and not second.problems  # a backup route is fine
