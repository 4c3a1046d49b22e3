# SPDX-License-Identifier: MIT
""""Did you mean" for rules: iptables' own message, then the close options of the
extensions the rule loads, the installed targets and matches, the declared chains,
and the values an enumerated option takes (from the extension's help text).

Compiles through libxtables (the C module), without the kernel: no root needed.
"""

from __future__ import annotations

import re

import pytest

from vnetd.backends import rulehints
from vnetd.backends.xtables import libxtables, validate_rules
from vnetd.desired.rules import parse_rule
from vnetd.model.firewall import ChainMode, ChainSpec


def refused(rule: str, chain: str = "INPUT", table: str = "filter", existing: set[str] | None = None,
            family: int = 4) -> str:
    spec = ChainSpec(table, chain, None, ChainMode.MERGE, (parse_rule(rule),), None, family=family)
    other = ChainSpec(table, "mychain", None, ChainMode.MERGE, (), None, family=family)
    issues = validate_rules([spec, other], lambda t, f: set(existing or ())).issues
    assert len(issues) == 1, issues
    return issues[0].message


HINTS = [
    # an option of a loaded extension
    ("-p tcp --dprot 22 -j ACCEPT", 'unknown option "--dprot" (did you mean --dport?)'),
    ("-p tcp -m tcp --destination-prot 22 -j ACCEPT", "(did you mean --destination-port?)"),
    ("-m comment --coment x -j ACCEPT", "(did you mean --comment?)"),
    ("-j LOG --log-prefx x", "(did you mean --log-prefix?)"),
    # iptables' own options
    ("--in-interfce eth0 -j ACCEPT", "(did you mean --in-interface?)"),
    # an option of a match the rule does not load
    ("--dport 22 -j ACCEPT", "(--dport is an option of the tcp, udp, sctp or dccp matches: load one first, "
                             "e.g. -p tcp --dport ...)"),
    ("--physdev-is-bridged -j ACCEPT", "(--physdev-is-bridged is an option of the physdev match: load it first, "
                                       "e.g. -m physdev --physdev-is-bridged ...)"),
    ("-j ACCEPT --log-prefix x", "(--log-prefix is an option of the LOG target, not of this rule's)"),
    # targets, matches, protocols
    ("-j ACCPET", "no such target, and no chain of that name in the filter table (declare it under the table, "
                  "or check the spelling) (did you mean ACCEPT?)"),
    ("-j accept", "(did you mean ACCEPT?)"),
    ("-j MASQUERAD", "(did you mean MASQUERADE?)"),
    ("-j mychan", "(did you mean mychain?)"),
    ("-g mychan", "goto 'mychan' is not a chain of the filter table (declare it under the table) "
                  "(did you mean mychain?)"),
    ("-m conntrak --ctstate NEW -j ACCEPT", "Couldn't load match `conntrak':No such file or directory "
                                            "(did you mean conntrack?)"),
    ("-p tcpp -j ACCEPT", 'unknown protocol "tcpp" specified (did you mean tcp?)'),
    # enumerated values
    ("-j REJECT --reject-with icmp-host-prohibted", 'unknown reject type "icmp-host-prohibted" (did you mean '
     "icmp-host-prohibited? --reject-with takes: icmp-net-unreachable, net-unreach, icmp-host-unreachable, "
     "host-unreach, icmp-proto-unreachable, proto-unreach, icmp-port-unreachable, port-unreach, "
     "icmp-net-prohibited, net-prohib, icmp-host-prohibited, host-prohib, tcp-reset, tcp-rst, "
     "icmp-admin-prohibited, admin-prohib)"),
    ("-j REJECT --reject-w icmp-host-prohibted", "did you mean icmp-host-prohibited? --reject-with takes:"),
    ("-p icmp --icmp-type echo-requst -j ACCEPT", "(did you mean echo-request? --icmp-type takes: any, "
                                                  "echo-reply, pong, destination-unreachable,"),
    ("-m state --state NEW,ESTABLISHD -j ACCEPT", 'Bad state "ESTABLISHD" (did you mean ESTABLISHED? --state '
                                                  "takes: INVALID, ESTABLISHED, NEW, RELATED, UNTRACKED)"),
    ("-m conntrack --ctstate NEW,ESTABLISHD -j ACCEPT", "(did you mean ESTABLISHED? --ctstate takes: INVALID, "
                                                        "ESTABLISHED, NEW, RELATED, UNTRACKED, SNAT, DNAT)"),
    ("-m state --state BOGUS -j ACCEPT", 'Bad state "BOGUS" (--state takes: INVALID, ESTABLISHED'),
    ("-m conntrack --ctdir ORIG -j DROP", "(did you mean ORIGINAL? --ctdir takes: ORIGINAL, REPLY)"),
    ("-m pkttype --pkt-type brodcast -j DROP", "(did you mean broadcast? --pkt-type takes: unicast, broadcast, "
                                               "multicast, otherhost)"),
    ("-m addrtype --src-type LOCL -j DROP", "(did you mean LOCAL? --src-type takes: UNSPEC, UNICAST, LOCAL,"),
    ("-p tcp --tcp-flags SYN,ACK SYNN -j ACCEPT", "(did you mean SYN? --tcp-flags takes: SYN, ACK, FIN, RST,"),
    ("-j LOG --log-level warn", "(did you mean warning? --log-level takes: emerg, alert,"),
]


@pytest.mark.parametrize(("rule", "says"), HINTS, ids=[h[0] for h in HINTS])
def test_rule_errors_say_what_would_be_valid(rule: str, says: str) -> None:
    message = refused(rule)
    assert says in message, message


#: the same under firewall6: (ip6tables' extensions, reject types and ICMPv6 types)
HINTS6 = [
    ("-p tcp --dprot 22 -j ACCEPT", 'unknown option "--dprot" (did you mean --dport?)'),
    ("-p ipv6-icmp --icmpv6-tpye echo-request -j ACCEPT", "(did you mean --icmpv6-type?)"),
    ("-p icmpv6 --icmpv6-type echo-requst -j ACCEPT", "(did you mean echo-request? --icmpv6-type takes: "),
    ("-j REJECT --reject-with icmp6-adm-prohibted", "(did you mean icmp6-adm-prohibited? --reject-with takes: "
     "icmp6-no-route, no-route, icmp6-adm-prohibited, adm-prohibited,"),
    ("-j REJECT --reject-with icmp-host-prohibited", "--reject-with takes: icmp6-no-route"),
    ("-m hl --hl-eqq 255 -j ACCEPT", "(did you mean --hl-eq?)"),
    ("-m rt --rt-tpye 0 -j DROP", "(did you mean --rt-type?)"),
    ("-j ACCPET", "(did you mean ACCEPT?)"),
    ("-m conntrack --ctstate NEW,ESTABLISHD -j ACCEPT", "(did you mean ESTABLISHED? --ctstate takes: INVALID,"),
    ("--dport 22 -j ACCEPT", "(--dport is an option of the "),
]


@pytest.mark.parametrize(("rule", "says"), HINTS6, ids=[h[0] for h in HINTS6])
def test_firewall6_rule_errors_say_what_ip6tables_would_take(rule: str, says: str) -> None:
    message = refused(rule, family=6)
    assert says in message, message
    assert "icmp-host-prohibited," not in message  # IPv4's values are never offered for an IPv6 rule


def test_ipv4_hints_after_ipv6_ones() -> None:
    """The C module switches libxtables' family for a query as for a compile: an IPv6
    hint does not leave IPv4's next hint (or compile) with IPv6's extensions."""
    assert "icmp6-adm-prohibited" in refused("-j REJECT --reject-with icmp6-adm-prohibted", family=6)
    message = refused("-j REJECT --reject-with icmp-host-prohibted")
    assert "did you mean icmp-host-prohibited?" in message and "icmp6" not in message, message
    assert "(did you mean --icmp-type?)" in refused("-p icmp --icmp-tpye echo-request -j ACCEPT")


def test_nothing_close_adds_nothing() -> None:
    message = refused("-p tcp -m tcp --nosuch 1 -j ACCEPT")
    assert message.startswith('unknown option "--nosuch"') and "did you mean" not in message, message


def test_values_come_from_the_extensions_help_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """REJECT's and icmp's help texts list their values: the documented table is the fallback only."""
    reject = rulehints.values_from_help(rulehints.help_text("target", "REJECT"), "--reject-with")
    assert {"icmp-host-prohibited", "host-prohib", "tcp-reset", "icmp-admin-prohibited"} <= set(reject)
    icmp = rulehints.values_from_help(rulehints.help_text("match", "icmp"), "--icmp-type")
    assert {"echo-request", "ping", "pong", "host-unreachable", "timestamp-reply"} <= set(icmp)
    ctstate = rulehints.values_from_help(rulehints.help_text("match", "conntrack"), "--ctstate")
    assert ctstate == ("INVALID", "ESTABLISHED", "NEW", "RELATED", "UNTRACKED", "SNAT", "DNAT")
    monkeypatch.setattr(rulehints, "ENUMERATED", {(e, o): () for e, o in rulehints.ENUMERATED})
    rulehints.options.cache_clear()
    assert "--reject-with takes: icmp-net-unreachable" in refused("-j REJECT --reject-with icmp-host-prohibted")


def test_the_documented_values_agree_with_the_installed_extensions() -> None:
    """Where the help text lists values, the fallback table has the same ones (the table
    is what a host whose extensions print nothing recognisable gets)."""
    for (ext, option), values in rulehints.ENUMERATED.items():
        kind = "target" if ext.isupper() else "match"
        from_help = rulehints.values_from_help(rulehints.help_text(kind, ext), option)
        if from_help:
            assert set(from_help) == set(values), (ext, option)


def test_installed_extensions() -> None:
    targets, matches = rulehints.installed("target"), rulehints.installed("match")
    assert {"LOG", "REJECT", "MASQUERADE", "DNAT"} <= set(targets) and "standard" not in targets
    assert {"tcp", "conntrack", "state", "comment", "icmp"} <= set(matches) and "icmp6" not in matches
    assert {"tcp", "icmp6", "conntrack"} <= set(rulehints.installed("match", 6))
    assert "icmp" not in rulehints.installed("match", 6)


def test_ip6tables_values_differ() -> None:
    assert "icmp6-adm-prohibited" in rulehints.enumerated_table(6)[("REJECT", "--reject-with")]
    assert "icmp-host-prohibited" not in rulehints.enumerated_table(6)[("REJECT", "--reject-with")]
    assert rulehints.enumerated_table(6)[("state", "--state")] == rulehints.ENUMERATED[("state", "--state")]


def test_the_extension_query_keeps_the_modules_guarantees() -> None:
    """It never exits (bad names are errors), answers None for what is not installed, and
    leaves libxtables' per-rule state as it found it (the next compile is unchanged)."""
    xt = libxtables()
    before = xt.compile(["-p", "tcp", "--dport", "22", "-j", "REJECT"], "filter", "INPUT", ())
    assert xt.extension("match", "tcp", False) == ["--source-port", "--sport", "--destination-port", "--dport",
                                                   "--syn", "--tcp-flags", "--tcp-option"]
    assert "--reject-with" in xt.extension("target", "REJECT", False)
    assert xt.extension("target", "ACCEPT", False) == []
    assert xt.extension("match", "nosuchmatch", False) is None
    assert xt.extension("target", "NOSUCH", True) is None
    with pytest.raises(xt.CompileError, match=re.escape('match name "../evil" contains "."')):
        xt.extension("match", "../evil", False)
    with pytest.raises(ValueError, match="kind must be"):
        xt.extension("chain", "INPUT", False)
    for _ in range(3):
        assert "tcp match options" in xt.extension("match", "tcp", True)
    assert xt.compile(["-p", "tcp", "--dport", "22", "-j", "REJECT"], "filter", "INPUT", ()) == before
    # family 6: ip6tables' extensions (and the family switched back for the next IPv4 compile)
    assert "--icmpv6-type" in xt.extension("match", "icmp6", False, 6)
    assert xt.extension("match", "icmp", False, 6) is None
    assert "icmp6-adm-prohibited" in xt.extension("target", "REJECT", True, 6)
    assert xt.extension("match", "icmp6", False, 4) is None
    with pytest.raises(ValueError, match="family must be 4 or 6"):
        xt.extension("match", "tcp", False, 5)
    assert xt.compile(["-p", "tcp", "--dport", "22", "-j", "REJECT"], "filter", "INPUT", ()) == before


def test_option_of_value() -> None:
    words = parse_rule("-p tcp --tcp-flags SYN,ACK SYNN -j ACCEPT").words
    assert rulehints.option_of_value("SYNN", words) == ("--tcp-flags", "SYNN")
    words = parse_rule("-m state --state NEW,ESTABLISHD -j ACCEPT").words
    assert rulehints.option_of_value("ESTABLISHD", words) == ("--state", "NEW,ESTABLISHD")
    assert rulehints.option_of_value("nothing", words) is None


def test_hints_are_bounded_per_check() -> None:
    """Thousands of broken rules: the first HINT_BUDGET get a hint, the rest iptables' message
    alone (the check's work stays proportional to the rules, not to their hints)."""
    n = rulehints.HINT_BUDGET + 50
    rules = tuple(parse_rule(f"-p tcp --dprot {i} -j ACCEPT") for i in range(n))
    issues = validate_rules([ChainSpec("filter", "INPUT", None, ChainMode.MERGE, rules, None)],
                            lambda t, f: set()).issues
    assert len(issues) == n
    hinted = [i for i in issues if "(did you mean --dport?)" in i.message]
    assert len(hinted) == rulehints.HINT_BUDGET
    assert issues[0] in hinted
    # the next check has its budget again
    assert "did you mean ACCEPT?" in refused("-j ACCPET")
