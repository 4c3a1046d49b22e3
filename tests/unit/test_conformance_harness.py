# SPDX-License-Identifier: MIT
"""The pure parts of the iptables conformance harness (issue 10): how a rule line is
split, how vnetd's tag is taken out of a saved line, how a verdict is classified, how
the grammar cuts a rule, how restored rules are paired with their saved lines. A
wrong harness would hide disagreements or invent them."""

from __future__ import annotations

import string
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.conformance import (
    AGREE,
    APPLY_FAILS,
    CRASHED,
    DELIBERATE_REFUSAL,
    DIFFERENT,
    INSTALLED_REFUSED,
    IPV6_PART,
    REFUSED_ACCEPTED,
    Judgement,
    Outcome,
    classify,
    extensions_of,
    parse_rule_line,
    write_report,
)
from tests.conformance_worker import state_file, strip_tags
from tests.iptables_oracle import (
    TABLES,
    TOOLS,
    Verdict,
    jump_chains,
    restore_split,
    save_lines,
    target_extensions,
    touched_tables,
)
from tests.rule_grammar import Block, quote_word, render, split_rule
from tests.whole_table import pair_canonical


def test_rules_are_split_as_iptables_restore_splits_them() -> None:
    assert restore_split('-m comment --comment "two words" -j ACCEPT') == \
        ["-m", "comment", "--comment", "two words", "-j", "ACCEPT"]
    assert restore_split("--comment 'two words'") == ["--comment", "'two", "words'"]  # single quotes are literal
    assert restore_split(r'--comment "a \"b\" c"') == ["--comment", 'a "b" c']
    assert restore_split(r'--comment "back\\slash"') == ["--comment", "back\\slash"]
    assert restore_split('--comment "" -j ACCEPT') == ["--comment", "", "-j", "ACCEPT"]
    assert restore_split('--comment "open -j ACCEPT') == ["--comment", "open -j ACCEPT"]
    assert restore_split('x"y z"w') == ["xy z", "w"]  # a closing quote ends the word
    assert restore_split("  -j\tACCEPT  ") == ["-j", "ACCEPT"]


@given(st.lists(st.text(alphabet=string.printable.replace("\n", "").replace("\r", "")
                        .replace("\x0b", "").replace("\x0c", ""), max_size=12), max_size=6))
def test_rendered_words_split_back_to_the_same_words(words: list[str]) -> None:
    assert restore_split(render(words)) == words


def test_words_are_quoted_only_when_needed() -> None:
    assert quote_word("ACCEPT") == "ACCEPT"
    assert quote_word("x: ") == '"x: "'
    assert quote_word("") == '""'
    assert quote_word("it's") == '"it\'s"'


def test_vnetd_tag_and_owner_mark_are_taken_out_of_saved_lines() -> None:
    assert strip_tags(('-m comment --comment "vnetd:0123abcd" -j ACCEPT',)) == ("-j ACCEPT",)
    assert strip_tags(('-p tcp -m tcp --dport 22 -m comment --comment "vnetd:0123abcd" -j ACCEPT',)) == \
        ("-p tcp -m tcp --dport 22 -j ACCEPT",)
    assert strip_tags(("-m comment --comment vnetd:0123abcd",)) == ("",)
    assert strip_tags(('-m comment --comment "vnetd:owned-chain"', "-j DROP")) == ("-j DROP",)
    # a user's own comment stays, also one that merely starts alike
    assert strip_tags(('-m comment --comment "vnetdish: x" -j ACCEPT',)) == ('-m comment --comment "vnetdish: x" -j ACCEPT',)


def test_saved_lines_of_one_chain() -> None:
    save = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n-A INPUTX -j DROP\n-A INPUT -s 192.0.2.1/32 -j DROP\nCOMMIT\n"
    assert save_lines(save, "INPUT") == ("-j ACCEPT", "-s 192.0.2.1/32 -j DROP")


def test_jumps_to_user_chains_are_recognised() -> None:
    assert jump_chains(restore_split("-p tcp -j f2b-sshd")) == ["f2b-sshd"]
    assert jump_chains(restore_split("-g LIBVIRT_INP")) == ["LIBVIRT_INP"]
    assert jump_chains(restore_split("-j ACCEPT")) == []
    assert jump_chains(restore_split("-j DNAT --to-destination 192.0.2.1")) == []
    assert jump_chains(restore_split("-j nosuch-chain")) == []


def test_a_rule_with_its_own_table_resets_every_table() -> None:
    assert touched_tables("filter", ["-j", "ACCEPT"]) == ("filter",)
    assert touched_tables("nat", ["-j", "DNAT", "--to", "192.0.2.1"]) == ("nat",)
    assert touched_tables("filter", ["-t", "nat", "-j", "ACCEPT"]) == TABLES
    assert touched_tables("filter", ["--table", "nat"]) == TABLES


def test_the_state_file_holds_the_rule_on_its_line() -> None:
    text = state_file("filter", "INPUT", '-m comment --comment "x y"')
    assert text.splitlines()[4] == '      - "-m comment --comment \\"x y\\""'


ACCEPTED = Verdict(True, "", ("-j ACCEPT",))
REFUSED = Verdict(False, "iptables v1.8.9 (legacy): nope", ())


def test_outcomes_are_classified() -> None:
    good = Outcome(True, "", True, "", ("-j ACCEPT",), True, "")
    assert classify(ACCEPTED, good) == AGREE
    assert classify(REFUSED, Outcome(False, "error: x")) == AGREE
    assert classify(ACCEPTED, Outcome(True, "", True, "", ("-j DROP",), True, "")) == DIFFERENT
    assert classify(ACCEPTED, Outcome(True, "", False, "", ("-j DROP",), False, "")) == DIFFERENT
    assert classify(REFUSED, Outcome(True, "", True, "", ("-j ACCEPT",), True, "")) == INSTALLED_REFUSED
    assert classify(REFUSED, Outcome(True, "", False, "failed", (), False, "")) == APPLY_FAILS
    assert classify(ACCEPTED, Outcome(True, "", True, "", ("-j ACCEPT",), False, "changes")) == APPLY_FAILS
    assert classify(ACCEPTED, Outcome(True, "", False, "failed", (), None, "")) == APPLY_FAILS
    assert classify(ACCEPTED, Outcome(False, "error: x")) == REFUSED_ACCEPTED
    assert classify(ACCEPTED, Outcome(False, "error: x"), deliberate=True) == DELIBERATE_REFUSAL
    assert classify(REFUSED, Outcome(False, "", crash="vnetd check died of SIGSEGV")) == CRASHED
    assert classify(ACCEPTED, Outcome(False, "", crash="vnetd apply exited with status 2")) == CRASHED


def test_corpus_lines_keep_their_quotes() -> None:
    rule = parse_rule_line('filter  INPUT   -m comment --comment "a  b" -j ACCEPT')
    assert rule.key == ("filter", "INPUT", '-m comment --comment "a  b" -j ACCEPT')


def test_extensions_of_a_rule() -> None:
    assert extensions_of("-p tcp --dport 22 -j ACCEPT") == ["standard", "tcp"]
    assert extensions_of("-p tcp -m tcp --dport 22 -j ACCEPT") == ["tcp", "standard"]
    assert extensions_of("-m state --state NEW -j LOG") == ["state", "LOG"]
    assert extensions_of("-j f2b-sshd") == ["standard"]
    assert extensions_of("-m comment --comment x") == ["comment", "(no target)"]


def test_the_grammar_cuts_a_rule_into_header_matches_and_target() -> None:
    header, blocks, target = split_rule(restore_split(
        '! -s 192.0.2.0/24 -p tcp --dport 22 -m comment --comment "x y" -j LOG --log-prefix "ssh: "'))
    assert header == [("!", "-s", "192.0.2.0/24"), ("-p", "tcp")]
    assert blocks == [Block("-m", "tcp", (("--dport", "22"),)), Block("-m", "comment", (("--comment", "x y"),))]
    assert target == Block("-j", "LOG", (("--log-prefix", "ssh: "),))
    assert split_rule(["-c", "1", "2", "-j", "ACCEPT"])[0] is None  # not modelled: left to the corpus


def test_restored_rules_are_paired_with_their_saved_lines() -> None:
    written = "*filter\n-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT\n-A INPUT -p icmp -j ACCEPT\nCOMMIT\n"
    saved = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\n" \
            "-A INPUT -p icmp -j ACCEPT\nCOMMIT\n"
    assert pair_canonical(written, saved) == {
        ("filter", "INPUT", "-m state --state ESTABLISHED,RELATED -j ACCEPT"):
            "-m state --state RELATED,ESTABLISHED -j ACCEPT",
        ("filter", "INPUT", "-p icmp -j ACCEPT"): "-p icmp -j ACCEPT",
    }


# --------------------------------------------------------------------------- the IPv6 family (issue 14)


def test_each_family_has_its_tools_and_extensions() -> None:
    assert (TOOLS[6].command, TOOLS[6].save, TOOLS[6].restore) == (
        "ip6tables-legacy", "ip6tables-legacy-save", "ip6tables-legacy-restore")
    v4, v6 = target_extensions(4), target_extensions(6)
    assert "TTL" in v4 and "TTL" not in v6 and "HL" in v6 and "HL" not in v4
    assert "LOG" in v4 and "LOG" in v6
    # a name that is an extension in one family is a chain in the other
    assert jump_chains(restore_split("-j HL --hl-set 5"), 6) == []
    assert jump_chains(restore_split("-j HL"), 4) == ["HL"]


def test_the_state_file_of_the_ipv6_family() -> None:
    assert state_file("filter", "INPUT", "-j ACCEPT", "firewall6").startswith("firewall6:\n")


def test_extensions_of_an_ipv6_rule() -> None:
    assert extensions_of("-p ipv6-icmp --icmpv6-type 128 -j ACCEPT", 6) == ["standard", "icmp6"]
    assert extensions_of("-p mh --mh-type 5 -j ACCEPT", 6) == ["standard", "mh"]
    assert extensions_of("-j HL --hl-set 5", 6) == ["HL"]


def test_each_family_writes_its_own_part_of_the_report(tmp_path: Path) -> None:
    doc = tmp_path / "CONFORMANCE.md"
    rule = parse_rule_line("filter INPUT -j ACCEPT")
    good = Outcome(True, "", True, "", ("-j ACCEPT",), True, "")
    judged = [Judgement(rule, ACCEPTED, good, AGREE)]
    write_report(judged, {}, doc, family=6)
    assert "(not run yet)" in doc.read_text() and "ip6tables-legacy (firewall6:)" in doc.read_text()
    write_report(judged, {}, doc, family=4)
    first = doc.read_text()
    assert first.startswith("# Conformance with iptables-legacy\n") and first.count(IPV6_PART) == 1
    assert "ip6tables-legacy (firewall6:)" in first.split(IPV6_PART)[1]
    write_report(judged, {}, doc, family=6)
    assert doc.read_text().split(IPV6_PART)[0].strip() == first.split(IPV6_PART)[0].strip()
    write_report(judged, {}, doc, family=4)
    assert doc.read_text() == first
