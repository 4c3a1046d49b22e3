# SPDX-License-Identifier: MIT
"""Issue 14, item 2, against the real kernel with real IPv6 packets: ``firewall6:``
keeps the contract of ``firewall:`` in the ip6tables tables.

An IPv6 gateway between an untrusted and a DMZ namespace (2001:db8:1::/64 and
2001:db8:2::/64, the documentation prefix) enforces its policy, converges, and
every drift is planned and repaired with traffic restored; merge, exclusive,
position: append, adoption and pruning behave as for IPv4; foreign rules of both
families are left byte-identical; the two families never touch each other's
tables; a concurrent ``ip6tables-legacy -w`` writer loses nothing; the daemon
repairs IPv6 drift by itself; ``apply --confirm`` restores an IPv6 chain; and
``show`` prints ``firewall6:``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.daemon_support import DaemonProcess
from tests.support import ROOT, Netns, StateDir, vnetd
from tests.traffic import Gateway, eventually, ping

pytestmark = pytest.mark.kernel

UNTRUSTED = "2001:db8:1::2"
GW_OUTSIDE = "2001:db8:1::1"
GW_INSIDE = "2001:db8:2::1"
DMZ = "2001:db8:2::20"

GATEWAY6 = """\
interfaces:
- name: eth0
  type: ethernet
  state: up
  ipv6: {enabled: true, address: [2001:db8:1::1/64]}
- name: eth1
  type: ethernet
  state: up
  ipv6: {enabled: true, address: [2001:db8:2::1/64]}
sysctl:
  net.ipv6.conf.all.forwarding: 1
firewall6:
  filter:
    FORWARD:
      mode: exclusive
      rules:
      - -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
      - -p ipv6-icmp -j ACCEPT
      - -i eth1 -o eth0 -j ACCEPT
      - -j REJECT --reject-with icmp6-adm-prohibited
    OUTPUT:
      policy: ACCEPT
  nat:
    POSTROUTING:
      rules:
      - -o eth0 -j MASQUERADE
"""


def no_dad(*namespaces: Netns) -> None:
    """Addresses usable at once (no duplicate address detection): set before the links exist."""
    for ns in namespaces:
        for key in ("net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"):
            ns.exec("sysctl", "-qw", f"{key}=0")


@pytest.fixture
def gateway6(make_netns: Callable[..., Netns], state_dir: StateDir) -> Gateway:
    untrusted, gw, dmz = make_netns("untr6"), make_netns("gw6"), make_netns("dmz6")
    no_dad(untrusted, gw, dmz)
    gw.veth("eth0", "u0", untrusted)
    gw.veth("eth1", "d0", dmz)
    untrusted.ip("-6", "addr", "add", f"{UNTRUSTED}/64", "dev", "u0", "nodad")
    untrusted.ip("link", "set", "u0", "up")
    untrusted.ip("-6", "route", "add", "2001:db8:2::/64", "via", GW_OUTSIDE)  # so it can try to reach the DMZ
    dmz.ip("-6", "addr", "add", f"{DMZ}/64", "dev", "d0", "nodad")
    dmz.ip("link", "set", "d0", "up")
    dmz.ip("-6", "route", "add", "default", "via", GW_INSIDE)
    state_dir.write("10-gateway6.yaml", GATEWAY6)
    g = Gateway(untrusted, gw, dmz, state_dir, UNTRUSTED, DMZ)
    g.apply()
    return g


def test_ipv6_gateway_policy(gateway6: Gateway) -> None:
    g = gateway6
    assert g.gw.sysctl("net.ipv6.conf.all.forwarding") == "1"
    # DMZ -> untrusted works, and the far side sees the gateway (ip6tables MASQUERADE)
    assert eventually(lambda: g.dmz_to_untrusted() == f"ok {GW_OUTSIDE}")
    # untrusted -> DMZ: new connections are rejected with icmp6-adm-prohibited
    assert g.untrusted_to_dmz() == "prohibited"
    # ICMPv6 passes both ways
    assert ping(g.dmz, UNTRUSTED)
    assert ping(g.untrusted, DMZ)
    assert g.plan()[0] == 0
    # the rules are where ip6tables shows them, and the IPv4 tables hold none of vnetd's
    forward = g.gw.exec("ip6tables-legacy", "-S", "FORWARD").stdout
    assert "-j REJECT --reject-with icmp6-adm-prohibited" in forward and "vnetd:" in forward
    assert "vnetd:" not in g.gw.iptables_save()


def _flush_masquerade(g: Gateway) -> None:
    g.gw.exec("ip6tables-legacy", "-t", "nat", "-F", "POSTROUTING")


DRIFTS6: list[tuple[str, Callable[[Gateway], object], str, str, Callable[[Gateway], bool]]] = [
    ("MASQUERADE deleted", _flush_masquerade, "firewall6/nat/POSTROUTING", "rules",
     lambda g: g.dmz_to_untrusted() == f"ok {GW_OUTSIDE}"),
    ("FORWARD flushed", lambda g: g.gw.exec("ip6tables-legacy", "-F", "FORWARD"),
     "firewall6/filter/FORWARD", "rules", lambda g: g.untrusted_to_dmz() == "prohibited"),
    ("foreign ACCEPT in the exclusive FORWARD", lambda g: g.gw.exec("ip6tables-legacy", "-I", "FORWARD", "-j", "ACCEPT"),
     "firewall6/filter/FORWARD", "rules", lambda g: g.untrusted_to_dmz() == "prohibited"),
    ("OUTPUT policy changed", lambda g: g.gw.exec("ip6tables-legacy", "-P", "OUTPUT", "DROP"),
     "firewall6/filter/OUTPUT", "policy", lambda g: ping(g.gw, DMZ)),
    ("forwarding reset", lambda g: g.gw.exec("sysctl", "-w", "net.ipv6.conf.all.forwarding=0"),
     "sysctl/net.ipv6.conf.all.forwarding", "value", lambda g: g.dmz_to_untrusted() == f"ok {GW_OUTSIDE}"),
]


@pytest.mark.parametrize(("breaker", "resource", "field", "restored"), [d[1:] for d in DRIFTS6],
                         ids=[d[0] for d in DRIFTS6])
def test_ipv6_drift_repaired_with_traffic(gateway6: Gateway, breaker: Callable[[Gateway], object], resource: str,
                                          field: str, restored: Callable[[Gateway], bool]) -> None:
    g = gateway6
    assert eventually(lambda: restored(g))
    breaker(g)
    assert not restored(g), "the drift did not break what it should"
    code, plan = g.plan()
    assert code == 2
    assert any(c["resource"] == resource and c["field"] == field for c in plan["changes"]), plan["changes"]
    result = g.apply()
    assert "converged" in result.stdout
    assert eventually(lambda: restored(g))
    assert g.plan()[0] == 0


def test_ipv6_rule_removed_from_file_is_pruned(gateway6: Gateway) -> None:
    g = gateway6
    assert ping(g.untrusted, DMZ)
    g.state.write("10-gateway6.yaml", GATEWAY6.replace("      - -p ipv6-icmp -j ACCEPT\n", ""))
    assert g.plan()[0] == 2
    g.apply()
    assert "ipv6-icmp" not in g.gw.exec("ip6tables-legacy", "-S", "FORWARD").stdout
    assert not ping(g.untrusted, DMZ)  # a new echo request from outside now hits the REJECT
    assert g.dmz_to_untrusted() == f"ok {GW_OUTSIDE}"
    assert g.plan()[0] == 0


def test_ipv6_chain_removed_from_files_is_pruned(gateway6: Gateway) -> None:
    g = gateway6
    g.state.write("10-gateway6.yaml", GATEWAY6.replace("  nat:\n    POSTROUTING:\n      rules:\n"
                                                       "      - -o eth0 -j MASQUERADE\n", ""))
    g.apply()
    assert "MASQUERADE" not in g.gw.ip6tables_save("nat")
    assert g.dmz_to_untrusted() == f"ok {DMZ}"  # no more NAT: the far side sees the DMZ host


# --------------------------------------------------------------------------- both families on one host


BOTH = """\
firewall:
  filter:
    INPUT:
      rules:
      - -p tcp --dport 22 -j ACCEPT
    GUESTS:
      rules:
      - -j RETURN
firewall6:
  filter:
    INPUT:
      rules:
      - -p tcp --dport 22 -j ACCEPT
    GUESTS:
      rules:
      - -s 2001:db8::/32 -j ACCEPT
      - -j RETURN
    FORWARD:
      rules:
      - -i vnet+ -j GUESTS
"""


def rules_of(ns: Netns, chain: str, family: int = 6, table: str = "filter") -> list[str]:
    return [line for line in ns.iptables_save(table, family).splitlines() if line.startswith(f"-A {chain} ")]


def untagged(lines: list[str]) -> list[str]:
    return [re.sub(r' -m comment --comment "vnetd:[0-9a-z-]+"', "", line) for line in lines]


def foreign(ns: Netns, family: int) -> list[str]:
    lines = []
    for table in ("filter", "nat", "mangle", "raw"):
        lines += [line for line in ns.iptables_save(table, family).splitlines()
                  if line.startswith("-A") and "vnetd:" not in line]
    return lines


@pytest.fixture
def host(netns: Netns, state_dir: StateDir) -> Iterator[tuple[Netns, StateDir]]:
    """A host with other tools' rules in both families' tables."""
    for command, source in (("iptables-legacy", "192.0.2.0/24"), ("ip6tables-legacy", "2001:db8:ff::/48")):
        netns.exec(command, "-I", "FORWARD", "-s", source, "-m", "comment", "--comment", "admin's", "-j", "DROP")
        netns.exec(command, "-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "ACCEPT")
        netns.exec(command, "-t", "mangle", "-A", "POSTROUTING", "-o", "vnet9", "-j", "ACCEPT")
        netns.exec(command, "-N", "ADMIN")
        netns.exec(command, "-A", "ADMIN", "-j", "DROP")
    state_dir.write("10-both.yaml", BOTH)
    yield netns, state_dir


def test_both_families_converge_and_never_touch_foreign_rules(host: tuple[Netns, StateDir]) -> None:
    ns, state = host
    before4, before6 = foreign(ns, 4), foreign(ns, 6)
    for _ in range(2):
        result = vnetd("apply", netns=ns, state_dir=state)
        assert result.returncode == 0, result.stdout + result.stderr
        assert foreign(ns, 4) == before4 and foreign(ns, 6) == before6
    assert vnetd("plan", netns=ns, state_dir=state).returncode == 0
    # the owner mark (a comment, no target) first, then the rules
    assert untagged(rules_of(ns, "GUESTS", 6)) == ["-A GUESTS", "-A GUESTS -s 2001:db8::/32 -j ACCEPT",
                                                   "-A GUESTS -j RETURN"]
    assert untagged(rules_of(ns, "GUESTS", 4)) == ["-A GUESTS", "-A GUESTS -j RETURN"]
    assert "vnetd:owned-chain" in rules_of(ns, "GUESTS", 6)[0]
    assert untagged(rules_of(ns, "INPUT", 6))[0] == "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"
    assert untagged(rules_of(ns, "INPUT", 4))[0] == "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"
    tags4 = set(re.findall(r"vnetd:[0-9a-f]{16}", ns.iptables_save()))
    tags6 = set(re.findall(r"vnetd:[0-9a-f]{16}", ns.ip6tables_save()))
    assert tags4 and tags6 and not tags4 & tags6  # the same rule text, two rules, two tags


def test_a_change_in_one_family_leaves_the_other_alone(host: tuple[Netns, StateDir]) -> None:
    ns, state = host
    assert vnetd("apply", netns=ns, state_dir=state).returncode == 0
    saved4 = ns.iptables_save()
    ns.exec("ip6tables-legacy", "-F", "INPUT")
    plan = json.loads(vnetd("plan", "--format", "json", netns=ns, state_dir=state).stdout)
    assert {c["resource"] for c in plan["changes"]} == {"firewall6/filter/INPUT"}
    assert vnetd("apply", netns=ns, state_dir=state).returncode == 0
    assert ns.iptables_save() == saved4
    # and the other way round
    saved6 = ns.ip6tables_save()
    ns.exec("iptables-legacy", "-D", "INPUT", "1")
    plan = json.loads(vnetd("plan", "--format", "json", netns=ns, state_dir=state).stdout)
    assert {c["resource"] for c in plan["changes"]} == {"firewall/filter/INPUT"}
    assert vnetd("apply", netns=ns, state_dir=state).returncode == 0
    assert ns.ip6tables_save() == saved6


def test_firewall6_section_removed_prunes_only_ipv6_rules(host: tuple[Netns, StateDir]) -> None:
    ns, state = host
    assert vnetd("apply", netns=ns, state_dir=state).returncode == 0
    before4 = ns.iptables_save()
    foreign6 = foreign(ns, 6)
    state.write("10-both.yaml", BOTH.split("firewall6:")[0])
    plan = json.loads(vnetd("plan", "--format", "json", netns=ns, state_dir=state).stdout)
    assert {c["resource"] for c in plan["changes"]} == {"firewall6/filter/INPUT", "firewall6/filter/GUESTS",
                                                        "firewall6/filter/FORWARD"}
    assert vnetd("apply", netns=ns, state_dir=state).returncode == 0
    saved6 = ns.ip6tables_save()
    assert "vnetd:" not in saved6 and ":GUESTS" not in saved6  # the owned chain is deleted
    assert ":ADMIN" in saved6 and foreign(ns, 6) == foreign6  # another tool's chain and rules stay
    assert ns.iptables_save() == before4
    # no firewall section at all: vnetd still finds and prunes its IPv4 rules
    state.write("10-both.yaml", "sysctl: {}\n")
    assert vnetd("apply", netns=ns, state_dir=state).returncode == 0
    assert "vnetd:" not in ns.iptables_save()


def test_ipv6_merge_chain_keeps_appended_rules_below_foreign_ones(netns: Netns, state_dir: StateDir) -> None:
    """10-base.yaml: SSH on top; 90-reject.yaml: the catch-all at the bottom, below a
    libvirt-like rule another tool inserted, which stays where it is."""
    netns.exec("ip6tables-legacy", "-I", "INPUT", "-i", "virbr0", "-p", "udp", "--dport", "547", "-j", "ACCEPT")
    state_dir.write("10-base.yaml", "firewall6:\n  filter:\n    INPUT:\n      rules: ['-p tcp --dport 22 -j ACCEPT']\n")
    state_dir.write("90-reject.yaml", "firewall6:\n  filter:\n    INPUT:\n      position: append\n"
                                      "      rules: ['-j REJECT --reject-with icmp6-port-unreachable']\n")
    assert vnetd("apply", netns=netns, state_dir=state_dir).returncode == 0
    assert untagged(rules_of(netns, "INPUT")) == [
        "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
        "-A INPUT -i virbr0 -p udp -m udp --dport 547 -j ACCEPT",
        "-A INPUT -j REJECT --reject-with icmp6-port-unreachable",
    ]
    netns.exec("ip6tables-legacy", "-A", "INPUT", "-i", "virbr0", "-p", "udp", "--dport", "53", "-j", "ACCEPT")
    assert vnetd("plan", netns=netns, state_dir=state_dir).returncode == 2
    assert vnetd("apply", netns=netns, state_dir=state_dir).returncode == 0
    lines = untagged(rules_of(netns, "INPUT"))
    assert lines[-1] == "-A INPUT -j REJECT --reject-with icmp6-port-unreachable"
    assert lines[1:3] == ["-A INPUT -i virbr0 -p udp -m udp --dport 547 -j ACCEPT",
                          "-A INPUT -i virbr0 -p udp -m udp --dport 53 -j ACCEPT"]
    assert vnetd("plan", netns=netns, state_dir=state_dir).returncode == 0


def test_identical_foreign_ipv6_rules_are_adopted_not_doubled(netns: Netns, state_dir: StateDir) -> None:
    for rule in (["-p", "tcp", "--dport", "22", "-j", "ACCEPT"], ["-s", "2001:db8::/32", "-j", "DROP"]):
        netns.exec("ip6tables-legacy", "-A", "FORWARD", *rule)
    state_dir.write("10-fw.yaml", "firewall6:\n  filter:\n    FORWARD:\n      rules:\n"
                                  "      - -p tcp -m tcp --dport 22 -j ACCEPT\n      - -s 2001:db8::/32 -j DROP\n")
    assert vnetd("apply", netns=netns, state_dir=state_dir).returncode == 0
    lines = rules_of(netns, "FORWARD")
    assert len(lines) == 2 and all("vnetd:" in line for line in lines), lines
    assert untagged(lines) == ["-A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT", "-A FORWARD -s 2001:db8::/32 -j DROP"]
    assert vnetd("plan", netns=netns, state_dir=state_dir).returncode == 0


def test_ipv6_goto_and_header_forms_converge(netns: Netns, state_dir: StateDir) -> None:
    """Forms where ip6tables' entry differs from iptables' (IP6T_F_GOTO, IP6T_F_PROTO set by
    '-p all', a non-prefix mask, an extension-header protocol) install as ip6tables installs
    them and plan nothing afterwards."""
    state_dir.write("10-fw.yaml", """\
        firewall6:
          filter:
            NEXT:
              rules: [-j RETURN]
            FORWARD:
              rules:
              - -i vnet+ -g NEXT
              - '-p all -s 2001:db8::/ffff:ffff:0:ffff:: -j DROP'
              - -p 44 -j DROP
              - -m frag --fragid 5 -j DROP
        """)
    result = vnetd("apply", netns=netns, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert untagged(rules_of(netns, "FORWARD")) == [
        "-A FORWARD -i vnet+ -g NEXT", "-A FORWARD -s 2001:db8::/ffff:ffff:0:ffff:: -j DROP",
        "-A FORWARD -p ipv6-frag -j DROP", "-A FORWARD -m frag --fragid 5 -j DROP"]
    assert vnetd("plan", netns=netns, state_dir=state_dir).returncode == 0
    check = vnetd("check", netns=netns, state_dir=state_dir)
    assert "never matched protocol" in check.stderr  # ip6tables' own warning for -p 44


def test_show_prints_firewall6(host: tuple[Netns, StateDir]) -> None:
    ns, state = host
    assert vnetd("apply", netns=ns, state_dir=state).returncode == 0
    shown = yaml.safe_load(vnetd("show", netns=ns, state_dir=state).stdout)
    assert shown["firewall6"]["filter"]["GUESTS"] == {"rules": ["-s 2001:db8::/32 -j ACCEPT", "-j RETURN"]}
    assert shown["firewall"]["filter"]["GUESTS"] == {"rules": ["-j RETURN"]}
    assert shown["firewall6"]["filter"]["INPUT"]["rules"] == ["-p tcp --dport 22 -j ACCEPT"]


# --------------------------------------------------------------------------- concurrency, daemon, trial


def test_concurrent_ip6tables_writer_loses_nothing(host: tuple[Netns, StateDir], tmp_path: Path) -> None:
    """vnetd repairs a flushed IPv6 chain five times while `ip6tables -w` keeps adding rules
    elsewhere (it started before the first repair and stops after the last): every rule
    the writer added is there, and so are vnetd's."""
    ns, state = host
    stop = tmp_path / "stop"
    script = (f"i=0; while [ ! -e {stop} ]; do i=$((i + 1)); ip6tables-legacy -w -A OUTPUT -d 2001:db8:77::$(printf %x $i) "
              "-p tcp --dport $((i % 60000 + 1)) -j ACCEPT || exit 1; done; echo $i")
    writer = ns.popen("sh", "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert eventually(lambda: "2001:db8:77::1/128" in ns.exec("ip6tables-legacy", "-S", "OUTPUT").stdout,
                          timeout=30)
        for _ in range(5):
            ns.exec("ip6tables-legacy", "-w", "-F", "FORWARD")
            result = vnetd("apply", netns=ns, state_dir=state)
            assert result.returncode == 0, result.stdout + result.stderr
    finally:
        stop.touch()
        out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    written = int(out.strip())
    added = [line for line in ns.exec("ip6tables-legacy", "-S", "OUTPUT").stdout.splitlines() if "2001:db8:77::" in line]
    assert len(added) == written > 1
    assert "-j GUESTS" in ns.exec("ip6tables-legacy", "-S", "FORWARD").stdout
    assert vnetd("plan", netns=ns, state_dir=state).returncode == 0


def test_daemon_repairs_ipv6_drift(host: tuple[Netns, StateDir]) -> None:
    ns, state = host
    daemon = DaemonProcess(ns, state)
    try:
        daemon.wait_ready()
        assert daemon.wait_until(lambda: "-j GUESTS" in ns.ip6tables_save("filter"))
        for breaker, resource in (
                (lambda: ns.exec("ip6tables-legacy", "-F", "FORWARD"), "firewall6/filter/FORWARD"),
                (lambda: ns.exec("ip6tables-legacy", "-D", "GUESTS", "2"), "firewall6/filter/GUESTS"),
                (lambda: ns.exec("iptables-legacy", "-F", "GUESTS"), "firewall/filter/GUESTS")):
            mark = daemon.mark()
            breaker()
            detected = daemon.wait_for("drift.detected", since=mark, resource=resource)
            assert detected["source"] == "netfilter"
            daemon.wait_for("action.applied", since=mark, resource=resource)
        assert daemon.wait_until(lambda: vnetd("plan", netns=ns, state_dir=state).returncode == 0)
    finally:
        assert daemon.stop() == 0, "\n".join(daemon.lines[-30:])
    assert not daemon.bad_lines


def test_an_unconfirmed_ipv6_lockout_is_restored_byte_for_byte(host: tuple[Netns, StateDir]) -> None:
    ns, state = host
    before = (ns.iptables_save(), ns.ip6tables_save())
    state.write("10-both.yaml", "firewall6:\n  filter:\n    INPUT:\n      mode: exclusive\n      policy: DROP\n"
                                "      rules: ['-p tcp --dport 80 -j ACCEPT']\n")
    result = vnetd("apply", "--confirm", "2", netns=ns, state_dir=state)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "restored: firewall6/filter/INPUT" in result.stdout
    assert (ns.iptables_save(), ns.ip6tables_save()) == before


# --------------------------------------------------------------------------- vnetd import --ip6tables


IP6TABLES = ROOT / "tests" / "data" / "ip6tables" / "rulesets"


def import_into(state: StateDir, rules: Path) -> None:
    out = state.path / "20-firewall6.yaml"
    result = vnetd("import", "--ip6tables", str(rules), "-o", str(out))
    assert result.returncode == 0, result.stderr
    os.chmod(out, 0o644)


def test_an_imported_ip6tables_file_applies_as_ip6tables_restore_does(make_netns: Callable[..., Netns],
                                                                     state_dir: StateDir) -> None:
    """RHEL/CentOS 7's default /etc/sysconfig/ip6tables: `vnetd import --ip6tables` then
    `vnetd apply` installs exactly what `ip6tables-restore` installs from the file."""
    rules = IP6TABLES / "centos7-default.rules"
    restored, applied = make_netns("restore6"), make_netns("import6")
    restored.exec("ip6tables-legacy-restore", input=rules.read_text())
    import_into(state_dir, rules)
    result = vnetd("apply", netns=applied, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert untagged(applied.ip6tables_save("filter").splitlines()) == restored.ip6tables_save("filter").splitlines()
    assert vnetd("plan", netns=applied, state_dir=state_dir).returncode == 0


def test_an_imported_ip6tables_file_adopts_the_live_rules_it_came_from(netns: Netns, state_dir: StateDir) -> None:
    """Import and apply on the KVM host the file was saved on: vnetd tags the rules it now
    manages where they stand instead of adding second copies; libvirt's chains and rules stay
    (its jumps end up above the appended catch-all, as libvirt inserts them at the top)."""
    rules = IP6TABLES / "kvm-host.rules"
    netns.exec("ip6tables-legacy-restore", input=rules.read_text())
    before = netns.ip6tables_save().splitlines()
    import_into(state_dir, rules)
    result = vnetd("apply", netns=netns, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    after = netns.ip6tables_save().splitlines()
    owner_marks = [line for line in after if line.endswith('-m comment --comment "vnetd:owned-chain"')]
    assert sorted(line for line in untagged(after) if line not in untagged(owner_marks)) == sorted(before)
    assert sum("vnetd:" in line for line in after) == 37 + len(owner_marks)  # every declared rule, once
    for chain in ("LIBVIRT_FWI", "LIBVIRT_FWO", "LIBVIRT_FWX", "LIBVIRT_INP", "LIBVIRT_OUT", "LIBVIRT_PRT"):
        assert [line for line in after if line.startswith(f"-A {chain} ")] == \
            [line for line in before if line.startswith(f"-A {chain} ")]
    forward = [line for line in untagged(after) if line.startswith("-A FORWARD ")]
    assert forward[-1] == "-A FORWARD -j REJECT --reject-with icmp6-adm-prohibited"
    assert forward.index("-A FORWARD -j LIBVIRT_FWX") < len(forward) - 1
    assert vnetd("plan", netns=netns, state_dir=state_dir).returncode == 0
