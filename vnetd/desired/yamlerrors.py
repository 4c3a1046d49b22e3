# SPDX-License-Identifier: MIT
"""YAML syntax errors said where the problem starts, with the usual cause.

libyaml reports where it gave up, which is often lines after the mistake (an
unclosed quote is noticed at the end of the file) and names the construct it was
parsing. This module looks at the text around both marks and says at which line
and column the problem starts, and what usually causes it in a state file: a rule
with ``"`` inside written in double quotes, ``: `` inside an unquoted value, a tab,
a key indented out of line, a key without the space after its colon.
"""

from __future__ import annotations

import re

import yaml

_QUOTE_START = re.compile(r"""(?:^\s*-\s+|:\s+|[\[{,]\s*)(["'])""")
_NO_SPACE_AFTER_COLON = re.compile(r"^\s*(?:-\s+)?[A-Za-z0-9_.-]+:(?=[^\s:])")
#: a list item whose text before a ': ' is no plain key (a rule: "- -j LOG --log-prefix ")
_ITEM_WITH_COLON = re.compile(r"^(\s*-\s+)(?:-|[^\s:]*\s)[^#]*:\s+\Z")
_BLOCK_VALUE = re.compile(r"^\s*(?:-\s+|[A-Za-z0-9_.-]+:\s+)\Z")

HINT_TAB = "YAML does not allow tabs for indentation: indent with spaces"
HINT_QUOTED_RULE = ("a value that starts with {q} ends at the next {q}: write a rule that contains {q} in "
                    "{other} quotes, e.g. {example}")
HINT_COLON_IN_VALUE = "': ' inside an unquoted value starts a mapping: quote the whole value, e.g. {example}"
HINT_UNCLOSED_QUOTE = "a quote is not closed; a rule with \" inside is written in single quotes"
HINT_FLOW = "a '[' or '{' is not closed, or a ',' is missing between its items"
HINT_INDENT = ("check the indentation: the keys of one mapping start in the same column, and the items "
               "of a list ('- ') line up under their key")
HINT_MORE_INDENTED = ("this line is indented more than the line above, which opens no mapping or list: "
                      "line up the keys of one mapping")
HINT_NO_SPACE = "a key needs a space after its ':': write 'name: eth1', not 'name:eth1'"
HINT_NOT_KEY_OR_ITEM = "this line is neither 'key: value' nor a list item ('- ...')"
HINT_ALIAS = "'*' starts an alias in YAML: quote a value that begins with it"
HINT_SECOND_DOCUMENT = "'---' starts a second YAML document; a state file is one document"


def syntax_error(text: str, exc: yaml.MarkedYAMLError) -> tuple[int, str]:
    """The line libyaml stopped at (0: unknown) and the message: what libyaml says,
    where the problem starts (line and column) and, when recognised, its usual cause."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 0
    what = " ".join(p for p in (exc.context, exc.problem) if p)
    start, hint = diagnose(text.splitlines(), exc)
    at = f" at line {start[0] + 1}, column {start[1] + 1}" if start is not None else ""
    return line, f"YAML syntax error{at}: {what}" + (f" ({hint})" if hint else "")


def diagnose(lines: list[str], exc: yaml.MarkedYAMLError) -> tuple[tuple[int, int] | None, str]:
    """(line, column) where the problem starts (0-based), and the usual cause ("" if unknown)."""
    pm, cm = exc.problem_mark, exc.context_mark
    problem, context = exc.problem or "", exc.context or ""
    if pm is None:
        return ((cm.line, cm.column) if cm is not None else None), ""
    here = (pm.line, pm.column)
    pline = lines[pm.line] if pm.line < len(lines) else ""

    tab = _tab_in_indentation(lines, pm.line)
    if "tab" in problem or (tab is not None and "cannot start any token" in problem):
        return (tab if tab is not None else here), HINT_TAB
    if "cannot start any token" in problem:
        c = pline[pm.column : pm.column + 1]
        return here, (f"a value cannot start with {c}: quote it" if c in ("@", "`") else
                      "a character that cannot start a value: quote the value")
    if "undefined alias" in problem:
        return here, HINT_ALIAS
    if "another document" in problem:
        return here, HINT_SECOND_DOCUMENT

    first = cm.line if cm is not None and cm.line <= pm.line else pm.line
    if "quoted scalar" in context and cm is not None:
        colon = _ITEM_WITH_COLON.match(lines[cm.line][: cm.column]) if cm.line < len(lines) else None
        if colon:  # - -j LOG --log-prefix "fw: ": YAML read '-j LOG --log-prefix "fw' as a key
            start = len(colon.group(1))
            return (cm.line, start), HINT_COLON_IN_VALUE.format(example=_requoted(lines[cm.line], start))
        return (cm.line, cm.column), HINT_UNCLOSED_QUOTE
    quoted = _quote_then_text(lines, pm.line, first)
    if quoted is not None:
        (qline, qcol), quote = quoted
        other, example = (("single", "- '-m comment --comment \"ssh\" -j ACCEPT'") if quote == '"'
                          else ("double", "- \"-m comment --comment 'ssh' -j ACCEPT\""))
        if _BLOCK_VALUE.match(lines[qline][:qcol]):
            example = _requoted(lines[qline], qcol)
        return (qline, qcol), HINT_QUOTED_RULE.format(q=quote, other=other, example=example)
    if context.startswith("while parsing a flow") and cm is not None:
        return (cm.line, cm.column), HINT_FLOW
    if "mapping values are not allowed" in problem:
        for n in range(pm.line, max(pm.line - 3, -1), -1):
            m = _NO_SPACE_AFTER_COLON.match(lines[n]) if n < len(lines) else None
            if m:
                return (n, m.end()), HINT_NO_SPACE
        above = _previous_line(lines, pm.line)
        if above is not None and _indent(pline) > _content_column(lines[above]) and \
                not lines[above].rstrip().endswith(":"):
            return (pm.line, _indent(pline)), HINT_MORE_INDENTED
        value = re.search(r"^\s*(?:-\s+)?(?:[A-Za-z0-9_.-]+:\s+)?(?=\S)", pline)
        start = value.end() if value is not None and value.end() <= pm.column else pm.column
        return (pm.line, start), HINT_COLON_IN_VALUE.format(example=_requoted(pline, start))
    if "could not find expected ':'" in problem and cm is not None:
        return (cm.line, _indent(lines[cm.line]) if cm.line < len(lines) else cm.column), HINT_NOT_KEY_OR_ITEM
    if "did not find expected" in problem or "expected <block end>" in problem:
        return (pm.line, _indent(pline)), HINT_INDENT
    return here, ""


def _requoted(line: str, start: int) -> str:
    """The line with its value (from ``start``) quoted as one YAML string: what was meant."""
    value = line[start:].rstrip()
    if len(value) > 1 and value[0] in "\"'" and value[-1] == value[0]:
        value = value[1:-1]  # "-m comment --comment "ssh" -j ACCEPT": the outer quotes were meant for YAML
    if "'" in value and '"' not in value:
        quoted = f'"{value}"'
    else:
        quoted = "'" + value.replace("'", "''") + "'"
    return line[:start].lstrip() + quoted


def _tab_in_indentation(lines: list[str], n: int) -> tuple[int, int] | None:
    if n >= len(lines):
        return None
    line = lines[n]
    indent = line[: len(line) - len(line.lstrip(" \t"))]
    col = indent.find("\t")
    return (n, col) if col != -1 else None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _content_column(line: str) -> int:
    """Where a line's content starts: after the indentation and a list item's '- '."""
    m = re.match(r"\s*(?:-\s+)*", line)
    return m.end() if m else 0


def _previous_line(lines: list[str], n: int) -> int | None:
    for i in range(n - 1, -1, -1):
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            return i
    return None


def _quote_then_text(lines: list[str], last: int, first: int) -> tuple[tuple[int, int], str] | None:
    """A quoted value followed by more text on its line (``- "-m comment --comment "ssh" -j
    ACCEPT"``), searched from the problem's line back to the construct's first line."""
    for n in range(min(last, len(lines) - 1), first - 1, -1):
        line = lines[n]
        for m in _QUOTE_START.finditer(line):
            quote, start = m.group(1), m.start(1)
            end = _closing_quote(line, start, quote)
            if end is None:
                continue
            rest = line[end + 1 :].lstrip()
            if rest and rest[0] not in ",]}#:":
                return (n, start), quote
    return None


def _closing_quote(line: str, start: int, quote: str) -> int | None:
    i = start + 1
    while i < len(line):
        c = line[i]
        if quote == '"' and c == "\\":
            i += 2
            continue
        if c == quote:
            if quote == "'" and line[i + 1 : i + 2] == "'":
                i += 2
                continue
            return i
        i += 1
    return None
