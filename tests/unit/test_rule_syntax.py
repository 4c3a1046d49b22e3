# SPDX-License-Identifier: MIT
"""Firewall rules, chains and sysctls as written in state files (SPEC section 2, issue 3).

The rule parser (``vnetd.desired.rules``) is pure: it tokenizes as iptables-restore
does and gives the canonical text (header in iptables-save order, then matches,
then the target). What only libxtables knows (a match's options, their values) is
caught by ``vnetd check`` (``validate_rules`` compiles every rule through
python-iptables); a value only the kernel can judge (a sysctl) fails at apply. Those
few tests run ``vnetd`` inside a throw-away namespace and are marked ``kernel``.

``BROKEN_FIREWALL`` and ``BROKEN_XTABLES`` are also run through check/plan/apply by
``tests/integration/test_bad_input.py``.
"""

from __future__ import annotations

import pytest

from tests.support import ARTICLE, ROOT, Netns, StateDir, vnetd
from tests.unit.test_loader import Broken, bad, issues_of, shown
from vnetd.desired.loader import load_state_dir
from vnetd.desired.rules import RuleSyntaxError, Token, parse_rule, tokenize
from vnetd.model.firewall import HeaderField, RuleOption

# --------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize(("text", "tokens"), [
    ("-i eth1 -j ACCEPT", [("-i", False), ("eth1", False), ("-j", False), ("ACCEPT", False)]),
    ("  -j\tACCEPT  ", [("-j", False), ("ACCEPT", False)]),
    ('--comment "two words"', [("--comment", False), ("two words", True)]),
    ("--comment 'single quoted'", [("--comment", False), ("single quoted", True)]),
    (r'--comment "say \"hi\""', [("--comment", False), ('say "hi"', True)]),
    (r'--comment "back\\slash"', [("--comment", False), ("back\\slash", True)]),
    (r"--comment one\ word", [("--comment", False), ("one word", False)]),
    ("--comment \"\"", [("--comment", False), ("", True)]),
    ("--comment pre\"fix suf\"fix", [("--comment", False), ("prefix suffix", True)]),
    ("--log-prefix 'fw: '", [("--log-prefix", False), ("fw: ", True)]),
    ("", []),
])
def test_tokenize(text: str, tokens: list[tuple[str, bool]]) -> None:
    assert tokenize(text) == [Token(t, q) for t, q in tokens]


@pytest.mark.parametrize(("text", "says"), [
    ('-m comment --comment "no end', 'unbalanced " quote'),
    ("-m comment --comment 'no end", "unbalanced ' quote"),
    ("-j ACCEPT\x00", "control characters"),
    ("-j ACCEPT\n-j DROP", "control characters"),
    ("-j " + "A" * 5000, "at most 4096"),
])
def test_tokenize_refuses(text: str, says: str) -> None:
    with pytest.raises(RuleSyntaxError, match=says):
        tokenize(text)


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


#: canonical text of each article rule: iptables-save puts -p before the matches
CANONICAL = {
    "-o eth0 -j MASQUERADE": "-o eth0 -j MASQUERADE",
    "-m state --state ESTABLISHED,RELATED -j ACCEPT": "-m state --state ESTABLISHED,RELATED -j ACCEPT",
    "-p icmp -j ACCEPT": "-p icmp -j ACCEPT",
    "-i lo -j ACCEPT": "-i lo -j ACCEPT",
    "-i eth1 -j ACCEPT": "-i eth1 -j ACCEPT",
    "-m state --state NEW -m tcp -p tcp --dport 22 -j ACCEPT":
        "-p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT",
    "-i eth0 -o eth1 -m state --state RELATED,ESTABLISHED -j ACCEPT":
        "-i eth0 -o eth1 -m state --state RELATED,ESTABLISHED -j ACCEPT",
    "-i eth1 -o eth0 -j ACCEPT": "-i eth1 -o eth0 -j ACCEPT",
    "-j REJECT --reject-with icmp-host-prohibited": "-j REJECT --reject-with icmp-host-prohibited",
}


def test_article_has_the_rules_we_expect() -> None:
    rules = article_rules()
    assert len(rules) == 13
    assert {r for _, _, r in rules} == set(CANONICAL)


@pytest.mark.parametrize("rule", list(CANONICAL))
def test_article_rule_canonical_text(rule: str) -> None:
    parsed = parse_rule(rule)
    assert parsed.text == CANONICAL[rule]
    assert parse_rule(parsed.text).text == parsed.text  # canonical is a fixed point
    assert parse_rule(parsed.text) == parsed


def test_article_ssh_rule_fields() -> None:
    rule = parse_rule("-m state --state NEW -m tcp -p tcp --dport 22 -j ACCEPT")
    assert rule.header.protocol == HeaderField("tcp")
    assert [(m.name, m.options) for m in rule.matches] == [
        ("state", (RuleOption("state", ("NEW",)),)),
        ("tcp", (RuleOption("dport", ("22",)),)),
    ]
    assert rule.target.name == "ACCEPT" and not rule.target.goto and rule.target.options == ()


def test_example_gateway_file_is_the_article_firewall(state_dir: StateDir) -> None:
    """etc/examples/gateway/20-firewall.yaml holds the article's rules, chain by chain, in order."""
    state_dir.write("20-firewall.yaml", (ROOT / "etc" / "examples" / "gateway" / "20-firewall.yaml").read_text())
    state = load_state_dir(str(state_dir))
    declared = {(c.table, c.name): [r.text for r in c.rules] for c in state.chains}
    expected: dict[tuple[str, str], list[str]] = {}
    for table, chain, rule in article_rules():
        expected.setdefault((table, chain), []).append(CANONICAL[rule])
    assert declared == expected


@pytest.mark.parametrize(("rule", "canonical"), [
    # header in iptables-save order: -s -d -i -o -p -f, whatever order it was written in
    ("-o eth0 -p udp -f -d 198.51.100.0/24 -i eth1 -s 192.0.2.0/24 -j ACCEPT",
     "-s 192.0.2.0/24 -d 198.51.100.0/24 -i eth1 -o eth0 -p udp -f -j ACCEPT"),
    ("-j ACCEPT -s 192.0.2.1", "-s 192.0.2.1/32 -j ACCEPT"),
    ("--source 192.0.2.0/24 --destination 203.0.113.0/24 --in-interface br0 --out-interface eth0 --protocol tcp "
     "--jump DROP", "-s 192.0.2.0/24 -d 203.0.113.0/24 -i br0 -o eth0 -p tcp -j DROP"),
    ("-m physdev --physdev-is-bridged -j ACCEPT", "-m physdev --physdev-is-bridged -j ACCEPT"),
    # addresses as the kernel keeps them
    ("-d 192.0.2.77/24 -j DROP", "-d 192.0.2.0/24 -j DROP"),
    # protocols by name, lower case
    ("-p TCP -j ACCEPT", "-p tcp -j ACCEPT"),
    ("-p 17 -j ACCEPT", "-p udp -j ACCEPT"),
    ("-p 99 -j ACCEPT", "-p 99 -j ACCEPT"),
    ("-p all -j ACCEPT", "-j ACCEPT"),
    # the implicit match iptables loads for -p tcp/udp/icmp options
    ("-p tcp --dport 22 -j ACCEPT", "-p tcp -m tcp --dport 22 -j ACCEPT"),
    ("-p udp --sport 53 --dport 1024:65535 -j ACCEPT", "-p udp -m udp --sport 53 --dport 1024:65535 -j ACCEPT"),
    ("-p icmp --icmp-type echo-request -j ACCEPT", "-p icmp -m icmp --icmp-type echo-request -j ACCEPT"),
    ("-p tcp -m multiport --dports 22,80,443 -j ACCEPT", "-p tcp -m multiport --dports 22,80,443 -j ACCEPT"),
    # negation
    ("! -s 10.0.0.0/24 -o eth0 -j MASQUERADE", "! -s 10.0.0.0/24 -o eth0 -j MASQUERADE"),
    ("! -i eth0 ! -p tcp -j DROP", "! -i eth0 ! -p tcp -j DROP"),
    ("-p tcp ! --dport 22 -j DROP", "-p tcp -m tcp ! --dport 22 -j DROP"),
    ("-m state ! --state NEW -j ACCEPT", "-m state ! --state NEW -j ACCEPT"),
    ("! -f -j ACCEPT", "! -f -j ACCEPT"),
    ("-f -j DROP", "-f -j DROP"),
    ("-p tcp -m tcp ! --tcp-flags SYN,RST SYN -j DROP", "-p tcp -m tcp ! --tcp-flags SYN,RST SYN -j DROP"),
    # quoting: only where iptables-save quotes
    ('-m comment --comment "allow ssh" -j ACCEPT', '-m comment --comment "allow ssh" -j ACCEPT'),
    ("-m comment --comment 'allow ssh' -j ACCEPT", '-m comment --comment "allow ssh" -j ACCEPT'),
    ('-m comment --comment "plain" -j ACCEPT', "-m comment --comment plain -j ACCEPT"),
    (r'-m comment --comment "say \"hi\"" -j ACCEPT', r'-m comment --comment "say \"hi\"" -j ACCEPT'),
    ("-j LOG --log-prefix 'fw: '", '-j LOG --log-prefix "fw: "'),
    # targets and chains
    ("-i eth+ -j ACCEPT", "-i eth+ -j ACCEPT"),
    ("-g my_chain", "-g my_chain"),
    ("-j my.chain-2", "-j my.chain-2"),
    ("-i br0", "-i br0"),  # no target: counts and falls through
    ("-m comment --comment -4 -j ACCEPT", "-m comment --comment -4 -j ACCEPT"),  # a value, not the -4 option
])
def test_canonical_text(rule: str, canonical: str) -> None:
    assert parse_rule(rule).text == canonical
    assert parse_rule(canonical).text == canonical


def test_negated_fields() -> None:
    rule = parse_rule("! -s 10.0.0.0/24 -p tcp ! --dport 22 -j ACCEPT")
    assert rule.header.source == HeaderField("10.0.0.0/24", inverted=True)
    assert rule.header.protocol == HeaderField("tcp", inverted=False)
    assert rule.matches[0].options == (RuleOption("dport", ("22",), inverted=True),)


@pytest.mark.parametrize(("rule", "says"), [
    ("", "empty rule; write at least a target, e.g. '-j ACCEPT'"),
    ("-i eth1 -j", "-j needs an argument"),
    ("-j ACCEPT -j DROP", "only one -j/-g target per rule"),
    ("-j ACCEPT !", "'!' at the end of the rule negates nothing"),
    ("! -m tcp -p tcp -j ACCEPT", "'! -m' is not valid; negate the match's options instead"),
    ("! -j ACCEPT", "'! -j' is not valid"),
    ("-p ! tcp -j ACCEPT", "'-p ! value' is not valid; write '! -p value'"),
    ("! -p all -j DROP", "'! -p all' matches nothing"),
    ("-s 192.0.2.1 --source 192.0.2.2 -j DROP", "--source is given twice"),
    ("-f -f -j DROP", "-f is given twice"),
    ("-p 300 -j DROP", "protocol number 300 is out of range 0-255"),
    ("-m 'a b' -j ACCEPT", "'a b' is not a match name"),
    ("-j 'a;b'", "'a;b' is not a target or chain name"),
    ("-x -j ACCEPT", "unknown option '-x'; header options are -s -d -i -o -p -f"),
    ("ACCEPT", "unexpected 'ACCEPT': expected an option such as -s, -p, -m or -j"),
    ("-j ACCEPT # a comment", "unexpected '#'"),
    ("-p udp -m tcp --dport 1 -j ACCEPT", "-m tcp needs '-p tcp'"),
    ("! -p tcp -m tcp --dport 1 -j ACCEPT", "-m tcp needs '-p tcp'"),
    ("-o abcdefghijklmnop -j ACCEPT", "is 16 bytes long; the kernel allows 1-15"),
    ("-i 'eth 1' -j ACCEPT", "contains [' ']"),
    ("-F", "-F is not allowed in a rule: use 'mode: exclusive'"),
    ("-P INPUT DROP", "-P is not allowed in a rule: use 'policy:' on the chain"),
    ("-N mychain", "-N is not allowed in a rule"),
    ("-w -j ACCEPT", "vnetd takes the xtables lock itself"),
    ("-6 -j ACCEPT", "-6 is not allowed in a rule: vnetd manages IPv4 tables only"),
    ("-i eth1 -4 -j ACCEPT", "-4 is not allowed in a rule"),
])
def test_parser_refuses(rule: str, says: str) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        parse_rule(rule)
    assert says in str(info.value)


# --------------------------------------------------------------------------- broken files


def fw(rule: str, table: str = "filter", chain: str = "FORWARD") -> str:
    quoted = "'" + rule.replace("'", "''") + "'"
    return f"firewall:\n  {table}:\n    {chain}:\n      rules:\n      - {quoted}\n"


def bad_rule(id: str, rule: str, *says: str, table: str = "filter", chain: str = "FORWARD") -> Broken:
    """A file whose only rule (line 5) is wrong; the message quotes the rule as written."""
    return bad(id, fw(rule, table, chain), 5, f"firewall.{table}.{chain}.rules[0]", *says, f"(rule: {rule})")


BROKEN_FIREWALL: list[Broken] = [
    bad_rule("missing-jump-argument", "-i eth1 -j", "-j needs an argument"),
    bad_rule("unbalanced-quotes", '-m comment --comment "no end -j ACCEPT', 'unbalanced " quote'),
    bad_rule("append-prefix", "-A FORWARD -i eth1 -j ACCEPT", "-A is not allowed in a rule",
             "the chain is the key the rule is written under; drop '-A CHAIN'"),
    bad_rule("insert-prefix", "-I FORWARD -i eth1 -j ACCEPT", "-I is not allowed in a rule",
             "drop '-I CHAIN'"),
    bad_rule("table-inside-rule", "-t nat -o eth0 -j MASQUERADE", "-t is not allowed in a rule",
             "the table is the key the chain is written under", table="nat", chain="POSTROUTING"),
    bad_rule("hostname-as-source", "-s gateway.example.com -j ACCEPT",
             "'gateway.example.com' is not an IPv4 address or network", "hostnames are not resolved"),
    bad_rule("ipv6-source", "-s 2001:db8::1 -j ACCEPT", "'2001:db8::1' is IPv6",
             "vnetd manages the IPv4 tables (iptables) only"),
    bad_rule("address-list-as-source", "-s 192.0.2.0/24,198.51.100.0/24 -j DROP", "one address per rule"),
    bad_rule("tcp-match-without-protocol", "-m tcp --dport 22 -j ACCEPT",
             "-m tcp needs '-p tcp' (the kernel refuses it otherwise)"),
    bad_rule("option-without-match", "--dport 22 -j ACCEPT", "--dport belongs to no match",
             "'-p tcp -m tcp --dport 22'"),
    bad_rule("masquerade-in-filter", "-o eth0 -j MASQUERADE", "-j MASQUERADE is valid only in the nat table"),
    bad_rule("dnat-in-postrouting", "-p tcp -m tcp --dport 80 -j DNAT --to-destination 192.0.2.10",
             "-j DNAT is valid only in PREROUTING or OUTPUT", table="nat", chain="POSTROUTING"),
    bad_rule("reject-in-nat", "-j REJECT", "-j REJECT is valid only in the filter or mangle or raw table",
             table="nat", chain="PREROUTING"),
    bad_rule("goto-accept", "-g ACCEPT", "-g needs a user chain, not 'ACCEPT'"),
    bad_rule("double-negation", "! ! -s 192.0.2.1 -j ACCEPT", "'! !' is not valid"),
    bad_rule("intrapositioned-negation", "-p tcp --dport ! 22 -j ACCEPT",
             "'--dport ! value' is not valid; write '! --dport value'"),
    bad_rule("two-targets", "-j ACCEPT -j DROP", "only one -j/-g target per rule"),
    bad_rule("unknown-protocol", "-p tcpp -j ACCEPT", "unknown protocol 'tcpp'", "or a number 0-255"),
    bad_rule("interface-with-slash", "-i eth0/1 -j ACCEPT", "contains ['/']"),
    bad_rule("bare-double-dash", "-j ACCEPT --", "'--' is not an option; write '--name value'"),
    bad_rule("option-with-equals", "-p tcp --dport=22 -j ACCEPT", "'--dport=22' is not an option"),
    bad_rule("empty-rule", "", "empty rule"),
    bad_rule("chain-jumps-to-itself", "-j mine", "a chain cannot jump to itself (mine)", chain="mine"),
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
              - -p tcp -m tcp --dport 22 -j ACCEPT
        """, 6, "firewall.filter.FORWARD.rules[1]", "the same rule is already listed at line 5"),
    bad("unknown-table", """\
        firewall:
          security2:
            INPUT:
              rules: [-j ACCEPT]
        """, 2, "firewall.security2", "unknown key in firewall (tables); valid keys: filter, nat, mangle, raw"),
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
        """, 4, "firewall.filter.FORWARD.rule", "unknown key in a chain; valid keys: policy, mode, rules"),
    bad("chain-without-body", """\
        firewall:
          filter:
            FORWARD:
        """, 3, "firewall.filter.FORWARD", "expected a mapping with the keys policy, mode, rules, got nothing"),
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
        """, 2, "sysctl[net.ipv4.ip_forward]", "got a boolean ('yes')"),
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

def xt_rule(id: str, rule: str, *says: str) -> Broken:
    """A rule libxtables refuses; `vnetd check` quotes it in its canonical form."""
    return bad(id, fw(rule), 5, "firewall.filter.FORWARD.rules[0]", *says, f"(rule: {parse_rule(rule).text})")


#: Rules the pure parser passes on and libxtables refuses: caught by `vnetd check`.
BROKEN_XTABLES: list[Broken] = [
    xt_rule("xt-unknown-match", "-m nosuchmatch -j ACCEPT",
             "unknown match 'nosuchmatch' (no libxt/libipt extension of that name)"),
    xt_rule("xt-unknown-option-of-known-match", "-p tcp -m tcp --nosuch 1 -j ACCEPT",
             "-m tcp has no option --nosuch"),
    xt_rule("xt-bad-option-value", "-m state --state BOGUS -j ACCEPT", "-m state: --state BOGUS"),
    xt_rule("xt-port-out-of-range", "-p tcp --dport 99999 -j ACCEPT", "-m tcp: --dport 99999 is not a valid value"),
    xt_rule("xt-unknown-target-option", "-j LOG --nosuch", "-j LOG has no option --nosuch"),
    xt_rule("xt-multiport-without-protocol", "-m multiport --dports 22,80 -j ACCEPT",
            "multiport needs -p tcp"),
    xt_rule("xt-jump-to-missing-chain", "-j NOSUCHCHAIN", "no chain of that name in the filter table"),
    xt_rule("xt-options-on-accept", "-j ACCEPT --log-prefix x", "-j ACCEPT takes no options"),
]


@pytest.mark.parametrize("case", BROKEN_FIREWALL, ids=[c.id for c in BROKEN_FIREWALL])
def test_broken_firewall_and_sysctl(case: Broken, state_dir: StateDir) -> None:
    case.write(state_dir)
    issues = issues_of(state_dir)
    assert any(case.matches(i, state_dir) for i in issues), shown(issues)
    assert len(issues) == case.count, shown(issues)


def test_catalogue_is_large_and_distinct() -> None:
    cases = BROKEN_FIREWALL + BROKEN_XTABLES
    assert len(cases) >= 25
    assert len({c.id for c in cases}) == len(cases)
    assert len({c.files for c in cases}) == len(cases)


@pytest.mark.parametrize("case", BROKEN_XTABLES, ids=[c.id for c in BROKEN_XTABLES])
def test_the_pure_loader_leaves_extension_options_to_libxtables(case: Broken, state_dir: StateDir) -> None:
    case.write(state_dir)
    state = load_state_dir(str(state_dir))
    assert len(state.chains) == 1 and len(state.chains[0].rules) == 1


def test_every_rule_error_of_a_chain_is_reported(state_dir: StateDir) -> None:
    state_dir.write("10-a.yaml", """\
        firewall:
          filter:
            FORWARD:
              rules:
              - -A FORWARD -j ACCEPT
              - -i eth1 -j ACCEPT
              - -s gateway.example.com -j ACCEPT
              - -o eth0 -j MASQUERADE
            INPUT:
              policy: REJECT
        sysctl:
          kernel.panic: 1
        """)
    issues = issues_of(state_dir)
    assert [(i.line, i.path) for i in issues] == [
        (5, "firewall.filter.FORWARD.rules[0]"), (7, "firewall.filter.FORWARD.rules[2]"),
        (8, "firewall.filter.FORWARD.rules[3]"), (10, "firewall.filter.INPUT.policy"), (12, "sysctl[kernel.panic]"),
    ], shown(issues)


# --------------------------------------------------------------------------- through `vnetd check` / `apply`


@pytest.mark.kernel
@pytest.mark.parametrize("case", BROKEN_XTABLES, ids=[c.id for c in BROKEN_XTABLES])
def test_vnetd_check_compiles_rules_through_libxtables(case: Broken, netns: Netns, state_dir: StateDir) -> None:
    case.write(state_dir)
    result = vnetd("check", netns=netns, state_dir=state_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    for text in case.expected(state_dir):
        assert text in result.stderr, result.stderr
    assert "1 error in the state files" in result.stderr


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
