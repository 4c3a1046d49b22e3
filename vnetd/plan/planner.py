# SPDX-License-Identifier: MIT
"""The whole plan: every section's actions, in one dependency order.

``plan(desired, observed)`` is a pure function. Sections not observed (``None`` in
``Observed``) are not planned: the CLI observes only what the files declare.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from vnetd.model.firewall import ObservedTable, RuleId, RuleKey
from vnetd.model.interfaces import Interface
from vnetd.model.libvirt import GuestTap, ObservedNetwork
from vnetd.model.netstate import NetState
from vnetd.model.state import DesiredState
from vnetd.plan.actions import Action, CreateLink, Note, Plan, Problem, ordered
from vnetd.plan.identifiers import ResolutionMemo
from vnetd.plan.interfaces import plan_interfaces
from vnetd.plan.route_rules import plan_route_rules
from vnetd.plan.routes import flushed_links, foreign_default_routes, plan_routes


@dataclass
class Observed:
    """Everything the planner compares against; filled by the backends."""

    net: NetState = field(default_factory=NetState)
    #: sysctl key -> value as the kernel prints it; None when the key does not exist
    sysctls: dict[str, str | None] | None = None
    #: table name -> table; None when netfilter was not read
    firewall: dict[str, ObservedTable] | None = None
    #: each declared rule's tag and the fingerprints of its entries as the kernel would hold them
    rule_ids: Mapping[RuleKey, RuleId] = field(default_factory=dict)
    #: firewall backends no longer used that still hold vnetd's rules: name -> those tables (pruned)
    firewall_retired: Mapping[str, Mapping[str, ObservedTable]] = field(default_factory=dict)
    #: what a manager found it cannot act on at all (the firewall backend ``auto`` refused to choose)
    problems: list[Problem] = field(default_factory=list)
    #: libvirt networks by name; None when libvirt was not reached
    networks: dict[str, ObservedNetwork] | None = None
    #: running guests' taps and the bridge each belongs on
    guest_taps: tuple[GuestTap, ...] = ()


Section = tuple[list[Action], list[Problem]]


class PlanMemo:
    """Section results of the last plan, reused while their inputs are the same objects.

    A pure function of unchanged inputs has an unchanged result: the daemon, whose
    caches hand the planner the very same objects until something changes, plans a
    quiet 10,000-rule firewall or 2,500 interfaces once, not on every wake-up. Inputs
    are compared by identity (and the NetState by its version), never by content.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple[object, ...], Section]] = {}
        self.interfaces: _GroupMemo | None = None
        self.identifiers = ResolutionMemo()
        self.notes: tuple[object, tuple[Note, ...]] | None = None

    def ip_notes(self, desired: DesiredState) -> tuple[Note, ...]:
        """ip_notes of the same interfaces are the same notes."""
        if self.notes is None or self.notes[0] is not desired.interfaces:
            self.notes = (desired.interfaces, tuple(ip_notes(desired)))
        return self.notes[1]

    def get(self, name: str, inputs: tuple[object, ...], compute: Callable[[], Section]) -> Section:
        entry = self._entries.get(name)
        if entry is not None and len(entry[0]) == len(inputs) \
                and all(a is b for a, b in zip(entry[0], inputs, strict=True)):
            return entry[1]
        result = compute()
        self._entries[name] = (inputs, result)
        return result


def interface_groups(
    interfaces: tuple[Interface, ...], masters: Mapping[str, str | None] | None = None
) -> list[tuple[Interface, ...]]:
    """Interfaces whose plans depend on each other: a bridge or bond and its ports, a
    veth pair, a VLAN or VXLAN and its base. Each group is planned on its own (the union of the
    groups' plans is the plan of the whole), so one drifting port re-plans its
    bridge, not 2,500 interfaces.

    Names join a group whether declared or not (a bridge listing the undeclared peer
    of a declared veth plans with that veth), and so does a declared interface that
    is now a port of a declared bridge (``masters``: current_masters), listed or not:
    the kernel makes a bridge follow every port's MTU (plan.interfaces._settle_bridge_mtus).
    """
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        parent.setdefault(name, name)
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    def union(a: str, b: str | None) -> None:
        if b is not None:
            parent[find(a)] = find(b)

    for iface in interfaces:
        find(iface.name)
        for port in _related(iface):
            union(iface.name, port)
    for name, master in (masters or {}).items():
        if master in parent:
            union(name, master)
    groups: dict[str, list[Interface]] = {}
    for iface in interfaces:
        groups.setdefault(find(iface.name), []).append(iface)
    return [tuple(g) for g in groups.values()]


def current_masters(interfaces: tuple[Interface, ...], observed: NetState) -> dict[str, str | None]:
    """Each declared interface's current master (by name) in ``observed``."""
    masters: dict[str, str | None] = {}
    for iface in interfaces:
        masters[iface.name] = _master_name(iface.name, observed)
    return masters


def _master_name(name: str, observed: NetState) -> str | None:
    link = observed.link(name)
    return observed.name_of(link.master) if link is not None and link.master else None


def _related(iface: Interface) -> list[str]:
    """The names an interface's own declaration ties it to."""
    names = list(iface.ports)
    if iface.veth_peer:
        names.append(iface.veth_peer)
    if iface.base_iface:
        names.append(iface.base_iface)
    return names


def _names_of(group: tuple[Interface, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for iface in group for name in (iface.name, *_related(iface))))


def _plan_interfaces_grouped(desired: DesiredState, net: NetState, memo: PlanMemo) -> Section:
    """Interfaces, planned group by group; a group is planned again only when the
    desired state changed or a link it names changed since the last plan. A declared
    interface that joins a declared bridge outside its group regroups everything (it is
    rare); one leaving a bridge does not: a group larger than needed plans the same."""
    state = memo.interfaces
    names = None if state is None or state.desired is not desired.interfaces or state.net is not net \
        else net.changed_since(state.version)
    if state is not None and names is not None and any(state.joins_another_group(n) for n in names):
        names = None
    if state is None or names is None:
        state = _GroupMemo(desired.interfaces, net)
        memo.interfaces = state
        dirty: set[int] | None = None
    else:
        dirty = {g for n in names for g in state.by_name.get(n, ())}
    for i, group in enumerate(state.groups):
        if dirty is None or i in dirty:
            state.results[i] = plan_interfaces(group, net)
    state.version = net.version
    actions: list[Action] = []
    problems: list[Problem] = []
    for group_actions, group_problems in state.results:
        actions += group_actions
        problems += group_problems
    return actions, problems


class _GroupMemo:
    def __init__(self, desired: tuple[Interface, ...], net: NetState) -> None:
        self.desired = desired
        self.net = net
        self.groups = interface_groups(desired, current_masters(desired, net))
        self.version = -1
        self.results: list[Section] = [([], []) for _ in self.groups]
        self.by_name: dict[str, list[int]] = {}
        self.group_of: dict[str, int] = {}
        for i, group in enumerate(self.groups):
            for name in _names_of(group):
                self.by_name.setdefault(name, []).append(i)
            for iface in group:
                self.group_of[iface.name] = i

    def joins_another_group(self, name: str) -> bool:
        """Whether declared ``name`` is now a port of a declared bridge planned in another group."""
        mine = self.group_of.get(name)
        master = _master_name(name, self.net) if mine is not None else None
        return master is not None and self.group_of.get(master, mine) != mine


def created_links(actions: list[Action]) -> set[str]:
    """Links these actions create: each CreateLink's name and, for a veth, its peer."""
    created: set[str] = set()
    for action in actions:
        if isinstance(action.op, CreateLink):
            created.add(action.op.name)
            if action.op.veth_peer:
                created.add(action.op.veth_peer)
    return created


def ip_notes(desired: DesiredState) -> list[Note]:
    """What the plan leaves to a DHCP client or to SLAAC, said once per link and family."""
    notes = []
    for iface in desired.interfaces:
        for version, config in ((4, iface.ipv4), (6, iface.ipv6)):
            if config is None or not config.foreign:
                continue
            owner = " and ".join(k for k, on in (("dhcp", config.dhcp), ("autoconf", config.autoconf)) if on)
            keep = f"; the listed {', '.join(map(str, config.addresses))} kept too" if config.addresses else ""
            notes.append(Note(iface.resource, f"IPv{version} addresses and default route belong to the host's "
                                              f"{'DHCP client' if config.dhcp else 'router advertisements (SLAAC)'} "
                                              f"(ipv{version}.{owner}: true): left alone{keep}"))
    return notes


def plan(desired: DesiredState, observed: Observed, memo: PlanMemo | None = None) -> Plan:
    memo = memo or PlanMemo()
    actions: list[Action] = []
    problems: list[Problem] = []
    net = observed.net
    # NICs found by MAC: their profile names become kernel names from here on
    resolution = memo.identifiers.resolve(desired, net)
    desired = resolution.desired
    version = net.version_token()
    interfaces = _plan_interfaces_grouped(desired, net, memo)
    sections = [interfaces]
    # links this plan creates may carry routes and sysctl keys
    created = created_links(interfaces[0])
    if desired.routes:
        # links losing their last IPv4 address lose their routes: planned again
        flushed = flushed_links(interfaces[0], net)
        owned = foreign_default_routes(desired.interfaces)
        sections.append(memo.get("routes", (desired.routes, desired.interfaces, version),
                                 lambda: plan_routes(desired.routes, net, created, flushed, owned)))
    if desired.route_rules:
        rules = desired.route_rules
        sections.append(memo.get("route-rules", (rules, version), lambda: plan_route_rules(rules, net)))
    if observed.sysctls is not None:
        from vnetd.plan.sysctl import plan_sysctls

        sections.append(plan_sysctls(desired.sysctls, observed.sysctls, created))
    if observed.firewall is not None:
        from vnetd.plan.firewall import plan_firewall

        firewall, ids = observed.firewall, observed.rule_ids
        sections.append(memo.get("firewall", (desired.chains, firewall, ids),
                                 lambda: plan_firewall(desired.chains, firewall, ids)))
    if observed.firewall_retired:
        from vnetd.plan.firewall import plan_retired

        retired = observed.firewall_retired
        sections.append(memo.get("firewall-retired", (retired,), lambda: plan_retired(retired)))
    if desired.libvirt is not None:
        if observed.networks is None:
            # nothing of libvirt's can be checked: that is not "converged"
            sections.append(([], [Problem(f"libvirt/{desired.libvirt.uri}",
                                          f"libvirt at {desired.libvirt.uri} is not reachable; its networks and "
                                          "guests' taps are not checked")]))
        else:
            from vnetd.plan.libvirt import plan_libvirt

            sections.append(plan_libvirt(desired.libvirt, observed.networks, observed.guest_taps, desired, net))

    for section_actions, section_problems in sections:
        actions += section_actions
        problems += section_problems
    problems += resolution.problems
    problems += observed.problems
    return Plan(ordered(actions), tuple(problems), resolution.notes + memo.ip_notes(desired))
