# SPDX-License-Identifier: MIT
"""Rule text in iptables-save argument syntax -> ``Rule`` (pure, no libxtables).

The administrator writes rules exactly as iptables-save prints them, without the
``-A CHAIN`` prefix::

    -m state --state NEW -m tcp -p tcp --dport 22 -j ACCEPT
    -j REJECT --reject-with icmp-host-prohibited
    ! -s 10.0.0.0/24 -o eth0 -j MASQUERADE

This module tokenizes (quotes as iptables-restore does), splits header options
(-s -d -i -o -p -f) from match (``-m``) and target (``-j``/``-g``) options, and
builds the canonical text (header first, in iptables-save order). Whether a match
or target accepts an option is libxtables' business: ``vnetd.backends.xtables``
compiles every rule through python-iptables during ``check``.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from vnetd.desired import validate
from vnetd.model.firewall import (
    HeaderField,
    Rule,
    RuleHeader,
    RuleModule,
    RuleOption,
    RuleTarget,
    quote,
)

MAX_RULE_LENGTH = 4096

PROTOCOL_NUMBERS = {
    "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51,
    "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132, "udplite": 136, "all": 0,
}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOL_NUMBERS.items() if k not in ("ipv6-icmp",)}
#: Protocols whose match iptables loads implicitly when an option follows ``-p``.
IMPLICIT_MATCHES = ("tcp", "udp", "icmp", "sctp", "udplite", "icmpv6")

STANDARD_TARGETS = ("ACCEPT", "DROP", "RETURN", "QUEUE")

_HEADER = {
    "-s": "source", "--source": "source", "--src": "source",
    "-d": "destination", "--destination": "destination", "--dst": "destination",
    "-i": "in_interface", "--in-interface": "in_interface",
    "-o": "out_interface", "--out-interface": "out_interface",
    "-p": "protocol", "--protocol": "protocol",
}
_FRAGMENT = ("-f", "--fragment")
_MATCH = ("-m", "--match")
_JUMP = ("-j", "--jump")
_GOTO = ("-g", "--goto")
_FORBIDDEN = {
    "-A": "the chain is the key the rule is written under; drop '-A CHAIN'",
    "--append": "the chain is the key the rule is written under; drop '--append CHAIN'",
    "-I": "rules are kept in the declared order; drop '-I CHAIN'",
    "--insert": "rules are kept in the declared order; drop '--insert CHAIN'",
    "-D": "to remove a rule, delete it from the file",
    "--delete": "to remove a rule, delete it from the file",
    "-R": "write the rule as it should be", "--replace": "write the rule as it should be",
    "-t": "the table is the key the chain is written under",
    "--table": "the table is the key the chain is written under",
    "-N": "declare user chains as keys under the table", "--new-chain": "declare chains as keys",
    "-X": "remove the chain from the file", "--delete-chain": "remove the chain from the file",
    "-P": "use 'policy:' on the chain", "--policy": "use 'policy:' on the chain",
    "-F": "use 'mode: exclusive' to own a chain", "--flush": "use 'mode: exclusive'",
    "-Z": "counters are not managed", "--zero": "counters are not managed",
    "-c": "counters are not managed", "--set-counters": "counters are not managed",
    "-4": "vnetd manages IPv4 tables only", "--ipv4": "vnetd manages IPv4 tables only",
    "-6": "vnetd manages IPv4 tables only", "--ipv6": "vnetd manages IPv4 tables only",
    "-w": "vnetd takes the xtables lock itself", "--wait": "vnetd takes the xtables lock itself",
}


class RuleSyntaxError(ValueError):
    """The rule text cannot be parsed; the message says what would be valid."""


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    quoted: bool


def tokenize(text: str) -> list[Token]:
    """Split like iptables-restore: whitespace, "double" or 'single' quotes, \\-escapes."""
    if len(text) > MAX_RULE_LENGTH:
        raise RuleSyntaxError(f"rule is {len(text)} characters long; at most {MAX_RULE_LENGTH}")
    if not text.replace("\t", " ").isprintable():
        raise RuleSyntaxError("rule contains control characters")
    if '"' not in text and "'" not in text and "\\" not in text:  # the common case: plain words
        return [Token(word, False) for word in text.split()]
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        buf: list[str] = []
        quoted = False
        while i < n and not text[i].isspace():
            c = text[i]
            if c in "\"'":
                quote_char = c
                quoted = True
                i += 1
                while True:
                    if i >= n:
                        raise RuleSyntaxError(f"unbalanced {quote_char} quote")
                    c = text[i]
                    if c == "\\" and i + 1 < n and text[i + 1] in (quote_char, "\\"):
                        buf.append(text[i + 1])
                        i += 2
                        continue
                    if c == quote_char:
                        i += 1
                        break
                    buf.append(c)
                    i += 1
            elif c == "\\" and i + 1 < n:
                buf.append(text[i + 1])
                i += 2
            else:
                buf.append(c)
                i += 1
        tokens.append(Token("".join(buf), quoted))
    return tokens


def _is_option(tok: Token) -> bool:
    return not tok.quoted and tok.text.startswith("-") and len(tok.text) > 1 and not _is_number(tok.text)


def _is_number(text: str) -> bool:
    """An integer as int() reads one ("-1", "+2"); cheap for the option tokens it is asked about."""
    if not text.strip().lstrip("+-")[:1].isdigit():
        return False
    try:
        int(text)
    except ValueError:
        return False
    return True


def parse_rule(text: str) -> Rule:
    """Parse one rule; raises ``RuleSyntaxError`` with a message that says what is valid."""
    tokens = tokenize(text)
    if not tokens:
        raise RuleSyntaxError("empty rule; write at least a target, e.g. '-j ACCEPT'")
    header: dict[str, HeaderField] = {}
    fragment: bool | None = None
    modules: list[tuple[str, list[RuleOption]]] = []
    target: tuple[str, bool, list[RuleOption]] | None = None
    current: list[RuleOption] | None = None  # options of the last -m / -j
    explicit = {tokens[i + 1].text for i, t in enumerate(tokens[:-1]) if t.text in _MATCH and not t.quoted}
    negate = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        word = tok.text
        if word == "!" and not tok.quoted:
            if negate:
                raise RuleSyntaxError("'! !' is not valid: write one '!' before the option it negates")
            negate = True
            i += 1
            continue
        if word in _FORBIDDEN and not tok.quoted:  # before the option test: -4 and -6 look like numbers
            raise RuleSyntaxError(f"{word} is not allowed in a rule: {_FORBIDDEN[word]}")
        if not _is_option(tok):
            if negate:
                raise RuleSyntaxError(f"'! {word}': put '!' before the option, e.g. '! --dport 22'")
            raise RuleSyntaxError(f"unexpected {word!r}: expected an option such as -s, -p, -m or -j")
        if word in _HEADER:
            field = _HEADER[word]
            value = _value(tokens, i, word)
            if field in header:
                raise RuleSyntaxError(f"{word} is given twice")
            canonical = _canonical_header(field, value, negate)
            if not (canonical == "0.0.0.0/0" and not negate):  # any address: iptables-save leaves it out
                header[field] = HeaderField(canonical, negate)
            negate = False
            i += 2
            continue
        if word in _FRAGMENT:
            if fragment is not None:
                raise RuleSyntaxError(f"{word} is given twice")
            fragment = not negate
            negate = False
            i += 1
            continue
        if word in _MATCH:
            if negate:
                raise RuleSyntaxError(f"'! {word}' is not valid; negate the match's options instead")
            name = _value(tokens, i, word)
            if not name.replace("_", "").replace("-", "").isalnum() or len(name) > 28:
                raise RuleSyntaxError(f"{name!r} is not a match name")
            current = []
            modules.append((name, current))
            i += 2
            continue
        if word in _JUMP or word in _GOTO:
            if negate:
                raise RuleSyntaxError(f"'! {word}' is not valid")
            if target is not None:
                raise RuleSyntaxError("only one -j/-g target per rule")
            name = _value(tokens, i, word)
            goto = word in _GOTO
            if goto and (name in STANDARD_TARGETS or problem_chain(name)):
                raise RuleSyntaxError(f"-g needs a user chain, not {name!r}")
            if not name.replace("_", "").replace("-", "").replace(".", "").replace("+", "").isalnum() \
                    or len(name) > 28:
                raise RuleSyntaxError(f"{name!r} is not a target or chain name")
            current = []
            target = (name, goto, current)
            i += 2
            continue
        if word.startswith("--"):
            if word == "--" or "=" in word:  # getopt would take these; iptables-save never writes them
                raise RuleSyntaxError(f"{word!r} is not an option; write '--name value', e.g. '--dport 22'")
            if current is None:
                current = _implicit_match(header, explicit, modules, word)
            values: list[str] = []
            j = i + 1
            while j < len(tokens) and not _is_option(tokens[j]) \
                    and not (tokens[j].text == "!" and not tokens[j].quoted):
                values.append(tokens[j].text)
                j += 1
            if j < len(tokens) and tokens[j].text == "!" and not tokens[j].quoted and not values \
                    and j + 1 < len(tokens) and not _is_option(tokens[j + 1]):
                raise RuleSyntaxError(f"'{word} ! value' is not valid; write '! {word} value'")
            current.append(RuleOption(word[2:], tuple(values), negate))
            negate = False
            i = j
            continue
        raise RuleSyntaxError(f"unknown option {word!r}; header options are -s -d -i -o -p -f, "
                              "matches start with -m NAME, targets with -j NAME")
    if negate:
        raise RuleSyntaxError("'!' at the end of the rule negates nothing")
    rule_header = RuleHeader(
        source=header.get("source"), destination=header.get("destination"),
        in_interface=header.get("in_interface"), out_interface=header.get("out_interface"),
        protocol=header.get("protocol"), fragment=fragment,
    )
    if rule_header.protocol is not None and rule_header.protocol.value == "all":
        if rule_header.protocol.inverted:
            raise RuleSyntaxError("'! -p all' matches nothing")
        rule_header = RuleHeader(rule_header.source, rule_header.destination, rule_header.in_interface,
                                 rule_header.out_interface, None, rule_header.fragment)
    matches = tuple(RuleModule(name, tuple(opts)) for name, opts in modules)
    if target is None:
        rule_target = RuleTarget(None)
    else:
        rule_target = RuleTarget(target[0], target[1], tuple(target[2]))
    _check_protocol_matches(rule_header, matches)
    return Rule(rule_header, matches, rule_target, render(rule_header, matches, rule_target))


def problem_chain(name: str) -> str | None:
    return validate.chain_name(name)


def _value(tokens: list[Token], i: int, word: str) -> str:
    if i + 1 >= len(tokens) or _is_option(tokens[i + 1]):
        raise RuleSyntaxError(f"{word} needs an argument")
    if tokens[i + 1].text == "!" and not tokens[i + 1].quoted:
        raise RuleSyntaxError(f"'{word} ! value' is not valid; write '! {word} value'")
    return tokens[i + 1].text


def _implicit_match(
    header: dict[str, HeaderField], explicit: set[str], modules: list[tuple[str, list[RuleOption]]], word: str
) -> list[RuleOption]:
    proto = header.get("protocol")
    if proto is not None and proto.value in IMPLICIT_MATCHES and proto.value not in explicit:
        options: list[RuleOption] = []
        modules.append((proto.value, options))
        explicit.add(proto.value)
        return options
    raise RuleSyntaxError(f"{word} belongs to no match: write '-m NAME' before it "
                          "(e.g. '-p tcp -m tcp --dport 22')")


def _check_protocol_matches(header: RuleHeader, matches: tuple[RuleModule, ...]) -> None:
    for m in matches:
        if m.name in ("tcp", "udp", "icmp", "sctp", "udplite"):
            proto = header.protocol
            if proto is None or proto.value != m.name or proto.inverted:
                raise RuleSyntaxError(f"-m {m.name} needs '-p {m.name}' (the kernel refuses it otherwise)")


@functools.lru_cache(maxsize=65536)
def _canonical_address(value: str) -> str:
    """10.0.0.5/24 -> 10.0.0.0/24, 192.0.2.1 -> 192.0.2.1/32, as iptables-save prints them."""
    if "," in value:
        raise RuleSyntaxError(f"{value!r}: one address per rule (write one rule per address)")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise RuleSyntaxError(
            f"{value!r} is not an IPv4 address or network (hostnames are not resolved; "
            "write e.g. 10.0.0.0/24)") from None
    if net.version != 4:
        raise RuleSyntaxError(f"{value!r} is IPv6; vnetd manages the IPv4 tables (iptables) only")
    return f"{net.network_address}/{net.prefixlen}"


@functools.lru_cache(maxsize=4096)
def _canonical_interface(value: str) -> str:
    name = value[:-1] if value.endswith("+") else value
    if name == "" and value == "+":
        return value
    problem = validate.interface_name(name)
    if problem:
        raise RuleSyntaxError(problem)
    return value


def _canonical_header(field: str, value: str, negate: bool) -> str:
    if field in ("source", "destination"):
        return _canonical_address(value)
    if field in ("in_interface", "out_interface"):
        return _canonical_interface(value)
    # protocol
    lowered = value.lower()
    if lowered in PROTOCOL_NUMBERS:
        return "icmpv6" if lowered == "ipv6-icmp" else lowered
    if _is_number(value):
        number = int(value)
        if not 0 <= number <= 255:
            raise RuleSyntaxError(f"protocol number {number} is out of range 0-255")
        return PROTOCOL_NAMES.get(number, str(number))
    raise RuleSyntaxError(f"unknown protocol {value!r}; use a name ({', '.join(sorted(PROTOCOL_NUMBERS))}) "
                          "or a number 0-255")


def render(header: RuleHeader, matches: tuple[RuleModule, ...], target: RuleTarget) -> str:
    """The canonical text: header in iptables-save order, then matches, then the target."""
    parts: list[str] = []
    for flag, item in (("-s", header.source), ("-d", header.destination), ("-i", header.in_interface),
                       ("-o", header.out_interface), ("-p", header.protocol)):
        if item is not None:
            parts.append(f"{'! ' if item.inverted else ''}{flag} {quote(item.value)}")
    if header.fragment is not None:
        parts.append("-f" if header.fragment else "! -f")
    for m in matches:
        parts.append(f"-m {m.name}")
        parts.extend(o.render() for o in m.options)
    if target.name is not None:
        parts.append(f"{'-g' if target.goto else '-j'} {target.name}")
        parts.extend(o.render() for o in target.options)
    return " ".join(parts)
