# SPDX-License-Identifier: MIT
"""Issue 5, the pure part: what vnetd decides about libvirt networks and guests' taps,
from the desired state and observed values (no root, no libvirt)."""

from __future__ import annotations

import pytest

from vnetd.model.interfaces import AdminState, BridgeConfig, IfType, Interface, Link
from vnetd.model.libvirt import GuestTap, LibvirtSpec, NetworkSpec, NetworkState, ObservedNetwork
from vnetd.model.netstate import NetState
from vnetd.model.state import DesiredState
from vnetd.plan.actions import AttachTap, CreateLink, EnsureNetwork, Phase
from vnetd.plan.libvirt import plan_libvirt
from vnetd.plan.planner import Observed, plan

XML = "<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/></network>"


def link(index: int, name: str, kind: str | None = None, mtu: int = 1500, master: int | None = None) -> Link:
    return Link(index=index, name=name, kind=kind, up=True, mtu=mtu, mac=None, master=master)


def netstate(*links: Link) -> NetState:
    return NetState.build(links, (), ())


def default_net(active: bool = True, autostart: bool = True, bridge: str | None = "virbr0",
                persistent: bool = True) -> ObservedNetwork:
    return ObservedNetwork("default", active, autostart, bridge, persistent)


def run(spec: LibvirtSpec, networks: dict[str, ObservedNetwork] | None = None, taps: tuple[GuestTap, ...] = (),
        net: NetState | None = None, interfaces: tuple[Interface, ...] = ()):  # type: ignore[no-untyped-def]
    desired = DesiredState(interfaces=interfaces, libvirt=spec)
    return plan_libvirt(spec, networks or {}, taps, desired, net or netstate())


def ops(actions) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    out = []
    for a in actions:
        assert isinstance(a.op, EnsureNetwork)
        out.append((a.op.name, a.op.operation, a.field))
    return out


def spec_of(*networks: NetworkSpec, reattach: bool = False) -> LibvirtSpec:
    return LibvirtSpec(networks=networks, reattach=reattach)


VIRBR0 = link(5, "virbr0", "bridge")

# --------------------------------------------------------------------------- networks


def test_network_as_declared_plans_nothing() -> None:
    spec = spec_of(NetworkSpec("default", NetworkState.ACTIVE, True))
    actions, problems = run(spec, {"default": default_net()}, net=netstate(VIRBR0))
    assert actions == [] and problems == []


def test_missing_network_is_defined_from_xml_then_started_and_autostarted() -> None:
    spec = spec_of(NetworkSpec("default", NetworkState.ACTIVE, True, XML))
    actions, problems = run(spec)
    assert problems == []
    assert ops(actions) == [("default", "define", "exists"), ("default", "start", "state"),
                            ("default", "autostart-on", "autostart")]
    assert actions[0].op.xml == XML and actions[1].op.xml is None
    assert all(a.resource == "libvirt/network/default" and a.phase is Phase.LIBVIRT_NETWORKS for a in actions)
    assert (actions[1].want, actions[1].have) == ("active", "absent")


def test_missing_network_without_xml_is_a_problem() -> None:
    actions, problems = run(spec_of(NetworkSpec("default")))
    assert actions == []
    assert [p.resource for p in problems] == ["libvirt/network/default"]
    assert "xml" in problems[0].message


def test_missing_inactive_network_is_only_defined() -> None:
    actions, _ = run(spec_of(NetworkSpec("default", NetworkState.INACTIVE, False, XML)))
    assert ops(actions) == [("default", "define", "exists")]


def test_inactive_network_is_started() -> None:
    actions, _ = run(spec_of(NetworkSpec("default", NetworkState.ACTIVE)), {"default": default_net(active=False)})
    assert ops(actions) == [("default", "start", "state")]
    assert (actions[0].want, actions[0].have) == ("active", "inactive")


def test_active_network_declared_inactive_is_stopped() -> None:
    actions, _ = run(spec_of(NetworkSpec("default", NetworkState.INACTIVE)), {"default": default_net()},
                     net=netstate(VIRBR0))
    assert ops(actions) == [("default", "stop", "state")]


@pytest.mark.parametrize(("want", "have", "operation"), [(True, False, "autostart-on"), (False, True, "autostart-off")])
def test_autostart_follows_the_files(want: bool, have: bool, operation: str) -> None:
    actions, _ = run(spec_of(NetworkSpec("default", NetworkState.ACTIVE, want)),
                     {"default": default_net(autostart=have)}, net=netstate(VIRBR0))
    assert ops(actions) == [("default", operation, "autostart")]
    assert (actions[0].want, actions[0].have) == (want, have)


def test_autostart_not_written_is_not_managed() -> None:
    actions, _ = run(spec_of(NetworkSpec("default", NetworkState.ACTIVE, None)),
                     {"default": default_net(autostart=False)}, net=netstate(VIRBR0))
    assert actions == []


def test_active_network_without_its_bridge_is_restarted() -> None:
    actions, _ = run(spec_of(NetworkSpec("default", NetworkState.ACTIVE, True)), {"default": default_net()})
    assert ops(actions) == [("default", "restart", "bridge")]
    assert (actions[0].want, actions[0].have) == ("virbr0", None)


def test_network_using_a_host_bridge_is_not_restarted() -> None:
    # the backend reports bridge=None when libvirt does not create the bridge itself
    actions, _ = run(spec_of(NetworkSpec("default")), {"default": default_net(bridge=None)})
    assert actions == []


def test_inactive_network_without_bridge_is_started_not_restarted() -> None:
    actions, _ = run(spec_of(NetworkSpec("default")), {"default": default_net(active=False)})
    assert ops(actions) == [("default", "start", "state")]


def test_absent_network_is_stopped_then_undefined() -> None:
    actions, _ = run(spec_of(NetworkSpec("default", NetworkState.ABSENT)), {"default": default_net()},
                     net=netstate(VIRBR0))
    assert ops(actions) == [("default", "stop", "state"), ("default", "undefine", "exists")]


def test_absent_inactive_network_is_undefined_and_transient_one_only_stopped() -> None:
    spec = spec_of(NetworkSpec("default", NetworkState.ABSENT))
    assert ops(run(spec, {"default": default_net(active=False)})[0]) == [("default", "undefine", "exists")]
    assert ops(run(spec, {"default": default_net(persistent=False)}, net=netstate(VIRBR0))[0]) == [
        ("default", "stop", "state")]
    assert run(spec, {})[0] == []


def test_transient_network_cannot_autostart_without_xml() -> None:
    actions, problems = run(spec_of(NetworkSpec("default", NetworkState.ACTIVE, True)),
                            {"default": default_net(autostart=False, persistent=False)}, net=netstate(VIRBR0))
    assert actions == [] and "transient" in problems[0].message


def test_transient_network_with_xml_is_defined_first() -> None:
    actions, problems = run(spec_of(NetworkSpec("default", NetworkState.ACTIVE, True, XML)),
                            {"default": default_net(autostart=False, persistent=False)}, net=netstate(VIRBR0))
    assert problems == []
    assert ops(actions) == [("default", "define", "persistent"), ("default", "autostart-on", "autostart")]


def test_undeclared_networks_are_left_alone() -> None:
    other = ObservedNetwork("other", False, False, "virbr9")
    actions, problems = run(spec_of(), {"other": other})
    assert actions == [] and problems == []


# --------------------------------------------------------------------------- guests' taps

BR0 = Interface("br0", IfType.BRIDGE, mtu=9000, bridge=BridgeConfig())
BRDMZ = Interface("brdmz", IfType.BRIDGE, bridge=BridgeConfig())
TAPS = (GuestTap("gw", "vnet0", "br0"), GuestTap("gw", "vnet1", "brdmz"), GuestTap("dmz", "vnet2", "brdmz"))


def taps_plan(net: NetState, interfaces: tuple[Interface, ...] = (BR0, BRDMZ), reattach: bool = True,
              taps: tuple[GuestTap, ...] = TAPS):  # type: ignore[no-untyped-def]
    return run(spec_of(reattach=reattach), taps=taps, net=net, interfaces=interfaces)


def attaches(actions) -> list[tuple[str, str, str, int | None]]:  # type: ignore[no-untyped-def]
    out = []
    for a in actions:
        assert isinstance(a.op, AttachTap) and a.phase is Phase.GUEST_TAPS and a.field == "controller"
        assert a.resource == f"guest/{a.op.domain}/{a.op.tap}"
        out.append((a.op.domain, a.op.tap, a.op.bridge, a.op.mtu))
    return out


def test_taps_on_their_bridges_plan_nothing() -> None:
    net = netstate(link(2, "br0", "bridge", 9000), link(3, "brdmz", "bridge"),
                   link(10, "vnet0", "tun", 9000, master=2), link(11, "vnet1", "tun", master=3),
                   link(12, "vnet2", "tun", master=3))
    assert taps_plan(net) == ([], [])


def test_released_tap_is_attached_with_the_declared_mtu() -> None:
    net = netstate(link(2, "br0", "bridge", 1500), link(3, "brdmz", "bridge"), link(10, "vnet0", "tun"),
                   link(11, "vnet1", "tun", master=3), link(12, "vnet2", "tun", master=3))
    actions, problems = taps_plan(net)
    assert problems == []
    assert attaches(actions) == [("gw", "vnet0", "br0", 9000)]  # the declared MTU, not the drifted one
    assert (actions[0].want, actions[0].have) == ("br0", None)


def test_tap_uses_the_bridge_current_mtu_when_none_is_declared() -> None:
    net = netstate(link(3, "brdmz", "bridge", 1400), link(11, "vnet1", "tun"))
    actions, _ = taps_plan(net, taps=(GuestTap("gw", "vnet1", "brdmz"),))
    assert attaches(actions) == [("gw", "vnet1", "brdmz", 1400)]


def test_tap_on_an_undeclared_bridge_uses_its_mtu() -> None:
    net = netstate(link(5, "virbr0", "bridge", 1500), link(13, "vnet3", "tun"))
    actions, _ = taps_plan(net, interfaces=(), taps=(GuestTap("nat", "vnet3", "virbr0"),))
    assert attaches(actions) == [("nat", "vnet3", "virbr0", 1500)]


def test_tap_on_another_bridge_is_moved() -> None:
    net = netstate(link(2, "br0", "bridge", 9000), link(3, "brdmz", "bridge"), link(10, "vnet0", "tun", master=3))
    actions, _ = taps_plan(net, taps=TAPS[:1])
    assert attaches(actions) == [("gw", "vnet0", "br0", 9000)]
    assert actions[0].have == "brdmz"


def test_reattach_off_plans_nothing() -> None:
    net = netstate(link(2, "br0", "bridge"), link(10, "vnet0", "tun"))
    assert taps_plan(net, reattach=False) == ([], [])


def test_missing_tap_is_not_an_error() -> None:
    net = netstate(link(2, "br0", "bridge", 9000), link(3, "brdmz", "bridge"))
    assert taps_plan(net) == ([], [])


def test_declared_bridge_being_created_gets_its_taps_in_the_same_plan() -> None:
    net = netstate(link(2, "br0", "bridge", 9000), link(10, "vnet0", "tun", master=2),
                   link(11, "vnet1", "tun"), link(12, "vnet2", "tun"))
    actions, _ = taps_plan(net)
    assert attaches(actions) == [("gw", "vnet1", "brdmz", None), ("dmz", "vnet2", "brdmz", None)]


def test_missing_undeclared_bridge_is_waited_for() -> None:
    # libvirt's own bridge (virbr0): the network's restart re-creates it; the tap follows
    net = netstate(link(13, "vnet3", "tun"))
    assert taps_plan(net, interfaces=(), taps=(GuestTap("nat", "vnet3", "virbr0"),)) == ([], [])


def test_bridge_declared_absent_gets_no_taps() -> None:
    gone = Interface("brdmz", IfType.BRIDGE, state=AdminState.ABSENT)
    for net in (netstate(link(11, "vnet1", "tun")), netstate(link(3, "brdmz", "bridge"), link(11, "vnet1", "tun"))):
        assert taps_plan(net, interfaces=(gone,), taps=TAPS[1:2]) == ([], [])


def test_tap_source_that_is_not_a_bridge_is_a_problem() -> None:
    net = netstate(link(4, "eth9", None), link(10, "vnet0", "tun"))
    actions, problems = taps_plan(net, interfaces=(), taps=(GuestTap("gw", "vnet0", "eth9"),))
    assert actions == [] and problems[0].resource == "guest/gw/vnet0"


def test_one_tap_claimed_by_two_guests_is_a_problem_not_a_fight() -> None:
    net = netstate(link(2, "br0", "bridge"), link(3, "brdmz", "bridge"), link(10, "vnet0", "tun"))
    taps = (GuestTap("a", "vnet0", "br0"), GuestTap("b", "vnet0", "brdmz"))
    actions, problems = taps_plan(net, taps=taps)
    assert actions == [] and len(problems) == 1 and "vnet0" in problems[0].message


# --------------------------------------------------------------------------- the whole planner


def test_whole_plan_orders_networks_and_taps_after_links() -> None:
    """brdmz deleted under running guests, the NAT network's bridge deleted too: one plan
    re-creates brdmz, restarts the network, then puts the guests' taps back on brdmz."""
    spec = LibvirtSpec(networks=(NetworkSpec("default", NetworkState.ACTIVE, True),), reattach=True)
    desired = DesiredState(interfaces=(BR0, BRDMZ), libvirt=spec)
    net = netstate(link(2, "br0", "bridge", 9000), link(10, "vnet0", "tun", 9000, master=2),
                   link(11, "vnet1", "tun"), link(12, "vnet2", "tun"), link(13, "vnet3", "tun"))
    observed = Observed(net=net, networks={"default": default_net()},
                        guest_taps=(*TAPS, GuestTap("nat", "vnet3", "virbr0")))
    result = plan(desired, observed)
    kinds = [(type(a.op).__name__, a.resource) for a in result.actions]
    create = kinds.index(("CreateLink", "interface/brdmz"))
    restart = kinds.index(("EnsureNetwork", "libvirt/network/default"))
    taps = [i for i, k in enumerate(kinds) if k[0] == "AttachTap"]
    assert [kinds[i][1] for i in taps] == ["guest/gw/vnet1", "guest/dmz/vnet2"]
    assert create < restart < min(taps)
    assert isinstance(result.actions[create].op, CreateLink)
    assert result.problems == ()


def test_libvirt_unreachable_is_not_planned() -> None:
    spec = LibvirtSpec(networks=(NetworkSpec("default"),), reattach=True)
    result = plan(DesiredState(libvirt=spec), Observed(net=netstate(), networks=None))
    assert result.actions == ()
