# SPDX-License-Identifier: MIT
"""The planner with a backend that gives each observed chain's rule keys (iptables-nft):
the same verdicts as without them, and a long chain described by the part that differs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vnetd.desired.rules import parse_rule
from vnetd.model.firewall import (
    OWNER_MARK,
    ChainMode,
    ChainSpec,
    ObservedChain,
    ObservedRule,
    ObservedTable,
    RuleId,
    RuleKey,
    rule_key,
)
from vnetd.plan.firewall import DESCRIBE_LIMIT, owner_key, plan_firewall


def _chain(n: int, mode: ChainMode, name: str = "BIG") -> ChainSpec:
    rules = tuple(parse_rule(f"-s 192.0.2.{i % 250}/32 -p tcp --dport {1000 + i} -j ACCEPT") for i in range(n))
    return ChainSpec("filter", name, None, mode, rules)


def _ids(chain: ChainSpec) -> dict[RuleKey, RuleId]:
    ids = {owner_key(4): RuleId(OWNER_MARK, (b"mark",))}
    for i, rule in enumerate(chain.rules):
        ids[chain.key(rule)] = RuleId(f"vnetd:{i:016x}", (f"fp{i}".encode(),))
    return ids


def _observed(name: str, pairs: list[tuple[str | None, bytes]], with_keys: bool) -> dict[str, ObservedTable]:
    rules = tuple(ObservedRule(t, f, "-j LOG" if t is None else None) for t, f in pairs)
    keys = b"".join(rule_key(t, f) for t, f in pairs) if with_keys else None
    return {"filter": ObservedTable("filter", {name: ObservedChain(name, False, None, rules, keys)})}


def _declared_pairs(chain: ChainSpec, ids: dict[RuleKey, RuleId]) -> list[tuple[str | None, bytes]]:
    out: list[tuple[str | None, bytes]] = [(OWNER_MARK, b"mark")]
    return out + [(ids[chain.key(r)].tag, ids[chain.key(r)].fingerprints[0]) for r in chain.rules]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 12), mode=st.sampled_from([ChainMode.EXCLUSIVE, ChainMode.MERGE]),
       edits=st.lists(st.tuples(st.sampled_from(["delete", "foreign", "modify", "swap"]), st.integers(0, 20)),
                      max_size=3))
def test_keys_give_the_same_verdict_as_the_rules(n: int, mode: ChainMode, edits: list[tuple[str, int]]) -> None:
    chain = _chain(n, mode)
    ids = _ids(chain)
    pairs = _declared_pairs(chain, ids)
    for what, at in edits:
        at %= len(pairs) + 1
        if what == "delete" and at < len(pairs):
            del pairs[at]
        elif what == "foreign":
            pairs.insert(at, (None, b"foreign"))
        elif what == "modify" and at < len(pairs):
            pairs[at] = (pairs[at][0], b"changed")
        elif what == "swap" and at + 1 < len(pairs):
            pairs[at], pairs[at + 1] = pairs[at + 1], pairs[at]
    with_keys = plan_firewall((chain,), _observed("BIG", pairs, True), ids)
    without = plan_firewall((chain,), _observed("BIG", pairs, False), ids)
    assert [type(a.op) for a in with_keys[0]] == [type(a.op) for a in without[0]]
    assert [a.want for a in with_keys[0]] == [a.want for a in without[0]]  # short chains: described in full
    assert [a.have for a in with_keys[0]] == [a.have for a in without[0]]


def test_a_long_chain_is_described_by_the_part_that_differs() -> None:
    n = DESCRIBE_LIMIT * 3
    chain = _chain(n, ChainMode.EXCLUSIVE)
    ids = _ids(chain)
    pairs = _declared_pairs(chain, ids)
    del pairs[101]  # the owner mark is the first: rule 100
    pairs.insert(300, (None, b"foreign"))
    actions, problems = plan_firewall((chain,), _observed("BIG", pairs, True), ids)
    assert not problems and len(actions) == 1
    want, have = actions[0].want, actions[0].have
    assert isinstance(want, list) and isinstance(have, list)
    assert want[0] == have[0] == "(the first 101 kernel rules, as declared)"
    assert want[-1] == have[-1] == f"(the last {n + 1 - 301} kernel rules, as declared)"
    middle = [r.text for r in chain.rules[100:300]]
    assert want[1:-1] == middle
    assert have[1:-1] == middle[1:] + ["(foreign) -j LOG"]


def test_a_long_merge_chain_shows_its_head_from_where_it_differs_and_vnetd_rules_below() -> None:
    n = DESCRIBE_LIMIT * 2
    chain = _chain(n, ChainMode.MERGE)
    ids = _ids(chain)
    pairs = _declared_pairs(chain, ids)
    moved = pairs.pop(n)  # the last declared rule, below a foreign rule
    pairs += [(None, b"foreign")] * 3 + [moved]
    actions, _problems = plan_firewall((chain,), _observed("BIG", pairs, True), ids)
    want, have = actions[0].want, actions[0].have
    assert isinstance(want, list) and isinstance(have, list)
    assert want == [f"(the first {n} kernel rules, as declared)", chain.rules[-1].text]
    # the head as long as the declaration (and one more), then vnetd's rules further down
    assert have == [f"(the first {n} kernel rules, as declared)", "(foreign) -j LOG", "(foreign) -j LOG",
                    f"#{n + 4}: {chain.rules[-1].text}"]


def test_a_long_chain_in_sync_plans_nothing() -> None:
    chain = _chain(DESCRIBE_LIMIT * 2, ChainMode.EXCLUSIVE)
    ids = _ids(chain)
    assert plan_firewall((chain,), _observed("BIG", _declared_pairs(chain, ids), True), ids) == ([], [])
