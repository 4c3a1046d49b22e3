# SPDX-License-Identifier: MIT
"""Properties of the planner against an in-memory kernel (tests/unit/fake_kernel.py).

For random desired states (bridges, veths and NICs with optional MTU, admin state,
STP options, ports, IPv4/IPv6 addresses from the documentation ranges, routes via
the bridges) and random kernels (a random subset of those links, then random drift:
MTUs, masters, admin states, addresses, bridge options, routes; plus foreign links,
addresses and routes that the desired state does not name):

* one pass converges: when the first plan has no Problems, its actions applied in
  order leave a kernel whose plan is empty, and planning again is still empty;
* the daemon's memoized plan (one NetState kept up to date between passes) is the
  plan computed from scratch;
* ownership: no action touches a link the desired state does not name (except
  enslaving a listed port), and foreign links, addresses and routes are unchanged;
* every action names its drift: want differs from have.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.unit.fake_kernel import FakeKernel, KernelError
from vnetd.model.interfaces import AdminState, BridgeConfig, IfType, Interface, IpConfig, IpInterface, StpOptions
from vnetd.model.netstate import NetState
from vnetd.model.routes import KERNEL_ROUTE_PROTOCOL, Route, RouteSpec
from vnetd.model.state import DesiredState
from vnetd.plan.actions import (
    AddAddress,
    AddRoute,
    CreateLink,
    Op,
    Plan,
    RemoveAddress,
    RemoveRoute,
    SetBridgeOptions,
    SetLinkUp,
    SetMac,
    SetMaster,
    SetMtu,
)
from vnetd.plan.planner import Observed, PlanMemo, plan
from vnetd.plan.routes import matches

NICS = ("eth0", "eth1", "eth2", "eth3")
PAIRS = (("va0", "vb0"), ("va1", "vb1"))
VETHS = tuple(end for pair in PAIRS for end in pair)
BRIDGES = ("br0", "br1", "br2")
OURS = NICS + VETHS + BRIDGES
FOREIGN_NIC, FOREIGN_BRIDGE, FOREIGN_TAPS, FOREIGN_PAIR = "eth9", "virbr9", ("vnet0", "vnet1"), ("fa0", "fb0")
FOREIGN = (FOREIGN_NIC, FOREIGN_BRIDGE, *FOREIGN_TAPS, *FOREIGN_PAIR)
MTUS = (1280, 1500, 4000, 9000)
MACS = ("02:00:00:00:00:01", "02:aa:bb:cc:dd:ee", "52:54:00:0a:fa:3e")


def pool(name: str) -> tuple[IpInterface, ...]:
    """Each link's own /28 of 192.0.2.0/24 and /64 of 2001:db8::/32: host 1-3, and host 1
    with another prefix (an address the kernel holds twice for IPv4, once for IPv6)."""
    names = OURS + FOREIGN
    k = names.index(name)
    v4 = 16 * k if name in OURS else 16 * (k - len(OURS))
    net4 = "192.0.2" if name in OURS else "203.0.113"
    return (*(ipaddress.ip_interface(f"{net4}.{v4 + h}/28") for h in (1, 2, 3)),
            ipaddress.ip_interface(f"{net4}.{v4 + 1}/29"),
            *(ipaddress.ip_interface(f"2001:db8:{0 if name in OURS else 0xf}:{k:x}::{h}/64") for h in (1, 2)),
            ipaddress.ip_interface(f"2001:db8:{0 if name in OURS else 0xf}:{k:x}::3/80"))


#: destinations of declared routes, of routes declared absent, of foreign routes
DESTS = tuple(ipaddress.ip_network(n) for n in ("198.51.100.0/26", "198.51.100.64/26", "0.0.0.0/0",
                                                  "2001:db8:ff00::/64", "2001:db8:ff01::/64", "::/0"))
GONE = tuple(ipaddress.ip_network(n) for n in ("198.51.100.128/26", "198.51.100.192/26", "2001:db8:fe00::/64"))
ELSEWHERE = tuple(ipaddress.ip_network(n) for n in ("203.0.113.128/26", "2001:db8:fd00::/64"))


def gateway_in(ip: IpInterface) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A neighbour on ``ip``'s subnet that no pool address uses."""
    return ip.network[-2] if ip.version == 4 else ip.network[0xfe]


# --------------------------------------------------------------------------- desired


@st.composite
def ip_configs(draw: st.DrawFn, name: str, version: int) -> IpConfig | None:
    kind = draw(st.sampled_from(["unmanaged", "list", "list", "disabled"]))
    if kind == "unmanaged":
        return None
    if kind == "disabled":
        return IpConfig(False, ())
    candidates = [ip for ip in pool(name) if ip.version == version]
    # one IPv6 address with two prefixes cannot be held by the kernel (see the report on
    # the loader), two IPv4 ones can: unique_by keeps IPv6 lists to one prefix per address
    unique_by = (lambda ip: ip.ip) if version == 6 else (lambda ip: ip)
    addrs = draw(st.lists(st.sampled_from(candidates), unique_by=unique_by, max_size=3))
    return IpConfig(True, tuple(addrs))


@st.composite
def stp_options(draw: st.DrawFn, for_desired: bool = True) -> StpOptions:
    enabled = draw(st.sampled_from([None, True, False]))
    low = 2 if enabled or not for_desired else 0  # the loader's rule; and a kernel with STP on
    return StpOptions(
        enabled=enabled,
        forward_delay=draw(st.none() | st.integers(low, 30)),
        hello_time=draw(st.none() | st.integers(1, 10)),
        max_age=draw(st.none() | st.integers(6, 40)),
        priority=draw(st.none() | st.sampled_from([0, 4096, 32768, 61440])),
    )


@st.composite
def link_fields(draw: st.DrawFn, name: str) -> dict[str, object]:
    return {
        "state": draw(st.sampled_from([AdminState.UP, AdminState.UP, AdminState.DOWN])),
        "mtu": draw(st.none() | st.sampled_from(MTUS)),
        "mac": draw(st.sampled_from([None, None, None, *MACS])),
        "ipv4": draw(ip_configs(name, 4)),
        "ipv6": draw(ip_configs(name, 6)),
    }


@st.composite
def desired_states(draw: st.DrawFn) -> DesiredState:
    interfaces: list[Interface] = []
    port_candidates: list[str] = []
    for nic in NICS:
        if draw(st.booleans()):
            interfaces.append(Interface(nic, IfType.ETHERNET, **draw(link_fields(nic))))  # type: ignore[arg-type]
        port_candidates.append(nic)
    for a, b in PAIRS:
        mode = draw(st.sampled_from(["none", "one", "both", "both, one names the peer", "absent"]))
        if mode == "absent":
            interfaces.append(Interface(a, draw(st.sampled_from([IfType.VETH, None])), AdminState.ABSENT))
            continue
        if mode == "none":
            continue
        ends = [Interface(a, IfType.VETH, veth_peer=b, **draw(link_fields(a)))]  # type: ignore[arg-type]
        if mode != "one":
            peer = a if mode == "both" else None
            ends.append(Interface(b, IfType.VETH, veth_peer=peer, **draw(link_fields(b))))  # type: ignore[arg-type]
        interfaces += draw(st.permutations(ends))
        port_candidates += [e.name for e in ends]
    free = list(port_candidates)
    bridges: list[Interface] = []
    for br in BRIDGES:
        state = draw(st.sampled_from(["none", "up", "up", "down", "absent"]))
        if state == "none":
            continue
        if state == "absent":
            bridges.append(Interface(br, draw(st.sampled_from([IfType.BRIDGE, None])), AdminState.ABSENT))
            continue
        ports: tuple[str, ...] | None = None
        if draw(st.booleans()) and free:
            ports = tuple(draw(st.lists(st.sampled_from(free), unique=True, max_size=3)))
            free = [p for p in free if p not in ports]
        fields = draw(link_fields(br))
        fields["state"] = AdminState(state)
        bridges.append(Interface(br, IfType.BRIDGE, bridge=BridgeConfig(draw(stp_options()), ports),
                                 **fields))  # type: ignore[arg-type]
    interfaces += bridges
    interfaces = draw(st.permutations(interfaces))
    return DesiredState(interfaces=tuple(interfaces), routes=tuple(draw(route_specs(bridges))))


@st.composite
def route_specs(draw: st.DrawFn, bridges: list[Interface]) -> list[RouteSpec]:
    """Routes through bridges that are declared up, to gateways on their declared subnets."""
    specs: list[RouteSpec] = []
    usable = [b for b in bridges if b.state is AdminState.UP]
    dests = list(draw(st.permutations(DESTS)))
    for dest in dests[: draw(st.integers(0, 4))]:
        if not usable:
            break
        bridge = draw(st.sampled_from(usable))
        config = bridge.ipv4 if dest.version == 4 else bridge.ipv6
        subnets = list(config.addresses or ()) if config is not None else []
        metric = draw(st.none() | st.sampled_from([0, 100, 1024]))
        table = draw(st.sampled_from([None, None, 254, 100]))
        if subnets and draw(st.booleans()):
            via = gateway_in(draw(st.sampled_from(subnets)))
            device = bridge.name if draw(st.booleans()) else None
            specs.append(RouteSpec(dest, via, device, metric, table))
        else:
            specs.append(RouteSpec(dest, None, bridge.name, metric, table))
    for dest in draw(st.lists(st.sampled_from(GONE), unique=True, max_size=2)):
        metric = draw(st.none() | st.sampled_from([0, 100]))
        specs.append(RouteSpec(dest, None, draw(st.none() | st.sampled_from(BRIDGES)), metric, absent=True))
    return specs


# --------------------------------------------------------------------------- observed


def _address_ops(name: str) -> st.SearchStrategy[Op]:
    return st.sampled_from(pool(name)).flatmap(
        lambda ip: st.sampled_from([AddAddress(name, ip), AddAddress(name, ip), RemoveAddress(name, ip)]))


def _route_ops() -> st.SearchStrategy[Op]:
    """Routes to any destination, through any link, via a neighbour on one of its subnets."""
    def build(choice: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str, int | None, int, bool, bool],
              ip: IpInterface) -> Op:
        dest, name, metric, table, replace, dev = choice
        gateway = gateway_in(ip) if ip.version == dest.version else None
        return AddRoute(dest, table, gateway, name if dev or gateway is None else None, metric, replace)

    choices = st.tuples(st.sampled_from(DESTS + GONE + ELSEWHERE), st.sampled_from(OURS + FOREIGN),
                        st.none() | st.sampled_from([0, 100, 1024]), st.sampled_from([254, 254, 100]),
                        st.booleans(), st.booleans())
    return choices.flatmap(lambda c: st.sampled_from(pool(c[1])).map(lambda ip: build(c, ip)))


def drift_ops() -> st.SearchStrategy[Op]:
    """What other tools and time do to a host's links."""
    every = st.sampled_from(OURS + FOREIGN)
    ports = st.sampled_from(NICS + VETHS + (FOREIGN_NIC, *FOREIGN_TAPS, *FOREIGN_PAIR))
    bridges = st.sampled_from(BRIDGES + (FOREIGN_BRIDGE,))
    return st.one_of(
        st.builds(SetMtu, every, st.sampled_from(MTUS)),
        st.builds(SetLinkUp, every, st.booleans()),
        st.builds(SetMaster, ports, bridges),
        st.builds(SetMac, every, st.sampled_from(MACS)),
        st.builds(SetBridgeOptions, st.sampled_from(BRIDGES), stp_options(for_desired=False)),
        every.flatmap(_address_ops),
        _route_ops(),
    )


@st.composite
def kernels(draw: st.DrawFn) -> FakeKernel:
    kernel = FakeKernel(promote_secondaries=draw(st.booleans()), keep_addr_on_down=draw(st.booleans()))
    for nic in NICS:
        if draw(st.sampled_from([True] * 15 + [False])):  # now and then a NIC is missing (a Problem)
            kernel.add_device(nic, mtu=draw(st.sampled_from(MTUS)), up=draw(st.booleans()))
    kernel.add_device(FOREIGN_NIC, up=True)
    kernel.apply(CreateLink(FOREIGN_BRIDGE, "bridge"))
    kernel.apply(SetLinkUp(FOREIGN_BRIDGE, True))
    kernel.apply(CreateLink(FOREIGN_PAIR[0], "veth", veth_peer=FOREIGN_PAIR[1]))
    for tap in FOREIGN_TAPS:
        kernel.add_device(tap, "tun", up=True)
    for name in FOREIGN:
        kernel.apply(SetLinkUp(name, True))
        kernel.apply(AddAddress(name, pool(name)[0]))
        kernel.apply(AddAddress(name, pool(name)[4]))
    kernel.apply(AddRoute(ELSEWHERE[0], 254, gateway_in(pool(FOREIGN_NIC)[0]), None, None))
    kernel.apply(AddRoute(ELSEWHERE[1], 254, None, FOREIGN_BRIDGE, 50))
    kernel.apply(AddRoute(GONE[0], 254, None, FOREIGN_NIC, 0))  # a foreign route absent specs may match
    for br in BRIDGES:
        if draw(st.booleans()):
            kernel.apply(CreateLink(br, "bridge", stp=draw(stp_options(for_desired=False))))
    for a, b in PAIRS:
        if draw(st.booleans()):
            kernel.apply(CreateLink(a, "veth", veth_peer=b))
    for name in OURS:
        if kernel.link(name) is not None:
            for ip in draw(st.lists(st.sampled_from(pool(name)), unique=True, max_size=3)):
                try:
                    kernel.apply(AddAddress(name, ip))
                except KernelError:
                    pass
    for op in draw(st.lists(drift_ops(), max_size=30)):
        try:
            kernel.apply(op)
        except KernelError:
            pass
    return kernel


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[DesiredState, FakeKernel]:
    """A desired state and a kernel: a random one, or (the daemon's everyday case) one
    that a part of the plan was applied to before some drift."""
    desired = draw(desired_states())
    kernel = draw(kernels())
    if draw(st.booleans()):
        actions = plan(desired, Observed(net=kernel.observe())).actions
        keep = draw(st.lists(st.booleans(), min_size=len(actions), max_size=len(actions)))
        for action, applied in zip(actions, keep, strict=True):
            if applied:
                try:
                    kernel.apply(action.op)
                except KernelError:
                    pass
        drift = draw(st.lists(drift_ops(), max_size=4))
        for spec in desired.routes:  # another route under a declared route's key
            if not spec.absent and draw(st.integers(0, 3)) == 0:
                other = draw(_route_ops())
                assert isinstance(other, AddRoute)
                drift.append(replace(other, destination=spec.destination, table=spec.table_id, metric=spec.metric))
        for op in drift:
            try:
                kernel.apply(op)
            except KernelError:
                pass
    return desired, kernel


# --------------------------------------------------------------------------- checks


def named(desired: DesiredState) -> set[str]:
    names = {i.name for i in desired.interfaces}
    names |= {i.veth_peer for i in desired.interfaces if i.veth_peer}
    return names | listed_ports(desired)


def listed_ports(desired: DesiredState) -> set[str]:
    return {p for i in desired.interfaces if i.bridge and i.bridge.ports for p in i.bridge.ports}


def describe(p: Plan) -> str:
    return "\n".join([a.describe() + f"  [{type(a.op).__name__}]" for a in p.actions]
                     + [f"problem {pr.describe()}" for pr in p.problems])


def check_ownership(p: Plan, desired: DesiredState, observed: NetState) -> None:
    declared = {i.name for i in desired.interfaces}
    ports = listed_ports(desired)
    for action in p.actions:
        op = action.op
        name = getattr(op, "name", None)
        if isinstance(op, SetMaster):
            assert name in declared | ports, action
            assert op.master in declared, action
        elif isinstance(op, AddRoute):
            spec = next(s for s in desired.routes if s.resource == action.resource and not s.absent)
            assert (op.destination, op.table, op.gateway, op.device, op.metric) == (
                spec.destination, spec.table_id, spec.next_hop_address, spec.next_hop_interface, spec.metric)
        elif isinstance(op, RemoveRoute):
            spec = next(s for s in desired.routes if s.resource == action.resource)
            assert spec.absent, action
            route = next(r for r in observed.routes if (r.destination, r.table, r.gateway, r.oif, r.priority)
                         == (op.destination, op.table, op.gateway, op.oif, op.metric))
            assert route.protocol != KERNEL_ROUTE_PROTOCOL and matches(spec, route, observed), action
        else:
            assert name in declared, action
        assert action.want != action.have, action


def same_foreign(before: NetState, after: NetState, desired: DesiredState) -> None:
    """Links, addresses and routes that the desired state does not name are as they were
    (a foreign port of a bridge declared absent is released with it: the kernel does that)."""
    gone = {i.name for i in desired.interfaces if i.state is AdminState.ABSENT}
    # deleting one end of a veth deletes the other: the kernel's doing, and so it is named
    mine = named(desired) | {before.name_of(lk.link) or "" for lk in before.links.values()
                             if lk.name in gone and lk.kind == "veth"}
    spec_dests = {s.destination for s in desired.routes}
    foreign = {i for i, link in before.links.items() if link.name not in mine}
    for index in foreign:
        link = before.links[index]
        expect = replace(link, master=None) if before.name_of(link.master) in gone else link
        if link.kind == "bridge" and any(p.name in mine for p in before.ports_of(index)):
            # a bridge whose MTU nobody set follows its ports, and a declared port's MTU may change
            expect = replace(expect, mtu=after.links[index].mtu)
        assert after.links.get(index) == expect
        assert after.addresses_of(index) == before.addresses_of(index)

    def routes(net: NetState) -> set[Route]:
        return {r for r in net.routes if r.oif in foreign and r.destination not in spec_dests}

    assert routes(after) == routes(before)


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_one_pass_converges_and_touches_nothing_foreign(scenario: tuple[DesiredState, FakeKernel]) -> None:
    desired, kernel = scenario
    before = kernel.observe()
    fresh = plan(desired, Observed(net=before))
    memo = PlanMemo()
    live = Observed(net=kernel.state)  # the daemon's NetState, changed in place by the kernel
    assert plan(desired, live, memo) == fresh
    check_ownership(fresh, desired, before)
    if fresh.problems:
        event("first plan has problems")
        return
    event("plan empty" if fresh.empty else "plan has actions")
    failures = kernel.run(fresh.actions)
    assert not failures, f"{failures}\nplan:\n{describe(fresh)}"
    second = plan(desired, Observed(net=kernel.observe()))
    assert second.empty and not second.problems, f"second plan:\n{describe(second)}\nfirst:\n{describe(fresh)}"
    assert plan(desired, live, memo) == second
    assert plan(desired, Observed(net=kernel.observe())) == second
    same_foreign(before, kernel.state, desired)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_actions_name_only_declared_links(scenario: tuple[DesiredState, FakeKernel]) -> None:
    desired, kernel = scenario
    observed = kernel.observe()
    p = plan(desired, Observed(net=observed))
    check_ownership(p, desired, observed)
    declared = {i.name for i in desired.interfaces}
    for action in p.actions:
        if isinstance(action.op, CreateLink):
            assert action.op.name in declared
            assert observed.link(action.op.name) is None
            assert action.op.veth_peer is None or observed.link(action.op.veth_peer) is None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), data=st.data())
def test_the_daemons_memo_follows_drift_between_passes(scenario: tuple[DesiredState, FakeKernel],
                                                        data: st.DataObject) -> None:
    """The daemon keeps one NetState up to date and plans it with one PlanMemo: after any
    drift (links, masters, MTUs, addresses, routes changing under it), the memoized plan
    is the plan from scratch."""
    desired, kernel = scenario
    memo = PlanMemo()
    live = Observed(net=kernel.state)
    for _ in range(3):
        assert plan(desired, live, memo) == plan(desired, Observed(net=kernel.observe()))
        for op in data.draw(st.lists(drift_ops(), max_size=5)):
            try:
                kernel.apply(op)
            except KernelError:
                pass
    assert plan(desired, live, memo) == plan(desired, Observed(net=kernel.observe()))

