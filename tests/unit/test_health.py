# SPDX-License-Identifier: MIT
"""The ``health:`` section (issue 12): probes as written, and what is refused."""

from __future__ import annotations

import ipaddress

import pytest

from tests.support import StateDir
from tests.unit.test_loader import Broken, bad, issues_of, shown
from vnetd.desired.loader import load_state_dir
from vnetd.model.health import ProbeKind


def test_probes_as_written(state_dir: StateDir) -> None:
    state_dir.write("10-h.yaml", """\
        health:
          probes:
          - tcp: 192.0.2.10:22
            name: ssh-gw
            timeout: 1.5
          - icmp: 2001:db8::1
          - tcp: "[2001:db8::2]:443"
          - address: 192.0.2.1/24
            interface: br0
        """)
    probes = load_state_dir(str(state_dir)).probes
    assert [(p.name, p.kind, p.timeout) for p in probes] == [
        ("ssh-gw", ProbeKind.TCP, 1.5), ("2001:db8::1", ProbeKind.ICMP, 2.0),
        ("[2001:db8::2]:443", ProbeKind.TCP, 2.0), ("192.0.2.1/24", ProbeKind.ADDRESS, 2.0)]
    assert probes[0].address == ipaddress.ip_address("192.0.2.10") and probes[0].port == 22
    assert probes[2].address == ipaddress.ip_address("2001:db8::2") and probes[2].port == 443
    assert probes[3].interface == "br0" and str(probes[3].interface_address) == "192.0.2.1/24"
    assert probes[0].describe() == "tcp connect 192.0.2.10:22"


def probe(text: str) -> str:
    return "health:\n  probes:\n" + text


BROKEN_HEALTH: list[Broken] = [
    bad("probe-two-kinds", probe("  - tcp: 192.0.2.1:22\n    icmp: 192.0.2.1\n"), 3, "health.probes[0]",
        "a probe has exactly one of icmp, tcp, address"),
    bad("probe-no-kind", probe("  - name: x\n"), 3, "health.probes[0]", "exactly one of icmp, tcp, address"),
    bad("probe-host-name", probe("  - icmp: gateway.example.com\n"), 3, "health.probes[0].icmp",
        "is not an IP address (host names are not resolved)"),
    bad("probe-tcp-without-port", probe("  - tcp: 192.0.2.1\n"), 3, "health.probes[0].tcp",
        "is not ADDRESS:PORT"),
    bad("probe-port-out-of-range", probe("  - tcp: 192.0.2.1:70000\n"), 3, "health.probes[0].tcp",
        "port 70000 is out of range 1-65535"),
    bad("probe-address-without-interface", probe("  - address: 192.0.2.1/24\n"), 3,
        "health.probes[0].interface", "required: the link the address must be on"),
    bad("probe-timeout-too-long", probe("  - icmp: 192.0.2.1\n    timeout: 600\n"), 4,
        "health.probes[0].timeout", "expected seconds 0.1-30"),
    bad("probe-unknown-key", probe("  - icmp: 192.0.2.1\n    retries: 3\n"), 4, "health.probes[0].retries",
        "unknown key in a probe"),
    bad("probe-same-name-twice", probe("  - icmp: 192.0.2.1\n    name: gw\n  - icmp: 192.0.2.2\n    name: gw\n"),
        5, "", "probe 'gw' is defined twice"),
]


@pytest.mark.parametrize("case", BROKEN_HEALTH, ids=[c.id for c in BROKEN_HEALTH])
def test_broken_health(case: Broken, state_dir: StateDir) -> None:
    case.write(state_dir)
    issues = issues_of(state_dir)
    assert any(case.matches(i, state_dir) for i in issues), shown(issues)
