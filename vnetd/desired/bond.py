# SPDX-License-Identifier: MIT
"""``link-aggregation`` of a ``type: bond`` interface (nmstate's schema): ``mode``,
``port`` (or ``ports``) and ``options`` by their sysfs names.

Values are taken as nmstate and BONDING_OPTS write them (``arp_validate: all`` or
3, ``use_carrier: true`` or 1, ``arp_ip_target: 192.0.2.1,192.0.2.2`` or a list)
and turned into the kernel's values (``vnetd.model.bond``). Options the kernel
refuses in the declared mode (``lacp_rate`` outside 802.3ad...) are refused here,
with the modes that take them.
"""

from __future__ import annotations

import ipaddress
import re

import yaml

from vnetd.desired import validate
from vnetd.desired.nodes import FileContext, MapView, as_list, describe, join, scalar_value
from vnetd.desired.schema import BOND, BOND_OPTIONS, BOND_PORT
from vnetd.model.bond import MODE_NAMES, MODES, OPTIONS, BondOption
from vnetd.model.interfaces import BondConfig

_TAG_INT = "tag:yaml.org,2002:int"
_TAG_STR = "tag:yaml.org,2002:str"
_TAG_BOOL = "tag:yaml.org,2002:bool"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,10}")  # at most 11 digits: beyond any option's range

OptionValue = int | str | tuple[str, ...]


def parse_bond(m: MapView, path: str, is_bond: bool, name: str | None, ctx: FileContext) -> BondConfig | None:
    la = m.mapping("link-aggregation", BOND, "link-aggregation")
    if la is None:
        return None
    if not is_bond:
        ctx.error(m.key_node("link-aggregation"), join(path, "link-aggregation"),
                  "'link-aggregation' is only valid with type: bond")
        return None
    mode = _mode(la, ctx)
    if "port" in la and "ports" in la:
        ctx.error(la.key_node("ports"), join(la.path, "ports"), "write the ports once: port or ports, not both")
    key = "ports" if "ports" in la else "port"
    ports = _ports(la, key, name, ctx)
    options = _options(la, mode, ctx)
    return BondConfig(mode, ports, options)


def _mode(la: MapView, ctx: FileContext) -> str | None:
    node = la.value_node("mode")
    if node is None:
        return None
    valid = ", ".join(f"{n} ({i})" for n, i in MODES.items())
    if isinstance(node, yaml.ScalarNode) and node.tag == _TAG_INT and _DECIMAL.fullmatch(str(node.value)):
        number = int(node.value)
        if number in MODE_NAMES:
            return MODE_NAMES[number]
    elif isinstance(node, yaml.ScalarNode) and node.tag == _TAG_STR and node.value in MODES:
        return str(node.value)
    ctx.error(node, join(la.path, "mode"), f"{describe(node)} is not a bond mode; expected one of: {valid}")
    return None


def _ports(la: MapView, key: str, name: str | None, ctx: FileContext) -> tuple[str, ...] | None:
    items = la.sequence(key)
    if items is None:
        return None
    names: list[str] = []
    for item, ipath in items:
        port: str | None = None
        if isinstance(item, yaml.MappingNode):
            p = MapView(item, ipath, ctx, BOND_PORT, "a bond port")
            port = p.string("name", validate.link_name) if p.require("name", "the port's name") else None
        elif isinstance(item, yaml.ScalarNode) and item.tag == _TAG_STR:
            problem = validate.link_name(str(item.value))
            if problem:
                ctx.error(item, ipath, problem)
            else:
                port = str(item.value)
        else:
            ctx.error(item, ipath, f"expected a port's name (eth1), got {describe(item)}")
        if port is None:
            continue
        if port == name:
            ctx.error(item, ipath, f"{port!r} cannot be a port of itself")
        elif port in names:
            ctx.error(item, ipath, f"port {port!r} is listed twice")
        else:
            names.append(port)
    return tuple(names)


def _options(la: MapView, mode: str | None, ctx: FileContext) -> tuple[tuple[str, OptionValue], ...]:
    opts = la.mapping("options", BOND_OPTIONS, "bond options")
    if opts is None:
        return ()
    out: dict[str, OptionValue] = {}
    for key in opts.keys():
        node = opts.value_node(key)
        assert node is not None
        option = OPTIONS[key]
        path = join(opts.path, key)
        value = _value(option, node, path, ctx)
        if value is None:
            continue
        if option.modes is not None:
            modes = ", ".join(sorted(option.modes))
            if mode is None:
                ctx.error(opts.key_node(key), path, f"{key} is an option of the modes {modes} only: write "
                          "link-aggregation.mode (a bond is created balance-rr)")
                continue
            if mode not in option.modes:
                ctx.error(opts.key_node(key), path, f"the kernel refuses {key} in mode {mode}; it is an option "
                          f"of the modes {modes}")
                continue
        out[key] = value
    if out.get("miimon") and out.get("arp_interval"):
        ctx.error(opts.key_node("arp_interval"), join(opts.path, "arp_interval"),
                  "MII monitoring (miimon) and ARP monitoring (arp_interval) exclude each other; set one to 0")
    return tuple(sorted(out.items()))


def _value(option: BondOption, node: yaml.Node, path: str, ctx: FileContext) -> OptionValue | None:
    scalar = node if isinstance(node, yaml.ScalarNode) else None
    text = str(scalar.value) if scalar is not None else ""
    if option.kind == "int":
        if scalar is not None and scalar.tag in (_TAG_INT, _TAG_STR) and _DECIMAL.fullmatch(text):
            number = int(text)
            if option.lo <= number <= option.hi:
                return number
            ctx.error(node, path, f"{number} is out of range; expected an integer {option.lo}-{option.hi}")
            return None
        ctx.error(node, path, f"expected an integer {option.lo}-{option.hi}, got {describe(node)}")
        return None
    if option.kind == "bool":
        if scalar is not None and scalar.tag == _TAG_BOOL:
            return 1 if scalar_value(scalar) else 0
        if scalar is not None and text in ("0", "1"):
            return int(text)
        ctx.error(node, path, f"expected true or false (or 1/0), got {describe(node)}")
        return None
    if option.kind == "enum":
        if scalar is not None and text in option.choices and scalar.tag == _TAG_STR:
            return option.choices.index(text)
        if scalar is not None and scalar.tag in (_TAG_INT, _TAG_STR) and _DECIMAL.fullmatch(text) \
                and int(text) < len(option.choices):
            return int(text)
        choices = ", ".join(f"{c} ({i})" for i, c in enumerate(option.choices))
        ctx.error(node, path, f"{describe(node)} is not valid; expected one of: {choices}")
        return None
    if option.kind == "ip-list":
        return _targets(node, path, ctx)
    if scalar is None or scalar.tag != _TAG_STR:
        expected = "a MAC address (quoted)" if option.kind == "mac" else "an interface name"
        ctx.error(node, path, f"expected {expected}, got {describe(node)}")
        return None
    problem = validate.mac_address(text) if option.kind == "mac" else validate.link_name(text)
    if problem:
        ctx.error(node, path, problem)
        return None
    return validate.normalize_mac(text) if option.kind == "mac" else text


def _targets(node: yaml.Node, path: str, ctx: FileContext) -> tuple[str, ...] | None:
    """arp_ip_target: up to 16 IPv4 addresses, a list or "a,b" as sysfs and nmstate write them."""
    words: list[tuple[yaml.Node, str]] = []
    if isinstance(node, yaml.ScalarNode) and node.tag == _TAG_STR:
        words = [(node, w.strip()) for w in str(node.value).split(",") if w.strip()]
    else:
        items = as_list(node, path, ctx)
        if items is None:
            return None
        for item, _ipath in items:
            if not isinstance(item, yaml.ScalarNode) or item.tag != _TAG_STR:
                ctx.error(item, path, f"expected an IPv4 address, got {describe(item)}")
                return None
            words.append((item, str(item.value)))
    targets: list[str] = []
    for item, word in words:
        try:
            ip = ipaddress.IPv4Address(word)
        except ValueError:
            ctx.error(item, path, f"{word!r} is not an IPv4 address (the bond sends its ARP probes to these)")
            return None
        if ip.is_unspecified or ip.is_multicast or str(ip) in targets:
            ctx.error(item, path, f"{word} cannot be an ARP target (unspecified, multicast or listed twice)")
            return None
        targets.append(str(ip))
    if len(targets) > 16:
        ctx.error(node, path, f"{len(targets)} ARP targets; the kernel takes at most 16")
        return None
    return tuple(targets)
