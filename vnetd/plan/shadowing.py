# SPDX-License-Identifier: MIT
"""Shadowing: another base chain on a hook where vnetd accepts drops what vnetd lets through.

netfilter runs *every* base chain hooked on a hook, in priority order, whatever
holds it: the legacy iptables tables, iptables-nft's ``table ip filter``,
firewalld's ``table inet firewalld``, a distribution's ``table inet filter``.
An ACCEPT ends only the chain it is in; a DROP ends the packet. So vnetd's
``-m physdev --physdev-is-bridged -j ACCEPT`` in the legacy ``filter FORWARD``
lets nothing through while Docker's iptables-nft ``FORWARD`` has policy drop:
packets must pass both. This module decides, from the base chains a backend
read (``BaseChain``, ``backends/shadowing.py`` reads them), which of them drop
what vnetd's declared chains accept (``Acceptance``). It is pure: unit tests
give it values.

What counts as vnetd accepting (``acceptances``): a built-in chain of the
``filter`` table vnetd declares, with ``-j ACCEPT`` rules (directly, or by a jump
to a user chain vnetd declares that accepts) or a declared ``policy: ACCEPT``.
An ACCEPT in ``nat``, ``mangle`` or ``raw`` ends only that table's processing;
it is not a decision to let traffic through, and is not looked at.

What counts as dropping (``BaseChain.drops``), for a base chain on the same
hook and the same family (``inet`` serves both IPv4 and IPv6), in any table of
either backend, running before or after vnetd's chain (the order decides only
whose counters move), other than the chain that holds vnetd's rules:

* its policy is drop;
* its last rule is an unconditional drop or reject (nothing before the verdict
  but counters, logs or comments): firewalld's ``filter_FORWARD`` ends in
  ``reject with icmpx admin-prohibited``.

What is *not* reported, on purpose: drop rules with conditions (``ct state
invalid drop``, Docker's isolation rules, fail2ban's bans). They are in every
firewall, they drop only what their author meant to, and whether they hit
vnetd's traffic cannot be known from the rules (it depends on the packets);
reporting them would put a warning on every host and teach administrators to
ignore it. Jumps into chains that drop everything and verdict maps are not
followed either: of a chain, vnetd reads its policy and last rule, so the reading
stays cheap and bounded. One exception: a chain of nf_tables that drops is not
reported when it (or a chain it jumps to) holds every one of vnetd's accepting
rules on that hook as the same iptables rule with ``-j ACCEPT`` (the fix an
administrator makes on a Docker host: ``iptables -I DOCKER-USER -m physdev
--physdev-is-bridged -j ACCEPT``), which the reader finds (``BaseChain.accepts``).
The message says what is known: that chain drops what it does not accept itself.

Bridged traffic (br_netfilter) passes the ``bridge`` family's hooks as well as
the IP ones, so a ``bridge`` family chain on the forward hook that drops (an
``ebtables-nft -P FORWARD DROP``) shadows vnetd's rules that accept bridged
traffic (``-m physdev``, without ``! --physdev-is-bridged``), and only those.
Chains of the ``netdev`` and ``arp`` families and ``ingress`` hooks are other
hooks than vnetd's and are not compared.

Inside vnetd's own chains (``unreached``): in a merge chain vnetd's declared rules
come first, so nothing of others' is above them; but ``position: append`` rules
are kept *below* every other tool's rules, by design, and a rule of another tool
that decides every packet (``-j ACCEPT``/``DROP``/``REJECT``/``RETURN`` with no
match but comments) keeps every packet from them (``Unreached``), read from the
ruleset the backend shows (``ShownTable``).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from vnetd.model.firewall import ChainMode, ChainSpec, Rule, ShownTable, table_key

#: the backends vnetd writes (``FirewallBackend.name``)
LEGACY = "iptables-legacy"
NFT = "iptables-nft"
#: where a base chain lives
IN_LEGACY = "legacy"
IN_NF_TABLES = "nf_tables"

#: netfilter's NF_INET_* hooks, by the built-in chain that is hooked there
HOOKS = {"PREROUTING": 0, "INPUT": 1, "FORWARD": 2, "OUTPUT": 3, "POSTROUTING": 4}
HOOK_NAMES = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}
#: nf_tables families whose chains see the packets of vnetd's families (4: firewall:, 6: firewall6:)
NF_FAMILIES: dict[int, tuple[str, ...]] = {4: ("ip", "inet"), 6: ("ip6", "inet")}
BRIDGE = "bridge"
#: the legacy tables' own family names (iptables, ip6tables), as BaseChain.family
LEGACY_FAMILY = {4: "ip", 6: "ip6"}
#: priorities of the iptables tables' chains (NF_IP_PRI_*; iptables-nft gives its chains the same)
PRIORITIES: dict[str, int] = {"raw": -300, "mangle": -150, "filter": 0, "security": 50}
NAT_PRIORITIES = {0: -100, 3: -100, 1: 100, 4: 100}  # DNAT before, SNAT after
#: accepting rules named in the message before "and N more"
SHOWN_RULES = 1
#: warnings listed before "and N more"
SHOWN_SHADOWS = 20
DOCS = "docs/OPERATIONS.md"
#: the event name of the warnings and of the daemon's log lines
SHADOWED = "firewall.shadowed"


def iptables_priority(table: str, hook: int) -> int | None:
    """The priority an iptables table's built-in chain has on ``hook`` (None: unknown table)."""
    if table == "nat":
        return NAT_PRIORITIES.get(hook)
    return PRIORITIES.get(table)


@dataclass(frozen=True, slots=True)
class BaseChain:
    """A chain netfilter runs on a hook, as read from the kernel (or as vnetd will make it)."""

    source: str  # IN_NF_TABLES or IN_LEGACY
    family: str  # nf_tables family ("ip", "ip6", "inet"); legacy: "ip" (iptables) or "ip6" (ip6tables)
    table: str
    name: str
    hook: int  # NF_INET_*
    priority: int | None
    policy_drop: bool
    final: str | None = None  # "drop" / "reject": the last rule is an unconditional drop or reject
    #: vnetd's accepting rules (declared texts) that this chain accepts itself, as the same
    #: iptables rule in it or in a chain it jumps to (Docker's DOCKER-USER, added by hand)
    accepts: frozenset[str] = frozenset()

    @property
    def drops(self) -> bool:
        """Drops (or rejects) every packet it does not accept itself."""
        return self.policy_drop or self.final is not None

    def sees(self, accepted: Acceptance) -> bool:
        """Sees the packets ``accepted`` lets through: those of its family (4 or 6; ``inet``
        both), and bridged ones on the forward hook of the ``bridge`` family."""
        if self.hook != accepted.hook:
            return False
        if self.source == IN_LEGACY:
            return self.family == LEGACY_FAMILY[accepted.family]
        if self.family == BRIDGE:
            return accepted.bridged is not None and accepted.chain == "FORWARD"
        return self.family in NF_FAMILIES[accepted.family]

    def describe(self) -> str:
        hook = HOOK_NAMES.get(self.hook, str(self.hook))
        priority = "?" if self.priority is None else str(self.priority)
        if self.source == IN_LEGACY:
            policy = "DROP" if self.policy_drop else "ACCEPT"
            command = "ip6tables" if self.family == "ip6" else "iptables"
            where = f"legacy {command} table `{self.table}` chain {self.name}"
        else:
            policy = "drop" if self.policy_drop else "accept"
            where = f"nf_tables `table {self.family} {self.table}` chain {self.name}"
        ends = f", ends in an unconditional {self.final}" if self.final and not self.policy_drop else ""
        return f"{where} (hook {hook}, priority {priority}, policy {policy}{ends})"

    @property
    def verb(self) -> str:
        return "rejects" if self.final == "reject" and not self.policy_drop else "drops"


@dataclass(frozen=True, slots=True)
class Acceptance:
    """A built-in filter chain where vnetd's declared rules (or policy) accept traffic."""

    family: int  # 4 (firewall:) or 6 (firewall6:)
    chain: str  # INPUT, FORWARD or OUTPUT
    rules: tuple[str, ...]  # the accepting rules, as declared (jumps into accepting chains included)
    policy: bool  # policy: ACCEPT is declared
    bridged: str | None = None  # the first accepting rule that matches bridged traffic only (-m physdev)
    table: str = "filter"

    @property
    def hook(self) -> int:
        return HOOKS[self.chain]

    def describe(self) -> str:
        where = f"{table_key(self.table, self.family)} {self.chain}"
        if not self.rules:
            return f"{where} accepts by its policy ACCEPT"
        what = "bridged traffic " if self.bridged else ""
        shown = ", ".join(([self.bridged] if self.bridged else list(self.rules))[:SHOWN_RULES])
        more = len(self.rules) - SHOWN_RULES
        extra = f" and {more} more rule{'s' if more != 1 else ''}" if more > 0 else ""
        policy = ", and by its policy ACCEPT" if self.policy else ""
        return f"{where} accepts {what}({shown}{extra}){policy}"


@dataclass(frozen=True, slots=True)
class Shadow:
    """A base chain that drops what an ``Acceptance`` of vnetd's lets through."""

    accepted: Acceptance
    chain: BaseChain

    def message(self) -> str:
        return (f"{self.accepted.describe()}, but {self.chain.describe()} {self.chain.verb} what it does not "
                f"accept itself: packets must pass both (see {DOCS})")

    def clear_message(self) -> str:
        return f"no longer dropped by {self.chain.describe()}: {self.accepted.describe()}"

    def fields(self) -> dict[str, object]:
        """Key/value fields of the log event."""
        c = self.chain
        return {"vnetd_chain": f"{table_key(self.accepted.table, self.accepted.family)} {self.accepted.chain}",
                "where": c.source, "family": c.family, "table": c.table, "chain": c.name,
                "hook": HOOK_NAMES.get(c.hook, str(c.hook)), "priority": c.priority,
                "policy": "drop" if c.policy_drop else "accept", "final": c.final}


# --------------------------------------------------------------------------- what vnetd accepts


def _is_bridged(rule: Rule) -> bool:
    """Matches bridged packets only: a physdev match (``--physdev-is-bridged``, ``--physdev-in``
    ...) that is not ``! --physdev-is-bridged``."""
    words = rule.words
    if not any(w == "physdev" and i > 0 and words[i - 1] in ("-m", "--match") for i, w in enumerate(words)):
        return False
    return not any(w == "--physdev-is-bridged" and i > 0 and words[i - 1] == "!" for i, w in enumerate(words))


def acceptances(chains: Iterable[ChainSpec]) -> tuple[Acceptance, ...]:
    """The hooks where vnetd's declared chains accept traffic, one per built-in filter chain."""
    chains = tuple(chains)
    by_name: Mapping[tuple[int, str, str], ChainSpec] = {(c.family, c.table, c.name): c for c in chains}
    memo: dict[tuple[int, str, str], bool] = {}

    def accepting(rule: Rule, spec: ChainSpec, seen: frozenset[str]) -> bool:
        """``-j ACCEPT``, or a jump (goto) to a user chain vnetd declares that holds one."""
        jump = rule.jump
        if jump is None:
            return False
        target = jump[0]
        if target == "ACCEPT":
            return True
        callee = by_name.get((spec.family, spec.table, target))
        if callee is None or callee.builtin or target in seen:
            return False  # a chain vnetd does not declare is not followed; nor a loop
        key = (callee.family, callee.table, callee.name)
        if key not in memo:
            memo[key] = any(accepting(r, callee, seen | {target}) for r in callee.all_rules)
        return memo[key]

    out = []
    for spec in chains:
        if spec.table != "filter" or not spec.builtin or spec.name not in HOOKS:
            continue
        rules = [r for r in spec.all_rules if accepting(r, spec, frozenset({spec.name}))]
        policy = spec.policy == "ACCEPT"
        if rules or policy:
            bridged = next((r.text for r in rules if _is_bridged(r)), None)
            out.append(Acceptance(spec.family, spec.name, tuple(r.text for r in rules), policy, bridged))
    return tuple(sorted(out, key=lambda a: (a.family, a.hook)))


# --------------------------------------------------------------------------- the decision


def own_chain(backend: str, accepted: Acceptance) -> tuple[str, str, str, str]:
    """(source, family, table, chain) of the base chain holding vnetd's accepting rules."""
    source = IN_NF_TABLES if backend == NFT else IN_LEGACY
    return source, LEGACY_FAMILY[accepted.family], accepted.table, accepted.chain


def _unconditional_verb(rule: Rule) -> str | None:
    """``-j DROP`` / ``-j REJECT [--reject-with X]`` with nothing else: "drop" / "reject"."""
    words = rule.words
    if words == ("-j", "DROP"):
        return "drop"
    if words[:2] == ("-j", "REJECT") and (len(words) == 2 or (len(words) == 4 and words[2] == "--reject-with")):
        return "reject"
    return None


def as_declared(found: Iterable[BaseChain], declared: Iterable[ChainSpec], backend: str) -> list[BaseChain]:
    """The base chains as they are once vnetd has applied: in the backend vnetd writes, a
    policy it declares replaces the kernel's (a built-in chain it will create with a
    DROP policy is added), and the last rule of an ``exclusive`` chain, or of a chain
    with ``position: append`` rules, is vnetd's last declared rule. So ``check`` and
    ``plan`` (before) and the daemon (after) say the same."""
    source = IN_NF_TABLES if backend == NFT else IN_LEGACY
    out = list(found)
    index = {(c.source, c.family, c.table, c.name): i for i, c in enumerate(out)}
    for spec in declared:
        if not spec.builtin or spec.name not in HOOKS:
            continue
        key = (source, LEGACY_FAMILY[spec.family], spec.table, spec.name)
        last = spec.tail[-1] if spec.tail else (spec.rules[-1] if spec.rules else None)
        final_known = spec.mode == ChainMode.EXCLUSIVE or bool(spec.tail)
        i = index.get(key)
        if i is None:
            if spec.policy == "DROP" or (final_known and last is not None and _unconditional_verb(last)):
                hook = HOOKS[spec.name]
                out.append(BaseChain(source, key[1], spec.table, spec.name, hook,
                                     iptables_priority(spec.table, hook), spec.policy == "DROP",
                                     _unconditional_verb(last) if final_known and last is not None else None))
            continue
        chain = out[i]
        if spec.policy is not None:
            chain = replace(chain, policy_drop=spec.policy == "DROP")
        if final_known:
            chain = replace(chain, final=_unconditional_verb(last) if last is not None else None)
        out[i] = chain
    return out


def shadows(accepted: Iterable[Acceptance], chains: Iterable[BaseChain], backend: str) -> tuple[Shadow, ...]:
    """Each base chain on the hook and family of an acceptance that drops what it does not
    accept itself, other than the chain holding vnetd's rules, in priority order."""
    chains = tuple(chains)
    out = []
    for acc in accepted:
        own = own_chain(backend, acc)
        for chain in chains:
            if not chain.drops or not chain.sees(acc):
                continue
            if (chain.source, chain.family, chain.table, chain.name) == own:
                continue
            if acc.rules and chain.accepts.issuperset(acc.rules):
                continue  # it lets through what vnetd accepts: the other tool was told to
            out.append(Shadow(acc, chain))
    return tuple(sorted(out, key=lambda s: (s.accepted.family, s.accepted.hook,
                                            s.chain.priority if s.chain.priority is not None else 0,
                                            s.chain.source, s.chain.family, s.chain.table, s.chain.name)))


class Finding(Protocol):
    """A ``Shadow`` or an ``Unreached``: what is said (``message``) and logged (``fields``)."""

    def message(self) -> str: ...

    def clear_message(self) -> str: ...

    def fields(self) -> dict[str, object]: ...


def warning_lines(found: Iterable[Finding]) -> list[str]:
    """``firewall.shadowed: ...`` warnings (check, plan, apply), the first SHOWN_SHADOWS of them."""
    found = tuple(found)
    lines = [f"{SHADOWED}: {s.message()}" for s in found[:SHOWN_SHADOWS]]
    if len(found) > SHOWN_SHADOWS:
        lines.append(f"{SHADOWED}: and {len(found) - SHOWN_SHADOWS} more chains that drop what vnetd's "
                     "rules accept")
    return lines


def shadowed_note(n: int) -> str:
    """What ``plan`` and ``apply`` add to their last line when ``n`` chains or rules of others
    override vnetd's rules: "converged" or "nothing to do" is never said alone over traffic
    that is dropped."""
    if n == 1:
        return f"but a firewall chain or rule of another tool overrides vnetd's rules (see the {SHADOWED} warning)"
    return f"but {n} firewall chains or rules of other tools override vnetd's rules (see the {SHADOWED} warnings)"


# --------------------------------------------------------------------------- inside vnetd's chains


@dataclass(frozen=True, slots=True)
class Unreached:
    """vnetd's ``position: append`` rules of a merge chain that no packet reaches: a rule of
    another tool, kept above them by design, ends every packet's path through the chain."""

    family: int
    table: str
    chain: str
    rules: tuple[str, ...]  # vnetd's rules kept at the bottom, as declared
    foreign: str  # the other tool's rule, as iptables-save prints it
    position: int  # its place among the other tools' rules of the chain (1: the first)

    def message(self) -> str:
        shown = ", ".join(self.rules[:SHOWN_RULES])
        more = len(self.rules) - SHOWN_RULES
        extra = f" and {more} more rule{'s' if more != 1 else ''}" if more > 0 else ""
        return (f"{table_key(self.table, self.family)} {self.chain}: vnetd's rules kept at the bottom "
                f"(position: append: {shown}{extra}) are never reached: the rule of another tool before them "
                f"(`{self.foreign}`, its #{self.position} in the chain) ends every packet's path there "
                f"(see {DOCS})")

    def clear_message(self) -> str:
        return (f"{table_key(self.table, self.family)} {self.chain}: vnetd's rules kept at the bottom are reached "
                f"again (`{self.foreign}` is gone or no longer decides everything)")

    def fields(self) -> dict[str, object]:
        return {"vnetd_chain": f"{table_key(self.table, self.family)} {self.chain}", "where": "in_chain",
                "family": LEGACY_FAMILY[self.family], "table": self.table, "chain": self.chain,
                "foreign_rule": self.foreign, "position": self.position}


#: what ends a packet's path through a chain when nothing else is in the rule
TERMINAL = frozenset({"ACCEPT", "DROP", "REJECT", "RETURN"})


def terminal_verdict(text: str) -> str | None:
    """ACCEPT / DROP / REJECT / RETURN when a rule (iptables-save text) decides every packet
    that reaches it: no match but comments, a verdict and only the REJECT type after it."""
    try:
        words = shlex.split(text)
    except ValueError:
        return None
    kept: list[str] = []
    i = 0
    while i < len(words):
        if words[i] in ("-m", "--match") and i + 1 < len(words) and words[i + 1] == "comment":
            i += 2
            while i + 1 < len(words) and words[i] == "--comment":
                i += 2
            continue
        kept.append(words[i])
        i += 1
    if len(kept) < 2 or kept[0] not in ("-j", "--jump") or kept[1] not in TERMINAL:
        return None
    rest = kept[2:]
    if kept[1] == "REJECT" and (not rest or (len(rest) == 2 and rest[0] == "--reject-with")):
        return "REJECT"
    return kept[1] if not rest else None


def unreached(declared: Iterable[ChainSpec], shown: Iterable[ShownTable]) -> tuple[Unreached, ...]:
    """The merge chains whose ``position: append`` rules another tool's rule keeps every
    packet from (its first rule that decides everything, among those above vnetd's).
    Before ``apply`` too: the other tools' rules are the same, and vnetd's go below them."""
    tables = {(t.family, t.name): t for t in shown}
    out = []
    for spec in declared:
        if not spec.tail or spec.mode != ChainMode.MERGE:
            continue
        table = tables.get((spec.family, spec.table))
        chain = next((c for c in table.chains if c.name == spec.name), None) if table else None
        if chain is None:
            continue
        foreign = [r.text for r in chain.rules if not r.managed]
        for i, text in enumerate(foreign):
            if terminal_verdict(text) is not None:
                out.append(Unreached(spec.family, spec.table, spec.name, tuple(r.text for r in spec.tail),
                                     text, i + 1))
                break
    return tuple(sorted(out, key=lambda u: (u.family, u.table, u.chain)))
