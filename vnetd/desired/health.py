# SPDX-License-Identifier: MIT
"""The ``health:`` section: probes that must keep passing after a configuration change.

    health:
      probes:
      - tcp: 192.0.2.10:22          # a TCP connection completes ([2001:db8::1]:22 for IPv6)
        name: ssh-to-gateway        # optional; defaults to the target
        timeout: 2                  # seconds, 0.1-30; default 2
      - icmp: 192.0.2.254           # an echo reply comes back
      - address: 192.0.2.1/24       # this address is present on the link
        interface: br0
"""

from __future__ import annotations

import ipaddress

import yaml

from vnetd.desired import validate
from vnetd.desired.nodes import FileContext, MapView, as_list, as_map, describe, join
from vnetd.desired.schema import HEALTH, PROBE
from vnetd.model.common import Origin
from vnetd.model.health import DEFAULT_TIMEOUT, MAX_TIMEOUT, ProbeKind, ProbeSpec


def parse_health(node: yaml.Node, ctx: FileContext) -> list[ProbeSpec]:
    top = as_map(node, "health", ctx, HEALTH, "health")
    if top is None or "probes" not in top:
        return []
    pnode = top.value_node("probes")
    assert pnode is not None
    items = as_list(pnode, "health.probes", ctx)
    probes = []
    for item, path in items or []:
        m = as_map(item, path, ctx, PROBE, "a probe")
        if m is None:
            continue
        probe = _probe(m, path, ctx)
        if probe is not None:
            probes.append(probe)
    return probes


def _probe(m: MapView, path: str, ctx: FileContext) -> ProbeSpec | None:
    kinds = [k for k in ProbeKind if k.value in m]
    if len(kinds) != 1:
        ctx.error(m.node, path, "a probe has exactly one of icmp, tcp, address")
        return None
    kind = kinds[0]
    origin = Origin(ctx.file, m.line)
    timeout = _timeout(m, path, ctx)
    target = m.string(kind.value)
    if target is None or timeout is None:
        return None
    node = m.value_node(kind.value)
    name = m.string("name", _name_problem) or target
    if kind is ProbeKind.ICMP:
        try:
            address = ipaddress.ip_address(target)
        except ValueError:
            ctx.error(node, join(path, "icmp"), f"{target!r} is not an IP address (host names are not resolved)")
            return None
        return ProbeSpec(name, kind, address=address, timeout=timeout, origin=origin)
    if kind is ProbeKind.TCP:
        host, _, port = target.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        try:
            address = ipaddress.ip_address(host)
            number = int(port)
        except ValueError:
            ctx.error(node, join(path, "tcp"), f"{target!r} is not ADDRESS:PORT (e.g. 192.0.2.10:22, [2001:db8::1]:22)")
            return None
        if not 1 <= number <= 65535:
            ctx.error(node, join(path, "tcp"), f"port {number} is out of range 1-65535")
            return None
        return ProbeSpec(name, kind, address=address, port=number, timeout=timeout, origin=origin)
    interface = m.string("interface", validate.link_name)
    if interface is None:
        if "interface" not in m:
            ctx.error(m.node, join(path, "interface"), "required: the link the address must be on")
        return None
    try:
        ip = ipaddress.ip_interface(target)
    except ValueError:
        ctx.error(node, join(path, "address"), f"{target!r} is not an address with its prefix (e.g. 192.0.2.1/24)")
        return None
    return ProbeSpec(name, kind, interface=interface, interface_address=ip, timeout=timeout, origin=origin)


def _timeout(m: MapView, path: str, ctx: FileContext) -> float | None:
    node = m.value_node("timeout")
    if node is None:
        return DEFAULT_TIMEOUT
    value: float
    if isinstance(node, yaml.ScalarNode) and node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
        try:
            value = float(node.value)
        except ValueError:
            value = -1.0
        if 0.1 <= value <= MAX_TIMEOUT:
            return value
    ctx.error(node, join(path, "timeout"), f"expected seconds 0.1-{MAX_TIMEOUT:g}, got {describe(node)}")
    return None


def _name_problem(value: str) -> str | None:
    if not value or len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value):
        return "a probe name is 1-64 letters, digits, '-', '_' or '.'"
    return None
