# SPDX-License-Identifier: MIT
"""Firewall: declared chains and rules (parsed from iptables-save syntax) and what
netfilter holds, reduced to what the planner compares.

Two address families, one model: ``firewall:`` declares IPv4 chains (iptables),
``firewall6:`` IPv6 chains (ip6tables); a ``ChainSpec`` and an ``ObservedTable``
carry their ``family`` (4 or 6). Where tables of both families meet in one
mapping (the observed tables, checkpoints), a table is named by its *key*:
``filter`` for IPv4, as before, and ``ip6 filter`` for IPv6 (nft's name for it).

Rules are identified by a *tag*, an iptables comment ``vnetd:<hash>`` that vnetd adds
to every rule it writes; the hash covers table, chain and the rule as compiled (its
meaning, not its spelling), so a tag names one declared rule. Rule *content* is compared as a fingerprint: the
compiled kernel entry with counters and kernel-private bytes masked (see
``vnetd.backends.xtables``), which is the canonical form the kernel itself keeps.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum

from vnetd.model.common import Origin

TAG_PREFIX = "vnetd:"
_PLAIN = re.compile(r"[\w\-.:/,=+@%^]+", re.ASCII)
#: Comment of the marker rule (no target, a no-op) that makes a user chain vnetd's.
OWNER_MARK = "vnetd:owned-chain"

#: the tables vnetd manages, in both families (IPv6 has the same ones, with the same built-in chains)
TABLES = ("filter", "nat", "mangle", "raw")
BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
}
POLICIES = ("ACCEPT", "DROP")
def owner_mark_key(family: int) -> str:
    """Where a fingerprint map holds the owner mark of a family: its comment is the same
    in both families, its kernel entry (the header) is not."""
    return OWNER_MARK if family == 4 else f"{OWNER_MARK}/ip6"


#: ``firewall.backend: auto``: the backend is chosen on the host (where vnetd's rules are,
#: else what the host's ``iptables`` command is; ``backends.firewall.select_backend``)
AUTO_BACKEND = "auto"


@dataclass(frozen=True, slots=True)
class BackendEntry:
    """A firewall backend as ``firewall.backend`` names it: the registration of a class
    that implements ``vnetd.backends.firewall.FirewallBackend`` (data only: the pure core
    never imports a backend; ``backends.firewall.backend_class`` does, on first use)."""

    #: "module:Class"; the class is made with the address family (4 or 6) it serves
    path: str
    #: the address families it writes (4: ``firewall:``, 6: ``firewall6:``)
    families: tuple[int, ...]
    #: the variant of the ``iptables`` command that shows its tables ("legacy" or "nft")
    variant: str


#: Every firewall backend, by the name ``firewall.backend`` gives it. Adding one is a
#: module implementing ``backends.firewall.FirewallBackend`` and one line here.
FIREWALL_BACKENDS: dict[str, BackendEntry] = {
    "iptables-legacy": BackendEntry("vnetd.backends.iptables:FirewallBackend", (4, 6), "legacy"),
    "iptables-nft": BackendEntry("vnetd.backends.nftables:NftFirewallBackend", (4, 6), "nft"),
}
#: the values ``firewall.backend`` takes
BACKEND_CHOICES = (AUTO_BACKEND, *FIREWALL_BACKENDS)


#: the state file section of each address family
SECTIONS: dict[int, str] = {4: "firewall", 6: "firewall6"}
FAMILIES = tuple(SECTIONS)


def section_of(family: int) -> str:
    """``firewall`` or ``firewall6``: where a family's chains are declared, and the first
    part of their resource names (``firewall6/filter/INPUT``)."""
    return SECTIONS[family]


def table_key(table: str, family: int = 4) -> str:
    """A table's name among the tables of both families: ``filter``, ``ip6 filter``."""
    return table if family == 4 else f"ip6 {table}"


def split_table_key(key: str) -> tuple[int, str]:
    """(family, table) of a table key."""
    return (6, key[4:]) if key.startswith("ip6 ") else (4, key)


class ChainMode(StrEnum):
    MERGE = "merge"
    EXCLUSIVE = "exclusive"


_JUMP_FLAGS = frozenset(("-j", "--jump", "-g", "--goto"))
#: Header options as iptables-save writes them (the forms Rule.option looks for).
HEADER_OPTIONS = ("-s", "-d", "-i", "-o", "-p")


@dataclass(frozen=True, slots=True)
class Rule:
    """One declared rule: its words, as the iptables command gets them in argv, and
    its canonical text (the words re-quoted, which is what its tag is made of).

    What the words *mean* is libxtables' business (``vnetd.backends.xtables``
    compiles them exactly as iptables does); the helpers below only read the
    plain forms iptables-save writes, for the importer and for messages.
    """

    words: tuple[str, ...]
    text: str
    origin: Origin | None = field(default=None, compare=False)
    #: ``(name, goto)`` of ``-j NAME`` / ``-g NAME`` written as iptables-save does (read
    #: once: the compiler's cache key needs it for every rule of every pass)
    jump: tuple[str, bool] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        words = self.words
        jump = None
        flags = _JUMP_FLAGS.intersection(words[:-1])
        if flags:  # the first of them, as iptables reads it
            i = words.index(next(iter(flags))) if len(flags) == 1 else min(words.index(flag) for flag in flags)
            jump = words[i + 1], words[i] in ("-g", "--goto")
        object.__setattr__(self, "jump", jump)

    def option(self, flag: str) -> tuple[str, bool] | None:
        """``(value, inverted)`` of a header option written as iptables-save does (``-s``...)."""
        words = self.words
        for i, word in enumerate(words[:-1]):
            if word == flag:
                return words[i + 1], i > 0 and words[i - 1] == "!"
        return None



@dataclass(frozen=True, slots=True)
class ChainSpec:
    """``firewall.TABLE.CHAIN``, merged from every file that declares it (file-name order).

    ``rules`` are kept first in the chain; ``tail`` (declarations with ``position:
    append``, merge mode only) last, below other tools' rules. ``mode_at`` and
    ``policy_at`` say where mode and policy were written (one file only).
    ``family``: 4 (``firewall:``, iptables) or 6 (``firewall6:``, ip6tables).
    """

    table: str
    name: str
    policy: str | None
    mode: ChainMode
    rules: tuple[Rule, ...]
    origin: Origin | None = field(default=None, compare=False)
    tail: tuple[Rule, ...] = ()
    mode_at: Origin | None = field(default=None, compare=False)
    policy_at: Origin | None = field(default=None, compare=False)
    family: int = 4
    #: ``filter``, ``ip6 filter``: the table among both families' (see table_key; kept,
    #: as it names every rule of the chain in the compiled-rule tables)
    table_key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "table_key", table_key(self.table, self.family))

    @property
    def all_rules(self) -> tuple[Rule, ...]:
        return self.rules + self.tail

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN_CHAINS.get(self.table, ())

    @property
    def section(self) -> str:
        return section_of(self.family)

    @property
    def resource(self) -> str:
        return f"{self.section}/{self.table}/{self.name}"

    def key(self, rule: Rule) -> RuleKey:
        """What names one declared rule of this chain (for the compiled-rule tables)."""
        return (self.table_key, self.name, rule.text)


#: (table key -- "filter", "ip6 filter" --, chain, canonical text) of a declared rule
RuleKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class RuleId:
    """A declared rule as the kernel will hold it: its tag and the fingerprint of each of
    its entries. The tag is made of the rule's *meaning* (table, chain and the compiled
    entries without the tag), so two spellings of one rule carry the same tag, and a
    rule printed by ``vnetd show`` and fed back is recognised as the one installed."""

    tag: str
    fingerprints: tuple[bytes, ...]


def quote(value: str) -> str:
    """Quote a value the way iptables-save does (only when it needs it)."""
    if value and _PLAIN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# --------------------------------------------------------------------------- observed


@dataclass(frozen=True, slots=True)
class ObservedRule:
    """One kernel entry: its vnetd tag (if any) and its fingerprint."""

    tag: str | None
    fingerprint: bytes
    text: str | None = None  # rendered only where the planner needs to show it


@dataclass(frozen=True, slots=True)
class ObservedChain:
    name: str
    builtin: bool
    policy: str | None
    rules: tuple[ObservedRule, ...]
    #: ``rule_key`` of each rule, joined, when the backend keeps them (iptables-nft): the
    #: planner compares a 10,000-rule chain at memcmp speed and describes only what differs
    keys: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def owned(self) -> bool:
        return bool(self.rules) and self.rules[0].tag == OWNER_MARK


@dataclass(frozen=True, slots=True)
class ObservedTable:
    name: str
    chains: dict[str, ObservedChain]
    family: int = 4

    @property
    def key(self) -> str:
        return table_key(self.name, self.family)

    @property
    def section(self) -> str:
        return section_of(self.family)


# --------------------------------------------------------------------------- shown


@dataclass(frozen=True, slots=True)
class ShownRule:
    text: str  # without the "-A CHAIN" prefix
    managed: bool  # vnetd's (tagged), or someone else's


@dataclass(frozen=True, slots=True)
class ShownChain:
    name: str
    builtin: bool
    policy: str | None  # built-in chains only
    owned: bool  # a user chain that carries vnetd's owner mark
    rules: tuple[ShownRule, ...] = ()

    @property
    def managed(self) -> bool:
        """vnetd has something in it: its rules, or the chain itself."""
        return self.owned or any(r.managed for r in self.rules)

    @property
    def foreign(self) -> tuple[ShownRule, ...]:
        return tuple(r for r in self.rules if not r.managed)


@dataclass(frozen=True, slots=True)
class ShownTable:
    name: str
    chains: tuple[ShownChain, ...] = field(default=())
    family: int = 4

    @property
    def managed(self) -> bool:
        return any(c.managed for c in self.chains)


#: Size of a ``rule_key``
KEY_SIZE = 16


def rule_key(tag: str | None, fingerprint: bytes) -> bytes:
    """(tag, fingerprint) in 16 bytes: a chain's keys joined compare at memcmp speed."""
    return hashlib.blake2b((tag or "").encode() + b"\0" + fingerprint, digest_size=KEY_SIZE).digest()


def common_prefix(a: bytes, b: bytes) -> int:
    """How many leading keys two joined key lists share (memcmp, binary search)."""
    lo, hi = 0, min(len(a), len(b)) // KEY_SIZE
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[: mid * KEY_SIZE] == b[: mid * KEY_SIZE]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def common_suffix(a: bytes, b: bytes, prefix: int) -> int:
    """How many trailing keys they share, not counting into the common prefix."""
    lo, hi = 0, min(len(a), len(b)) // KEY_SIZE - prefix
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid * KEY_SIZE :] == b[len(b) - mid * KEY_SIZE :]:
            lo = mid
        else:
            hi = mid - 1
    return lo
