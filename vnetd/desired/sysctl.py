# SPDX-License-Identifier: MIT
"""The ``sysctl:`` section: keys under ``net.`` only, values as in sysctl.conf.

A state file must not become a way to change ``kernel.*`` (or anything outside
``/proc/sys/net``): keys are checked for syntax and for path tricks before use.
"""

from __future__ import annotations

import re

import yaml

from vnetd.desired.nodes import FileContext, as_map, as_sysctl_value, describe, join
from vnetd.model.common import Origin
from vnetd.model.sysctl import SysctlSpec, normalize_value

_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:+@-]*\Z")
MAX_VALUE_LENGTH = 256


def key_problem(key: str) -> str | None:
    """None if ``key`` names a file under /proc/sys/net, else why not."""
    if len(key) > 255:
        return "key is too long"
    components = split_key(key)
    if components is None or not components:
        return f"{key!r} is not a sysctl key; expected e.g. net.ipv4.ip_forward"
    if components[0] != "net":
        return f"{key!r} is not under net.; vnetd manages network sysctls (net.*) only"
    if len(components) < 2:
        return f"{key!r} names a directory, not a setting"
    for comp in components:
        if comp in (".", "..") or not _COMPONENT.match(comp):
            return f"{key!r} has an invalid component {comp!r}"
    return None


def split_key(key: str) -> list[str] | None:
    """sysctl.conf syntax: '.' separates, unless the key uses '/' (then '.' is literal)."""
    if not key or key.startswith((".", "/")) or key.endswith((".", "/")):
        return None
    if "/" in key:
        parts = key.split("/")
    else:
        parts = key.split(".")
    if any(p == "" for p in parts):
        return None
    return parts


def canonical_key(key: str) -> str:
    parts = split_key(key) or []
    if any("." in p for p in parts):
        return "/".join(parts)
    return ".".join(parts)


def parse_sysctl(node: yaml.Node, ctx: FileContext) -> list[SysctlSpec]:
    m = as_map(node, "sysctl", ctx, None)
    if m is None:
        return []
    result = []
    for key in m.keys():
        path = join("sysctl", key)
        problem = key_problem(key)
        if problem:
            ctx.error(m.key_node(key), path, problem)
            continue
        vnode = m.value_node(key)
        assert vnode is not None
        value = as_sysctl_value(vnode)
        if value is None:
            ctx.error(vnode, path, f"expected a value as in sysctl.conf (a number or a string), got {describe(vnode)}")
            continue
        if len(value) > MAX_VALUE_LENGTH or not value.strip() or "\n" in value or "\0" in value:
            ctx.error(vnode, path, "expected a single-line value of at most 256 characters")
            continue
        origin = Origin(ctx.file, vnode.start_mark.line + 1)
        result.append(SysctlSpec(canonical_key(key), normalize_value(value), origin))
    return result
