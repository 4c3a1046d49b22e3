# SPDX-License-Identifier: MIT
"""YAML syntax errors say the line and column where the problem starts (libyaml often
notices it lines later) and the usual cause in a state file. Pure: files from memory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vnetd.desired.loader import SourceFile, load_partial

RULES = "firewall:\n  filter:\n    INPUT:\n      rules:\n"

CASES = [
    # (id, text, line of the issue (where libyaml stopped), where the problem starts, the hint)
    ("rule-with-double-quotes-in-double-quotes", RULES + '      - "-m comment --comment "ssh" -j ACCEPT"\n', 5,
     "line 5, column 9", "write a rule that contains \" in single quotes, e.g. "
     "- '-m comment --comment \"ssh\" -j ACCEPT'"),
    ("rule-starting-with-a-quoted-word", RULES + '      - "a b" -j ACCEPT\n', 5, "line 5, column 9",
     "a value that starts with \" ends at the next \""),
    ("rule-with-single-quotes-in-single-quotes", RULES + "      - '-m comment --comment 'ssh' -j ACCEPT'\n", 5,
     "line 5, column 9", "e.g. - \"-m comment --comment 'ssh' -j ACCEPT\""),
    ("quoted-rule-in-a-flow-list", RULES.replace("rules:\n", 'rules: ["-m comment --comment "ssh" -j ACCEPT"]\n'),
     4, "line 4, column 15", "write a rule that contains \" in single quotes"),
    ("colon-space-inside-an-unquoted-rule", RULES + '      - -j LOG --log-prefix "fw: "\n      - -j ACCEPT\n', 7,
     "line 5, column 9", "': ' inside an unquoted value starts a mapping: quote the whole value, e.g. "
     "- '-j LOG --log-prefix \"fw: \"'"),
    ("colon-space-inside-a-value", "interfaces:\n- name: eth1\n  description: uplink: to switch\n", 3,
     "line 3, column 16", "e.g. description: 'uplink: to switch'"),
    ("tab-indentation", "interfaces:\n\t- name: eth1\n", 2, "line 2, column 1",
     "YAML does not allow tabs for indentation: indent with spaces"),
    ("tab-inside-indentation", "interfaces:\n- name: eth1\n  \ttype: ethernet\n", 3, "line 3, column 3",
     "YAML does not allow tabs for indentation"),
    ("key-indented-less", "interfaces:\n- name: eth1\n type: ethernet\n", 3, "line 3, column 2",
     "check the indentation"),
    ("key-indented-more", "interfaces:\n- name: eth1\n    type: ethernet\n", 3, "line 3, column 5",
     "this line is indented more than the line above"),
    ("item-key-out-of-line", "interfaces:\n  - name: eth1\n  type: ethernet\n", 3, "line 3, column 3",
     "check the indentation"),
    ("no-space-after-colon", "interfaces:\n- name:eth1\n  type: ethernet\n", 3, "line 2, column 8",
     "a key needs a space after its ':'"),
    ("unclosed-quote", "interfaces:\n- name: 'eth1\n  type: ethernet\n", 4, "line 2, column 9",
     "a quote is not closed"),
    ("unclosed-bracket", "interfaces:\n- name: eth1\n  type: [ethernet\n", 4, "line 3, column 9",
     "a '[' or '{' is not closed"),
    ("value-starting-with-at", "interfaces:\n- name: @eth1\n", 2, "line 2, column 9", "a value cannot start with @"),
    ("bare-word-line", "interfaces:\n- name: a\nfoo\n", 4, "line 3, column 1",
     "this line is neither 'key: value' nor a list item"),
    ("star-alias", "sysctl:\n  net.ipv4.ip_forward: *1\n", 2, "line 2, column 24", "'*' starts an alias"),
    ("second-document", "interfaces: []\n---\nroutes: {}\n", 2, "line 2, column 1",
     "'---' starts a second YAML document"),
]


@pytest.mark.parametrize(("text", "line", "start", "hint"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_syntax_error_points_where_the_problem_starts(text: str, line: int, start: str, hint: str) -> None:
    _state, issues = load_partial([SourceFile("/virtual/10-a.yaml", text)])
    assert len(issues) == 1, issues
    issue = issues[0]
    assert issue.line == line, str(issue)
    assert issue.message.startswith(f"YAML syntax error at {start}: "), str(issue)
    assert hint in issue.message, str(issue)


def test_a_colon_inside_an_unquoted_rule_that_parses_as_a_mapping() -> None:
    _state, issues = load_partial([SourceFile("/virtual/10-a.yaml", RULES + "      - -j LOG --log-prefix fw: x\n")])
    (issue,) = issues
    assert issue.line == 5 and issue.path == "firewall.filter.INPUT.rules[0]"
    assert "got a mapping (': ' inside an unquoted rule makes YAML read it as 'key: value': quote the rule" \
        in issue.message


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=" \t\n-:'\"[]{},#&*!|>%@`abc012", max_size=60))
def test_any_text_gives_issues_not_exceptions(text: str) -> None:
    load_partial([SourceFile("/virtual/10-a.yaml", text)])
