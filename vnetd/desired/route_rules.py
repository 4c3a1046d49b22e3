# SPDX-License-Identifier: MIT
"""The ``route-rules:`` section (nmstate ``route-rules.config``): policy routing.

Keys as nmstate writes them: ``ip-from``, ``ip-to``, ``priority``, ``route-table``,
``fwmark``, ``fwmask``, ``iif``, ``action`` (``blackhole``, ``unreachable``,
``prohibit``), ``family`` (``ipv4``, ``ipv6``) and ``state: absent``. A rule names
its family through an address or ``family``; ``fwmark``/``fwmask`` are numbers,
written in decimal or as ``0x`` hex (nmstate writes hex strings).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

import yaml

from vnetd.desired import validate
from vnetd.desired.nodes import FileContext, MapView, as_map, describe, join, scalar_value
from vnetd.desired.schema import ROUTE_RULE, ROUTE_RULES
from vnetd.errors import ConfigIssue
from vnetd.model.common import Origin
from vnetd.model.route_rules import ALL_BITS, RouteRuleSpec, RuleAction

_FAMILIES = {"ipv4": 4, "ipv6": 6}
_MARK = re.compile(r"(0|[1-9][0-9]*|0[xX][0-9a-fA-F]+)")
_TAG_INT = "tag:yaml.org,2002:int"
_TAG_STR = "tag:yaml.org,2002:str"


def parse_route_rules(node: yaml.Node, ctx: FileContext) -> list[RouteRuleSpec]:
    top = as_map(node, "route-rules", ctx, ROUTE_RULES, "route-rules")
    if top is None:
        return []
    items = top.sequence("config")
    if items is None:
        return []
    rules = []
    for item, path in items:
        rule = _parse_rule(item, path, ctx)
        if rule is not None:
            rules.append(rule)
    return rules


def _parse_rule(node: yaml.Node, path: str, ctx: FileContext) -> RouteRuleSpec | None:
    r = as_map(node, path, ctx, ROUTE_RULE, "a route rule")
    if r is None:
        return None
    before = len(ctx.issues)
    family_name = r.choice("family")
    family = _FAMILIES[family_name] if family_name else None
    source = _prefix(r, "ip-from", ctx)
    destination = _prefix(r, "ip-to", ctx)
    priority = r.integer("priority") if "priority" in r else None
    table = r.integer("route-table") if "route-table" in r else None
    fwmark = _mark(r, "fwmark", ctx)
    fwmask = _mark(r, "fwmask", ctx)
    iif = r.string("iif", validate.link_name)
    action_name = r.choice("action")
    absent = r.choice("state") == "absent"
    if len(ctx.issues) != before:
        return None
    for key, net in (("ip-from", source), ("ip-to", destination)):
        if net is None:
            continue
        if family is not None and net.version != family:
            ctx.error(r.value_node(key), join(path, key), f"{net} is IPv{net.version} but family is {family_name}")
            return None
        family = net.version
    if source is not None and destination is not None and source.version != destination.version:
        ctx.error(r.value_node("ip-to"), join(path, "ip-to"),
                  f"{destination} is IPv{destination.version} but ip-from {source} is IPv{source.version}")
        return None
    if family is None:
        ctx.error(r.node, path, "a route rule needs ip-from, ip-to or family (ipv4 or ipv6) to say which "
                                "family's rules it is")
        return None
    if table == 0:
        ctx.error(r.value_node("route-table"), join(path, "route-table"),
                  "table 0 is no table; write 254 (main), your own table (1-4294967295), or leave route-table "
                  "out for the main table")
        return None
    if action_name is not None and table is not None:
        ctx.error(r.value_node("action"), join(path, "action"),
                  f"a rule either looks up route-table or is {action_name}; remove one of them")
        return None
    if fwmask is not None and fwmark is None:
        ctx.error(r.value_node("fwmask"), join(path, "fwmask"), "fwmask needs fwmark: the mask says which bits "
                  "of the mark are compared")
        return None
    if priority == -1:  # nmstate's "let the backend choose": the kernel does
        priority = None
    return RouteRuleSpec(family, source, destination, priority, table, fwmark, fwmask, iif,
                         RuleAction(action_name) if action_name else None, absent, Origin(ctx.file, r.line))


def _prefix(r: MapView, key: str, ctx: FileContext) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """An address or a network (nmstate takes ``192.0.2.1`` for ``192.0.2.1/32``)."""
    text = r.string(key, expected="an address or a network such as 192.0.2.0/24")
    if text is None:
        return None
    if "/" not in text:
        if (problem := validate.ip_address(text)) is not None:
            ctx.error(r.value_node(key), join(r.path, key), problem + "; expected an address or a network")
            return None
        address = ipaddress.ip_address(text)
        return ipaddress.ip_network((address, address.max_prefixlen))
    if (problem := validate.ip_network(text)) is not None:
        ctx.error(r.value_node(key), join(r.path, key), problem)
        return None
    return ipaddress.ip_network(text)


def _mark(r: MapView, key: str, ctx: FileContext) -> int | None:
    """A 32-bit mark: 16, 0x10 or "0x10" (nmstate writes hex strings)."""
    node = r.value_node(key)
    if node is None:
        return None
    path = join(r.path, key)
    expected = "a number 0-4294967295 (decimal, or hex such as 0x10)"
    if not isinstance(node, yaml.ScalarNode) or node.tag not in (_TAG_INT, _TAG_STR):
        ctx.error(node, path, f"expected {expected}, got {describe(node)}")
        return None
    text = str(node.value).strip()
    if len(text) > 12:  # longer than 0xffffffff or 4294967295 (and bounded work for int())
        ctx.error(node, path, f"{text[:20]}... is out of range; expected {expected}")
        return None
    if not _MARK.fullmatch(text):
        if node.tag == _TAG_INT:  # 010 (octal to YAML 1.1), 1_000, 1:00
            ctx.error(node, path, f"write {text!r} in decimal or as 0x hex: YAML 1.1 reads it as "
                      f"{scalar_value(node)}, which is probably not what was meant")
        else:
            ctx.error(node, path, f"{text!r} is not {expected}")
        return None
    value = int(text, 0)
    if value > ALL_BITS:
        ctx.error(node, path, f"{text} is out of range; expected {expected}")
        return None
    return value


def check_route_rules(rules: Sequence[RouteRuleSpec]) -> list[ConfigIssue]:
    """Checks across files: the same rule twice, a rule declared both present and absent."""
    issues: list[ConfigIssue] = []
    first: dict[tuple[object, ...], RouteRuleSpec] = {}
    for rule in rules:
        prev = first.setdefault(rule.key(), rule)
        if prev is not rule:
            issues.append(_issue(rule, f"route rule '{rule.describe()}' is defined twice: at {prev.origin} "
                                       f"and at {rule.origin}"))
    present = [r for r in rules if not r.absent]
    for gone in (r for r in rules if r.absent):
        for want in present:
            if _absent_matches(gone, want):
                issues.append(_issue(gone, f"{gone.resource} is declared absent but {want.resource} is declared "
                                           f"at {want.origin}"))
    return issues


def _absent_matches(gone: RouteRuleSpec, want: RouteRuleSpec) -> bool:
    """Whether the absent rule would remove the present one once it exists."""
    return (gone.family == want.family
            and gone.source in (None, want.source) and gone.destination in (None, want.destination)
            and gone.priority in (None, want.priority)
            and (gone.table is None or (want.action is None and gone.table == want.table_id))
            and gone.fwmark in (None, want.fwmark or 0) and gone.fwmask in (None, want.mark_mask)
            and gone.iif in (None, want.iif) and gone.action in (None, want.action))


def _issue(rule: RouteRuleSpec, message: str) -> ConfigIssue:
    here = rule.origin or Origin("?", 0)
    return ConfigIssue(here.file, here.line, "", message)
