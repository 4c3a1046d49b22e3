# SPDX-License-Identifier: MIT
"""Rules -> kernel entries (``struct ipt_entry`` blobs), through libxtables.

Every match and target extension is compiled by python-iptables, i.e. by the very
libxtables parsers ``iptables`` uses, so vnetd accepts exactly what iptables
accepts and stores exactly what iptables would. Three parts are encoded here
because they are fixed kernel ABI with no options to parse: the ``ipt_entry``
header (-s -d -i -o -p -f, byte-for-byte as iptables fills it), the ``comment``
match carrying vnetd's tag, and standard targets (ACCEPT/DROP/RETURN/QUEUE and
jumps to chains). Tests check each against python-iptables' own output.

Compiling a match costs ~70 us in python-iptables; identical segments (the same
``-m tcp --dport 22`` under the same protocol) are compiled once and reused, which
is what makes 10,000-rule tables cheap (docs/BENCHMARKS.md has the figures).

A *fingerprint* is what vnetd compares: the entry with the bytes the kernel owns
masked out (counters, comefrom, nfcache, kernel-private tails of matches/targets)
and a standard target reduced to its meaning (``ACCEPT``, ``JUMP:chain``), since the
kernel stores jumps as offsets into the table.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import ipaddress
import os
import re
import struct
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from vnetd.errors import ConfigError, ConfigIssue
from vnetd.model.firewall import ChainSpec, Rule, RuleOption

IPT_ENTRY_SIZE = 112
XT_ENTRY_HEADER = 32  # struct xt_entry_match / xt_entry_target header
XT_FUNCTION_MAXNAMELEN = 29
STANDARD_TARGET_SIZE = 40
COMMENT_SIZE = XT_ENTRY_HEADER + 256
IPT_F_FRAG, IPT_F_GOTO = 0x01, 0x08
IPT_INV_VIA_IN, IPT_INV_VIA_OUT, IPT_INV_SRCIP, IPT_INV_DSTIP = 0x01, 0x02, 0x08, 0x10
IPT_INV_FRAG, IPT_INV_PROTO = 0x20, 0x40
# standard verdicts as the kernel stores them
VERDICTS = {-2: "ACCEPT", -1: "DROP", -4: "QUEUE", -5: "RETURN"}
STANDARD_NAMES = ("ACCEPT", "DROP", "QUEUE", "RETURN")

_ENTRY = struct.Struct("=4s4s4s4s16s16s16s16sHBBIHHI16x")
_XT_HEADER = struct.Struct("=H29sB")

PROTOCOLS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51,
             "icmpv6": 58, "sctp": 132, "udplite": 136}


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


# --------------------------------------------------------------------------- encoding


@functools.lru_cache(maxsize=65536)
def _addr(value: str | None) -> tuple[bytes, bytes]:
    if value is None:
        return bytes(4), bytes(4)
    net = ipaddress.IPv4Network(value, strict=False)
    return net.network_address.packed, net.netmask.packed


@functools.lru_cache(maxsize=4096)
def _iface(value: str | None) -> tuple[bytes, bytes]:
    """Interface name and mask exactly as xtables_parse_interface fills them."""
    if not value:
        return bytes(16), bytes(16)
    raw = value.encode()
    if len(raw) + 1 > 16:
        raise RuleCompileError(f"interface name {value!r} is too long")
    name = raw.ljust(16, b"\0")
    if raw.endswith(b"+"):
        mask = b"\xff" * (len(raw) - 1)
    else:
        mask = b"\xff" * (len(raw) + 1)
    return name, mask.ljust(16, b"\0")


def protocol_number(rule: Rule) -> int:
    proto = rule.header.protocol
    if proto is None:
        return 0
    if proto.value.isdigit():
        return int(proto.value)
    return PROTOCOLS[proto.value]


def encode_header(rule: Rule, target_offset: int, next_offset: int) -> bytes:
    h = rule.header
    src, smsk = _addr(h.source.value if h.source else None)
    dst, dmsk = _addr(h.destination.value if h.destination else None)
    iniface, inmask = _iface(h.in_interface.value if h.in_interface else None)
    outiface, outmask = _iface(h.out_interface.value if h.out_interface else None)
    flags = 0
    inv = 0
    if h.fragment is not None:
        flags |= IPT_F_FRAG
        if not h.fragment:
            inv |= IPT_INV_FRAG
    if rule.target.goto:
        flags |= IPT_F_GOTO
    for item, bit in ((h.source, IPT_INV_SRCIP), (h.destination, IPT_INV_DSTIP),
                      (h.in_interface, IPT_INV_VIA_IN), (h.out_interface, IPT_INV_VIA_OUT),
                      (h.protocol, IPT_INV_PROTO)):
        if item is not None and item.inverted:
            inv |= bit
    return _ENTRY.pack(src, dst, smsk, dmsk, iniface, outiface, inmask, outmask,
                       protocol_number(rule), flags, inv, 0, target_offset, next_offset, 0)


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
class Segment:
    data: bytes
    usersize: int


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A declared rule as libiptc takes it, and the fingerprint the kernel copy must have."""

    tag: str
    entry: bytes
    fingerprint: bytes
    usersizes: tuple[int, ...]  # per match, then the target (for masking kernel copies)
    target_name: str | None  # standard meaning ("" falls through, a chain, ACCEPT...); None: extension


_offline_rule: Any = None


def offline_rule_class() -> Any:
    """python-iptables' Rule, minus its habit of reading the kernel's tables.

    Its Target constructor asks every table "is this a chain?", which instantiates
    missing tables in the kernel; vnetd resolves jumps itself and only hands
    extension targets to python-iptables.
    """
    global _offline_rule
    if _offline_rule is None:
        iptc = iptc_module()

        class OfflineRule(iptc.Rule):  # type: ignore[misc,name-defined]
            @property
            def tables(self) -> list[object]:
                return []

        _offline_rule = OfflineRule
    return _offline_rule


class RuleCompiler:
    """Compiles rules with python-iptables, caching each distinct match/target segment."""

    def __init__(self) -> None:
        self._iptc = iptc_module()
        self._segments: dict[tuple[object, ...], Segment] = {}
        self._rules: dict[tuple[str, str, str], CompiledRule] = {}

        self._rule_class = offline_rule_class()


    def compile(self, chain: ChainSpec, rule: Rule, user_chains: Iterable[str] = ()) -> CompiledRule:
        key = (chain.table, chain.name, rule.text)
        cached = self._rules.get(key)
        if cached is not None:
            return cached
        tag = chain.tag(rule)
        proto = (rule.header.protocol.value, rule.header.protocol.inverted) if rule.header.protocol else None
        segments = [self._segment("match", m.name, m.options, proto) for m in rule.matches]
        segments.append(Segment(comment_match(tag), COMMENT_SIZE))
        target_name = rule.target.name
        std: str | None
        if target_name is None:
            target = Segment(standard_target(""), STANDARD_TARGET_SIZE)
            std = ""
        elif target_name in STANDARD_NAMES or rule.target.goto or target_name in user_chains \
                or not self._is_extension_target(target_name):
            if rule.target.options:
                raise RuleCompileError(f"-j {target_name} takes no options")
            target = Segment(standard_target(target_name), STANDARD_TARGET_SIZE)
            std = target_name
        else:
            target = self._segment("target", target_name, rule.target.options, proto)
            std = None
        matches_size = sum(len(s.data) for s in segments)
        target_offset = IPT_ENTRY_SIZE + matches_size
        next_offset = target_offset + len(target.data)
        entry = encode_header(rule, target_offset, next_offset) + b"".join(s.data for s in segments) + target.data
        usersizes = tuple(s.usersize for s in segments) + (target.usersize,)
        fp = fingerprint(entry, std_target=std, goto=rule.target.goto)
        compiled = CompiledRule(tag, entry, fp, usersizes, std)
        self._rules[key] = compiled
        return compiled

    def _is_extension_target(self, name: str) -> bool:
        key = ("is-target", name)
        known = self._segments.get(key)
        if known is None:
            from iptc.xtables import xtables

            found = xtables(2).find_target(name)  # NFPROTO_IPV4
            known = Segment(b"1" if found else b"", 0)
            self._segments[key] = known
        return bool(known.data)

    def _segment(self, kind: str, name: str, options: tuple[RuleOption, ...], proto: object) -> Segment:
        key = (kind, name, options, proto)
        cached = self._segments.get(key)
        if cached is not None:
            return cached
        try:
            segment = self._compile_segment(kind, name, options, proto)
        except RuleCompileError:
            raise
        except Exception as exc:  # python-iptables raises ValueError/AttributeError/XTablesError/...
            raise RuleCompileError(_explain(kind, name, exc)) from exc
        self._segments[key] = segment
        return segment

    def _compile_segment(self, kind: str, name: str, options: tuple[RuleOption, ...], proto: object) -> Segment:
        iptc = self._iptc
        rule = self._rule_class()
        if isinstance(proto, tuple):
            rule.protocol = ("!" if proto[1] else "") + proto[0]
        try:
            module = iptc.Match(rule, name) if kind == "match" else iptc.Target(rule, name)
        except Exception as exc:
            what = "match" if kind == "match" else "target"
            raise RuleCompileError(f"unknown {what} {name!r} (no libxt/libipt extension of that name)") from exc
        for option in options:
            value: object
            if len(option.values) <= 1:
                value = ("!" if option.inverted else "") + (option.values[0] if option.values else "")
            else:
                value = (["!"] if option.inverted else []) + list(option.values)
            try:
                module.parse(option.name, value)
            except Exception as exc:
                raise RuleCompileError(_explain(kind, name, exc, option)) from exc
        try:
            module.final_check()
        except Exception as exc:
            raise RuleCompileError(_explain(kind, name, exc)) from exc
        if kind == "match":
            data = bytes(module.match_buf)[: module.size]
        else:
            data = ctypes.string_at(ctypes.addressof(module.target), module.size)
        return Segment(data, module.usersize)


_PYIPTC_NOISE = re.compile(r"b'([^']*)'")


def _explain(kind: str, name: str, exc: BaseException, option: RuleOption | None = None) -> str:
    """python-iptables' errors, readable: bytes reprs and libxtables' numeric codes removed."""
    what = f"-m {name}" if kind == "match" else f"-j {name}"
    text = _PYIPTC_NOISE.sub(r"\1", str(exc).strip()) or type(exc).__name__
    if ("invalid parameter" in text or "no such parameter" in text) and option is not None:
        return f"{what} has no option --{option.name}"
    if option is not None:
        shown = f"--{option.name} {' '.join(option.values)}".strip()
        if "parameter error" in text or "invalid value" in text or "error -" in text:
            hint = ""
            if name == "multiport" and not option.inverted:
                hint = " (multiport needs -p tcp, udp, udplite, sctp or dccp)"
            return f"{what}: {shown} is not a valid value{hint}"
        return f"{what}: {shown}: {text}"
    if "error -" in text or "parameter" in text:
        return f"{what}: its options are incomplete or inconsistent ({text})"
    return f"{what}: {text}"


# --------------------------------------------------------------------------- fingerprints


def iter_segments(entry: bytes | memoryview, target_offset: int, start: int = IPT_ENTRY_SIZE
                  ) -> Iterator[tuple[int, int, str]]:
    """(offset, size, name) of each match in an entry."""
    off = start
    while off < target_offset:
        size = struct.unpack_from("=H", entry, off)[0]
        if size < XT_ENTRY_HEADER:
            return
        name = bytes(entry[off + 2 : off + 31]).split(b"\0", 1)[0].decode("ascii", "replace")
        yield off, size, name
        off += size


def clean_entry(entry: bytes, usersizes: tuple[int, ...] | None) -> bytes:
    """An entry with the bytes nobody owns zeroed, as the kernel returns them.

    The kernel copies only ``strlen(name) + 1`` bytes of each match/target name and
    zeroes a match's kernel-private tail (beyond its usersize), writing into the
    reader's buffer: a zero-filled buffer (vnetd's own reads, python-iptables'
    compiled rules) is already clean, a reused or malloc'ed one (libiptc's) is not.
    ``usersizes`` gives, per match and for the target, how many bytes userspace
    owns (None: all of them).
    """
    target_offset, next_offset = struct.unpack_from("=HH", entry, 88)
    out = bytearray(entry)
    segments = [(off, size) for off, size, _name in iter_segments(entry, target_offset)]
    segments.append((target_offset, next_offset - target_offset))
    for i, (off, size) in enumerate(segments):
        name_end = entry.find(b"\0", off + 2, off + 31)
        if name_end != -1:
            out[name_end : off + 31] = bytes(off + 31 - name_end)
        if usersizes is not None and i < len(usersizes) and usersizes[i] < size:
            keep = max(usersizes[i], XT_ENTRY_HEADER)
            out[off + keep : off + size] = bytes(size - keep)
    return bytes(out)


def fingerprint(entry: bytes, std_target: str | None = None, goto: bool = False) -> bytes:
    """What vnetd compares: a clean entry (see clean_entry) minus what the kernel owns.

    Counters, comefrom and nfcache are left out; a standard target is reduced to its
    meaning (``STD:ACCEPT``, ``STD:chain``, ``STD:`` falls through), because the kernel
    stores a jump as an offset into the table.
    """
    target_offset, next_offset = struct.unpack_from("=HH", entry, 88)
    if std_target is not None:
        tail = b"STD:" + std_target.encode() + (b"/goto" if goto else b"")
    else:
        tail = entry[target_offset:next_offset]
    # a 16-byte digest: two copies of every rule (declared, observed) would otherwise
    # keep ~1 KB per rule in the daemon
    return hashlib.blake2b(entry[:84] + entry[88:92] + entry[IPT_ENTRY_SIZE:target_offset] + tail,
                           digest_size=16).digest()


_TAG = b"vnetd:"
_COMMENT_HEADER = struct.pack("=H", COMMENT_SIZE) + b"comment\0"



def entry_tag(entry: bytes) -> str | None:
    """The vnetd tag of an entry (text of its first ``comment`` match starting vnetd:)."""
    if _TAG not in entry:  # the common case for foreign rules: no need to walk the matches
        return None
    target_offset = struct.unpack_from("=H", entry, 88)[0]
    # vnetd puts its tag last, right before the target: look there first
    last = target_offset - COMMENT_SIZE
    if last >= IPT_ENTRY_SIZE and entry[last : last + 10] == _COMMENT_HEADER:
        text = entry[last + XT_ENTRY_HEADER : target_offset].split(b"\0", 1)[0]
        if text.startswith(_TAG):
            return text.decode("ascii", "replace")
    for off, size, name in iter_segments(entry, target_offset):
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


def _issue(chain: ChainSpec, i: int, rule: Rule, message: str) -> ConfigIssue:
    origin = rule.origin
    return ConfigIssue(origin.file if origin else "?", origin.line if origin else 0,
                       f"firewall.{chain.table}.{chain.name}.rules[{i}]", f"{message} (rule: {rule.text})")


def validate_rules(chains: Iterable[ChainSpec], existing_chains: Callable[[str], set[str] | None] | None = None
                   ) -> list[str]:
    """Compile every declared rule; raise ConfigError naming file, line and rule for each failure.

    A jump to a chain neither declared in the same table nor known to the kernel
    (``existing_chains(table)``; None when the table cannot be read) would make the
    whole table's commit fail: an error when the kernel's chains are known, a
    warning (returned) when they are not.
    """
    chains = tuple(chains)
    compiler = shared_compiler()
    issues: list[ConfigIssue] = []
    warnings: list[str] = []
    for chain in chains:
        user_chains = {c.name for c in chains if c.table == chain.table and not c.builtin}
        for i, rule in enumerate(chain.rules):
            try:
                compiled = compiler.compile(chain, rule, user_chains)
            except RuleCompileError as exc:
                issues.append(_issue(chain, i, rule, str(exc)))
                continue
            target = compiled.target_name
            if not target or target in STANDARD_NAMES or target in user_chains:
                continue
            known = existing_chains(chain.table) if existing_chains else None
            if known is None:
                warnings.append(f"{chain.resource}: '-j {target}' jumps to a chain the state files do not declare; "
                                "it must exist when the rule is written")
            elif target not in known:
                issues.append(_issue(chain, i, rule, f"'{'-g' if rule.target.goto else '-j'} {target}': no such "
                                     f"target, and no chain of that name in the {chain.table} table (declare it "
                                     "under the table, or check the spelling)"))
    if issues:
        raise ConfigError(issues)
    return warnings


# --------------------------------------------------------------------------- display


def _render_header(entry: bytes) -> list[str]:
    src, dst, smsk, dmsk, iniface, outiface, _inmask, _outmask, proto, flags, inv, *_ = _ENTRY.unpack_from(entry)
    parts = []
    for flag, addr, mask, bit in (("-s", src, smsk, IPT_INV_SRCIP), ("-d", dst, dmsk, IPT_INV_DSTIP)):
        if mask != bytes(4) or inv & bit:
            net = ipaddress.IPv4Network((ipaddress.IPv4Address(addr), ipaddress.IPv4Address(mask).exploded),
                                        strict=False)
            parts.append(f"{'! ' if inv & bit else ''}{flag} {net}")
    for flag, name, bit in (("-i", iniface, IPT_INV_VIA_IN), ("-o", outiface, IPT_INV_VIA_OUT)):
        text = name.split(b"\0", 1)[0].decode("ascii", "replace")
        if text:
            parts.append(f"{'! ' if inv & bit else ''}{flag} {text}")
    if proto:
        names = {v: k for k, v in PROTOCOLS.items()}
        parts.append(f"{'! ' if inv & IPT_INV_PROTO else ''}-p {names.get(proto, proto)}")
    if flags & IPT_F_FRAG:
        parts.append("! -f" if inv & IPT_INV_FRAG else "-f")
    return parts


def _render_module(iptc: Any, rule: Any, kind: str, data: bytes) -> str:
    from iptc.xtables import xt_entry_match, xt_entry_target

    buf = ctypes.create_string_buffer(data, len(data))
    struct_type = xt_entry_match if kind == "match" else xt_entry_target
    raw = ctypes.cast(buf, ctypes.POINTER(struct_type))[0]
    module = iptc.Match(rule, match=raw) if kind == "match" else iptc.Target(rule, target=raw)
    parts = []
    for key, values in module.get_all_parameters().items():
        inverted = bool(values) and values[0] == "!"
        vals = [v for v in values[1:]] if inverted else list(values)
        parts.append(("! " if inverted else "") + " ".join([f"--{key}", *(_quote(v) for v in vals)]))
    return " ".join(parts)


def _quote(value: str) -> str:
    from vnetd.model.firewall import quote

    return quote(value)


def render_entry(entry: bytes, meaning: str | None, *, drop_tag: bool = True) -> str:
    """An entry as iptables-save would print it (best effort; for display only)."""
    parts = _render_header(entry)
    target_offset, next_offset = struct.unpack_from("=HH", entry, 88)
    try:
        iptc = iptc_module()
        rule = offline_rule_class()()
    except Exception:
        iptc = rule = None
    for off, size, name in iter_segments(entry, target_offset):
        text = ""
        if name == "comment":
            comment = entry[off + XT_ENTRY_HEADER : off + size].split(b"\0", 1)[0].decode("utf-8", "replace")
            if drop_tag and comment.startswith("vnetd:"):
                continue
            text = f"--comment {_quote(comment)}"
        elif iptc is not None:
            try:
                text = _render_module(iptc, rule, "match", entry[off : off + size])
            except Exception:
                text = "(options not shown)"
        parts.append(f"-m {name}" + (f" {text}" if text else ""))
    goto = bool(entry[82] & IPT_F_GOTO)
    if meaning is not None:
        if meaning:
            parts.append(f"{'-g' if goto else '-j'} {meaning}")
    else:
        name = entry[target_offset + 2 : target_offset + 31].split(b"\0", 1)[0].decode("ascii", "replace")
        text = ""
        if iptc is not None:
            try:
                text = _render_module(iptc, rule, "target", entry[target_offset:next_offset])
            except Exception:
                text = "(options not shown)"
        parts.append(f"-j {name}" + (f" {text}" if text else ""))
    return " ".join(parts)
