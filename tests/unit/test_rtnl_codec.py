# SPDX-License-Identifier: MIT
"""vnetd's lean rtnetlink codec against pyroute2, in both directions.

Requests vnetd packs with struct are decoded by pyroute2's own message classes and
must carry exactly the intended attributes; messages pyroute2 encodes are decoded
by vnetd's decoders into the same fields. A kernel test (tests/integration/
test_rtnl_kernel.py) does the same with real dumps.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from vnetd.backends import rtnl


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
