# SPDX-License-Identifier: MIT
"""Rule text in iptables-save argument syntax -> ``Rule`` (pure, no libxtables).

The administrator writes rules exactly as iptables-save prints them, without the
``-A CHAIN`` prefix::

    -m state --state NEW -m tcp -p tcp --dport 22 -j ACCEPT
    -j REJECT --reject-with icmp-host-prohibited
    ! -s 10.0.0.0/24 -o eth0 -j MASQUERADE

This module only splits the text into words as iptables-restore does (quotes,
backslash escapes) and refuses control characters and vnetd's own tag prefix.
What the words *mean* -- which extension owns ``--dport``, whether
``--to`` abbreviates ``--to-destination``, which options are mandatory -- is
decided by the very code iptables runs: ``vnetd.backends.xtables`` compiles the
words through libxtables during ``check``. A second parser here could only
disagree with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vnetd.model.common import Origin
from vnetd.model.firewall import TAG_PREFIX, Rule, quote

MAX_RULE_LENGTH = 4096
MAX_RULE_WORDS = 256
#: words that need no quotes (model.firewall.quote), blank-separated: such a rule's
#: canonical text is its words joined by single spaces
_PLAIN_WORDS = re.compile(r"[\w\-.:/,=+@%^]+(?: [\w\-.:/,=+@%^]+)*", re.ASCII)

STANDARD_TARGETS = ("ACCEPT", "DROP", "RETURN", "QUEUE")


class RuleSyntaxError(ValueError):
    """The rule text cannot be parsed; the message says what would be valid."""


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    quoted: bool


def tokenize(text: str) -> list[Token]:
    """Split as iptables-restore does (``add_param_to_argv``): words end at blanks;
    ``"`` opens a quoted part in which ``\\`` escapes the next character, and the
    closing ``"`` also ends the word. Outside double quotes a backslash and a
    single quote are ordinary characters, as in iptables-save files."""
    if len(text) > MAX_RULE_LENGTH:
        raise RuleSyntaxError(f"rule is {len(text)} characters long; at most {MAX_RULE_LENGTH}")
    if not text.replace("\t", " ").isprintable():
        raise RuleSyntaxError("rule contains control characters")
    if '"' not in text:  # the common case: plain words
        return [Token(word, False) for word in text.split()]
    tokens: list[Token] = []
    buf: list[str] = []
    quoted = in_quote = escaped = False
    for c in text:
        if in_quote:
            if escaped:
                buf.append(c)
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_quote = False
                tokens.append(Token("".join(buf), True))
                buf, quoted = [], False
            else:
                buf.append(c)
        elif c == '"':
            in_quote = quoted = True
        elif c in " \t\n":
            if buf:
                tokens.append(Token("".join(buf), quoted))
                buf, quoted = [], False
        else:
            buf.append(c)
    if in_quote:
        raise RuleSyntaxError('unbalanced " quote')
    if buf:
        tokens.append(Token("".join(buf), quoted))
    return tokens


def parse_rule(text: str, origin: Origin | None = None) -> Rule:
    """Split one rule into words; raises ``RuleSyntaxError`` for text that cannot be one.
    ``origin``: where the rule was written."""
    if '"' not in text and len(text) <= MAX_RULE_LENGTH and TAG_PREFIX not in text \
            and text.replace("\t", " ").isprintable():
        # the common case (a state file of 10,000 rules is mostly this): plain words,
        # rendered as they are joined when none needs quotes
        words = tuple(text.split())
        if words and len(words) <= MAX_RULE_WORDS:
            joined = " ".join(words)
            if _PLAIN_WORDS.fullmatch(joined):
                return Rule(words, joined, origin)
    tokens = tokenize(text)
    if not tokens:
        raise RuleSyntaxError("empty rule; write at least a target, e.g. '-j ACCEPT'")
    if len(tokens) > MAX_RULE_WORDS:
        raise RuleSyntaxError(f"rule has {len(tokens)} words; at most {MAX_RULE_WORDS}")
    for tok in tokens:
        if tok.text.startswith(TAG_PREFIX):
            raise RuleSyntaxError(f"'{TAG_PREFIX}...' is the prefix of vnetd's own tags (one is added to every "
                                  "rule it writes); choose another comment")
    words = tuple(t.text for t in tokens)
    return Rule(words, render(words), origin)


def render(words: tuple[str, ...] | list[str]) -> str:
    """The canonical text: the words, quoted where iptables-restore needs quotes."""
    return " ".join(quote(w) for w in words)
