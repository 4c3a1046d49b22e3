# SPDX-License-Identifier: MIT
"""vnetd's lean rtnetlink codec against pyroute2, in both directions.

Requests vnetd packs with struct are decoded by pyroute2's own message classes and
must carry exactly the intended attributes; messages pyroute2 encodes are decoded
by vnetd's decoders into the same fields. A kernel test (tests/integration/
test_codecs_kernel.py) does the same with real dumps. Policy routing rules, VLANs,
VXLANs and bonds are covered the same way; the bond and VLAN encodings are proven
here even where the kernel has no bonding or 8021q module to try them on.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from vnetd.backends import rtnl
from vnetd.model.interfaces import VlanInfo, VxlanInfo
from vnetd.model.route_rules import RouteRule


def decoded(request: rtnl.Request, cls: type) -> object:
    msg = cls(request.encode(42))
    msg.decode()
    return msg


def test_link_set_carries_mtu_master_and_flags() -> None:
    msg = decoded(rtnl.link_set(7, up=True, mtu=9000, master=3), ifinfmsg)
    assert msg["header"]["type"] == rtnl.RTM_NEWLINK
    assert msg["header"]["flags"] == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK
    assert msg["header"]["sequence_number"] == 42
    assert msg["index"] == 7 and msg["flags"] == 1 and msg["change"] == 1
    assert msg.get_attr("IFLA_MTU") == 9000
    assert msg.get_attr("IFLA_MASTER") == 3


def test_link_set_down_and_release() -> None:
    msg = decoded(rtnl.link_set(7, up=False, master=0), ifinfmsg)
    assert msg["flags"] == 0 and msg["change"] == 1
    assert msg.get_attr("IFLA_MASTER") == 0


def test_link_set_mac() -> None:
    msg = decoded(rtnl.link_set(2, mac="52:54:00:0a:fa:3e"), ifinfmsg)
    assert msg.get_attr("IFLA_ADDRESS") == "52:54:00:0a:fa:3e"
    assert msg["change"] == 0


def test_bridge_create_with_stp_options() -> None:
    req = rtnl.link_create("br0", "bridge", bridge_data=[("IFLA_BR_STP_STATE", 0), ("IFLA_BR_FORWARD_DELAY", 0),
                                                         ("IFLA_BR_PRIORITY", 4096)])
    assert req.flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    msg = decoded(req, ifinfmsg)
    assert msg.get_attr("IFLA_IFNAME") == "br0"
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "bridge"
    data = info.get_attr("IFLA_INFO_DATA")
    assert data.get_attr("IFLA_BR_STP_STATE") == 0
    assert data.get_attr("IFLA_BR_FORWARD_DELAY") == 0
    assert data.get_attr("IFLA_BR_PRIORITY") == 4096


def test_veth_create_names_its_peer() -> None:
    msg = decoded(rtnl.link_create("v0", "veth", veth_peer="v1"), ifinfmsg)
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "v1"


def test_vlan_create() -> None:
    msg = decoded(rtnl.link_create("eth1.100", "vlan", vlan_base=5, vlan_id=100), ifinfmsg)
    assert msg.get_attr("IFLA_LINK") == 5
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "vlan"
    assert info.get_attr("IFLA_INFO_DATA").get_attr("IFLA_VLAN_ID") == 100


@pytest.mark.parametrize("ip", ["192.0.2.1/24", "2001:db8::1/64"])
def test_address_add_and_delete(ip: str) -> None:
    iface = ipaddress.ip_interface(ip)
    for add in (True, False):
        msg = decoded(rtnl.address(add, 4, iface), ifaddrmsg)
        assert msg["header"]["type"] == (rtnl.RTM_NEWADDR if add else rtnl.RTM_DELADDR)
        assert msg["index"] == 4 and msg["prefixlen"] == iface.network.prefixlen
        assert msg["family"] == (socket.AF_INET if iface.version == 4 else socket.AF_INET6)
        assert msg.get_attr("IFA_LOCAL") == str(iface.ip)
        assert msg.get_attr("IFA_ADDRESS") == str(iface.ip)


def test_route_add_replace_and_delete() -> None:
    dst = ipaddress.ip_network("198.51.100.0/24")
    gw = ipaddress.ip_address("192.0.2.254")
    add = decoded(rtnl.route(True, dst, table=254, gateway=gw, oif=3, priority=10), rtmsg)
    assert add["dst_len"] == 24 and add["proto"] == rtnl.RTPROT_STATIC and add["type"] == rtnl.RTN_UNICAST
    assert add["scope"] == rtnl.RT_SCOPE_UNIVERSE
    assert add.get_attr("RTA_DST") == "198.51.100.0"
    assert add.get_attr("RTA_GATEWAY") == "192.0.2.254"
    assert add.get_attr("RTA_OIF") == 3 and add.get_attr("RTA_PRIORITY") == 10 and add.get_attr("RTA_TABLE") == 254
    assert add["header"]["flags"] & rtnl.NLM_F_EXCL
    replace = decoded(rtnl.route(True, dst, table=1000, gateway=None, oif=3, priority=None, replace=True), rtmsg)
    assert replace["header"]["flags"] & rtnl.NLM_F_REPLACE and replace["table"] == 0
    assert replace.get_attr("RTA_TABLE") == 1000 and replace["scope"] == rtnl.RT_SCOPE_LINK
    delete = decoded(rtnl.route(False, ipaddress.ip_network("0.0.0.0/0"), table=254, gateway=gw, oif=None,
                                priority=0), rtmsg)
    assert delete["header"]["type"] == rtnl.RTM_DELROUTE
    assert delete["scope"] == rtnl.RT_SCOPE_NOWHERE and delete["proto"] == 0
    assert delete.get_attr("RTA_DST") is None  # the default route has no destination attribute


def _pyroute2_link() -> bytes:
    msg = ifinfmsg()
    msg["index"] = 12
    msg["flags"] = 1
    msg["attrs"] = [("IFLA_IFNAME", "br7"), ("IFLA_MTU", 9000), ("IFLA_ADDRESS", "52:54:00:12:34:56"),
                    ("IFLA_MASTER", 0),
                    ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge"), ("IFLA_INFO_DATA", {"attrs": [
                        ("IFLA_BR_STP_STATE", 1), ("IFLA_BR_FORWARD_DELAY", 1500), ("IFLA_BR_HELLO_TIME", 200),
                        ("IFLA_BR_MAX_AGE", 2000), ("IFLA_BR_PRIORITY", 32768)]})]})]
    msg["header"]["type"] = rtnl.RTM_NEWLINK
    msg.encode()
    return bytes(msg.data)


def test_decode_link_encoded_by_pyroute2() -> None:
    data = _pyroute2_link()
    link = rtnl.decode_link(data, 0, len(data))
    assert (link.index, link.name, link.up, link.mtu, link.mac, link.master, link.kind) == (
        12, "br7", True, 9000, "52:54:00:12:34:56", None, "bridge")
    assert link.bridge is not None
    assert (link.bridge.stp_state, link.bridge.forward_delay, link.bridge.hello_time, link.bridge.max_age,
            link.bridge.priority) == (1, 1500, 200, 2000, 32768)


def test_decode_address_and_route_encoded_by_pyroute2() -> None:
    a = ifaddrmsg()
    a["family"] = socket.AF_INET6
    a["prefixlen"] = 64
    a["index"] = 3
    a["attrs"] = [("IFA_ADDRESS", "2001:db8::5"), ("IFA_FLAGS", 0x80)]
    a["header"]["type"] = rtnl.RTM_NEWADDR
    a.encode()
    addr = rtnl.decode_address(bytes(a.data), 0, len(a.data))
    assert addr is not None and str(addr.ip) == "2001:db8::5/64" and addr.index == 3 and addr.permanent
    r = rtmsg()
    r["family"] = socket.AF_INET
    r["dst_len"] = 0
    r["table"] = 254
    r["type"] = 1
    r["proto"] = 4
    r["attrs"] = [("RTA_GATEWAY", "192.0.2.1"), ("RTA_OIF", 2), ("RTA_PRIORITY", 100), ("RTA_TABLE", 254)]
    r["header"]["type"] = rtnl.RTM_NEWROUTE
    r.encode()
    route = rtnl.decode_route(bytes(r.data), 0, len(r.data))
    assert route is not None
    assert (str(route.destination), str(route.gateway), route.oif, route.priority, route.table, route.protocol) == (
        "0.0.0.0/0", "192.0.2.1", 2, 100, 254, 4)


def test_local_table_and_non_unicast_routes_are_not_routes_vnetd_manages() -> None:
    r = rtmsg()
    r["family"] = socket.AF_INET
    r["table"] = 255
    r["type"] = 2  # RTN_LOCAL
    r["header"]["type"] = rtnl.RTM_NEWROUTE
    r.encode()
    assert rtnl.decode_route(bytes(r.data), 0, len(r.data)) is None


def test_iter_messages_splits_a_buffer_and_stops_at_garbage() -> None:
    one = rtnl.link_set(1, mtu=1500).encode(1)
    two = rtnl.link_set(2, mtu=1500).encode(2)
    found = list(rtnl.iter_messages(one + two + b"\x03\x00"))
    assert [(seq, off) for _t, _f, seq, off, _len in found] == [(1, 0), (2, len(one))]


# --------------------------------------------------------------------------- policy routing rules


def _pyroute2_rule(family: int, attrs: list[tuple[str, object]], **fields: int) -> bytes:
    r = fibmsg()
    r["family"] = family
    for key, value in fields.items():
        r[key] = value
    r["attrs"] = attrs
    r["header"]["type"] = rtnl.RTM_NEWRULE
    r.encode()
    return bytes(r.data)


def test_rule_add_is_byte_for_byte_what_pyroute2_encodes() -> None:
    req = rtnl.rule(True, 4, priority=1000, table=100, action=rtnl.FR_ACT_TO_TBL,
                    source=ipaddress.ip_network("192.0.2.0/24"), iif="eth0", fwmark=16, fwmask=255,
                    protocol=rtnl.RTPROT_STATIC)
    assert req.flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    m = fibmsg()
    m["family"], m["src_len"], m["table"], m["action"] = socket.AF_INET, 24, 100, 1
    m["header"]["type"], m["header"]["flags"], m["header"]["sequence_number"] = rtnl.RTM_NEWRULE, req.flags, 7
    m["attrs"] = [("FRA_SRC", "192.0.2.0"), ("FRA_IIFNAME", "eth0"), ("FRA_PRIORITY", 1000), ("FRA_FWMARK", 16),
                  ("FRA_FWMASK", 255), ("FRA_TABLE", 100), ("FRA_PROTOCOL", 4)]
    m.encode()
    assert req.encode(7) == bytes(m.data)


def test_rule_requests_decoded_by_pyroute2() -> None:
    add = decoded(rtnl.rule(True, 6, priority=None, table=1000, action=rtnl.FR_ACT_TO_TBL,
                            destination=ipaddress.ip_network("2001:db8::/32"), protocol=rtnl.RTPROT_STATIC), fibmsg)
    assert add["header"]["type"] == rtnl.RTM_NEWRULE and add["family"] == socket.AF_INET6
    assert add["dst_len"] == 32 and add["src_len"] == 0 and add["table"] == 0  # table >= 256: FRA_TABLE only
    assert add.get_attr("FRA_DST") == "2001:db8::" and add.get_attr("FRA_TABLE") == 1000
    assert add.get_attr("FRA_PRIORITY") is None  # the kernel chooses, as for `ip rule add` without pref
    blackhole = decoded(rtnl.rule(True, 4, priority=5, table=0, action=6,
                                  destination=ipaddress.ip_network("198.51.100.0/24")), fibmsg)
    assert blackhole["action"] == 6 and blackhole["table"] == 0 and blackhole.get_attr("FRA_TABLE") is None
    delete = decoded(rtnl.rule(False, 4, priority=0, table=255, action=1, protocol=2), fibmsg)
    assert delete["header"]["type"] == rtnl.RTM_DELRULE
    assert delete["header"]["flags"] == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK
    assert delete.get_attr("FRA_PRIORITY") == 0  # present: the kernel then compares it, 0 included
    assert delete.get_attr("FRA_TABLE") == 255 and delete.get_attr("FRA_PROTOCOL") == 2


def test_decode_rule_encoded_by_pyroute2() -> None:
    data = _pyroute2_rule(socket.AF_INET, [("FRA_SRC", "192.0.2.0"), ("FRA_DST", "198.51.100.0"),
                                           ("FRA_IIFNAME", "br0"), ("FRA_PRIORITY", 1000), ("FRA_FWMARK", 16),
                                           ("FRA_FWMASK", 255), ("FRA_TABLE", 1000), ("FRA_PROTOCOL", 4),
                                           ("FRA_SUPPRESS_PREFIXLEN", 0xFFFFFFFF)],
                          src_len=24, dst_len=24, action=1)
    rule = rtnl.decode_rule(data, 0, len(data))
    assert rule == RouteRule(4, 1000, 1000, 1, ipaddress.ip_network("192.0.2.0/24"),
                             ipaddress.ip_network("198.51.100.0/24"), "br0", 16, 255, 4, ())
    v6 = _pyroute2_rule(socket.AF_INET6, [("FRA_PRIORITY", 32766), ("FRA_TABLE", 254), ("FRA_PROTOCOL", 2)],
                        table=254, action=1)
    main = rtnl.decode_rule(v6, 0, len(v6))
    assert main is not None and (main.family, main.priority, main.table, main.source) == (6, 32766, 254, None)
    assert main.kernel_default


@pytest.mark.parametrize(("attrs", "fields", "word"), [
    ([("FRA_OIFNAME", "eth1")], {}, "oif eth1"),
    ([("FRA_SUPPRESS_PREFIXLEN", 0)], {}, "suppress_prefixlength 0"),
    ([("FRA_GOTO", 100)], {"action": 2}, "goto"),
    ([], {"tos": 0x10}, "tos 0x10"),
    ([], {"flags": 2}, "not"),
], ids=["oif", "suppress-prefixlength", "goto", "tos", "not"])
def test_rules_with_selectors_vnetd_does_not_manage_say_so(attrs: list[tuple[str, object]],
                                                            fields: dict[str, int], word: str) -> None:
    data = _pyroute2_rule(socket.AF_INET, [("FRA_PRIORITY", 100), ("FRA_TABLE", 100), *attrs],
                          **{"action": 1, "table": 100, **fields})
    rule = rtnl.decode_rule(data, 0, len(data))
    assert rule is not None and word in rule.other


def test_detached_iif_flag_is_not_a_selector() -> None:
    data = _pyroute2_rule(socket.AF_INET, [("FRA_IIFNAME", "gone0"), ("FRA_PRIORITY", 7), ("FRA_TABLE", 100)],
                          action=1, table=100, flags=0x8)  # FIB_RULE_IIF_DETACHED: the device does not exist
    rule = rtnl.decode_rule(data, 0, len(data))
    assert rule is not None and rule.other == () and rule.iif == "gone0"


def test_event_groups_include_the_rule_groups() -> None:
    assert rtnl.EVENT_GROUPS & (1 << (8 - 1)) and rtnl.EVENT_GROUPS & (1 << (19 - 1))


# --------------------------------------------------------------------------- VLAN, VXLAN, bond


def test_vlan_create_with_protocol_and_flags() -> None:
    req = rtnl.link_create("bond0.100", "vlan", vlan_base=9, vlan_id=100,
                           data=rtnl.vlan_data(protocol=rtnl.ETH_P_8021AD, flags=(0x4, 0x5)))
    info = decoded(req, ifinfmsg).get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA")
    assert data.get_attr("IFLA_VLAN_ID") == 100
    assert data.get_attr("IFLA_VLAN_PROTOCOL") == 0x88A8
    flags = data.get_attr("IFLA_VLAN_FLAGS")
    assert (flags["flags"], flags["mask"]) == (0x4, 0x5)


def test_decode_vlan_encoded_by_pyroute2() -> None:
    msg = ifinfmsg()
    msg["index"] = 5
    msg["attrs"] = [("IFLA_IFNAME", "eth1.100"), ("IFLA_LINK", 3),
                    ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "vlan"), ("IFLA_INFO_DATA", {"attrs": [
                        ("IFLA_VLAN_ID", 100), ("IFLA_VLAN_PROTOCOL", 0x8100),
                        ("IFLA_VLAN_FLAGS", {"flags": 5, "mask": 0xFFFFFFFF})]})]})]
    msg["header"]["type"] = rtnl.RTM_NEWLINK
    msg.encode()
    data = bytes(msg.data)
    link = rtnl.decode_link(data, 0, len(data))
    assert (link.kind, link.link, link.vlan_id) == ("vlan", 3, 100)
    assert link.vlan == VlanInfo(0x8100, 5)


def test_vxlan_create_decoded_by_pyroute2() -> None:
    req = rtnl.link_create("vx42", "vxlan", data=rtnl.vxlan_data(
        42, remote=ipaddress.ip_address("198.51.100.2"), local=ipaddress.ip_address("198.51.100.1"), link=4,
        port=4789, learning=False))
    data = decoded(req, ifinfmsg).get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert data.get_attr("IFLA_VXLAN_ID") == 42
    assert data.get_attr("IFLA_VXLAN_GROUP") == "198.51.100.2"
    assert data.get_attr("IFLA_VXLAN_LOCAL") == "198.51.100.1"
    assert data.get_attr("IFLA_VXLAN_LINK") == 4
    assert data.get_attr("IFLA_VXLAN_PORT") == 4789  # big-endian on the wire: pyroute2's be16
    assert data.get_attr("IFLA_VXLAN_LEARNING") == 0
    v6 = decoded(rtnl.link_create("vx6", "vxlan", data=rtnl.vxlan_data(
        7, remote=ipaddress.ip_address("2001:db8::2"))), ifinfmsg).get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert v6.get_attr("IFLA_VXLAN_GROUP6") == "2001:db8::2" and v6.get_attr("IFLA_VXLAN_GROUP") is None


def test_vxlan_changes_carry_only_what_changes() -> None:
    req = rtnl.link_set(8, kind="vxlan", data=rtnl.vxlan_data(remote=ipaddress.ip_address("203.0.113.9")))
    msg = decoded(req, ifinfmsg)
    assert msg["index"] == 8 and req.flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "vxlan"
    data = info.get_attr("IFLA_INFO_DATA")
    assert data.get_attr("IFLA_VXLAN_GROUP") == "203.0.113.9" and data.get_attr("IFLA_VXLAN_ID") is None


def test_decode_vxlan_encoded_by_pyroute2() -> None:
    msg = ifinfmsg()
    msg["index"] = 9
    msg["attrs"] = [("IFLA_IFNAME", "vx42"),
                    ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "vxlan"), ("IFLA_INFO_DATA", {"attrs": [
                        ("IFLA_VXLAN_ID", 42), ("IFLA_VXLAN_GROUP", "198.51.100.2"), ("IFLA_VXLAN_LINK", 4),
                        ("IFLA_VXLAN_LOCAL", "198.51.100.1"), ("IFLA_VXLAN_PORT", 4789),
                        ("IFLA_VXLAN_LEARNING", 1)]})]})]
    msg["header"]["type"] = rtnl.RTM_NEWLINK
    msg.encode()
    data = bytes(msg.data)
    link = rtnl.decode_link(data, 0, len(data))
    assert link.vxlan == VxlanInfo(42, ipaddress.ip_address("198.51.100.2"), ipaddress.ip_address("198.51.100.1"),
                                   4, 4789, True)


BOND_OPTIONS: list[tuple[str, int | str | tuple[str, ...]]] = [
    ("ad_actor_sys_prio", 100), ("ad_actor_system", "02:00:00:00:00:01"), ("ad_select", 2),
    ("ad_user_port_key", 5), ("all_slaves_active", 1), ("arp_all_targets", 1),
    ("arp_ip_target", ("192.0.2.1", "192.0.2.2")), ("arp_interval", 0), ("arp_validate", 3), ("downdelay", 200),
    ("fail_over_mac", 2), ("lacp_rate", 1), ("lp_interval", 1), ("miimon", 100), ("min_links", 1),
    ("num_grat_arp", 3), ("packets_per_slave", 1), ("primary_reselect", 2),
    ("resend_igmp", 1), ("tlb_dynamic_lb", 1), ("updelay", 100), ("use_carrier", 1), ("xmit_hash_policy", 1),
]
# (peer_notif_delay, IFLA_BOND_PEER_NOTIF_DELAY = 28, is newer than pyroute2 0.9.7's table)
PYROUTE2_BOND_NAMES = {"ad_actor_sys_prio": "AD_ACTOR_SYS_PRIO", "ad_actor_system": "AD_ACTOR_SYSTEM",
                       "ad_select": "AD_SELECT", "ad_user_port_key": "AD_USER_PORT_KEY", "lacp_rate": "AD_LACP_RATE",
                       "num_grat_arp": "NUM_PEER_NOTIF"}


def _pyroute2_bond_attr(name: str) -> str:
    return "IFLA_BOND_" + PYROUTE2_BOND_NAMES.get(name, name.upper())


def test_bond_create_carries_mode_then_every_option() -> None:
    req = rtnl.link_create("bond0", "bond", data=rtnl.bond_data(4, BOND_OPTIONS + [("primary", 3)]))
    data = decoded(req, ifinfmsg).get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert data["attrs"][0][0] == "IFLA_BOND_MODE" and data.get_attr("IFLA_BOND_MODE") == 4
    for name, value in BOND_OPTIONS:
        got = data.get_attr(_pyroute2_bond_attr(name))
        want = list(value) if isinstance(value, tuple) else value
        assert got == want, name
    assert data.get_attr("IFLA_BOND_PRIMARY") == 3
    assert set(rtnl.BOND_ATTRS) >= {n for n, _v in BOND_OPTIONS}


def test_bond_options_change_without_the_mode() -> None:
    req = rtnl.link_set(6, kind="bond", data=rtnl.bond_data(None, [("miimon", 250)]))
    data = decoded(req, ifinfmsg).get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert data.get_attr("IFLA_BOND_MODE") is None and data.get_attr("IFLA_BOND_MIIMON") == 250


def test_decode_bond_encoded_by_pyroute2() -> None:
    attrs: list[tuple[str, object]] = [("IFLA_BOND_MODE", 1)]
    for name, value in BOND_OPTIONS:
        if name == "ad_actor_system":
            value = bytes.fromhex(str(value).replace(":", ""))  # pyroute2's 'hex' takes the raw bytes
        attrs.append((_pyroute2_bond_attr(name), list(value) if isinstance(value, tuple) else value))
    msg = ifinfmsg()
    msg["attrs"] = [("IFLA_IFNAME", "bond0"), ("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_KIND", "bond"), ("IFLA_INFO_DATA", {"attrs": attrs})]})]
    msg["header"]["type"] = rtnl.RTM_NEWLINK
    msg.encode()
    data = bytes(msg.data)
    link = rtnl.decode_link(data, 0, len(data))
    assert link.bond is not None and link.bond.mode == 1
    assert dict(link.bond.options) == dict(BOND_OPTIONS)


def test_permanent_mac_is_read_and_all_zeros_is_none() -> None:
    for perm, want in (("52:54:00:aa:bb:01", "52:54:00:aa:bb:01"), ("00:00:00:00:00:00", None)):
        msg = ifinfmsg()
        msg["index"] = 3
        msg["attrs"] = [("IFLA_IFNAME", "eth1"), ("IFLA_ADDRESS", "52:54:00:00:00:09"),
                        ("IFLA_PERM_ADDRESS", bytes.fromhex(perm.replace(":", "")))]
        msg["header"]["type"] = rtnl.RTM_NEWLINK
        msg.encode()
        data = bytes(msg.data)
        link = rtnl.decode_link(data, 0, len(data))
        assert (link.mac, link.perm_mac) == ("52:54:00:00:00:09", want)
        assert link.hw_mac == (want or "52:54:00:00:00:09")


def test_a_bond_ports_own_mac_is_its_identity() -> None:
    """A bond gives its ports its MAC; the port's own one comes in the bond's slave data."""
    msg = ifinfmsg()
    msg["index"] = 3
    msg["attrs"] = [("IFLA_IFNAME", "eth2"), ("IFLA_ADDRESS", "52:54:00:b0:00:01"), ("IFLA_MASTER", 9),
                    ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_SLAVE_KIND", "bond"),
                                                 ("IFLA_INFO_SLAVE_DATA", {"attrs": [
                                                     ("IFLA_BOND_SLAVE_STATE", 1),
                                                     ("IFLA_BOND_SLAVE_PERM_HWADDR", "52:54:00:b0:00:02")]})]})]
    msg["header"]["type"] = rtnl.RTM_NEWLINK
    msg.encode()
    data = bytes(msg.data)
    link = rtnl.decode_link(data, 0, len(data))
    assert (link.kind, link.mac, link.perm_mac, link.hw_mac) == ("veth", "52:54:00:b0:00:01", "52:54:00:b0:00:02",
                                                                "52:54:00:b0:00:02")
