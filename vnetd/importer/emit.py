# SPDX-License-Identifier: MIT
"""A small YAML writer for state files with comments (PyYAML cannot emit comments).

It writes the subset a state file needs, in the layout of the bundled examples:
block mappings indented by two spaces, block sequences not indented under their
key (``interfaces:`` then ``- name: eth1``), short flow mappings of scalars
(``stp: {enabled: false, forward-delay: 0}``), and ``# comments`` before any entry
or item or at the end of a scalar line.

Scalars are written plain only when YAML reads them back as the same string: the
resolver must call them ``str`` (not ``yes``, ``2011-08-04``, ``0x1f`` or a MAC
such as ``52:54:00:12:34:56``, which YAML 1.1 reads as a base-60 integer), and
they must contain nothing that starts a comment, a mapping or a tag. Everything
else is quoted: in single quotes when that needs no escape at all (a rule with
``--comment "a b"``), otherwise in double quotes with escapes. Comment text from untrusted files is
sanitised: every character that is not printable (including the line breaks YAML
knows besides ``\\n``: NEL, LS, PS) is written as an escape, so nothing from an
imported file can end a comment and start YAML of its own.

``emit`` also reports the lines each *tracked* node occupies, so that a problem
the loader finds on a line can be traced back to the draft that produced it.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field

import yaml

_STR_TAG = "tag:yaml.org,2002:str"
_RESOLVER = yaml.resolver.Resolver()
#: characters a plain scalar may consist of (anything else: double quotes)
_PLAIN_CHARS = re.compile(r"^[A-Za-z0-9 _./,=+@%^:!()<>~$&*?|'\"\[\]{}-]+\Z")
#: characters that may not start a plain scalar (YAML indicators)
_INDICATORS = set("-?:,[]{}#&*!|>'\"%@`~ ")
_FLOW_SPECIALS = set(",[]{}:#")
WIDTH = 100


@dataclass
class Comment:
    """``# text`` lines; ``wrap`` False keeps each line whole (rules, file lines)."""

    text: str
    wrap: bool = True


@dataclass
class Blank:
    """An empty line (between sections)."""


@dataclass
class Entry:
    key: str
    value: Node
    ref: object | None = None
    comment: str | None = None  # at the end of the line (scalars and flow values only)


@dataclass
class Mapping:
    entries: list[Entry | Comment | Blank] = field(default_factory=list)
    flow: bool = False

    def add(self, key: str, value: Node, ref: object | None = None, comment: str | None = None) -> Entry:
        entry = Entry(key, value, ref, comment)
        self.entries.append(entry)
        return entry

    def note(self, text: str, wrap: bool = True) -> None:
        self.entries.append(Comment(text, wrap))


@dataclass
class Item:
    value: Node
    ref: object | None = None
    comment: str | None = None


@dataclass
class Sequence:
    items: list[Item | Comment | Blank] = field(default_factory=list)

    def add(self, value: Node, ref: object | None = None, comment: str | None = None) -> Item:
        item = Item(value, ref, comment)
        self.items.append(item)
        return item

    def note(self, text: str, wrap: bool = True) -> None:
        self.items.append(Comment(text, wrap))


Scalar = str | int | bool | None
Node = Scalar | Mapping | Sequence


# --------------------------------------------------------------------------- scalars


def _escape_char(c: str) -> str:
    special = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "\x1b": "\\e", "\x85": "\\N",
               "\xa0": "\\_", "\u2028": "\\L", "\u2029": "\\P"}
    if c in special:
        return special[c]
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def double_quoted(text: str) -> str:
    out = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c.isprintable():
            out.append(c)
        else:
            out.append(_escape_char(c))
    return '"' + "".join(out) + '"'


def plain_ok(text: str, flow: bool = False) -> bool:
    """True when ``text`` written plain reads back as exactly this string."""
    if not text or not _PLAIN_CHARS.match(text):
        return False
    if text[0] in _INDICATORS and not (text[0] == "-" and len(text) > 1 and text[1] not in " -"):
        return False
    if text[-1] in " :" or ": " in text or " #" in text or text.startswith(("---", "...")):
        return False
    if any(c in "\"'`" for c in text):
        return False  # legal inside a plain scalar, but quoting reads more clearly
    if flow and any(c in _FLOW_SPECIALS for c in text):
        return False
    return bool(_RESOLVER.resolve(yaml.ScalarNode, text, (True, False)) == _STR_TAG)  # type: ignore[no-untyped-call]


def scalar(value: Scalar, flow: bool = False) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if plain_ok(text, flow):
        return text
    if '"' in text and "'" not in text and text.isprintable():
        return "'" + text + "'"  # reads better than escaped double quotes: '--comment "a b"'
    return double_quoted(text)


# --------------------------------------------------------------------------- comments


def sanitize(text: str) -> str:
    """One comment line: every non-printable character escaped (nothing can end the comment)."""
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def _comment_lines(comment: Comment, indent: int) -> Iterator[str]:
    pad = " " * indent
    for raw in comment.text.split("\n"):
        line = sanitize(raw)
        if not line:
            yield f"{pad}#"
            continue
        if comment.wrap and indent + 2 + len(line) > WIDTH:
            lead = len(line) - len(line.lstrip(" "))
            parts = textwrap.wrap(line, width=max(WIDTH - indent - 2, 40), subsequent_indent=" " * (lead + 2),
                                  break_long_words=False, break_on_hyphens=False)
            for part in parts:
                yield f"{pad}# {part}"
        else:
            yield f"{pad}# {line}"


# --------------------------------------------------------------------------- emitter


@dataclass
class Emitted:
    text: str
    #: ref -> (first line, last line), 1-based, of each tracked node
    spans: dict[int, tuple[object, int, int]]

    def ref_at(self, line: int) -> object | None:
        """The innermost tracked node whose lines include ``line``."""
        best: tuple[int, object] | None = None
        for ref, first, last in self.spans.values():
            if first <= line <= last and (best is None or last - first < best[0]):
                best = (last - first, ref)
        return best[1] if best else None


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.spans: dict[int, tuple[object, int, int]] = {}

    def emit(self, line: str) -> None:
        self.lines.append(line.rstrip())

    def track(self, ref: object | None, first: int) -> None:
        if ref is not None:
            self.spans[id(ref)] = (ref, first, len(self.lines))

    def aside(self, part: Blank | Comment, indent: int) -> None:
        """Write a blank line or a comment, at ``indent``."""
        if isinstance(part, Blank):
            self.emit("")
        else:
            for line in _comment_lines(part, indent):
                self.emit(line)

    def mapping(self, m: Mapping, indent: int, first_prefix: str | None = None) -> None:
        """Write a block mapping; ``first_prefix`` replaces the indent of its first line ("- ")."""
        pad = " " * indent
        for part in m.entries:
            if isinstance(part, (Blank, Comment)):
                self.aside(part, indent)
                continue
            lead = pad
            if first_prefix is not None:
                lead, first_prefix = first_prefix, None
            start = len(self.lines) + 1
            self.entry(part, indent, lead)
            self.track(part.ref, start)

    def entry(self, e: Entry, indent: int, lead: str) -> None:
        key = scalar(e.key)
        trailing = f"  # {sanitize(e.comment)}" if e.comment else ""
        v = e.value
        if isinstance(v, Mapping) and (v.flow or not _has_entries(v)):
            self.emit(f"{lead}{key}: {_flow_mapping(v)}{trailing}")
            for part in v.entries:  # the comments of an empty mapping
                if isinstance(part, Comment):
                    for line in _comment_lines(part, indent + 2):
                        self.emit(line)
        elif isinstance(v, Mapping):
            self.emit(f"{lead}{key}:{trailing}")
            self.mapping(v, indent + 2)
        elif isinstance(v, Sequence) and not _has_items(v):
            self.emit(f"{lead}{key}: []{trailing}")
            self.sequence(v, indent)  # its comments, if any
        elif isinstance(v, Sequence):
            self.emit(f"{lead}{key}:{trailing}")
            self.sequence(v, indent)
        else:
            self.emit(f"{lead}{key}: {scalar(v)}{trailing}")

    def sequence(self, s: Sequence, indent: int) -> None:
        pad = " " * indent
        for part in s.items:
            if isinstance(part, (Blank, Comment)):
                self.aside(part, indent)
                continue
            trailing = f"  # {sanitize(part.comment)}" if part.comment else ""
            v = part.value
            start = len(self.lines) + 1
            if isinstance(v, Mapping) and _has_entries(v) and not v.flow:
                # comments before the first entry go above the "- " line
                entries = list(v.entries)
                while entries and not isinstance(entries[0], Entry):
                    head = entries.pop(0)
                    if isinstance(head, Comment):
                        for line in _comment_lines(head, indent):
                            self.emit(line)
                start = len(self.lines) + 1
                self.mapping(Mapping(entries), indent + 2, first_prefix=f"{pad}- ")
                if trailing:
                    self.lines[start - 1] += trailing
            elif isinstance(v, Mapping):
                self.emit(f"{pad}- {_flow_mapping(v)}{trailing}")
            elif isinstance(v, Sequence):
                self.emit(f"{pad}-{trailing}")
                self.sequence(v, indent + 2)
            else:
                self.emit(f"{pad}- {scalar(v)}{trailing}")
            self.track(part.ref, start)


def _has_entries(m: Mapping) -> bool:
    return any(isinstance(e, Entry) for e in m.entries)


def _has_items(s: Sequence) -> bool:
    return any(isinstance(i, Item) for i in s.items)


def _flow_mapping(m: Mapping) -> str:
    parts = []
    for e in m.entries:
        if not isinstance(e, Entry):
            continue
        if isinstance(e.value, (Mapping, Sequence)):
            raise ValueError("flow mappings hold scalars only")
        parts.append(f"{scalar(e.key, flow=True)}: {scalar(e.value, flow=True)}")
    return "{" + ", ".join(parts) + "}"


def emit(doc: Mapping, header: Comment | None = None) -> Emitted:
    """The YAML text of ``doc`` (a top-level mapping) and the lines of its tracked nodes."""
    w = _Writer()
    if header is not None:
        for line in _comment_lines(header, 0):
            w.emit(line)
        w.emit("")
    w.mapping(doc, 0)
    while w.lines and w.lines[-1] == "":
        w.lines.pop()
    return Emitted("\n".join(w.lines) + "\n", w.spans)
