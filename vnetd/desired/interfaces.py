# SPDX-License-Identifier: MIT
"""The ``interfaces:`` section: the nmstate schema subset vnetd manages.

Supported per interface: ``name``, ``type``, ``state``, ``mtu``, ``mac-address``,
``identifier`` (``name`` or ``mac-address``) and ``profile-name``, ``ipv4``/``ipv6``
(``enabled``, static ``address`` list, ``dhcp``, ``autoconf``),
``bridge.options.stp.*``, ``bridge.port[].name``, ``veth.peer``, ``vlan``
(``base-iface``, ``id``, ``protocol``, ``reorder-headers``, ``loose-binding``,
``registration-protocol``), ``vxlan`` (``id``, ``remote``, ``local``, ``base-iface``,
``destination-port``, ``learning``) and ``link-aggregation`` (``mode``, ``port``,
``options``). Anything else is an error that names the valid keys, so a typo never
silently stops managing something.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import yaml

from vnetd.desired import validate
from vnetd.desired.bond import parse_bond
from vnetd.desired.nodes import FileContext, MapView, as_list, as_map, describe, join, scalar_value
from vnetd.desired.schema import (
    ADDRESS,
    BRIDGE,
    BRIDGE_OPTIONS,
    DHCP_CLIENT_KEYS,
    INTERFACE,
    IP,
    PORT,
    STP,
    VETH,
    VLAN,
    VXLAN,
)
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
    VlanOptions,
    VlanProtocol,
    VxlanConfig,
)

_TYPES = INTERFACE.values("type")
_DHCP_CLIENT_KEYS = tuple(key for key, _kind in DHCP_CLIENT_KEYS)


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
    match_mac, name = _parse_identifier(m, path, iftype, name, mac, ctx)
    if match_mac is not None and state is AdminState.ABSENT:
        match_mac = None  # a NIC is never deleted: refused above

    ipv4 = _parse_ip(m, "ipv4", 4, ctx)
    ipv6 = _parse_ip(m, "ipv6", 6, ctx)
    bridge = _parse_bridge(m, path, iftype, name, ctx)
    bond = parse_bond(m, path, iftype is IfType.BOND, name, ctx)
    veth_peer = _parse_veth(m, path, iftype, ctx)
    vlan_base, vlan_id, vlan = _parse_vlan(m, path, iftype, ctx)
    vxlan = _parse_vxlan(m, path, iftype, ctx)

    if mtu is not None and mtu < 1280 and ipv6 is not None and ipv6.addresses:
        ctx.error(m.value_node("mtu"), join(path, "mtu"),
                  "IPv6 needs an MTU of at least 1280, and this interface lists IPv6 addresses "
                  "(the kernel refuses them below it)")
    if len(ctx.issues) != errors_before or name is None:
        return None
    return Interface(
        name=name, type=iftype, state=state, mtu=mtu,
        mac=validate.normalize_mac(mac) if mac and match_mac is None else None,
        bridge=bridge, ipv4=ipv4, ipv6=ipv6, veth_peer=veth_peer,
        vlan_base=vlan_base, vlan_id=vlan_id,
        origin=Origin(ctx.file, m.line),
        vlan=vlan, vxlan=vxlan, bond=bond, match_mac=match_mac,
    )


def _parse_identifier(m: MapView, path: str, iftype: IfType | None, name: str | None, mac: str | None,
                      ctx: FileContext) -> tuple[str | None, str | None]:
    """``identifier: mac-address``: (the MAC to find the NIC by, the profile name).

    The profile name is ``profile-name`` when written (``name`` is then only what the
    NIC was called where the file was written), else ``name``.
    """
    identifier = m.choice("identifier")
    profile = m.string("profile-name", validate.link_name)
    if identifier != "mac-address":
        if "profile-name" in m:
            ctx.error(m.key_node("profile-name"), join(path, "profile-name"),
                      "profile-name names a NIC found by its MAC: write it with identifier: mac-address and "
                      "mac-address (an interface found by name is known by its name)")
        return None, name
    if iftype not in (IfType.ETHERNET, None):
        ctx.error(m.value_node("identifier"), join(path, "identifier"),
                  f"only NICs (type: ethernet) are found by their MAC; a {iftype} is created by vnetd under "
                  "its name")
        return None, name
    if mac is None:
        if "mac-address" not in m:
            ctx.error(m.node, join(path, "mac-address"),
                      "required with identifier: mac-address: the MAC of the NIC, e.g. 52:54:00:0a:fa:3e")
        return None, name
    return validate.normalize_mac(mac), profile or name


def _parse_ip(m: MapView, key: str, version: int, ctx: FileContext) -> IpConfig | None:
    ip = m.mapping(key, IP, key)
    if ip is None:
        return None
    enabled = ip.boolean("enabled")
    if enabled is None and "enabled" not in ip:
        enabled = True
    for client_key in _DHCP_CLIENT_KEYS:
        if client_key in ip:
            ctx.error(ip.key_node(client_key), join(ip.path, client_key),
                      f"{client_key} configures nmstate's own DHCP client; vnetd runs none (with dhcp: true the "
                      "host's DHCP client owns the addresses and default route): remove it")
    dhcp = bool(ip.boolean("dhcp"))
    autoconf = bool(ip.boolean("autoconf"))
    if "autoconf" in ip and version == 4:
        ctx.error(ip.key_node("autoconf"), join(ip.path, "autoconf"), "autoconf exists for ipv6 only "
                  "(router advertisements); IPv4 has dhcp")
        autoconf = False
    if enabled is False and (dhcp or autoconf):
        which = "dhcp" if dhcp else "autoconf"
        ctx.error(ip.value_node(which), join(ip.path, which),
                  f"{key} is disabled (enabled: false) but {which} is true; a disabled {key} has no addresses")
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
    return IpConfig(enabled=bool(enabled), addresses=tuple(addresses) if addresses is not None else None,
                    dhcp=dhcp, autoconf=autoconf)


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


def _parse_vlan(m: MapView, path: str, iftype: IfType | None, ctx: FileContext
                ) -> tuple[str | None, int | None, VlanOptions | None]:
    v = m.mapping("vlan", VLAN, "vlan")
    if iftype is IfType.VLAN and v is None and m.value_node("vlan") is None:
        ctx.error(m.node, join(path, "vlan"), "required for type: vlan: {base-iface: NAME, id: 1-4094}")
        return None, None, None
    if v is None:
        return None, None, None
    if iftype is not IfType.VLAN:
        ctx.error(m.key_node("vlan"), join(path, "vlan"), "'vlan' is only valid with type: vlan")
        return None, None, None
    v.require("base-iface", "the parent interface")
    v.require("id", "the VLAN id (1-4094)")
    protocol = v.choice("protocol")
    options = VlanOptions(
        protocol=VlanProtocol(protocol) if protocol else None,
        reorder_headers=v.boolean("reorder-headers"),
        loose_binding=v.boolean("loose-binding"),
        registration_protocol=v.choice("registration-protocol"),
    )
    return (v.string("base-iface", validate.link_name), v.integer("id"),
            None if options == VlanOptions() else options)


def _parse_vxlan(m: MapView, path: str, iftype: IfType | None, ctx: FileContext) -> VxlanConfig | None:
    """nmstate ``vxlan``: id (VNI), remote (a unicast peer or a multicast group),
    local, base-iface (the underlay device), destination-port, learning."""
    v = m.mapping("vxlan", VXLAN, "vxlan")
    if iftype is IfType.VXLAN and v is None:
        if m.value_node("vxlan") is None:
            ctx.error(m.node, join(path, "vxlan"), "required for type: vxlan: {id: 0-16777215, remote: ADDRESS, "
                                                   "base-iface: NAME, ...}")
        return None
    if v is None:
        return None
    if iftype is not IfType.VXLAN:
        ctx.error(m.key_node("vxlan"), join(path, "vxlan"), "'vxlan' is only valid with type: vxlan")
        return None
    before = len(ctx.issues)
    v.require("id", "the VXLAN network identifier (VNI, 0-16777215)")
    vni = v.integer("id")
    addresses: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
    for key in ("remote", "local"):
        text = v.string(key, validate.ip_address, expected="an IPv4 or IPv6 address")
        if text is not None:
            addresses[key] = ipaddress.ip_address(text)
    base = v.string("base-iface", validate.link_name)
    port = v.integer("destination-port")
    learning = v.boolean("learning")
    if vni is None or len(ctx.issues) != before:
        return None
    remote, local = addresses.get("remote"), addresses.get("local")
    if remote is not None and local is not None and remote.version != local.version:
        ctx.error(v.value_node("local"), join(v.path, "local"),
                  f"{local} is IPv{local.version} but remote {remote} is IPv{remote.version}")
        return None
    if remote is not None and (remote.is_unspecified or remote.is_loopback):
        ctx.error(v.value_node("remote"), join(v.path, "remote"), f"{remote} cannot be a VXLAN peer; write the "
                  "other host's address, or a multicast group")
        return None
    if remote is not None and remote.is_multicast and base is None:
        ctx.error(v.value_node("remote"), join(v.path, "remote"), f"{remote} is a multicast group: the kernel "
                  "needs base-iface to know where to join it")
        return None
    if local is not None and (local.is_multicast or local.is_unspecified):
        ctx.error(v.value_node("local"), join(v.path, "local"), f"{local} cannot be a local tunnel address; "
                  "write one of this host's unicast addresses, or leave local out")
        return None
    return VxlanConfig(vni, remote, local, base, port, learning)


def cross_check(interfaces: Sequence[Interface]) -> list[ConfigIssue]:
    """Checks that need every interface of every file: ports, peers, parents, MACs."""
    issues: list[ConfigIssue] = []
    by_name = {i.name: i for i in interfaces}

    def issue(iface: Interface, path: str, message: str) -> None:
        origin = iface.origin or Origin("?", 0)
        issues.append(ConfigIssue(origin.file, origin.line, f"interfaces[{iface.name}].{path}", message))

    owner: dict[str, Interface] = {}
    for iface in interfaces:
        if not iface.ports or iface.state is AdminState.ABSENT:
            continue
        what, field = ("bond", "link-aggregation.port") if iface.type is IfType.BOND else ("bridge", "bridge.port")
        for port in iface.ports:
            other = owner.get(port)
            if other is not None:
                kind = "bond" if other.type is IfType.BOND else "bridge"
                issue(iface, field, f"{port!r} is already a port of {kind} {other.name!r} "
                      f"({other.origin}); an interface can be enslaved to one bridge or bond only")
                continue
            owner[port] = iface
            declared = by_name.get(port)
            if declared is None:
                continue
            if declared.type in (IfType.BRIDGE, IfType.BOND) and not (what == "bridge"
                                                                      and declared.type is IfType.BOND):
                kind = "bridge" if declared.type is IfType.BRIDGE else "bond"
                issue(iface, field, f"{port!r} is a {kind}; a {kind} cannot be a port of "
                      f"{'another' if kind == what else 'a'} {what}")
            elif declared.state is AdminState.ABSENT:
                issue(iface, field, f"{port!r} is declared absent ({declared.origin}) and cannot be a port")
            elif what == "bond" and declared.type not in (IfType.ETHERNET, IfType.VETH, None):
                issue(iface, field, f"{port!r} is a {declared.type}; a bond's ports are NICs")
            elif what == "bond" and declared.mtu is not None and iface.mtu is not None and declared.mtu != iface.mtu:
                issue(iface, field, f"{port!r} is declared with mtu {declared.mtu} ({declared.origin}) but the bond "
                      f"with mtu {iface.mtu}; the kernel gives a bond's ports the bond's MTU")
            elif what == "bond" and ((declared.ipv4 and declared.ipv4.addresses)
                                     or (declared.ipv6 and declared.ipv6.addresses)):
                issue(iface, field, f"{port!r} lists addresses ({declared.origin}); a bond's port has none, "
                      "the bond has them")
    macs: dict[str, Interface] = {}
    for iface in interfaces:
        if iface.match_mac is not None:
            first = macs.setdefault(iface.match_mac, iface)
            if first is not iface:
                issue(iface, "mac-address", f"{iface.match_mac} identifies {first.name!r} too ({first.origin}); "
                      "one NIC cannot be two interfaces")
        if iface.veth_peer is not None:
            if iface.veth_peer == iface.name:
                issue(iface, "veth.peer", "a veth cannot be its own peer")
            peer = by_name.get(iface.veth_peer)
            if peer is not None and peer.type not in (IfType.VETH, None):
                issue(iface, "veth.peer", f"peer {iface.veth_peer!r} is declared as {peer.type}, not veth")
        base_name = iface.base_iface
        if base_name is not None:
            field = "vlan.base-iface" if iface.type is IfType.VLAN else "vxlan.base-iface"
            if base_name == iface.name:
                issue(iface, field, f"a {iface.type} cannot be its own base-iface")
            base = by_name.get(base_name)
            if base is not None and base.state is AdminState.ABSENT and iface.state is not AdminState.ABSENT:
                issue(iface, field, f"parent {base_name!r} is declared absent ({base.origin})")
            elif iface.type is IfType.VLAN and owner.get(base_name) is not None \
                    and owner[base_name].type is IfType.BOND:
                issue(iface, field, f"{base_name!r} is a port of bond {owner[base_name].name!r}; "
                      "put the VLAN on the bond")
        primary = dict(iface.bond.options).get("primary") if iface.bond is not None else None
        if iface.bond is not None and iface.bond.ports is not None and isinstance(primary, str) \
                and primary not in iface.bond.ports:
            issue(iface, "link-aggregation.options.primary", f"primary {primary!r} is not one of the bond's "
                  f"ports ({', '.join(iface.bond.ports) or 'none'})")
    return issues
