# SPDX-License-Identifier: MIT
"""Issue 13 item 4: shadowing is never silent.

netfilter runs every base chain hooked on a hook, whoever made it: an ACCEPT of
vnetd's in the legacy ``filter FORWARD`` lets nothing through while another
table's chain on the same hook drops. The shadowing chains are made here by the
tools that make them on real hosts (``iptables-nft -P FORWARD DROP`` as Docker
does, ``nft`` as firewalld does, ``iptables-legacy`` in another table,
``ebtables-nft``); ``check``, ``plan``, ``apply``, the daemon's log and
``vnetd status`` must name the chain, and say nothing when nothing drops. The
pure decision is tests/unit/test_shadowing.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.daemon_support import DaemonProcess
from tests.support import Netns, NetnsFactory, StateDir, vnetd
from tests.traffic import eventually, ping, reachable

pytestmark = pytest.mark.kernel

FIREWALL = """\
firewall:
  filter:
    FORWARD:
      rules:
      - -m physdev --physdev-is-bridged -j ACCEPT
"""
PHYSDEV = "filter FORWARD accepts bridged traffic (-m physdev --physdev-is-bridged -j ACCEPT)"
NOTE = "but a firewall chain or rule of another tool overrides vnetd's rules (see the firewall.shadowed warning)"
DOCKER_CHAIN = "nf_tables `table ip filter` chain FORWARD (hook forward, priority 0, policy drop)"


def shadowed_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: firewall.shadowed:")]


def nft_ruleset(ns: Netns) -> str:
    return ns.exec("nft", "list", "ruleset").stdout


# --------------------------------------------------------------------------- the shadowing tools

FIREWALLD = """\
table inet firewalld {
  chain filter_FORWARD {
    type filter hook forward priority filter + 10; policy accept;
    ct state established,related accept
    ct state invalid drop
    reject with icmpx admin-prohibited
  }
}
"""
CONDITIONAL = """\
table inet guard {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state invalid drop
    ip saddr 203.0.113.0/24 drop
  }
}
"""
BRIDGE = """\
table bridge guard {
  chain forward {
    type filter hook forward priority -200; policy drop;
  }
}
"""


def docker(ns: Netns) -> None:
    ns.exec("iptables-nft", "-P", "FORWARD", "DROP")


def firewalld(ns: Netns) -> None:
    ns.exec("nft", "-f", "-", input=FIREWALLD)


def legacy_mangle(ns: Netns) -> None:
    ns.exec("iptables-legacy", "-t", "mangle", "-P", "FORWARD", "DROP")


def ebtables(ns: Netns) -> None:
    ns.exec("nft", "-f", "-", input=BRIDGE)


SHADOWS = {
    "docker-policy": (docker, DOCKER_CHAIN + " drops"),
    "firewalld-reject": (firewalld, "nf_tables `table inet firewalld` chain filter_FORWARD (hook forward, priority "
                         "10, policy accept, ends in an unconditional reject) rejects"),
    "legacy-mangle": (legacy_mangle, "legacy iptables table `mangle` chain FORWARD (hook forward, priority -150, "
                      "policy DROP) drops"),
    "bridge-family": (ebtables, "nf_tables `table bridge guard` chain forward (hook forward, priority -200, "
                      "policy drop) drops"),
}


@pytest.mark.parametrize("shadow", sorted(SHADOWS))
def test_check_names_the_chain_that_drops_what_vnetd_accepts(shadow: str, netns: Netns,
                                                              state_dir: StateDir) -> None:
    make, names = SHADOWS[shadow]
    state_dir.write("20-firewall.yaml", FIREWALL)
    make(netns)
    result = vnetd("check", netns=netns, state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    (line,) = shadowed_lines(result.stderr)
    assert line == (f"warning: firewall.shadowed: {PHYSDEV}, but {names} what it does not accept itself: "
                    "packets must pass both (see docs/OPERATIONS.md)")


def test_plan_and_apply_say_it_and_never_converged_alone(netns: Netns, state_dir: StateDir) -> None:
    state_dir.write("20-firewall.yaml", FIREWALL)
    docker(netns)
    before = nft_ruleset(netns)
    plan = vnetd("plan", netns=netns, state_dir=state_dir)
    assert plan.returncode == 2, plan.stderr
    assert len(shadowed_lines(plan.stderr)) == 1, plan.stderr  # once, though check and plan both look
    assert plan.stdout.splitlines()[-1] == f"1 change pending; {NOTE}"
    applied = vnetd("apply", netns=netns, state_dir=state_dir)
    assert applied.returncode == 0, applied.stderr
    assert len(shadowed_lines(applied.stderr)) == 1, applied.stderr
    assert applied.stdout.splitlines()[-1] == f"converged: 1 change applied and verified; {NOTE}"
    again = vnetd("plan", "--format", "json", netns=netns, state_dir=state_dir)
    assert again.returncode == 0, again.stderr
    answer = json.loads(again.stdout)
    assert answer["changes"] == []
    (warning,) = answer["warnings"]
    assert warning.startswith(f"firewall.shadowed: {PHYSDEV}, but {DOCKER_CHAIN} drops")
    as_json = json.loads(vnetd("apply", "--format", "json", netns=netns, state_dir=state_dir).stdout)
    assert as_json["converged"] is True and as_json["warnings"] == answer["warnings"]
    # vnetd wrote its legacy table only: the chain it warns about is untouched
    assert nft_ruleset(netns) == before
    assert ":FORWARD DROP" in netns.exec("iptables-nft-save", "-t", "filter").stdout


def test_a_chain_that_accepts_vnetds_rules_itself_is_no_shadow(netns: Netns, state_dir: StateDir) -> None:
    """The fix on a Docker host: the same rule in DOCKER-USER (a chain FORWARD jumps to)
    lets vnetd's traffic through Docker's DROP policy: the warning goes."""
    state_dir.write("20-firewall.yaml", FIREWALL)
    docker(netns)
    netns.exec("iptables-nft", "-N", "DOCKER-USER")
    netns.exec("iptables-nft", "-A", "DOCKER-USER", "-j", "RETURN")
    netns.exec("iptables-nft", "-I", "FORWARD", "-j", "DOCKER-USER")
    assert len(shadowed_lines(vnetd("check", netns=netns, state_dir=state_dir).stderr)) == 1
    netns.exec("iptables-nft", "-I", "DOCKER-USER", "-m", "physdev", "--physdev-is-bridged", "-j", "ACCEPT")
    result = vnetd("check", netns=netns, state_dir=state_dir)
    assert result.returncode == 0 and shadowed_lines(result.stderr) == [], result.stderr
    # another rule is not the same rule: still said
    netns.exec("iptables-nft", "-R", "DOCKER-USER", "1", "-m", "physdev", "--physdev-in", "vnet0", "-j", "ACCEPT")
    assert len(shadowed_lines(vnetd("check", netns=netns, state_dir=state_dir).stderr)) == 1


def test_nothing_is_said_when_nothing_drops_what_vnetd_accepts(netns: Netns, state_dir: StateDir) -> None:
    """A conditional drop (``ct state invalid``, a ban) is in every firewall: not reported;
    nor a DROP policy in the chain holding vnetd's own rules (vnetd's rules come first),
    nor a drop on another hook or of another family."""
    state_dir.write("20-firewall.yaml", FIREWALL)
    netns.exec("nft", "-f", "-", input=CONDITIONAL)
    netns.exec("iptables-legacy", "-P", "FORWARD", "DROP")
    netns.exec("iptables-nft", "-P", "INPUT", "DROP")
    netns.exec("ip6tables-nft", "-P", "FORWARD", "DROP")
    for command in ("check", "plan", "apply"):
        result = vnetd(command, netns=netns, state_dir=state_dir)
        assert result.returncode in (0, 2), result.stderr
        assert shadowed_lines(result.stderr) == [], (command, result.stderr)
        assert "overrides vnetd's rules" not in result.stdout
    assert vnetd("apply", netns=netns, state_dir=state_dir).stdout == "converged: nothing to do\n"


def test_ipv6_chains_are_compared_with_ipv6_and_inet_chains(netns: Netns, state_dir: StateDir) -> None:
    state_dir.write("20-firewall.yaml", "firewall6:\n  filter:\n    FORWARD:\n      rules:\n"
                                        "      - -s 2001:db8::/32 -j ACCEPT\n")
    netns.exec("iptables-nft", "-P", "FORWARD", "DROP")  # IPv4 only: not a shadow of ip6 rules
    assert shadowed_lines(vnetd("check", netns=netns, state_dir=state_dir).stderr) == []
    netns.exec("ip6tables-nft", "-P", "FORWARD", "DROP")
    (line,) = shadowed_lines(vnetd("check", netns=netns, state_dir=state_dir).stderr)
    assert "ip6 filter FORWARD accepts (-s 2001:db8::/32 -j ACCEPT), but nf_tables `table ip6 filter` chain " \
           "FORWARD (hook forward, priority 0, policy drop) drops" in line


def test_a_chain_vnetd_declares_counts_as_it_will_be(netns: Netns, state_dir: StateDir) -> None:
    """A DROP policy vnetd itself sets in the legacy ``mangle`` table shadows its filter
    accepts: said before the first apply; one it opens (ACCEPT) is not reported."""
    legacy_mangle(netns)
    state_dir.write("20-firewall.yaml", FIREWALL + "  mangle:\n    FORWARD:\n      policy: ACCEPT\n")
    assert shadowed_lines(vnetd("check", netns=netns, state_dir=state_dir).stderr) == []
    state_dir.write("20-firewall.yaml", FIREWALL + "  mangle:\n    FORWARD:\n      policy: DROP\n")
    netns.exec("iptables-legacy", "-t", "mangle", "-P", "FORWARD", "ACCEPT")
    (line,) = shadowed_lines(vnetd("check", netns=netns, state_dir=state_dir).stderr)
    assert "legacy iptables table `mangle` chain FORWARD" in line


# --------------------------------------------------------------------------- inside vnetd's chains

TOP = """\
firewall:
  filter:
    INPUT:
      rules:
      - -p tcp --dport 22 -j ACCEPT
"""
BOTTOM = """\
firewall:
  filter:
    INPUT:
      position: append
      rules:
      - -j REJECT --reject-with icmp-host-prohibited
"""
NEVER_REACHED = ("warning: firewall.shadowed: filter INPUT: vnetd's rules kept at the bottom (position: append: "
                 "-j REJECT --reject-with icmp-host-prohibited) are never reached: the rule of another tool before "
                 "them (`-j ACCEPT`, its #2 in the chain) ends every packet's path there (see docs/OPERATIONS.md)")


def test_a_rule_of_another_tool_above_vnetds_bottom_rules_that_decides_everything(netns: Netns,
                                                                                state_dir: StateDir) -> None:
    """``position: append`` rules go below every other tool's rules, by design: an
    unconditional ACCEPT there means vnetd's catch-all REJECT never runs."""
    state_dir.write("20-firewall.yaml", TOP)
    state_dir.write("90-reject.yaml", BOTTOM)
    netns.exec("iptables-legacy", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT")
    applied = vnetd("apply", netns=netns, state_dir=state_dir)
    assert applied.returncode == 0 and shadowed_lines(applied.stderr) == [], applied.stderr
    netns.exec("iptables-legacy", "-I", "INPUT", "3", "-j", "ACCEPT")  # libvirt-like, between vnetd's rules
    saved = netns.iptables_save("filter")
    for command in ("check", "plan", "apply"):
        result = vnetd(command, netns=netns, state_dir=state_dir)
        assert result.returncode == 0, result.stderr
        assert shadowed_lines(result.stderr) == [NEVER_REACHED], (command, result.stderr)
    assert netns.iptables_save("filter") == saved  # reported, not removed: the rule is another tool's


def test_the_daemon_logs_vnetds_bottom_rules_never_reached_and_when_they_are_again(netns: Netns,
                                                                                  state_dir: StateDir) -> None:
    state_dir.write("20-firewall.yaml", TOP)
    state_dir.write("90-reject.yaml", BOTTOM)
    process = DaemonProcess(netns, state_dir)
    try:
        process.wait_ready()
        mark = process.mark()
        netns.exec("iptables-legacy", "-I", "INPUT", "-j", "ACCEPT")  # above vnetd's: moved below its top rule
        event = process.wait_for("firewall.shadowed", since=mark, where="in_chain", chain="INPUT")
        assert event["foreign_rule"] == "-j ACCEPT" and event["vnetd_chain"] == "filter INPUT"
        netns.exec("iptables-legacy", "-D", "INPUT", "-j", "ACCEPT")
        process.wait_for("firewall.shadow_clear", since=mark, where="in_chain", chain="INPUT")
        assert len(process.find("firewall.shadowed", since=mark)) == 1
    finally:
        assert process.stop() == 0, "\n".join(process.lines[-30:])


# --------------------------------------------------------------------------- it is real


@pytest.fixture
def routed(make_netns: NetnsFactory) -> tuple[Netns, Netns, Netns]:
    """a (192.0.2.1) -- router -- b (198.51.100.2)."""
    a, router, b = make_netns("a"), make_netns("r"), make_netns("b")
    a.veth("a0", "r0", router)
    b.veth("b0", "r1", router)
    for ns, dev, addr, gw in ((a, "a0", "192.0.2.1/24", "192.0.2.254"), (b, "b0", "198.51.100.2/24", "198.51.100.254")):
        ns.ip("addr", "add", addr, "dev", dev)
        ns.ip("link", "set", dev, "up")
        ns.ip("route", "add", "default", "via", gw)
    for dev, addr in (("r0", "192.0.2.254/24"), ("r1", "198.51.100.254/24")):
        router.ip("addr", "add", addr, "dev", dev)
        router.ip("link", "set", dev, "up")
    router.exec("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    return a, router, b


ROUTED = """\
firewall:
  filter:
    FORWARD:
      policy: DROP
      rules:
      - -s 192.0.2.0/24 -d 198.51.100.0/24 -j ACCEPT
      - -s 198.51.100.0/24 -d 192.0.2.0/24 -j ACCEPT
"""


def test_the_warned_chain_really_drops_what_vnetd_accepts(routed: tuple[Netns, Netns, Netns],
                                                         state_dir: StateDir) -> None:
    """The warning is about traffic, not about rules: with it, the ping vnetd's rules
    accept is dropped; without it, it passes."""
    a, router, _b = routed
    state_dir.write("20-firewall.yaml", ROUTED)
    applied = vnetd("apply", netns=router, state_dir=state_dir)
    assert applied.returncode == 0 and shadowed_lines(applied.stderr) == [], applied.stderr
    assert reachable(a, "198.51.100.2")
    docker(router)
    again = vnetd("apply", netns=router, state_dir=state_dir)
    (line,) = shadowed_lines(again.stderr)
    assert f"but {DOCKER_CHAIN} drops" in line
    assert f"converged: nothing to do; {NOTE}" in again.stdout
    assert not ping(a, "198.51.100.2", count=2)
    router.exec("iptables-nft", "-P", "FORWARD", "ACCEPT")
    assert reachable(a, "198.51.100.2")
    assert shadowed_lines(vnetd("check", netns=router, state_dir=state_dir).stderr) == []


# --------------------------------------------------------------------------- the daemon


@pytest.fixture
def daemon(netns: Netns, state_dir: StateDir) -> Iterator[DaemonProcess]:
    state_dir.write("20-firewall.yaml", FIREWALL)
    process = DaemonProcess(netns, state_dir)
    try:
        process.wait_ready()
        yield process
    finally:
        assert process.stop() == 0, "\n".join(process.lines[-30:])


def status(daemon: DaemonProcess, *args: str) -> tuple[int, str, str]:
    result = vnetd("status", *args, "--socket", daemon.socket)
    return result.returncode, result.stdout, result.stderr


def test_the_daemon_logs_a_shadow_once_shows_it_in_status_and_logs_when_it_ends(daemon: DaemonProcess,
                                                                               netns: Netns) -> None:
    mark = daemon.mark()
    docker(netns)
    made = nft_ruleset(netns)
    event = daemon.wait_for("firewall.shadowed", since=mark, where="nf_tables", table="filter", chain="FORWARD")
    assert event["level"] == "warning"
    assert event["family"] == "ip" and event["hook"] == "forward" and event["policy"] == "drop"
    assert event["vnetd_chain"] == "filter FORWARD"
    assert event["message"].startswith(f"{PHYSDEV}, but {DOCKER_CHAIN} drops")
    assert nft_ruleset(netns) == made  # reported, not changed: the chain is Docker's
    last: list[tuple[int, str, str]] = []
    assert eventually(lambda: last.append(status(daemon)) or last[-1][0] == 1, timeout=10), last
    code, out, err = last[-1]
    assert f"firewall shadowed: {PHYSDEV}, but {DOCKER_CHAIN} drops" in out
    assert "1 firewall chain or rule of other tools overrides vnetd's rules (firewall.shadowed)" in err
    assert json.loads(status(daemon, "--json")[1])["shadowed"] == [event["message"]]
    assert "vnetd_firewall_shadowed 1.0" in status(daemon, "--prometheus")[1]
    # the periodic check runs many times; the same shadow is logged once
    netns.exec("nft", "add", "table", "inet", "unrelated")  # a new generation, the same shadow
    daemon.wait_until(lambda: len(daemon.find("firewall.backend_mismatch", since=mark)) >= 2)
    assert len(daemon.find("firewall.shadowed", since=mark)) == 1
    netns.exec("iptables-nft", "-P", "FORWARD", "ACCEPT")
    daemon.wait_for("firewall.shadow_clear", since=mark, table="filter", chain="FORWARD")
    assert eventually(lambda: status(daemon)[0] == 0, timeout=10)
