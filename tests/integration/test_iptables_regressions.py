# SPDX-License-Identifier: MIT
"""Issue 10, example by example: each bullet of "Seen" is a test that the wrong
behaviour it describes does not happen. A rule is judged by iptables-legacy and by
vnetd (``check`` / ``apply`` / ``plan``, in-process as the CLI runs them) in the
session's conformance namespaces; the NOTRACK and YAML tests also run the real CLI.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.conformance import AGREE, CorpusRule, Judgement, Lab
from tests.conformance_worker import RULE_LINE, STATE_FILE
from tests.support import Netns, StateDir, vnetd
from tests.traffic import eventually, ping

pytestmark = pytest.mark.kernel


def judge(lab: Lab, line: str) -> Judgement:
    table, chain, rule = line.split(None, 2)
    return lab.judge(CorpusRule(table, chain, rule))


def refused_by_both(j: Judgement) -> None:
    """iptables refuses the rule, and so does ``vnetd check`` (with FILE:LINE), before any apply."""
    assert not j.iptables.accepted, f"iptables accepts {j.rule}: the example is wrong"
    assert not j.vnetd.crash, f"vnetd crashed on {j.rule}: {j.vnetd.crash}"
    assert not j.vnetd.check_ok, (
        f"vnetd check accepts {j.rule}, which iptables refuses ({j.iptables.error.splitlines()[0]}); "
        f"apply then installed {list(j.vnetd.lines) or 'nothing'}")
    assert f"{STATE_FILE}:{RULE_LINE}" in j.vnetd.check, j.vnetd.check


def installed_as_iptables_does(j: Judgement) -> None:
    """iptables accepts the rule; vnetd installs the same line, converges, and plans nothing more."""
    assert j.iptables.accepted, f"iptables refuses {j.rule}: {j.iptables.error}"
    assert not j.vnetd.crash, f"vnetd crashed on {j.rule}: {j.vnetd.crash}"
    assert j.vnetd.check_ok, f"vnetd check refuses {j.rule}: {j.vnetd.message()}"
    assert j.vnetd.lines == j.iptables.lines, \
        f"vnetd installed {j.vnetd.lines}, iptables {j.iptables.lines} ({j.vnetd.message() or 'converged'})"
    assert j.vnetd.apply_ok and j.vnetd.plan_empty, f"vnetd does not converge on {j.rule}: {j.vnetd.message()}"
    assert j.verdict == AGREE


# --------------------------------------------------------------------------- bullet 1


def test_connlimit_without_options_is_refused_like_iptables(xt_lab: Lab) -> None:
    """Not installed as ``--connlimit-above 0``, a match that hits every connection."""
    refused_by_both(judge(xt_lab, "filter INPUT -m connlimit -j ACCEPT"))


# --------------------------------------------------------------------------- bullet 2

FORGOTTEN_OPTIONS = {
    "mac": "filter INPUT -m mac -j ACCEPT",
    "DNAT": "nat PREROUTING -p tcp --dport 80 -j DNAT",
    "statistic": "filter INPUT -m statistic -j ACCEPT",
    "MARK": "mangle PREROUTING -p tcp -j MARK",
    "CONNMARK": "mangle PREROUTING -p tcp -j CONNMARK",
    "TOS": "mangle PREROUTING -p tcp -j TOS",
}


@pytest.mark.parametrize("line", FORGOTTEN_OPTIONS.values(), ids=FORGOTTEN_OPTIONS.keys())
def test_extension_with_its_mandatory_options_forgotten_is_refused_like_iptables(xt_lab: Lab, line: str) -> None:
    """Not ``--mac-source 00:00:00:00:00:00``, probability 0, a DNAT to nowhere, a zero mark."""
    refused_by_both(judge(xt_lab, line))


# --------------------------------------------------------------------------- bullet 3

CONFLICTS = {
    "DNAT twice": "nat PREROUTING -j DNAT --to-destination 192.0.2.1 --to-destination 192.0.2.2",
    "TTL dec and inc": "mangle PREROUTING -p tcp -j TTL --ttl-dec 1 --ttl-inc 1",
    "DSCP value and class": "mangle PREROUTING -p tcp -j DSCP --set-dscp 0x3f --set-dscp-class CS0",
}


@pytest.mark.parametrize("line", CONFLICTS.values(), ids=CONFLICTS.keys())
def test_conflicting_options_are_refused_not_resolved_to_the_last_one(xt_lab: Lab, line: str) -> None:
    refused_by_both(judge(xt_lab, line))


# --------------------------------------------------------------------------- bullet 4

NOTRACK_STATE = """\
firewall:
  raw:
    PREROUTING:
      rules:
      - -j NOTRACK
"""


def test_notrack_disables_conntrack(xt_lab: Lab, make_netns: Callable[..., Netns], state_dir: StateDir) -> None:
    """``-t raw -j NOTRACK`` is the NOTRACK iptables installs (not a bare ``-j CT``, which
    changes nothing), and packets really go untracked."""
    installed_as_iptables_does(judge(xt_lab, "raw PREROUTING -j NOTRACK"))
    client, server = make_netns("nt-client"), make_netns("nt-server")
    client.veth("eth0", "eth0", server)
    for ns, address in ((client, "192.0.2.1/24"), (server, "192.0.2.2/24")):
        ns.ip("addr", "add", address, "dev", "eth0")
        ns.ip("link", "set", "eth0", "up")
    for state in ("UNTRACKED", "NEW"):  # foreign counting rules, left alone by vnetd
        server.exec("iptables-legacy", "-w", "-A", "INPUT", "-p", "icmp", "-m", "conntrack", "--ctstate", state)
    state_dir.write("10-notrack.yaml", NOTRACK_STATE)
    applied = vnetd("apply", netns=server, state_dir=state_dir)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert eventually(lambda: ping(client, "192.0.2.2"))
    counted = {}
    for line in server.exec("iptables-legacy-save", "-c", "-t", "filter").stdout.splitlines():
        found = re.match(r"\[(\d+):\d+\] -A INPUT -p icmp -m conntrack --ctstate (\w+)$", line)
        if found:
            counted[found.group(2)] = int(found.group(1))
    assert counted.get("UNTRACKED", 0) >= 1 and counted.get("NEW", 0) == 0, \
        f"echo requests by conntrack state: {counted} (conntrack was not disabled)"


# --------------------------------------------------------------------------- bullet 5


def test_nflog_size_is_kept_not_turned_into_the_deprecated_nflog_range(xt_lab: Lab) -> None:
    j = judge(xt_lab, "filter OUTPUT -j NFLOG --nflog-size 1")
    assert not any("--nflog-range" in line for line in j.vnetd.lines), j.vnetd.lines
    installed_as_iptables_does(j)


# --------------------------------------------------------------------------- bullet 6

POLICIES = {
    "second element after --next": "filter INPUT -m policy --dir in --pol ipsec --strict --reqid 1 --next --reqid 2 -j ACCEPT",
    "--proto ipcomp": "filter FORWARD -m policy --dir in --pol ipsec --proto ipcomp -j ACCEPT",
}


@pytest.mark.parametrize("line", POLICIES.values(), ids=POLICIES.keys())
def test_policy_match_keeps_every_element_and_its_protocol(xt_lab: Lab, line: str) -> None:
    installed_as_iptables_does(judge(xt_lab, line))


# --------------------------------------------------------------------------- bullet 7


def test_ssh_bruteforce_hashlimit_converges(xt_lab: Lab) -> None:
    """The classic rule applies once and a second plan is empty (no "still drifted",
    no daemon rewriting it forever)."""
    installed_as_iptables_does(judge(
        xt_lab, "filter INPUT -p tcp --dport 22 -m hashlimit --hashlimit-above 1/sec --hashlimit-burst 5 "
                "--hashlimit-name ssh -j DROP"))


# --------------------------------------------------------------------------- bullet 8

KERNEL_REFUSES = {
    "TCPMSS without option": "mangle FORWARD -j TCPMSS",
    "tcpmss without -p tcp": "filter INPUT -m tcpmss --mss 42 -j ACCEPT",
    "owner in mangle INPUT": "mangle INPUT -m owner --uid-owner root -j ACCEPT",
    "CHECKSUM without option": "mangle POSTROUTING -p udp -j CHECKSUM",
    "addrtype with both limit-iface": "filter INPUT -m addrtype --src-type LOCAL --limit-iface-in --limit-iface-out -j ACCEPT",
    "TEE without gateway": "mangle PREROUTING -j TEE",
}


@pytest.mark.parametrize("line", KERNEL_REFUSES.values(), ids=KERNEL_REFUSES.keys())
def test_rules_iptables_refuses_fail_check_not_apply(xt_lab: Lab, line: str) -> None:
    """``check`` = ``apply``: refused in the same round as the schema errors, never first at apply."""
    refused_by_both(judge(xt_lab, line))


# --------------------------------------------------------------------------- bullet 9

IPTABLES_ACCEPTS = {
    "dccp ports": "filter INPUT -p dccp -m dccp --dport 5004 -j ACCEPT",
    "dccp types": "filter INPUT -p dccp -m dccp --sport 22 --dccp-types REQUEST -j ACCEPT",
    "dccp option": "filter INPUT -p dccp -m dccp --dccp-option 255 -j ACCEPT",
    "dccp bare": "filter INPUT -p dccp -m dccp -j ACCEPT",
    "ipcomp spi": "filter INPUT -p ipcomp -m ipcomp --ipcompspi 18 -j DROP",
    "udplite multiport": "filter INPUT -p udplite -m multiport --dports 1,2 -j ACCEPT",
    "dccp multiport": "filter INPUT -p dccp -m multiport --sports 1,2 -j ACCEPT",
    "non-contiguous netmask": "filter INPUT -s 10.11.12.13/255.0.255.0 -j DROP",
    "64-character nflog prefix": "filter INPUT -j NFLOG --nflog-prefix "
                                 "0123456789012345678901234567890123456789012345678901234567890123",
    "rateest interval 250.0ms": "mangle PREROUTING -j RATEEST --rateest-name issue10 --rateest-interval 250.0ms "
                                "--rateest-ewmalog 1s",
    "hashlimit rate-match": "filter INPUT -m hashlimit --hashlimit-upto 10/sec --hashlimit-name issue10 "
                            "--hashlimit-rate-match -j ACCEPT",
}


@pytest.mark.parametrize("line", IPTABLES_ACCEPTS.values(), ids=IPTABLES_ACCEPTS.keys())
def test_rules_iptables_accepts_are_installed_as_iptables_installs_them(xt_lab: Lab, line: str) -> None:
    installed_as_iptables_does(judge(xt_lab, line))


# --------------------------------------------------------------------------- bullet 10 (the corpus replay)
# test_iptables_conformance.py::test_corpus_replay_has_none_of_the_four_disagreements

# --------------------------------------------------------------------------- bullet 11

TAGGED_RULES = {
    "leading !": "- ! -s 192.0.2.0/24 -j DROP",
    "!!str": "- !!str -s 192.0.2.0/24 -j DROP",
    "!foo": "- !foo -s 192.0.2.0/24 -j DROP",
}


@pytest.mark.parametrize("item", TAGGED_RULES.values(), ids=TAGGED_RULES.keys())
def test_yaml_leading_bang_is_refused(netns: Netns, state_dir: StateDir, item: str) -> None:
    """YAML reads ``- ! -s ...`` as a tag and drops the '!': check must refuse the rule
    with FILE:LINE and "quote the rule: YAML reads a leading '!' as a tag", and apply must
    not install it, inverted or not. Any other explicit tag is refused too, naming the tag."""
    path = state_dir.write("20-bang.yaml", f"firewall:\n  filter:\n    INPUT:\n      rules:\n      {item}\n")
    checked = vnetd("check", netns=netns, state_dir=state_dir)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert f"{path}:5" in checked.stderr, checked.stderr
    if item.startswith("- ! "):
        assert "quote the rule: YAML reads a leading '!' as a tag" in checked.stderr, checked.stderr
    else:
        assert "tag" in checked.stderr and "quote" in checked.stderr, checked.stderr
    applied = vnetd("apply", netns=netns, state_dir=state_dir)
    assert applied.returncode == 1
    assert "192.0.2.0/24" not in netns.iptables_save("filter")
