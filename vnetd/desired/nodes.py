# SPDX-License-Identifier: MIT
"""Typed access to a YAML node tree that keeps file and line for every error.

PyYAML's ``compose`` gives nodes with marks but constructs nothing, so aliases stay
shared references (an alias bomb costs nothing until somebody walks it, and the
schema code below only walks the structure it expects) and no Python object is
built from untrusted input except plain scalars.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from vnetd.desired.schema import Table
from vnetd.desired.suggest import did_you_mean
from vnetd.errors import ConfigIssue

#: Stop collecting after this many issues in one file (the rest is one summary line).
MAX_ISSUES_PER_FILE = 200

_TAG_STR = "tag:yaml.org,2002:str"
_TAG_INT = "tag:yaml.org,2002:int"
_TAG_BOOL = "tag:yaml.org,2002:bool"
_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_FLOAT = "tag:yaml.org,2002:float"

_DECIMAL = re.compile(r"[+-]?(0|[1-9][0-9]*)")

_constructor = yaml.SafeLoader("")  # its converters only; construct_object would cache nodes
_CONVERTERS: dict[str, Callable[[yaml.ScalarNode], Any]] = {
    _TAG_INT: _constructor.construct_yaml_int,
    _TAG_BOOL: _constructor.construct_yaml_bool,
    _TAG_FLOAT: _constructor.construct_yaml_float,
    _TAG_NULL: lambda node: None,
}


def scalar_value(node: yaml.ScalarNode) -> Any:
    """The Python value of a plain scalar node, as YAML 1.1 (PyYAML) resolves it."""
    convert = _CONVERTERS.get(node.tag)
    return convert(node) if convert is not None else node.value


def describe(node: yaml.Node) -> str:
    """Short human description of what a node holds, for "expected X, got Y"."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    kind = {
        _TAG_STR: "a string",
        _TAG_INT: "an integer",
        _TAG_BOOL: "a boolean",
        _TAG_NULL: "nothing (null)",
        _TAG_FLOAT: "a number",
    }.get(node.tag, f"a {node.tag.rsplit(':', 1)[-1]}")
    value = str(node.value)
    if len(value) > 40:
        value = value[:37] + "..."
    if node.tag == _TAG_NULL:
        return kind
    text = f"{kind} ({value!r})"
    if not getattr(node, "style", None) and (node.tag in (_TAG_BOOL, _TAG_FLOAT)
                           or (node.tag == _TAG_INT and not _DECIMAL.fullmatch(value))):
        text += f"; YAML reads the unquoted {value} as {kind}: quote it"
    return text


@dataclass
class FileContext:
    """Collects the issues of one file."""

    file: str
    issues: list[ConfigIssue] = field(default_factory=list)
    dropped: int = 0

    def error(self, node: yaml.Node | None, path: str, message: str) -> None:
        if len(self.issues) >= MAX_ISSUES_PER_FILE:
            self.dropped += 1
            return
        line = node.start_mark.line + 1 if node is not None else 0
        self.issues.append(ConfigIssue(self.file, line, path, message))

    def finish(self) -> list[ConfigIssue]:
        if self.dropped:
            self.issues.append(ConfigIssue(self.file, 0, "", f"... and {self.dropped} more issues"))
            self.dropped = 0
        return self.issues


def line_of(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key and all(c.isalnum() or c in "-_" for c in key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key}]"


Validator = Callable[[Any], str | None]
"""Returns None when the value is valid, else what would be valid."""


Allowed = tuple[str, ...] | Table | None
"""The keys a mapping may have: a schema table (vnetd.desired.schema), a tuple of
keys, or None (any key)."""


def allowed_keys(allowed: Allowed) -> tuple[str, ...] | None:
    return allowed.keys if isinstance(allowed, Table) else allowed


class MapView:
    """A mapping node whose keys are checked against ``allowed`` (None: any key).

    Built with a schema ``Table``, ``choice`` and ``integer`` take the allowed
    values and ranges the table gives for a key when the caller gives none."""

    def __init__(
        self,
        node: yaml.MappingNode,
        path: str,
        ctx: FileContext,
        allowed: Allowed,
        what: str = "",
    ) -> None:
        self.node = node
        self.path = path
        self.ctx = ctx
        self.table = allowed if isinstance(allowed, Table) else None
        allowed = allowed_keys(allowed)
        self.entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in (_TAG_STR, _TAG_INT):
                ctx.error(key_node, path, f"keys must be plain strings, got {describe(key_node)}")
                continue
            key = str(key_node.value)
            if key in self.entries:
                first = line_of(self.entries[key][0])
                ctx.error(key_node, join(path, key), f"duplicate key (first written at line {first})")
                continue
            if allowed is not None and key not in allowed:
                valid = ", ".join(allowed)
                where = f" in {what}" if what else ""
                hint = did_you_mean(key, allowed)
                ctx.error(key_node, join(path, key), f"unknown key{where}; valid keys: {valid}"
                          + (f"; {hint}" if hint else ""))
                continue
            self.entries[key] = (key_node, value_node)

    @property
    def line(self) -> int:
        return line_of(self.node)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def keys(self) -> Iterator[str]:
        return iter(self.entries)

    def key_node(self, key: str) -> yaml.Node:
        return self.entries[key][0]

    def value_node(self, key: str) -> yaml.Node | None:
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def require(self, key: str, hint: str) -> bool:
        if key in self.entries:
            return True
        self.ctx.error(self.node, join(self.path, key), f"required: {hint}")
        return False

    # -- scalars ------------------------------------------------------------------

    def _scalar(self, key: str, tag: str, expected: str) -> tuple[Any, yaml.Node] | None:
        node = self.value_node(key)
        if node is None:
            return None
        if not isinstance(node, yaml.ScalarNode) or node.tag != tag:
            self.ctx.error(node, join(self.path, key), f"expected {expected}, got {describe(node)}")
            return None
        try:
            return scalar_value(node), node
        except (ValueError, yaml.YAMLError) as exc:
            self.ctx.error(node, join(self.path, key), f"expected {expected}: {exc}")
            return None

    def string(self, key: str, validate: Validator | None = None, expected: str = "a string") -> str | None:
        got = self._scalar(key, _TAG_STR, expected)
        if got is None:
            return None
        value, node = got
        if validate is not None and (problem := validate(value)) is not None:
            self.ctx.error(node, join(self.path, key), problem)
            return None
        return str(value)

    def integer(self, key: str, lo: int | None = None, hi: int | None = None, unit: str | None = None
                ) -> int | None:
        """An integer in lo-hi (by default the range the schema table gives the key)."""
        if lo is None or hi is None:
            assert self.table is not None, f"{key}: no range given and no schema table"
            table_lo, table_hi, table_unit = self.table.int_range(key)
            lo = table_lo if lo is None else lo
            hi = table_hi if hi is None else hi
            unit = table_unit if unit is None else unit
        unit = unit or ""
        expected = f"an integer {lo}-{hi}{unit}"
        got = self._scalar(key, _TAG_INT, expected)
        if got is None:
            return None
        value, node = got
        if not _DECIMAL.fullmatch(str(node.value)):
            # YAML 1.1 reads 01500 as octal (832), 0x5dc as hex, 1_500 and 25:00 (sexagesimal!) as numbers
            self.ctx.error(node, join(self.path, key), f"write {node.value!r} as a decimal number: YAML 1.1 "
                           f"reads it as {value}, which is probably not what was meant")
            return None
        if not lo <= value <= hi:
            self.ctx.error(node, join(self.path, key), f"{value} is out of range; expected {expected}")
            return None
        return int(value)

    def boolean(self, key: str) -> bool | None:
        got = self._scalar(key, _TAG_BOOL, "true or false")
        return None if got is None else bool(got[0])

    def choice(self, key: str, choices: tuple[str, ...] | None = None) -> str | None:
        """One of ``choices`` (by default the values the schema table gives the key)."""
        if choices is None:
            assert self.table is not None, f"{key}: no choices given and no schema table"
            choices = self.table.values(key)
        valid = choices

        def check(value: str) -> str | None:
            if value in valid:
                return None
            hint = did_you_mean(value, valid)
            return f"{value!r} is not valid; expected one of: {', '.join(valid)}" + (f"; {hint}" if hint else "")

        return self.string(key, check, expected="one of: " + ", ".join(choices))

    # -- containers ---------------------------------------------------------------

    def mapping(self, key: str, allowed: Allowed, what: str = "") -> MapView | None:
        node = self.value_node(key)
        if node is None:
            return None
        return as_map(node, join(self.path, key), self.ctx, allowed, what)

    def sequence(self, key: str) -> list[tuple[yaml.Node, str]] | None:
        node = self.value_node(key)
        if node is None:
            return None
        return as_list(node, join(self.path, key), self.ctx)


def as_map(
    node: yaml.Node, path: str, ctx: FileContext, allowed: Allowed, what: str = ""
) -> MapView | None:
    if isinstance(node, yaml.MappingNode):
        return MapView(node, path, ctx, allowed, what)
    valid = allowed_keys(allowed)
    keys = f" with the keys {', '.join(valid)}" if valid else ""  # say what would be valid
    ctx.error(node, path, f"expected a mapping{keys}, got {describe(node)}")
    return None


def as_list(node: yaml.Node, path: str, ctx: FileContext) -> list[tuple[yaml.Node, str]] | None:
    if isinstance(node, yaml.SequenceNode):
        return [(item, join(path, i)) for i, item in enumerate(node.value)]
    ctx.error(node, path, f"expected a list, got {describe(node)}")
    return None


def as_string(node: yaml.Node, path: str, ctx: FileContext, expected: str = "a string") -> str | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == _TAG_STR:
        return str(node.value)
    ctx.error(node, path, f"expected {expected}, got {describe(node)}")
    return None


def as_sysctl_value(node: yaml.Node) -> str | None:
    """A sysctl value is written as in sysctl.conf: a string or a number, never a list."""
    if not isinstance(node, yaml.ScalarNode) or node.tag in (_TAG_NULL,):
        return None
    if node.tag == _TAG_BOOL:
        return None
    if node.tag == _TAG_FLOAT:
        value = scalar_value(node)
        if not math.isfinite(value):
            return None
        return str(node.value)
    # as written, like sysctl.conf: "0755" is handed to the kernel as 0755 (YAML 1.1
    # would read it as 493), "1_000" as it stands (the kernel refuses it, and says so)
    return str(node.value)
