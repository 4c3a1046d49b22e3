# SPDX-License-Identifier: MIT
"""Firewall: where vnetd decides that a chain must be rewritten.

A chain is compared as a list of (tag, fingerprint) pairs:

* ``merge`` (default): the declared rules are the chain's first rules, in order,
  and no other vnetd-tagged rule is anywhere in the chain; foreign rules below
  are never looked at.
* ``exclusive``: the chain holds exactly the declared rules.

A user chain vnetd owns starts with a marker rule (a comment, no target: a no-op)
so that it is recognised as vnetd's after its declaration is gone. Chains that
are no longer declared lose vnetd's tagged rules, and owned ones are deleted.

Both families are planned alike: ``observed`` holds the tables of both, by table
key (``filter``, ``ip6 filter``), and each chain is compared with the table of its
own family; tags are unique across families, so one fingerprint map serves both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Generic, TypeVar

from vnetd.model.firewall import (
    KEY_SIZE,
    OWNER_MARK,
    TAG_PREFIX,
    ChainMode,
    ChainSpec,
    ObservedChain,
    ObservedRule,
    ObservedTable,
    RuleId,
    RuleKey,
    common_prefix,
    common_suffix,
    owner_mark_key,
    rule_key,
)
from vnetd.plan.actions import Action, Phase, Problem, PruneChain, RestoreChain, SetPolicy, SyncChain

RuleIds = Mapping[RuleKey, RuleId]
"""Each declared rule (table, chain, text) -> its tag and the fingerprint of each of its
kernel entries (one, or one per address of ``-s a,b``, as iptables makes them), as the
backend compiled it; ``owner_key(family)`` names the owner mark of a user chain."""


def owner_key(family: int) -> RuleKey:
    """Where RuleIds holds the owner mark of a family (its kernel entry differs per family)."""
    return ("", "", owner_mark_key(family))


T = TypeVar("T")
Fingerprints = Mapping[str, tuple[bytes, ...]]
"""Tag -> fingerprints (built from RuleIds for the descriptions)."""


class _IdentityMemo(Generic[T]):
    """Results of a pure function of objects that stay identical while their content does
    (the desired state, the backend's fingerprints): a drifted rule in a 10,000-rule chain
    re-plans that chain without recomputing what it must hold (~2 us a rule)."""

    def __init__(self, size: int = 256) -> None:
        self._entries: dict[tuple[int, ...], tuple[tuple[object, ...], T]] = {}
        self._size = size

    def get(self, inputs: tuple[object, ...]) -> T | None:
        entry = self._entries.get(tuple(map(id, inputs)))
        if entry is not None and all(a is b for a, b in zip(entry[0], inputs, strict=True)):
            return entry[1]
        return None

    def put(self, inputs: tuple[object, ...], result: T) -> None:
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[tuple(map(id, inputs))] = (inputs, result)


_WANTED: _IdentityMemo[tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]] = _IdentityMemo()
_KEYS: _IdentityMemo[tuple[bytes, bytes]] = _IdentityMemo()
_WANT_TEXT: _IdentityMemo[list[str]] = _IdentityMemo()
#: A chain with more rules than this, whose backend gives its rules' keys, is described
#: by the part that differs (the rules before and after it as one line each): a drift in
#: a 10,000-rule chain is planned, logged and shown without 10,000 lines
DESCRIBE_LIMIT = 200
_TEXTS: _IdentityMemo[tuple[dict[str, str], dict[str, tuple[bytes, ...]]]] = _IdentityMemo(16)


def wanted(chain: ChainSpec, ids: RuleIds) -> list[tuple[str, bytes]]:
    """The (tag, fingerprint) list the chain must start with (or consist of). Do not
    change the list: it is remembered for the same chain and rule ids."""
    return _wanted(chain, ids)[0]


def wanted_tail(chain: ChainSpec, ids: RuleIds) -> list[tuple[str, bytes]]:
    """The (tag, fingerprint) list a merge chain must end with (``position: append``)."""
    return _wanted(chain, ids)[1]


def _wanted(chain: ChainSpec, ids: RuleIds) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    known = _WANTED.get((chain, ids))
    if known is not None:
        return known
    top = [] if chain.builtin else [(OWNER_MARK, fp) for fp in ids[owner_key(chain.family)].fingerprints]
    for rule in chain.rules:
        rid = ids[chain.key(rule)]
        top.extend((rid.tag, fp) for fp in rid.fingerprints)
    tail = [(ids[chain.key(rule)].tag, fp) for rule in chain.tail for fp in ids[chain.key(rule)].fingerprints]
    _WANTED.put((chain, ids), (top, tail))
    return top, tail


def wanted_keys(chain: ChainSpec, ids: RuleIds) -> tuple[bytes, bytes]:
    """``rule_key`` of each entry of ``wanted`` and of ``wanted_tail``, joined (remembered as
    those are): compared with ``ObservedChain.keys``."""
    known = _KEYS.get((chain, ids))
    if known is None:
        top, tail = _wanted(chain, ids)
        known = (b"".join(rule_key(t, f) for t, f in top), b"".join(rule_key(t, f) for t, f in tail))
        _KEYS.put((chain, ids), known)
    return known


def _want_text(chain: ChainSpec) -> list[str]:
    known = _WANT_TEXT.get((chain,))
    if known is None:
        known = [r.text for r in chain.rules] + [f"{r.text} (appended)" for r in chain.tail]
        _WANT_TEXT.put((chain,), known)
    return known


def _texts(desired: tuple[ChainSpec, ...], ids: RuleIds) -> tuple[dict[str, str], dict[str, tuple[bytes, ...]]]:
    """Tag -> declared text, and tag -> fingerprints (for describing what a chain holds)."""
    known = _TEXTS.get((desired, ids))
    if known is None:
        known = ({ids[c.key(r)].tag: r.text for c in desired for r in c.all_rules},
                 {rid.tag: rid.fingerprints for rid in ids.values()})
        _TEXTS.put((desired, ids), known)
    return known


def in_sync(chain: ChainSpec, observed: ObservedChain, want: list[tuple[str, bytes]],
            tail: list[tuple[str, bytes]] | None = None, keys: tuple[bytes, bytes] | None = None) -> bool:
    """``keys``: ``wanted_keys`` of the chain, compared with the observed chain's keys when
    its backend gives them."""
    rules = observed.rules
    n, m = len(want), len(tail or ())
    have = observed.keys
    if keys is not None and have is not None:
        top, bottom = keys
        if chain.mode is ChainMode.EXCLUSIVE:
            return have == top
        if len(rules) < n + m or have[: len(top)] != top or (m and have[len(have) - len(bottom) :] != bottom):
            return False
        return not any(r.tag and r.tag.startswith(TAG_PREFIX) for r in rules[n : len(rules) - m])
    if chain.mode is ChainMode.EXCLUSIVE:
        # a rule deleted or added (the usual drift) is seen without looking at any rule
        return len(rules) == n and [(r.tag, r.fingerprint) for r in rules] == want
    if len(rules) < n + m or [(r.tag, r.fingerprint) for r in rules[:n]] != want \
            or (m and [(r.tag, r.fingerprint) for r in rules[len(rules) - m :]] != tail):
        return False
    return not any(r.tag and r.tag.startswith(TAG_PREFIX) for r in rules[n : len(rules) - m])


def describe_rules(rules: Iterable[ObservedRule], texts: Mapping[str, str],
                   fingerprints: Fingerprints, start: int = 0) -> list[str]:
    """``start``: the index of the first of ``rules`` in its chain (foreign rules are numbered)."""
    out = []
    for i, rule in enumerate(rules, start):
        if rule.tag == OWNER_MARK:
            continue
        if rule.tag is not None and rule.tag in texts:
            text = texts[rule.tag]
            if rule.fingerprint not in fingerprints.get(rule.tag, ()):
                text += " (modified in the kernel)"
            out.append(text)
        elif rule.tag:
            out.append(f"{rule.text} (vnetd's, no longer declared)" if rule.text
                       else f"(vnetd rule {rule.tag} no longer declared)")
        else:
            out.append(f"(foreign) {rule.text}" if rule.text else f"(foreign rule #{i + 1})")
    return out


def plan_firewall(
    desired: Iterable[ChainSpec], observed: Mapping[str, ObservedTable], ids: RuleIds
) -> tuple[list[Action], list[Problem]]:
    """``observed``: table key -> table, for both families."""
    actions: list[Action] = []
    problems: list[Problem] = []
    desired = tuple(desired)
    texts, fingerprints = _texts(desired, ids)
    declared = {(c.table_key, c.name) for c in desired}
    for chain in desired:
        res = chain.resource
        table = observed.get(chain.table_key)
        if table is None:
            ip = "IPv6 " if chain.family == 6 else ""
            problems.append(Problem(res, f"the {ip}{chain.table} table is not available in this kernel"))
            continue
        obs = table.chains.get(chain.name)
        want = wanted(chain, ids)
        tail = wanted_tail(chain, ids)
        if obs is None:
            if chain.builtin:
                problems.append(Problem(res, "built-in chain missing from the kernel's table"))
                continue
            actions.append(Action(SyncChain(chain.table, chain.name, chain.mode, chain.rules, False, chain.tail,
                                            chain.family),
                                  Phase.FIREWALL, res, "rules", _want_text(chain), None))
        elif not in_sync(chain, obs, want, tail, wanted_keys(chain, ids) if obs.keys is not None else None):
            if obs.keys is not None and len(obs.rules) > DESCRIBE_LIMIT:
                want_text, have_text = _window(chain, obs, want + tail, wanted_keys(chain, ids), texts,
                                               fingerprints)
            elif chain.mode is ChainMode.MERGE:
                want_text, have_text = _want_text(chain), _merge_view(obs, len(want), texts, fingerprints)
            else:
                want_text, have_text = _want_text(chain), describe_rules(obs.rules, texts, fingerprints)
            actions.append(Action(SyncChain(chain.table, chain.name, chain.mode, chain.rules, chain.builtin,
                                            chain.tail, chain.family),
                                  Phase.FIREWALL, res, "rules", want_text, have_text))
        if chain.policy is not None and obs is not None and obs.policy != chain.policy:
            actions.append(Action(SetPolicy(chain.table, chain.name, chain.policy, chain.family), Phase.FIREWALL, res,
                                  "policy", chain.policy, obs.policy))
    for table in observed.values():
        for name, obs in table.chains.items():
            if (table.key, name) in declared:
                continue
            if any(r.tag and r.tag.startswith(TAG_PREFIX) for r in obs.rules):
                delete = obs.owned and not obs.builtin
                actions.append(Action(PruneChain(table.name, name, delete, table.family),
                                      Phase.FIREWALL, f"{table.section}/{table.name}/{name}", "rules",
                                      "(chain deleted)" if delete else "(no vnetd rules)",
                                      describe_rules(obs.rules, texts, fingerprints), order=1 if delete else 0))
    return actions, problems


def _merge_view(obs: ObservedChain, n: int, texts: Mapping[str, str], fingerprints: Fingerprints) -> list[str]:
    """In merge mode show the head of the chain and any vnetd rule further down."""
    rules = list(obs.rules)
    shown = describe_rules(rules[: max(n, 1) + 1], texts, fingerprints)
    for i, rule in enumerate(rules[max(n, 1) + 1 :], start=max(n, 1) + 2):
        if rule.tag and rule.tag.startswith(TAG_PREFIX):
            shown += [f"#{i}: {d}" for d in describe_rules([rule], texts, fingerprints)]
    return shown


def plan_retired(retired: Mapping[str, Mapping[str, ObservedTable]]) -> tuple[list[Action], list[Problem]]:
    """vnetd's rules and owned chains in backends no longer used (``firewall.backend``
    changed, or ``auto`` chose another one): pruned there, as chains no longer declared
    are; nothing else of those backends is touched. ``retired``: backend name -> the
    tables of it that hold vnetd's rules. Each chain is its own resource
    (``firewall/filter/FORWARD in iptables-legacy``), apart from the chain in use."""
    actions: list[Action] = []
    for backend, tables in retired.items():
        pruned, _problems = plan_firewall((), tables, {})
        for action in pruned:
            op = action.op
            assert isinstance(op, PruneChain)
            actions.append(replace(action, op=replace(op, backend=backend), resource=f"{action.resource} in {backend}"))
    return actions, []
def _window(chain: ChainSpec, obs: ObservedChain, want: list[tuple[str, bytes]], keys: tuple[bytes, bytes],
            texts: Mapping[str, str], fingerprints: Fingerprints) -> tuple[list[str], list[str]]:
    """A long chain's want and have as the part that differs, between one line for the
    rules before it and one for the rules after it (equal on both sides)."""
    assert obs.keys is not None
    have = obs.keys
    top = keys[0]
    n_top = len(top) // KEY_SIZE
    k = common_prefix(have, top)
    if chain.mode is ChainMode.EXCLUSIVE:
        s = common_suffix(have, top, k)
        want_end, have_end = n_top - s, len(obs.rules) - s
    else:  # merge: the declared head; foreign rules below are not compared
        s = 0
        want_end, have_end = len(want), min(len(obs.rules), max(n_top, 1) + 1)
    want_mid: list[str] = []
    last: str | None = None
    for index in range(k, want_end):
        tag = want[index][0]
        if tag != OWNER_MARK and tag != last:  # a rule of several kernel rules (-s a,b): once
            text = texts.get(tag, tag)
            want_mid.append(f"{text} (appended)" if index >= n_top else text)
        last = tag
    have_mid = describe_rules(obs.rules[k:have_end], texts, fingerprints, start=k)
    if chain.mode is ChainMode.MERGE:
        for i, rule in enumerate(obs.rules[have_end:], start=have_end + 1):
            if rule.tag and rule.tag.startswith(TAG_PREFIX):
                have_mid += [f"#{i}: {d}" for d in describe_rules([rule], texts, fingerprints)]
    before = [f"(the first {k} kernel rules, as declared)"] if k else []
    after = [f"(the last {s} kernel rules, as declared)"] if s else []
    return before + want_mid + after, before + have_mid + after


def in_commit_order(actions: list[Action]) -> list[Action]:
    """A table's actions in the order one commit applies them, whatever the backend: user
    chains first (rules may jump to them), then built-in chains and restored chains that
    existed, policies, pruning, chain deletions, and last the restoring of chains that
    did not exist (which deletes them)."""
    def key(a: Action) -> int:
        op = a.op
        if isinstance(op, SyncChain):
            return 0 if not op.builtin else 1
        if isinstance(op, SetPolicy):
            return 2
        if isinstance(op, RestoreChain):
            return 1 if op.record.exists else 5
        assert isinstance(op, PruneChain)
        return 4 if op.delete_chain else 3
    return sorted(actions, key=key)
