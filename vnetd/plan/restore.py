# SPDX-License-Identifier: MIT
"""Checkpoints as plans: what a plan touches, and how to put it back.

``scope_of(plan, net)`` names everything a plan is about to change; the backends
record those resources in a ``Checkpoint`` (``vnetd.trial``). ``restore_plan``
compares a checkpoint with what the system has now and plans the way back, with
the same ops and phases as any plan: links created by the change are deleted,
links it changed get their MTU, admin state, MAC, bridge options and master
back, addresses and routes through them are made what they were (routes with
the protocol and scope they had, so ``ip route`` shows them as before), the
policy routing rules of a family whose rules the change touched are made exactly
the recorded ones (protocol included), sysctls get their values, chains their
exact entries and policy, libvirt networks their state. Routes the kernel manages
itself (its address routes, the local table) come back with the addresses and are
never touched here.

Pure: no system access. Applying the result and observing again must give an
empty restore plan (that is the verification).
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from vnetd.model.bond import NO_PORTS
from vnetd.model.checkpoint import ChainRecord, Checkpoint, LinkRecord, NetworkRecord, RouteRecord, RuleRecord
from vnetd.model.firewall import table_key
from vnetd.model.interfaces import Link, StpOptions, VlanOptions
from vnetd.model.libvirt import ObservedNetwork
from vnetd.model.netstate import NetState
from vnetd.model.route_rules import ACTION_NAMES, FR_ACT_TO_TBL, RouteRule, RouteRuleSpec
from vnetd.model.routes import KERNEL_ROUTE_PROTOCOL, Route
from vnetd.plan.actions import (
    Action,
    AddAddress,
    AddRoute,
    AddRouteRule,
    AttachTap,
    CreateLink,
    DeleteLink,
    EnsureNetwork,
    Phase,
    Plan,
    Problem,
    PruneChain,
    RemoveAddress,
    RemoveRoute,
    RemoveRouteRule,
    RestoreChain,
    SetBridgeOptions,
    SetLinkOptions,
    SetLinkUp,
    SetMac,
    SetMaster,
    SetMtu,
    SetPolicy,
    SetSysctl,
    SyncChain,
    ordered,
)

LOCAL_TABLE = 255
#: link kinds a restore may create again or delete (never a NIC)
VIRTUAL_KINDS = frozenset({"bridge", "veth", "vlan", "dummy"})


@dataclass
class Scope:
    """The resources a plan changes (what a checkpoint must record)."""

    links: set[str] = field(default_factory=set)
    sysctls: set[str] = field(default_factory=set)
    #: (table key, chain): ``filter`` / ``ip6 filter`` (see model.firewall.table_key)
    chains: set[tuple[str, str]] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)
    rule_families: set[int] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not (self.links or self.sysctls or self.chains or self.networks or self.rule_families)


def scope_of(plan: Plan, net: NetState) -> Scope:
    scope = Scope()
    for action in plan.actions:
        op = action.op
        match op:
            case CreateLink():
                scope.links.update(filter(None, (op.name, op.veth_peer)))
            case DeleteLink() | SetLinkUp() | SetMtu() | SetMac() | SetBridgeOptions() | SetLinkOptions() \
                    | AddAddress() | RemoveAddress():
                scope.links.add(op.name)
            case SetMaster():
                scope.links.add(op.name)
                if op.master:
                    scope.links.add(op.master)
            case AttachTap():
                scope.links.update((op.tap, op.bridge))
            case AddRoute():
                if op.device:
                    scope.links.add(op.device)
            case RemoveRoute():
                name = net.name_of(op.oif)
                if name:
                    scope.links.add(name)
            case AddRouteRule() | RemoveRouteRule():
                scope.rule_families.add(op.rule.family)
            case SetSysctl():
                scope.sysctls.add(op.key)
            case SyncChain() | SetPolicy() | PruneChain() | RestoreChain():
                scope.chains.add((table_key(op.table, op.family), op.chain))
            case EnsureNetwork():
                scope.networks.add(op.name)
    # a port's master follows the port (a bridge's MTU does): record it too
    for name in list(scope.links):
        link = net.link(name)
        master = net.name_of(link.master) if link is not None else None
        if master:
            scope.links.add(master)
    return scope


# --------------------------------------------------------------------------- capture


LinkRecords = tuple[tuple[LinkRecord, ...], tuple[tuple[str, tuple[str, ...]], ...], tuple[RouteRecord, ...]]


def record_links(names: Iterable[str], net: NetState) -> LinkRecords:
    """Links, their permanent addresses and the routes through them, from ``net``."""
    links: list[LinkRecord] = []
    addresses: list[tuple[str, tuple[str, ...]]] = []
    indexes: dict[int, str] = {}
    for name in sorted(names):
        link = net.link(name)
        if link is None:
            links.append(LinkRecord(name, exists=False))
            continue
        indexes[link.index] = name
        bridge = None
        if link.bridge is not None:
            b = link.bridge
            bridge = (b.stp_state, b.forward_delay, b.hello_time, b.max_age, b.priority)
        peer = net.name_of(link.link) if link.kind == "veth" and link.link_netnsid is None else None
        bond = tuple((k, net.name_of(v) or "" if k == "primary" and isinstance(v, int) else v)
                     for k, v in link.bond.options) if link.bond is not None else ()
        links.append(LinkRecord(name, True, link.kind, link.up, link.mtu, link.mac, net.name_of(link.master),
                                bridge, peer, link.vlan.flags if link.vlan is not None else None,
                                str(link.vxlan.remote) if link.vxlan is not None and link.vxlan.remote else None,
                                link.vxlan.learning if link.vxlan is not None else None, bond))
        addresses.append((name, tuple(sorted(str(a.ip) for a in net.addresses_of(link.index) if _managed(a.ip)))))
    routes = tuple(sorted((_route_record(r, indexes[r.oif]) for r in net.routes
                           if r.oif in indexes and _restorable(r)), key=lambda r: (r.key, r.gateway or "")))
    return tuple(links), tuple(addresses), routes


def record_rules(families: Iterable[int], net: NetState) -> tuple[RuleRecord, ...]:
    """Every rule of these families that a restore could put back exactly (not those
    with selectors vnetd does not manage: vnetd never touches them)."""
    wanted = set(families)
    return tuple(sorted((_rule_record(r) for r in net.rules.elements() if r.family in wanted and not r.other),
                        key=_rule_key))


def _rule_record(rule: RouteRule) -> RuleRecord:
    return RuleRecord(rule.family, rule.priority, rule.table, rule.action, str(rule.source) if rule.source else None,
                      str(rule.destination) if rule.destination else None, rule.iif, rule.fwmark, rule.fwmask,
                      rule.protocol)


def _rule_key(record: RuleRecord) -> tuple[object, ...]:
    return (record.family, record.priority, str(record))


def _managed(ip: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bool:
    return not (ip.version == 6 and ip.ip.is_link_local)


def _restorable(route: Route) -> bool:
    """Routes a restore puts back or removes: not the kernel's own (address and local routes)."""
    return route.protocol != KERNEL_ROUTE_PROTOCOL and route.table != LOCAL_TABLE


def _route_record(route: Route, device: str) -> RouteRecord:
    return RouteRecord(str(route.destination), route.table, device, str(route.gateway) if route.gateway else None,
                       route.priority, route.protocol, route.scope, route.type)


# --------------------------------------------------------------------------- restore


def restore_plan(checkpoint: Checkpoint, net: NetState, sysctls: Mapping[str, str | None],
                 chains: Mapping[tuple[str, str], ChainRecord],
                 networks: Mapping[str, ObservedNetwork] | None) -> Plan:
    """The actions that make the system what ``checkpoint`` recorded, given what it is now.

    ``chains``: the recorded chains as they are now (the same backend's records), by
    (table key, chain);
    ``networks``: libvirt's networks now (None when libvirt is not reachable).
    """
    actions: list[Action] = []
    problems: list[Problem] = []
    for link in checkpoint.links:
        _restore_link(link, net, actions, problems)
    _restore_addresses(checkpoint, net, actions)
    _restore_routes(checkpoint, net, actions)
    _restore_rules(checkpoint, net, actions, problems)
    for key, value in checkpoint.sysctls:
        if value is not None and sysctls.get(key) != value:
            actions.append(Action(SetSysctl(key, value), Phase.SYSCTL, f"sysctl/{key}", "value", value,
                                  sysctls.get(key)))
    for record in checkpoint.chains:
        now = chains.get((record.table_key, record.chain))
        if now is None or not _same_chain(now, record):
            actions.append(Action(RestoreChain(record.table, record.chain, record), Phase.FIREWALL, record.resource,
                                  "rules", f"{len(record.entries)} entries as recorded" if record.exists
                                  else "(chain deleted)", f"{len(now.entries)} entries" if now and now.exists
                                  else "(none)", order=0 if record.exists else 1))
    for network in checkpoint.networks:
        _restore_network(network, networks, actions, problems)
    return Plan(ordered(actions), tuple(problems))


def _same_chain(now: ChainRecord, want: ChainRecord) -> bool:
    return (now.exists, now.policy, now.entries) == (want.exists, want.policy if want.builtin else now.policy,
                                                     want.entries)


def _restore_link(want: LinkRecord, net: NetState, actions: list[Action], problems: list[Problem]) -> None:
    res = f"interface/{want.name}"
    link = net.link(want.name)
    if not want.exists:
        if link is not None and link.kind in VIRTUAL_KINDS:
            actions.append(Action(DeleteLink(want.name), Phase.DELETE_LINKS, res, "exists", False, True))
        return
    if link is None:
        if want.kind not in VIRTUAL_KINDS or (want.kind == "veth" and not want.veth_peer):
            problems.append(Problem(res, f"was there before the change ({want.kind or 'a NIC'}) and is gone; "
                                    "vnetd cannot create it again"))
            return
        actions.append(Action(CreateLink(want.name, str(want.kind), mac=want.mac, stp=_stp(want.bridge),
                                         veth_peer=want.veth_peer), Phase.CREATE_LINKS, res, "exists", True, False))
        actions += _link_fields(want, None, res, net)
        return
    actions += _link_fields(want, link, res, net)


def _link_fields(want: LinkRecord, have: Link | None, res: str, net: NetState) -> list[Action]:
    out: list[Action] = []
    if have is None or have.mtu != want.mtu:
        grow = have is None or want.mtu > have.mtu
        out.append(Action(SetMtu(want.name, want.mtu), Phase.MTU_UP if grow else Phase.MTU_DOWN, res, "mtu",
                          want.mtu, have.mtu if have else None))
    if want.mac and (have is None or (have.mac or "").lower() != want.mac.lower()):
        out.append(Action(SetMac(want.name, want.mac), Phase.LINK_PROPERTIES, res, "mac-address", want.mac,
                          have.mac if have else None))
    if want.bridge is not None and have is not None and have.bridge is not None:
        b = have.bridge
        if (b.stp_state, b.forward_delay, b.hello_time, b.max_age, b.priority) != want.bridge:
            out.append(Action(SetBridgeOptions(want.name, _stp(want.bridge) or StpOptions()), Phase.LINK_PROPERTIES,
                              res, "bridge options", list(want.bridge), None))
    if have is not None:
        out += _kind_options(want, have, res, net)
    master = net.name_of(have.master) if have is not None else None
    if have is not None and master != want.master:
        out.append(Action(SetMaster(want.name, want.master), Phase.ENSLAVE, res, "controller", want.master, master))
    elif have is None and want.master:
        out.append(Action(SetMaster(want.name, want.master), Phase.ENSLAVE, res, "controller", want.master, None))
    if have is None or have.up != want.up:
        out.append(Action(SetLinkUp(want.name, want.up), Phase.ADMIN_STATE, res, "state",
                          "up" if want.up else "down", None if have is None else ("up" if have.up else "down")))
    return out


def _kind_options(want: LinkRecord, have: Link, res: str, net: NetState) -> list[Action]:
    """A VLAN's flags, a VXLAN's remote and learning, a bond's options back as recorded."""
    out: list[Action] = []
    if want.vlan_flags is not None and have.vlan is not None and have.vlan.flags != want.vlan_flags:
        flags = want.vlan_flags
        options = VlanOptions(reorder_headers=bool(flags & 0x1), loose_binding=bool(flags & 0x4),
                              registration_protocol="gvrp" if flags & 0x2 else "mvrp" if flags & 0x8 else "none")
        out.append(Action(SetLinkOptions(want.name, "vlan", vlan=options), Phase.LINK_PROPERTIES, res, "vlan flags",
                          want.vlan_flags, have.vlan.flags))
    if have.vxlan is not None:
        remote = str(have.vxlan.remote) if have.vxlan.remote else None
        if want.vxlan_remote is not None and remote != want.vxlan_remote:
            out.append(Action(SetLinkOptions(want.name, "vxlan", vxlan_remote=ipaddress.ip_address(want.vxlan_remote)),
                              Phase.LINK_PROPERTIES, res, "vxlan.remote", want.vxlan_remote, remote))
        if want.vxlan_learning is not None and have.vxlan.learning != want.vxlan_learning:
            out.append(Action(SetLinkOptions(want.name, "vxlan", vxlan_learning=want.vxlan_learning),
                              Phase.LINK_PROPERTIES, res, "vxlan.learning", want.vxlan_learning, have.vxlan.learning))
    if have.bond is not None:
        now = {k: (net.name_of(v) or "" if k == "primary" and isinstance(v, int) else v) for k, v in have.bond.options}
        for name, value in want.bond_options:
            if now.get(name) != value and name not in NO_PORTS and (name != "primary" or value):
                out.append(Action(SetLinkOptions(want.name, "bond", bond_options=((name, value),)),
                                  Phase.LINK_PROPERTIES, res, f"link-aggregation.options.{name}", value,
                                  now.get(name)))
    return out


def _stp(bridge: tuple[int, int, int, int, int] | None) -> StpOptions | None:
    """The kernel's bridge values back in nmstate units (seconds), as the planner writes them."""
    if bridge is None:
        return None
    state, delay, hello, age, priority = bridge
    return StpOptions(enabled=state != 0, forward_delay=delay // 100, hello_time=hello // 100,
                      max_age=age // 100, priority=priority)


def _restore_addresses(checkpoint: Checkpoint, net: NetState, actions: list[Action]) -> None:
    recorded = dict(checkpoint.addresses)
    for link in checkpoint.links:
        if not link.exists:
            continue
        want = {ipaddress.ip_interface(a) for a in recorded.get(link.name, ())}
        current = net.link(link.name)
        have = {a.ip for a in net.addresses_of(current.index) if a.permanent and _managed(a.ip)} if current else set()
        res = f"interface/{link.name}"
        for ip in sorted(have - want, key=str):
            actions.append(Action(RemoveAddress(link.name, ip), Phase.REMOVE_ADDRESSES, res, "address", None, str(ip)))
        for ip in sorted(want - have, key=str):
            actions.append(Action(AddAddress(link.name, ip), Phase.ADD_ADDRESSES, res, "address", str(ip), None))


def _restore_routes(checkpoint: Checkpoint, net: NetState, actions: list[Action]) -> None:
    names = {link.name for link in checkpoint.links if link.exists}
    want = set(checkpoint.routes)
    have: set[RouteRecord] = set()
    for route in net.routes:
        device = net.name_of(route.oif)
        if device in names and _restorable(route):
            have.add(_route_record(route, device))
    for record in sorted(have - want, key=lambda r: r.key):
        found = _route(record, net)
        if found is not None:
            actions.append(Action(RemoveRoute(found.destination, found.table, found.gateway, found.oif,
                                              found.priority), Phase.REMOVE_ROUTES, _route_resource(record),
                                  "route", None, "present"))
    for record in sorted(want - have, key=lambda r: r.key):
        actions.append(Action(AddRoute(ipaddress.ip_network(record.destination), record.table,
                                       ipaddress.ip_address(record.gateway) if record.gateway else None,
                                       record.device, record.priority, protocol=record.protocol,
                                       scope=record.scope), Phase.ADD_ROUTES, _route_resource(record),
                              "route", "present", None))


def _restore_rules(checkpoint: Checkpoint, net: NetState, actions: list[Action], problems: list[Problem]) -> None:
    families = set(checkpoint.rule_families)
    if not families:
        return
    want = collections.Counter(checkpoint.rules)
    now = {_rule_record(r): r for r in net.rules.elements() if r.family in families and not r.other}
    have = collections.Counter(_rule_record(r) for r in net.rules.elements() if r.family in families and not r.other)
    for record in sorted((have - want).elements(), key=_rule_key):
        actions.append(Action(RemoveRouteRule(now[record]), Phase.REMOVE_ROUTE_RULES, _rule_resource(record),
                              "rule", None, "present"))
    for record in sorted((want - have).elements(), key=_rule_key):
        action = ACTION_NAMES.get(record.action)
        if record.action != FR_ACT_TO_TBL and action is None:
            problems.append(Problem(_rule_resource(record), f"was there before the change (action {record.action}); "
                                                            "vnetd cannot create such a rule again"))
            continue
        spec = RouteRuleSpec(record.family, ipaddress.ip_network(record.source) if record.source else None,
                             ipaddress.ip_network(record.destination) if record.destination else None,
                             record.priority, record.table if action is None else None,
                             record.fwmark if record.fwmark or record.fwmask else None,
                             record.fwmask if record.fwmark or record.fwmask else None, record.iif, action)
        actions.append(Action(AddRouteRule(spec, record.protocol), Phase.ADD_ROUTE_RULES, _rule_resource(record),
                              "rule", "present", None))


def _rule_resource(record: RuleRecord) -> str:
    source = record.source or "all"
    return f"route-rule/{'-6 ' if record.family == 6 else ''}priority {record.priority} from {source}"


def _route(record: RouteRecord, net: NetState) -> Route | None:
    for route in net.routes:
        if route.oif is not None and net.name_of(route.oif) == record.device \
                and _route_record(route, record.device or "") == record:
            return route
    return None


def _route_resource(record: RouteRecord) -> str:
    via = f" via {record.gateway}" if record.gateway else ""
    return f"route/{record.destination}{via} dev {record.device}"


def _restore_network(want: NetworkRecord, networks: Mapping[str, ObservedNetwork] | None,
                     actions: list[Action], problems: list[Problem]) -> None:
    res = f"libvirt/network/{want.name}"
    if networks is None:
        problems.append(Problem(res, "libvirt is not reachable: the network's state cannot be restored"))
        return
    have = networks.get(want.name)
    if not want.exists:
        if have is not None:
            actions.append(Action(EnsureNetwork(want.name, "undefine"), Phase.LIBVIRT_NETWORKS, res, "defined",
                                  False, True))
        return
    if have is None:
        problems.append(Problem(res, "was defined before the change and is gone; its definition was not recorded"))
        return
    if have.active != want.active:
        actions.append(Action(EnsureNetwork(want.name, "start" if want.active else "stop"), Phase.LIBVIRT_NETWORKS,
                              res, "state", "active" if want.active else "inactive",
                              "active" if have.active else "inactive"))
    if have.autostart != want.autostart:
        actions.append(Action(EnsureNetwork(want.name, "autostart-on" if want.autostart else "autostart-off"),
                              Phase.LIBVIRT_NETWORKS, res, "autostart", want.autostart, have.autostart))
