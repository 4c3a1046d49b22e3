# SPDX-License-Identifier: MIT
"""``rule-DEV`` / ``rule6-DEV`` files (initscripts' policy routing) -> ``route-rules``.

initscripts runs ``ip rule add LINE`` (``ip -6 rule add`` for rule6-) for every
line when DEV comes up; the rule is not tied to DEV. Each line becomes one
nmstate rule: ``from``/``to`` -> ``ip-from``/``ip-to`` (``all`` is no selector),
``table``/``lookup`` -> ``route-table`` (numbers, and iproute2's own names main,
default and local), ``pref``/``priority``/``preference`` -> ``priority``,
``fwmark MARK[/MASK]`` -> ``fwmark``/``fwmask``, ``iif``/``dev`` -> ``iif``, and
``blackhole``/``prohibit``/``unreachable`` -> ``action``. What nmstate cannot say
(``not``, ``oif``, ``tos``, ``uidrange``, ``realms``, ``goto``, ``nat``, table
names from /etc/iproute2/rt_tables, which is not in the network-scripts directory)
makes the line a ``not translated:`` comment with the reason.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from vnetd.desired import validate
from vnetd.importer.emit import Comment, Item, Mapping, Sequence
from vnetd.importer.sources import split_lines

_TABLE_NAMES = {"main": 254, "default": 253, "local": 255}
_ACTIONS = ("blackhole", "prohibit", "unreachable")
_MARK = re.compile(r"^(0x[0-9a-fA-F]{1,8}|[0-9]{1,10})(?:/(0x[0-9a-fA-F]{1,8}|[0-9]{1,10}))?\Z")
_NUMBER = re.compile(r"^[0-9]{1,10}\Z")  # a 32-bit number (and bounded work for int())


@dataclass
class RuleDraft:
    """One rule of the output; ``untranslated`` turns it into a comment."""

    family: int
    source: str  # file:line, for messages
    line: str
    comments: list[Comment] = field(default_factory=list)
    ip_from: str | None = None
    ip_to: str | None = None
    priority: int | None = None
    table: int | None = None
    fwmark: int | None = None
    fwmask: int | None = None
    iif: str | None = None
    action: str | None = None
    untranslated: str | None = None

    def build(self, seq: Sequence) -> None:
        seq.items.extend(self.comments)
        if self.untranslated is not None:
            seq.items.append(Comment(f"not translated: {self.source}: {self.line}\n  ({self.untranslated})",
                                     wrap=False))
            return
        m = Mapping()
        if self.ip_from is not None:
            m.add("ip-from", self.ip_from)
        if self.ip_to is not None:
            m.add("ip-to", self.ip_to)
        if self.ip_from is None and self.ip_to is None:
            m.add("family", f"ipv{self.family}")
        if self.priority is not None:
            m.add("priority", self.priority)
        if self.iif is not None:
            m.add("iif", self.iif)
        if self.fwmark is not None:
            m.add("fwmark", f"{self.fwmark:#x}")
        if self.fwmask is not None:
            m.add("fwmask", f"{self.fwmask:#x}")
        if self.action is not None:
            m.add("action", self.action)
        elif self.table is not None:
            m.add("route-table", self.table)
        seq.items.append(Item(m, ref=self))


def translate_rule_file(text: str, name: str) -> list[RuleDraft]:
    """Every non-comment line of a rule-DEV / rule6-DEV file, as a draft."""
    family = 6 if name.startswith("rule6-") else 4
    drafts = []
    for number, raw in enumerate(split_lines(text), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        draft = RuleDraft(family, f"{name}:{number}", line)
        problem = _parse(line.split(), draft)
        if problem is not None:
            draft.untranslated = problem
        else:
            draft.comments.append(Comment(f"from {name}:{number}: {line}", wrap=False))
        drafts.append(draft)
    return drafts


def _parse(words: list[str], draft: RuleDraft) -> str | None:
    """Fill ``draft`` from ``ip rule add`` arguments; the reason when it cannot be."""
    if words and words[0] in ("add", "append"):
        words = words[1:]
    i = 0
    while i < len(words):
        word = words[i]
        if word in _ACTIONS or word in ("type",):
            if word == "type":
                if i + 1 >= len(words) or words[i + 1] not in _ACTIONS + ("unicast",):
                    return "'type' needs blackhole, prohibit, unreachable or unicast"
                word = words[i + 1]
                i += 1
            if word != "unicast":
                draft.action = word
            i += 1
            continue
        if word == "not":
            return "'not' (an inverted selector) has no nmstate equivalent"
        arg = words[i + 1] if i + 1 < len(words) else None
        if arg is None:
            return f"{word!r} needs a value"
        problem = _argument(word, arg, draft)
        if problem is not None:
            return problem
        i += 2
    if draft.action is not None and draft.table is not None:
        return f"a rule either looks up a table or is {draft.action}, not both"
    if draft.action is None and draft.table is None:
        return "no table to look up (table N) and no action: `ip rule add` would refuse it too"
    return None


def _argument(word: str, arg: str, draft: RuleDraft) -> str | None:
    if word in ("from", "to"):
        if arg == "all":
            return None
        text = arg if "/" in arg else f"{arg}/{32 if draft.family == 4 else 128}"
        if (problem := validate.ip_network(text)) is not None:
            return problem
        if ipaddress.ip_network(text).version != draft.family:
            return f"{arg} is not an IPv{draft.family} address (the file is a rule{'6' if draft.family == 6 else ''}"\
                   "- file)"
        setattr(draft, "ip_from" if word == "from" else "ip_to", str(ipaddress.ip_network(text)))
    elif word in ("table", "lookup"):
        if arg in _TABLE_NAMES:
            draft.table = _TABLE_NAMES[arg]
        elif _NUMBER.match(arg) and 0 < int(arg) < 2**32:
            draft.table = int(arg)
        else:
            return (f"table {arg!r}: vnetd takes table numbers; look the name up in /etc/iproute2/rt_tables "
                    "and write its number")
    elif word in ("pref", "priority", "preference", "order"):
        if not _NUMBER.match(arg) or int(arg) >= 2**32:
            return f"{word} {arg!r} is not a number"
        draft.priority = int(arg)
    elif word == "fwmark":
        m = _MARK.match(arg)
        if m is None or int(m.group(1), 0) >= 2**32 or (m.group(2) and int(m.group(2), 0) >= 2**32):
            return f"fwmark {arg!r} is not MARK or MARK/MASK"
        draft.fwmark = int(m.group(1), 0)
        draft.fwmask = int(m.group(2), 0) if m.group(2) else None
    elif word in ("iif", "dev"):
        if (problem := validate.interface_name(arg)) is not None:
            return problem
        draft.iif = arg
    else:
        return f"'{word} {arg}' is not translated (nmstate rules have from, to, table, priority, fwmark, iif " \
               "and blackhole/prohibit/unreachable)"
    return None
