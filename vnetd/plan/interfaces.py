# SPDX-License-Identifier: MIT
"""Where vnetd decides what to do with links: existence, MTU, MAC, admin state,
bridge options, a VLAN's, VXLAN's or bond's own settings, bridge and bond ports,
and static addresses.

``plan_interfaces(desired, observed)`` is pure. A field that is not written is not
looked at. Ports not listed on a bridge are left alone (a guest's ``vnet0``).
MTU changes are ordered the way the kernel accepts them: raising goes from the
lower devices up (a port before its bridge), lowering from the upper devices down.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import replace

from vnetd.model.bond import MODE_NAMES, MODES, NO_PORTS, canonical
from vnetd.model.interfaces import (
    KERNEL_KIND,
    NIC_KINDS,
    VIRTUAL_TYPES,
    AdminState,
    BondConfig,
    BridgeInfo,
    IfType,
    Interface,
    IpConfig,
    IpInterface,
    Link,
    StpOptions,
    VlanOptions,
    VlanProtocol,
)
from vnetd.model.netstate import NetState
from vnetd.plan.actions import (
    Action,
    AddAddress,
    CreateLink,
    DeleteLink,
    Phase,
    Problem,
    RemoveAddress,
    SetBridgeOptions,
    SetLinkOptions,
    SetLinkUp,
    SetMac,
    SetMaster,
    SetMtu,
)

#: Kernel kinds that a declared ``ethernet`` may be (a NIC has no kind; tests use veths).
_EXISTING_KINDS: dict[IfType, set[str | None]] = {
    IfType.ETHERNET: set(NIC_KINDS),
    IfType.LOOPBACK: {None},
    IfType.TUN: {"tun"},
}
_LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")

#: the MTU of a link the kernel creates (bridge, veth, dummy), for planning before it exists
_NEW_LINK_MTU = 1500
#: what a VXLAN's encapsulation takes from its underlay device's MTU (outer IPv4/IPv6 + UDP + VXLAN + Ethernet)
_VXLAN_OVERHEAD = {4: 50, 6: 70}
_ETH_P_8021AD = 0x88A8
_VLAN_FLAG_REORDER_HDR, _VLAN_FLAG_GVRP, _VLAN_FLAG_LOOSE_BINDING, _VLAN_FLAG_MVRP = 0x1, 0x2, 0x4, 0x8

# kernel defaults of a new bridge, in centiseconds, for planning before it exists
_NEW_BRIDGE = BridgeInfo(stp_state=0, forward_delay=1500, hello_time=200, max_age=2000, priority=32768)


def plan_interfaces(desired: Iterable[Interface], observed: NetState) -> tuple[list[Action], list[Problem]]:
    desired = tuple(desired)
    actions: list[Action] = []
    problems: list[Problem] = []
    by_name = {i.name: i for i in desired}
    # links that will exist after this plan's creations (created veth peers included)
    created: set[str] = set()
    # veth ends that the CreateLink of their peer makes, whichever end is listed first
    created_pairs: set[str] = set()
    for iface in desired:
        if iface.state is AdminState.ABSENT or observed.link(iface.name) is not None \
                or iface.type not in VIRTUAL_TYPES:
            continue
        if iface.type is IfType.VETH and iface.name not in created_pairs:
            if not iface.veth_peer or observed.link(iface.veth_peer) is not None:
                continue  # cannot be created (a Problem below), unless its peer's CreateLink makes it
            created_pairs.add(iface.veth_peer)
            created.add(iface.veth_peer)
        created.add(iface.name)

    def exists(name: str) -> bool:
        return observed.link(name) is not None or name in created

    clashes: set[str] = set()
    for iface in desired:
        link = observed.link(iface.name)
        res = iface.resource
        if iface.state is AdminState.ABSENT:
            _plan_absent(iface, link, actions, problems)
            continue
        if link is None:
            if iface.type not in VIRTUAL_TYPES:
                problems.append(Problem(res, f"no such device; a {iface.type} interface is never created by vnetd"))
                continue
            if iface.name in created_pairs:
                # created as the peer of another veth: CreateLink carries only that end's MAC
                if iface.mac is not None:
                    actions.append(Action(SetMac(iface.name, iface.mac), Phase.LINK_PROPERTIES, res,
                                          "mac-address", iface.mac, None))
            elif iface.type is IfType.VETH and not iface.veth_peer:
                problems.append(Problem(res, "missing, and a veth cannot be created without 'veth.peer'"))
                continue
            elif iface.type is IfType.VETH and iface.veth_peer and observed.link(iface.veth_peer) is not None:
                # the kernel would refuse the pair (EEXIST, which creating tolerates): say so instead
                problems.append(Problem(res, f"missing, and its peer name {iface.veth_peer!r} is taken by an "
                                             "existing link; a veth pair is created with both ends"))
                continue
            elif iface.base_iface and not exists(iface.base_iface):
                problems.append(Problem(res, f"missing, and its base-iface {iface.base_iface!r} does not exist"))
                continue
            else:
                kind = KERNEL_KIND[iface.type]
                bond = BondConfig(iface.bond.mode, None, iface.bond.options) if iface.bond is not None else None
                actions.append(Action(
                    CreateLink(iface.name, kind, iface.mac, iface.bridge.stp if iface.bridge else None,
                               iface.veth_peer, iface.vlan_base, iface.vlan_id, iface.vlan, iface.vxlan, bond),
                    Phase.CREATE_STACKED if iface.base_iface else Phase.CREATE_LINKS,
                    res, "exists", iface.type.value if iface.type else None, None))
        elif not _type_matches(iface, link):
            problems.append(Problem(res, f"exists as {link.kind or 'a device without a kind (a NIC)'}, "
                                         f"but is declared {iface.type}; vnetd does not delete and re-create it"))
            clashes.add(iface.name)
            continue
        elif iface.type is IfType.VLAN and iface.vlan_id is not None and link.vlan_id != iface.vlan_id:
            problems.append(Problem(res, f"VLAN id is {link.vlan_id}, declared {iface.vlan_id}; "
                                         "a VLAN's id cannot change: delete it (state: absent) to re-create it"))
            continue
        elif (fixed := _fixed_settings(iface, link, observed)) is not None:
            problems.append(Problem(res, f"{fixed}: the kernel cannot change it on a live link; delete it "
                                         "(state: absent) to re-create it"))
            continue
        if iface.bridge is not None and link is not None:
            conflict = _stp_conflict(iface.bridge.stp, link.bridge or _NEW_BRIDGE)
            if conflict:
                problems.append(Problem(res, conflict))
        depth = _depth(iface, by_name)
        _plan_properties(iface, link, depth, actions)
        if link is not None:
            _plan_kind_options(iface, link, observed, actions, problems)
        _plan_addresses(iface, link, observed, actions)
    _plan_ports(tuple(i for i in desired if i.name not in clashes), observed, exists, actions, problems)
    _settle_bridge_mtus(desired, observed, actions)
    return actions, problems


def _type_matches(iface: Interface, link: Link) -> bool:
    if iface.type is None or iface.type is IfType.UNKNOWN:
        return True
    if iface.type in VIRTUAL_TYPES:
        return link.kind == KERNEL_KIND[iface.type]
    return link.kind in _EXISTING_KINDS.get(iface.type, {link.kind})


def _plan_absent(iface: Interface, link: Link | None, actions: list[Action], problems: list[Problem]) -> None:
    if link is None:
        return
    virtual_kinds = set(KERNEL_KIND.values())
    if iface.type is not None and iface.type not in VIRTUAL_TYPES:
        # declared a NIC (stand-in NICs are veths): never deleted, whatever its kind
        problems.append(Problem(iface.resource, f"declared absent as {iface.type}; vnetd deletes virtual "
                                                "interfaces only"))
        return
    if iface.type is not None:
        wanted_kind = KERNEL_KIND[iface.type]
        if link.kind != wanted_kind:
            problems.append(Problem(iface.resource, f"declared absent as {iface.type}, but the device is "
                                                    f"{link.kind or 'a NIC'}; not deleting it"))
            return
    elif link.kind not in virtual_kinds:
        problems.append(Problem(iface.resource, f"declared absent, but it is {link.kind or 'a NIC'}; "
                                                "vnetd deletes virtual interfaces only"))
        return
    actions.append(Action(DeleteLink(iface.name), Phase.DELETE_LINKS, iface.resource, "exists",
                          "absent", link.kind))


def _depth(iface: Interface, by_name: dict[str, Interface], seen: frozenset[str] = frozenset()) -> int:
    """How far up the stack a device sits: NICs 0, a bridge or bond one above its
    highest declared port, a VLAN or VXLAN one above its base (bridge over a VLAN
    over a bond over NICs: 3, 2, 1, 0). MTUs are raised from the bottom up and
    lowered from the top down."""
    if iface.name in seen:
        return 0
    seen = seen | {iface.name}
    below = [by_name[n] for n in (*iface.ports, iface.base_iface) if n is not None and n in by_name]
    if iface.type in (IfType.BRIDGE, IfType.BOND, IfType.VLAN, IfType.VXLAN):
        return 1 + max((_depth(b, by_name, seen) for b in below), default=0)
    return 0


def _fixed_settings(iface: Interface, link: Link, observed: NetState) -> str | None:
    """What a declared VLAN, VXLAN or bond has that the live link lacks and that the
    kernel only sets when the link is made (None: all that is written matches)."""
    if iface.type is IfType.VLAN and iface.vlan is not None and iface.vlan.protocol is not None \
            and link.vlan is not None:
        have = VlanProtocol.DOT1AD if link.vlan.protocol == _ETH_P_8021AD else VlanProtocol.DOT1Q
        if have is not iface.vlan.protocol:
            return f"vlan.protocol is {have}, declared {iface.vlan.protocol}"
    if iface.type is IfType.VXLAN and iface.vxlan is not None and link.vxlan is not None:
        want, got = iface.vxlan, link.vxlan
        base = observed.name_of(got.link)
        for field, wanted, current in (("id", want.id, got.id), ("destination-port", want.destination_port, got.port),
                                       ("local", want.local, got.local), ("base-iface", want.base_iface, base)):
            if wanted is not None and wanted != current:
                return f"vxlan.{field} is {current}, declared {wanted}"
        if want.remote is not None and got.remote is not None and want.remote.version != got.remote.version:
            return f"vxlan.remote is {got.remote}, declared {want.remote} (another address family)"
    if iface.type is IfType.BOND and iface.bond is not None and link.bond is not None:
        if iface.bond.mode is not None and MODES[iface.bond.mode] != link.bond.mode:
            return (f"link-aggregation.mode is {MODE_NAMES.get(link.bond.mode, link.bond.mode)}, declared "
                    f"{iface.bond.mode} (a bond changes mode only while down and without ports)")
        if any(True for _p in observed.ports_of(link.index)):
            for name, value in iface.bond.options:
                if name in NO_PORTS and link.bond.option(name) != value:
                    return (f"link-aggregation.options.{name} is {link.bond.option(name)}, declared {value} (the "
                            "kernel changes it only on a bond without ports)")
    return None


def _plan_kind_options(iface: Interface, link: Link, observed: NetState, actions: list[Action],
                       problems: list[Problem]) -> None:
    """A VLAN's flags, a VXLAN's remote and learning, a bond's options: what the kernel
    changes on a live link (what it does not is a Problem: ``_fixed_settings``)."""
    res = iface.resource
    if iface.type is IfType.VLAN and iface.vlan is not None and link.vlan is not None:
        want = iface.vlan
        changes: dict[str, object] = {}
        flags = link.vlan.flags
        for field, wanted, bit in (("reorder_headers", want.reorder_headers, _VLAN_FLAG_REORDER_HDR),
                                   ("loose_binding", want.loose_binding, _VLAN_FLAG_LOOSE_BINDING)):
            if wanted is not None and bool(flags & bit) != wanted:
                changes[field] = wanted
        if want.registration_protocol is not None:
            have = "gvrp" if flags & _VLAN_FLAG_GVRP else "mvrp" if flags & _VLAN_FLAG_MVRP else "none"
            if have != want.registration_protocol:
                changes["registration_protocol"] = want.registration_protocol
        if changes:
            only = VlanOptions(**changes)  # type: ignore[arg-type]
            actions.append(Action(SetLinkOptions(iface.name, "vlan", vlan=only), Phase.LINK_PROPERTIES, res,
                                  "vlan", _options_text(changes), f"flags {flags:#x}"))
    elif iface.type is IfType.VXLAN and iface.vxlan is not None and link.vxlan is not None:
        want_v, got = iface.vxlan, link.vxlan
        remote = want_v.remote if want_v.remote is not None and want_v.remote != got.remote else None
        learning = want_v.learning if want_v.learning is not None and want_v.learning != got.learning else None
        if remote is not None:
            actions.append(Action(SetLinkOptions(iface.name, "vxlan", vxlan_remote=remote), Phase.LINK_PROPERTIES,
                                  res, "vxlan.remote", str(remote), str(got.remote) if got.remote else None))
        if learning is not None:
            actions.append(Action(SetLinkOptions(iface.name, "vxlan", vxlan_learning=learning),
                                  Phase.LINK_PROPERTIES, res, "vxlan.learning", learning, got.learning))
    elif iface.type is IfType.BOND and iface.bond is not None and link.bond is not None:
        for name, value in iface.bond.options:
            current = link.bond.option(canonical(name))
            if name == "primary":
                target = observed.link(str(value))
                if target is None:
                    problems.append(Problem(res, f"link-aggregation.options.primary: {value!r} does not exist"))
                    continue
                if current == target.index:
                    continue
                current = observed.name_of(current) if isinstance(current, int) else current
            elif current == value or name in NO_PORTS:
                continue
            actions.append(Action(SetLinkOptions(iface.name, "bond", bond_options=((name, value),)),
                                  Phase.LINK_PROPERTIES, res, f"link-aggregation.options.{name}", value, current))


def _options_text(changes: dict[str, object]) -> str:
    return ", ".join(f"{k.replace('_', '-')}: {v}" for k, v in changes.items())


def _plan_properties(iface: Interface, link: Link | None, depth: int, actions: list[Action]) -> None:
    res = iface.resource
    name = iface.name
    if iface.mac is not None and link is not None and (link.mac or "").lower() != iface.mac:
        actions.append(Action(SetMac(name, iface.mac), Phase.LINK_PROPERTIES, res, "mac-address", iface.mac, link.mac))
    if iface.bridge is not None and link is not None:
        for field, want, have, only, order in _stp_changes(iface.bridge.stp, link.bridge or _NEW_BRIDGE):
            actions.append(Action(SetBridgeOptions(name, only), Phase.LINK_PROPERTIES, res,
                                  f"bridge.options.stp.{field}", want, have, order=order))
    if iface.mtu is not None:
        have_mtu = link.mtu if link is not None else None
        if have_mtu != iface.mtu:
            raising = have_mtu is None or iface.mtu > have_mtu
            phase = Phase.MTU_UP if raising else Phase.MTU_DOWN
            actions.append(Action(SetMtu(name, iface.mtu), phase, res, "mtu", iface.mtu, have_mtu,
                                  order=depth if raising else -depth))
    want_up = iface.state is AdminState.UP
    have_up = link.up if link is not None else False
    # a new link is down: only one that should be up needs an action
    if (link is None and want_up) or (link is not None and have_up != want_up):
        actions.append(Action(SetLinkUp(name, want_up), Phase.ADMIN_STATE, res, "state",
                              iface.state.value, ("up" if have_up else "down") if link else None,
                              order=depth))


def _stp_conflict(want: StpOptions, have: BridgeInfo) -> str | None:
    """A forward delay below 2 s is refused while STP is on, and STP that is not
    written is not managed: vnetd will not turn it off to make room."""
    if want.forward_delay is not None and want.forward_delay < 2 and want.enabled is None and have.stp_state:
        return (f"forward-delay {want.forward_delay} needs STP off, and STP is on; "
                "write stp.enabled: false to have vnetd turn it off")
    return None


def _stp_changes(want: StpOptions, have: BridgeInfo) -> list[tuple[str, object, object, StpOptions, int]]:
    """(field, want, have, op options, order) for each STP option that differs.

    The kernel checks timers against the current STP state (forward delay 0 is only
    valid with STP off), so STP is turned off before timers change and on after.
    """
    changes: list[tuple[str, object, object, StpOptions, int]] = []
    have_enabled = have.stp_state != 0
    if want.enabled is not None and want.enabled != have_enabled:
        changes.append(("enabled", want.enabled, have_enabled, StpOptions(enabled=want.enabled),
                        2 if want.enabled else 0))
    blocked = _stp_conflict(want, have) is not None
    options: list[tuple[str, int | None, int, Callable[[int], StpOptions]]] = [
        ("forward-delay", None if blocked else want.forward_delay, round(have.forward_delay / 100),
         lambda v: StpOptions(forward_delay=v)),
        ("hello-time", want.hello_time, round(have.hello_time / 100), lambda v: StpOptions(hello_time=v)),
        ("max-age", want.max_age, round(have.max_age / 100), lambda v: StpOptions(max_age=v)),
        ("priority", want.priority, have.priority, lambda v: StpOptions(priority=v)),
    ]
    for field, wanted, current, make in options:
        if wanted is not None and wanted != current:
            changes.append((field, wanted, current, make(wanted), 1))
    return changes


def _plan_addresses(iface: Interface, link: Link | None, observed: NetState, actions: list[Action]) -> None:
    current = {a.ip for a in observed.addresses_of(link.index)} if link is not None else set()
    # a link taken down loses its IPv6 addresses (net.ipv6.conf.*.keep_addr_on_down=0, the
    # default), after this plan has looked at them: they are added again once it is down
    goes_down = link is not None and link.up and iface.state is AdminState.DOWN
    for config, version in ((iface.ipv4, 4), (iface.ipv6, 6)):
        if config is None or config.addresses is None:
            continue
        if config.foreign:  # a DHCP client's (or SLAAC's): only the listed ones are ensured, none removed
            for ip in config.addresses:
                if ip not in current or (goes_down and version == 6):
                    actions.append(Action(AddAddress(iface.name, ip), Phase.ADD_ADDRESSES, iface.resource,
                                          f"ipv{version}.address", [str(a) for a in config.addresses],
                                          sorted(str(a) for a in current if a.version == version)))
            continue
        _plan_family(iface, config, version, current, actions, flushed=goes_down and version == 6)


def _plan_family(
    iface: Interface, config: IpConfig, version: int, current: set[IpInterface], actions: list[Action],
    flushed: bool = False,
) -> None:
    field = f"ipv{version}.address"
    have = sorted((ip for ip in current if ip.version == version
                   and not (version == 6 and ip.ip in _LINK_LOCAL_V6)), key=str)
    want = list(config.addresses or ())
    have_str = [str(ip) for ip in have]
    want_str = [str(ip) for ip in want]
    removed = [ip for ip in have if ip not in want]
    for ip in removed:
        actions.append(Action(RemoveAddress(iface.name, ip), Phase.REMOVE_ADDRESSES, iface.resource,
                              field, want_str, have_str))
    # removing a subnet's primary IPv4 address removes its secondaries too (unless
    # net.ipv4.conf.*.promote_secondaries=1): the wanted ones of that subnet are added
    # again (EEXIST, when promoted, is "already so")
    orphaned = {ip.network for ip in removed if version == 4}
    for ip in want:
        if flushed or ip not in current or ip.network in orphaned:
            actions.append(Action(AddAddress(iface.name, ip), Phase.ADD_ADDRESSES, iface.resource,
                                  field, want_str, [] if flushed else have_str))


def _plan_ports(
    desired: tuple[Interface, ...],
    observed: NetState,
    exists: Callable[[str], bool],
    actions: list[Action],
    problems: list[Problem],
) -> None:
    """Listed ports of bridges and bonds: attached to their master, the others left
    alone. A bond takes only a port that is down (the kernel refuses one that is up,
    "Device can not be enslaved while up") and brings it up itself."""
    by_name = {i.name: i for i in desired}
    for iface in desired:
        if iface.type not in (IfType.BRIDGE, IfType.BOND) or iface.state is AdminState.ABSENT:
            continue
        if not iface.ports or not exists(iface.name):
            continue
        bond = iface.type is IfType.BOND
        master_link = observed.link(iface.name)
        for port in iface.ports:
            port_link = observed.link(port)
            resource = f"interface/{port}"
            if port_link is None:
                if not exists(port):
                    problems.append(Problem(resource, f"port of {iface.name} does not exist"))
                    continue
                actions.append(Action(SetMaster(port, iface.name), Phase.ENSLAVE, resource, "controller",
                                      iface.name, None))
                continue
            if port_link.kind == "bridge" or (bond and port_link.kind not in NIC_KINDS):
                problems.append(Problem(resource, f"is a {port_link.kind} and cannot be a port of {iface.name}"))
                continue
            if master_link is not None and port_link.master == master_link.index:
                continue
            have = observed.name_of(port_link.master)
            if bond and port_link.up:
                declared = by_name.get(port)
                stays_down = declared is not None and declared.state is AdminState.DOWN
                actions.append(Action(SetLinkUp(port, False), Phase.PORT_DOWN, resource, "state",
                                      "down" if stays_down else "down, then up as a port of " + iface.name, "up"))
            actions.append(Action(SetMaster(port, iface.name), Phase.ENSLAVE, resource, "controller",
                                  iface.name, have))


def new_link_mtu(iface: Interface, observed: NetState) -> int:
    """The MTU the kernel gives a link it creates: a VXLAN takes its encapsulation off
    its underlay device's MTU; a bridge, bond, veth or VLAN starts at 1500."""
    if iface.type is IfType.VXLAN and iface.vxlan is not None and iface.vxlan.base_iface is not None:
        base = observed.link(iface.vxlan.base_iface)
        remote = iface.vxlan.remote or iface.vxlan.local
        if base is not None:
            return base.mtu - _VXLAN_OVERHEAD[remote.version if remote is not None else 4]
    return _NEW_LINK_MTU


def _settle_bridge_mtus(desired: tuple[Interface, ...], observed: NetState, actions: list[Action]) -> None:
    """Set a bridge's declared MTU after its ports stop changing, when it would not follow.

    The kernel gives a bridge whose MTU was never set the smallest MTU of its ports
    whenever a port joins, leaves or changes its MTU (``br_mtu_auto_adjust``), and
    setting an MTU to the value a link has marks nothing: a new bridge declared 1500
    drops to 1280 when a 1280 port joins. When this plan moves or changes a port of a
    bridge and the ports it can see would not give the bridge its declared MTU, the
    bridge's MTU is (re)set last. Only the group's own interfaces are looked at: a
    bridge's group holds every declared interface on it (plan.planner.interface_groups),
    and undeclared ports are not moved or changed by vnetd, so a group's plan stays a
    function of the group's links (see plan.planner.PlanMemo).
    """
    moving = {a.op.name: a.op.master for a in actions if isinstance(a.op, SetMaster)}
    created = {a.op.name for a in actions if isinstance(a.op, CreateLink)}
    by_name = {i.name: i for i in desired}
    new_mtu = {a.op.name: a.op.mtu for a in actions if isinstance(a.op, SetMtu)}
    for iface in desired:
        if iface.type is not IfType.BRIDGE or iface.state is AdminState.ABSENT or iface.mtu is None:
            continue
        link = observed.link(iface.name)
        if (link is None and iface.name not in created) or (link is not None and link.kind != "bridge"):
            continue
        listed = set((iface.bridge.ports or ()) if iface.bridge else ())
        # the ports this group names: listed ones, declared ones and veth peers
        names = listed | {i.name for i in desired} | {i.veth_peer for i in desired if i.veth_peer}
        names.discard(iface.name)
        on_bridge = set()
        for name in names:
            port_link = observed.link(name)
            if link is not None and port_link is not None and port_link.master == link.index:
                on_bridge.add(name)
        final = {p for p in on_bridge if moving.get(p, iface.name) == iface.name}
        final |= {p for p, master in moving.items() if master == iface.name}
        if final == on_bridge and not any(p in new_mtu for p in final):
            continue

        def mtu_of(port: str) -> int:
            port_link = observed.link(port)
            declared = by_name.get(port)
            new = new_link_mtu(declared, observed) if declared is not None else _NEW_LINK_MTU
            return new_mtu.get(port, port_link.mtu if port_link is not None else new)

        follow = min((mtu_of(p) for p in final), default=None)
        if follow == iface.mtu:
            continue
        own = next((i for i, a in enumerate(actions) if isinstance(a.op, SetMtu) and a.op.name == iface.name
                    and a.phase is Phase.MTU_DOWN), None)
        if own is not None:
            actions[own] = replace(actions[own], order=1)  # after the ports (order 0)
        else:
            actions.append(Action(SetMtu(iface.name, iface.mtu), Phase.MTU_DOWN, iface.resource, "mtu",
                                  iface.mtu, follow, order=1))
