# SPDX-License-Identifier: MIT
"""Issue 10, whole tables: a realistic 2,000-rule ruleset in filter, nat, mangle and
raw, with user chains and jumps, applied by ``vnetd apply`` (one state file, every
chain exclusive) in one namespace and by ``iptables-legacy-restore`` in another,
gives the same ``iptables-legacy-save`` output, vnetd's tags and counters aside.
The real-tool rulesets it is built from load with iptables-legacy-restore as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.conformance import RULESETS, Judgement, load_deliberate
from tests.conformance_worker import OWNER_MARK, strip_tags
from tests.iptables_oracle import TABLES, prepare_namespace
from tests.support import Netns, StateDir, vnetd
from tests.whole_table import build, pair_canonical

pytestmark = pytest.mark.kernel

RULES = 2000
TOOLS = ("libvirt", "docker", "fail2ban", "ufw", "firewalld-direct", "gateway")


def normalized_save(ns: Netns, table: str) -> list[str]:
    """``iptables-legacy-save -t TABLE`` without comments, counters, vnetd's owner marks and tags."""
    lines = []
    for line in ns.exec("iptables-legacy-save", "-t", table).stdout.splitlines():
        if line.startswith("#") or OWNER_MARK in line:
            continue
        line = re.sub(r"\[\d+:\d+\]$", "[0:0]", line)
        if line.startswith("-A "):
            _, chain, rule = line.split(" ", 2)
            line = f"-A {chain} {strip_tags((rule,))[0]}"
        lines.append(line)
    return lines


def canonical_forms(ns: Netns, text: str) -> dict[tuple[str, str, str], str]:
    """Each rule of an iptables-save text -> the line iptables-save prints for it once restored."""
    ns.exec("iptables-legacy-restore", "-w", input=text)
    return pair_canonical(text, ns.exec("iptables-legacy-save").stdout)


@pytest.mark.parametrize("tool", TOOLS)
def test_real_tool_ruleset_loads_with_iptables_restore(netns: Netns, tool: str) -> None:
    result = netns.exec("iptables-legacy-restore", "-w", input=(RULESETS / f"{tool}.rules").read_text(), check=False)
    assert result.returncode == 0, result.stderr


def test_two_thousand_rules_vnetd_and_iptables_restore_agree(
        corpus_verdicts: tuple[list[Judgement], float], make_netns: Callable[..., Netns],
        state_dir: StateDir) -> None:
    deliberate = load_deliberate()
    accepted = [(*j.rule.key, j.iptables.lines[0]) for j in corpus_verdicts[0]
                if j.iptables.accepted and len(j.iptables.lines) == 1 and j.rule.key not in deliberate]
    reference, target = make_netns("wt-ref"), make_netns("wt-vnetd")
    for ns in (reference, target):
        prepare_namespace(ns.name)  # the ipsets, nfacct objects and estimators corpus rules name
    scratch = make_netns("wt-canon")
    texts = [(RULESETS / f"{tool}.rules").read_text() for tool in TOOLS]
    rulesets = [(text, canonical_forms(scratch, text)) for text in texts]
    ruleset = build(rulesets, accepted, RULES)
    assert ruleset.size == RULES
    assert set(ruleset.tables) == set(TABLES)

    restored = reference.exec("iptables-legacy-restore", "-w", "--noflush", input=ruleset.restore_text(), check=False)
    assert restored.returncode == 0, f"iptables-legacy-restore refuses the generated ruleset: {restored.stderr}"

    state_dir.write("50-ruleset.yaml", ruleset.state_text())
    applied = vnetd("apply", netns=target, state_dir=state_dir, timeout=300)
    assert applied.returncode == 0, (applied.stdout + applied.stderr)[-4000:]
    planned = vnetd("plan", netns=target, state_dir=state_dir, timeout=300)
    assert planned.returncode == 0, (planned.stdout + planned.stderr)[-4000:]

    for table in TABLES:
        want, have = normalized_save(reference, table), normalized_save(target, table)
        missing = [line for line in want if line not in have]
        extra = [line for line in have if line not in want]
        assert have == want, (f"table {table}: {len(missing)} lines only iptables-restore has, {len(extra)} only vnetd "
                              f"has; first of each: {missing[:5]} / {extra[:5]}")
