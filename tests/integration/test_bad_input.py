# SPDX-License-Identifier: MIT
"""Bad state files against the real kernel: ``vnetd check``, ``plan`` and ``apply`` all
exit 1 with the documented error, and the namespace is byte-for-byte unchanged.

One namespace serves the whole module: a host with a stand-in ``eth1`` (a veth)
already converged to a baseline (br0 with eth1, an address, a route, a sysctl and
firewall rules). Every case's state directory holds the broken file(s) next to a
valid ``05-pending.yaml`` that *would* change links, addresses, routes, a routing
rule, a sysctl and netfilter: applying any part of a directory with an invalid file must change nothing.
The catalogues are the unit tests' (tests/unit/test_loader.py, test_rule_syntax.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import PREFIX, Netns, StateDir, _counter, delete_netns, sh, vnetd
from tests.unit.test_firewall6 import BROKEN_FIREWALL6, BROKEN_KERNEL6, BROKEN_XTABLES6
from tests.unit.test_loader import BROKEN, Broken
from tests.unit.test_rule_syntax import BROKEN_FIREWALL, BROKEN_KERNEL, BROKEN_XTABLES

pytestmark = pytest.mark.kernel

BASELINE = """\
interfaces:
- name: eth1
  type: ethernet
  state: up
  mtu: 9000
- name: br0
  type: linux-bridge
  state: up
  mtu: 9000
  ipv4:
    enabled: true
    address: [192.0.2.1/24]
  bridge:
    options:
      stp: {enabled: false, forward-delay: 0}
    port: [{name: eth1}]
routes:
  config:
  - destination: 198.51.100.0/24
    next-hop-address: 192.0.2.254
    next-hop-interface: br0
sysctl:
  net.ipv4.ip_forward: 1
firewall:
  filter:
    FORWARD:
      rules:
      - -i br0 -o br0 -j ACCEPT
  nat:
    POSTROUTING:
      rules:
      - -s 192.0.2.0/24 ! -o br0 -j MASQUERADE
firewall6:
  filter:
    FORWARD:
      rules:
      - -i br0 -o br0 -j ACCEPT
"""

#: Valid on its own and different from the baseline in every kind of resource.
PENDING = """\
interfaces:
- name: brpending
  type: linux-bridge
  state: up
  mtu: 1400
  ipv4:
    enabled: true
    address: [203.0.113.1/24]
routes:
  config:
  - destination: 203.0.113.128/25
    next-hop-address: 203.0.113.254
route-rules:
  config:
  - ip-from: 203.0.113.0/24
    route-table: 100
sysctl:
  net.ipv4.ip_default_ttl: 99
firewall:
  raw:
    PREROUTING:
      rules:
      - -s 203.0.113.99/32 -j DROP
  filter:
    pending:
      rules:
      - -j RETURN
firewall6:
  raw:
    PREROUTING:
      rules:
      - -s 2001:db8::99 -j DROP
"""
PROBE_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv4.ip_default_ttl")

#: every interface/route case, every firewall/sysctl case the loader catches; the rules only
#: libxtables or the kernel refuse go together in one file (test_every_refused_rule_...)
CASES: list[Broken] = BROKEN + BROKEN_FIREWALL + BROKEN_FIREWALL6
RULE_CASES: list[Broken] = BROKEN_XTABLES + BROKEN_KERNEL + BROKEN_XTABLES6 + BROKEN_KERNEL6


@pytest.fixture(scope="module")
def host() -> Iterator[Netns]:
    """A namespace converged to BASELINE, shared by every case of this module."""
    name = f"{PREFIX}-{next(_counter)}-badinput"
    sh("ip", "netns", "add", name)
    try:
        ns = Netns(name)
        ns.ip("link", "set", "lo", "up")
        ns.veth("eth1", "uplink")  # eth1 is the stand-in NIC; its peer stays in the namespace
        ns.ip("link", "set", "uplink", "up")
        yield ns
    finally:
        delete_netns(name)


@pytest.fixture(scope="module")
def baseline(host: Netns, tmp_path_factory: pytest.TempPathFactory) -> Netns:
    state = StateDir(tmp_path_factory.mktemp("baseline") / "vnetd.d")
    state.write("10-baseline.yaml", BASELINE)
    result = vnetd("apply", netns=host, state_dir=state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert vnetd("plan", netns=host, state_dir=state).returncode == 0
    host.settled_snapshot()
    return host


def observe(ns: Netns) -> tuple[str, str, str]:
    return ns.snapshot(), ns.iptables_save() + ns.ip6tables_save(), ns.exec("sysctl", *PROBE_SYSCTLS).stdout


def test_pending_file_alone_would_change_everything(baseline: Netns, tmp_path: Path) -> None:
    """Without a broken file next to it, 05-pending.yaml is valid and has work to do."""
    state = StateDir(tmp_path / "vnetd.d")
    state.write("05-pending.yaml", PENDING)
    result = vnetd("plan", "--format", "json", netns=baseline, state_dir=state)
    assert result.returncode == 2, result.stderr
    resources = {c["resource"] for c in json.loads(result.stdout)["changes"]}
    assert {"interface/brpending", "sysctl/net.ipv4.ip_default_ttl", "firewall/raw/PREROUTING",
            "firewall/filter/pending", "firewall6/raw/PREROUTING"} <= resources, resources
    assert any(r.startswith("route/203.0.113.128/25") for r in resources), resources
    assert "route-rule/from 203.0.113.0/24 lookup 100" in resources, resources


def test_catalogue_is_large_and_mixed() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    texts = [text for c in CASES for _, text in c.files]
    for section in ("interfaces:", "routes:", "route-rules:", "firewall:", "sysctl:"):
        assert sum(section in t for t in texts) >= 5, section


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(case: Broken, baseline: Netns, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "vnetd.d")
    state.write("05-pending.yaml", PENDING)
    case.write(state)
    before = observe(baseline)
    with ThreadPoolExecutor(3) as pool:  # each refuses before touching anything: no need to wait in turn
        results = pool.map(lambda command: (command, vnetd(command, netns=baseline, state_dir=state)),
                           ("check", "plan", "apply"))
    for command, result in results:
        assert result.returncode == 1, f"vnetd {command}: {result.stdout}{result.stderr}"
        for text in case.expected(state):
            assert text in result.stderr, f"vnetd {command}: {result.stderr}"
        assert "Traceback" not in result.stderr
        assert not result.stdout.strip(), f"vnetd {command} reported work on invalid files: {result.stdout}"
    after = observe(baseline)
    assert after[0] == before[0], "links, addresses, routes or rules changed"
    assert after[1] == before[1], "netfilter changed"
    assert after[2] == before[2], "a sysctl changed"


def test_every_refused_rule_is_reported_in_one_round_and_changes_nothing(baseline: Netns, tmp_path: Path) -> None:
    """All the rules libxtables or the kernel refuse, in one file: check, plan and apply
    each report every one of them, at its line, and change nothing (each case's own
    message is checked by tests/unit/test_rule_syntax.py)."""
    state = StateDir(tmp_path / "vnetd.d")
    state.write("05-pending.yaml", PENDING)
    by_place: dict[tuple[str, str, str], list[str]] = {}
    for case in RULE_CASES:
        rule = case.files[0][1].splitlines()[-1].removeprefix("      - ")
        section, table, chain = case.path.split(".")[0:3]
        by_place.setdefault((section, table, chain), []).append(rule)
    lines = []
    for section in dict.fromkeys(s for s, _, _ in by_place):
        lines.append(f"{section}:")
        for table in dict.fromkeys(t for s, t, _ in by_place if s == section):
            lines.append(f"  {table}:")
            for (s, t, chain), rules in by_place.items():
                if (s, t) == (section, table):
                    lines += [f"    {chain}:", "      rules:"] + [f"      - {r}" for r in rules]
    state.write("10-rules.yaml", "\n".join(lines) + "\n")
    before = observe(baseline)
    for command in ("check", "plan", "apply"):
        result = vnetd(command, netns=baseline, state_dir=state)
        assert result.returncode == 1, f"vnetd {command}: {result.stdout}{result.stderr}"
        assert f"{len(RULE_CASES)} errors in the state files" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert not result.stdout.strip(), f"vnetd {command} reported work on invalid files: {result.stdout}"
    after = observe(baseline)
    assert after == before, "the namespace changed"
