# SPDX-License-Identifier: MIT
"""The reference for issue 10: what ``iptables-legacy`` itself makes of a rule (and,
for ``firewall6:``, what ``ip6tables-legacy`` makes of it: every class and function
here takes the family, 4 or 6, and runs that family's commands, ``Tools``).

For a (table, chain, rule) the oracle runs ``iptables-legacy -w -t TABLE -A CHAIN
ARGS`` inside a test namespace, the words split exactly as ``iptables-restore``
splits a line (``restore_split``), and answers whether iptables accepted it, its
error text, and the rule's line(s) from ``iptables-legacy-save -t TABLE`` with the
``-A CHAIN`` prefix removed (iptables-save prints no counters without ``-c``).
Then the table is put back as it was (``iptables-legacy-restore`` of the table
saved after the fixtures), so every rule is judged alone, in the same table.

Fixtures a rule may need are made once per namespace (``prepare_namespace``):
ipsets for ``-m set``/``-j SET``, nfacct objects for ``-m nfacct``, rate
estimators for ``-m rateest`` (RATEEST rules in a chain nothing jumps to). A user
chain a rule jumps to (``-j NAME``/``-g NAME`` that is no target extension) is
created first, except names starting with ``nosuch``: those test a jump to a
chain that does not exist.

One namespace serves the whole corpus; a rule costs three short iptables runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Tools:
    """One family's commands, extension libraries and state file section."""

    family: int
    command: str  # iptables-legacy / ip6tables-legacy
    save: str
    restore: str
    prefixes: tuple[str, ...]  # the extension libraries this family loads: libxt_NAME.so, libipt_/libip6t_NAME.so
    section: str  # firewall / firewall6


TOOLS = {
    4: Tools(4, "iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore", ("libxt_", "libipt_"),
             "firewall"),
    6: Tools(6, "ip6tables-legacy", "ip6tables-legacy-save", "ip6tables-legacy-restore", ("libxt_", "libip6t_"),
             "firewall6"),
}

TABLES = ("filter", "nat", "mangle", "raw")
BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
}
STANDARD_TARGETS = ("ACCEPT", "DROP", "RETURN", "QUEUE")
XTABLES_DIR = next((Path(d) for d in ("/usr/lib/x86_64-linux-gnu/xtables", "/usr/lib/xtables",
                                      "/usr/lib64/xtables", "/lib/xtables")
                    if Path(d, "libxt_comment.so").exists()), Path("/usr/lib/x86_64-linux-gnu/xtables"))
#: A jump to a chain whose name starts with this is left dangling on purpose.
MISSING_CHAIN_PREFIX = "nosuch"

#: Sets, accounting objects and estimators the corpus refers to (made by prepare_namespace).
IPSETS = {"blocklist": "hash:ip", "trusted-nets": "hash:net", "svc": "hash:ip,port",
          "f2b-sshd": "hash:ip", "docker-ips": "hash:ip"}
IPSET_SKBINFO = "skbmap"  # hash:ip with skbinfo, for -j SET --map-set
NFACCT_OBJECTS = ("http-in", "ssh-in", "acct1")
RATE_ESTIMATORS = ("est1", "est2", "eth0")
FIXTURE_CHAIN = "xt-fixtures"


def restore_split(line: str) -> list[str]:
    """Split a rule as iptables-restore's ``add_param_to_argv`` (1.8.9) does.

    Only double quotes group words; inside them a backslash escapes the next
    character. A single quote is an ordinary character (``'two words'`` is two
    words, ``'two`` and ``words'``), unlike a shell or ``shlex.split``. A closing
    quote ends the word, even an empty one.
    """
    words: list[str] = []
    buf: list[str] = []
    quote_open = escaped = False
    for ch in line:
        if quote_open:
            if escaped:
                buf.append(ch)
                escaped = False
                continue
            if ch == "\\":
                escaped = True
                continue
            if ch != '"':
                buf.append(ch)
                continue
            quote_open = False  # the closing quote ends the word (below)
        elif ch == '"':
            quote_open = True
            continue
        if ch in " \t\n" and not buf:
            continue
        if ch not in ' \t\n"':
            buf.append(ch)
            continue
        words.append("".join(buf))
        buf = []
    if buf:
        words.append("".join(buf))
    return words


def target_extensions(family: int = 4) -> set[str]:
    """Names ``-j`` loads as an extension on this machine (libxt_NAME.so / libipt_NAME.so,
    libip6t_NAME.so for family 6)."""
    names = set()
    for path in XTABLES_DIR.glob("lib*.so"):
        stem = path.name[:-3]
        for prefix in TOOLS[family].prefixes:
            if stem.startswith(prefix) and stem[len(prefix):].isupper():
                names.add(stem[len(prefix):])
    return names - {"NAT"}  # libxt_NAT.so registers SNAT/DNAT/MASQUERADE/REDIRECT (symlinked)


_TARGETS = {family: frozenset(target_extensions(family)) for family in TOOLS}


def jump_chains(words: Sequence[str], family: int = 4) -> list[str]:
    """User chains a rule jumps to (-j/-g NAME that is neither standard nor an extension)."""
    out = []
    for i, word in enumerate(words[:-1]):
        if word in ("-j", "--jump", "-g", "--goto"):
            name = words[i + 1]
            if name in STANDARD_TARGETS or name in _TARGETS[family] or \
                    name.lower().startswith(MISSING_CHAIN_PREFIX):
                continue
            if name and not name.startswith("-"):
                out.append(name)
    return out


def save_lines(save_output: str, chain: str) -> tuple[str, ...]:
    """The rules of ``chain`` in iptables-save output, without ``-A CHAIN ``."""
    prefix = f"-A {chain} "
    return tuple(line[len(prefix):] for line in save_output.splitlines() if line.startswith(prefix))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What iptables made of one rule."""

    accepted: bool
    error: str  # iptables' message when refused ("" when accepted)
    lines: tuple[str, ...]  # the rule as iptables-save prints it (several for -s a,b), no "-A CHAIN"


class Namespace:
    """Runs commands inside a named network namespace (``nsenter --net``), or here when
    the calling process already is in it (``name`` None)."""

    def __init__(self, name: str | None) -> None:
        self.name = name
        self._prefix = ["nsenter", f"--net=/run/netns/{name}"] if name else []

    def run(self, *cmd: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self._prefix, *cmd], text=True, capture_output=True, input=input, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def save(self, table: str, family: int = 4) -> str:
        return self.run(TOOLS[family].save, "-t", table, check=True).stdout


class TableKeeper:
    """Remembers the tables (of one family) after the fixtures and puts one back after each rule."""

    def __init__(self, ns: Namespace, family: int = 4) -> None:
        self.ns = ns
        self.family = family
        self.pristine = {table: _without_comments(ns.save(table, family)) for table in TABLES}

    def reset(self, table: str) -> None:
        self.ns.run(TOOLS[self.family].restore, "-w", input=self.pristine[table], check=True)

    def unchanged(self) -> list[str]:
        """Tables that differ from the pristine state (should be none between rules)."""
        return [t for t in TABLES if _without_comments(self.ns.save(t, self.family)) != self.pristine[t]]


def _without_comments(save: str) -> str:
    return "".join(line + "\n" for line in save.splitlines() if not line.startswith("#"))


class IptablesOracle:
    """iptables-legacy's (ip6tables-legacy's for family 6) verdict on rules, one at a time,
    in one prepared namespace."""

    def __init__(self, netns: str | None, family: int = 4) -> None:
        self.ns = Namespace(netns)
        self.family = family
        self.tables = TableKeeper(self.ns, family)

    def verdict(self, table: str, chain: str, rule: str) -> Verdict:
        words = restore_split(rule)
        command = TOOLS[self.family].command
        try:
            if chain not in BUILTIN_CHAINS.get(table, ()):
                self.ns.run(command, "-w", "-t", table, "-N", chain)
            for target in jump_chains(words, self.family):
                if target != chain:
                    self.ns.run(command, "-w", "-t", table, "-N", target)
            added = self.ns.run(command, "-w", "-t", table, "-A", chain, *words)
            if added.returncode != 0:
                return Verdict(False, added.stderr.strip(), ())
            return Verdict(True, "", save_lines(self.ns.save(table, self.family), chain))
        finally:
            for touched in touched_tables(table, words):
                self.tables.reset(touched)


def touched_tables(table: str, words: Sequence[str]) -> tuple[str, ...]:
    """Tables a rule may have changed: its own, or every table when its words carry a
    ``-t``/``--table`` of their own (iptables obeys the last one)."""
    if any(w.startswith("-t") or (w.startswith("--t") and "--table".startswith(w.split("=")[0])) for w in words):
        return TABLES
    return (table,)


# --------------------------------------------------------------------------- fixtures

_FIXTURE_SCRIPT = r"""
import json, socket, struct, sys
from pyroute2.ipset import IPSet

spec = json.loads(sys.argv[1])
family = socket.AF_INET6 if spec["family"] == 6 else socket.AF_INET  # a set serves one family's rules
with IPSet() as ipset:
    for name, kind in spec["ipsets"].items():
        ipset.create(name, stype=kind, family=family)
    ipset.create(spec["skbinfo"], stype="hash:ip", skbinfo=True, family=family)

# nfacct objects: NFNL_SUBSYS_ACCT (7) / NFNL_MSG_ACCT_NEW (0), attribute NFACCT_NAME (1)
sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
for seq, name in enumerate(spec["nfacct"], 1):
    value = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(value), 1) + value
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0) + attr
    header = struct.pack("=IHHII", 16 + len(body), (7 << 8) | 0, 0x1 | 0x4 | 0x400 | 0x200, seq, 0)
    sock.send(header + body)
    reply = sock.recv(4096)
    length, kind = struct.unpack_from("=IH", reply)
    if kind == 2:  # NLMSG_ERROR
        code = struct.unpack_from("=i", reply, 16)[0]
        if code != 0:
            raise SystemExit(f"nfacct {name}: errno {-code}")
"""


def prepare_namespace(netns: str, family: int = 4) -> None:
    """Make the fixtures the corpus refers to, in ``netns`` (ipsets of the family, nfacct,
    estimators)."""
    import json

    ns = Namespace(netns)
    command = TOOLS[family].command
    spec = {"ipsets": IPSETS, "skbinfo": IPSET_SKBINFO, "nfacct": NFACCT_OBJECTS, "family": family}
    ns.run(sys.executable, "-c", _FIXTURE_SCRIPT, json.dumps(spec), check=True)
    ns.run(command, "-w", "-t", "mangle", "-N", FIXTURE_CHAIN, check=True)
    for name in RATE_ESTIMATORS:
        ns.run(command, "-w", "-t", "mangle", "-A", FIXTURE_CHAIN, "-j", "RATEEST",
               "--rateest-name", name, "--rateest-interval", "1s", "--rateest-ewmalog", "8s", check=True)
    for table in TABLES:  # instantiate every table, so both sides see the same ones
        ns.save(table, family)


def kernel_release() -> str:
    return os.uname().release


def iptables_version(family: int = 4) -> str:
    return subprocess.run([TOOLS[family].command, "--version"], text=True, capture_output=True).stdout.strip()


__all__ = [
    "BUILTIN_CHAINS", "TABLES", "TOOLS", "IptablesOracle", "Namespace", "TableKeeper", "Tools", "Verdict",
    "jump_chains", "prepare_namespace", "restore_split", "save_lines", "touched_tables",
]
