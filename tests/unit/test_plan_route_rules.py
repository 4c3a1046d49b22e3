# SPDX-License-Identifier: MIT
"""The policy routing planner (route-rules) on hand-built kernel states, and the
checkpoint/restore of rules (pure; the kernel side is tests/integration/test_route_rules.py).

A declared rule is satisfied by a kernel rule with exactly its selectors and action;
an unwritten priority matches any; an absent rule is a filter that never takes the
kernel's own rules unless it names their priority, nor rules with selectors vnetd
does not manage.
"""

from __future__ import annotations

import ipaddress

import pytest

from vnetd.model.checkpoint import Checkpoint
from vnetd.model.interfaces import Link
from vnetd.model.netstate import NetState
from vnetd.model.route_rules import RouteRule, RouteRuleSpec, RuleAction, matches
from vnetd.model.routes import Route, RouteSpec
from vnetd.model.state import DesiredState
from vnetd.plan.actions import AddRouteRule, Phase, Plan, RemoveRouteRule
from vnetd.plan.planner import Observed, plan
from vnetd.plan.restore import record_rules, restore_plan, scope_of
from vnetd.plan.route_rules import plan_route_rules

net = ipaddress.ip_network
LOOKUP, BLACKHOLE = 1, 6
KERNEL, STATIC = 2, 4

DEFAULTS = (RouteRule(4, 0, 255, LOOKUP, None, None, None, 0, 0, KERNEL),
            RouteRule(4, 32766, 254, LOOKUP, None, None, None, 0, 0, KERNEL),
            RouteRule(4, 32767, 253, LOOKUP, None, None, None, 0, 0, KERNEL),
            RouteRule(6, 0, 255, LOOKUP, None, None, None, 0, 0, KERNEL),
            RouteRule(6, 32766, 254, LOOKUP, None, None, None, 0, 0, KERNEL))
MGMT = RouteRule(4, 1000, 100, LOOKUP, net("192.0.2.0/24"), None, None, 0, 0, STATIC)


def kernel(*rules: RouteRule) -> NetState:
    return NetState.build([], [], [], (*DEFAULTS, *rules))


def spec(**kw: object) -> RouteRuleSpec:
    return RouteRuleSpec(**{"family": 4, **kw})  # type: ignore[arg-type]


def test_declared_rule_present_is_nothing_to_do() -> None:
    assert plan_route_rules([spec(source=net("192.0.2.0/24"), priority=1000, table=100)], kernel(MGMT)) == ([], [])


def test_missing_rule_is_added_after_the_routes() -> None:
    want = spec(source=net("192.0.2.0/24"), priority=1000, table=100)
    actions, problems = plan_route_rules([want], kernel())
    assert problems == [] and [a.op for a in actions] == [AddRouteRule(want)]
    assert actions[0].phase is Phase.ADD_ROUTE_RULES > Phase.ADD_ROUTES
    assert (actions[0].resource, actions[0].want) == ("route-rule/priority 1000 from 192.0.2.0/24 lookup 100",
                                                      "priority 1000 from 192.0.2.0/24 lookup 100")


@pytest.mark.parametrize(("declared", "kernel_rule", "same"), [
    (spec(source=net("192.0.2.0/24"), table=100), MGMT, True),  # no priority written: any priority
    (spec(source=net("192.0.2.0/24"), table=100, priority=999), MGMT, False),
    (spec(source=net("192.0.2.0/24")), MGMT, False),  # no table written: the main table
    (spec(source=net("192.0.2.0/24"), destination=net("198.51.100.0/24"), table=100), MGMT, False),
    (spec(table=100), MGMT, False),  # from all is not from 192.0.2.0/24
    (spec(source=net("192.0.2.0/24"), table=100, iif="br0"), MGMT, False),
    (spec(fwmark=16, table=100), RouteRule(4, 5, 100, LOOKUP, None, None, None, 16, 0xFFFFFFFF, STATIC), True),
    (spec(fwmark=16, table=100), RouteRule(4, 5, 100, LOOKUP, None, None, None, 16, 0xFF, STATIC), False),
    (spec(fwmark=16, fwmask=0xFF, table=100), RouteRule(4, 5, 100, LOOKUP, None, None, None, 16, 0xFF, STATIC), True),
    (spec(destination=net("198.51.100.0/24"), action=RuleAction.BLACKHOLE),
     RouteRule(4, 5, 0, BLACKHOLE, None, net("198.51.100.0/24"), None, 0, 0, STATIC), True),
    (spec(destination=net("198.51.100.0/24"), action=RuleAction.PROHIBIT),
     RouteRule(4, 5, 0, BLACKHOLE, None, net("198.51.100.0/24"), None, 0, 0, STATIC), False),
    (spec(source=net("192.0.2.0/24"), table=100),
     RouteRule(4, 1000, 100, LOOKUP, net("192.0.2.0/24"), None, None, 0, 0, STATIC, ("oif eth1",)), False),
    (spec(family=6, source=net("2001:db8::/32"), table=100),
     RouteRule(4, 1000, 100, LOOKUP, net("192.0.2.0/24"), None, None, 0, 0, STATIC), False),
], ids=["any-priority", "other-priority", "main-by-default", "extra-ip-to", "from-all", "extra-iif", "mark-all-bits",
        "mark-other-mask", "mark-and-mask", "blackhole", "prohibit-is-not-blackhole", "unmanaged-selector",
        "other-family"])
def test_what_satisfies_a_declared_rule(declared: RouteRuleSpec, kernel_rule: RouteRule, same: bool) -> None:
    assert matches(declared, kernel_rule) is same


def test_absent_rule_removes_matches_but_never_the_kernels_own_or_unmanaged_ones() -> None:
    foreign = RouteRule(4, 2000, 100, LOOKUP, net("198.51.100.0/24"), None, None, 0, 0, 3)
    with_oif = RouteRule(4, 2001, 100, LOOKUP, None, None, None, 0, 0, 3, ("oif eth1",))
    other_table = RouteRule(4, 2002, 200, LOOKUP, None, None, None, 0, 0, 3)
    actions, _ = plan_route_rules([spec(table=100, absent=True)], kernel(MGMT, foreign, with_oif, other_table))
    assert [a.op for a in actions] == [RemoveRouteRule(MGMT), RemoveRouteRule(foreign)]
    assert all(a.phase is Phase.REMOVE_ROUTE_RULES for a in actions)
    everything, _ = plan_route_rules([spec(absent=True)], kernel(MGMT))  # family only: all but the kernel's
    assert [a.op for a in everything] == [RemoveRouteRule(MGMT)]
    default, _ = plan_route_rules([spec(priority=32767, absent=True)], kernel())  # named: the kernel's too
    assert [a.op for a in default] == [RemoveRouteRule(DEFAULTS[2])]


def test_a_rule_held_twice_is_removed_once_per_pass() -> None:
    actions, _ = plan_route_rules([spec(source=net("192.0.2.0/24"), absent=True)], kernel(MGMT, MGMT))
    assert [a.op for a in actions] == [RemoveRouteRule(MGMT)]


def test_planner_orders_rules_around_routes() -> None:
    desired = DesiredState(
        routes=(RouteSpec(net("0.0.0.0/0"), ipaddress.ip_address("192.0.2.254"), "br0", table=100),
                RouteSpec(net("203.0.113.0/24"), table=100, absent=True)),
        route_rules=(spec(source=net("192.0.2.0/24"), table=100, priority=1000),
                     spec(source=net("203.0.113.0/24"), absent=True)))
    old = RouteRule(4, 900, 100, LOOKUP, net("203.0.113.0/24"), None, None, 0, 0, STATIC)
    br0 = Link(3, "br0", "bridge", True, 1500, "02:00:00:00:00:02", None)
    route = Route(net("203.0.113.0/24"), 100, 3, None, 0, STATIC, 253)
    result = plan(desired, Observed(net=NetState.build([br0], [], [route], (*DEFAULTS, old))))
    phases = [a.phase for a in result.actions]
    assert phases == [Phase.REMOVE_ROUTE_RULES, Phase.REMOVE_ROUTES, Phase.ADD_ROUTES, Phase.ADD_ROUTE_RULES]


def test_netstate_follows_rule_notifications_as_a_multiset() -> None:
    state = kernel()
    version = state.version
    state.put_rule(MGMT)
    state.put_rule(MGMT)
    state.drop_rule(MGMT)
    assert state.rules[MGMT] == 1 and state.version == version + 3
    state.drop_rule(MGMT)
    state.drop_rule(MGMT)  # a notification for a rule no longer cached changes nothing
    assert MGMT not in state.rules and state.version == version + 4
    before = state.version
    state.replace_rules(list(DEFAULTS))
    assert state.version == before  # a resync that finds the same rules invalidates nothing


def test_checkpoint_records_the_families_a_plan_touches_and_restores_them() -> None:
    before = kernel(MGMT)
    change = plan(DesiredState(route_rules=(spec(source=net("192.0.2.0/24"), absent=True),
                                            spec(priority=32767, absent=True))), Observed(net=before))
    scope = scope_of(change, before)
    assert scope.rule_families == {4}
    cp = Checkpoint(0.0, "ns", rule_families=(4,), rules=record_rules(scope.rule_families, before))
    assert len(cp.rules) == 4 and Checkpoint.from_json(cp.to_json()) == cp
    added = RouteRule(4, 50, 100, LOOKUP, net("198.51.100.0/24"), None, None, 0, 0, STATIC)
    after = NetState.build([], [], [], (DEFAULTS[0], DEFAULTS[1], DEFAULTS[3], DEFAULTS[4], added))
    restore = restore_plan(cp, after, {}, {}, None)
    ops = [a.op for a in restore.actions]
    assert RemoveRouteRule(added) in ops
    readd = [op for op in ops if isinstance(op, AddRouteRule)]
    assert {(op.rule.priority, op.rule.table, op.protocol) for op in readd} == {(1000, 100, STATIC),
                                                                               (32767, 253, KERNEL)}
    assert restore_plan(cp, before, {}, {}, None) == Plan()
