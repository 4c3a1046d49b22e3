# SPDX-License-Identifier: MIT
"""Firewall rules, chains and sysctls as written in state files (SPEC section 2, issues 3 and 10).

The rule *text* is split into words exactly as iptables-restore splits a line
(``vnetd.desired.rules``, pure); what the words *mean* is decided by the code the
iptables command runs: ``vnetd check`` compiles every rule through libxtables
(``vnetd.backends.xtables`` and its C module), and asks the kernel itself, in a
throw-away namespace, about what only the kernel checks (hooks, tables,
protocols). Refusals therefore carry iptables' own messages; the kernel tests
below compare them with what iptables-legacy prints for the same words.

``BROKEN_FIREWALL``, ``BROKEN_XTABLES`` and ``BROKEN_KERNEL`` are also run through
check/plan/apply by ``tests/integration/test_bad_input.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import ARTICLE, ROOT, Netns, StateDir, sh, vnetd
from tests.unit.test_loader import Broken, bad, issues_of, shown
from vnetd.backends.xtables import validate_rules
from vnetd.checks import finish
from vnetd.desired.loader import load_state_dir, load_state_dir_partial
from vnetd.desired.rules import RuleSyntaxError, Token, parse_rule, tokenize
from vnetd.errors import ConfigError, ConfigIssue

# --------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize(("text", "tokens"), [
    ("-i eth1 -j ACCEPT", [("-i", False), ("eth1", False), ("-j", False), ("ACCEPT", False)]),
    ("  -j\tACCEPT  ", [("-j", False), ("ACCEPT", False)]),
    ('--comment "two words"', [("--comment", False), ("two words", True)]),
    (r'--comment "say \"hi\""', [("--comment", False), ('say "hi"', True)]),
    (r'--comment "back\\slash"', [("--comment", False), ("back\\slash", True)]),
    ('--comment ""', [("--comment", False), ("", True)]),
    # as iptables-restore: the closing quote ends the word
    ('--comment pre"fix suf"fix', [("--comment", False), ("prefix suf", True), ("fix", False)]),
    # single quotes and backslashes outside double quotes are ordinary characters
    ("--log-prefix 'fw: '", [("--log-prefix", False), ("'fw:", False), ("'", False)]),
    (r"--comment one\ word", [("--comment", False), ("one\\", False), ("word", False)]),
    ("", []),
])
def test_tokenize_as_iptables_restore(text: str, tokens: list[tuple[str, bool]]) -> None:
    assert tokenize(text) == [Token(t, q) for t, q in tokens]


@pytest.mark.parametrize(("text", "says"), [
    ('-m comment --comment "no end', 'unbalanced " quote'),
    ("-j ACCEPT\x00", "control characters"),
    ("-j ACCEPT\n-j DROP", "control characters"),
    ("-j " + "A" * 5000, "at most 4096"),
])
def test_tokenize_refuses(text: str, says: str) -> None:
    with pytest.raises(RuleSyntaxError, match=says):
        tokenize(text)


# --------------------------------------------------------------------------- canonical text


@pytest.mark.parametrize(("rule", "canonical"), [
    ("-p tcp  --dport 22\t-j ACCEPT", "-p tcp --dport 22 -j ACCEPT"),
    ('-m comment --comment "allow ssh" -j ACCEPT', '-m comment --comment "allow ssh" -j ACCEPT'),
    ('-m comment --comment "plain" -j ACCEPT', "-m comment --comment plain -j ACCEPT"),
    (r'-m comment --comment "say \"hi\"" -j ACCEPT', r'-m comment --comment "say \"hi\"" -j ACCEPT'),
    ('-j LOG --log-prefix "fw: "', '-j LOG --log-prefix "fw: "'),
    ('-m comment --comment "" -j ACCEPT', '-m comment --comment "" -j ACCEPT'),
    ("-m state --state NEW -m tcp -p tcp --dport 22 -j ACCEPT", "-m state --state NEW -m tcp -p tcp --dport 22 -j ACCEPT"),
])
def test_canonical_text_is_the_words_requoted(rule: str, canonical: str) -> None:
    """The canonical text (what a rule's tag is made of) keeps the words and their order:
    reordering them is libxtables' business, and a changed text is a changed rule."""
    parsed = parse_rule(rule)
    assert parsed.text == canonical
    assert parse_rule(canonical) == parsed  # a fixed point


def test_rule_helpers_read_iptables_save_forms() -> None:
    rule = parse_rule("! -s 10.0.0.0/24 -i eth1 -p tcp -m tcp --dport 22 -g GUESTS")
    assert rule.option("-s") == ("10.0.0.0/24", True)
    assert rule.option("-i") == ("eth1", False)
    assert rule.option("-o") is None
    assert rule.jump == ("GUESTS", True)
    assert parse_rule("-j ACCEPT").jump == ("ACCEPT", False)
    assert parse_rule("-i br0").jump is None
    assert parse_rule("-j").jump is None  # a flag without its name
    assert parse_rule("--goto GUESTS -j ACCEPT").jump == ("GUESTS", True)  # the first, as iptables reads it
    assert parse_rule("-j LOG --log-prefix -g").jump == ("LOG", False)


@pytest.mark.parametrize(("rule", "says"), [
    ("", "empty rule; write at least a target, e.g. '-j ACCEPT'"),
    ("-m comment --comment vnetd:1234 -j ACCEPT", "'vnetd:...' is the prefix of vnetd's own tags"),
    ("-j ACCEPT\t\x07", "control characters"),
])
def test_parser_refuses(rule: str, says: str) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        parse_rule(rule)
    assert says in str(info.value)


# --------------------------------------------------------------------------- the article's rules


def article_rules() -> list[tuple[str, str, str]]:
    """(table, chain, rule) of the gateway's /etc/sysconfig/iptables, in file order."""
    rules = []
    table = ""
    for line in (ARTICLE / "gateway" / "iptables").read_text().splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A "):
            _, chain, rule = line.split(None, 2)
            rules.append((table, chain, rule))
    return rules


def test_article_has_the_rules_we_expect() -> None:
    rules = article_rules()
    assert len(rules) == 13
    assert {r for _, _, r in rules} >= {"-o eth0 -j MASQUERADE", "-j REJECT --reject-with icmp-host-prohibited",
                                        "-m state --state NEW -m tcp -p tcp --dport 22 -j ACCEPT"}


def test_example_gateway_file_is_the_article_firewall(state_dir: StateDir) -> None:
    """etc/examples/gateway/20-firewall.yaml holds the article's rules, chain by chain, in order."""
    state_dir.write("20-firewall.yaml", (ROOT / "etc" / "examples" / "gateway" / "20-firewall.yaml").read_text())
    state = load_state_dir(str(state_dir))
    declared = {(c.table, c.name): [r.text for r in c.rules] for c in state.chains}
    expected: dict[tuple[str, str], list[str]] = {}
    for table, chain, rule in article_rules():
        expected.setdefault((table, chain), []).append(parse_rule(rule).text)
    assert declared == expected


def test_article_rules_compile() -> None:
    state = load_state_dir_from_rules([(t, c, r) for t, c, r in article_rules()])
    checked = validate_rules(state.chains, lambda table, family: set())
    assert checked.issues == [], shown(checked.issues)
    assert len(checked.compiled) == 13


def load_state_dir_from_rules(rules: list[tuple[str, str, str]]):  # type: ignore[no-untyped-def]
    from vnetd.desired.loader import SourceFile, load_sources

    tables: dict[str, dict[str, list[str]]] = {}
    for table, chain, rule in rules:
        tables.setdefault(table, {}).setdefault(chain, []).append(rule)
    lines = ["firewall:"]
    for table, chains in tables.items():
        lines.append(f"  {table}:")
        for chain, texts in chains.items():
            lines += [f"    {chain}:", "      rules:"]
            lines += ["      - '" + t.replace("'", "''") + "'" for t in texts]
    return load_sources([SourceFile("rules.yaml", "\n".join(lines) + "\n")])


# --------------------------------------------------------------------------- broken files


def fw(rule: str, table: str = "filter", chain: str = "FORWARD") -> str:
    quoted = "'" + rule.replace("'", "''") + "'"
    return f"firewall:\n  {table}:\n    {chain}:\n      rules:\n      - {quoted}\n"


def bad_rule(id: str, rule: str, *says: str, table: str = "filter", chain: str = "FORWARD") -> Broken:
    """A file whose only rule (line 5) is wrong; the message quotes the rule as written."""
    return bad(id, fw(rule, table, chain), 5, f"firewall.{table}.{chain}.rules[0]", *says, f"(rule: {rule})")


#: Refused by the loader itself (no libxtables needed).
BROKEN_FIREWALL: list[Broken] = [
    bad_rule("unbalanced-quotes", '-m comment --comment "no end -j ACCEPT', 'unbalanced " quote'),
    bad_rule("empty-rule", "", "empty rule"),
    bad_rule("forged-vnetd-tag", "-m comment --comment vnetd:0123456789abcdef -j ACCEPT",
             "'vnetd:...' is the prefix of vnetd's own tags"),
    bad("yaml-leading-bang-is-a-tag", """\
        firewall:
          filter:
            INPUT:
              rules:
              - ! -s 192.0.2.0/24 -j DROP
        """, 5, "", "quote the rule: YAML reads a leading '!' as a tag"),
    bad("yaml-explicit-str-tag", """\
        firewall:
          filter:
            INPUT:
              rules:
              - !!str -j ACCEPT
        """, 5, "", "explicit YAML tags (tag:yaml.org,2002:str) are not allowed"),
    bad("policy-on-user-chain", """\
        firewall:
          filter:
            mychain:
              policy: DROP
              rules: [-j RETURN]
        """, 4, "firewall.filter.mychain.policy", "only built-in chains have a policy; mychain is a user chain"),
    bad("policy-reject", """\
        firewall:
          filter:
            INPUT:
              policy: REJECT
        """, 4, "firewall.filter.INPUT.policy", "'REJECT' is not valid; expected one of: ACCEPT, DROP"),
    bad("invalid-mode", """\
        firewall:
          filter:
            FORWARD:
              mode: replace
              rules: [-j ACCEPT]
        """, 4, "firewall.filter.FORWARD.mode", "'replace' is not valid; expected one of: merge, exclusive"),
    bad("mode-as-yaml-boolean", """\
        firewall:
          filter:
            FORWARD:
              mode: on
        """, 4, "firewall.filter.FORWARD.mode", "got a boolean ('on'); YAML reads the unquoted on as a boolean"),
    bad("chain-name-too-long", """\
        firewall:
          filter:
            a_chain_name_of_29_characters:
              rules: [-j RETURN]
        """, 3, "firewall.filter.a_chain_name_of_29_characters", "is not a valid chain name; use 1-28 letters"),
    bad("chain-named-like-a-builtin-of-another-table", """\
        firewall:
          filter:
            POSTROUTING:
              rules: [-j ACCEPT]
        """, 3, "firewall.filter.POSTROUTING",
        "POSTROUTING is not a built-in chain of the filter table (those are INPUT, FORWARD, OUTPUT)"),
    bad("chain-named-like-a-builtin-in-lower-case", """\
        firewall:
          filter:
            forward:
              rules: [-j ACCEPT]
        """, 3, "firewall.filter.forward", "forward is not a built-in chain of the filter table"),
    bad("chain-named-accept", """\
        firewall:
          filter:
            ACCEPT:
              rules: [-j DROP]
        """, 3, "firewall.filter.ACCEPT", "'ACCEPT' is a built-in target, not a chain"),
    bad("same-rule-twice", """\
        firewall:
          filter:
            FORWARD:
              rules:
              - -p tcp --dport 22 -j ACCEPT
              - -p tcp  --dport 22 -j ACCEPT
        """, 6, "firewall.filter.FORWARD.rules[1]", "the same rule is already listed at line 5"),
    bad("unknown-table", """\
        firewall:
          security2:
            INPUT:
              rules: [-j ACCEPT]
        """, 2, "firewall.security2", "unknown key in firewall (tables); valid keys: filter, nat, mangle, raw, backend"),
    bad("rules-not-a-list", """\
        firewall:
          filter:
            FORWARD:
              rules: -j ACCEPT
        """, 4, "firewall.filter.FORWARD.rules", "expected a list, got a string ('-j ACCEPT')"),
    bad("rule-not-a-string", """\
        firewall:
          filter:
            FORWARD:
              rules:
              - 42
        """, 5, "firewall.filter.FORWARD.rules[0]",
        "expected a rule in iptables-save syntax, e.g. '-i eth1 -j ACCEPT', got an integer ('42')"),
    bad("unknown-chain-key", """\
        firewall:
          filter:
            FORWARD:
              rule: [-j ACCEPT]
        """, 4, "firewall.filter.FORWARD.rule", "unknown key in a chain; valid keys: policy, mode, position, rules"),
    bad("chain-without-body", """\
        firewall:
          filter:
            FORWARD:
        """, 3, "firewall.filter.FORWARD", "expected a mapping with the keys policy, mode, position, rules, got nothing"),
    bad("sysctl-kernel-dot", """\
        sysctl:
          kernel.: 1
        """, 2, "sysctl[kernel.]", "'kernel.' is not a sysctl key; expected e.g. net.ipv4.ip_forward"),
    bad("sysctl-outside-net", """\
        sysctl:
          kernel.panic: 10
        """, 2, "sysctl[kernel.panic]", "is not under net.; vnetd manages network sysctls (net.*) only"),
    bad("sysctl-path-trick", """\
        sysctl:
          net/../kernel/panic: 10
        """, 2, "sysctl[net/../kernel/panic]", "has an invalid component '..'"),
    bad("sysctl-absolute-path", """\
        sysctl:
          /proc/sys/net/ipv4/ip_forward: 1
        """, 2, "sysctl[/proc/sys/net/ipv4/ip_forward]", "is not a sysctl key; expected e.g. net.ipv4.ip_forward"),
    bad("sysctl-directory", """\
        sysctl:
          net: 1
        """, 2, "sysctl.net", "'net' names a directory, not a setting"),
    bad("sysctl-value-list", """\
        sysctl:
          net.ipv4.ip_forward: [1]
        """, 2, "sysctl[net.ipv4.ip_forward]",
        "expected a value as in sysctl.conf (a number or a string), got a list"),
    bad("sysctl-value-boolean", """\
        sysctl:
          net.ipv4.ip_forward: yes
        """, 2, "sysctl[net.ipv4.ip_forward]", "got a boolean ('yes'); YAML reads the unquoted yes as a boolean"),
    bad("sysctl-value-two-lines", """\
        sysctl:
          net.ipv4.ip_forward: "1\\n0"
        """, 2, "sysctl[net.ipv4.ip_forward]", "expected a single-line value of at most 256 characters"),
    bad("sysctl-same-key-two-spellings", """\
        sysctl:
          net.ipv4.ip_forward: 1
          net/ipv4/ip_forward: 0
        """, 3, "", "sysctl key 'net.ipv4.ip_forward' is defined twice: at {dir}/10-bad.yaml:2 "
        "and at {dir}/10-bad.yaml:3"),
]


def xt_rule(id: str, rule: str, *says: str, table: str = "filter", chain: str = "FORWARD") -> Broken:
    """A rule iptables refuses; `vnetd check` says why (iptables' own words) and quotes it canonically."""
    return bad(id, fw(rule, table, chain), 5, f"firewall.{table}.{chain}.rules[0]", *says,
               f"(rule: {parse_rule(rule).text})")


#: Rules the loader passes on and libxtables refuses, as the iptables command does: caught by `vnetd check`.
#: The messages are iptables' own (tests/integration/test_bad_input.py compares them with iptables-legacy's).
BROKEN_XTABLES: list[Broken] = [
    xt_rule("xt-missing-jump-argument", "-i eth1 -j", 'option "-j" requires an argument'),
    xt_rule("xt-two-targets", "-j ACCEPT -j DROP", "multiple -j flags not allowed"),
    xt_rule("xt-trailing-bang", "-j ACCEPT !", "nothing appropriate following !"),
    xt_rule("xt-negated-match", "! -m tcp -p tcp -j ACCEPT", "unexpected ! flag before --match"),
    xt_rule("xt-negated-jump", "! -j ACCEPT", "cannot have ! before -j"),
    xt_rule("xt-intrapositioned-negation", "-p ! tcp -j ACCEPT", 'unknown protocol "!" specified'),
    xt_rule("xt-never-matching-protocol", "! -p all -j DROP", "rule would never match protocol"),
    xt_rule("xt-source-twice", "-s 192.0.2.1 --source 192.0.2.2 -j DROP", "multiple -s flags not allowed"),
    xt_rule("xt-fragment-twice", "-f -f -j DROP", "multiple -f flags not allowed"),
    xt_rule("xt-protocol-out-of-range", "-p 300 -j DROP", 'unknown protocol "300" specified'),
    xt_rule("xt-unknown-protocol", "-p tcpp -j ACCEPT", 'unknown protocol "tcpp" specified'),
    xt_rule("xt-unknown-match", "-m nosuchmatch -j ACCEPT",
            "Couldn't load match `nosuchmatch':No such file or directory"),
    xt_rule("xt-match-name-with-path", "-m ../evil -j ACCEPT", 'match name "../evil" contains "."'),
    xt_rule("xt-hash-is-not-a-comment", "-j ACCEPT # a comment", "Bad argument `#'"),
    xt_rule("xt-bare-word", "ACCEPT", "Bad argument `ACCEPT'"),
    xt_rule("xt-interface-too-long", "-o abcdefghijklmnop -j ACCEPT",
            "interface name `abcdefghijklmnop' must be shorter than IFNAMSIZ (15)"),
    xt_rule("xt-append-prefix", "-A FORWARD -i eth1 -j ACCEPT", "-A/--append is not allowed in a rule",
            "the chain is the key the rule is written under; drop '-A CHAIN'"),
    xt_rule("xt-append-abbreviated", "--app FORWARD -i eth1 -j ACCEPT", "-A/--append is not allowed in a rule"),
    xt_rule("xt-insert-prefix", "-I FORWARD -i eth1 -j ACCEPT", "-I/--insert is not allowed in a rule"),
    xt_rule("xt-table-inside-rule", "-t nat -o eth0 -j MASQUERADE", "-t/--table is not allowed in a rule",
            "the table is the key the chain is written under", table="nat", chain="POSTROUTING"),
    xt_rule("xt-wait-interval-without-wait", "-W 10 -j ACCEPT", "--wait-interval only makes sense with --wait"),
    xt_rule("xt-ipv6-flag", "-6 -j ACCEPT", "-6/--ipv6 is not allowed in a rule"),
    xt_rule("xt-modprobe-flag", "--modprobe /tmp/x -j ACCEPT", "-M/--modprobe is not allowed in a rule",
            "vnetd never runs a program"),
    xt_rule("xt-option-without-match", "--dport 22 -j ACCEPT", 'unknown option "--dport"'),
    xt_rule("xt-unknown-option-of-known-match", "-p tcp -m tcp --nosuch 1 -j ACCEPT", 'unknown option "--nosuch"'),
    xt_rule("xt-ambiguous-abbreviation", "-p tcp --d 22 -j ACCEPT", 'unknown option "--d"'),
    xt_rule("xt-bad-option-value", "-m state --state BOGUS -j ACCEPT", 'Bad state "BOGUS"'),
    xt_rule("xt-port-out-of-range", "-p tcp --dport 99999 -j ACCEPT", "invalid port/service `99999' specified"),
    xt_rule("xt-negated-port-inside", "-p tcp --dport ! 22 -j ACCEPT", "invalid port/service `!' specified"),
    xt_rule("xt-unknown-target-option", "-j LOG --nosuch", 'unknown option "--nosuch"'),
    xt_rule("xt-multiport-without-protocol", "-m multiport --dports 22,80 -j ACCEPT", "multiport needs `-p tcp'"),
    xt_rule("xt-jump-to-missing-chain", "-j NOSUCHCHAIN", "no chain of that name in the filter table"),
    xt_rule("xt-options-on-accept", "-j ACCEPT --log-prefix x", 'unknown option "--log-prefix"'),
    xt_rule("xt-double-negation", "! ! -s 192.0.2.1 -j ACCEPT", "multiple consecutive ! not allowed"),
    xt_rule("xt-goto-accept", "-g ACCEPT", "goto 'ACCEPT' is not a chain"),
    xt_rule("xt-jump-to-builtin-chain", "-j INPUT", "jumps to a built-in chain"),
    xt_rule("xt-hostname-as-source", "-s gateway.example.com -j ACCEPT",
            "host/network `gateway.example.com' is not an IPv4 address", "does not resolve host names"),
    xt_rule("xt-ipv6-source", "-s 2001:db8::1 -j ACCEPT", "`2001:db8::1' is not an IPv4 address"),
    xt_rule("xt-negated-address-list", "! -s 192.0.2.1,192.0.2.2 -j ACCEPT",
            "! not allowed with multiple source or destination IP addresses"),
    xt_rule("xt-chain-jumps-to-itself", "-j mine", "a chain cannot jump to itself", chain="mine"),
    xt_rule("xt-connlimit-without-options", "-m connlimit -j DROP",
            'You must specify "--connlimit-above" or "--connlimit-upto"'),
    xt_rule("xt-mac-without-source", "-m mac -j DROP", 'mac: option "--mac-source" must be specified'),
    xt_rule("xt-dnat-twice", "-j DNAT --to-destination 192.0.2.1 --to-destination 192.0.2.2",
            'DNAT: option "--to-destination" can only be used once', table="nat", chain="PREROUTING"),
    xt_rule("xt-tcpmss-without-option", "-j TCPMSS", "TCPMSS target: At least one parameter is required",
            table="mangle"),
    xt_rule("xt-drop-in-nat", "-j DROP", 'The "nat" table is not intended for filtering', table="nat",
            chain="POSTROUTING"),
    xt_rule("xt-out-interface-in-input", "-o eth0 -j ACCEPT", "Can't use -o with INPUT", chain="INPUT"),
    xt_rule("xt-addrtype-both-limits", "-m addrtype --src-type LOCAL --limit-iface-in --limit-iface-out -j ACCEPT",
            'addrtype: option "--limit-iface-in" cannot be used together with "--limit-iface-out"', chain="INPUT"),
    xt_rule("xt-single-quotes", "-m comment --comment 'allow ssh' -j ACCEPT", "Bad argument `ssh''",
            "iptables-save syntax quotes with double quotes"),
]


def kernel_rule(id: str, rule: str, why: str, table: str = "filter", chain: str = "FORWARD") -> Broken:
    """``why``: what the kernel logs (vnetd adds it from /dev/kmsg; the kernel rate-limits
    those lines, so the tests check the refusal, not the log line)."""
    return xt_rule(id, rule, f"the kernel refuses this rule in the {table} table (Invalid argument)",
                   table=table, chain=chain)


#: Rules libxtables takes and the kernel refuses (iptables fails them when it writes the table):
#: `vnetd check` asks the kernel, in a throw-away namespace, and fails them up front.
BROKEN_KERNEL: list[Broken] = [
    kernel_rule("kernel-tcp-match-without-protocol", "-m tcp --dport 22 -j ACCEPT", "only valid for protocol 6"),
    kernel_rule("kernel-tcpmss-without-protocol", "-m tcpmss --mss 42 -j ACCEPT", "only valid for protocol 6"),
    kernel_rule("kernel-owner-in-input", "-m owner --uid-owner 0 -j ACCEPT", "only valid from OUTPUT/POSTROUTING",
                table="mangle", chain="INPUT"),
    kernel_rule("kernel-masquerade-in-filter", "-o eth0 -j MASQUERADE", "only valid in nat table, not filter"),
    kernel_rule("kernel-dnat-in-postrouting", "-p tcp -j DNAT --to-destination 192.0.2.10",
                "used from hooks POSTROUTING, but only usable from PREROUTING/OUTPUT", table="nat", chain="POSTROUTING"),
    kernel_rule("kernel-reject-in-mangle", "-j REJECT", "REJECT target: only valid in filter table, not mangle",
                table="mangle", chain="PREROUTING"),
]


def checked_issues(state: StateDir) -> list[ConfigIssue]:
    """What `vnetd check` finds without the kernel (the loader, then libxtables; no chain exists)."""
    desired, issues = load_state_dir_partial(str(state))
    issues = issues + validate_rules(desired.chains, lambda table, family: set()).issues
    assert issues, "expected at least one issue"
    return issues


@pytest.mark.parametrize("case", BROKEN_FIREWALL, ids=[c.id for c in BROKEN_FIREWALL])
def test_broken_firewall_and_sysctl(case: Broken, state_dir: StateDir) -> None:
    case.write(state_dir)
    issues = issues_of(state_dir)
    assert any(case.matches(i, state_dir) for i in issues), shown(issues)
    assert len(issues) == case.count, shown(issues)


@pytest.mark.parametrize("case", BROKEN_XTABLES, ids=[c.id for c in BROKEN_XTABLES])
def test_rules_iptables_refuses_are_refused_with_its_words(case: Broken, state_dir: StateDir) -> None:
    case.write(state_dir)
    load_state_dir(str(state_dir))  # the loader passes them on
    issues = checked_issues(state_dir)
    assert any(case.matches(i, state_dir) for i in issues), shown(issues)
    assert len(issues) == case.count, shown(issues)


def test_catalogue_is_large_and_distinct() -> None:
    cases = BROKEN_FIREWALL + BROKEN_XTABLES + BROKEN_KERNEL
    assert len(cases) >= 80
    assert len({c.id for c in cases}) == len(cases)
    assert len({c.files for c in cases}) == len(cases)


def test_every_problem_of_every_kind_is_reported_in_one_round(state_dir: StateDir) -> None:
    """Schema errors do not hide rule errors: one `check` lists them all (issue 10: check = apply)."""
    state_dir.write("10-a.yaml", """\
        firewall:
          filter:
            FORWARD:
              rules:
              - -A FORWARD -j ACCEPT
              - -i eth1 -j ACCEPT
              - -s gateway.example.com -j ACCEPT
              - -m connlimit -j DROP
            INPUT:
              policy: REJECT
        sysctl:
          kernel.panic: 1
        """)
    desired, issues = load_state_dir_partial(str(state_dir))
    with pytest.raises(ConfigError) as info:
        finish(desired, issues, kernel=False)
    found = [(i.line, i.path) for i in info.value.issues]
    assert found == [
        (5, "firewall.filter.FORWARD.rules[0]"), (7, "firewall.filter.FORWARD.rules[2]"),
        (8, "firewall.filter.FORWARD.rules[3]"), (10, "firewall.filter.INPUT.policy"), (12, "sysctl[kernel.panic]"),
    ], shown(list(info.value.issues))


def test_integers_are_written_in_decimal(state_dir: StateDir) -> None:
    """YAML 1.1 reads 01500 as octal and 25:00 as sexagesimal: refused, never taken silently."""
    state_dir.write("10-a.yaml", """\
        interfaces:
        - name: br0
          type: linux-bridge
          mtu: 01500
        - name: br1
          type: linux-bridge
          mtu: 25:00
        """)
    issues = issues_of(state_dir)
    assert [(i.line, i.path) for i in issues] == [(4, "interfaces[0].mtu"), (7, "interfaces[1].mtu")], shown(issues)
    assert "write '01500' as a decimal number: YAML 1.1 reads it as 832" in issues[0].message


def test_sysctl_values_are_taken_as_written(state_dir: StateDir) -> None:
    """As sysctl.conf hands the text to the kernel: 0755 stays 0755 (YAML 1.1 would make it 493)."""
    state_dir.write("10-a.yaml", "sysctl:\n  net.ipv4.ip_forward: 01\n  net.ipv4.conf.all.rp_filter: 0x2\n")
    state = load_state_dir(str(state_dir))
    assert {s.key: s.value for s in state.sysctls} == {"net.ipv4.ip_forward": "01",
                                                       "net.ipv4.conf.all.rp_filter": "0x2"}


# --------------------------------------------------------------------------- through `vnetd check` / `apply`


@pytest.mark.kernel
@pytest.mark.parametrize("case", BROKEN_XTABLES + BROKEN_KERNEL, ids=[c.id for c in BROKEN_XTABLES + BROKEN_KERNEL])
def test_vnetd_check_refuses_what_iptables_refuses(case: Broken, netns: Netns, state_dir: StateDir) -> None:
    case.write(state_dir)
    result = vnetd("check", netns=netns, state_dir=state_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    for text in case.expected(state_dir):
        assert text in result.stderr, result.stderr
    assert "1 error in the state files" in result.stderr
    assert sh("ip", "netns", "exec", netns.name, "iptables-legacy-save").stdout.count("-A ") == 0


@pytest.mark.kernel
def test_sysctl_value_the_kernel_refuses_fails_apply_cleanly(netns: Netns, state_dir: StateDir) -> None:
    """Only the kernel knows that ip_forward takes a number: check passes, apply fails and says why."""
    state_dir.write("10-sysctl.yaml", "sysctl:\n  net.ipv4.ip_forward: forty-two\n")
    before = netns.sysctl("net.ipv4.ip_forward")
    links = netns.snapshot()
    assert vnetd("check", netns=netns, state_dir=state_dir).returncode == 0
    result = vnetd("apply", netns=netns, state_dir=state_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("failed: sysctl/net.ipv4.ip_forward: value want forty-two, have 0: sysctl/net.ipv4.ip_forward: "
            "the kernel refused 'forty-two': Invalid argument (EINVAL)") in result.stdout
    assert "not converged" in result.stdout
    assert "Traceback" not in result.stderr
    assert netns.sysctl("net.ipv4.ip_forward") == before == "0"
    assert netns.snapshot() == links


# --------------------------------------------------------------------------- chains from several files (issue 14)


def test_a_chain_split_over_files_is_merged_in_file_order(state_dir: StateDir) -> None:
    state_dir.write("50-web.yaml", "firewall:\n  filter:\n    INPUT:\n      rules:\n"
                                   "      - -p tcp --dport 80 -j ACCEPT\n")
    state_dir.write("10-base.yaml", "firewall:\n  filter:\n    INPUT:\n      policy: DROP\n      rules:\n"
                                    "      - -p tcp --dport 22 -j ACCEPT\n")
    state_dir.write("90-last.yaml", "firewall:\n  filter:\n    INPUT:\n      position: append\n      rules:\n"
                                    "      - -j REJECT\n")
    (chain,) = load_state_dir(str(state_dir)).chains
    assert [r.text for r in chain.rules] == ["-p tcp --dport 22 -j ACCEPT", "-p tcp --dport 80 -j ACCEPT"]
    assert [r.text for r in chain.tail] == ["-j REJECT"]
    assert chain.policy == "DROP" and chain.mode.value == "merge"
    assert [r.origin.file.rsplit("/", 1)[-1] for r in chain.all_rules if r.origin] == [
        "10-base.yaml", "50-web.yaml", "90-last.yaml"]


@pytest.mark.parametrize(("first", "second", "says"), [
    ("      mode: merge\n", "      mode: exclusive\n", "the mode of chain filter INPUT is written twice"),
    ("      policy: DROP\n", "      policy: ACCEPT\n", "the policy of chain filter INPUT is written twice"),
    ("      rules: [-j ACCEPT]\n", "      rules: [-j ACCEPT]\n", "the same rule is already listed at"),
    ("      mode: exclusive\n", "      position: append\n      rules: [-j DROP]\n",
     "position: append is for merge chains, and this chain is exclusive"),
])
def test_split_chain_conflicts_name_both_files(state_dir: StateDir, first: str, second: str, says: str) -> None:
    state_dir.write("10-a.yaml", "firewall:\n  filter:\n    INPUT:\n" + first)
    state_dir.write("20-b.yaml", "firewall:\n  filter:\n    INPUT:\n" + second)
    issues = issues_of(state_dir)
    assert len(issues) == 1 and says in issues[0].message, shown(issues)
    assert issues[0].file.endswith("20-b.yaml")
    if "written twice" in says:
        assert "10-a.yaml:4" in issues[0].message


def test_append_is_refused_on_an_exclusive_chain(state_dir: StateDir) -> None:
    state_dir.write("10-a.yaml", "firewall:\n  filter:\n    INPUT:\n      mode: exclusive\n"
                                 "      position: append\n      rules: [-j DROP]\n")
    (issue,) = issues_of(state_dir)
    assert issue.path == "firewall.filter.INPUT.position" and "is for merge chains" in issue.message


def _by_tokens(text: str) -> tuple[tuple[str, ...], str] | str:
    """What parse_rule makes of a text, the long way (every word a token, requoted)."""
    from vnetd.desired.rules import MAX_RULE_WORDS, TAG_PREFIX, render

    try:
        tokens = tokenize(text)
    except RuleSyntaxError:
        return "refused"
    if not tokens or len(tokens) > MAX_RULE_WORDS or any(t.text.startswith(TAG_PREFIX) for t in tokens):
        return "refused"
    words = tuple(t.text for t in tokens)
    return words, render(words)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab -.:/\t\n\"\\'\x00\xa0é=+@%^,vnetd:")), max_size=40))
def test_plain_words_shortcut_parses_as_the_tokenizer(text: str) -> None:
    """The fast path for rules of plain words gives what tokenizing and requoting gives."""
    try:
        rule = parse_rule(text)
        got: tuple[tuple[str, ...], str] | str = (rule.words, rule.text)
    except RuleSyntaxError:
        got = "refused"
    assert got == _by_tokens(text)
