# SPDX-License-Identifier: MIT
"""The whole legacy iptables ruleset of the namespace, rule by rule, vnetd's or not.

For ``vnetd show``: every loaded table, every chain with its policy, every rule with
whether vnetd wrote it (its tag) and its text. vnetd's rules are shown as declared
when the state files declare them (the tag says which declaration), otherwise as
the kernel entry renders; foreign rules always render from the kernel entry
(``xtables.render_entry``, what ``iptables-save`` prints). Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vnetd.backends.iptables import RawTables, loaded_tables, walk_table
from vnetd.backends.xtables import declared_texts, entry_tag, render_entry
from vnetd.model.firewall import OWNER_MARK, ChainSpec, ShownChain, ShownRule, ShownTable


@dataclass
class _Chain:
    builtin: bool
    policy: str | None = None
    owned: bool = False
    rules: list[ShownRule] = field(default_factory=list)


def read_ruleset(declared: Iterable[ChainSpec] = ()) -> tuple[ShownTable, ...]:
    """Every loaded legacy table, in kernel order; ``declared`` lends vnetd's rules
    their declared text."""
    texts = declared_texts(declared)
    tables = []
    raw = RawTables()
    try:
        for table in loaded_tables():
            got = raw.read(table)
            if got is None:
                continue
            info, view = got
            blob = bytes(view)
            chains: dict[str, _Chain] = {}
            last: dict[str, str | None] = {}  # a declared -s a,b rule is several entries: shown once
            for e in walk_table(info, blob):
                chain = chains.setdefault(e.chain, _Chain(e.builtin))
                if e.policy:
                    chain.policy = e.meaning
                    continue
                if e.size == 0:
                    continue  # the head of a user chain
                entry = blob[e.offset : e.offset + e.size]
                tag = entry_tag(entry)
                prev, last[e.chain] = last.get(e.chain), tag
                if tag == OWNER_MARK:
                    chain.owned = True
                elif tag is not None:
                    if not (tag in texts and prev == tag):
                        chain.rules.append(ShownRule(texts.get(tag) or render_entry(entry, e.meaning), True))
                else:
                    chain.rules.append(ShownRule(render_entry(entry, e.meaning), False))
            tables.append(ShownTable(table, tuple(
                ShownChain(name, c.builtin, c.policy, c.owned, tuple(c.rules)) for name, c in chains.items())))
    finally:
        raw.close()
    return tuple(tables)
