# SPDX-License-Identifier: MIT
"""Rules -> kernel entries (``struct ipt_entry`` / ``struct ip6t_entry`` blobs), exactly
as iptables (``firewall:``) and ip6tables (``firewall6:``) make them.

A rule's words go through the same code path as ``iptables -A CHAIN <words>``:
the getopt loop of the iptables command over libxtables, with every extension's
own parser and final check, implicit protocol matches, option abbreviations,
aliases (``NOTRACK`` is ``CT --notrack``, ``state`` is ``conntrack``) and the
revision the kernel supports (``vnetd/backends/_xtables.c``, a small C module,
explains why this cannot be done from Python). So a rule means what iptables
makes of the same words, a rule iptables refuses is refused with iptables' own
message, and ``show`` prints rules as iptables-save does. The promise is proven
rule by rule against iptables-legacy (tests/integration/test_iptables_conformance.py,
docs/CONFORMANCE.md). One deliberate difference: host names in -s/-d are refused
(iptables resolves them through DNS once; a firewall rule must not change
meaning when a name does).

vnetd adds its tag, a ``comment`` match (``vnetd:<hash>``), right before the
target. Compiled rules are cached by text: a 10,000-rule state compiles once.

A *fingerprint* is what vnetd compares: the entry with the bytes the kernel owns
masked out (counters, comefrom, nfcache, the kernel-private tail of each match
and target beyond what userspace owns) and a standard target reduced to its
meaning (``ACCEPT``, ``JUMP:chain``), since the kernel stores jumps as offsets
into the table.

The two families differ only in the entry's header (``EntryLayout``): its size,
where the flags, target offset, comefrom and counters are, and the goto flag.
Matches and targets are the same ``xt_entry_match``/``xt_entry_target`` records.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
import re
import struct
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vnetd.errors import ConfigIssue
from vnetd.model.firewall import BUILTIN_CHAINS, TAG_PREFIX, ChainSpec, Rule

IPT_ENTRY_SIZE = 112
XT_ENTRY_HEADER = 32  # struct xt_entry_match / xt_entry_target header
XT_FUNCTION_MAXNAMELEN = 29
STANDARD_TARGET_SIZE = 40
COMMENT_SIZE = XT_ENTRY_HEADER + 256
IPT_F_FRAG, IPT_F_GOTO = 0x01, 0x02  # linux/netfilter_ipv4/ip_tables.h
IPT_INV_VIA_IN, IPT_INV_VIA_OUT, IPT_INV_SRCIP, IPT_INV_DSTIP = 0x01, 0x02, 0x08, 0x10
IPT_INV_FRAG, IPT_INV_PROTO = 0x20, 0x40
# standard verdicts as the kernel stores them
VERDICTS = {-2: "ACCEPT", -1: "DROP", -4: "QUEUE", -5: "RETURN"}
STANDARD_NAMES = ("ACCEPT", "DROP", "QUEUE", "RETURN")

_XT_HEADER = struct.Struct("=H29sB")


@dataclass(frozen=True, slots=True)
class EntryLayout:
    """Where things are in a kernel entry of one family (``struct ipt_entry``,
    linux/netfilter_ipv4/ip_tables.h; ``struct ip6t_entry``, linux/netfilter_ipv6/ip6_tables.h):
    offsets of the header's fields, and the flag that marks a goto."""

    family: int
    size: int  # the header: where the matches start
    flags: int  # ip.flags / ipv6.flags
    goto: int  # IPT_F_GOTO / IP6T_F_GOTO
    nfcache: int  # the end of the ip/ipv6 part
    target_offset: int  # target_offset, then next_offset (u16 each)
    comefrom: int
    counters: int  # 16 bytes: packets, bytes


IPV4 = EntryLayout(4, IPT_ENTRY_SIZE, 82, 0x02, 84, 88, 92, 96)
IPV6 = EntryLayout(6, 168, 131, 0x04, 136, 140, 144, 152)
LAYOUTS = {4: IPV4, 6: IPV6}



class RuleCompileError(ValueError):
    """libxtables (or the kernel ABI) cannot express this rule."""


# --------------------------------------------------------------------------- python-iptables


def _multiarch_dirs() -> list[str]:
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [f"/usr/lib/{arch}", f"/lib/{arch}"] if arch else []
    return dirs + ["/usr/lib64", "/usr/lib", "/lib64", "/lib"]


def _trusted_xtables_dir() -> str:
    for d in _multiarch_dirs():
        path = os.path.join(d, "xtables")
        if os.path.isfile(os.path.join(path, "libxt_comment.so")):
            return path
    raise RuleCompileError("iptables extensions (libxt_*.so) not found; install the iptables package")


_iptc: Any = None


def iptc_module() -> Any:
    """Import python-iptables with vnetd's own, trusted library locations.

    Left alone, ``import iptc`` runs ``ldconfig`` and ``gcc`` (ctypes.util.find_library)
    to locate libraries, ``modprobe ip_tables``, and trusts ``XTABLES_LIBDIR`` /
    ``IPTABLES_LIBDIR`` from the environment for the code it loads. vnetd sets those
    variables to the system's own directories, answers find_library from them
    without subprocesses, and lets the kernel autoload table modules itself.
    """
    global _iptc
    if _iptc is not None:
        return _iptc
    libdirs = [d for d in _multiarch_dirs() if os.path.isdir(d)]
    import importlib.util

    spec = importlib.util.find_spec("iptc")  # locates the package without importing it
    package_dir = os.path.dirname(os.path.dirname(spec.origin)) if spec and spec.origin else ""
    os.environ["XTABLES_LIBDIR"] = _trusted_xtables_dir()
    os.environ["IPTABLES_LIBDIR"] = ":".join([*libdirs, package_dir])
    os.environ["PYTHON_IPTABLES_XTABLES_VERSION"] = "12"

    def find_library(name: str) -> str | None:
        """What ctypes.util.find_library answers (a soname), without ldconfig or gcc."""
        for d in libdirs:
            try:
                names = [n for n in os.listdir(d) if n.startswith(f"lib{name}.so.")]
            except OSError:
                continue
            if names:
                return min(names, key=lambda n: (n.count("."), n))
        return None

    saved_find, saved_popen = ctypes.util.find_library, subprocess.Popen
    ctypes.util.find_library = find_library
    subprocess.Popen = _NoSubprocess  # type: ignore[assignment,misc]
    # python-iptables takes its Python 3.12 path (sysconfig) instead of importing the
    # deprecated distutils, which alone costs ~0.1 s
    hide_distutils = "distutils" not in sys.modules
    if hide_distutils:
        sys.modules["distutils"] = None  # type: ignore[assignment]
    try:
        import iptc
    finally:
        ctypes.util.find_library = saved_find
        subprocess.Popen = saved_popen  # type: ignore[misc]
        if hide_distutils:
            del sys.modules["distutils"]
    _iptc = iptc
    return iptc


class _NoSubprocess:
    """Stands in for subprocess.Popen while python-iptables imports (its modprobe)."""

    returncode = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.stderr = _Empty()
        self.stdout = _Empty()

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def communicate(self, *args: object, **kwargs: object) -> tuple[str, str]:
        return "", ""


class _Empty:
    def read(self, *args: object) -> bytes:
        return b""


# --------------------------------------------------------------------------- compiling


_xt: Any = None


def libxtables() -> Any:
    """The C module, initialised once (libxtables for IPv4, the system's extensions)."""
    global _xt
    if _xt is None:
        from vnetd.backends import _xtables

        _xtables.init()
        _xt = _xtables
    return _xt


#: getopt's letter for flags of the iptables command that are not part of a rule
COMMAND_FLAGS = {
    "A": ("-A/--append", "the chain is the key the rule is written under; drop '-A CHAIN'"),
    "I": ("-I/--insert", "rules are kept in the declared order; drop '-I CHAIN'"),
    "D": ("-D/--delete", "to remove a rule, delete it from the file"),
    "C": ("-C/--check", "vnetd checks its rules itself"),
    "R": ("-R/--replace", "write the rule as it should be"),
    "t": ("-t/--table", "the table is the key the chain is written under"),
    "N": ("-N/--new-chain", "declare user chains as keys under the table"),
    "X": ("-X/--delete-chain", "remove the chain from the file"),
    "E": ("-E/--rename-chain", "declare the chain under its new name"),
    "P": ("-P/--policy", "use 'policy:' on the chain"),
    "F": ("-F/--flush", "use 'mode: exclusive' to own a chain"),
    "Z": ("-Z/--zero", "counters are the kernel's"),
    "L": ("-L/--list", "a listing command, not part of a rule"),
    "S": ("-S/--list-rules", "a listing command, not part of a rule"),
    "6": ("-6/--ipv6", "IPv6 rules belong under firewall6: (ip6tables)"),
    "4": ("-4/--ipv4", "IPv4 rules belong under firewall: (iptables)"),
    "n": ("-n/--numeric", "an output flag of the iptables program"),
    "x": ("-x/--exact", "an output flag of the iptables program"),
    "0": ("--line-numbers", "an output flag of the iptables program"),
    "V": ("-V/--version", "not part of a rule"),
    "h": ("-h/--help", "not part of a rule"),
    "M": ("-M/--modprobe", "vnetd never runs a program"),
    "b": ("-b", "not part of a rule"),
}


def _explain(message: str, rule: Rule, family: int = 4) -> str:
    """libxtables' message, with vnetd's reason for command flags, a quoting hint, a
    hint for an address of the other family (firewall: / firewall6:) and what would be
    valid (vnetd.backends.rulehints: "did you mean", an option's values)."""
    if message.startswith("command flag ") and len(message) == 14:
        flag, why = COMMAND_FLAGS.get(message[-1], (f"-{message[-1]}", "not part of a rule"))
        return f"{flag} is not allowed in a rule: {why}"
    if any(w.startswith("'") or w.endswith("'") for w in rule.words):
        message += " (iptables-save syntax quotes with double quotes: --comment \"two words\")"
    elif family == 6 and "is not an IPv6 address" in message and re.search(r"`[0-9.]+(/\d+)?'", message):
        message += " (IPv4 rules belong under firewall:)"
    elif family == 4 and "is not an IPv4 address" in message and ":" in message.split("`", 1)[-1]:
        message += " (IPv6 rules belong under firewall6:)"
    from vnetd.backends.rulehints import hint

    return message + hint(message, rule, family)


def meaning_tag(table_key: str, chain: str, plain_fingerprints: Iterable[bytes]) -> str:
    """A declared rule's tag: table (with its family), chain and what its entries mean
    (their fingerprints without the tag), so that two spellings of one rule are the
    same rule."""
    h = hashlib.blake2b(f"{table_key}\0{chain}\0".encode(), digest_size=8)
    for fp in plain_fingerprints:
        h.update(fp)
    return TAG_PREFIX + h.hexdigest()


def insert_before_target(entry: bytes, segment: bytes, layout: EntryLayout = IPV4) -> bytes:
    """``entry`` with ``segment`` (a match) added after its last match."""
    target_offset, next_offset = struct.unpack_from("=HH", entry, layout.target_offset)
    out = bytearray(entry[:target_offset] + segment + entry[target_offset:])
    struct.pack_into("=HH", out, layout.target_offset, target_offset + len(segment), next_offset + len(segment))
    return bytes(out)


def encode_plain_entry(segments: bytes, target: bytes, layout: EntryLayout = IPV4) -> bytes:
    """An entry with no header fields (any address, interface, protocol)."""
    header = bytearray(layout.size)
    target_offset = layout.size + len(segments)
    struct.pack_into("=HH", header, layout.target_offset, target_offset, target_offset + len(target))
    return bytes(header) + segments + target


@functools.lru_cache(maxsize=1024)
def xt_header(size: int, name: str, revision: int = 0) -> bytes:
    return _XT_HEADER.pack(size, name.encode(), revision)


def comment_match(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise RuleCompileError("comment longer than 255 bytes")
    return xt_header(COMMENT_SIZE, "comment") + raw.ljust(256, b"\0")


@functools.lru_cache(maxsize=4096)
def standard_target(name: str) -> bytes:
    """ACCEPT/DROP/RETURN/QUEUE, a chain to jump to, or "" (no target: fall through)."""
    return xt_header(STANDARD_TARGET_SIZE, name) + bytes(8)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A declared rule as libiptc takes it, and the fingerprints the kernel's copies must have.

    Usually one entry; ``-s a,b`` makes one per address, as iptables does. The legacy
    tables' fingerprints are computed when first asked for (~20 us a rule): the
    iptables-nft backend, which fingerprints nf_tables expressions, never asks.
    """

    tag: str
    entries: tuple[bytes, ...]
    usersizes: tuple[int, ...]  # per match, then the target: bytes userspace owns (the rest is the kernel's)
    target_name: str | None  # standard meaning ("" falls through, a chain, ACCEPT...); None: extension
    goto: bool
    warnings: tuple[str, ...] = ()
    #: each entry's fingerprint without vnetd's tag: what an identical foreign rule has (adoption)
    plain_fingerprints: tuple[bytes, ...] = ()
    family: int = 4
    _fingerprints: list[tuple[bytes, ...]] = field(default_factory=list, compare=False, repr=False)

    @property
    def fingerprints(self) -> tuple[bytes, ...]:
        """Each entry's fingerprint in the legacy tables (see ``fingerprint``)."""
        if not self._fingerprints:
            layout = LAYOUTS[self.family]
            self._fingerprints.append(tuple(
                fingerprint(e, self.target_name, self.goto, layout)
                for e in self.entries))
        return self._fingerprints[0]


class RuleCompiler:
    """Compiles rules through libxtables, caching each (table, chain, text)."""

    def __init__(self) -> None:
        self._xt = libxtables()
        self._rules: dict[tuple[str, str, str, bool], CompiledRule | RuleCompileError] = {}

    def compile(self, chain: ChainSpec, rule: Rule, chains: Collection[str] = ()) -> CompiledRule:
        """``chains``: names that are chains of the table (a jump to one is a jump, not an extension).
        The chain's family says iptables or ip6tables."""
        jump = rule.jump
        key = (chain.table_key, chain.name, rule.text, jump is not None and jump[0] in chains)
        cached = self._rules.get(key)
        if cached is None:
            cached = self._compile(chain, rule, chains)
            self._rules[key] = cached
        if isinstance(cached, RuleCompileError):
            raise cached
        return cached

    def retain(self, chains: Iterable[ChainSpec]) -> None:
        """Forget compiled rules that are no longer declared (a daemon's cache stays bounded)."""
        keep = {(c.table_key, c.name, r.text) for c in chains for r in c.all_rules}
        for key in [k for k in self._rules if k[:3] not in keep]:
            del self._rules[key]

    def _compile(self, chain: ChainSpec, rule: Rule, chains: Collection[str]) -> CompiledRule | RuleCompileError:
        xt = self._xt
        layout = LAYOUTS[chain.family]
        try:
            entries, usersizes, kind, target, goto, warnings = xt.compile(
                rule.words, chain.table, chain.name, chains, chain.family)
        except xt.CompileError as exc:
            return RuleCompileError(_explain(str(exc), rule, chain.family))
        std = None if kind == "extension" else target
        # compiled entries are clean already (the C side zeroes what the kernel would)
        plain = tuple(fingerprint(e, std, goto, layout) for e in entries)
        tag = meaning_tag(chain.table_key, chain.name, plain)
        comment = comment_match(tag)
        tagged = tuple(insert_before_target(e, comment, layout) for e in entries)
        usersizes.insert(-1, COMMENT_SIZE)
        notes = tuple(line.strip() for line in warnings.splitlines() if line.strip()) if warnings else ()
        return CompiledRule(tag, tagged, tuple(usersizes), std, bool(goto), notes, plain, chain.family)


# --------------------------------------------------------------------------- fingerprints


def iter_segments(entry: bytes | memoryview, target_offset: int, start: int = IPT_ENTRY_SIZE
                  ) -> Iterator[tuple[int, int, str]]:
    """(offset, size, name) of each match in an entry (``start``: the layout's header size)."""
    off = start
    while off < target_offset:
        size = struct.unpack_from("=H", entry, off)[0]
        if size < XT_ENTRY_HEADER:
            return
        name = bytes(entry[off + 2 : off + 31]).split(b"\0", 1)[0].decode("ascii", "replace")
        yield off, size, name
        off += size


def clean_entry(entry: bytes, usersizes: tuple[int, ...] | None, layout: EntryLayout = IPV4) -> bytes:
    """An entry with the bytes nobody owns zeroed, as the kernel returns them.

    The kernel copies only ``strlen(name) + 1`` bytes of each match/target name and
    zeroes a match's kernel-private tail (beyond its usersize), writing into the
    reader's buffer: a zero-filled buffer (vnetd's own reads, python-iptables'
    compiled rules) is already clean, a reused or malloc'ed one (libiptc's) is not.
    ``usersizes`` gives, per match and for the target, how many bytes userspace
    owns (None: all of them).
    """
    target_offset, next_offset = struct.unpack_from("=HH", entry, layout.target_offset)
    out = bytearray(entry)
    segments = [(off, size) for off, size, _name in iter_segments(entry, target_offset, layout.size)]
    segments.append((target_offset, next_offset - target_offset))
    for i, (off, size) in enumerate(segments):
        name_end = entry.find(b"\0", off + 2, off + 31)
        if name_end != -1:
            out[name_end : off + 31] = bytes(off + 31 - name_end)
        if usersizes is not None and i < len(usersizes) and usersizes[i] < size:
            keep = max(usersizes[i], XT_ENTRY_HEADER)
            out[off + keep : off + size] = bytes(size - keep)
    return bytes(out)


def fingerprint(entry: bytes, std_target: str | None = None, goto: bool = False, layout: EntryLayout = IPV4
                ) -> bytes:
    """What vnetd compares: a clean entry (see clean_entry) minus what the kernel owns.

    Counters, comefrom and nfcache are left out; a standard target is reduced to its
    meaning (``STD:ACCEPT``, ``STD:chain``, ``STD:`` falls through), because the kernel
    stores a jump as an offset into the table.
    """
    target_offset, next_offset = struct.unpack_from("=HH", entry, layout.target_offset)
    if std_target is not None:
        tail = b"STD:" + std_target.encode() + (b"/goto" if goto else b"")
    else:
        tail = entry[target_offset:next_offset]
    # a 16-byte digest: two copies of every rule (declared, observed) would otherwise
    # keep ~1 KB per rule in the daemon
    offsets = layout.target_offset
    return hashlib.blake2b(entry[: layout.nfcache] + entry[offsets : offsets + 4] + entry[layout.size : target_offset]
                           + tail, digest_size=16).digest()


_TAG = b"vnetd:"
_COMMENT_HEADER = struct.pack("=H", COMMENT_SIZE) + b"comment\0"



def entry_tag(entry: bytes, layout: EntryLayout = IPV4) -> str | None:
    """The vnetd tag of an entry (text of its first ``comment`` match starting vnetd:)."""
    if _TAG not in entry:  # the common case for foreign rules: no need to walk the matches
        return None
    target_offset = struct.unpack_from("=H", entry, layout.target_offset)[0]
    # vnetd puts its tag last, right before the target: look there first
    last = target_offset - COMMENT_SIZE
    if last >= layout.size and entry[last : last + 10] == _COMMENT_HEADER:
        text = entry[last + XT_ENTRY_HEADER : target_offset].split(b"\0", 1)[0]
        if text.startswith(_TAG):
            return text.decode("ascii", "replace")
    for off, size, name in iter_segments(entry, target_offset, layout.size):
        if name == "comment" and size == COMMENT_SIZE:
            text = bytes(entry[off + XT_ENTRY_HEADER : off + size]).split(b"\0", 1)[0]
            if text.startswith(b"vnetd:"):
                return text.decode("ascii", "replace")
    return None


# --------------------------------------------------------------------------- check


_shared_compiler: RuleCompiler | None = None


def shared_compiler() -> RuleCompiler:
    """One compiler (and cache) per process: `check` and the backend compile each rule once."""
    global _shared_compiler
    if _shared_compiler is None:
        _shared_compiler = RuleCompiler()
    return _shared_compiler


def rule_issue(chain: ChainSpec, i: int, rule: Rule, message: str) -> ConfigIssue:
    origin = rule.origin
    return ConfigIssue(origin.file if origin else "?", origin.line if origin else 0,
                       f"{chain.section}.{chain.table}.{chain.name}.rules[{i}]", f"{message} (rule: {rule.text})")


@dataclass
class RuleCheck:
    """What compiling a state's rules found."""

    issues: list[ConfigIssue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: (table key, chain, index) -> the rule compiled, for the rules that compiled cleanly
    #: (the table key: ``filter``, ``ip6 filter``; see model.firewall.table_key)
    compiled: dict[tuple[str, str, int], CompiledRule] = field(default_factory=dict)
    #: per table key, chains the rules jump to that the state does not declare (another tool's)
    foreign_chains: dict[str, set[str]] = field(default_factory=dict)


def validate_rules(chains: Iterable[ChainSpec],
                   existing_chains: Callable[[str, int], set[str] | None] | None = None) -> RuleCheck:
    """Compile every declared rule as iptables (ip6tables for ``firewall6:``) would;
    issues name file, line and rule.

    A jump to a chain neither declared in the same table nor known to the kernel
    (``existing_chains(table, family)``; None when the table cannot be read) would
    make the whole table's commit fail: an error when the kernel's chains are
    known, a warning when they are not. The rules are compiled family by family
    (libxtables serves one family at a time).
    """
    from vnetd.backends.rulehints import reset_budget

    reset_budget()
    chains = tuple(sorted(chains, key=lambda c: c.family))
    compiler = shared_compiler()
    result = RuleCheck()
    issues, warnings = result.issues, result.warnings
    known: dict[str, set[str] | None] = {}
    tags: dict[tuple[str, str, str], Rule] = {}
    for chain in chains:
        key = chain.table_key
        declared = {c.name for c in chains if c.table_key == key and not c.builtin}
        if key not in known:
            known[key] = existing_chains(chain.table, chain.family) if existing_chains else None
        existing = known[key]
        jumpable = declared | (existing or set())
        for i, rule in enumerate(chain.all_rules):
            try:
                compiled = compiler.compile(chain, rule, jumpable)
            except RuleCompileError as exc:
                issues.append(rule_issue(chain, i, rule, str(exc)))
                continue
            for note in compiled.warnings:
                warnings.append(f"{chain.resource}: rule {i + 1} ({rule.text}): {note}")
            problem = _jump_problem(chain, compiled, declared, existing)
            twin = tags.get((key, chain.name, compiled.tag))
            if problem is None and twin is not None:
                where = twin.origin or "?"
                problem = f"the same rule as at {where} (iptables reads both alike: {twin.text})"
            if problem is not None:
                issues.append(rule_issue(chain, i, rule, problem))
                continue
            tags[(key, chain.name, compiled.tag)] = rule
            result.compiled[(key, chain.name, i)] = compiled
            target = compiled.target_name
            if target and target not in STANDARD_NAMES and target not in declared:
                result.foreign_chains.setdefault(key, set()).add(target)
                if existing is None:
                    warnings.append(f"{chain.resource}: '-j {target}' jumps to a chain the state files "
                                    "do not declare; it must exist when the rule is written")
    compiler.retain(chains)
    return result


def _jump_problem(chain: ChainSpec, compiled: CompiledRule, declared: set[str], existing: set[str] | None
                  ) -> str | None:
    target = compiled.target_name
    flag = "-g" if compiled.goto else "-j"
    if not target or target in STANDARD_NAMES:
        return None
    if target == chain.name:
        return f"'{flag} {target}': a chain cannot jump to itself"
    if target in BUILTIN_CHAINS.get(chain.table, ()):
        return f"'{flag} {target}': jumps to a built-in chain; iptables allows jumps to user chains only"
    if target in declared or existing is None or target in existing:
        return None
    from vnetd.backends.rulehints import chains_hint, target_hint

    chains = declared | existing
    if compiled.goto:
        return (f"goto '{target}' is not a chain of the {chain.table} table (declare it under the table)"
                + chains_hint(target, chains))
    return (f"'-j {target}': no such target, and no chain of that name in the {chain.table} table "
            "(declare it under the table, or check the spelling)" + target_hint(target, chains, chain.family))


def declared_texts(chains: Iterable[ChainSpec]) -> dict[str, str]:
    """Tag -> declared text of every rule that compiles (for showing vnetd's rules as
    written); a rule that does not compile has no tag in the kernel either."""
    chains = tuple(chains)
    compiler = shared_compiler()
    out: dict[str, str] = {}
    for chain in chains:
        names = {c.name for c in chains if c.table_key == chain.table_key and not c.builtin}
        for rule in chain.all_rules:
            try:
                out[compiler.compile(chain, rule, names).tag] = rule.text
            except RuleCompileError:
                continue
    return out


# --------------------------------------------------------------------------- display


_TAG_COMMENT = re.compile(r' -m comment --comment "?vnetd:[0-9a-z-]+"?(?= |$)')


def render_entry(entry: bytes | memoryview, meaning: str | None, *, drop_tag: bool = True, family: int = 4) -> str:
    """An entry as iptables-save (ip6tables-save: ``family`` 6) prints it, without
    ``-A CHAIN`` (vnetd's tag left out).

    ``meaning``: what a standard target means (ACCEPT, a chain's name, "" for none);
    None for an extension target. Printed by the extensions' own save functions.
    """
    try:
        text = str(libxtables().render(bytes(entry), meaning, family))
    except (ValueError, OSError, ImportError) as exc:  # _xtables.CompileError is a ValueError
        return f"(cannot be shown: {exc})"
    if drop_tag:
        text = _TAG_COMMENT.sub("", text)
    return text.strip()
