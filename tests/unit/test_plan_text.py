# SPDX-License-Identifier: MIT
"""``vnetd plan``'s text says what a change will be: a new link with its settings,
which address is added or removed, a chain's rules as a diff of their text (rules
vnetd wrote and no longer declares by their text too), and a pruned chain's rules.
Pure: plans from hand-built kernel states and actions."""

from __future__ import annotations

import ipaddress

from tests.unit.test_plan_interfaces import bridge, bridge_link, eth, net, nic, plan_of
from vnetd.model.firewall import ChainMode, Rule
from vnetd.model.interfaces import Address, IfType, Interface, IpConfig, StpOptions
from vnetd.model.netstate import NetState
from vnetd.plan.actions import Action, Phase, Plan, PruneChain, SyncChain
from vnetd.plan.render import plan_json, plan_text

ip = ipaddress.ip_interface


def test_a_new_bridge_shows_its_settings_and_addresses() -> None:
    br0 = bridge("br0", "eth1", stp=StpOptions(enabled=False, forward_delay=0), mac="52:54:00:00:00:01",
                 ipv4=IpConfig(True, (ip("192.0.2.1/24"),)))
    text = plan_text(plan_of(eth("eth1"), br0, observed=net(nic(2, "eth1"))))
    lines = text.splitlines()
    assert ("+ interface/br0: exists want linux-bridge, have (none); created with bridge.options.stp "
            "{enabled: false, forward-delay: 0}, mac-address 52:54:00:00:00:01") in lines, text
    assert "+ interface/br0: ipv4.address add 192.0.2.1/24" in lines, text
    assert "~ interface/eth1: controller want br0, have (none)" in lines, text
    assert lines[-1].endswith("changes pending")


def test_veth_and_vlan_show_their_peer_and_parent() -> None:
    veth = Interface("v0", IfType.VETH, veth_peer="v1")
    vlan = Interface("eth1.100", IfType.VLAN, vlan_base="eth1", vlan_id=100)
    text = plan_text(plan_of(eth("eth1"), veth, vlan, observed=net(nic(2, "eth1"))))
    assert "+ interface/v0: exists want veth, have (none); created with veth.peer v1" in text, text
    assert ("+ interface/eth1.100: exists want vlan, have (none); created with vlan.base-iface eth1, vlan.id 100"
            in text), text


def test_which_address_is_added_and_which_removed() -> None:
    observed = NetState.build((bridge_link(3, "br0"),), (Address(3, ip("192.0.2.9/24")),
                                                         Address(3, ip("203.0.113.1/24"))), ())
    br0 = bridge("br0", ipv4=IpConfig(True, (ip("203.0.113.1/24"), ip("198.51.100.1/24"))))
    lines = plan_text(plan_of(br0, observed=observed)).splitlines()
    assert "- interface/br0: ipv4.address remove 192.0.2.9/24" in lines
    assert "+ interface/br0: ipv4.address add 198.51.100.1/24" in lines
    assert not any("203.0.113.1/24" in line for line in lines)


def test_an_address_the_kernel_drops_with_its_subnets_primary_is_added_again() -> None:
    observed = NetState.build((bridge_link(3, "br0"),), (Address(3, ip("192.0.2.9/24")),
                                                         Address(3, ip("192.0.2.1/24"))), ())
    br0 = bridge("br0", ipv4=IpConfig(True, (ip("192.0.2.1/24"),)))
    lines = plan_text(plan_of(br0, observed=observed)).splitlines()
    assert "- interface/br0: ipv4.address remove 192.0.2.9/24" in lines
    assert ("+ interface/br0: ipv4.address add 192.0.2.1/24 again (removing its subnet's primary address "
            "removes it too)") in lines


def rules(*texts: str) -> tuple[Rule, ...]:
    return tuple(Rule(tuple(t.split()), t) for t in texts)


def chain_action(mode: ChainMode, want: list[str], have: list[str] | None) -> Action:
    op = SyncChain("filter", "INPUT", mode, rules(*want), True)
    return Action(op, Phase.FIREWALL, "firewall/filter/INPUT", "rules", want, have)


def test_a_chain_shows_the_rules_it_gains_and_loses() -> None:
    action = chain_action(ChainMode.EXCLUSIVE, ["-p tcp --dport 22 -j ACCEPT", "-p udp --dport 53 -j ACCEPT"],
                          ["-p tcp --dport 22 -j ACCEPT", "-p tcp -m tcp --dport 80 -j ACCEPT (vnetd's, no longer "
                           "declared)", "(foreign) -j LOG"])
    assert plan_text(Plan((action,))).splitlines() == [
        "~ firewall/filter/INPUT: rules (exclusive: exactly the declared rules)",
        "      -p tcp --dport 22 -j ACCEPT",
        "    - -p tcp -m tcp --dport 80 -j ACCEPT (vnetd's, no longer declared)",
        "    - (foreign) -j LOG",
        "    + -p udp --dport 53 -j ACCEPT",
        "1 change pending",
    ]


def test_a_merge_chain_keeps_other_tools_rules() -> None:
    action = chain_action(ChainMode.MERGE, ["-m physdev --physdev-is-bridged -j ACCEPT", "-j LOG"],
                          ["(foreign) -s 10.9.9.9/32 -j DROP", "-m physdev --physdev-is-bridged -j ACCEPT"])
    assert plan_text(Plan((action,))).splitlines()[:4] == [
        "~ firewall/filter/INPUT: rules (merge: vnetd's rules first, other tools' rules kept)",
        "      -m physdev --physdev-is-bridged -j ACCEPT",
        "    + -j LOG",
        "      (foreign) -s 10.9.9.9/32 -j DROP",
    ]


def test_a_new_chain_lists_its_rules_and_a_pruned_one_what_goes() -> None:
    new = Action(SyncChain("filter", "mine", ChainMode.MERGE, rules("-j RETURN"), False), Phase.FIREWALL,
                 "firewall/filter/mine", "rules", ["-j RETURN"], None)
    gone = Action(PruneChain("filter", "old", True), Phase.FIREWALL, "firewall/filter/old", "rules",
                  "(chain deleted)", ["-j DROP (vnetd's, no longer declared)", "(foreign) -j LOG"])
    assert plan_text(Plan((new, gone))).splitlines()[:4] == [
        "+ firewall/filter/mine: rules: new chain (merge) with 1 rule",
        "    + -j RETURN",
        "- firewall/filter/old: rules: the chain and vnetd's rules in it are deleted (no longer declared)",
        "    - -j DROP (vnetd's, no longer declared)",
    ]


def test_json_is_unchanged_by_the_text() -> None:
    br0 = bridge("br0", stp=StpOptions(enabled=False))
    data = plan_json(plan_of(br0, observed=net()))
    assert '"field": "exists"' in data and '"want": "linux-bridge"' in data


def test_a_new_vlan_vxlan_and_bond_show_their_settings() -> None:
    from vnetd.model.interfaces import BondConfig, VlanOptions, VlanProtocol, VxlanConfig

    vlan = Interface("eth1.200", IfType.VLAN, vlan_base="eth1", vlan_id=200,
                     vlan=VlanOptions(VlanProtocol.DOT1AD, reorder_headers=False, registration_protocol="mvrp"))
    vxlan = Interface("vx100", IfType.VXLAN, vxlan=VxlanConfig(100, ipaddress.ip_address("192.0.2.12"),
                                                               base_iface="eth1", destination_port=4789))
    bond = Interface("bond0", IfType.BOND, bond=BondConfig("active-backup", None,
                                                           (("arp_validate", 3), ("miimon", 100))))
    text = plan_text(plan_of(eth("eth1"), vlan, vxlan, bond, observed=net(nic(2, "eth1"))))
    assert ("+ interface/eth1.200: exists want vlan, have (none); created with vlan.base-iface eth1, vlan.id 200, "
            "vlan.protocol 802.1ad, vlan.reorder-headers false, vlan.registration-protocol mvrp") in text, text
    assert ("+ interface/vx100: exists want vxlan, have (none); created with vxlan {id: 100, remote: 192.0.2.12, "
            "base-iface: eth1, destination-port: 4789}") in text, text
    assert ("+ interface/bond0: exists want bond, have (none); created with link-aggregation.mode active-backup, "
            "link-aggregation.options {arp_validate: all, miimon: 100}") in text, text


def test_routes_and_route_rules_added_and_removed() -> None:
    from vnetd.model.route_rules import RouteRuleSpec
    from vnetd.model.routes import RouteSpec
    from vnetd.plan.route_rules import plan_route_rules
    from vnetd.plan.routes import plan_routes

    net4 = ipaddress.ip_network
    observed = net(nic(2, "eth1"))
    specs = [RouteSpec(net4("198.51.100.0/24"), ipaddress.ip_address("192.0.2.254"), "eth1")]
    actions, _problems = plan_routes(specs, observed)
    lines = plan_text(Plan(tuple(actions))).splitlines()
    assert lines[0].startswith("+ route/") and "198.51.100.0/24" in lines[0] and "192.0.2.254" in lines[0], lines
    rule = RouteRuleSpec(4, net4("192.0.2.0/24"), None, 1000, 100, None, None, None, None, False, None)
    actions2, _ = plan_route_rules([rule], observed)
    line = plan_text(Plan(tuple(actions2))).splitlines()[0]
    assert line.startswith("+ route-rule/") and "from 192.0.2.0/24" in line and "lookup 100" in line, line
