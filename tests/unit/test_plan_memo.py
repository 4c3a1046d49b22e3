# SPDX-License-Identifier: MIT
"""The daemon's planning shortcuts give the same plan as planning from scratch.

PlanMemo reuses section results while their inputs are the same objects, and plans
interfaces group by group, again only for groups whose links changed. For random
desired states and random kernel changes, the memoized plan must equal a plan
computed with no memo at all, every time.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from vnetd.model.firewall import ObservedTable
from vnetd.model.interfaces import Address, AdminState, BridgeConfig, BridgeInfo, IfType, Interface, IpConfig, Link
from vnetd.model.netstate import NetState
from vnetd.model.state import DesiredState
from vnetd.plan.interfaces import plan_interfaces
from vnetd.plan.planner import Observed, PlanMemo, current_masters, interface_groups, plan

NICS = [f"eth{i}" for i in range(6)]
BRIDGES = [f"br{i}" for i in range(4)]


@st.composite
def desired_states(draw: st.DrawFn) -> DesiredState:
    free = list(NICS)
    interfaces = []
    for bridge in draw(st.lists(st.sampled_from(BRIDGES), unique=True, max_size=4)):
        ports = draw(st.lists(st.sampled_from(free), unique=True, max_size=3)) if free else []
        for p in ports:
            free.remove(p)
        interfaces.append(Interface(bridge, IfType.BRIDGE, draw(st.sampled_from([AdminState.UP, AdminState.DOWN])),
                                    mtu=draw(st.sampled_from([None, 1500, 9000])),
                                    # ports None: the bridge's ports are not managed
                                    bridge=BridgeConfig(ports=tuple(ports) if draw(st.booleans()) else None),
                                    ipv4=IpConfig(True, (ipaddress.ip_interface(f"192.0.2.{len(interfaces) + 1}/24"),))
                                    if draw(st.booleans()) else None))
    for nic in draw(st.lists(st.sampled_from(NICS), unique=True, max_size=4)):
        interfaces.append(Interface(nic, IfType.ETHERNET, AdminState.UP, mtu=draw(st.sampled_from([None, 9000]))))
    return DesiredState(interfaces=tuple(interfaces))


Change = tuple[str, str, int]


@st.composite
def kernel_changes(draw: st.DrawFn) -> list[Change]:
    return draw(st.lists(st.tuples(st.sampled_from(["mtu", "master", "down", "delete", "create", "addr", "unaddr"]),
                                   st.sampled_from(NICS + BRIDGES), st.integers(0, 3)), max_size=12))


def initial(names: list[str]) -> NetState:
    state = NetState()
    for i, name in enumerate(names, 2):
        kind = "bridge" if name.startswith("br") else None
        bridge = BridgeInfo(0, 1500, 200, 2000, 32768) if kind else None
        state.put_link(Link(i, name, kind, True, 1500, None, None, bridge=bridge))
    return state


def apply_change(state: NetState, change: Change) -> None:
    what, name, n = change
    link = state.link(name)
    if what == "create" and link is None:
        kind = "bridge" if name.startswith("br") else None
        index = 100 + len(state.links)
        state.put_link(Link(index, name, kind, False, 1500, None, None,
                            bridge=BridgeInfo(0, 1500, 200, 2000, 32768) if kind else None))
        return
    if link is None:
        return
    if what == "mtu":
        state.put_link(Link(link.index, name, link.kind, link.up, (1500, 9000, 4000, 68)[n], link.mac, link.master,
                            bridge=link.bridge))
    elif what == "master":
        master = state.link(BRIDGES[n])
        state.put_link(Link(link.index, name, link.kind, link.up, link.mtu, link.mac,
                            master.index if master and not name.startswith("br") else None, bridge=link.bridge))
    elif what == "down":
        state.put_link(Link(link.index, name, link.kind, not link.up, link.mtu, link.mac, link.master,
                            bridge=link.bridge))
    elif what == "delete":
        state.drop_link(link.index)
    elif what == "addr":
        state.put_address(Address(link.index, ipaddress.ip_interface(f"192.0.2.{n + 1}/24")))
    elif what == "unaddr":
        state.drop_address(Address(link.index, ipaddress.ip_interface(f"192.0.2.{n + 1}/24")))


def key(p: object) -> list[tuple[str, str, str]]:
    return sorted((a.resource, a.field, repr(a.op)) for a in p.actions)  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None)
@given(desired_states(), st.lists(kernel_changes(), min_size=1, max_size=5))
def test_memoized_plans_equal_plans_from_scratch(desired: DesiredState, rounds: list[list[Change]]) -> None:
    net = initial(NICS[:4] + BRIDGES[:2])
    memo = PlanMemo()
    observed = Observed(net=net)
    for changes in [[], *rounds]:
        for change in changes:
            apply_change(net, change)
        memoized = plan(desired, observed, memo)
        scratch = plan(desired, Observed(net=net))
        assert key(memoized) == key(scratch)
        assert sorted(p.describe() for p in memoized.problems) == sorted(p.describe() for p in scratch.problems)


@settings(max_examples=200, deadline=None)
@given(desired_states())
def test_group_plans_add_up_to_the_whole_plan(desired: DesiredState) -> None:
    net = initial(NICS[:3] + BRIDGES[:1])
    whole = plan_interfaces(desired.interfaces, net)
    parts: tuple[list, list] = ([], [])  # type: ignore[type-arg]
    for group in interface_groups(desired.interfaces, current_masters(desired.interfaces, net)):
        a, p = plan_interfaces(group, net)
        parts[0].extend(a)
        parts[1].extend(p)
    assert sorted(repr(a) for a in whole[0]) == sorted(repr(a) for a in parts[0])
    assert sorted(repr(p) for p in whole[1]) == sorted(repr(p) for p in parts[1])


def test_unchanged_inputs_are_not_planned_again() -> None:
    calls = []
    memo = PlanMemo()
    firewall: dict[str, ObservedTable] = {}
    fingerprints: dict[str, bytes] = {}
    for _ in range(3):
        memo.get("firewall", (firewall, fingerprints), lambda: calls.append(1) or ([], []))  # type: ignore[func-returns-value]
    assert calls == [1]
    memo.get("firewall", ({}, fingerprints), lambda: calls.append(1) or ([], []))  # type: ignore[func-returns-value]
    assert calls == [1, 1]


def test_a_notification_that_changes_nothing_does_not_bump_the_version() -> None:
    net = initial(["eth0"])
    version = net.version
    net.put_link(net.link("eth0"))  # type: ignore[arg-type]
    assert net.version == version and net.changed_since(version) == set()
    link = net.link("eth0")
    assert link is not None
    net.put_link(Link(link.index, "eth0", None, True, 9000, None, None))
    assert net.changed_since(version) == {"eth0"}


def test_a_declared_port_moving_between_bridges_regroups_the_plan() -> None:
    """br0 does not list its ports: the kernel makes it follow eth1's MTU while eth1 is
    on it, so eth1 is planned with whichever declared bridge holds it now."""
    net = initial(["eth1", "br0", "br1"])
    desired = DesiredState(interfaces=(
        Interface("br0", IfType.BRIDGE, AdminState.UP, mtu=1500, bridge=BridgeConfig(ports=None)),
        Interface("br1", IfType.BRIDGE, AdminState.UP, bridge=BridgeConfig(ports=None)),
        Interface("eth1", IfType.ETHERNET, AdminState.UP, mtu=9000)))

    def group_sizes() -> list[int]:
        return sorted(len(g) for g in interface_groups(desired.interfaces, current_masters(desired.interfaces, net)))

    assert group_sizes() == [1, 1, 1]
    memo = PlanMemo()
    observed = Observed(net=net)
    assert key(plan(desired, observed, memo)) == key(plan(desired, Observed(net=net)))
    apply_change(net, ("master", "eth1", 0))  # eth1 joins br0
    assert group_sizes() == [1, 2]
    memoized = plan(desired, observed, memo)
    assert key(memoized) == key(plan(desired, Observed(net=net)))
    assert ("interface/br0", "mtu", "SetMtu(name='br0', mtu=1500)") in key(memoized)  # after eth1 rises to 9000


def test_the_ports_of_a_renamed_bridge_are_planned_again() -> None:
    """br3 renamed br0 (same index): eth1, its port, now belongs with declared br0. Found by
    the property test above: the memo replanned br0 and br3 but not eth1, and lost eth1's MTU."""
    desired = DesiredState(interfaces=(
        Interface("br0", IfType.BRIDGE, AdminState.UP, mtu=1500, bridge=BridgeConfig()),
        Interface("br3", IfType.BRIDGE, AdminState.UP, bridge=BridgeConfig()),
        Interface("eth1", IfType.ETHERNET, AdminState.UP, mtu=9000)))
    net = initial(NICS[:4] + BRIDGES[:2])
    memo = PlanMemo()
    observed = Observed(net=net)
    for changes in ([], [("create", "br3", 0), ("master", "eth1", 3), ("delete", "br0", 0)]):
        for change in changes:
            apply_change(net, change)
        plan(desired, observed, memo)
    br3 = net.link("br3")
    assert br3 is not None
    net.put_link(Link(br3.index, "br0", br3.kind, br3.up, br3.mtu, br3.mac, br3.master, bridge=br3.bridge))
    assert key(plan(desired, observed, memo)) == key(plan(desired, Observed(net=net)))
