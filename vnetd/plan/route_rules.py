# SPDX-License-Identifier: MIT
"""Policy routing rules: add what is declared and missing, remove what is declared absent.

A declared rule is satisfied by a kernel rule with the same selectors and action
(``vnetd.model.route_rules.matches``); rules nobody declared are left alone, like
routes. An absent rule removes every kernel rule it matches, except the kernel's
own three (``0: lookup local``, ``32766: lookup main``, ``32767: lookup default``)
unless it names their priority, and except rules with selectors vnetd does not
manage (``oif``, ``tos``, ``not``...), which a delete request could not single out.
"""

from __future__ import annotations

from collections.abc import Iterable

from vnetd.model.netstate import NetState
from vnetd.model.route_rules import RouteRule, RouteRuleSpec, matches
from vnetd.plan.actions import Action, AddRouteRule, Phase, Problem, RemoveRouteRule


def plan_route_rules(desired: Iterable[RouteRuleSpec], observed: NetState) -> tuple[list[Action], list[Problem]]:
    actions: list[Action] = []
    problems: list[Problem] = []
    rules = sorted(observed.rules, key=lambda r: (r.family, r.priority, r.describe()))
    removing: set[RouteRule] = set()
    for spec in desired:
        res = spec.resource
        if spec.absent:
            for rule in rules:
                if rule not in removing and not rule.other and matches(spec, rule):
                    removing.add(rule)
                    actions.append(Action(RemoveRouteRule(rule), Phase.REMOVE_ROUTE_RULES, res, "state",
                                          "absent", rule.describe()))
            continue
        if any(matches(spec, rule) for rule in rules):
            continue
        actions.append(Action(AddRouteRule(spec), Phase.ADD_ROUTE_RULES, res, "rule", spec.describe(), None))
    return actions, problems
