# SPDX-License-Identifier: MIT
"""The ``firewall:`` section: table -> chain -> {policy, mode, rules}."""

from __future__ import annotations

import yaml

from vnetd.desired import validate
from vnetd.desired.nodes import FileContext, MapView, as_map, as_string, join
from vnetd.desired.rules import RuleSyntaxError, parse_rule
from vnetd.model.common import Origin
from vnetd.model.firewall import BUILTIN_CHAINS, POLICIES, TABLES, ChainMode, ChainSpec, Rule

_CHAIN_KEYS = ("policy", "mode", "rules")
_MODES = tuple(m.value for m in ChainMode)

def parse_firewall(node: yaml.Node, ctx: FileContext) -> list[ChainSpec]:
    tables = as_map(node, "firewall", ctx, TABLES, "firewall (tables)")
    if tables is None:
        return []
    chains: list[ChainSpec] = []
    for table in tables.keys():
        tnode = tables.value_node(table)
        assert tnode is not None
        tview = as_map(tnode, join("firewall", table), ctx, None)
        if tview is None:
            continue
        for chain in tview.keys():
            spec = _parse_chain(table, chain, tview, ctx)
            if spec is not None:
                chains.append(spec)
    return chains


def _parse_chain(
    table: str, chain: str, tview: MapView, ctx: FileContext
) -> ChainSpec | None:
    path = join(tview.path, chain)
    key_node = tview.key_node(chain)
    builtin = chain in BUILTIN_CHAINS[table]
    before = len(ctx.issues)
    if not builtin:
        problem = validate.chain_name(chain)
        if problem:
            ctx.error(key_node, path, problem)
        elif chain.upper() in BUILTIN_CHAINS[table] or any(chain in c for c in BUILTIN_CHAINS.values()):
            ctx.error(key_node, path, f"{chain} is not a built-in chain of the {table} table "
                      f"(those are {', '.join(BUILTIN_CHAINS[table])}); pick another name for a user chain")
    vnode = tview.value_node(chain)
    assert vnode is not None
    c = as_map(vnode, path, ctx, _CHAIN_KEYS, "a chain")
    if c is None:
        return None
    policy = c.choice("policy", POLICIES)
    if policy is not None and not builtin:
        ctx.error(c.value_node("policy"), join(path, "policy"),
                  f"only built-in chains have a policy; {chain} is a user chain (end it with a rule instead)")
    mode = ChainMode(c.choice("mode", _MODES) or "merge")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    items = c.sequence("rules") if "rules" in c else []
    for item, rpath in items or []:
        text = as_string(item, rpath, ctx, "a rule in iptables-save syntax, e.g. '-i eth1 -j ACCEPT'")
        if text is None:
            continue
        line = item.start_mark.line + 1
        try:
            rule = parse_rule(text)
        except RuleSyntaxError as exc:
            ctx.error(item, rpath, f"{exc} (rule: {text})")
            continue
        if rule.text in seen:
            ctx.error(item, rpath, f"the same rule is already listed at line {seen[rule.text]}")
            continue
        seen[rule.text] = line
        rules.append(Rule(rule.words, rule.text, Origin(ctx.file, line)))
    if len(ctx.issues) != before:
        return None
    return ChainSpec(table, chain, policy, mode, tuple(rules), Origin(ctx.file, key_node.start_mark.line + 1))
