# SPDX-License-Identifier: MIT
"""netfilter (legacy iptables and ip6tables tables): read, compare cheaply, write under the lock.

Reading goes straight to the kernel's own interface, ``getsockopt(IPT_SO_GET_INFO /
IPT_SO_GET_ENTRIES)``, the calls libiptc makes, and walks the table blob once:
chains, policies, and for each rule its vnetd tag and fingerprint. python-iptables'
Rule objects cost ~0.2 ms a rule to decode (1.7 s for 10,000); this walk costs a
few microseconds a rule and needs no extension decoding.

Whether anything changed since the last read is answered without walking at all:
the table blob, counters masked, is compared with the last one (``Snapshot``). That
is what the daemon polls (netfilter sends no change events).

Writing goes through libiptc (python-iptables' Table), under /run/xtables.lock:
refresh the handle, edit the chains by position as libiptc sees them, commit once
per table (libiptc replaces the table atomically). A concurrent writer that does
not take the lock makes the commit fail with EAGAIN: vnetd re-reads and retries.
If the kernel refuses the table (EINVAL from a match's checkentry), each chain is
committed alone to find which one, so the others still get applied.

One backend class, one instance per address family (``LegacyFamily``): the IPv4
tables (``ip_tables``: ``struct ipt_entry``, SOL_IP, libip4tc) and the IPv6 tables
(``ip6_tables``: ``struct ip6t_entry``, SOL_IPV6, libip6tc) differ only in the
entry layout, the socket level and the libiptc handle; the walk, fingerprints,
ownership rules and writes are the same code. ``backends.firewall.FirewallFamilies``
puts the two instances behind the engine's one firewall backend.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vnetd.backends.firewall import FamilyChains
from vnetd.backends.xtables import (
    COMMENT_SIZE,
    IPV4,
    IPV6,
    STANDARD_TARGET_SIZE,
    VERDICTS,
    CompiledRule,
    EntryLayout,
    RuleCompileError,
    RuleCompiler,
    clean_entry,
    comment_match,
    encode_plain_entry,
    entry_tag,
    fingerprint,
    iptc_module,
    render_entry,
    shared_compiler,
    standard_target,
)
from vnetd.backends.xtlock import xtables_lock
from vnetd.errors import BackendError
from vnetd.model.checkpoint import ChainRecord
from vnetd.model.firewall import (
    BUILTIN_CHAINS,
    OWNER_MARK,
    TAG_PREFIX,
    ChainSpec,
    ObservedChain,
    ObservedRule,
    ObservedTable,
    Rule,
    RuleId,
    RuleKey,
    ShownTable,
    section_of,
    split_table_key,
    table_key,
)
from vnetd.plan.actions import FIREWALL_OPS, Action, PruneChain, RestoreChain, SetPolicy, SyncChain
from vnetd.plan.firewall import in_commit_order, owner_key

IPT_SO_GET_INFO = 64  # IP6T_SO_GET_INFO has the same number
IPT_SO_GET_ENTRIES = 65  # IP6T_SO_GET_ENTRIES too
SOL_IP = 0
SOL_IPV6 = 41
HOOK_NAMES = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
_GETINFO = struct.Struct("=32sI5I5III")
_STANDARD = ("", "ACCEPT", "DROP", "RETURN", "QUEUE")


@dataclass(frozen=True, slots=True)
class LegacyFamily:
    """What differs between the legacy iptables and ip6tables tables: the entry layout,
    the kernel's socket interface (``ipt_getinfo``/``ipt_get_entries`` and their IPv6
    twins have the same layout), the list of instantiated tables, and libiptc's handle
    in python-iptables (``Table`` wraps libip4tc, ``Table6`` libip6tc)."""

    layout: EntryLayout
    socket_family: int
    level: int  # SOL_IP / SOL_IPV6
    names_file: str
    libiptc_table: str

    @property
    def family(self) -> int:
        return self.layout.family

    @property
    def section(self) -> str:
        return section_of(self.layout.family)


LEGACY = {
    4: LegacyFamily(IPV4, socket.AF_INET, SOL_IP, "/proc/net/ip_tables_names", "Table"),
    6: LegacyFamily(IPV6, socket.AF_INET6, SOL_IPV6, "/proc/net/ip6_tables_names", "Table6"),
}


@dataclass(frozen=True, slots=True)
class TableInfo:
    valid_hooks: int
    hook_entry: tuple[int, ...]
    underflow: tuple[int, ...]
    num_entries: int
    size: int


def loaded_tables(family: int = 4) -> list[str]:
    """Tables instantiated in this network namespace (reading one would create it)."""
    try:
        with open(LEGACY[family].names_file, encoding="ascii") as f:
            return sorted(line.strip() for line in f if line.strip())
    except FileNotFoundError:
        return []


class RawTables:
    """getsockopt access to the kernel's tables (what libiptc does on iptc_init).

    A kernel without IPv6 (``ipv6.disable=1``) has no AF_INET6 socket: its IPv6
    tables read as absent."""

    def __init__(self, family: int = 4) -> None:
        self.legacy = LEGACY[family]
        self._sock: socket.socket | None = None
        try:
            self._sock = socket.socket(self.legacy.socket_family, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                       socket.IPPROTO_RAW)
        except OSError as exc:
            if exc.errno != errno.EAFNOSUPPORT:
                raise
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._getsockopt = self._libc.getsockopt
        self._getsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                     ctypes.POINTER(ctypes.c_uint32)]
        self._memcmp = self._libc.memcmp
        self._memcmp.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        self._memcmp.restype = ctypes.c_int
        self._buffers: dict[str, ctypes.Array[ctypes.c_char]] = {}

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()

    def last_read_equals(self, table: str, data: bytes) -> bool:
        """Whether the last blob read of ``table`` is byte-identical to ``data``.

        A C memcmp: comparing a memoryview with bytes in Python goes element by
        element (~8 ms for a 10,000-rule table, against ~0.5 ms).
        """
        buf = self._buffers.get(table)
        if buf is None or len(buf) < 40 + len(data):
            return False
        return bool(self._memcmp(ctypes.addressof(buf) + 40, data, len(data)) == 0)

    def info(self, table: str) -> TableInfo | None:
        if self._sock is None:
            return None
        buf = ctypes.create_string_buffer(_GETINFO.size)
        buf.value = table.encode()
        size = ctypes.c_uint32(_GETINFO.size)
        if self._getsockopt(self._sock.fileno(), self.legacy.level, IPT_SO_GET_INFO, buf, ctypes.byref(size)) != 0:
            code = ctypes.get_errno()
            if code == errno.ENOENT:
                return None
            raise BackendError("xtables", f"{self.legacy.section}/{table}", f"cannot read table: {os.strerror(code)}",
                               code)
        _name, hooks, *rest = _GETINFO.unpack(buf.raw)
        return TableInfo(hooks, tuple(rest[0:5]), tuple(rest[5:10]), rest[10], rest[11])

    def read(self, table: str, clean: bool = True) -> tuple[TableInfo, memoryview] | None:
        """The table's info and entry blob (a view into a buffer reused per table).

        ``clean``: zero the buffer first. The kernel writes only ``strlen + 1`` bytes
        of each name, so a reused buffer keeps old bytes in the padding; parsing
        needs zeros there, a "same as last time?" comparison does not (the same
        table leaves the same bytes in the same buffer).
        """
        for _attempt in range(10):
            info = self.info(table)
            if info is None or self._sock is None:
                return None
            buf = self._buffers.get(table)
            if buf is None or len(buf) < 40 + info.size:
                buf = ctypes.create_string_buffer(40 + info.size + 4096)
                self._buffers[table] = buf
            if clean:
                ctypes.memset(buf, 0, 40 + info.size)
            ctypes.memmove(buf, table.encode() + b"\0", len(table) + 1)
            struct.pack_into("=I", buf, 32, info.size)
            length = ctypes.c_uint32(40 + info.size)
            if self._getsockopt(self._sock.fileno(), self.legacy.level, IPT_SO_GET_ENTRIES, buf,
                                ctypes.byref(length)) == 0:
                return info, memoryview(buf).cast("B")[40 : 40 + info.size]
            code = ctypes.get_errno()
            if code != errno.EAGAIN:  # EAGAIN: the table changed between the two calls
                raise BackendError("xtables", f"{self.legacy.section}/{table}",
                                   f"cannot read entries: {os.strerror(code)}", code)
        raise BackendError("xtables", f"{self.legacy.section}/{table}", "table kept changing while being read",
                           errno.EAGAIN)


def _entries(blob: bytes | memoryview, layout: EntryLayout = IPV4) -> list[tuple[int, int, int]]:
    """(offset, target_offset, next_offset) of every entry."""
    out = []
    off, end = 0, len(blob)
    unpack = struct.unpack_from
    field = layout.target_offset
    while off < end:
        t_off, n_off = unpack("=HH", blob, off + field)
        if n_off == 0:
            break
        out.append((off, t_off, n_off))
        off += n_off
    return out


@dataclass(frozen=True, slots=True)
class WalkedEntry:
    """One entry of a table blob, located: its chain, whether it is the policy."""

    chain: str
    builtin: bool
    policy: bool
    offset: int
    size: int
    meaning: str | None  # standard target meaning (see _standard_meaning); None: extension


def walk_table(info: TableInfo, blob: bytes | memoryview, layout: EntryLayout = IPV4) -> Iterator[WalkedEntry]:
    """The entries of a table blob with the chain each belongs to, in kernel order.

    Layout (what libiptc writes): built-in chains start at their hook entry and end
    with the policy entry at the hook's underflow; a user chain starts with an ERROR
    target naming it and ends with a RETURN; the table ends with an ERROR "ERROR".
    """
    entries = _entries(blob, layout)
    starts = {info.hook_entry[h]: HOOK_NAMES[h] for h in range(5) if info.valid_hooks & (1 << h)}
    underflows = {info.underflow[h] for h in range(5) if info.valid_hooks & (1 << h)}
    heads: dict[int, str] = {}  # offset of an ERROR entry -> chain name ("ERROR": end of table)
    jump_to: dict[int, str] = {}  # jump verdict (offset of a chain's first rule) -> chain name
    for off, t_off, n_off in entries:
        if bytes(blob[off + t_off + 2 : off + t_off + 31]).rstrip(b"\0") == b"ERROR":
            label = bytes(blob[off + t_off + 32 : off + t_off + 62]).split(b"\0", 1)[0].decode("ascii", "replace")
            heads[off] = label
            if label != "ERROR":
                jump_to[off + n_off] = label
    current: str | None = None
    builtin = False
    for i, (off, t_off, n_off) in enumerate(entries):
        if off in starts:
            current, builtin = starts[off], True
        if off in heads:
            if heads[off] == "ERROR":
                return
            current, builtin = heads[off], False
            yield WalkedEntry(current, False, False, off, 0, None)  # announces an empty chain too
            continue
        if current is None:
            continue
        meaning = _standard_meaning(blob, off, t_off, n_off, jump_to)
        if builtin and off in underflows:
            yield WalkedEntry(current, True, True, off, n_off, meaning)
            continue
        if not builtin and i + 1 < len(entries) and entries[i + 1][0] in heads:
            continue  # the RETURN that ends a user chain
        yield WalkedEntry(current, builtin, False, off, n_off, meaning)


#: Foreign rules are rendered as text (for plan output) in declared chains up to this size
#: (and vnetd's own rules that are no longer declared, in any chain).
RENDER_LIMIT = 200


def parse_table(name: str, info: TableInfo, blob: bytes | memoryview,
                render_chains: Iterable[str] = (), masks: Mapping[str, tuple[int, ...]] | None = None,
                layout: EntryLayout = IPV4) -> ObservedTable:
    """Chains in order, policies, and each rule's tag and fingerprint.

    ``blob`` must come from a zero-filled buffer (RawTables does that), so the
    kernel has already zeroed what it keeps to itself beyond each extension's
    usersize. ``masks`` (tag -> the declared rule's usersizes) also masks what the
    kernel shows of its own state inside that size but beyond what userspace owns,
    so a declared rule's kernel copy fingerprints like its compiled form. Foreign
    rules of the chains in ``render_chains`` also get their text (for the plan's output),
    and so do vnetd's own rules that are no longer declared (tagged, but not in ``masks``).
    """
    blob = bytes(blob)
    render = set(render_chains)
    rendered: dict[str, int] = {}
    chains: dict[str, tuple[bool, list[str | None], list[ObservedRule]]] = {}
    for e in walk_table(info, blob, layout):
        _builtin, policy, rules = chains.setdefault(e.chain, (e.builtin, [None], []))
        if e.size == 0:
            continue
        if e.policy:
            policy[0] = e.meaning
            continue
        entry = blob[e.offset : e.offset + e.size]
        tag = entry_tag(entry, layout)
        if tag is not None and masks is not None:
            usersizes = masks.get(tag)
            if usersizes is not None:
                entry = clean_entry(entry, usersizes, layout)
        fp = fingerprint(entry, e.meaning, bool(entry[layout.flags] & layout.goto), layout)
        text = None
        undeclared = tag is not None and masks is not None and tag not in masks  # vnetd's, no longer declared
        if (undeclared or (tag is None and e.chain in render)) and rendered.get(e.chain, 0) < RENDER_LIMIT:
            rendered[e.chain] = rendered.get(e.chain, 0) + 1
            text = render_entry(entry, e.meaning, family=layout.family)
        rules.append(ObservedRule(tag, fp, text))
    return ObservedTable(name, {c: ObservedChain(c, b, p[0], tuple(r)) for c, (b, p, r) in chains.items()},
                         layout.family)


def _standard_meaning(
    blob: bytes | memoryview, off: int, t_off: int, n_off: int, jump_to: dict[int, str]
) -> str | None:
    """ACCEPT/DROP/QUEUE/RETURN, a chain name, "" (fall through), or None (extension target)."""
    if blob[off + t_off + 2] != 0:
        return None
    verdict = struct.unpack_from("=i", blob, off + t_off + 32)[0]
    if verdict < 0:
        return VERDICTS.get(verdict, f"verdict{verdict}")
    if verdict == off + n_off:
        return ""
    return jump_to.get(verdict, f"offset{verdict}")


def _restorable_entry(entry: bytes, meaning: str | None, layout: EntryLayout = IPV4) -> bytes:
    """A kernel entry as libiptc takes it back: a standard target by name (the kernel
    keeps an offset), counters, comefrom and nfcache zeroed."""
    out = bytearray(entry)
    out[layout.nfcache : layout.nfcache + 4] = bytes(4)
    out[layout.comefrom : layout.size] = bytes(layout.size - layout.comefrom)  # comefrom, counters
    if meaning is None:
        return bytes(out)
    target_offset = struct.unpack_from("=H", entry, layout.target_offset)[0]
    target = standard_target(meaning)
    out[target_offset:] = target
    struct.pack_into("=H", out, layout.target_offset + 2, target_offset + len(target))
    return bytes(out)


class Snapshot:
    """The last blob read of one table: "changed since?" without parsing anything.

    An unchanged table usually comes back byte-identical (one memcmp); when traffic
    moved the counters, the blob is compared again with the counters left out.
    """

    def __init__(self, info: TableInfo, blob: memoryview, layout: EntryLayout = IPV4) -> None:
        self.info = info
        self.raw = bytes(blob)
        self.counters = [off + layout.counters for off, _t, _n in _entries(blob, layout)]

    def _mask(self, blob: memoryview | bytes) -> bytes:
        # the bytes between the 16-byte counters of each entry, in one join
        parts = []
        prev = 0
        for c in self.counters:
            parts.append(blob[prev:c])
            prev = c + 16
        parts.append(blob[prev:])
        return b"".join(parts)

    def same(self, info: TableInfo, blob: memoryview, identical: bool) -> bool:
        """``identical``: the caller found the blob byte-equal to ``raw`` (memcmp)."""
        if info != self.info:
            return False
        if identical:
            return True
        if self._mask(blob) != self._mask(self.raw):
            return False
        self.raw = bytes(blob)  # only counters moved: compare against these from now on
        return True


# --------------------------------------------------------------------------- the backend


def owner_mark_entry(layout: EntryLayout = IPV4) -> bytes:
    """The no-op first rule of a chain vnetd owns: a comment, no target (falls through)."""
    return encode_plain_entry(comment_match(OWNER_MARK), standard_target(""), layout)


def owner_mark(layout: EntryLayout = IPV4) -> CompiledRule:
    entry = owner_mark_entry(layout)
    fp = fingerprint(entry, std_target="", layout=layout)
    return CompiledRule(OWNER_MARK, (entry,), (COMMENT_SIZE, STANDARD_TARGET_SIZE), "", False, (), (fp,),
                        4 if layout is IPV4 else 6)


class FirewallBackend:
    """The legacy tables of one address family (``backends.firewall.FirewallBackend``):
    ``FirewallBackend(4)`` the iptables tables, ``FirewallBackend(6)`` the ip6tables
    tables. One per family and process; holds the last table snapshots (the rule
    compiler cache is shared). netfilter's legacy tables send no change events: the
    daemon polls ``changed``.

    It takes the chains of every family and keeps to its own (``ChainSpec.family``);
    tables are named by their key (``filter``, ``ip6 filter``: model.firewall.table_key)
    wherever both families' tables meet (``observe``, ``tables_to_read``, ``changed``,
    ``record_chains``), and keys of the other family are left alone.
    """

    name = "iptables-legacy"

    def __init__(self, family: int = 4) -> None:
        self.legacy = LEGACY[family]
        self.family = family
        self.layout = self.legacy.layout
        self._raw = RawTables(family)
        self._compiler: RuleCompiler | None = None
        self._snapshots: dict[str, Snapshot] = {}
        self._compiled: dict[str, CompiledRule] = {}
        self._compiled_for: tuple[ChainSpec, ...] | None = None
        self._ids: dict[RuleKey, RuleId] = {}
        self._by_key: dict[RuleKey, CompiledRule] = {}
        self._masks: dict[str, tuple[int, ...]] = {}
        self._fingerprints_of: object = None
        #: this family's chains of the desired state (see FamilyChains)
        self.mine = FamilyChains(family)

        self.lock_waits = 0.0

    def close(self) -> None:
        self._raw.close()

    def _key(self, table: str) -> str:
        return table_key(table, self.family)

    def _tables_of(self, keys: Iterable[str]) -> list[str]:
        """The table names among ``keys`` that are this family's."""
        out = []
        for key in keys:
            family, table = split_table_key(key)
            if family == self.family:
                out.append(table)
        return out

    def record_chains(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], ChainRecord]:
        """The chains as they are now, entries and policy, for a checkpoint (see
        model.checkpoint): each entry as libiptc takes it back (standard targets by
        name, counters and kernel-owned fields zeroed). ``keys``: (table key, chain)."""
        wanted = {(table, chain) for key, chain in keys for table in self._tables_of((key,))}
        out: dict[tuple[str, str], ChainRecord] = {}
        layout = self.layout
        for table in sorted({t for t, _ in wanted}):
            got = self._raw.read(table) if table in loaded_tables(self.family) else None
            chains: dict[str, tuple[bool, str | None, list[tuple[bytes, str | None]]]] = {}
            if got is not None:
                info, view = got
                blob = bytes(view)
                for e in walk_table(info, blob, layout):
                    if (table, e.chain) not in wanted:
                        continue
                    builtin, policy, entries = chains.setdefault(e.chain, (e.builtin, None, []))
                    if e.policy:
                        chains[e.chain] = (builtin, e.meaning, entries)
                    elif e.size:
                        entries.append((_restorable_entry(blob[e.offset : e.offset + e.size], e.meaning, layout),
                                        e.meaning))
            for t, chain in sorted(wanted):
                if t != table:
                    continue
                builtin = chain in BUILTIN_CHAINS.get(table, ())
                if chain in chains:
                    b, policy, entries = chains[chain]
                    record = ChainRecord(self.name, t, chain, True, b, policy, tuple(entries), self.family)
                else:
                    record = ChainRecord(self.name, t, chain, builtin, builtin, family=self.family)
                out[(self._key(t), chain)] = record
        return out

    def event_fileno(self) -> int | None:
        return None  # the legacy tables announce nothing: polled with changed()

    def drain_events(self) -> bool:
        return False

    def show(self, chains: Iterable[ChainSpec]) -> tuple[ShownTable, ...]:
        from vnetd.backends.ruleset import read_ruleset

        return read_ruleset(self.mine(chains), self.family)

    @property
    def compiler(self) -> RuleCompiler:
        if self._compiler is None:
            self._compiler = shared_compiler()
        return self._compiler

    # -- reading --------------------------------------------------------------------

    def has_vnetd_rules(self) -> bool:
        """Any vnetd-tagged rule in any instantiated table (cheap: a byte search)."""
        for table in loaded_tables(self.family):
            got = self._raw.read(table)
            if got is not None and TAG_PREFIX.encode() in bytes(got[1]):  # (`in` on a memoryview looks for ints)
                return True
        return False

    def compile_all(self, chains: Iterable[ChainSpec]) -> dict[str, CompiledRule]:
        """Every declared rule of this family compiled, by tag (plus the owner mark);
        cached per desired state."""
        chains = self.mine(chains)
        if self._compiled_for is chains:  # the same desired state as the last call
            return self._compiled
        compiled: dict[str, CompiledRule] = {}
        by_key: dict[RuleKey, CompiledRule] = {}
        existing: dict[str, set[str]] = {}
        for chain in chains:
            if chain.table not in existing:
                existing[chain.table] = self.chain_names(chain.table)
            jumpable = {c.name for c in chains if c.table == chain.table and not c.builtin} | existing[chain.table]
            for rule in chain.all_rules:
                try:
                    c = self.compiler.compile(chain, rule, jumpable)
                except RuleCompileError as exc:
                    raise BackendError("xtables", chain.resource, f"cannot compile {rule.text!r}: {exc}") from exc
                compiled[c.tag] = c
                by_key[chain.key(rule)] = c
        compiled[OWNER_MARK] = by_key[owner_key(self.family)] = owner_mark(self.layout)
        self._compiled = compiled
        self._by_key = by_key
        self._compiled_for = chains
        return compiled

    def chain_names(self, table: str) -> set[str]:
        """The chains of a table as the kernel has them now (none if it is not instantiated)."""
        if table not in loaded_tables(self.family):
            return set()
        got = self._raw.read(table)
        return set() if got is None else {e.chain for e in walk_table(*got, self.layout)}

    def rule_ids(self, chains: Iterable[ChainSpec]) -> dict[RuleKey, RuleId]:
        """Each declared rule's tag and fingerprints (the same dict while the rules are the same)."""
        self._refresh_views(chains)
        return self._ids

    def masks(self, chains: Iterable[ChainSpec]) -> dict[str, tuple[int, ...]]:
        """Tag -> usersizes of each declared rule (what of a kernel copy is compared)."""
        self._refresh_views(chains)
        return self._masks

    def _refresh_views(self, chains: Iterable[ChainSpec]) -> None:
        compiled = self.compile_all(chains)
        if self._fingerprints_of is not compiled:
            self._ids = {key: RuleId(c.tag, c.fingerprints) for key, c in self._by_key.items()}
            self._masks = {tag: c.usersizes for tag, c in compiled.items()}
            self._fingerprints_of = compiled

    def tables_to_read(self, chains: Iterable[ChainSpec]) -> list[str]:
        """Keys of the declared tables of this family and of every instantiated one."""
        declared = {c.table for c in self.mine(chains)}
        tables = declared | {t for t in loaded_tables(self.family) if t in BUILTIN_CHAINS}
        return [self._key(t) for t in sorted(tables)]

    def observe(self, chains: Iterable[ChainSpec]) -> dict[str, ObservedTable]:
        """This family's tables, by table key."""
        chains = self.mine(chains)
        masks = self.masks(chains)
        observed: dict[str, ObservedTable] = {}
        for table in self._tables_of(self.tables_to_read(chains)):
            got = self._raw.read(table)
            if got is None:
                continue
            info, blob = got
            declared = [c.name for c in chains if c.table == table]
            observed[self._key(table)] = parse_table(table, info, blob, declared, masks, self.layout)
            self._snapshots[table] = Snapshot(info, blob, self.layout)
        return observed

    def changed(self, tables: Iterable[str]) -> list[str]:
        """Keys of this family's tables (among ``tables``) whose content differs from the
        last observe (counters ignored)."""
        out = []
        for table in self._tables_of(tables):
            got = self._raw.read(table, clean=False)
            snap = self._snapshots.get(table)
            if got is None:
                if snap is not None:
                    out.append(self._key(table))
                continue
            if snap is None:
                out.append(self._key(table))
                continue
            info, blob = got
            identical = info == snap.info and self._raw.last_read_equals(table, snap.raw)
            if not snap.same(info, blob, identical):
                out.append(self._key(table))
        return out

    # -- writing --------------------------------------------------------------------

    def apply(self, actions: Sequence[Action]) -> list[tuple[Action, BackendError | None]]:
        """Carry out firewall actions of this family: one lock, one commit per table."""
        by_table: dict[str, list[Action]] = {}
        for action in actions:
            op = action.op
            assert isinstance(op, FIREWALL_OPS) and op.family == self.family
            by_table.setdefault(op.table, []).append(action)
        results: list[tuple[Action, BackendError | None]] = []
        with xtables_lock() as waited:
            self.lock_waits += waited
            for table, table_actions in by_table.items():
                results += self._apply_table(table, in_commit_order(table_actions))
        return results

    def _apply_table(self, table: str, actions: list[Action]) -> list[tuple[Action, BackendError | None]]:
        error: BackendError | None = None
        for _attempt in range(3):
            try:
                handle = _Handle(table, self._compiled, self._by_key, self.legacy)
                handle.create_restored_chains(actions)
                for action in actions:
                    handle.edit(action)
                handle.commit()
                return [(a, None) for a in actions]
            except _Retry:
                continue
            except BackendError as exc:
                error = exc
                break
        if len(actions) == 1:
            return [(actions[0], error or BackendError("xtables", actions[0].resource, "table kept changing",
                                                       errno.EAGAIN))]
        # find the culprit: each action in a commit of its own
        results: list[tuple[Action, BackendError | None]] = []
        for action in actions:
            results += self._apply_table(table, [action])
        return results


@dataclass(frozen=True, slots=True)
class _Wanted:
    """One entry a chain must hold: its tag, fingerprint, bytes, and fingerprint without the tag."""

    tag: str
    fingerprint: bytes
    entry: bytes
    plain: bytes

    @property
    def key(self) -> tuple[str | None, bytes]:
        return (self.tag, self.fingerprint)


class _Retry(Exception):
    """The table changed under libiptc (EAGAIN): read it again and redo the edits."""


class _Handle:
    """A libiptc handle on one table (python-iptables Table, or Table6 for ip6tables),
    edited by chain position."""

    def __init__(self, table: str, compiled: dict[str, CompiledRule],
                 by_key: dict[RuleKey, CompiledRule] | None = None, legacy: LegacyFamily = LEGACY[4]) -> None:
        iptc = iptc_module()
        self.iptc = iptc
        self.table = table
        self.legacy = legacy
        self.layout = legacy.layout
        self.table_class = getattr(iptc, legacy.libiptc_table)
        try:
            self.t = self.table_class(table, autocommit=False)
            self.t.refresh()
        except iptc.IPTCError as exc:
            raise BackendError("xtables", f"{legacy.section}/{table}", f"cannot open table: {exc}") from exc
        self.compiled = compiled
        self.by_key = by_key or {}

    def rules(self, chain: str) -> list[tuple[str | None, bytes]]:
        """(tag, fingerprint) of the chain's entries as libiptc holds them."""
        out = []
        entry = self.t.first_rule(chain)
        while entry:
            size = entry.next_offset
            raw = ctypes.string_at(ctypes.addressof(entry), size)
            layout = self.layout
            tag = entry_tag(raw, layout)
            compiled = self.compiled.get(tag) if tag else None
            meaning = (self.t.get_target(entry) or b"").decode()
            std = meaning if meaning in _STANDARD or self.t.is_chain(meaning) else None
            goto = bool(raw[layout.flags] & layout.goto)
            fp = fingerprint(clean_entry(raw, compiled.usersizes if compiled else None, layout), std, goto, layout)
            out.append((tag, fp))
            entry = self.t.next_rule(entry)
        return out

    def _buffer(self, data: bytes) -> Any:
        return (ctypes.c_ubyte * len(data)).from_buffer_copy(data)

    def edit(self, action: Action) -> None:
        op = action.op
        try:
            if isinstance(op, SyncChain):
                self._sync(op)
            elif isinstance(op, SetPolicy):
                self.t.set_policy(op.chain, op.policy)
            elif isinstance(op, PruneChain):
                self._prune(op)
            elif isinstance(op, RestoreChain):
                self._restore(op.record)
        except self.iptc.IPTCError as exc:
            raise BackendError("xtables", action.resource, f"libiptc: {exc}") from exc

    def _want(self, op: SyncChain, rules: tuple[Rule, ...], mark: bool) -> list[_Wanted]:
        """Every entry the rules make, in order (the owner mark first when ``mark``)."""
        compiled = [self.compiled[OWNER_MARK]] if mark else []
        compiled += [self.by_key[(table_key(op.table, op.family), op.chain, rule.text)] for rule in rules]
        return [_Wanted(c.tag, fp, entry, plain) for c in compiled
                for fp, entry, plain in zip(c.fingerprints, c.entries, c.plain_fingerprints, strict=True)]

    def _sync(self, op: SyncChain) -> None:
        """Merge: the declared rules first (``rules``) and last (``tail``), other tools'
        rules untouched between them; exclusive: exactly the declared rules. Only vnetd's
        entries move; a foreign entry identical to a missing declared one is adopted
        (tagged where it stands) instead of doubled."""
        if not op.builtin and not self.t.is_chain(op.chain):
            self.t.create_chain(op.chain)
        top = self._want(op, op.rules, mark=not op.builtin)
        bottom = self._want(op, op.tail, mark=False)
        have = self.rules(op.chain)
        exclusive = op.mode == "exclusive"
        if not exclusive:
            have = self._adopt(op.chain, have, top + bottom)
        k = 0
        while k < len(top) and k < len(have) and have[k] == top[k].key:
            k += 1
        s = 0
        while not exclusive and s < len(bottom) and s < len(have) - k \
                and have[len(have) - 1 - s] == bottom[len(bottom) - 1 - s].key:
            s += 1
        end = len(have) - s
        kept = 0
        for pos in range(end - 1, k - 1, -1):
            tag = have[pos][0]
            if exclusive or (tag is not None and tag.startswith(TAG_PREFIX)):
                self._delete_num(op.chain, pos)
            else:
                kept += 1
        length = k + kept + s
        for pos in range(k, len(top)):
            self._put(op.chain, top[pos].entry, pos, length)
            length += 1
        start = length - s
        for i, item in enumerate(bottom[: len(bottom) - s]):
            self._put(op.chain, item.entry, start + i, length)
            length += 1

    def _put(self, chain: str, entry: bytes, pos: int, length: int) -> None:
        # libiptc finds an insert position by walking the chain: append when nothing follows
        if pos == length:
            self.t.append_entry(chain, self._buffer(entry))
        else:
            self.t.insert_entry(chain, self._buffer(entry), pos)

    def _adopt(self, chain: str, have: list[tuple[str | None, bytes]], wanted: list[_Wanted]
               ) -> list[tuple[str | None, bytes]]:
        """Tag, in place, foreign entries identical to declared entries missing from the
        chain (an imported ruleset applied on the live host that it came from)."""
        present = {tag for tag, _fp in have if tag}
        missing: dict[bytes, _Wanted] = {}
        for item in wanted:
            if item.tag not in present:
                missing.setdefault(item.plain, item)
        if not missing:
            return have
        out = list(have)
        for pos, (tag, fp) in enumerate(have):
            if tag is None and fp in missing:
                item = missing.pop(fp)
                self.t.replace_entry(chain, self._buffer(item.entry), pos)
                out[pos] = item.key
        return out

    def create_restored_chains(self, actions: list[Action]) -> None:
        """Chains a restore brings back exist before any of them is filled (they may jump
        to each other)."""
        for action in actions:
            op = action.op
            if isinstance(op, RestoreChain) and op.record.exists and not op.record.builtin \
                    and not self.t.is_chain(op.chain):
                self.t.create_chain(op.chain)

    def _restore(self, record: ChainRecord) -> None:
        """Exactly the recorded entries and policy (a checkpoint's chain); a chain that
        did not exist is emptied and deleted."""
        if not record.exists:
            if self.t.is_chain(record.chain) and not record.builtin:
                self.t.flush_entries(record.chain)
                self.t.delete_chain(record.chain)
            return
        self.t.flush_entries(record.chain)
        for entry, _meaning in record.entries:
            self.t.append_entry(record.chain, self._buffer(entry))
        if record.builtin and record.policy:
            self.t.set_policy(record.chain, record.policy)

    def _prune(self, op: PruneChain) -> None:
        if not self.t.is_chain(op.chain):
            return
        have = self.rules(op.chain)
        for pos in range(len(have) - 1, -1, -1):
            tag = have[pos][0]
            if tag is not None and tag.startswith(TAG_PREFIX):
                self._delete_num(op.chain, pos)
        if op.delete_chain and len(have) == sum(1 for t, _ in have if t and t.startswith(TAG_PREFIX)):
            refs = ctypes.c_uint(0)
            self.t._iptc.iptc_get_references(ctypes.byref(refs), op.chain.encode(), self.t._handle)
            if refs.value == 0:
                self.t.delete_chain(op.chain)

    def _delete_num(self, chain: str, pos: int) -> None:
        # python-iptables binds libiptc's iptc_delete_num_entry but wraps it in no Table method
        if self.t._iptc.iptc_delete_num_entry(chain.encode(), pos, self.t._handle) != 1:
            raise self.iptc.IPTCError(f"can't delete rule {pos} of {chain}: {self.t.strerror()}")

    def commit(self) -> None:
        try:
            self.t.commit()
        except self.iptc.IPTCError as exc:
            self.release()
            code = ctypes.get_errno()
            if code == errno.EAGAIN or "Resource temporarily unavailable" in str(exc):
                raise _Retry() from exc
            raise BackendError("xtables", f"{self.legacy.section}/{self.table}",
                               f"the kernel refused the table: {exc}", code or None) from exc
        self.release()

    def release(self) -> None:
        """Free libiptc's copy of the table. python-iptables caches one Table object per
        table for the life of the process (``Table._cache``); a closed one left in that
        cache would crash the next user of it, so it leaves the cache too."""
        self.t.close()
        self.table_class._cache.pop(self.table, None)
