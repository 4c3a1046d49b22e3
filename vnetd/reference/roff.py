# SPDX-License-Identifier: MIT
"""Just enough roff for man(7) pages: escaping, and the handful of macros vnetd's
pages use (TH, SH, SS, TP, PP, RS/RE, nf/fi). A dependency for this (a Markdown to
man converter) would bring a second source format and its own quirks."""

from __future__ import annotations


def escape(text: str) -> str:
    """Text safe on a roff line: backslashes, dashes (options must stay ASCII '-' when
    copied from a terminal) and a leading '.' or "'" (which would start a request)."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    if out.startswith((".", "'")):
        out = "\\&" + out
    return out


def bold(text: str) -> str:
    return f"\\fB{escape(text)}\\fR"


def italic(text: str) -> str:
    return f"\\fI{escape(text)}\\fR"


def quoted_arg(text: str) -> str:
    """A macro argument (spaces kept together)."""
    return '"' + escape(text).replace('"', '\\(dq') + '"'


class Page:
    """A man page built line by line."""

    def __init__(self, name: str, section: int, source: str, manual: str) -> None:
        self.lines = [f".TH {quoted_arg(name.upper())} {section} \"\" {quoted_arg(source)} {quoted_arg(manual)}"]

    def section(self, title: str) -> None:
        self.lines.append(f".SH {quoted_arg(title.upper())}")

    def subsection(self, title: str) -> None:
        self.lines.append(f".SS {quoted_arg(title)}")

    def paragraph(self, text: str) -> None:
        """Text roff fills itself: one input line per sentence-ish chunk, blank lines start paragraphs."""
        for i, part in enumerate(p for p in text.split("\n\n") if p.strip()):
            if i or (self.lines and not self.lines[-1].startswith((".SH", ".SS", ".TP", ".RS"))):
                self.lines.append(".PP")
            self.lines.append(escape(" ".join(part.split())))

    def raw(self, line: str) -> None:
        """A line already in roff."""
        self.lines.append(line)

    def item(self, term: str, text: str) -> None:
        """A tagged paragraph: ``term`` (already roff) and its description."""
        self.lines += [".TP", term, escape(" ".join(text.split()))]

    def example(self, lines: list[str]) -> None:
        """Lines shown as they are (no filling), indented."""
        self.lines += [".RS 4", ".nf"] + [escape(line) if line else "" for line in lines] + [".fi", ".RE"]

    def render(self) -> str:
        return "\n".join(self.lines) + "\n"
