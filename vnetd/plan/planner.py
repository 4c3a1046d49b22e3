# SPDX-License-Identifier: MIT
"""The whole plan: every section's actions, in one dependency order.

``plan(desired, observed)`` is a pure function. Sections not observed (``None`` in
``Observed``) are not planned: the CLI observes only what the files declare.
"""

from __future__ import annotations

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


def plan(desired: DesiredState, observed: Observed) -> Plan:
    actions: list[Action] = []
    problems: list[Problem] = []
    created = {i.name for i in desired.interfaces if i.type in VIRTUAL_TYPES and i.state is not AdminState.ABSENT}
    for section in (plan_interfaces(desired.interfaces, observed.net),
                    plan_routes(desired.routes, observed.net, created)):
        actions += section[0]
        problems += section[1]
    if observed.sysctls is not None:
        from vnetd.plan.sysctl import plan_sysctls

        section = plan_sysctls(desired.sysctls, observed.sysctls, {i.name for i in desired.interfaces})
        actions += section[0]
        problems += section[1]
    if observed.firewall is not None:
        from vnetd.plan.firewall import plan_firewall

        section = plan_firewall(desired.chains, observed.firewall, observed.rule_fingerprints)
        actions += section[0]
        problems += section[1]
    if observed.networks is not None and desired.libvirt is not None:
        from vnetd.plan.libvirt import plan_libvirt

        section = plan_libvirt(desired.libvirt, observed.networks, observed.guest_taps, desired, observed.net)
        actions += section[0]
        problems += section[1]
    return Plan(ordered(actions), tuple(problems))
