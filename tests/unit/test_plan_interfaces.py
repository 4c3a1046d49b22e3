# SPDX-License-Identifier: MIT
"""The interface planner on hand-built kernel states: order, ownership, problems.

Each case names the drift it expects (resource, field, want, have) and, where the
order matters, applies the plan to the in-memory kernel (tests/unit/fake_kernel.py)
to show that the kernel accepts it and that a second plan is empty. The sysctl
section's per-interface keys are here too: they depend on which interfaces exist.
"""

from __future__ import annotations

import errno
import ipaddress

import pytest

from tests.unit.fake_kernel import BRIDGE_DEFAULTS, FakeKernel, KernelError, make_link
from vnetd.model.interfaces import (
    Address,
    AdminState,
    BridgeConfig,
    BridgeInfo,
    IfType,
    Interface,
    IpConfig,
    Link,
    StpOptions,
)
from vnetd.model.netstate import NetState
from vnetd.model.routes import RouteSpec
from vnetd.model.state import DesiredState
from vnetd.model.sysctl import SysctlSpec
from vnetd.plan.actions import (
    Action,
    AddAddress,
    AddRoute,
    CreateLink,
    DeleteLink,
    Phase,
    Plan,
    RemoveAddress,
    SetBridgeOptions,
    SetLinkUp,
    SetMac,
    SetMaster,
    SetMtu,
    SetSysctl,
)
from vnetd.plan.interfaces import plan_interfaces
from vnetd.plan.planner import Observed, plan
from vnetd.plan.sysctl import plan_sysctls

ip = ipaddress.ip_interface
UP, DOWN, ABSENT = AdminState.UP, AdminState.DOWN, AdminState.ABSENT


def net(*links: Link, addresses: tuple[Address, ...] = ()) -> NetState:
    return NetState.build(links, addresses, ())


def nic(index: int, name: str, **kw: object) -> Link:
    return make_link(index, name, None, **kw)  # type: ignore[arg-type]


def bridge_link(index: int, name: str, **kw: object) -> Link:
    return make_link(index, name, "bridge", **kw)  # type: ignore[arg-type]


def eth(name: str, state: AdminState = UP, **kw: object) -> Interface:
    return Interface(name, IfType.ETHERNET, state, **kw)  # type: ignore[arg-type]


NO_STP = StpOptions()


def bridge(name: str, *ports: str, stp: StpOptions = NO_STP, state: AdminState = UP,
           **kw: object) -> Interface:
    return Interface(name, IfType.BRIDGE, state, bridge=BridgeConfig(stp, ports or None),
                     **kw)  # type: ignore[arg-type]


def plan_of(*interfaces: Interface, observed: NetState, routes: tuple[RouteSpec, ...] = ()) -> Plan:
    return plan(DesiredState(interfaces=interfaces, routes=routes), Observed(net=observed))


def drift(p: Plan) -> list[tuple[str, str, object, object, str]]:
    """(resource, field, want, have, op) of every action, in plan order."""
    return [(a.resource, a.field, a.want, a.have, type(a.op).__name__) for a in p.actions]


def index_of(p: Plan, op: object) -> int:
    return [a.op for a in p.actions].index(op)


def action(p: Plan, op: object) -> Action:
    return p.actions[index_of(p, op)]


def converge(p: Plan, desired: DesiredState, kernel: FakeKernel) -> None:
    """Apply the plan; the kernel refuses nothing and the next plan is empty."""
    assert kernel.run(p.actions) == []
    again = plan(desired, Observed(net=kernel.observe()))
    assert again.actions == () and again.problems == (), [a.describe() for a in again.actions]


# --------------------------------------------------------------------------- ordering


def test_a_bridge_is_created_before_its_ports_are_enslaved() -> None:
    observed = net(nic(2, "eth1"))
    desired = DesiredState(interfaces=(bridge("br0", "eth1"),))
    p = plan(desired, Observed(net=observed))
    assert drift(p) == [
        ("interface/br0", "exists", "linux-bridge", None, "CreateLink"),
        ("interface/eth1", "controller", "br0", None, "SetMaster"),
        ("interface/br0", "state", "up", None, "SetLinkUp"),
    ]
    assert index_of(p, CreateLink("br0", "bridge", stp=StpOptions())) < index_of(p, SetMaster("eth1", "br0"))
    kernel = FakeKernel(observed)
    converge(p, desired, kernel)
    assert kernel.master_of("eth1") == "br0"


def test_raising_mtu_goes_port_first_then_bridge() -> None:
    observed = net(bridge_link(3, "br0"), nic(2, "eth1", master=3))
    desired = DesiredState(interfaces=(bridge("br0", "eth1", mtu=9000), eth("eth1", mtu=9000)))
    p = plan(desired, Observed(net=observed))
    assert drift(p) == [
        ("interface/eth1", "mtu", 9000, 1500, "SetMtu"),
        ("interface/br0", "mtu", 9000, 1500, "SetMtu"),
    ]
    assert all(a.phase is Phase.MTU_UP for a in p.actions)
    converge(p, desired, FakeKernel(observed))


def test_lowering_mtu_goes_bridge_first_then_port() -> None:
    observed = net(bridge_link(3, "br0", mtu=9000), nic(2, "eth1", mtu=9000, master=3))
    desired = DesiredState(interfaces=(eth("eth1", mtu=1500), bridge("br0", "eth1", mtu=1500)))
    p = plan(desired, Observed(net=observed))
    assert drift(p) == [
        ("interface/br0", "mtu", 1500, 9000, "SetMtu"),
        ("interface/eth1", "mtu", 1500, 9000, "SetMtu"),
    ]
    assert all(a.phase is Phase.MTU_DOWN for a in p.actions)
    converge(p, desired, FakeKernel(observed, mtu_set_by_user=["br0"]))


def test_mtu_goes_up_before_ports_are_enslaved_and_down_after() -> None:
    observed = net(bridge_link(3, "br0", mtu=1500), nic(2, "eth1", mtu=1500), nic(4, "eth2", mtu=9000))
    desired = DesiredState(interfaces=(bridge("br0", "eth1", "eth2", mtu=4000), eth("eth1", mtu=4000),
                                       eth("eth2", mtu=4000)))
    p = plan(desired, Observed(net=observed))
    up, down = index_of(p, SetMtu("eth1", 4000)), index_of(p, SetMtu("eth2", 4000))
    enslave = index_of(p, SetMaster("eth1", "br0"))
    assert up < index_of(p, SetMtu("br0", 4000)) < enslave < down
    converge(p, desired, FakeKernel(observed))


def test_a_new_bridge_keeps_its_declared_mtu_when_a_smaller_port_joins() -> None:
    """The kernel's bridge follows its smallest port until its MTU is set; setting a new
    bridge to the 1500 it already has sets nothing, so the MTU is set again last."""
    observed = net(nic(2, "eth1", mtu=1280))
    desired = DesiredState(interfaces=(bridge("br0", "eth1", mtu=1500),))
    p = plan(desired, Observed(net=observed))
    last = p.actions[index_of(p, SetMaster("eth1", "br0")) + 1]
    assert (last.op, last.phase, last.field, last.want, last.have) == (
        SetMtu("br0", 1500), Phase.MTU_DOWN, "mtu", 1500, 1280)
    kernel = FakeKernel(observed)
    converge(p, desired, kernel)
    assert kernel.link("br0").mtu == 1500  # type: ignore[union-attr]


def test_the_kernel_model_really_moves_a_following_bridge() -> None:
    """Why the case above matters: without the last SetMtu the bridge ends at 1280."""
    kernel = FakeKernel(net(nic(2, "eth1", mtu=1280)))
    kernel.apply(CreateLink("br0", "bridge"))
    kernel.apply(SetMtu("br0", 1500))
    kernel.apply(SetMaster("eth1", "br0"))
    assert kernel.link("br0").mtu == 1280 and not kernel.mtu_set_by_user("br0")  # type: ignore[union-attr]


def test_admin_state_after_everything_else_ports_before_bridges() -> None:
    observed = net(nic(2, "eth1", up=False))
    desired = DesiredState(interfaces=(bridge("br0", "eth1"), eth("eth1")))
    p = plan(desired, Observed(net=observed))
    assert index_of(p, SetLinkUp("eth1", True)) < index_of(p, SetLinkUp("br0", True))
    assert action(p, SetLinkUp("eth1", True)).have == "down"
    assert p.actions[-1].op == SetLinkUp("br0", True)


def test_addresses_are_added_before_the_routes_that_need_them() -> None:
    observed = net(nic(2, "eth1"))
    route = RouteSpec(ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_address("192.0.2.254"))
    desired = DesiredState(interfaces=(bridge("br0", "eth1", ipv4=IpConfig(True, (ip("192.0.2.1/24"),))),),
                           routes=(route,))
    p = plan(desired, Observed(net=observed))
    add = index_of(p, AddAddress("br0", ip("192.0.2.1/24")))
    assert add < index_of(p, AddRoute(route.destination, 254, route.next_hop_address, None, None))
    assert action(p, AddAddress("br0", ip("192.0.2.1/24"))).field == "ipv4.address"
    converge(p, desired, FakeKernel(observed))


def test_absent_links_are_deleted_first() -> None:
    observed = net(nic(2, "eth1", master=5), bridge_link(5, "br9"))
    desired = DesiredState(interfaces=(bridge("br0", "eth1"), bridge("br9", state=ABSENT)))
    p = plan(desired, Observed(net=observed))
    first = p.actions[0]
    assert (first.op, first.resource, first.field, first.want, first.have) == (
        DeleteLink("br9"), "interface/br9", "exists", "absent", "bridge")
    assert action(p, SetMaster("eth1", "br0")).have == "br9"
    kernel = FakeKernel(observed)
    converge(p, desired, kernel)
    assert kernel.link("br9") is None


# --------------------------------------------------------------------------- only what is written


def test_an_entry_with_only_name_type_and_state_manages_nothing_else() -> None:
    observed = net(nic(2, "eth1", mtu=9000, mac="52:54:00:00:00:01", master=7), bridge_link(7, "br7"),
                   addresses=(Address(2, ip("192.0.2.7/24")), Address(2, ip("2001:db8::7/64"))))
    assert plan_of(eth("eth1"), observed=observed) == Plan()
    assert drift(plan_of(eth("eth1", DOWN), observed=observed)) == [
        ("interface/eth1", "state", "down", "up", "SetLinkUp")]


def test_an_unwritten_address_family_is_left_alone() -> None:
    observed = net(nic(2, "eth1"), addresses=(Address(2, ip("192.0.2.7/24")), Address(2, ip("2001:db8::7/64"))))
    p = plan_of(eth("eth1", ipv4=IpConfig(True, (ip("192.0.2.7/24"),))), observed=observed)
    assert p == Plan()


def test_mac_and_mtu_are_managed_when_written() -> None:
    observed = net(nic(2, "eth1", mac="52:54:00:00:00:01"))
    p = plan_of(eth("eth1", mtu=9000, mac="52:54:00:0a:fa:3e"), observed=observed)
    assert drift(p) == [
        ("interface/eth1", "mac-address", "52:54:00:0a:fa:3e", "52:54:00:00:00:01", "SetMac"),
        ("interface/eth1", "mtu", 9000, 1500, "SetMtu"),
    ]


# --------------------------------------------------------------------------- ports


def test_ports_not_listed_are_left_alone() -> None:
    """A guest's vnet0 on br0 is never released, whatever br0's port list says."""
    observed = net(bridge_link(3, "br0"), nic(2, "eth1", master=3), nic(4, "eth2"),
                   make_link(9, "vnet0", "tun", master=3))
    assert plan_of(bridge("br0", "eth1"), observed=observed) == Plan()
    desired = DesiredState(interfaces=(bridge("br0", "eth2"),))
    p = plan(desired, Observed(net=observed))
    assert drift(p) == [("interface/eth2", "controller", "br0", None, "SetMaster")]
    kernel = FakeKernel(observed)
    converge(p, desired, kernel)
    assert kernel.master_of("vnet0") == "br0" and kernel.master_of("eth1") == "br0"


def test_a_port_on_another_bridge_is_moved() -> None:
    observed = net(bridge_link(3, "br0"), bridge_link(5, "br1"), nic(2, "eth1", master=5))
    p = plan_of(bridge("br0", "eth1"), observed=observed)
    assert drift(p) == [("interface/eth1", "controller", "br0", "br1", "SetMaster")]


def test_a_missing_port_that_nothing_creates_is_a_problem() -> None:
    p = plan_of(bridge("br0", "eth7"), observed=net(bridge_link(3, "br0")))
    assert p.actions == ()
    assert [(pr.resource, pr.message) for pr in p.problems] == [
        ("interface/eth7", "port of br0 does not exist")]


def test_a_veth_created_by_the_plan_can_be_a_port() -> None:
    veth = Interface("va0", IfType.VETH, veth_peer="vb0")
    observed = net(bridge_link(3, "br0"))
    desired = DesiredState(interfaces=(veth, Interface("vb0", IfType.VETH, veth_peer="va0"), bridge("br0", "vb0")))
    p = plan(desired, Observed(net=observed))
    assert index_of(p, CreateLink("va0", "veth", veth_peer="vb0")) < index_of(p, SetMaster("vb0", "br0"))
    converge(p, desired, FakeKernel(observed))


# --------------------------------------------------------------------------- existence and problems


def test_absent_deletes_virtual_interfaces_only() -> None:
    observed = net(nic(2, "eth1"), make_link(3, "eth2", "veth", peer=4), make_link(4, "eth2p", "veth", peer=3),
                   make_link(5, "va0", "veth", peer=6), make_link(6, "vb0", "veth", peer=5))
    nic_absent = plan_of(eth("eth1", ABSENT), observed=observed)
    assert nic_absent.actions == ()
    assert [p.resource for p in nic_absent.problems] == ["interface/eth1"]
    untyped = plan_of(Interface("eth1", None, ABSENT), observed=observed)
    assert untyped.actions == () and "virtual interfaces only" in untyped.problems[0].message
    # a stand-in NIC (a veth) declared as ethernet is a NIC to vnetd: never deleted
    stand_in = plan_of(eth("eth2", ABSENT), observed=observed)
    assert stand_in.actions == () and [p.resource for p in stand_in.problems] == ["interface/eth2"]
    veth = plan_of(Interface("va0", IfType.VETH, ABSENT), observed=observed)
    assert drift(veth) == [("interface/va0", "exists", "absent", "veth", "DeleteLink")]
    wrong_kind = plan_of(Interface("va0", IfType.BRIDGE, ABSENT), observed=observed)
    assert wrong_kind.actions == () and "not deleting it" in wrong_kind.problems[0].message
    assert plan_of(Interface("br5", IfType.BRIDGE, ABSENT), observed=observed) == Plan()


def test_a_missing_ethernet_nic_is_a_problem() -> None:
    p = plan_of(eth("eth3", mtu=9000, ipv4=IpConfig(True, (ip("192.0.2.1/24"),))), observed=net())
    assert p.actions == ()
    assert [(pr.resource, pr.message) for pr in p.problems] == [
        ("interface/eth3", "no such device; a ethernet interface is never created by vnetd")]


def test_a_type_clash_is_a_problem_and_nothing_is_done_to_it() -> None:
    observed = net(make_link(3, "br0", "veth", peer=4), make_link(4, "x", "veth", peer=3), nic(2, "eth1"))
    p = plan_of(bridge("br0", "eth1", mtu=9000, stp=StpOptions(enabled=False)), observed=observed)
    assert p.actions == ()  # not even enslaving eth1 to what is a veth
    assert [pr.resource for pr in p.problems] == ["interface/br0"]
    assert "exists as veth, but is declared linux-bridge" in p.problems[0].message


def test_a_nic_declared_as_a_bridge_port_that_is_a_bridge_is_a_problem() -> None:
    observed = net(bridge_link(3, "br0"), bridge_link(4, "br1"))
    p = plan_of(bridge("br0", "br1"), observed=observed)
    assert p.actions == () and "is a bridge" in p.problems[0].message


@pytest.mark.parametrize("order", ["a-first", "b-first"])
@pytest.mark.parametrize("b_names_peer", [True, False])
def test_a_veth_pair_is_created_once_when_both_ends_are_declared(order: str, b_names_peer: bool) -> None:
    a = Interface("va0", IfType.VETH, veth_peer="vb0", mtu=9000)
    b = Interface("vb0", IfType.VETH, veth_peer="va0" if b_names_peer else None, ipv4=IpConfig(True, (ip("192.0.2.9/24"),)))
    interfaces = (a, b) if order == "a-first" else (b, a)
    desired = DesiredState(interfaces=interfaces)
    p = plan(desired, Observed(net=net()))
    creates = [x for x in p.actions if isinstance(x.op, CreateLink)]
    assert len(creates) == 1 and p.problems == ()
    assert creates[0].op.veth_peer in {"va0", "vb0"} - {creates[0].op.name}
    assert {x.op.name for x in p.actions if isinstance(x.op, SetLinkUp)} == {"va0", "vb0"}
    converge(p, desired, FakeKernel())


def test_a_veth_peer_gets_its_own_mac_address() -> None:
    desired = DesiredState(interfaces=(Interface("va0", IfType.VETH, veth_peer="vb0", mac="02:00:00:00:00:0a"),
                                       Interface("vb0", IfType.VETH, veth_peer="va0", mac="02:00:00:00:00:0b")))
    p = plan(desired, Observed(net=net()))
    assert action(p, SetMac("vb0", "02:00:00:00:00:0b")).phase is Phase.LINK_PROPERTIES
    assert action(p, CreateLink("va0", "veth", mac="02:00:00:00:00:0a", veth_peer="vb0")).field == "exists"
    converge(p, desired, FakeKernel())


def test_a_veth_whose_peer_name_is_taken_is_a_problem() -> None:
    observed = net(nic(2, "vb0"))
    p = plan_of(Interface("va0", IfType.VETH, veth_peer="vb0"), observed=observed)
    assert p.actions == ()
    assert "peer name 'vb0' is taken" in p.problems[0].message
    with pytest.raises(KernelError):  # what the kernel says (and creating tolerates as "exists")
        FakeKernel(observed).apply(CreateLink("va0", "veth", veth_peer="vb0"))


def test_a_lone_veth_end_cannot_be_created() -> None:
    p = plan_of(Interface("va0", IfType.VETH), observed=net())
    assert p.actions == () and "veth.peer" in p.problems[0].message


# --------------------------------------------------------------------------- bridge options


def test_stp_is_turned_off_before_forward_delay_zero() -> None:
    observed = net(bridge_link(3, "br0", bridge=BridgeInfo(1, 1500, 200, 2000, 32768)))
    desired = DesiredState(interfaces=(bridge("br0", stp=StpOptions(enabled=False, forward_delay=0)),))
    p = plan(desired, Observed(net=observed))
    assert drift(p) == [
        ("interface/br0", "bridge.options.stp.enabled", False, True, "SetBridgeOptions"),
        ("interface/br0", "bridge.options.stp.forward-delay", 0, 15, "SetBridgeOptions"),
    ]
    assert [a.op for a in p.actions] == [SetBridgeOptions("br0", StpOptions(enabled=False)),
                                         SetBridgeOptions("br0", StpOptions(forward_delay=0))]
    converge(p, desired, FakeKernel(observed))
    with pytest.raises(KernelError, match="ERANGE"):  # the other order
        FakeKernel(observed).apply(SetBridgeOptions("br0", StpOptions(forward_delay=0)))


def test_stp_is_turned_on_after_the_timers() -> None:
    observed = net(bridge_link(3, "br0", bridge=BridgeInfo(0, 0, 200, 2000, 32768)))
    stp = StpOptions(enabled=True, forward_delay=4, hello_time=1, max_age=10, priority=4096)
    desired = DesiredState(interfaces=(bridge("br0", stp=stp),))
    p = plan(desired, Observed(net=observed))
    assert [a.field.removeprefix("bridge.options.stp.") for a in p.actions] == [
        "forward-delay", "hello-time", "max-age", "priority", "enabled"]
    assert [(a.want, a.have) for a in p.actions] == [(4, 0), (1, 2), (10, 20), (4096, 32768), (True, False)]
    kernel = FakeKernel(observed)
    converge(p, desired, kernel)
    assert kernel.link("br0").bridge == BridgeInfo(1, 400, 100, 1000, 4096)  # type: ignore[union-attr]


def test_a_new_bridge_gets_its_options_when_created() -> None:
    stp = StpOptions(enabled=False, forward_delay=0)
    desired = DesiredState(interfaces=(bridge("br0", stp=stp),))
    p = plan(desired, Observed(net=net()))
    assert p.actions[0].op == CreateLink("br0", "bridge", stp=stp)
    kernel = FakeKernel()
    converge(p, desired, kernel)
    assert kernel.link("br0").bridge == BridgeInfo(0, 0, 200, 2000, 32768)  # type: ignore[union-attr]


def test_forward_delay_zero_while_unmanaged_stp_is_on_is_a_problem() -> None:
    observed = net(bridge_link(3, "br0", bridge=BridgeInfo(1, 1500, 200, 2000, 32768)))
    p = plan_of(bridge("br0", stp=StpOptions(forward_delay=0, priority=0)), observed=observed)
    assert drift(p) == [("interface/br0", "bridge.options.stp.priority", 0, 32768, "SetBridgeOptions")]
    assert [pr.resource for pr in p.problems] == ["interface/br0"]
    assert "stp.enabled: false" in p.problems[0].message
    # with STP off the same entry is fine
    off = net(bridge_link(3, "br0", bridge=BRIDGE_DEFAULTS))
    assert drift(plan_of(bridge("br0", stp=StpOptions(forward_delay=0)), observed=off)) == [
        ("interface/br0", "bridge.options.stp.forward-delay", 0, 15, "SetBridgeOptions")]


# --------------------------------------------------------------------------- addresses


def test_addresses_not_in_a_written_list_are_removed() -> None:
    observed = net(nic(2, "eth1"), addresses=(Address(2, ip("192.0.2.1/24")), Address(2, ip("198.51.100.7/24"))))
    desired = DesiredState(interfaces=(eth("eth1", ipv4=IpConfig(True, (ip("192.0.2.1/24"), ip("192.0.2.2/24")))),))
    p = plan(desired, Observed(net=observed))
    want, have = ["192.0.2.1/24", "192.0.2.2/24"], ["192.0.2.1/24", "198.51.100.7/24"]
    assert drift(p) == [
        ("interface/eth1", "ipv4.address", want, have, "RemoveAddress"),
        ("interface/eth1", "ipv4.address", want, have, "AddAddress"),
    ]
    assert [a.op for a in p.actions] == [RemoveAddress("eth1", ip("198.51.100.7/24")),
                                         AddAddress("eth1", ip("192.0.2.2/24"))]
    kernel = FakeKernel(observed)
    converge(p, desired, kernel)
    assert kernel.addresses("eth1") >= {ip("192.0.2.1/24"), ip("192.0.2.2/24")}


def test_ipv6_link_local_addresses_are_never_removed() -> None:
    link_local, other = ip("fe80::5054:ff:fe00:1/64"), ip("2001:db8::1/64")
    observed = net(nic(2, "eth1"), addresses=(Address(2, link_local, scope=253), Address(2, other)))
    p = plan_of(eth("eth1", ipv6=IpConfig(True, (ip("2001:db8::2/64"),))), observed=observed)
    assert [a.op for a in p.actions] == [RemoveAddress("eth1", other), AddAddress("eth1", ip("2001:db8::2/64"))]
    assert action(p, RemoveAddress("eth1", other)).have == ["2001:db8::1/64"]  # link-local is not shown either
    disabled = plan_of(eth("eth1", ipv6=IpConfig(False, ())), observed=observed)
    assert [a.op for a in disabled.actions] == [RemoveAddress("eth1", other)]


def test_a_wanted_secondary_survives_the_removal_of_its_primary() -> None:
    """The kernel deletes a subnet's secondaries with its primary (promote_secondaries=0):
    the wanted ones are added again after the removal."""
    observed = net(nic(2, "eth1"), addresses=(Address(2, ip("192.0.2.1/24")), Address(2, ip("192.0.2.2/24"))))
    desired = DesiredState(interfaces=(eth("eth1", ipv4=IpConfig(True, (ip("192.0.2.2/24"),))),))
    p = plan(desired, Observed(net=observed))
    assert [a.op for a in p.actions] == [RemoveAddress("eth1", ip("192.0.2.1/24")),
                                         AddAddress("eth1", ip("192.0.2.2/24"))]
    for promote in (False, True):
        kernel = FakeKernel(observed, promote_secondaries=promote)
        converge(p, desired, kernel)
        assert kernel.addresses("eth1") == {ip("192.0.2.2/24")}


def test_ipv6_addresses_are_added_again_when_a_link_is_taken_down() -> None:
    """A link going down loses its IPv6 addresses (keep_addr_on_down=0) after the plan saw them."""
    observed = net(nic(2, "eth1"), addresses=(Address(2, ip("2001:db8::1/64")),))
    desired = DesiredState(interfaces=(eth("eth1", DOWN, ipv6=IpConfig(True, (ip("2001:db8::1/64"),))),))
    p = plan(desired, Observed(net=observed))
    assert drift(p) == [
        ("interface/eth1", "state", "down", "up", "SetLinkUp"),
        ("interface/eth1", "ipv6.address", ["2001:db8::1/64"], [], "AddAddress"),
    ]
    for keep in (False, True):
        kernel = FakeKernel(observed, keep_addr_on_down=keep)
        converge(p, desired, kernel)
        assert kernel.addresses("eth1") == {ip("2001:db8::1/64")}


def test_addresses_of_a_new_link_are_added_after_it_is_created() -> None:
    desired = DesiredState(interfaces=(bridge("br0", ipv4=IpConfig(True, (ip("192.0.2.1/24"),)),
                                              ipv6=IpConfig(True, (ip("2001:db8::1/64"),))),))
    p = plan(desired, Observed(net=net()))
    assert [a.phase for a in p.actions] == sorted(a.phase for a in p.actions)
    assert action(p, AddAddress("br0", ip("2001:db8::1/64"))).have == []
    converge(p, desired, FakeKernel())


# --------------------------------------------------------------------------- the whole example


def test_the_spec_example_converges_in_one_pass_and_leaves_the_guest_tap() -> None:
    """SPEC.md section 2: eth1 into br0 (MTU 9000, STP off, forward delay 0, an address),
    brdmz with no uplink; br0 re-created by a 'service network restart' under a guest."""
    kernel = FakeKernel()
    kernel.add_device("eth1", up=True)
    kernel.add_device("vnet0", "tun", up=True)
    kernel.apply(CreateLink("br0", "bridge", stp=StpOptions(enabled=True)))
    kernel.apply(SetMaster("vnet0", "br0"))
    stp = StpOptions(enabled=False, forward_delay=0)
    desired = DesiredState(interfaces=(
        eth("eth1", mtu=9000),
        bridge("br0", "eth1", stp=stp, mtu=9000, ipv4=IpConfig(True, (ip("192.168.10.212/24"),))),
        bridge("brdmz", stp=stp),
    ))
    before = kernel.observe()
    p = plan(desired, Observed(net=before))
    assert p.problems == ()
    converge(p, desired, kernel)
    assert kernel.master_of("vnet0") == "br0" and kernel.master_of("eth1") == "br0"
    assert kernel.link("br0").mtu == 9000 and kernel.link("eth1").mtu == 9000  # type: ignore[union-attr]
    assert kernel.link("vnet0") == before.link("vnet0")


# --------------------------------------------------------------------------- sysctl


def test_a_per_interface_key_of_an_interface_the_plan_creates_is_an_action() -> None:
    spec = SysctlSpec("net.ipv4.conf.br0.forwarding", "1")
    desired = DesiredState(interfaces=(bridge("br0"),), sysctls=(spec,))
    p = plan(desired, Observed(net=net(), sysctls={spec.key: None}))
    last = p.actions[-1]
    assert (last.op, last.phase, last.resource, last.field, last.want, last.have) == (
        SetSysctl(spec.key, "1"), Phase.SYSCTL, "sysctl/net.ipv4.conf.br0.forwarding", "value", "1", None)
    kernel = FakeKernel()
    assert kernel.run(p.actions) == []  # the key exists once br0 does
    assert kernel.sysctls[spec.key] == "1"


def test_a_missing_key_is_a_problem() -> None:
    specs = (SysctlSpec("net.bridge.bridge-nf-call-iptables", "1"), SysctlSpec("net.ipv4.conf.br7.forwarding", "1"))
    actions, problems = plan_sysctls(specs, {s.key: None for s in specs}, created={"br0"})
    assert actions == []
    assert [p.resource for p in problems] == ["sysctl/net.bridge.bridge-nf-call-iptables",
                                              "sysctl/net.ipv4.conf.br7.forwarding"]
    assert "br_netfilter" in problems[0].message and "interface" in problems[1].message


def test_a_sysctl_with_another_value_is_written() -> None:
    spec = SysctlSpec("net.ipv4.ip_forward", "1")
    actions, problems = plan_sysctls((spec,), {spec.key: "0"})
    assert problems == [] and [(a.op, a.want, a.have) for a in actions] == [(SetSysctl(spec.key, "1"), "1", "0")]
    assert plan_sysctls((spec,), {spec.key: "1"}) == ([], [])


@pytest.mark.parametrize("iface", [eth("eth3"), bridge("br9", state=ABSENT)], ids=["missing-nic", "absent"])
def test_a_key_of_an_interface_the_plan_does_not_create_is_a_problem(iface: Interface) -> None:
    spec = SysctlSpec(f"net.ipv4.conf.{iface.name}.forwarding", "1")
    p = plan(DesiredState(interfaces=(iface,), sysctls=(spec,)), Observed(net=net(), sysctls={spec.key: None}))
    assert not any(isinstance(a.op, SetSysctl) for a in p.actions)
    assert "sysctl/net.ipv4.conf." + iface.name + ".forwarding" in [pr.resource for pr in p.problems]


# --------------------------------------------------------------------------- planning in groups


def test_a_bridge_keeps_its_mtu_when_an_unlisted_declared_port_changes() -> None:
    observed = net(bridge_link(3, "br0", mtu=1500), nic(2, "eth1", mtu=1500, master=3))
    desired = DesiredState(interfaces=(bridge("br0", mtu=1500), eth("eth1", mtu=1280)))
    converge(plan(desired, Observed(net=observed)), desired, FakeKernel(observed))


def test_a_bridge_keeps_its_mtu_when_a_listed_port_changes() -> None:
    observed = net(bridge_link(3, "br0", mtu=1500), nic(2, "eth1", mtu=1500, master=3))
    desired = DesiredState(interfaces=(bridge("br0", "eth1", mtu=1500), eth("eth1", mtu=1280)))
    p = plan(desired, Observed(net=observed))
    assert drift(p) == [
        ("interface/eth1", "mtu", 1280, 1500, "SetMtu"),
        ("interface/br0", "mtu", 1500, 1280, "SetMtu"),  # what the bridge would follow its port to
    ]
    converge(p, desired, FakeKernel(observed))


def test_the_undeclared_peer_of_a_new_veth_can_be_a_port() -> None:
    observed = net(bridge_link(3, "br0"))
    desired = DesiredState(interfaces=(Interface("va0", IfType.VETH, veth_peer="vb0"), bridge("br0", "vb0")))
    assert plan_interfaces(desired.interfaces, observed)[1] == []  # planned as a whole: no problem
    p = plan(desired, Observed(net=observed))
    assert p.problems == ()
    converge(p, desired, FakeKernel(observed))


# --------------------------------------------------------------------------- the kernel model itself


def test_the_kernel_model_creates_links_with_the_kernels_defaults() -> None:
    kernel = FakeKernel(net(nic(7, "eth1")))
    kernel.apply(CreateLink("br0", "bridge"))
    kernel.apply(CreateLink("va0", "veth", veth_peer="vb0"))
    br0, va0, vb0 = kernel.link("br0"), kernel.link("va0"), kernel.link("vb0")
    assert br0 is not None and va0 is not None and vb0 is not None
    assert (br0.kind, br0.up, br0.mtu, br0.master, br0.index) == ("bridge", False, 1500, None, 8)
    assert br0.bridge == BridgeInfo(stp_state=0, forward_delay=1500, hello_time=200, max_age=2000, priority=32768)
    assert (va0.kind, vb0.kind, va0.link, vb0.link, va0.up, vb0.up) == ("veth", "veth", vb0.index, va0.index,
                                                                        False, False)
    kernel.apply(SetBridgeOptions("br0", StpOptions(forward_delay=4, hello_time=1, max_age=6, priority=0)))
    assert kernel.link("br0").bridge == BridgeInfo(0, 400, 100, 600, 0)  # type: ignore[union-attr]
    kernel.apply(DeleteLink("br0"))
    kernel.apply(CreateLink("br0", "bridge"))
    assert kernel.link("br0").index == 11  # type: ignore[union-attr]  # ifindexes are not reused


def test_the_kernel_model_deletes_a_link_with_its_addresses_routes_and_ports() -> None:
    kernel = FakeKernel(net(nic(2, "eth1"), make_link(9, "vnet0", "tun")))
    kernel.apply(CreateLink("br0", "bridge"))
    kernel.apply(SetLinkUp("br0", True))
    for port in ("eth1", "vnet0"):
        kernel.apply(SetMaster(port, "br0"))
    kernel.apply(AddAddress("br0", ip("192.0.2.1/24")))
    index = kernel.link("br0").index  # type: ignore[union-attr]
    assert any(r.oif == index for r in kernel.state.routes)
    kernel.apply(DeleteLink("br0"))
    assert kernel.link("br0") is None and kernel.state.addresses_of(index) == set()
    assert not any(r.oif == index for r in kernel.state.routes)
    assert kernel.master_of("eth1") is None and kernel.master_of("vnet0") is None
    with pytest.raises(KernelError) as refused:
        kernel.apply(DeleteLink("eth1"))
    assert refused.value.errno == errno.EOPNOTSUPP
    kernel.apply(CreateLink("va0", "veth", veth_peer="vb0"))
    kernel.apply(DeleteLink("vb0"))
    assert kernel.link("va0") is None


def test_the_kernel_model_bridge_mtu_follows_its_ports_until_set() -> None:
    kernel = FakeKernel(net(nic(2, "eth1", mtu=9000), nic(3, "eth2", mtu=4000)))
    kernel.apply(CreateLink("br0", "bridge"))
    kernel.apply(SetMaster("eth1", "br0"))
    assert kernel.link("br0").mtu == 9000  # type: ignore[union-attr]
    kernel.apply(SetMaster("eth2", "br0"))
    assert kernel.link("br0").mtu == 4000  # type: ignore[union-attr]
    kernel.apply(SetMtu("eth2", 9000))
    assert kernel.link("br0").mtu == 9000  # type: ignore[union-attr]
    kernel.apply(SetMtu("br0", 1500))
    kernel.apply(SetMtu("eth2", 4000))
    assert kernel.link("br0").mtu == 1500 and kernel.mtu_set_by_user("br0")  # type: ignore[union-attr]

