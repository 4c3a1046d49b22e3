# SPDX-License-Identifier: MIT
"""sysctl: write the declared value where the kernel prints another."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from vnetd.desired.sysctl import split_key
from vnetd.model.sysctl import SysctlSpec, missing_hint
from vnetd.plan.actions import Action, Phase, Problem, SetSysctl


def interface_of(key: str) -> str | None:
    """The interface a per-device key names (net.ipv4.conf.br0.forwarding -> br0)."""
    parts = split_key(key) or []
    if len(parts) >= 5 and parts[2] in ("conf", "neigh") and parts[1] in ("ipv4", "ipv6"):
        return parts[3]
    return None


def plan_sysctls(
    desired: Iterable[SysctlSpec], observed: dict[str, str | None], created: Collection[str] = ()
) -> tuple[list[Action], list[Problem]]:
    actions: list[Action] = []
    problems: list[Problem] = []
    for spec in desired:
        have = observed.get(spec.key)
        if have is None:
            if interface_of(spec.key) in created:
                # the interface is created by this plan; the key appears with it
                actions.append(Action(SetSysctl(spec.key, spec.value), Phase.SYSCTL, spec.resource, "value",
                                      spec.value, None))
            else:
                problems.append(Problem(spec.resource, missing_hint(spec.key)))
        elif have != spec.value:
            actions.append(Action(SetSysctl(spec.key, spec.value), Phase.SYSCTL, spec.resource, "value",
                                  spec.value, have))
    return actions, problems
