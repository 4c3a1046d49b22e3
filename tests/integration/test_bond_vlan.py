# SPDX-License-Identifier: MIT
"""Bonds and VLANs against the real kernel (issue 14, item 4), where it has them.

The kernel of the machine these tests were written on has neither the bonding nor
the 8021q module: there, every test here is skipped with the reason "kernel
module bonding not available on this machine" (or 8021q), decided by trying to
create such a link in a throw-away namespace, never assumed. Their netlink
encoding is proven against pyroute2 everywhere (tests/unit/test_rtnl_codec.py).
``ip -d -j link`` is the oracle.
"""

from __future__ import annotations

import functools

import pytest

from tests.support import PREFIX, Netns, NetnsFactory, StateDir, delete_netns, sh, vnetd
from tests.traffic import eventually, ping

pytestmark = pytest.mark.kernel

#: link kind -> the kernel module that provides it
MODULES = {"bond": "bonding", "vlan": "8021q"}


@functools.cache
def kernel_has(kind: str) -> bool:
    """Whether this kernel creates links of ``kind`` (asked in a throw-away namespace;
    the kernel loads the module itself if it is installed)."""
    name = f"{PREFIX}-probe-{kind}"
    sh("ip", "netns", "add", name)
    try:
        args = ["link", "add", "probe0", "type", kind]
        if kind == "vlan":
            sh("ip", "-n", name, "link", "add", "base0", "type", "veth", "peer", "name", "base1")
            args = ["link", "add", "link", "base0", "name", "probe0", "type", "vlan", "id", "5"]
        return sh("ip", "-n", name, *args, check=False).returncode == 0
    finally:
        delete_netns(name)


def need(*kinds: str) -> None:
    for kind in kinds:
        if not kernel_has(kind):
            pytest.skip(f"kernel module {MODULES[kind]} not available on this machine")


BOND = """\
interfaces:
- name: eth1
  type: ethernet
  state: up
  identifier: mac-address
  mac-address: 52:54:00:b0:00:01
- name: eth2
  type: ethernet
  state: up
  identifier: mac-address
  mac-address: 52:54:00:b0:00:02
- name: bond0
  type: bond
  state: up
  mtu: 9000
  link-aggregation:
    mode: active-backup
    port: [eth1, eth2]
    options:
      miimon: 100
      primary: eth1
      fail_over_mac: none
"""

VLAN = """\
- name: bond0.100
  type: vlan
  state: up
  vlan:
    base-iface: bond0
    id: 100
    protocol: 802.1q
    reorder-headers: true
- name: br100
  type: linux-bridge
  state: up
  ipv4:
    enabled: true
    address: [192.0.2.1/24]
  bridge:
    options:
      stp: {enabled: false, forward-delay: 0}
    port:
    - name: bond0.100
"""


@pytest.fixture
def host(make_netns: NetnsFactory) -> tuple[Netns, Netns]:
    """A host with two NICs (chosen MACs) cabled to a switch namespace (a bridge)."""
    ns, switch = make_netns("bond"), make_netns("switch")
    for i in (1, 2):
        ns.ip("link", "add", f"eth{i}", "address", f"52:54:00:b0:00:0{i}", "type", "veth", "peer", "name",
              f"p{i}", "netns", switch.name)
    switch.ip("link", "add", "sw0", "type", "bridge")
    for name in ("p1", "p2"):
        switch.ip("link", "set", name, "master", "sw0", "up")
    switch.ip("link", "set", "sw0", "up")
    return ns, switch


def info_data(ns: Netns, name: str) -> dict[str, object]:
    link = ns.link(name)
    assert link is not None, name
    return link["linkinfo"]["info_data"]  # type: ignore[index,no-any-return]


def test_bond_over_two_nics(host: tuple[Netns, Netns], state_dir: StateDir) -> None:
    need("bond")
    ns, _switch = host
    ns.ip("link", "set", "eth1", "up")  # a bond takes only ports that are down: vnetd takes them down first
    state_dir.write("10-bond.yaml", BOND)
    result = vnetd("apply", netns=ns, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    data = info_data(ns, "bond0")
    assert data["mode"] == "active-backup" and data["miimon"] == 100 and data["primary"] == "eth1"
    for port in ("eth1", "eth2"):
        link = ns.link(port)
        assert link is not None and link["master"] == "bond0" and link["mtu"] == 9000 and "UP" in link["flags"]
    again = vnetd("plan", netns=ns, state_dir=state_dir)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout


def test_bond_options_and_ports_are_repaired(host: tuple[Netns, Netns], state_dir: StateDir) -> None:
    need("bond")
    ns, _switch = host
    state_dir.write("10-bond.yaml", BOND)
    assert vnetd("apply", netns=ns, state_dir=state_dir).returncode == 0
    ns.ip("link", "set", "bond0", "type", "bond", "miimon", "250")
    ns.ip("link", "set", "eth2", "nomaster")
    plan = vnetd("plan", netns=ns, state_dir=state_dir)
    assert "~ interface/bond0: link-aggregation.options.miimon want 100, have 250" in plan.stdout, plan.stdout
    assert "~ interface/eth2: controller want bond0" in plan.stdout
    assert vnetd("apply", netns=ns, state_dir=state_dir).returncode == 0
    assert info_data(ns, "bond0")["miimon"] == 100 and (ns.link("eth2") or {}).get("master") == "bond0"


def test_a_bonds_mode_cannot_change_live(host: tuple[Netns, Netns], state_dir: StateDir) -> None:
    need("bond")
    ns, _switch = host
    ns.ip("link", "add", "bond0", "type", "bond", "mode", "balance-rr")
    state_dir.write("10-bond.yaml", BOND)
    plan = vnetd("plan", netns=ns, state_dir=state_dir)
    assert plan.returncode == 1
    assert "! interface/bond0: link-aggregation.mode is balance-rr, declared active-backup" in plan.stdout


def test_vlan_on_the_bond_in_a_bridge_carries_traffic(host: tuple[Netns, Netns], state_dir: StateDir) -> None:
    need("bond", "vlan")
    ns, switch = host
    switch.ip("link", "add", "link", "sw0", "name", "sw0.100", "type", "vlan", "id", "100")
    switch.ip("addr", "add", "192.0.2.2/24", "dev", "sw0.100")
    switch.ip("link", "set", "sw0.100", "up")
    state_dir.write("10-host.yaml", BOND + VLAN)
    result = vnetd("apply", netns=ns, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    data = info_data(ns, "bond0.100")
    assert data["id"] == 100 and data["protocol"] == "802.1Q" and "REORDER_HDR" in data["flags"]  # type: ignore[operator]
    assert (ns.link("bond0.100") or {}).get("master") == "br100"
    assert eventually(lambda: ping(ns, "192.0.2.2"), timeout=10), "no echo over the VLAN on the bond"
    again = vnetd("plan", netns=ns, state_dir=state_dir)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout


def test_vlan_flags_are_repaired(make_netns: NetnsFactory, state_dir: StateDir) -> None:
    need("vlan")
    ns = make_netns("vlan")
    ns.veth("eth1", "peer1")
    state_dir.write("10-vlan.yaml", """\
interfaces:
- name: eth1
  type: ethernet
  state: up
- name: eth1.200
  type: vlan
  state: up
  vlan: {base-iface: eth1, id: 200, protocol: 802.1ad, loose-binding: true}
""")
    assert vnetd("apply", netns=ns, state_dir=state_dir).returncode == 0
    data = info_data(ns, "eth1.200")
    assert data["protocol"] == "802.1ad" and "LOOSE_BINDING" in data["flags"]  # type: ignore[operator]
    ns.ip("link", "set", "eth1.200", "type", "vlan", "loose_binding", "off")
    assert vnetd("apply", netns=ns, state_dir=state_dir).returncode == 0
    assert "LOOSE_BINDING" in info_data(ns, "eth1.200")["flags"]  # type: ignore[operator]


def test_the_probe_names_the_module_it_missed() -> None:
    """Where a module is missing, the skip says which and why (not a blanket skip)."""
    for kind, module in MODULES.items():
        if not kernel_has(kind):
            with pytest.raises(pytest.skip.Exception, match=f"kernel module {module} not available on this machine"):
                need(kind)
        else:
            need(kind)  # no skip where the kernel has it
