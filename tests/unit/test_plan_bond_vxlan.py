# SPDX-License-Identifier: MIT
"""The interface planner for bonds, VXLANs and VLAN options, on hand-built kernel
states (the kernel side: tests/integration/test_bond_vlan.py, test_vxlan.py), and
the requests the backend makes of the ops (decoded by pyroute2).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from tests.unit.fake_kernel import make_link
from vnetd.backends import rtnl
from vnetd.backends.netlink import NetlinkBackend, vlan_flags
from vnetd.desired.loader import SourceFile, load_sources
from vnetd.model.interfaces import BondInfo, Link, VlanInfo, VlanOptions, VxlanInfo
from vnetd.model.netstate import NetState
from vnetd.model.state import DesiredState
from vnetd.plan.actions import CreateLink, Phase, SetLinkOptions, SetLinkUp, SetMaster, SetMtu
from vnetd.plan.planner import Observed, plan

IP = ipaddress.ip_address


def desired(text: str) -> DesiredState:
    return load_sources([SourceFile("/etc/vnetd.d/10-host.yaml", text)])


BOND = """\
interfaces:
- name: eth1
  type: ethernet
  state: up
- name: eth2
  type: ethernet
  state: up
- name: bond0
  type: bond
  state: up
  mtu: 9000
  link-aggregation:
    mode: 802.3ad
    port: [eth1, eth2]
    options: {miimon: 100, lacp_rate: fast, xmit_hash_policy: layer3+4}
- name: bond0.100
  type: vlan
  state: up
  mtu: 9000
  vlan: {base-iface: bond0, id: 100, reorder-headers: false}
- name: br100
  type: linux-bridge
  state: up
  mtu: 9000
  bridge:
    port: [{name: bond0.100}]
"""


def nics(up: bool = True) -> list[Link]:
    return [make_link(2, "eth1", "veth", up=up), make_link(3, "eth2", "veth", up=up)]


def test_a_new_bond_takes_its_ports_down_first_and_stacks_in_order() -> None:
    result = plan(desired(BOND), Observed(net=NetState.build(nics(), [], [])))
    assert not result.problems
    ops = [(a.phase, a.op) for a in result.actions]
    create = next(op for _p, op in ops if isinstance(op, CreateLink) and op.kind == "bond")
    assert create.bond is not None and create.bond.mode == "802.3ad" and create.bond.ports is None
    assert dict(create.bond.options) == {"miimon": 100, "lacp_rate": 1, "xmit_hash_policy": 1}
    downs = [op.name for p, op in ops if p is Phase.PORT_DOWN and isinstance(op, SetLinkUp) and not op.up]
    assert downs == ["eth1", "eth2"]
    enslaved = {op.name: op.master for _p, op in ops if isinstance(op, SetMaster)}
    assert enslaved == {"eth1": "bond0", "eth2": "bond0", "bond0.100": "br100"}
    vlan = next(op for p, op in ops if isinstance(op, CreateLink) and op.kind == "vlan")
    assert vlan.vlan == VlanOptions(reorder_headers=False)
    assert [p for p, op in ops if isinstance(op, CreateLink)] == [Phase.CREATE_LINKS, Phase.CREATE_LINKS,
                                                                  Phase.CREATE_STACKED]
    # MTUs go up from the bottom of the stack: ports, bond, VLAN, bridge
    raised = [a.op.name for a in result.actions if isinstance(a.op, SetMtu)]  # a plan is in execution order
    assert raised.index("bond0") < raised.index("bond0.100") < raised.index("br100")
    assert all(p is not Phase.PORT_DOWN for p, op in ops if isinstance(op, SetLinkUp) and op.up)


def test_ports_already_down_are_enslaved_without_more_ado() -> None:
    result = plan(desired(BOND), Observed(net=NetState.build(nics(up=False), [], [])))
    assert not [a for a in result.actions if a.phase is Phase.PORT_DOWN]


def existing_bond(mode: int = 4, **options: int) -> NetState:
    bond = replace(make_link(4, "bond0", "bond", mtu=9000),
                   bond=BondInfo(mode, tuple(sorted({"miimon": 100, "lacp_rate": 1, "xmit_hash_policy": 1,
                                                     **options}.items()))))
    ports = [replace(link, master=4, mtu=9000) for link in nics()]
    vlan = replace(make_link(5, "bond0.100", "vlan", mtu=9000), link=4, vlan_id=100,
                   vlan=VlanInfo(0x8100, 0x0))
    bridge = make_link(6, "br100", "bridge", mtu=9000)
    return NetState.build([*ports, bond, replace(vlan, master=6), bridge], [], [])


def test_an_existing_bond_that_matches_is_nothing_to_do() -> None:
    assert plan(desired(BOND), Observed(net=existing_bond())).empty


def test_bond_options_change_live_but_not_the_mode() -> None:
    result = plan(desired(BOND), Observed(net=existing_bond(miimon=250)))
    assert [(a.op, a.field, a.want, a.have) for a in result.actions] == [
        (SetLinkOptions("bond0", "bond", bond_options=(("miimon", 100),)), "link-aggregation.options.miimon", 100,
         250)]
    wrong_mode = plan(desired(BOND), Observed(net=existing_bond(mode=1)))
    assert [p.message for p in wrong_mode.problems] == [
        "link-aggregation.mode is active-backup, declared 802.3ad (a bond changes mode only while down and "
        "without ports): the kernel cannot change it on a live link; delete it (state: absent) to re-create it"]


def test_vlan_flags_change_live() -> None:
    net = existing_bond()
    vlan = net.link("bond0.100")
    assert vlan is not None
    net.put_link(replace(vlan, vlan=VlanInfo(0x8100, 0x1)))  # reorder_hdr on, declared off
    result = plan(desired(BOND), Observed(net=net))
    assert [a.op for a in result.actions] == [SetLinkOptions("bond0.100", "vlan",
                                                             vlan=VlanOptions(reorder_headers=False))]
    assert vlan_flags(VlanOptions(reorder_headers=False)) == (0, 1)
    assert vlan_flags(VlanOptions(loose_binding=True, registration_protocol="mvrp")) == (0x4 | 0x8, 0x4 | 0x2 | 0x8)
    wrong = replace(vlan, vlan=VlanInfo(0x88A8, 0x0))
    net.put_link(wrong)
    text = BOND.replace("reorder-headers: false}", "reorder-headers: false, protocol: 802.1q}")
    assert "vlan.protocol is 802.1ad, declared 802.1q" in plan(desired(text), Observed(net=net)).problems[0].message


VXLAN = """\
interfaces:
- name: eth1
  type: ethernet
  state: up
  mtu: 1500
- name: vx100
  type: vxlan
  state: up
  vxlan: {id: 100, remote: 198.51.100.2, base-iface: eth1}
- name: brdmz
  type: linux-bridge
  state: up
  mtu: 1500
  bridge:
    port: [{name: vx100}]
"""


def test_a_new_vxlan_is_stacked_on_its_base_and_the_bridge_keeps_its_mtu() -> None:
    result = plan(desired(VXLAN), Observed(net=NetState.build([make_link(2, "eth1", "veth")], [], [])))
    create = next(a for a in result.actions if isinstance(a.op, CreateLink) and a.op.kind == "vxlan")
    assert create.phase is Phase.CREATE_STACKED and create.op.vxlan is not None
    assert create.op.vxlan.destination_port is None  # not written: not managed; created with 4789
    # the new VXLAN gets 1500 - 50: the bridge would follow it down, so its MTU is set last
    settle = [a for a in result.actions if isinstance(a.op, SetMtu) and a.op.name == "brdmz"]
    assert settle and settle[-1].have == 1450 and settle[-1].phase is Phase.MTU_DOWN


def test_a_live_vxlan_changes_remote_and_learning_but_not_its_id() -> None:
    def net_with(info: VxlanInfo) -> NetState:
        vx = replace(make_link(7, "vx100", "vxlan", mtu=1450), vxlan=info, master=8)
        return NetState.build([make_link(2, "eth1", "veth"), vx, make_link(8, "brdmz", "bridge")], [], [])

    moved = plan(desired(VXLAN), Observed(net=net_with(VxlanInfo(100, IP("198.51.100.9"), None, 2, 4789, True))))
    assert [a.op for a in moved.actions if isinstance(a.op, SetLinkOptions)] == [
        SetLinkOptions("vx100", "vxlan", vxlan_remote=IP("198.51.100.2"))]
    other = plan(desired(VXLAN), Observed(net=net_with(VxlanInfo(101, IP("198.51.100.2"), None, 2, 4789, True))))
    assert other.problems[0].message.startswith("vxlan.id is 101, declared 100")


def test_the_backend_encodes_a_bond_and_a_vxlan_as_created() -> None:
    result = plan(desired(BOND), Observed(net=NetState.build(nics(), [], [])))
    create = next(a.op for a in result.actions if isinstance(a.op, CreateLink) and a.op.kind == "bond")
    data = NetlinkBackend._kind_data(create, lambda name: {"eth1": 2, "eth2": 3}[name])
    msg = ifinfmsg(rtnl.link_create("bond0", "bond", data=data).encode(1))
    msg.decode()
    info = msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert info.get_attr("IFLA_BOND_MODE") == 4 and info.get_attr("IFLA_BOND_MIIMON") == 100
    assert info.get_attr("IFLA_BOND_AD_LACP_RATE") == 1 and info.get_attr("IFLA_BOND_XMIT_HASH_POLICY") == 1
    vx = plan(desired(VXLAN), Observed(net=NetState.build([make_link(2, "eth1", "veth")], [], [])))
    op = next(a.op for a in vx.actions if isinstance(a.op, CreateLink) and a.op.kind == "vxlan")
    msg = ifinfmsg(rtnl.link_create("vx100", "vxlan", data=NetlinkBackend._kind_data(op, lambda n: 2)).encode(1))
    msg.decode()
    info = msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert (info.get_attr("IFLA_VXLAN_ID"), info.get_attr("IFLA_VXLAN_GROUP"), info.get_attr("IFLA_VXLAN_LINK"),
            info.get_attr("IFLA_VXLAN_PORT")) == (100, "198.51.100.2", 2, 4789)


def test_show_writes_bonds_and_vxlans_back_as_a_state_that_plans_nothing() -> None:
    from vnetd.show import _yaml, interfaces_section

    net = existing_bond()
    vx = replace(make_link(7, "vx100", "vxlan", mtu=1450), vxlan=VxlanInfo(100, IP("198.51.100.2"), None, 2, 4789,
                                                                           True))
    net.put_link(vx)
    text = _yaml({"interfaces": interfaces_section(net)})
    assert "link-aggregation:\n    mode: 802.3ad\n    port:\n    - eth1\n    - eth2\n" in text
    assert "vxlan:\n    id: 100\n    remote: 198.51.100.2\n    base-iface: eth1\n" in text
    assert plan(desired(text), Observed(net=net)).empty


def test_a_trial_of_live_option_changes_is_rolled_back() -> None:
    """apply --confirm: the VXLAN's remote, a bond's option, a VLAN's flags come back as recorded."""
    from vnetd.model.checkpoint import Checkpoint
    from vnetd.plan.restore import record_links, restore_plan, scope_of

    before = existing_bond()
    vx = replace(make_link(7, "vx100", "vxlan"), vxlan=VxlanInfo(100, IP("198.51.100.9"), None, 2, 4789, False))
    before.put_link(vx)
    trial = BOND.replace("miimon: 100", "miimon: 250") + """\
- name: vx100
  type: vxlan
  vxlan: {id: 100, remote: 198.51.100.2, learning: true}
"""
    change = plan(desired(trial), Observed(net=before))
    scope = scope_of(change, before)
    assert {"bond0", "vx100"} <= scope.links
    links, addresses, routes = record_links(scope.links, before)
    cp = Checkpoint(0.0, "ns", links, addresses, routes)
    assert Checkpoint.from_json(cp.to_json()) == cp
    after = existing_bond(miimon=250)
    after.put_link(replace(vx, vxlan=VxlanInfo(100, IP("198.51.100.2"), None, 2, 4789, True)))
    ops = [a.op for a in restore_plan(cp, after, {}, {}, None).actions]
    assert SetLinkOptions("bond0", "bond", bond_options=(("miimon", 100),)) in ops
    assert SetLinkOptions("vx100", "vxlan", vxlan_remote=IP("198.51.100.9")) in ops
    assert SetLinkOptions("vx100", "vxlan", vxlan_learning=False) in ops
    assert restore_plan(cp, before, {}, {}, None).empty
