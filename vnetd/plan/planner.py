# SPDX-License-Identifier: MIT
"""The whole plan: every section's actions, in one dependency order.

``plan(desired, observed)`` is a pure function. Sections not observed (``None`` in
``Observed``) are not planned: the CLI observes only what the files declare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vnetd.model.firewall import ObservedTable
from vnetd.model.interfaces import VIRTUAL_TYPES, AdminState

from vnetd.model.libvirt import GuestTap, ObservedNetwork
from vnetd.model.netstate import NetState
from vnetd.model.state import DesiredState
from vnetd.plan.actions import Action, Plan, Problem, ordered
from vnetd.plan.interfaces import plan_interfaces
from vnetd.plan.routes import plan_routes


@dataclass
class Observed:
    """Everything the planner compares against; filled by the backends."""

    net: NetState = field(default_factory=NetState)
    #: sysctl key -> value as the kernel prints it; None when the key does not exist
    sysctls: dict[str, str | None] | None = None
    #: table name -> table; None when netfilter was not read
    firewall: dict[str, ObservedTable] | None = None
    #: tag -> fingerprint of each declared rule as the kernel would hold it
    rule_fingerprints: dict[str, bytes] = field(default_factory=dict)
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

    def get(self, name: str, inputs: tuple[object, ...], compute: Callable[[], Section]) -> Section:
        entry = self._entries.get(name)
        if entry is not None and len(entry[0]) == len(inputs) and all(a is b for a, b in zip(entry[0], inputs)):
            return entry[1]
        result = compute()
        self._entries[name] = (inputs, result)
        return result


def plan(desired: DesiredState, observed: Observed, memo: PlanMemo | None = None) -> Plan:
    memo = memo or PlanMemo()
    actions: list[Action] = []
    problems: list[Problem] = []
    net = observed.net
    version = net.version_token()
    created = {i.name for i in desired.interfaces if i.type in VIRTUAL_TYPES and i.state is not AdminState.ABSENT}
    sections = [
        memo.get("interfaces", (desired.interfaces, version), lambda: plan_interfaces(desired.interfaces, net)),
        memo.get("routes", (desired.routes, version), lambda: plan_routes(desired.routes, net, created)),
    ]
    if observed.sysctls is not None:
        from vnetd.plan.sysctl import plan_sysctls

        sections.append(plan_sysctls(desired.sysctls, observed.sysctls, {i.name for i in desired.interfaces}))
    if observed.firewall is not None:
        from vnetd.plan.firewall import plan_firewall

        firewall, fingerprints = observed.firewall, observed.rule_fingerprints
        sections.append(memo.get("firewall", (desired.chains, firewall, fingerprints),
                                 lambda: plan_firewall(desired.chains, firewall, fingerprints)))
    if observed.networks is not None and desired.libvirt is not None:
        from vnetd.plan.libvirt import plan_libvirt

        sections.append(plan_libvirt(desired.libvirt, observed.networks, observed.guest_taps, desired, net))
    for section_actions, section_problems in sections:
        actions += section_actions
        problems += section_problems
    return Plan(ordered(actions), tuple(problems))
