# SPDX-License-Identifier: MIT
"""``firewall6:`` (issue 14, item 2): IPv6 chains with the shape and the contract of
``firewall:``, compiled as ip6tables compiles them.

The pure parts: the section read by the same loader (family, resources, paths in
messages), tags unique across families with the IPv4 formula unchanged, the plan
per family (ops and resources carry it; each family's table is compared with its
own chains; each family's owner mark), ``FirewallFamilies`` sending keys and
actions to the backend of their family, checkpoints that carry the family, the two
entry layouts (checked against the C module's own sizes), and the bad-input
catalogue for ``firewall6:`` (run through check/plan/apply against the real kernel
by tests/integration/test_bad_input.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

import pytest

from tests.support import StateDir
from tests.unit.test_loader import Broken, bad, issues_of, shown
from tests.unit.test_rule_syntax import checked_issues
from vnetd.backends.firewall import FirewallFamilies
from vnetd.backends.xtables import meaning_tag, shared_compiler
from vnetd.desired.loader import load_state_dir
from vnetd.desired.rules import parse_rule
from vnetd.errors import BackendError
from vnetd.model.checkpoint import ChainRecord, Checkpoint
from vnetd.model.firewall import (
    OWNER_MARK,
    TABLES,
    ChainMode,
    ChainSpec,
    ObservedChain,
    ObservedRule,
    ObservedTable,
    RuleId,
    RuleKey,
    ShownTable,
    split_table_key,
    table_key,
)
from vnetd.plan.actions import Action, Phase, PruneChain, SetPolicy, SyncChain
from vnetd.plan.firewall import owner_key, plan_firewall
from vnetd.plan.restore import restore_plan, scope_of

BOTH = """\
firewall:
  filter:
    INPUT:
      rules:
      - -p tcp --dport 22 -j ACCEPT
firewall6:
  filter:
    INPUT:
      policy: DROP
      rules:
      - -p tcp --dport 22 -j ACCEPT
    GUESTS:
      mode: exclusive
      rules:
      - -j RETURN
"""


def test_firewall6_is_read_by_the_same_loader_with_its_family(state_dir: StateDir) -> None:
    state_dir.write("10-fw.yaml", BOTH)
    chains = {c.resource: c for c in load_state_dir(str(state_dir)).chains}
    assert set(chains) == {"firewall/filter/INPUT", "firewall6/filter/INPUT", "firewall6/filter/GUESTS"}
    v4, v6 = chains["firewall/filter/INPUT"], chains["firewall6/filter/INPUT"]
    assert (v4.family, v6.family) == (4, 6)
    assert (v4.table_key, v6.table_key) == ("filter", "ip6 filter")
    assert v6.policy == "DROP" and chains["firewall6/filter/GUESTS"].mode is ChainMode.EXCLUSIVE
    # the same rule in both families: two rules, two keys, two tags
    assert v4.rules[0].text == v6.rules[0].text
    assert v4.key(v4.rules[0]) != v6.key(v6.rules[0])
    compiler = shared_compiler()
    assert compiler.compile(v4, v4.rules[0], set()).tag != compiler.compile(v6, v6.rules[0], set()).tag


def test_the_ipv4_tag_formula_is_unchanged() -> None:
    """Rules installed before IPv6 existed keep their tags: an IPv4 tag hashes the table
    name alone, an IPv6 one its key ("ip6 filter"), which no IPv4 table is called."""
    plain = (b"same entries",)
    assert meaning_tag("filter", "INPUT", plain) == meaning_tag(table_key("filter", 4), "INPUT", plain)
    assert meaning_tag(table_key("filter", 6), "INPUT", plain) != meaning_tag("filter", "INPUT", plain)
    assert "ip6 filter" not in TABLES


def test_table_keys_name_both_families() -> None:
    assert table_key("filter") == "filter" and table_key("nat", 6) == "ip6 nat"
    assert split_table_key("ip6 mangle") == (6, "mangle") and split_table_key("raw") == (4, "raw")


def test_a_chain_split_over_files_is_merged_per_family(state_dir: StateDir) -> None:
    state_dir.write("10-a.yaml", "firewall6:\n  filter:\n    INPUT:\n      rules: ['-p tcp --dport 22 -j ACCEPT']\n")
    state_dir.write("20-b.yaml", "firewall6:\n  filter:\n    INPUT:\n      rules: ['-p tcp --dport 80 -j ACCEPT']\n"
                                 "firewall:\n  filter:\n    INPUT:\n      rules: ['-p tcp --dport 80 -j ACCEPT']\n")
    chains = load_state_dir(str(state_dir)).chains
    by = {c.resource: [r.text for r in c.rules] for c in chains}
    assert by == {"firewall6/filter/INPUT": ["-p tcp --dport 22 -j ACCEPT", "-p tcp --dport 80 -j ACCEPT"],
                  "firewall/filter/INPUT": ["-p tcp --dport 80 -j ACCEPT"]}


# --------------------------------------------------------------------------- planning


def chain(name: str, family: int, *rules: str, table: str = "filter", mode: ChainMode = ChainMode.MERGE,
          policy: str | None = None) -> ChainSpec:
    return ChainSpec(table, name, policy, mode, tuple(parse_rule(r) for r in rules), family=family)


def ids_for(chains: Iterable[ChainSpec]) -> dict[RuleKey, RuleId]:
    """Rule ids as a backend would give them: a tag per (table key, chain, text), its
    own bytes as the fingerprint; each family's owner mark its own entry."""
    ids = {owner_key(4): RuleId(OWNER_MARK, (b"mark4",)), owner_key(6): RuleId(OWNER_MARK, (b"mark6",))}
    for c in chains:
        for r in c.all_rules:
            tag = meaning_tag(c.table_key, c.name, (r.text.encode(),))
            ids[c.key(r)] = RuleId(tag, (tag.encode(),))
    return ids


def tag_of(ids: Mapping[RuleKey, RuleId], chain: ChainSpec) -> tuple[str, bytes]:
    """(tag, fingerprint) of the chain's first rule."""
    rid = ids[chain.key(chain.rules[0])]
    return rid.tag, rid.fingerprints[0]


def observed_chain(name: str, *rules: tuple[str | None, bytes], builtin: bool = True,
                   policy: str | None = "ACCEPT") -> ObservedChain:
    return ObservedChain(name, builtin, policy, tuple(ObservedRule(t, f) for t, f in rules))


def test_each_family_is_planned_against_its_own_table() -> None:
    v4 = chain("INPUT", 4, "-j ACCEPT")
    v6 = chain("INPUT", 6, "-j ACCEPT")
    fps = ids_for((v4, v6))
    in_sync4 = observed_chain("INPUT", tag_of(fps, v4))
    observed = {"filter": ObservedTable("filter", {"INPUT": in_sync4}),
                "ip6 filter": ObservedTable("filter", {"INPUT": observed_chain("INPUT")}, 6)}
    actions, problems = plan_firewall((v4, v6), observed, fps)
    assert not problems
    assert [(a.resource, type(a.op).__name__, a.op.family) for a in actions] == [  # type: ignore[union-attr]
        ("firewall6/filter/INPUT", "SyncChain", 6)]


def test_a_missing_ipv6_table_is_a_problem_naming_it() -> None:
    v6 = chain("FORWARD", 6, "-j ACCEPT", table="raw")
    _actions, problems = plan_firewall((v6,), {"raw": ObservedTable("raw", {})}, ids_for((v6,)))
    assert [(p.resource, p.message) for p in problems] == [
        ("firewall6/raw/FORWARD", "the IPv6 raw table is not available in this kernel")]


def test_user_chains_want_the_owner_mark_of_their_family() -> None:
    v4, v6 = chain("GUESTS", 4, "-j RETURN"), chain("GUESTS", 6, "-j RETURN")
    fps = ids_for((v4, v6))
    mark4 = observed_chain("GUESTS", (OWNER_MARK, b"mark4"), tag_of(fps, v4), builtin=False, policy=None)
    mark6 = observed_chain("GUESTS", (OWNER_MARK, b"mark6"), tag_of(fps, v6), builtin=False, policy=None)
    observed = {"filter": ObservedTable("filter", {"GUESTS": mark4}),
                "ip6 filter": ObservedTable("filter", {"GUESTS": mark6}, 6)}
    assert plan_firewall((v4, v6), observed, fps) == ([], [])
    # an IPv6 chain carrying the IPv4 mark's entry is not in sync
    observed["ip6 filter"] = ObservedTable("filter", {"GUESTS": mark4}, 6)
    actions, _ = plan_firewall((v4, v6), observed, fps)
    assert [a.resource for a in actions] == ["firewall6/filter/GUESTS"]


def test_policy_and_prune_carry_the_family() -> None:
    v6 = chain("INPUT", 6, policy="DROP")
    old_tag = meaning_tag("ip6 filter", "FORWARD", (b"-j ACCEPT",))
    observed = {"ip6 filter": ObservedTable("filter", {
        "INPUT": observed_chain("INPUT"),
        "FORWARD": observed_chain("FORWARD", (old_tag, b"x")),
        "OLD": observed_chain("OLD", (OWNER_MARK, b"mark6"), builtin=False, policy=None)}, 6),
        "filter": ObservedTable("filter", {"FORWARD": observed_chain("FORWARD", (None, b"foreign"))})}
    actions, problems = plan_firewall((v6,), observed, ids_for((v6,)))
    assert not problems
    ops = {a.resource: a.op for a in actions}
    assert ops["firewall6/filter/INPUT"] == SetPolicy("filter", "INPUT", "DROP", 6)
    assert ops["firewall6/filter/FORWARD"] == PruneChain("filter", "FORWARD", False, 6)
    assert ops["firewall6/filter/OLD"] == PruneChain("filter", "OLD", True, 6)
    assert "firewall/filter/FORWARD" not in ops  # IPv4's FORWARD holds no vnetd rule


# --------------------------------------------------------------------------- the dispatcher


class FakeFamily:
    """A backend of one family, recording what it is asked."""

    name = "fake"

    def __init__(self, family: int) -> None:
        self.family = family
        self.lock_waits = 0.0
        self.asked: list[tuple[str, object]] = []
        self.ids: dict[RuleKey, RuleId] = {("filter", "INPUT", f"rule{family}"): RuleId(f"tag{family}", (b"x",))}

    def _key(self, table: str) -> str:
        return table_key(table, self.family)

    def observe(self, chains: Iterable[ChainSpec]) -> dict[str, ObservedTable]:
        return {self._key("filter"): ObservedTable("filter", {}, self.family)}

    def rule_ids(self, chains: Iterable[ChainSpec]) -> Mapping[RuleKey, RuleId]:
        return self.ids

    def tables_to_read(self, chains: Iterable[ChainSpec]) -> list[str]:
        return [self._key("filter")]

    def has_vnetd_rules(self) -> bool:
        return self.family == 6

    def changed(self, tables: Iterable[str]) -> list[str]:
        tables = list(tables)
        self.asked.append(("changed", tables))
        return tables

    def apply(self, actions: Sequence[Action]) -> list[tuple[Action, BackendError | None]]:
        self.asked.append(("apply", [a.resource for a in actions]))
        return [(a, None) for a in actions]

    def record_chains(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], ChainRecord]:
        keys = list(keys)
        self.asked.append(("record", keys))
        return {k: ChainRecord("fake", split_table_key(k[0])[1], k[1], True, True, family=self.family) for k in keys}

    def event_fileno(self) -> int | None:
        return None

    def drain_events(self) -> bool:
        return False

    def show(self, chains: Iterable[ChainSpec]) -> tuple[ShownTable, ...]:
        return (ShownTable("filter", family=self.family),)

    def close(self) -> None:
        self.asked.append(("close", None))


def test_the_families_dispatcher_sends_each_key_and_action_to_its_family() -> None:
    made: dict[int, FakeFamily] = {}

    def make(family: int) -> FakeFamily:
        made[family] = FakeFamily(family)
        return made[family]

    both = FirewallFamilies(make)
    assert set(both.observe(())) == {"filter", "ip6 filter"}
    assert both.tables_to_read(()) == ["filter", "ip6 filter"]
    assert both.changed(["ip6 filter", "filter", "ip6 raw"]) == ["ip6 filter", "ip6 raw", "filter"] or \
        sorted(both.changed(["ip6 filter", "filter", "ip6 raw"])) == ["filter", "ip6 filter", "ip6 raw"]
    assert ("changed", ["ip6 filter", "ip6 raw"]) in made[6].asked and ("changed", ["filter"]) in made[4].asked
    assert both.has_vnetd_rules()
    ids = both.rule_ids(())
    assert ids == {("filter", "INPUT", "rule4"): RuleId("tag4", (b"x",)),
                   ("filter", "INPUT", "rule6"): RuleId("tag6", (b"x",))}
    assert both.rule_ids(()) is ids  # stable for the planner's memo
    made[6].ids = {("filter", "INPUT", "rule6"): RuleId("tag6", (b"y",))}
    assert both.rule_ids(())[("filter", "INPUT", "rule6")] == RuleId("tag6", (b"y",))
    sync6 = Action(SyncChain("filter", "INPUT", ChainMode.MERGE, (), True, (), 6), Phase.FIREWALL,
                   "firewall6/filter/INPUT", "rules", [], [])
    sync4 = Action(SyncChain("filter", "INPUT", ChainMode.MERGE, (), True), Phase.FIREWALL,
                   "firewall/filter/INPUT", "rules", [], [])
    assert {a.resource for a, e in both.apply([sync6, sync4]) if e is None} == {sync4.resource, sync6.resource}
    assert ("apply", ["firewall6/filter/INPUT"]) in made[6].asked
    records = both.record_chains([("ip6 filter", "INPUT"), ("filter", "INPUT")])
    assert {k: r.resource for k, r in records.items()} == {("ip6 filter", "INPUT"): "firewall6/filter/INPUT",
                                                           ("filter", "INPUT"): "firewall/filter/INPUT"}
    assert [t.family for t in both.show(())] == [4, 6]
    both.close()
    assert ("close", None) in made[4].asked and ("close", None) in made[6].asked


# --------------------------------------------------------------------------- checkpoints


def test_checkpoints_carry_the_family_and_old_ones_read_as_ipv4() -> None:
    record = ChainRecord("iptables-legacy", "filter", "INPUT", True, True, "ACCEPT", ((b"\x01", "ACCEPT"),), 6)
    cp = Checkpoint(1.0, "1-2", chains=(record,))
    back = Checkpoint.from_json(cp.to_json())
    assert back.chains == (record,) and back.chains[0].resource == "firewall6/filter/INPUT"
    assert back.chains[0].table_key == "ip6 filter"
    old = cp.to_json().replace(', "family": 6', "").replace('"family": 6, ', "")
    assert '"family"' not in old
    assert Checkpoint.from_json(old).chains[0].family == 4
    with pytest.raises(ValueError):
        Checkpoint.from_json(cp.to_json().replace('"family": 6', '"family": 5'))


def test_a_restore_puts_back_the_chain_of_its_family() -> None:
    from vnetd.model.netstate import NetState
    from vnetd.plan.actions import Plan

    sync = Action(SyncChain("filter", "INPUT", ChainMode.MERGE, (), True, (), 6), Phase.FIREWALL,
                  "firewall6/filter/INPUT", "rules", [], [])
    assert scope_of(Plan((sync,)), NetState()).chains == {("ip6 filter", "INPUT")}
    want = ChainRecord("iptables-legacy", "filter", "INPUT", True, True, "ACCEPT", ((b"\x01", "ACCEPT"),), 6)
    now = ChainRecord("iptables-legacy", "filter", "INPUT", True, True, "ACCEPT", (), 6)
    cp = Checkpoint(1.0, "1-2", chains=(want,))
    plan = restore_plan(cp, NetState(), {}, {("ip6 filter", "INPUT"): now}, None)
    (action,) = plan.actions
    assert action.resource == "firewall6/filter/INPUT" and action.op.family == 6  # type: ignore[union-attr]
    assert restore_plan(cp, NetState(), {}, {("ip6 filter", "INPUT"): want}, None).empty


# --------------------------------------------------------------------------- entry layouts


def test_the_entry_layouts_are_the_kernel_headers() -> None:
    from vnetd.backends import _xtables
    from vnetd.backends.xtables import IPV4, IPV6, encode_plain_entry, insert_before_target, standard_target

    assert (IPV4.size, IPV6.size) == (_xtables.ENTRY_SIZE, _xtables.ENTRY6_SIZE) == (112, 168)
    assert (IPV4.goto, IPV6.goto) == (0x02, 0x04)  # IPT_F_GOTO, IP6T_F_GOTO
    target = standard_target("ACCEPT")
    for layout in (IPV4, IPV6):
        entry = encode_plain_entry(b"", target, layout)
        assert len(entry) == layout.size + len(target)
        assert struct.unpack_from("=HH", entry, layout.target_offset) == (layout.size, len(entry))
        longer = insert_before_target(entry, b"\0" * 40, layout)
        assert struct.unpack_from("=HH", longer, layout.target_offset) == (layout.size + 40, len(entry) + 40)
        assert layout.counters + 16 == layout.size  # the counters end the header


# --------------------------------------------------------------------------- bad input


def fw6(rule: str, table: str = "filter", chain: str = "FORWARD") -> str:
    quoted = "'" + rule.replace("'", "''") + "'"
    return f"firewall6:\n  {table}:\n    {chain}:\n      rules:\n      - {quoted}\n"


def xt6_rule(id: str, rule: str, *says: str, table: str = "filter", chain: str = "FORWARD") -> Broken:
    """A rule ip6tables refuses; `vnetd check` says why (ip6tables' own words)."""
    return bad(id, fw6(rule, table, chain), 5, f"firewall6.{table}.{chain}.rules[0]", *says,
               f"(rule: {parse_rule(rule).text})")


def kernel6_rule(id: str, rule: str, table: str = "filter", chain: str = "FORWARD") -> Broken:
    return xt6_rule(id, rule, f"the kernel refuses this rule in the IPv6 {table} table (Invalid argument)",
                    table=table, chain=chain)


#: Refused by the loader itself.
BROKEN_FIREWALL6: list[Broken] = [
    bad("firewall6-unknown-table", """\
        firewall6:
          security:
            INPUT:
              rules: [-j ACCEPT]
        """, 2, "firewall6.security", "unknown key in firewall6 (tables); valid keys: filter, nat, mangle, raw, backend"),
    bad("firewall6-policy-on-user-chain", """\
        firewall6:
          filter:
            guests:
              policy: DROP
              rules: [-j RETURN]
        """, 4, "firewall6.filter.guests.policy", "only built-in chains have a policy; guests is a user chain"),
    bad("firewall6-same-rule-twice", """\
        firewall6:
          filter:
            INPUT:
              rules:
              - -p tcp --dport 22 -j ACCEPT
              - -p tcp  --dport 22  -j ACCEPT
        """, 6, "firewall6.filter.INPUT.rules[1]", "the same rule is already listed at line 5"),
    bad("firewall6-builtin-of-another-table", """\
        firewall6:
          raw:
            INPUT:
              rules: [-j ACCEPT]
        """, 3, "firewall6.raw.INPUT", "INPUT is not a built-in chain of the raw table"),
    bad("firewall6-leading-bang-is-a-tag", """\
        firewall6:
          filter:
            INPUT:
              rules:
              - ! -s 2001:db8::/32 -j DROP
        """, 5, "", "quote the rule: YAML reads a leading '!' as a tag"),
    bad("firewall6-rules-not-a-list", """\
        firewall6:
          filter:
            INPUT:
              rules: -j ACCEPT
        """, 4, "firewall6.filter.INPUT.rules", "expected a list, got a string ('-j ACCEPT')"),
    bad("firewall6-not-a-mapping", "firewall6: [-j ACCEPT]\n", 1, "firewall6",
        "expected a mapping with the keys filter, nat, mangle, raw"),
]

#: Rules ip6tables refuses (libxtables, as the ip6tables command runs it).
BROKEN_XTABLES6: list[Broken] = [
    xt6_rule("xt6-fragment-flag", "-f -j DROP", "`-f' is not supported in IPv6, use -m frag instead"),
    xt6_rule("xt6-ipv4-address", "-s 192.0.2.1 -j ACCEPT", "host/network `192.0.2.1' is not an IPv6 address",
             "(IPv4 rules belong under firewall:)"),
    xt6_rule("xt6-host-name", "-d localhost -j ACCEPT", "host/network `localhost' is not an IPv6 address",
             "vnetd does not resolve host names"),
    xt6_rule("xt6-ipv4-flag", "-4 -j ACCEPT", "-4/--ipv4 is not allowed in a rule: IPv4 rules belong under firewall:"),
    xt6_rule("xt6-icmp-type-of-ipv4", "-p icmp --icmp-type echo-request -j ACCEPT", 'unknown option "--icmp-type"'),
    xt6_rule("xt6-ipv4-reject-type", "-j REJECT --reject-with icmp-host-prohibited", "REJECT",
             "icmp-host-prohibited"),
    xt6_rule("xt6-ipv4-only-target", "-j TTL --ttl-set 5", 'unknown option "--ttl-set"', table="mangle"),
    xt6_rule("xt6-bad-prefix-length", "-s 2001:db8::/129 -j DROP", "invalid mask `129' specified"),
    xt6_rule("xt6-drop-in-nat", "-j DROP", 'The "nat" table is not intended for filtering', table="nat",
             chain="POSTROUTING"),
]

#: Rules libxtables takes and the kernel's ip6_tables refuses: asked of the kernel by `vnetd check`.
BROKEN_KERNEL6: list[Broken] = [
    kernel6_rule("kernel6-tcpmss-without-protocol", "-j TCPMSS --clamp-mss-to-pmtu", table="mangle"),
    kernel6_rule("kernel6-owner-in-input", "-m owner --uid-owner 0 -j ACCEPT", table="mangle", chain="INPUT"),
    kernel6_rule("kernel6-masquerade-in-filter", "-o eth0 -j MASQUERADE"),
]


@pytest.mark.parametrize("case", BROKEN_FIREWALL6, ids=[c.id for c in BROKEN_FIREWALL6])
def test_broken_firewall6(case: Broken, state_dir: StateDir) -> None:
    case.write(state_dir)
    issues = issues_of(state_dir)
    assert any(case.matches(i, state_dir) for i in issues), shown(issues)
    assert len(issues) == case.count, shown(issues)


@pytest.mark.parametrize("case", BROKEN_XTABLES6, ids=[c.id for c in BROKEN_XTABLES6])
def test_rules_ip6tables_refuses_are_refused_with_its_words(case: Broken, state_dir: StateDir) -> None:
    case.write(state_dir)
    load_state_dir(str(state_dir))  # the loader passes them on
    issues = checked_issues(state_dir)
    assert any(case.matches(i, state_dir) for i in issues), shown(issues)
    assert len(issues) == case.count, shown(issues)


def test_the_same_rule_under_both_sections_is_two_rules(state_dir: StateDir) -> None:
    state_dir.write("10-a.yaml", "firewall:\n  filter:\n    INPUT:\n      rules: [-j ACCEPT]\n"
                                 "firewall6:\n  filter:\n    INPUT:\n      rules: [-j ACCEPT]\n")
    assert len(load_state_dir(str(state_dir)).chains) == 2


def test_mode_written_twice_names_the_ipv6_chain(state_dir: StateDir) -> None:
    state_dir.write("10-a.yaml", "firewall6:\n  filter:\n    INPUT:\n      mode: merge\n")
    state_dir.write("20-b.yaml", "firewall6:\n  filter:\n    INPUT:\n      mode: exclusive\n"
                                 "firewall:\n  filter:\n    INPUT:\n      mode: exclusive\n")
    (issue,) = issues_of(state_dir)
    assert issue.path == "firewall6.filter.INPUT.mode"
    assert "the mode of chain filter INPUT (firewall6) is written twice" in issue.message


# --------------------------------------------------------------------------- the C module, both families


def test_libxtables_switches_family_back_and_forth() -> None:
    """A target registers only the variants of the family loaded when its library was
    opened, and a name that is no target in one family may be one in the other: rules of
    both families, interleaved, compile and print as each family's command does."""
    from vnetd.backends.xtables import libxtables

    xt = libxtables()

    def saved(rule: str, family: int, table: str = "filter", chain: str = "FORWARD") -> str:
        entries, _sizes, kind, target, _goto, _warnings = xt.compile(rule.split(), table, chain, set(), family)
        return " | ".join(xt.render(e, None if kind == "extension" else target, family).strip() for e in entries)

    for _ in range(3):
        assert saved("-p tcp --syn -j TCPMSS --clamp-mss-to-pmtu", 4, "mangle") == \
            "-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j TCPMSS --clamp-mss-to-pmtu"
        assert saved("-p tcp --syn -j TCPMSS --clamp-mss-to-pmtu", 6, "mangle") == \
            "-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j TCPMSS --clamp-mss-to-pmtu"
        assert saved("-p tcp -j DNAT --to-destination 192.0.2.1", 4, "nat", "PREROUTING") == \
            "-p tcp -j DNAT --to-destination 192.0.2.1"
        assert saved("-p tcp -j DNAT --to-destination [2001:db8::1]:80", 6, "nat", "PREROUTING") == \
            "-p tcp -j DNAT --to-destination [2001:db8::1]:80"
        with pytest.raises(xt.CompileError, match='unknown option "--hl-set"'):
            saved("-j HL --hl-set 5", 4, "mangle")  # no HL target in IPv4: a chain name, and a stray option
        assert saved("-j HL --hl-set 5", 6, "mangle") == "-j HL --hl-set 5"
        assert saved("-j REJECT --reject-with icmp-host-prohibited", 4) == \
            "-j REJECT --reject-with icmp-host-prohibited"
        assert saved("-j REJECT --reject-with icmp6-adm-prohibited", 6) == \
            "-j REJECT --reject-with icmp6-adm-prohibited"
        assert saved("-s 192.0.2.1,192.0.2.2 -j ACCEPT", 4) == "-s 192.0.2.1/32 -j ACCEPT | -s 192.0.2.2/32 -j ACCEPT"
        assert saved("-s 2001:db8::1,2001:db8::/ffff:ffff:0:ffff:: -j ACCEPT", 6) == \
            "-s 2001:db8::1/128 -j ACCEPT | -s 2001:db8::/ffff:ffff:0:ffff:: -j ACCEPT"


def test_ip6tables_header_forms() -> None:
    from vnetd.backends.xtables import IPV6, libxtables

    xt = libxtables()
    (entry,), _s, _k, _t, goto, warnings = xt.compile(["-p", "44", "-g", "NEXT"], "filter", "INPUT", {"NEXT"}, 6)
    assert goto and entry[IPV6.flags] == 0x01 | 0x04  # IP6T_F_PROTO | IP6T_F_GOTO
    assert "never matched protocol: 44" in warnings
    (entry,), *_rest = xt.compile(["-p", "all", "-j", "ACCEPT"], "filter", "INPUT", set(), 6)
    assert entry[IPV6.flags] == 0x01  # ip6tables sets IP6T_F_PROTO for any -p, 'all' too
    (entry,), *_rest = xt.compile(["-j", "ACCEPT"], "filter", "INPUT", set(), 6)
    assert entry[IPV6.flags] == 0 and len(entry) == IPV6.size + 40
    with pytest.raises(xt.CompileError, match="`-f' is not supported in IPv6, use -m frag instead"):
        xt.compile(["-f", "-j", "DROP"], "filter", "INPUT", set(), 6)
    with pytest.raises(ValueError, match="family must be 4 or 6"):
        xt.compile(["-j", "ACCEPT"], "filter", "INPUT", set(), 5)
