# SPDX-License-Identifier: MIT
"""The ``libvirt:`` section: connection URI, networks, guests' taps."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import yaml

from vnetd.desired import validate
from vnetd.desired.nodes import FileContext, as_map, join
from vnetd.model.common import Origin
from vnetd.model.libvirt import DEFAULT_URI, LibvirtSpec, NetworkSpec, NetworkState

_NETWORK_KEYS = ("name", "state", "autostart", "xml")
_STATES = tuple(s.value for s in NetworkState)
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}\Z")
_URI = re.compile(r"^[a-z][a-z0-9+]*://[^\s]*\Z")
MAX_XML = 256 * 1024


def _name_problem(name: str) -> str | None:
    if not _NAME.match(name):
        return f"{name!r} is not a libvirt network name; use 1-64 letters, digits, '_', '.', '+', '-'"
    return None


def _uri_problem(uri: str) -> str | None:
    if not _URI.match(uri):
        return f"{uri!r} is not a libvirt URI; e.g. qemu:///system or test:///default"
    return None


def _xml_problem(xml: str, name: str | None) -> str | None:
    """What is wrong with a network definition, as far as vnetd can tell before libvirt.

    The bridge it names is a link name like any other (``<bridge name='all'/>`` would
    fail in the kernel), except that libvirt itself expands one ``%d`` (``virbr%d``)
    to the first free number before the kernel sees it.
    """
    if not xml.lstrip().startswith("<network"):
        return "expected a <network>...</network> definition"
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        return "a DTD or entity declaration has no place in a network definition"
    try:
        root = ET.fromstring(xml)  # noqa: S314 - bounded size, no DTD/entities (refused above)
    except ET.ParseError as exc:
        return f"the network XML is not well-formed: {exc}"
    if name is not None and root.findtext("name") != name:
        return f"the XML must define <name>{name}</name>"
    bridge = root.find("bridge")
    bridge_name = bridge.get("name") if bridge is not None else None
    if bridge_name is not None:
        problem = validate.link_name(bridge_name.replace("%d", "0", 1) if bridge_name.count("%d") == 1
                                     and bridge_name.count("%") == 1 else bridge_name)
        if problem is not None:
            return (f"<bridge name='{bridge_name}'/>: {problem} (libvirt expands one '%d' itself, "
                    "as in virbr%d)")
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
            elif (problem := _xml_problem(xml, name)) is not None:
                ctx.error(n.value_node("xml"), join(path, "xml"), problem)
        if name is None or len(ctx.issues) != before:
            continue
        networks.append(NetworkSpec(name, state, autostart, xml, Origin(ctx.file, n.line)))
    reattach = False
    g = m.mapping("guests", ("reattach",), "libvirt.guests")
    if g is not None:
        reattach = bool(g.boolean("reattach"))
    return LibvirtSpec(uri, tuple(networks), reattach, Origin(ctx.file, m.line)), "uri" in m
