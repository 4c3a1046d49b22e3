# SPDX-License-Identifier: MIT
""""Did you mean" for rules iptables refuses: options, targets, matches, protocols, values.

A rule's error is iptables' own message (``unknown option "--dprot"``, ``unknown
reject type "icmp-host-prohibted"``); this module adds what would be valid, taken
from the extensions themselves where they can say it:

* an unknown option: the long options of the extensions the rule loads (``-m``,
  ``-p``'s protocol match, ``-j``'s target, as the C module's ``extension()`` lists
  them) and iptables' own rule options; when none is close, the installed matches
  that own an option of that name (``--dport`` is tcp's, udp's...);
* an unknown target: the standard targets, the target extensions installed
  (``libxt_*``/``libipt_*`` in the system's xtables directory) and the chains the
  table has or the files declare; an unknown match: the match extensions installed;
* a value of an enumerated option (``--reject-with``, ``--icmp-type``, ``--state``,
  ``--ctstate``...): the values the extension's help text lists (the C module
  captures it as ``iptables -j REJECT --help`` prints it), else those of
  ``ENUMERATED`` below.

Everything here runs only for a rule that failed, at most ``HINT_BUDGET`` times per
check, and never raises: a hint that cannot be made is left out.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from collections.abc import Collection, Iterable

from vnetd.desired.rules import STANDARD_TARGETS
from vnetd.desired.suggest import alternatives, close_matches
from vnetd.model.firewall import Rule

#: iptables' own options that belong to a rule (the rest of its command line is refused)
RULE_OPTIONS = ("--source", "--src", "--destination", "--dst", "--protocol", "--in-interface",
                "--out-interface", "--jump", "--goto", "--match", "--fragment", "--set-counters")
#: protocol names ``-p`` takes by name (iptables' own table, and what /etc/protocols has on any host)
PROTOCOLS = ("tcp", "udp", "udplite", "icmp", "icmpv6", "ipv6-icmp", "esp", "ah", "sctp", "mh", "dccp", "gre",
             "ipip", "igmp", "all")

_ADDRTYPES = ("UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE", "UNREACHABLE",
              "PROHIBIT", "THROW", "NAT", "XRESOLVE")
_STATES = ("INVALID", "ESTABLISHED", "NEW", "RELATED", "UNTRACKED")
#: Enumerated option values, for when the extension's help text does not list them (or
#: lists them in a form not recognised): (extension, option) -> values, as in the
#: extensions' sources (iptables 1.8). The help text wins where it has a list.
ENUMERATED: dict[tuple[str, str], tuple[str, ...]] = {
    ("REJECT", "--reject-with"): (
        "icmp-net-unreachable", "net-unreach", "icmp-host-unreachable", "host-unreach",
        "icmp-proto-unreachable", "proto-unreach", "icmp-port-unreachable", "port-unreach",
        "icmp-net-prohibited", "net-prohib", "icmp-host-prohibited", "host-prohib", "tcp-reset", "tcp-rst",
        "icmp-admin-prohibited", "admin-prohib"),
    ("icmp", "--icmp-type"): (
        "any", "echo-reply", "pong", "destination-unreachable", "network-unreachable", "host-unreachable",
        "protocol-unreachable", "port-unreachable", "fragmentation-needed", "source-route-failed",
        "network-unknown", "host-unknown", "network-prohibited", "host-prohibited", "TOS-network-unreachable",
        "TOS-host-unreachable", "communication-prohibited", "host-precedence-violation", "precedence-cutoff",
        "source-quench", "redirect", "network-redirect", "host-redirect", "TOS-network-redirect",
        "TOS-host-redirect", "echo-request", "ping", "router-advertisement", "router-solicitation",
        "time-exceeded", "ttl-exceeded", "ttl-zero-during-transit", "ttl-zero-during-reassembly",
        "parameter-problem", "ip-header-bad", "required-option-missing", "timestamp-request",
        "timestamp-reply", "address-mask-request", "address-mask-reply"),
    ("state", "--state"): _STATES,
    ("conntrack", "--ctstate"): (*_STATES, "SNAT", "DNAT"),
    ("conntrack", "--ctstatus"): ("NONE", "EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED"),
    ("conntrack", "--ctdir"): ("ORIGINAL", "REPLY"),
    ("pkttype", "--pkt-type"): ("unicast", "broadcast", "multicast", "otherhost"),
    ("addrtype", "--src-type"): _ADDRTYPES,
    ("addrtype", "--dst-type"): _ADDRTYPES,
    ("tcp", "--tcp-flags"): ("SYN", "ACK", "FIN", "RST", "URG", "PSH", "ALL", "NONE"),
    ("LOG", "--log-level"): ("emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"),
}
#: the same for ip6tables, where the values differ (ip6tables 1.8: libip6t_REJECT, libip6t_icmp6)
ENUMERATED6: dict[tuple[str, str], tuple[str, ...]] = {
    **{key: values for key, values in ENUMERATED.items() if key[0] not in ("REJECT", "icmp")},
    ("REJECT", "--reject-with"): (
        "icmp6-no-route", "no-route", "icmp6-adm-prohibited", "adm-prohibited", "icmp6-addr-unreachable",
        "addr-unreach", "icmp6-port-unreachable", "port-unreach", "tcp-reset", "icmp6-policy-fail", "policy-fail",
        "icmp6-reject-route", "reject-route"),
    ("icmp6", "--icmpv6-type"): (
        "destination-unreachable", "no-route", "communication-prohibited", "beyond-scope", "address-unreachable",
        "port-unreachable", "failed-policy", "reject-route", "packet-too-big", "time-exceeded", "ttl-exceeded",
        "ttl-zero-during-transit", "ttl-zero-during-reassembly", "parameter-problem", "bad-header",
        "unknown-header-type", "unknown-option", "echo-request", "ping", "echo-reply", "pong",
        "router-solicitation", "router-advertisement", "neighbour-solicitation", "neighbor-solicitation",
        "neighbour-advertisement", "neighbor-advertisement", "redirect"),
}


def enumerated_table(family: int) -> dict[tuple[str, str], tuple[str, ...]]:
    return ENUMERATED6 if family == 6 else ENUMERATED

_UNKNOWN_OPTION = re.compile(r'^unknown option "(--?[^"]+)"')
_LOAD = re.compile(r"^Couldn't load (match|target) `([^']*)'")
_PROTOCOL = re.compile(r'^unknown protocol "([^"]+)" specified')
_QUOTED = re.compile(r"""[`"']([^`"']+)['"]""")


#: hints per check (``reset_budget``): a file of thousands of broken rules is still
#: checked in bounded time (~0.3 ms a hint); the first ones teach what the rest need
HINT_BUDGET = 200
_budget = [HINT_BUDGET]


def reset_budget() -> None:
    _budget[0] = HINT_BUDGET


def _spend() -> bool:
    if _budget[0] <= 0:
        return False
    _budget[0] -= 1
    return True


def hint(message: str, rule: Rule, family: int = 4) -> str:
    """`` (did you mean ...?)`` and what would be valid for a libxtables message, or ""
    (``family``: the rule's, 4 for iptables, 6 for ip6tables)."""
    if not _spend():
        return ""
    try:
        return _hint(message, rule, family)
    except Exception:  # a hint is a courtesy: it never hides the error itself
        return ""


def target_hint(target: str, chains: Iterable[str], family: int = 4) -> str:
    """For a ``-j`` that is neither a target nor a chain: the close ones of both."""
    if not _spend():
        return ""
    try:
        found = close_matches(target, [*STANDARD_TARGETS, *installed("target", family), *chains])
    except Exception:  # a hint is a courtesy: it never hides the error itself
        return ""
    return f" (did you mean {alternatives(found)}?)" if found else ""


def _hint(message: str, rule: Rule, family: int) -> str:
    m = _UNKNOWN_OPTION.match(message)
    if m:
        return _option_hint(m.group(1), rule, family)
    m = _LOAD.match(message)
    if m:
        kind, name = m.groups()
        candidates = [*installed(kind, family), *(STANDARD_TARGETS if kind == "target" else ())]
        found = close_matches(name, candidates)
        return f" (did you mean {alternatives(found)}?)" if found else ""
    m = _PROTOCOL.match(message)
    if m:
        found = close_matches(m.group(1), PROTOCOLS)
        return f" (did you mean {alternatives(found)}?)" if found else ""
    values = _QUOTED.findall(message)
    if values:
        return _value_hint(values[-1], rule, family)
    return ""


# --------------------------------------------------------------------------- options


def _option_hint(option: str, rule: Rule, family: int) -> str:
    """The close options of the extensions the rule loads; else the installed matches
    that have this very option (``--dport`` without ``-p tcp``); else iptables' own."""
    loaded = [o for kind, name in loaded_extensions(rule.words, family) for o in options(kind, name, family)]
    found = close_matches(option, loaded)
    if found:
        return f" (did you mean {alternatives(found)}?)"
    owners = sorted((name for name in installed("match", family) if option in options("match", name, family)),
                    key=lambda name: (PROTOCOLS.index(name) if name in PROTOCOLS else len(PROTOCOLS), name))
    if owners:
        load = f"-p {owners[0]}" if owners[0] in PROTOCOLS else f"-m {owners[0]}"
        many = len(owners) > 1
        return (f" ({option} is an option of the {alternatives(owners[:6])} match{'es' if many else ''}: "
                f"load {'one' if many else 'it'} first, e.g. {load} {option} ...)")
    targets = [name for name in installed("target", family) if option in options("target", name, family)]
    if targets:
        return (f" ({option} is an option of the {alternatives(targets[:6])} "
                f"target{'s' if len(targets) > 1 else ''}, not of this rule's)")
    found = close_matches(option, RULE_OPTIONS)
    return f" (did you mean {alternatives(found)}?)" if found else ""


def loaded_extensions(words: Iterable[str], family: int = 4) -> list[tuple[str, str]]:
    """(kind, name) of the extensions a rule names: -m/--match, -p/--protocol (its
    protocol match, when one is installed), -j/--jump (a target extension)."""
    out: list[tuple[str, str]] = []
    words = list(words)
    for flag, value in itertools.pairwise(words):
        if flag in ("-m", "--match"):
            out.append(("match", value))
        elif flag in ("-p", "--protocol") and _protocol_match(value, family) in installed("match", family):
            out.append(("match", _protocol_match(value, family)))
        elif flag in ("-j", "--jump") and value not in STANDARD_TARGETS:
            out.append(("target", value))
    return out


def _protocol_match(protocol: str, family: int) -> str:
    """The match ``-p PROTOCOL`` loads (ip6tables: ``-p icmpv6`` and ``-p ipv6-icmp`` load icmp6)."""
    name = protocol.lower()
    return "icmp6" if family == 6 and name in ("icmpv6", "ipv6-icmp") else name


@functools.lru_cache(maxsize=512)
def options(kind: str, name: str, family: int = 4) -> tuple[str, ...]:
    """The long options of an extension ("" for none, or when it is not installed)."""
    from vnetd.backends.xtables import libxtables

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,28}", name):
        return ()
    result = libxtables().extension(kind, name, False, family)
    return tuple(result) if isinstance(result, list) else ()


@functools.lru_cache(maxsize=256)
def help_text(kind: str, name: str, family: int = 4) -> str:
    """The extension's help, as ``iptables -m NAME --help`` prints it ("" if not installed)."""
    from vnetd.backends.xtables import libxtables

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,28}", name):
        return ""
    result = libxtables().extension(kind, name, True, family)
    return result if isinstance(result, str) else ""


@functools.lru_cache(maxsize=4)
def installed(kind: str, family: int = 4) -> tuple[str, ...]:
    """The extensions installed for a family (libxt_NAME.so, and libipt_NAME.so for IPv4,
    libip6t_NAME.so for IPv6): targets are named in capitals (LOG, REJECT), matches in
    small letters (tcp, conntrack)."""
    from vnetd.backends.xtables import _trusted_xtables_dir

    try:
        files = os.listdir(_trusted_xtables_dir())
    except (OSError, ValueError):
        return ()
    names = set()
    for f in files:
        m = re.fullmatch(rf"lib(?:xt|{'ip6t' if family == 6 else 'ipt'})_([A-Za-z0-9_-]+)\.so", f)
        if m is None or m.group(1) == "standard":
            continue
        name = m.group(1)
        if (name.upper() == name) == (kind == "target"):
            names.add(name)
    return tuple(sorted(names))


# --------------------------------------------------------------------------- values


def _value_hint(value: str, rule: Rule, family: int) -> str:
    found = option_of_value(value, rule.words)
    if found is None:
        return ""
    option, _word = found
    owner = _owner(option, rule.words, family)
    if owner is None:
        return ""
    kind, ext, full = owner
    values = enumerated(kind, ext, full, family)
    if not values:
        return ""
    bad = value.lstrip("!")
    close = close_matches(bad, values)
    said = f"did you mean {alternatives(close)}? " if close else ""
    return f" ({said}{full} takes: {', '.join(values)})"


def option_of_value(value: str, words: Iterable[str]) -> tuple[str, str] | None:
    """The option whose argument holds ``value`` (as the word, one of its comma-separated
    items, or before a '/'), and that word."""
    words = list(words)
    for i, word in enumerate(words):
        parts = {p for item in word.split(",") for p in (item, item.split("/")[0])}
        if value in parts and not word.startswith("-"):
            for j in range(i - 1, -1, -1):
                if words[j].startswith("-") and words[j] != "-":
                    return words[j], word
            return None
    return None


def _owner(option: str, words: Iterable[str], family: int = 4) -> tuple[str, str, str] | None:
    """(kind, extension, full option name) of the loaded extension that owns ``option``
    (as written, or as the unique abbreviation getopt accepted)."""
    words = list(words)
    for kind, name in loaded_extensions(words, family):
        opts = options(kind, name, family)
        if option in opts:
            return kind, name, option
        matching = [o for o in opts if o.startswith(option)]
        if len(matching) == 1:
            return kind, name, matching[0]
    return None


@functools.lru_cache(maxsize=256)
def enumerated(kind: str, ext: str, option: str, family: int = 4) -> tuple[str, ...]:
    """The values an enumerated option takes: from the extension's help text, else ENUMERATED."""
    from_help = values_from_help(help_text(kind, ext, family), option)
    return from_help or enumerated_table(family).get((ext, option), ())


def values_from_help(text: str, option: str) -> tuple[str, ...]:
    """Values a help text lists for ``option``: ``--ctstate {INVALID|NEW|...}`` on the
    option's line, else a "Valid ...:" block when the option is one ENUMERATED names
    (REJECT's reject types, icmp's ICMP types, pkttype's packet types)."""
    for line in text.splitlines():
        m = re.search(re.escape(option) + r"\s+[{\[]([A-Za-z0-9_|-]+)[}\]]", line)
        if m and "|" in m.group(1):
            return tuple(m.group(1).split("|"))
    if not any(opt == option for (_ext, opt) in (*ENUMERATED, *ENUMERATED6)):
        return ()
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"\s*Valid .*:\s*\Z", line)), None)
    if start is None:
        return ()
    values: list[str] = []
    for line in lines[start + 1 :]:
        if not line.strip() or line.lstrip().startswith("("):
            break
        first, _, rest = line.strip().partition(" ")
        values.append(first.split("\t")[0])
        alias = re.match(r"\s*\(([A-Za-z0-9-]+)\)", rest)
        if alias:
            values.append(alias.group(1))
    return tuple(v for v in values if re.fullmatch(r"[A-Za-z0-9_-]+", v))


def chains_hint(name: str, chains: Collection[str]) -> str:
    """For ``-g NAME`` that is no chain: the close chain names."""
    if not _spend():
        return ""
    found = close_matches(name, chains)
    return f" (did you mean {alternatives(found)}?)" if found else ""
