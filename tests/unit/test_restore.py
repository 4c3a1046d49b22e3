# SPDX-License-Identifier: MIT
"""Checkpoints and restore plans (pure; the kernel side is tests/integration/test_trial.py)."""

from __future__ import annotations

import ipaddress

from vnetd.model.checkpoint import ChainRecord, Checkpoint
from vnetd.model.firewall import ChainMode
from vnetd.model.interfaces import Address, Link
from vnetd.model.netstate import NetState
from vnetd.model.routes import Route
from vnetd.plan.actions import (
    Action,
    AddAddress,
    AddRoute,
    DeleteLink,
    Phase,
    Plan,
    RemoveAddress,
    RestoreChain,
    SetMaster,
    SetMtu,
    SetSysctl,
    SyncChain,
)
from vnetd.plan.restore import record_links, restore_plan, scope_of

IP = ipaddress.ip_interface


def host() -> NetState:
    eth1 = Link(2, "eth1", "veth", True, 1500, "02:00:00:00:00:01", master=3)
    br0 = Link(3, "br0", "bridge", True, 1500, "02:00:00:00:00:02", None)
    routes = [Route(ipaddress.ip_network("203.0.113.0/24"), 254, 3, ipaddress.ip_address("192.0.2.254"), 0, 3, 0),
              Route(ipaddress.ip_network("192.0.2.0/24"), 254, 3, None, 0, 2, 253)]  # the kernel's own
    return NetState.build([eth1, br0], [Address(3, IP("192.0.2.1/24"))], routes)


def action(op: object) -> Action:
    return Action(op, Phase.LINK_PROPERTIES, "x", "f", None, None)  # type: ignore[arg-type]


def test_scope_names_everything_a_plan_touches() -> None:
    plan = Plan((action(SetMtu("br0", 9000)), action(RemoveAddress("br0", IP("192.0.2.1/24"))),
                 action(SetSysctl("net.ipv4.ip_forward", "1")),
                 action(SyncChain("filter", "INPUT", ChainMode.MERGE, (), True))))
    scope = scope_of(plan, host())
    assert scope.links == {"br0"} and scope.sysctls == {"net.ipv4.ip_forward"}
    assert scope.chains == {("filter", "INPUT")}
    assert scope_of(Plan((action(SetMtu("eth1", 9000)),)), host()).links == {"eth1", "br0"}  # its master


def checkpoint(net: NetState, names: set[str]) -> Checkpoint:
    links, addresses, routes = record_links(names, net)
    return Checkpoint(0.0, "ns", links, addresses, routes, (("net.ipv4.ip_forward", "0"),),
                      (ChainRecord("iptables-legacy", "filter", "INPUT", True, True, "ACCEPT", ((b"e1", None),)),))


def test_nothing_changed_nothing_to_restore() -> None:
    net = host()
    cp = checkpoint(net, {"br0", "eth1"})
    chains = {("filter", "INPUT"): cp.chains[0]}
    assert restore_plan(cp, net, {"net.ipv4.ip_forward": "0"}, chains, None).empty
    assert cp.routes == (cp.routes[0],) and cp.routes[0].gateway == "192.0.2.254"  # not the kernel's route


def test_restore_undoes_a_lockout() -> None:
    before = host()
    cp = checkpoint(before, {"br0", "eth1", "brnew"})
    after = NetState.build([Link(2, "eth1", "veth", True, 1500, "02:00:00:00:00:01", None),
                            Link(3, "br0", "bridge", True, 1400, "02:00:00:00:00:02", None),
                            Link(4, "brnew", "bridge", True, 1500, "02:00:00:00:00:03", None)],
                           [Address(3, IP("198.51.100.7/24"))], [])
    chains = {("filter", "INPUT"): ChainRecord("iptables-legacy", "filter", "INPUT", True, True, "DROP", ())}
    plan = restore_plan(cp, after, {"net.ipv4.ip_forward": "1"}, chains, None)
    ops = [a.op for a in plan.actions]
    assert DeleteLink("brnew") in ops
    assert SetMtu("br0", 1500) in ops and SetMaster("eth1", "br0") in ops
    assert RemoveAddress("br0", IP("198.51.100.7/24")) in ops and AddAddress("br0", IP("192.0.2.1/24")) in ops
    assert any(isinstance(op, AddRoute) and op.protocol == 3 and op.device == "br0" for op in ops)
    assert SetSysctl("net.ipv4.ip_forward", "0") in ops
    assert RestoreChain("filter", "INPUT", cp.chains[0]) in ops
    phases = [a.phase for a in plan.actions]
    assert phases == sorted(phases)


def test_a_nic_that_vanished_is_a_problem_not_a_guess() -> None:
    cp = checkpoint(host(), {"eth1"})
    gone = NetState.build([], [], [])
    plan = restore_plan(cp, gone, {}, {("filter", "INPUT"): cp.chains[0]}, None)
    assert [p.resource for p in plan.problems if "cannot create it again" in p.message] == ["interface/eth1"]
    assert not any(isinstance(a.op, DeleteLink) for a in plan.actions)


def test_checkpoint_file_round_trip() -> None:
    cp = checkpoint(host(), {"br0", "eth1", "ghost"})
    again = Checkpoint.from_json(cp.to_json())
    assert again == cp
