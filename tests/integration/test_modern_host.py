# SPDX-License-Identifier: MIT
"""The "modern KVM host" example (etc/examples/modern-host): bond0 over two NICs found
by MAC, VLAN 100 and 200 bridges, IPv6 on the management bridge, a second routing
table with its rules. ``vnetd check`` accepts it everywhere; ``vnetd plan`` finds the
NICs under the names this machine gives them; where the kernel has the bonding and
8021q modules it applies and converges (elsewhere that test is skipped and says why).
"""

from __future__ import annotations

import json

import pytest

from tests.integration.test_bond_vlan import kernel_has, need
from tests.support import ROOT, Netns, NetnsFactory, StateDir, vnetd

pytestmark = pytest.mark.kernel

EXAMPLE = ROOT / "etc" / "examples" / "modern-host"


@pytest.fixture
def host(make_netns: NetnsFactory, state_dir: StateDir) -> Netns:
    """Two stand-in NICs with the example's MACs, named as a newer kernel would name them."""
    ns, switch = make_netns("modern"), make_netns("lag")
    for name, mac, peer in (("enp65s0f0", "52:54:00:4d:00:01", "sw1"), ("enp65s0f1", "52:54:00:4d:00:02", "sw2")):
        ns.ip("link", "add", name, "address", mac, "type", "veth", "peer", "name", peer, "netns", switch.name)
        switch.ip("link", "set", peer, "up")
    state_dir.copy_from(EXAMPLE)
    return ns


def test_the_example_passes_check(state_dir: StateDir) -> None:
    state_dir.pin(None)  # the example's own files only
    state_dir.copy_from(EXAMPLE)
    result = vnetd("check", state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    assert "3 files valid (7 interfaces, 3 routes, 2 route rules, 1 sysctls, 0 chains" in result.stdout
    # check says what the kernel here cannot create (asked of the kernel, in a namespace of its own)
    bonding = ("warning: link.kind_missing: this kernel cannot create bond links (module bonding not available): "
               "bond0 will fail to apply until it is")
    vlans = ("warning: link.kind_missing: this kernel cannot create vlan links (module 8021q not available): "
             "bond0.100, bond0.200 will fail to apply until it is")
    assert (bonding in result.stderr) is not kernel_has("bond"), result.stderr
    assert (vlans in result.stderr) is not kernel_has("vlan"), result.stderr


def test_the_plan_finds_the_nics_by_mac_and_builds_the_stack(host: Netns, state_dir: StateDir) -> None:
    result = vnetd("plan", "--format", "json", netns=host, state_dir=state_dir)
    assert result.returncode == 2, result.stdout + result.stderr
    plan = json.loads(result.stdout)
    assert not plan["problems"]
    notes = {n["resource"]: n["message"] for n in plan["notes"]}
    assert notes["interface/eno1"] == "the NIC with the MAC 52:54:00:4d:00:01 is enp65s0f0 here"
    changes = {(c["resource"], c["field"]) for c in plan["changes"]}
    for created in ("bond0", "bond0.100", "bond0.200", "br100", "br200"):
        assert (f"interface/{created}", "exists") in changes
    assert {("interface/enp65s0f0", "controller"), ("interface/enp65s0f1", "controller")} <= changes
    assert ("route-rule/priority 1000 from 192.168.100.10/32 lookup 100", "rule") in changes
    assert ("route-rule/-6 priority 1000 from 2001:db8:100::10/128 lookup 100", "rule") in changes


def test_the_example_applies_and_converges(host: Netns, state_dir: StateDir) -> None:
    need("bond", "vlan")
    result = vnetd("apply", netns=host, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    for nic in ("enp65s0f0", "enp65s0f1"):
        assert (host.link(nic) or {}).get("master") == "bond0"
    assert (host.link("bond0.100") or {}).get("master") == "br100"
    assert (host.link("bond0.200") or {}).get("master") == "br200"
    assert "2001:db8:100::10/64" in host.ip("-6", "addr", "show", "dev", "br100")
    assert "via 192.168.100.1" in host.ip("route", "show", "table", "100")
    assert any(r.get("src") == "192.168.100.10" and r.get("table") == "100"  # type: ignore[union-attr]
               for r in host.json("-4", "rule"))
    again = vnetd("plan", netns=host, state_dir=state_dir)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout
