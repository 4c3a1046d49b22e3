# SPDX-License-Identifier: MIT
"""The ``interfaces:`` section: the nmstate schema subset vnetd manages.

Supported per interface: ``name``, ``type``, ``state``, ``mtu``, ``mac-address``,
``ipv4``/``ipv6`` (``enabled``, static ``address`` list, ``dhcp: false``,
``autoconf: false``), ``bridge.options.stp.*``, ``bridge.port[].name``,
``veth.peer``, ``vlan.base-iface``/``vlan.id``. Anything else is an error that
names the valid keys, so a typo never silently stops managing something.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import yaml

from vnetd.desired import validate
from vnetd.desired.nodes import FileContext, MapView, as_list, as_map, describe, join, scalar_value
from vnetd.desired.schema import ADDRESS, BRIDGE, BRIDGE_OPTIONS, INTERFACE, IP, PORT, STP, VETH, VLAN
from vnetd.errors import ConfigIssue
from vnetd.model.common import Origin
from vnetd.model.interfaces import (
    VIRTUAL_TYPES,
    AdminState,
    BridgeConfig,
    IfType,
    Interface,
    IpConfig,
    IpInterface,
    StpOptions,
)

_TYPES = INTERFACE.values("type")


def parse_interfaces(node: yaml.Node, ctx: FileContext) -> list[Interface]:
    items = as_list(node, "interfaces", ctx)
    if items is None:
        return []
    result = []
    for item, path in items:
        iface = _parse_interface(item, path, ctx)
        if iface is not None:
            result.append(iface)
    return result


def _parse_interface(node: yaml.Node, path: str, ctx: FileContext) -> Interface | None:
    m = as_map(node, path, ctx, INTERFACE, "an interface")
    if m is None:
        return None
    errors_before = len(ctx.issues)
    if not m.require("name", "the interface name (1-15 characters)"):
        return None
    name = m.string("name", validate.link_name)
    state = AdminState(m.choice("state") or "up")
    type_str = m.choice("type")
    if "type" not in m and state is not AdminState.ABSENT:
        m.require("type", "one of " + ", ".join(_TYPES))
    iftype = IfType(type_str) if type_str else None
    if iftype is not None and state is AdminState.ABSENT and iftype not in VIRTUAL_TYPES:
        ctx.error(m.value_node("state"), join(path, "state"),
                  f"'absent' deletes virtual interfaces only ({', '.join(sorted(VIRTUAL_TYPES))}); "
                  f"an interface of type {iftype} cannot be deleted, use state: down")
    mtu = m.integer("mtu")
    mac = m.string("mac-address", validate.mac_address)
    m.string("description")  # accepted for nmstate compatibility, not managed

    ipv4 = _parse_ip(m, "ipv4", 4, ctx)
    ipv6 = _parse_ip(m, "ipv6", 6, ctx)
    bridge = _parse_bridge(m, path, iftype, name, ctx)
    veth_peer = _parse_veth(m, path, iftype, ctx)
    vlan_base, vlan_id = _parse_vlan(m, path, iftype, ctx)

    if mtu is not None and mtu < 1280 and ipv6 is not None and ipv6.addresses:
        ctx.error(m.value_node("mtu"), join(path, "mtu"),
                  "IPv6 needs an MTU of at least 1280, and this interface lists IPv6 addresses "
                  "(the kernel refuses them below it)")
    if len(ctx.issues) != errors_before or name is None:
        return None
    return Interface(
        name=name, type=iftype, state=state, mtu=mtu,
        mac=validate.normalize_mac(mac) if mac else None,
        bridge=bridge, ipv4=ipv4, ipv6=ipv6, veth_peer=veth_peer,
        vlan_base=vlan_base, vlan_id=vlan_id,
        origin=Origin(ctx.file, m.line),
    )


def _parse_ip(m: MapView, key: str, version: int, ctx: FileContext) -> IpConfig | None:
    ip = m.mapping(key, IP, key)
    if ip is None:
        return None
    enabled = ip.boolean("enabled")
    if enabled is None and "enabled" not in ip:
        enabled = True
    if ip.boolean("dhcp"):
        ctx.error(ip.value_node("dhcp"), join(ip.path, "dhcp"),
                  "vnetd manages static addresses only; remove 'dhcp: true' (leave the "
                  f"{key} section out to leave a DHCP client's addresses alone)")
    if ip.boolean("autoconf"):
        ctx.error(ip.value_node("autoconf"), join(ip.path, "autoconf"),
                  "vnetd manages static addresses only; 'autoconf: true' is not supported")
    if "autoconf" in ip and version == 4:
        ctx.error(ip.key_node("autoconf"), join(ip.path, "autoconf"), "autoconf exists for ipv6 only")
    addresses: list[IpInterface] | None = None
    items = ip.sequence("address")
    if items is not None:
        addresses = []
        for item, path in items:
            addr = _parse_address(item, path, version, ctx)
            if addr is None:
                continue
            if addr in addresses:
                ctx.error(item, path, f"{addr} is listed twice")
                continue
            other = next((a for a in addresses if a.ip == addr.ip), None) if version == 6 else None
            if other is not None:
                ctx.error(item, path, f"{addr.ip} is listed with two prefix lengths ({other} and {addr}); "
                                      "the kernel holds an IPv6 address once")
                continue
            addresses.append(addr)
        if enabled is False and addresses:
            ctx.error(ip.value_node("address"), join(ip.path, "address"),
                      f"{key} is disabled (enabled: false) but lists addresses")
    if enabled is False:
        addresses = []
    return IpConfig(enabled=bool(enabled), addresses=tuple(addresses) if addresses is not None else None)


def _parse_address(node: yaml.Node, path: str, version: int, ctx: FileContext) -> IpInterface | None:
    family = f"IPv{version}"
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str":
        text = str(node.value)  # the CIDR shorthand: 192.168.10.212/24
    else:
        a = as_map(node, path, ctx, ADDRESS, "an address")
        if a is None:
            return None
        if not (a.require("ip", f"the {family} address") & a.require("prefix-length", "the prefix length")):
            return None
        ip = a.string("ip", validate.ip_address, expected=f"an {family} address")
        prefix = a.integer("prefix-length", 0, 32 if version == 4 else 128)
        if ip is None or prefix is None:
            return None
        text = f"{ip}/{prefix}"
    problem = validate.ip_interface(text)
    if problem:
        ctx.error(node, path, problem)
        return None
    addr = ipaddress.ip_interface(text)
    if addr.version != version:
        ctx.error(node, path, f"{text} is not an {family} address (it is listed under ipv{version})")
        return None
    if addr.ip.is_multicast or addr.ip.is_unspecified:
        ctx.error(node, path, f"{addr.ip} cannot be assigned to an interface")
        return None
    return addr


def _parse_bridge(
    m: MapView, path: str, iftype: IfType | None, name: str | None, ctx: FileContext
) -> BridgeConfig | None:
    b = m.mapping("bridge", BRIDGE, "bridge")
    if b is None:
        return None
    if iftype is not IfType.BRIDGE:
        ctx.error(m.key_node("bridge"), join(path, "bridge"), "'bridge' is only valid with type: linux-bridge")
        return None
    stp = StpOptions()
    options = b.mapping("options", BRIDGE_OPTIONS, "bridge.options")
    if options is not None:
        s = options.mapping("stp", STP, "bridge.options.stp")
        if s is not None:
            stp = StpOptions(
                enabled=s.boolean("enabled"),
                forward_delay=s.integer("forward-delay"),
                hello_time=s.integer("hello-time"),
                max_age=s.integer("max-age"),
                priority=s.integer("priority"),
            )
            if stp.enabled and stp.forward_delay is not None and stp.forward_delay < 2:
                ctx.error(s.value_node("forward-delay"), join(s.path, "forward-delay"),
                          "with STP enabled the kernel needs a forward delay of 2-30 seconds")
    ports: tuple[str, ...] | None = None
    items = b.sequence("port")
    if items is not None:
        names: list[str] = []
        for item, ppath in items:
            port = _parse_port(item, ppath, ctx)
            if port is None:
                continue
            if port == name:
                ctx.error(item, ppath, f"{port!r} cannot be a port of itself")
            elif port in names:
                ctx.error(item, ppath, f"port {port!r} is listed twice")
            else:
                names.append(port)
        ports = tuple(names)
    return BridgeConfig(stp=stp, ports=ports)


def _parse_port(node: yaml.Node, path: str, ctx: FileContext) -> str | None:
    if isinstance(node, yaml.MappingNode):
        p = MapView(node, path, ctx, PORT, "a bridge port")
        if not p.require("name", "the port's interface name"):
            return None
        return p.string("name", validate.link_name)
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str":
        value = scalar_value(node)
        problem = validate.link_name(value)
        if problem:
            ctx.error(node, path, problem)
            return None
        return str(value)
    ctx.error(node, path, f"expected a port ({{name: eth1}}), got {describe(node)}")
    return None


def _parse_veth(m: MapView, path: str, iftype: IfType | None, ctx: FileContext) -> str | None:
    v = m.mapping("veth", VETH, "veth")
    if v is None:
        return None
    if iftype is not IfType.VETH:
        ctx.error(m.key_node("veth"), join(path, "veth"), "'veth' is only valid with type: veth")
        return None
    return v.string("peer", validate.link_name) if v.require("peer", "the peer's name") else None


def _parse_vlan(m: MapView, path: str, iftype: IfType | None, ctx: FileContext) -> tuple[str | None, int | None]:
    v = m.mapping("vlan", VLAN, "vlan")
    if iftype is IfType.VLAN and v is None and m.value_node("vlan") is None:
        ctx.error(m.node, join(path, "vlan"), "required for type: vlan: {base-iface: NAME, id: 1-4094}")
        return None, None
    if v is None:
        return None, None
    if iftype is not IfType.VLAN:
        ctx.error(m.key_node("vlan"), join(path, "vlan"), "'vlan' is only valid with type: vlan")
        return None, None
    v.require("base-iface", "the parent interface")
    v.require("id", "the VLAN id (1-4094)")
    if "protocol" in v:
        v.choice("protocol")
    return v.string("base-iface", validate.link_name), v.integer("id")


def cross_check(interfaces: Sequence[Interface]) -> list[ConfigIssue]:
    """Checks that need every interface of every file: ports, peers, parents."""
    issues: list[ConfigIssue] = []
    by_name = {i.name: i for i in interfaces}

    def issue(iface: Interface, path: str, message: str) -> None:
        origin = iface.origin or Origin("?", 0)
        issues.append(ConfigIssue(origin.file, origin.line, f"interfaces[{iface.name}].{path}", message))

    owner: dict[str, Interface] = {}
    for iface in interfaces:
        if iface.bridge is None or not iface.bridge.ports or iface.state is AdminState.ABSENT:
            continue
        for port in iface.bridge.ports:
            other = owner.get(port)
            if other is not None:
                issue(iface, "bridge.port", f"{port!r} is already a port of bridge {other.name!r} "
                      f"({other.origin}); an interface can be enslaved to one bridge only")
                continue
            owner[port] = iface
            declared = by_name.get(port)
            if declared is None:
                continue
            if declared.type is IfType.BRIDGE:
                issue(iface, "bridge.port", f"{port!r} is a bridge; a bridge cannot be a port of another bridge")
            elif declared.state is AdminState.ABSENT:
                issue(iface, "bridge.port", f"{port!r} is declared absent ({declared.origin}) "
                      "and cannot be a port")
    for iface in interfaces:
        if iface.veth_peer is not None:
            if iface.veth_peer == iface.name:
                issue(iface, "veth.peer", "a veth cannot be its own peer")
            peer = by_name.get(iface.veth_peer)
            if peer is not None and peer.type not in (IfType.VETH, None):
                issue(iface, "veth.peer", f"peer {iface.veth_peer!r} is declared as {peer.type}, not veth")
        if iface.vlan_base is not None:
            if iface.vlan_base == iface.name:
                issue(iface, "vlan.base-iface", "a VLAN cannot be its own parent")
            base = by_name.get(iface.vlan_base)
            if base is not None and base.state is AdminState.ABSENT and iface.state is not AdminState.ABSENT:
                issue(iface, "vlan.base-iface", f"parent {iface.vlan_base!r} is declared absent ({base.origin})")
    return issues
