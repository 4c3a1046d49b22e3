# SPDX-License-Identifier: MIT
"""``sysctl.conf`` -> the ``sysctl:`` section (``net.*`` keys only).

Read as sysctl(8) ``-p`` reads it: ``key = value`` lines (``/`` or ``.`` as the
separator), ``#`` and ``;`` comments, a leading ``-`` (systemd: ignore errors)
allowed. A key set twice counts with its last value, as ``sysctl -p`` leaves it.

vnetd manages network sysctls only (a state file must never become a way to
change ``kernel.*``), so every other key -- ``kernel.sysrq``, ``vm.*``, ``fs.*`` --
becomes a comment saying so; they stay in ``/etc/sysctl.d/``. Keys vnetd refuses
(wildcards such as ``net.ipv4.conf.*.rp_filter``) and lines that are not
``key = value`` become comments too. The file's own comments are kept in place.
``net.bridge.*`` keys get a note: they exist only while ``br_netfilter`` is loaded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from vnetd.desired.sysctl import MAX_VALUE_LENGTH, canonical_key, key_problem
from vnetd.importer.emit import Blank, Comment, Mapping
from vnetd.importer.sources import read_text, split_lines

_INTEGER = re.compile(r"^(0|-?[1-9][0-9]*)\Z")


@dataclass
class SysctlDraft:
    key: str
    value: str
    line: int
    written: str
    untranslated: str | None = None

    def scalar(self) -> str | int:
        return int(self.value) if _INTEGER.match(self.value) and abs(int(self.value)) < 2**63 else self.value


@dataclass
class SysctlImport:
    path: str
    items: list[SysctlDraft | Comment | Blank] = field(default_factory=list)

    def build(self) -> Mapping:
        out = Mapping()
        name = os.path.basename(self.path)
        for item in self.items:
            if not isinstance(item, SysctlDraft):
                out.entries.append(item)
            elif item.untranslated is not None:
                out.note(f"not translated: {name}:{item.line}: {item.written}\n  ({item.untranslated})", wrap=False)
            else:
                note = "needs the br_netfilter module" if item.key.startswith(("net.bridge.", "net/bridge/")) \
                    else None
                out.add(item.key, item.scalar(), ref=item, comment=note)
        while out.entries and isinstance(out.entries[-1], Blank):
            out.entries.pop()
        return out


def read_sysctl_conf(path: str) -> SysctlImport:
    return parse_sysctl_conf(read_text(path, "a sysctl.conf file"), path)


def parse_sysctl_conf(text: str, path: str) -> SysctlImport:
    result = SysctlImport(path)
    last: dict[str, SysctlDraft] = {}
    for number, raw in enumerate(split_lines(text), start=1):
        line = raw.strip()
        if not line:
            if result.items and not isinstance(result.items[-1], Blank):
                result.items.append(Blank())
            continue
        if line.startswith(("#", ";")):
            result.items.append(Comment(line[1:].strip(), wrap=False))
            continue
        key, sep, value = line.removeprefix("-").partition("=")
        key, value = key.strip(), value.strip()
        draft = SysctlDraft(key, value, number, line)
        result.items.append(draft)
        if not sep:
            draft.untranslated = "not a 'key = value' line"
            continue
        problem = key_problem(key)
        if problem is not None:
            if (key.split("/" if "/" in key else ".", 1)[0]) != "net":
                problem = "vnetd manages net.* only; keep it in /etc/sysctl.d/"
            draft.untranslated = problem
            continue
        if not value or len(value) > MAX_VALUE_LENGTH:
            draft.untranslated = f"expected a value of 1-{MAX_VALUE_LENGTH} characters"
            continue
        draft.key = canonical_key(key)
        earlier = last.get(draft.key)
        if earlier is not None:
            earlier.untranslated = f"set again at line {number}; the last value counts, as with sysctl -p"
        last[draft.key] = draft
    while result.items and isinstance(result.items[-1], Blank):
        result.items.pop()
    return result
