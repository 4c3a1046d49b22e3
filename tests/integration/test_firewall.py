# SPDX-License-Identifier: MIT
"""Issue 3 against the real kernel, with real packets: the article's gateway policy
between an untrusted and a DMZ namespace, the host's physdev rule on brdmz, every
firewall drift planned and repaired with traffic restored, foreign rules left
byte-identical, and no rule lost to a concurrent ``iptables -w`` writer.

Every test runs over both backends (issue 13): the state directory pins
``firewall.backend``, and the oracle and the "other tool" are that backend's own
``iptables`` command (``iptables-legacy`` or ``iptables-nft``) and its ``-save``."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import ROOT, Netns, StateDir, vnetd
from tests.traffic import Gateway, eventually, ping, reachable, wait_bridged

pytestmark = pytest.mark.kernel


class Backend:
    """The backend the current test runs over, and the iptables command of its tables."""

    name = "iptables-legacy"
    variant = "legacy"

    @property
    def ipt(self) -> str:
        return f"iptables-{self.variant}"


FW = Backend()


@pytest.fixture(autouse=True, params=[FW.ipt, "iptables-nft"])
def fw(request: pytest.FixtureRequest, state_dir: StateDir) -> Backend:
    """Runs the test over each backend: pinned in the state directory, its command the oracle."""
    FW.name = request.param
    FW.variant = request.param.removeprefix("iptables-")
    state_dir.pin(FW.name)
    return FW

GATEWAY_FIREWALL = (ROOT / "etc" / "examples" / "gateway" / "20-firewall.yaml").read_text()
GATEWAY_INTERFACES = """
interfaces:
- name: eth0
  type: ethernet
  state: up
  ipv4: {enabled: true, address: [203.0.113.1/24]}
- name: eth1
  type: ethernet
  state: up
  ipv4: {enabled: true, address: [198.51.100.1/24]}
firewall:
  filter:
    OUTPUT:
      policy: ACCEPT
"""
UNTRUSTED = "203.0.113.2"
GW_OUTSIDE = "203.0.113.1"
GW_INSIDE = "198.51.100.1"
DMZ = "198.51.100.20"


@pytest.fixture
def gateway(make_netns: Callable[..., Netns], state_dir: StateDir) -> Gateway:
    untrusted, gw, dmz = make_netns("untr"), make_netns("gw"), make_netns("dmz")
    gw.veth("eth0", "u0", untrusted)
    gw.veth("eth1", "d0", dmz)
    untrusted.ip("addr", "add", f"{UNTRUSTED}/24", "dev", "u0")
    untrusted.ip("link", "set", "u0", "up")
    untrusted.ip("route", "add", "198.51.100.0/24", "via", GW_OUTSIDE)  # so it can try to reach the DMZ
    dmz.ip("addr", "add", f"{DMZ}/24", "dev", "d0")
    dmz.ip("link", "set", "d0", "up")
    dmz.ip("route", "add", "default", "via", GW_INSIDE)
    state_dir.write("10-interfaces.yaml", GATEWAY_INTERFACES)
    state_dir.write("20-firewall.yaml", GATEWAY_FIREWALL)
    g = Gateway(untrusted, gw, dmz, state_dir, UNTRUSTED, DMZ)
    g.apply()
    return g


def test_gateway_policy_from_the_article(gateway: Gateway) -> None:
    assert gateway.gw.sysctl("net.ipv4.ip_forward") == "1"
    # DMZ -> untrusted works, and the far side sees the gateway (MASQUERADE)
    assert eventually(lambda: gateway.dmz_to_untrusted() == f"ok {GW_OUTSIDE}")
    # untrusted -> DMZ: new connections are rejected with icmp-host-prohibited
    assert eventually(lambda: gateway.untrusted_to_dmz() == "unreachable")
    # ICMP passes both ways, as `-p icmp -j ACCEPT` says
    assert reachable(gateway.dmz, UNTRUSTED)
    assert reachable(gateway.untrusted, DMZ)
    assert gateway.plan()[0] == 0


def _policy_drift(g: Gateway) -> None:
    g.gw.exec(FW.ipt, "-P", "OUTPUT", "DROP")


GATEWAY_DRIFTS: list[tuple[str, Callable[[Gateway], None], str, str, Callable[[Gateway], bool]]] = [
    ("MASQUERADE deleted", lambda g: g.gw.exec(FW.ipt, "-t", "nat", "-F", "POSTROUTING"),
     "firewall/nat/POSTROUTING", "rules", lambda g: g.dmz_to_untrusted() == f"ok {GW_OUTSIDE}"),
    ("FORWARD flushed", lambda g: g.gw.exec(FW.ipt, "-F", "FORWARD"),
     "firewall/filter/FORWARD", "rules", lambda g: g.untrusted_to_dmz() == "unreachable"),
    ("foreign ACCEPT in the exclusive FORWARD", lambda g: g.gw.exec(FW.ipt, "-I", "FORWARD", "-j", "ACCEPT"),
     "firewall/filter/FORWARD", "rules", lambda g: g.untrusted_to_dmz() == "unreachable"),
    ("OUTPUT policy changed", _policy_drift, "firewall/filter/OUTPUT", "policy", lambda g: ping(g.gw, DMZ)),
    ("ip_forward reset", lambda g: g.gw.exec("sysctl", "-w", "net.ipv4.ip_forward=0"),
     "sysctl/net.ipv4.ip_forward", "value", lambda g: g.dmz_to_untrusted() == f"ok {GW_OUTSIDE}"),
]


@pytest.mark.parametrize(("breaker", "resource", "field", "restored"), [d[1:] for d in GATEWAY_DRIFTS],
                         ids=[d[0] for d in GATEWAY_DRIFTS])
def test_gateway_drift_repaired_with_traffic(gateway: Gateway, breaker: Callable[[Gateway], None], resource: str,
                                             field: str, restored: Callable[[Gateway], bool]) -> None:
    breaker(gateway)
    assert not restored(gateway), "the drift did not break what it should"
    code, plan = gateway.plan()
    assert code == 2
    assert any(c["resource"] == resource and c["field"] == field for c in plan["changes"]), plan["changes"]
    result = gateway.apply()
    assert "converged" in result.stdout
    assert eventually(lambda: restored(gateway))
    assert gateway.plan()[0] == 0


def test_rule_removed_from_file_is_pruned(gateway: Gateway) -> None:
    assert reachable(gateway.untrusted, DMZ)
    text = GATEWAY_FIREWALL.replace("      - -p icmp -j ACCEPT\n      - -i lo -j ACCEPT\n      - -i eth0",
                                    "      - -i lo -j ACCEPT\n      - -i eth0")
    assert text != GATEWAY_FIREWALL
    gateway.state.write("20-firewall.yaml", text)
    code, plan = gateway.plan()
    assert code == 2
    gateway.apply()
    forward = gateway.gw.exec(FW.ipt, "-S", "FORWARD").stdout
    assert forward.count("-p icmp") == 0
    assert not ping(gateway.untrusted, DMZ)  # new ICMP from outside now hits the REJECT
    assert eventually(lambda: gateway.dmz_to_untrusted() == f"ok {GW_OUTSIDE}")


def test_chain_removed_from_files_is_pruned(gateway: Gateway) -> None:
    gateway.state.write("20-firewall.yaml", GATEWAY_FIREWALL.replace(
        "  nat:\n    POSTROUTING:\n      rules:\n      - -o eth0 -j MASQUERADE\n", ""))
    gateway.apply()
    assert "MASQUERADE" not in gateway.gw.iptables_save("nat", variant=FW.variant)
    # no more NAT: the far side sees the DMZ host
    assert eventually(lambda: gateway.dmz_to_untrusted() == f"ok {DMZ}")


# --------------------------------------------------------------------------- host: physdev on brdmz

HOST_STATE = """
interfaces:
- name: brdmz
  type: linux-bridge
  state: up
  bridge:
    options:
      stp: {enabled: false, forward-delay: 0}
    port:
    - name: vnet1
    - name: vnet2
- {name: vnet1, type: ethernet, state: up}
- {name: vnet2, type: ethernet, state: up}
sysctl:
  net.bridge.bridge-nf-call-iptables: 1
firewall:
  filter:
    FORWARD:
      policy: ACCEPT
      rules:
      - -m physdev --physdev-is-bridged -j ACCEPT
"""


@pytest.fixture
def host(make_netns: Callable[..., Netns], state_dir: StateDir) -> tuple[Netns, Netns, Netns, StateDir]:
    """A CentOS-like host: bridged traffic goes through iptables and FORWARD ends in REJECT."""
    host, a, b = make_netns("host"), make_netns("guest-a"), make_netns("guest-b")
    host.veth("vnet1", "eth0", a)
    host.veth("vnet2", "eth0", b)
    for ns, addr in ((a, "198.51.100.11"), (b, "198.51.100.12")):
        ns.ip("addr", "add", f"{addr}/24", "dev", "eth0")
        ns.ip("link", "set", "eth0", "up")
    host.exec("sysctl", "-w", "net.bridge.bridge-nf-call-iptables=1")
    host.exec(FW.ipt, "-A", "FORWARD", "-j", "REJECT", "--reject-with", "icmp-host-prohibited")
    state_dir.write("20-dmz.yaml", HOST_STATE)
    return host, a, b, state_dir


def test_physdev_rule_lets_bridged_traffic_through(host: tuple[Netns, Netns, Netns, StateDir]) -> None:
    ns, a, b, state = host
    ns.ip("link", "add", "brdmz", "type", "bridge", "forward_delay", "0")
    for port in ("vnet1", "vnet2", "brdmz"):
        ns.ip("link", "set", port, "up")
    ns.ip("link", "set", "vnet1", "master", "brdmz")
    ns.ip("link", "set", "vnet2", "master", "brdmz")
    wait_bridged(ns, "brdmz", ("vnet1", "vnet2"))  # so that only the firewall can stop the ping
    assert not ping(a, "198.51.100.12"), "bridged traffic should be rejected before vnetd runs"
    assert vnetd("apply", netns=ns, state_dir=state).returncode == 0
    assert eventually(lambda: ping(a, "198.51.100.12"))
    rules = ns.exec(FW.ipt, "-S", "FORWARD").stdout.splitlines()
    assert "physdev" in rules[1] and rules[-1] == "-A FORWARD -j REJECT --reject-with icmp-host-prohibited"


def _move_below_reject(ns: Netns) -> None:
    rules = ns.exec(FW.ipt, "-S", "FORWARD").stdout.splitlines()
    ours = next(r for r in rules if "physdev" in r)
    ns.exec(FW.ipt, "-D", "FORWARD", "1")
    ns.exec("sh", "-c", FW.ipt + " " + ours.replace("-A FORWARD", "-A FORWARD", 1))


HOST_DRIFTS = [
    ("physdev rule deleted", lambda ns: ns.exec(FW.ipt, "-D", "FORWARD", "1")),
    ("vnetd rule moved below a foreign REJECT", _move_below_reject),
    ("FORWARD policy changed", lambda ns: ns.exec(FW.ipt, "-P", "FORWARD", "DROP")),
]


@pytest.mark.parametrize("breaker", [d[1] for d in HOST_DRIFTS], ids=[d[0] for d in HOST_DRIFTS])
def test_host_drift_repaired_with_traffic(host: tuple[Netns, Netns, Netns, StateDir],
                                          breaker: Callable[[Netns], None]) -> None:
    ns, a, _b, state = host
    assert vnetd("apply", netns=ns, state_dir=state).returncode == 0
    assert eventually(lambda: ping(a, "198.51.100.12"))
    foreign_before = [r for r in ns.iptables_save("filter", variant=FW.variant).splitlines() if "vnetd:" not in r and r.startswith("-A")]
    breaker(ns)
    plan = vnetd("plan", netns=ns, state_dir=state)
    assert plan.returncode == 2 and "firewall/filter/FORWARD" in plan.stdout
    assert vnetd("apply", netns=ns, state_dir=state).returncode == 0
    assert eventually(lambda: ping(a, "198.51.100.12"))
    rules = ns.exec(FW.ipt, "-S", "FORWARD").stdout.splitlines()
    assert rules[0] == "-P FORWARD ACCEPT" and "physdev" in rules[1]  # back on top
    foreign_after = [r for r in ns.iptables_save("filter", variant=FW.variant).splitlines() if "vnetd:" not in r and r.startswith("-A")]
    assert foreign_after == foreign_before


def test_merge_mode_never_touches_foreign_rules(host: tuple[Netns, Netns, Netns, StateDir]) -> None:
    ns, _a, _b, state = host
    ns.exec(FW.ipt, "-I", "FORWARD", "-s", "192.0.2.0/24", "-m", "comment", "--comment", "admin's",
            "-j", "DROP")
    ns.exec(FW.ipt, "-A", "FORWARD", "-p", "udp", "--dport", "53", "-j", "ACCEPT")
    ns.exec(FW.ipt, "-A", "INPUT", "-i", "lo", "-j", "ACCEPT")
    ns.exec(FW.ipt, "-t", "nat", "-A", "POSTROUTING", "-o", "vnet9", "-j", "MASQUERADE")

    def foreign() -> list[str]:
        lines = []
        for table in ("filter", "nat"):
            lines += [line for line in ns.iptables_save(table, variant=FW.variant).splitlines()
                      if line.startswith("-A") and "vnetd:" not in line]
        return lines

    before = foreign()
    for _ in range(2):
        result = vnetd("apply", netns=ns, state_dir=state)
        assert result.returncode == 0, result.stdout + result.stderr
        assert foreign() == before
    rules = ns.exec(FW.ipt, "-S", "FORWARD").stdout.splitlines()
    assert "physdev" in rules[1]


# --------------------------------------------------------------------------- concurrency


def test_concurrent_iptables_writer_loses_nothing(host: tuple[Netns, Netns, Netns, StateDir], tmp_path: Path) -> None:
    """vnetd repairs a flushed chain in a loop while `iptables -w` adds 1,000 rules elsewhere.
    The writer waits at rules 300, 600 and 900 until vnetd has committed once more, so
    at least three repairs happen while it writes (a condition, not a race between the
    two loops' speeds); every rule written is there."""
    ns, _a, _b, state = host
    script = (f"for i in $(seq 1 1000); do "
              f"if [ $((i % 300)) -eq 0 ]; then while [ ! -e {tmp_path}/repair-$((i / 300)) ]; do "
              f"[ -e {tmp_path}/failed ] && exit 3; sleep 0.01; done; fi; "
              f"{FW.ipt} -w -A INPUT -s 203.0.113.$((i % 250))/32 -p tcp --dport $((i + 10000)) -j ACCEPT "
              "|| exit 1; done")
    writer = ns.popen("sh", "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    repairs = 0
    failures: list[str] = []
    stop = threading.Event()

    def repair_loop() -> None:
        nonlocal repairs
        while not stop.is_set():
            ns.exec(FW.ipt, "-w", "-F", "FORWARD")
            result = vnetd("apply", netns=ns, state_dir=state)
            if result.returncode != 0:
                failures.append(result.stdout + result.stderr)
                (tmp_path / "failed").touch()  # the writer stops: the failure is the test's result
                return
            repairs += 1
            (tmp_path / f"repair-{repairs}").touch()

    thread = threading.Thread(target=repair_loop)
    thread.start()
    try:
        _out, err = writer.communicate(timeout=600)
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[0]
    assert writer.returncode == 0, err
    assert repairs >= 3
    ports = {line.split("--dport ")[1].split()[0] for line in ns.exec(FW.ipt, "-S", "INPUT").stdout.splitlines()
             if "--dport" in line}
    assert len(ports) == 1000
    forward = ns.exec(FW.ipt, "-S", "FORWARD").stdout
    assert "physdev" in forward


def test_all_firewall_sections_removed_prunes_every_vnetd_rule(gateway: Gateway) -> None:
    """No firewall: section left at all: vnetd still finds its tagged rules and removes them."""
    gateway.state.write("10-interfaces.yaml", GATEWAY_INTERFACES.split("firewall:")[0])
    gateway.state.remove("20-firewall.yaml")
    foreign = "-A INPUT -s 192.0.2.0/24 -j ACCEPT"
    gateway.gw.exec(FW.ipt, "-A", "INPUT", "-s", "192.0.2.0/24", "-j", "ACCEPT")
    code, plan = gateway.plan()
    assert code == 2 and {c["resource"] for c in plan["changes"]} >= {"firewall/filter/FORWARD", "firewall/nat/POSTROUTING"}
    gateway.apply()
    saved = gateway.gw.iptables_save(variant=FW.variant)
    assert "vnetd:" not in saved
    assert foreign in saved  # what vnetd did not write stays


USER_CHAIN = """
firewall:
  filter:
    GUESTS:
      rules:
      - -s 198.51.100.0/24 -j ACCEPT
      - -j RETURN
    FORWARD:
      rules:
      - -i vnet+ -j GUESTS
"""


def test_user_chain_is_created_owned_and_deleted_when_undeclared(netns: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-chains.yaml", USER_CHAIN)
    assert vnetd("apply", netns=netns, state_dir=state_dir).returncode == 0
    rules = netns.exec(FW.ipt, "-S").stdout.splitlines()
    assert "-N GUESTS" in rules
    guests = [r for r in rules if r.startswith("-A GUESTS")]
    assert "vnetd:owned-chain" in guests[0] and "-j" not in guests[0]  # the owner mark: a no-op first rule
    assert any("-j GUESTS" in r for r in rules if r.startswith("-A FORWARD"))
    # a foreign chain of the same table is never touched
    netns.exec(FW.ipt, "-N", "ADMIN")
    netns.exec(FW.ipt, "-A", "ADMIN", "-j", "DROP")
    state_dir.remove("10-chains.yaml")
    result = vnetd("apply", netns=netns, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = netns.exec(FW.ipt, "-S").stdout.splitlines()
    assert "-N GUESTS" not in rules and not any("GUESTS" in r for r in rules)
    assert "-N ADMIN" in rules and "-A ADMIN -j DROP" in rules


# --------------------------------------------------------------------------- chains from several files (issue 14)


def rules_of(ns: Netns, chain: str) -> list[str]:
    return [line for line in ns.iptables_save("filter", variant=FW.variant).splitlines() if line.startswith(f"-A {chain} ")]


def untagged(lines: list[str]) -> list[str]:
    import re

    return [re.sub(r' -m comment --comment "vnetd:[0-9a-z-]+"', "", line) for line in lines]


def test_split_chain_with_appended_catch_all_keeps_foreign_rules_between(netns: Netns, state_dir: StateDir) -> None:
    """10-base.yaml: SSH on top; 50-web.yaml: HTTP; 90-reject.yaml: the catch-all at the bottom,
    below a libvirt-like rule another tool inserted, which stays where it is."""
    netns.exec(FW.ipt, "-I", "INPUT", "-i", "virbr0", "-p", "udp", "--dport", "67", "-j", "ACCEPT")
    state_dir.write("10-base.yaml", "firewall:\n  filter:\n    INPUT:\n      rules: ['-p tcp --dport 22 -j ACCEPT']\n")
    state_dir.write("50-web.yaml", "firewall:\n  filter:\n    INPUT:\n      rules: ['-p tcp --dport 80 -j ACCEPT']\n")
    state_dir.write("90-reject.yaml", "firewall:\n  filter:\n    INPUT:\n      position: append\n"
                                      "      rules: ['-j REJECT --reject-with icmp-host-prohibited']\n")
    assert vnetd("apply", netns=netns, state_dir=state_dir).returncode == 0
    assert untagged(rules_of(netns, "INPUT")) == [
        "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
        "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT",
        "-A INPUT -i virbr0 -p udp -m udp --dport 67 -j ACCEPT",
        "-A INPUT -j REJECT --reject-with icmp-host-prohibited",
    ]
    # another tool appends below the catch-all: vnetd moves its catch-all back to the bottom
    netns.exec(FW.ipt, "-A", "INPUT", "-i", "virbr0", "-p", "udp", "--dport", "53", "-j", "ACCEPT")
    assert vnetd("plan", netns=netns, state_dir=state_dir).returncode == 2
    assert vnetd("apply", netns=netns, state_dir=state_dir).returncode == 0
    lines = untagged(rules_of(netns, "INPUT"))
    assert lines[-1] == "-A INPUT -j REJECT --reject-with icmp-host-prohibited"
    assert lines[2:4] == ["-A INPUT -i virbr0 -p udp -m udp --dport 67 -j ACCEPT",
                          "-A INPUT -i virbr0 -p udp -m udp --dport 53 -j ACCEPT"]
    assert vnetd("plan", netns=netns, state_dir=state_dir).returncode == 0


def test_identical_foreign_rules_are_adopted_not_doubled(netns: Netns, state_dir: StateDir) -> None:
    """An imported ruleset applied on the host it came from: the rules are there, untagged;
    vnetd tags them where they stand instead of adding a second copy."""
    for rule in (["-p", "tcp", "--dport", "22", "-j", "ACCEPT"], ["-s", "192.0.2.0/24", "-j", "DROP"]):
        netns.exec(FW.ipt, "-A", "FORWARD", *rule)
    state_dir.write("10-fw.yaml", "firewall:\n  filter:\n    FORWARD:\n      rules:\n"
                                  "      - -p tcp -m tcp --dport 22 -j ACCEPT\n      - -s 192.0.2.0/24 -j DROP\n")
    assert vnetd("apply", netns=netns, state_dir=state_dir).returncode == 0
    lines = rules_of(netns, "FORWARD")
    assert len(lines) == 2 and all("vnetd:" in line for line in lines), lines
    assert untagged(lines) == ["-A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT", "-A FORWARD -s 192.0.2.0/24 -j DROP"]
    assert vnetd("plan", netns=netns, state_dir=state_dir).returncode == 0
