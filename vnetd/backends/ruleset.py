# SPDX-License-Identifier: MIT
"""The whole legacy iptables (or ip6tables) ruleset of the namespace, rule by rule, vnetd's or not.

For ``vnetd show``: every loaded table, every chain with its policy, every rule with
whether vnetd wrote it (its tag) and its text. vnetd's rules are shown as declared
when the state files declare them (the tag says which declaration), otherwise as
the kernel entry renders; foreign rules always render from the kernel entry
(``xtables.render_entry``, what ``iptables-save`` prints). Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vnetd.backends.iptables import LEGACY, RawTables, loaded_tables, walk_table
from vnetd.backends.xtables import declared_texts, entry_tag, render_entry
from vnetd.model.firewall import OWNER_MARK, ChainSpec, ShownChain, ShownRule, ShownTable


@dataclass
class _Chain:
    builtin: bool
    policy: str | None = None
    owned: bool = False
    rules: list[ShownRule] = field(default_factory=list)


def read_ruleset(declared: Iterable[ChainSpec] = (), family: int = 4) -> tuple[ShownTable, ...]:
    """Every loaded legacy table of ``family`` (4: iptables, 6: ip6tables), in kernel
    order; ``declared`` lends vnetd's rules their declared text."""
    texts = declared_texts(declared)
    layout = LEGACY[family].layout
    tables = []
    raw = RawTables(family)
    try:
        for table in loaded_tables(family):
            got = raw.read(table)
            if got is None:
                continue
            info, view = got
            blob = bytes(view)
            chains: dict[str, _Chain] = {}
            last: dict[str, str | None] = {}  # a declared -s a,b rule is several entries: shown once
            for e in walk_table(info, blob, layout):
                chain = chains.setdefault(e.chain, _Chain(e.builtin))
                if e.policy:
                    chain.policy = e.meaning
                    continue
                if e.size == 0:
                    continue  # the head of a user chain
                entry = blob[e.offset : e.offset + e.size]
                tag = entry_tag(entry, layout)
                prev, last[e.chain] = last.get(e.chain), tag
                if tag == OWNER_MARK:
                    chain.owned = True
                elif tag is not None:
                    if not (tag in texts and prev == tag):
                        text = texts.get(tag) or render_entry(entry, e.meaning, family=family)
                        chain.rules.append(ShownRule(text, True))
                else:
                    chain.rules.append(ShownRule(render_entry(entry, e.meaning, family=family), False))
            tables.append(ShownTable(table, family=family, chains=tuple(
                ShownChain(name, c.builtin, c.policy, c.owned, tuple(c.rules)) for name, c in chains.items())))
    finally:
        raw.close()
    return tuple(tables)
