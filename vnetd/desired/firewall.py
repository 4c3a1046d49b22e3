# SPDX-License-Identifier: MIT
"""The ``firewall:`` and ``firewall6:`` sections: table -> chain -> {policy, mode,
position, rules}. ``firewall:`` holds IPv4 chains (iptables), ``firewall6:`` IPv6
chains (ip6tables): the same shape, the same tables, read by the same code.

A chain may be declared in several files; ``merge_chains`` puts the parts
together in file-name order (``10-base.yaml`` holds SSH, ``50-web.yaml`` adds
HTTP). ``position: append`` keeps a declaration's rules at the bottom of a
merge chain, below other tools' rules (a trailing catch-all REJECT must stay
below libvirt's DHCP and NAT rules, which libvirt inserts at the top).

``backend`` beside the tables of ``firewall:`` chooses where the rules of both
sections are written (``auto``, ``iptables-legacy``, ``iptables-nft``:
model.firewall.BACKEND_CHOICES); files that give it must agree
(``merge_backend``).
"""

from __future__ import annotations

import yaml

from vnetd.desired import validate
from vnetd.desired.nodes import FileContext, MapView, as_map, as_string, join
from vnetd.desired.rules import RuleSyntaxError, parse_rule
from vnetd.desired.schema import CHAIN, FIREWALL, FIREWALL6, FIREWALL_TABLE
from vnetd.errors import ConfigIssue
from vnetd.model.common import Origin
from vnetd.model.firewall import AUTO_BACKEND, BACKEND_CHOICES, BUILTIN_CHAINS, ChainMode, ChainSpec, Rule, section_of

BACKEND_KEY = "backend"


def parse_firewall(node: yaml.Node, ctx: FileContext, family: int = 4,
                   backends: list[tuple[str, Origin]] | None = None) -> list[ChainSpec]:
    """``firewall:`` (family 4) or ``firewall6:`` (family 6). ``backends`` receives the
    ``backend`` this file gives, with where (``firewall:`` only: it applies to both)."""
    section = section_of(family)
    tables = as_map(node, section, ctx, FIREWALL6 if family == 6 else FIREWALL, f"{section} (tables)")
    if tables is None:
        return []
    if BACKEND_KEY in tables:
        choice = _parse_backend(tables, ctx, family)
        if choice is not None and backends is not None:
            backends.append(choice)
    chains: list[ChainSpec] = []
    for table in tables.keys():
        if table == BACKEND_KEY:
            continue
        tnode = tables.value_node(table)
        assert tnode is not None
        tview = as_map(tnode, join(section, table), ctx, FIREWALL_TABLE)
        if tview is None:
            continue
        for chain in tview.keys():
            spec = _parse_chain(table, chain, tview, ctx, family)
            if spec is not None:
                chains.append(spec)
    return chains


def _parse_backend(tables: MapView, ctx: FileContext, family: int) -> tuple[str, Origin] | None:
    path = join(tables.path, BACKEND_KEY)
    if family != 4:
        ctx.error(tables.key_node(BACKEND_KEY), path, "the backend is chosen under firewall: (firewall.backend) "
                  "and applies to firewall6: too; remove it here")
        return None
    value = tables.choice(BACKEND_KEY, BACKEND_CHOICES)
    if value is None:
        return None
    node = tables.value_node(BACKEND_KEY)
    assert node is not None
    return value, Origin(ctx.file, node.start_mark.line + 1)


def merge_backend(choices: list[tuple[str, Origin]]) -> tuple[str, Origin | None, list[ConfigIssue]]:
    """One ``firewall.backend`` for all files: "auto" when none gives it; files that give
    different values are an issue naming both."""
    if not choices:
        return AUTO_BACKEND, None, []
    value, origin = choices[0]
    issues = []
    for other, where in choices[1:]:
        if other != value:
            issues.append(ConfigIssue(where.file, where.line, f"firewall.{BACKEND_KEY}",
                                      f"firewall.backend is {other} here but {value} at {origin}: "
                                      "the files must agree (write it in one file)"))
    return value, origin, issues


def _parse_chain(
    table: str, chain: str, tview: MapView, ctx: FileContext, family: int
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
    c = as_map(vnode, path, ctx, CHAIN, "a chain")
    if c is None:
        return None
    policy = c.choice("policy")
    if policy is not None and not builtin:
        ctx.error(c.value_node("policy"), join(path, "policy"),
                  f"only built-in chains have a policy; {chain} is a user chain (end it with a rule instead)")
    mode = ChainMode(c.choice("mode") or "merge")
    position = c.choice("position") or "top"
    if position == "append" and mode is ChainMode.EXCLUSIVE:
        ctx.error(c.value_node("position"), join(path, "position"),
                  "position: append is for merge chains (an exclusive chain holds only vnetd's rules)")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    items = c.sequence("rules") if "rules" in c else []
    for item, rpath in items or []:
        if isinstance(item, yaml.MappingNode) and len(item.value) == 1:
            ctx.error(item, rpath, "expected a rule in iptables-save syntax, e.g. '-i eth1 -j ACCEPT', got a "
                      "mapping (': ' inside an unquoted rule makes YAML read it as 'key: value': quote the rule, "
                      "e.g. - '-j LOG --log-prefix \"fw: \"')")
            continue
        text = as_string(item, rpath, ctx, "a rule in iptables-save syntax, e.g. '-i eth1 -j ACCEPT'")
        if text is None:
            continue
        line = item.start_mark.line + 1
        try:
            rule = parse_rule(text, Origin(ctx.file, line))
        except RuleSyntaxError as exc:
            ctx.error(item, rpath, f"{exc} (rule: {text})")
            continue
        if rule.text in seen:
            ctx.error(item, rpath, f"the same rule is already listed at line {seen[rule.text]}")
            continue
        seen[rule.text] = line
        rules.append(rule)
    if len(ctx.issues) != before:
        return None
    def at(key: str) -> Origin | None:
        node = c.key_node(key) if key in c else None
        return Origin(ctx.file, node.start_mark.line + 1) if node is not None else None

    top, tail = (tuple(rules), ()) if position == "top" else ((), tuple(rules))
    return ChainSpec(table, chain, policy, mode, top, Origin(ctx.file, key_node.start_mark.line + 1), tail,
                     at("mode"), at("policy"), family)


def merge_chains(parts: list[ChainSpec]) -> tuple[list[ChainSpec], list[ConfigIssue]]:
    """Chains declared in several files, as one each (file-name order); mode and policy
    may be written in one file only, a rule once per chain."""
    issues: list[ConfigIssue] = []
    groups: dict[tuple[int, str, str], list[ChainSpec]] = {}
    for part in parts:
        groups.setdefault((part.family, part.table, part.name), []).append(part)
    merged: list[ChainSpec] = []
    for (family, table, name), group in groups.items():
        first = group[0]
        section = section_of(family)
        ip6 = " (firewall6)" if family == 6 else ""
        if len(group) == 1:
            merged.append(first)
            continue
        mode_parts = [p for p in group if p.mode_at is not None]
        policy_parts = [p for p in group if p.policy_at is not None]
        for what, written in (("mode", mode_parts), ("policy", policy_parts)):
            if len(written) > 1:
                here = getattr(written[1], f"{what}_at")
                issues.append(ConfigIssue(here.file, here.line, f"{section}.{table}.{name}.{what}",
                                          f"the {what} of chain {table} {name}{ip6} is written twice: at "
                                          f"{getattr(written[0], f'{what}_at')} and at {here} (write it in one file)"))
        mode = mode_parts[0].mode if mode_parts else ChainMode.MERGE
        policy = policy_parts[0].policy if policy_parts else None
        seen: dict[str, Origin | None] = {}
        for part in group:
            for rule in part.all_rules:
                if rule.text in seen and rule.origin is not None:
                    issues.append(ConfigIssue(rule.origin.file, rule.origin.line, f"{section}.{table}.{name}",
                                              f"the same rule is already listed at {seen[rule.text]} "
                                              f"(rule: {rule.text})"))
                seen.setdefault(rule.text, rule.origin)
        if mode is ChainMode.EXCLUSIVE and any(p.tail for p in group):
            bad = next(p for p in group if p.tail)
            where = bad.origin or Origin("?", 0)
            issues.append(ConfigIssue(where.file, where.line, f"{section}.{table}.{name}.position",
                                      "position: append is for merge chains, and this chain is exclusive "
                                      f"(mode written at {mode_parts[0].mode_at})"))
        merged.append(ChainSpec(table, name, policy, mode, tuple(r for p in group for r in p.rules), first.origin,
                                tuple(r for p in group for r in p.tail),
                                mode_parts[0].mode_at if mode_parts else None,
                                policy_parts[0].policy_at if policy_parts else None, family))
    return merged, issues
