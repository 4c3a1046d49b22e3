# SPDX-License-Identifier: MIT
"""NICs found by their MAC (nmstate's ``identifier: mac-address``), and the names
that stand for them.

An interface written with ``identifier: mac-address`` is the NIC whose hardware
MAC is ``mac-address``, whatever the kernel named it: ``eth1`` of a CentOS 6 state
file may be ``enp3s0f1`` here. Its *profile name* (``profile-name``, else ``name``)
stands for that NIC everywhere the state files name an interface in nmstate's
schema or by path: a bridge's or a bond's ports, a bond's ``primary``, a VLAN's or
a VXLAN's ``base-iface``, a route's ``next-hop-interface``, a rule's ``iif`` and
the interface part of a sysctl key (``net.ipv4.conf.eth1.rp_filter``). A profile
name shadows a kernel link of the same name: with eth0 and eth1 swapped by the
hardware, ``eth1`` means the NIC that has eth1's MAC. Firewall rules are the
exception: their words are iptables' (``-i eth1`` is the kernel's eth1).

``resolve`` rewrites the desired state with kernel names, before anything is
planned. No guess is ever made: a MAC no NIC has, or two NICs have, is a Problem,
and nothing that refers to that profile is planned (a bridge keeps its other
ports; a route, rule or sysctl key through it waits). The candidates for a MAC are
the links a declared ``ethernet`` may be (a NIC, or a veth standing in for one),
compared by their own MAC: the permanent one where the driver reports it, else
the one a bond remembers for its port (a bond port shows the bond's MAC), else
the current one. A bridge or a VLAN shows its port's MAC and is no candidate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from vnetd.desired.sysctl import canonical_key, split_key
from vnetd.model.interfaces import NIC_KINDS, BondConfig, BridgeConfig, Interface
from vnetd.model.netstate import NetState
from vnetd.model.state import DesiredState
from vnetd.plan.actions import Note, Problem
from vnetd.plan.sysctl import interface_of


@dataclass(frozen=True, slots=True)
class Resolution:
    """The desired state with kernel names, and what could not be resolved."""

    desired: DesiredState
    problems: tuple[Problem, ...] = ()
    notes: tuple[Note, ...] = ()
    #: profile name -> kernel name (None: not found, or not found for sure)
    names: tuple[tuple[str, str | None], ...] = ()


def find_nics(desired: DesiredState, net: NetState) -> tuple[dict[str, str | None], list[Problem], list[Note]]:
    """Profile name -> the kernel name of the one NIC with its MAC (None when there is
    no such NIC, or more than one, each a Problem)."""
    wanted = [i for i in desired.interfaces if i.match_mac is not None]
    by_mac: dict[str, list[str]] = {}
    if wanted:
        macs = {i.match_mac for i in wanted}
        for link in net.links.values():
            mac = link.hw_mac
            if link.kind in NIC_KINDS and mac is not None and mac.lower() in macs:
                by_mac.setdefault(mac.lower(), []).append(link.name)
    declared_by_name = {i.name: i for i in desired.interfaces if i.match_mac is None}
    names: dict[str, str | None] = {}
    problems: list[Problem] = []
    notes: list[Note] = []
    for iface in wanted:
        assert iface.match_mac is not None
        found = sorted(by_mac.get(iface.match_mac, []))
        res = iface.resource
        if not found:
            problems.append(Problem(res, f"no NIC has the MAC {iface.match_mac} (identifier: mac-address); "
                                         f"nothing that refers to {iface.name!r} is planned"))
            names[iface.name] = None
        elif len(found) > 1:
            problems.append(Problem(res, f"{len(found)} NICs have the MAC {iface.match_mac}: {', '.join(found)}; "
                                         f"vnetd does not guess: nothing that refers to {iface.name!r} is planned"))
            names[iface.name] = None
        elif found[0] in declared_by_name and found[0] != iface.name:
            other = declared_by_name[found[0]]
            problems.append(Problem(res, f"the NIC with the MAC {iface.match_mac} is {found[0]}, which is also "
                                         f"declared by name ({other.origin}); nothing that refers to "
                                         f"{iface.name!r} is planned"))
            names[iface.name] = None
        else:
            names[iface.name] = found[0]
            if found[0] != iface.name:
                shadow = net.link(iface.name)
                also = (f"; the link named {iface.name} here is another device, and {iface.name} in the state "
                        "files means this NIC" if shadow is not None else "")
                notes.append(Note(res, f"the NIC with the MAC {iface.match_mac} is {found[0]} here{also}"))
    return names, problems, notes


def resolve(desired: DesiredState, net: NetState) -> Resolution:
    """``desired`` with every profile name replaced by its NIC's kernel name."""
    if not any(i.match_mac is not None for i in desired.interfaces):
        return Resolution(desired)
    names, problems, notes = find_nics(desired, net)
    resolved, more = rewrite(desired, names)
    return Resolution(resolved, tuple(problems + more), tuple(notes), tuple(sorted(names.items())))


def rewrite(desired: DesiredState, names: dict[str, str | None]) -> tuple[DesiredState, list[Problem]]:
    """Replace the profile names of ``names`` (None: unresolved) throughout ``desired``;
    the problems are the references to unresolved names (left out)."""
    problems: list[Problem] = []

    def lost(name: str | None) -> bool:
        return name is not None and name in names and names[name] is None

    def rename(name: str) -> str:
        return names.get(name) or name

    interfaces: list[Interface] = []
    for iface in desired.interfaces:
        if iface.match_mac is not None:
            kernel = names.get(iface.name)
            if kernel is not None:
                interfaces.append(replace(iface, name=kernel, profile=iface.name))
            continue
        base = iface.base_iface
        if lost(base):
            problems.append(Problem(iface.resource, f"its base-iface {base!r} is a NIC that was not found "
                                                    "(identifier: mac-address); not planned"))
            continue
        interfaces.append(_rename_references(iface, rename, lost, problems))
    routes = []
    for route in desired.routes:
        if lost(route.next_hop_interface):
            problems.append(Problem(route.resource, f"next-hop-interface {route.next_hop_interface!r} is a NIC "
                                                    "that was not found (identifier: mac-address); not planned"))
        elif route.next_hop_interface is not None and route.next_hop_interface in names:
            routes.append(replace(route, next_hop_interface=rename(route.next_hop_interface)))
        else:
            routes.append(route)
    rules = []
    for rule in desired.route_rules:
        if lost(rule.iif):
            problems.append(Problem(rule.resource, f"iif {rule.iif!r} is a NIC that was not found "
                                                   "(identifier: mac-address); not planned"))
        elif rule.iif is not None and rule.iif in names:
            rules.append(replace(rule, iif=rename(rule.iif)))
        else:
            rules.append(rule)
    sysctls = []
    for spec in desired.sysctls:
        device = interface_of(spec.key)
        if lost(device):
            problems.append(Problem(spec.resource, f"names {device!r}, a NIC that was not found "
                                                   "(identifier: mac-address); not planned"))
        elif device is not None and device in names:
            sysctls.append(replace(spec, key=rename_key(spec.key, rename(device))))
        else:
            sysctls.append(spec)
    resolved = replace(desired, interfaces=tuple(interfaces), routes=tuple(routes), route_rules=tuple(rules),
                       sysctls=tuple(sysctls))
    return resolved, problems


def rename_key(key: str, device: str) -> str:
    """A per-device sysctl key with another device (net.ipv4.conf.eth1.x -> net.ipv4.conf.enp3s0.x)."""
    parts = split_key(key) or []
    parts[3] = device
    return canonical_key("/".join(parts)) if any("." in p for p in parts) else canonical_key(".".join(parts))


def _rename_references(iface: Interface, rename: Callable[[str], str], lost: Callable[[str | None], bool],
                       problems: list[Problem]) -> Interface:
    """An interface with the profile names it refers to replaced (ports of lost NICs dropped)."""
    changes: dict[str, object] = {}

    def ports(listed: tuple[str, ...]) -> tuple[str, ...]:
        kept = []
        for port in listed:
            if lost(port):
                problems.append(Problem(f"interface/{port}", f"port of {iface.name}, is a NIC that was not found "
                                                             "(identifier: mac-address); not attached"))
            else:
                kept.append(rename(port))
        return tuple(kept)

    if iface.bridge is not None and iface.bridge.ports:
        changes["bridge"] = BridgeConfig(iface.bridge.stp, ports(iface.bridge.ports))
    if iface.bond is not None:
        options = []
        for name, value in iface.bond.options:
            if name == "primary" and isinstance(value, str):
                if lost(value):
                    problems.append(Problem(iface.resource, f"primary {value!r} is a NIC that was not found "
                                                            "(identifier: mac-address); not set"))
                    continue
                value = rename(value)
            options.append((name, value))
        changes["bond"] = BondConfig(iface.bond.mode, ports(iface.bond.ports) if iface.bond.ports is not None
                                     else None, tuple(options))
    if iface.vlan_base is not None:
        changes["vlan_base"] = rename(iface.vlan_base)
    if iface.vxlan is not None and iface.vxlan.base_iface is not None:
        changes["vxlan"] = replace(iface.vxlan, base_iface=rename(iface.vxlan.base_iface))
    if not changes:
        return iface
    new = replace(iface, **changes)  # type: ignore[arg-type]
    return iface if new == iface else new


class ResolutionMemo:
    """The last rewrite, reused while the profile names resolve to the same links, so
    that the planner's memos (which compare their inputs by identity) keep working."""

    def __init__(self) -> None:
        self._last: tuple[DesiredState, tuple[tuple[str, str | None], ...], DesiredState, list[Problem]] | None = None
        self._plain: DesiredState | None = None  # the last state without NICs found by MAC

    def finds_by_mac(self, desired: DesiredState) -> bool:
        """Whether ``desired`` has NICs found by MAC (asked once per desired state)."""
        if desired is self._plain:
            return False  # a quiet pass of the daemon: nothing to look at
        if not any(i.match_mac is not None for i in desired.interfaces):
            self._plain = desired
            return False
        return True

    def resolve(self, desired: DesiredState, net: NetState) -> Resolution:
        if not self.finds_by_mac(desired):
            return Resolution(desired)
        names, problems, notes = find_nics(desired, net)
        key = tuple(sorted(names.items()))
        last = self._last
        if last is not None and last[0] is desired and last[1] == key:
            resolved, more = last[2], last[3]
        else:
            resolved, more = rewrite(desired, names)
            self._last = (desired, key, resolved, more)
        return Resolution(resolved, tuple(problems + more), tuple(notes), key)


def sysctl_keys(desired: DesiredState, net: NetState) -> list[str]:
    """The sysctl keys the resolved state reads (profile names replaced)."""
    return [s.key for s in resolve(desired, net).desired.sysctls]
