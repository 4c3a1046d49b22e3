# SPDX-License-Identifier: MIT
"""The ``libvirt:`` section: connection URI, networks, guests' taps."""

from __future__ import annotations

import re

import yaml

from vnetd.desired.nodes import FileContext, as_map, join
from vnetd.model.common import Origin
from vnetd.model.libvirt import DEFAULT_URI, LibvirtSpec, NetworkSpec, NetworkState

_NETWORK_KEYS = ("name", "state", "autostart", "xml")
_STATES = tuple(s.value for s in NetworkState)
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")
_URI = re.compile(r"^[a-z][a-z0-9+]*://[^\s]*$")
MAX_XML = 256 * 1024


def _name_problem(name: str) -> str | None:
    if not _NAME.match(name):
        return f"{name!r} is not a libvirt network name; use 1-64 letters, digits, '_', '.', '+', '-'"
    return None


def _uri_problem(uri: str) -> str | None:
    if not _URI.match(uri):
        return f"{uri!r} is not a libvirt URI; e.g. qemu:///system or test:///default"
    return None


def parse_libvirt(node: yaml.Node, ctx: FileContext) -> tuple[LibvirtSpec | None, bool]:
    """Returns the section and whether ``uri`` was written (for duplicate checks)."""
    m = as_map(node, "libvirt", ctx, ("uri", "networks", "guests"), "libvirt")
    if m is None:
        return None, False
    uri = m.string("uri", _uri_problem) or DEFAULT_URI
    networks: list[NetworkSpec] = []
    for item, path in m.sequence("networks") or []:
        n = as_map(item, path, ctx, _NETWORK_KEYS, "a libvirt network")
        if n is None or not n.require("name", "the libvirt network name, e.g. default"):
            continue
        before = len(ctx.issues)
        name = n.string("name", _name_problem)
        state = NetworkState(n.choice("state", _STATES) or "active")
        autostart = n.boolean("autostart")
        xml = n.string("xml")
        if xml is not None:
            if len(xml) > MAX_XML:
                ctx.error(n.value_node("xml"), join(path, "xml"), "network XML is larger than 256 KiB")
            elif not xml.lstrip().startswith("<network"):
                ctx.error(n.value_node("xml"), join(path, "xml"), "expected a <network>...</network> definition")
            elif name is not None and f"<name>{name}</name>" not in xml.replace(" ", ""):
                ctx.error(n.value_node("xml"), join(path, "xml"), f"the XML must define <name>{name}</name>")
        if name is None or len(ctx.issues) != before:
            continue
        networks.append(NetworkSpec(name, state, autostart, xml, Origin(ctx.file, n.line)))
    reattach = False
    g = m.mapping("guests", ("reattach",), "libvirt.guests")
    if g is not None:
        reattach = bool(g.boolean("reattach"))
    return LibvirtSpec(uri, tuple(networks), reattach, Origin(ctx.file, m.line)), "uri" in m
