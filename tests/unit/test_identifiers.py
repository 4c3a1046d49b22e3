# SPDX-License-Identifier: MIT
"""NICs found by their MAC (``identifier: mac-address``): the profile name stands for
the kernel's name everywhere, ambiguity is a Problem and never a guess. Pure; the
kernel side (veths with chosen MACs) is tests/integration/test_nics_by_mac.py.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from tests.unit.fake_kernel import make_link
from vnetd.desired.loader import SourceFile, load_sources
from vnetd.model.interfaces import Link
from vnetd.model.netstate import NetState
from vnetd.model.state import DesiredState
from vnetd.plan.actions import AddAddress, AddRoute, AddRouteRule, SetMaster, SetMtu, SetSysctl
from vnetd.plan.identifiers import ResolutionMemo, resolve
from vnetd.plan.planner import Observed, plan

MAC = "52:54:00:aa:bb:01"
OTHER = "52:54:00:aa:bb:02"

STATE = f"""\
interfaces:
- name: eth1
  type: ethernet
  state: up
  identifier: mac-address
  mac-address: {MAC.upper()}
  mtu: 9000
- name: br0
  type: linux-bridge
  state: up
  mtu: 9000
  ipv4:
    enabled: true
    address: [192.0.2.1/24]
  bridge:
    port: [{{name: eth1}}]
- name: eth1.100
  type: vlan
  vlan: {{base-iface: eth1, id: 100}}
routes:
  config:
  - destination: 198.51.100.0/24
    next-hop-interface: eth1
route-rules:
  config:
  - iif: eth1
    family: ipv4
    route-table: 100
sysctl:
  net.ipv4.conf.eth1.rp_filter: 2
"""


def desired(text: str = STATE) -> DesiredState:
    return load_sources([SourceFile("/etc/vnetd.d/10-host.yaml", text)])


def host(*links: Link) -> NetState:
    return NetState.build(links, [], [])


def nic(index: int, name: str, mac: str, perm: str | None = None, kind: str | None = None) -> Link:
    return replace(make_link(index, name, kind, mac=mac, mtu=1500), perm_mac=perm)


def test_the_profile_name_stands_for_the_nic_everywhere() -> None:
    resolution = resolve(desired(), host(nic(2, "enp3s0f1", MAC)))
    state = resolution.desired
    assert not resolution.problems
    eth1 = state.interfaces[0]
    assert (eth1.name, eth1.profile, eth1.match_mac) == ("enp3s0f1", "eth1", MAC)
    assert state.interfaces[1].bridge is not None and state.interfaces[1].bridge.ports == ("enp3s0f1",)
    assert state.interfaces[2].vlan_base == "enp3s0f1" and state.interfaces[2].name == "eth1.100"
    assert state.routes[0].next_hop_interface == "enp3s0f1"
    assert state.route_rules[0].iif == "enp3s0f1"
    assert state.sysctls[0].key == "net.ipv4.conf.enp3s0f1.rp_filter"
    assert [n.describe() for n in resolution.notes] == [f"interface/eth1: the NIC with the MAC {MAC} is enp3s0f1 here"]


def test_the_plan_acts_on_the_kernels_name() -> None:
    result = plan(desired(), Observed(net=host(nic(2, "enp3s0f1", MAC)), sysctls={
        "net.ipv4.conf.enp3s0f1.rp_filter": "0"}))
    ops = [a.op for a in result.actions]
    assert SetMtu("enp3s0f1", 9000) in ops and SetMaster("enp3s0f1", "br0") in ops
    assert SetSysctl("net.ipv4.conf.enp3s0f1.rp_filter", "2") in ops
    assert any(isinstance(op, AddRoute) and op.device == "enp3s0f1" for op in ops)
    assert any(isinstance(op, AddRouteRule) and op.rule.iif == "enp3s0f1" for op in ops)
    assert "interface/enp3s0f1" in {a.resource for a in result.actions}


def test_swapped_names_follow_the_macs() -> None:
    """The hardware swapped them: the kernel's eth1 is the NIC that had eth0's MAC."""
    text = STATE + """\
  net.ipv4.conf.eth0.rp_filter: 1
"""
    text = text.replace("interfaces:\n", f"interfaces:\n- name: eth0\n  type: ethernet\n  identifier: mac-address\n"
                                         f"  mac-address: {OTHER}\n  mtu: 1500\n", 1)
    resolution = resolve(desired(text), host(nic(2, "eth0", MAC), nic(3, "eth1", OTHER)))
    names = {i.profile: i.name for i in resolution.desired.interfaces if i.profile}
    assert names == {"eth0": "eth1", "eth1": "eth0"}
    assert {s.key for s in resolution.desired.sysctls} == {"net.ipv4.conf.eth0.rp_filter",
                                                           "net.ipv4.conf.eth1.rp_filter"}
    assert dict((s.key, s.value) for s in resolution.desired.sysctls)["net.ipv4.conf.eth0.rp_filter"] == "2"
    notes = " ".join(n.message for n in resolution.notes)
    assert "the link named eth1 here is another device, and eth1 in the state files means this NIC" in notes


def test_no_nic_with_the_mac_is_a_problem_and_nothing_refers_to_it() -> None:
    resolution = resolve(desired(), host(nic(2, "enp3s0f1", OTHER)))
    state = resolution.desired
    messages = [p.describe() for p in resolution.problems]
    assert messages[0] == (f"interface/eth1: no NIC has the MAC {MAC} (identifier: mac-address); nothing that "
                           "refers to 'eth1' is planned")
    assert [i.name for i in state.interfaces] == ["br0"]  # eth1 and the VLAN on it wait
    assert state.interfaces[0].bridge is not None and state.interfaces[0].bridge.ports == ()
    assert not state.routes and not state.route_rules and not state.sysctls
    assert len(messages) == 6  # the lookup, the port, the VLAN, the route, the rule, the sysctl key
    result = plan(desired(), Observed(net=host(nic(2, "eth1", OTHER))))  # the kernel's own eth1 is not it
    assert not any("eth1" in str(a.op) for a in result.actions), result.actions


def test_two_nics_with_the_mac_is_a_problem_never_a_guess() -> None:
    resolution = resolve(desired(), host(nic(2, "enp3s0f1", MAC), nic(3, "enp3s0f2", MAC)))
    assert resolution.problems[0].message.startswith(f"2 NICs have the MAC {MAC}: enp3s0f1, enp3s0f2; vnetd does "
                                                     "not guess")
    assert [i.name for i in resolution.desired.interfaces] == ["br0"]


def test_bridges_vlans_and_bond_ports_are_not_candidates() -> None:
    """A bridge shows its port's MAC, a VLAN its parent's; a bond's port the bond's (its
    permanent MAC stays the hardware's)."""
    links = (nic(2, "enp3s0f1", MAC), nic(4, "br9", MAC, kind="bridge"), nic(5, "enp3s0f1.9", MAC, kind="vlan"),
             nic(6, "enp4s0", MAC, perm=OTHER))
    resolution = resolve(desired(), host(*links))
    assert not resolution.problems and resolution.desired.interfaces[0].name == "enp3s0f1"
    by_perm = resolve(desired(), host(nic(6, "enp4s0", OTHER, perm=MAC), nic(7, "enp5s0", OTHER)))
    assert by_perm.desired.interfaces[0].name == "enp4s0"


def test_a_nic_declared_by_name_too_is_a_problem() -> None:
    text = STATE.replace("interfaces:\n", "interfaces:\n- name: enp3s0f1\n  type: ethernet\n  mtu: 1500\n", 1)
    resolution = resolve(desired(text), host(nic(2, "enp3s0f1", MAC)))
    assert "the NIC with the MAC 52:54:00:aa:bb:01 is enp3s0f1, which is also declared by name" in \
        resolution.problems[0].message


def test_profile_name_and_name_as_nmstate_shows_them() -> None:
    """``name`` is what the NIC was called where the file was written; ``profile-name``
    is what the files call it."""
    text = f"""\
interfaces:
- name: eth1
  profile-name: uplink
  type: ethernet
  identifier: mac-address
  mac-address: {MAC}
- name: br0
  type: linux-bridge
  bridge:
    port: [{{name: uplink}}]
"""
    state = resolve(desired(text), host(nic(2, "enp3s0f1", MAC), nic(3, "eth1", OTHER))).desired
    assert (state.interfaces[0].name, state.interfaces[0].profile) == ("enp3s0f1", "uplink")
    assert state.interfaces[1].bridge is not None and state.interfaces[1].bridge.ports == ("enp3s0f1",)


def test_the_rewrite_is_reused_while_the_nics_stay() -> None:
    memo = ResolutionMemo()
    state = desired()
    net = host(nic(2, "enp3s0f1", MAC))
    first = memo.resolve(state, net)
    net.put_link(nic(9, "vnet0", "fe:54:00:00:00:09"))  # a guest's tap appears
    assert memo.resolve(state, net).desired is first.desired  # the planner's memos stay valid
    net.put_link(nic(2, "wan0", MAC))  # udev renamed the NIC
    assert memo.resolve(state, net).desired.interfaces[0].name == "wan0"
    plain = desired("interfaces:\n- {name: eth1, type: ethernet}\n")
    assert memo.resolve(plain, net).desired is plain  # nothing found by MAC: nothing to do


def test_address_of_a_nic_found_by_mac() -> None:
    text = f"interfaces:\n- name: eth1\n  type: ethernet\n  identifier: mac-address\n  mac-address: {MAC}\n" \
           "  ipv4: {enabled: true, address: [203.0.113.5/24]}\n"
    result = plan(desired(text), Observed(net=host(nic(2, "ens1", MAC))))
    assert [a.op for a in result.actions] == [AddAddress("ens1", ipaddress.ip_interface("203.0.113.5/24"))]
