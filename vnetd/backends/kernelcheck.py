# SPDX-License-Identifier: MIT
"""Would the kernel take these rules? Asked of the kernel itself, in a throw-away namespace.

libxtables checks what a rule *says*; the kernel checks where it may stand: a
match's protocol (``-m tcpmss`` needs ``-p tcp``), the hooks a match or target
serves (``-m owner`` only in OUTPUT/POSTROUTING, ``DNAT`` only in nat
PREROUTING/OUTPUT), the tables a target belongs to, option combinations only the
kernel module knows. iptables learns of these when it writes the table and fails
there; ``vnetd check`` must fail the same rules up front, or a file that passed
``check`` would fail at ``apply`` (or every daemon pass).

So the declared chains are written, as vnetd would write them, into the tables
of a new network namespace that exists only for this check: a forked child
process calls unshare(CLONE_NEWNET), commits each table through libiptc (the
ip6tables tables through libip6tc, for ``firewall6:``) and reports. When a
table is refused, halving finds the rules the kernel refuses (a few commits
each), and the kernel's own reason is read from /dev/kmsg when that is allowed.
Nothing of the host changes: the namespace, its tables and the child are gone
when the check ends (kernel modules the rules need are loaded, as writing them
would). Jumps to chains vnetd does not declare (another tool's)
are written as empty chains.

Left out of the rules tried there, because they name objects that exist only in
the real namespace: ``-m set``/``-j SET`` (ipsets, by index), ``-m nfacct``
(accounting objects), ``-m rateest`` (estimators of RATEEST rules); the rest of
such a rule is still tried (its header, its other matches; the target replaced by
none). Those extensions are asked of the kernel in the real namespace instead
(``namespace_refusals``): the same xt matches and targets in an nf_tables
transaction that has no end, which the kernel checks and then aborts -- the
mechanism of ``nft --check``; nothing changes.
``-j IDLETIMER`` and ``-j LED`` are checked: a timer or LED trigger of that name
may appear for the instant the throw-away namespace exists.

Needs root (a new network namespace); without it the check reports that it
could not run, and ``check`` says so.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vnetd.backends.childcheck import ask_in_new_namespace, namespace_id
from vnetd.backends.xtables import IPV4, LAYOUTS, CompiledRule, EntryLayout, iter_segments, standard_target
from vnetd.model.firewall import ChainSpec, split_table_key

#: Extensions whose kernel check depends on the real namespace or changes the host.
UNCHECKABLE = frozenset({"set", "SET", "nfacct", "rateest"})
TIMEOUT = 60.0
MAX_REPLY = 1 << 20


@dataclass(frozen=True, slots=True)
class Refusal:
    """A declared rule the kernel refuses: which one, and why."""

    table: str  # the table key: "filter", "ip6 filter" (model.firewall.table_key)
    chain: str
    index: int  # position in the chain's declared rules
    reason: str


def checkable_entry(entry: bytes, layout: EntryLayout = IPV4) -> bytes:
    """The entry as the throw-away namespace can check it: matches naming objects of the
    real namespace left out, such a target replaced by "no target" -- everything else
    of the rule (its header, its other matches) is still checked."""
    target_offset, next_offset = struct.unpack_from("=HH", entry, layout.target_offset)
    kept = [entry[off : off + size] for off, size, name in iter_segments(entry, target_offset, layout.size)
            if name not in UNCHECKABLE]
    original = entry[target_offset:next_offset]
    target = original
    if target[2:31].split(b"\0", 1)[0].decode("ascii", "replace") in UNCHECKABLE:
        target = standard_target("")
    matches = b"".join(kept)
    if len(matches) == target_offset - layout.size and target is original:
        return entry
    head = bytearray(entry[: layout.size])
    struct.pack_into("=HH", head, layout.target_offset, layout.size + len(matches),
                     layout.size + len(matches) + len(target))
    return bytes(head) + matches + target


def kernel_refusals(chains: Sequence[ChainSpec], compiled: Mapping[tuple[str, str, int], CompiledRule],
                    foreign_chains: Mapping[str, Iterable[str]]) -> list[Refusal] | str:
    """The declared rules the kernel refuses, or why the check could not run.

    ``compiled``: (table key, chain, index) -> the rule compiled (rules that did not
    compile are left out); ``foreign_chains``: per table key, chains the rules jump
    to that vnetd does not declare.
    """
    if os.geteuid() != 0:
        return "not root: the kernel's checks of each rule (hooks, tables, protocols) were skipped"
    plan = _Plan.build(chains, compiled, foreign_chains)
    if not plan.tables:
        return []
    key = (namespace_id(), plan.digest())
    cached = _RESULTS.get(key)
    if cached is not None:
        return list(cached)
    result = _ask_the_kernel(plan)
    if not isinstance(result, str):
        if len(_RESULTS) >= 8:
            _RESULTS.pop(next(iter(_RESULTS)))
        _RESULTS[key] = tuple(result)
    return result


#: The kernel's answer for the same rules in the same namespace does not change: `check`,
#: `plan` and `apply` in one process, or a daemon reloading unchanged rules, ask once.
_RESULTS: dict[tuple[str, bytes], tuple[Refusal, ...]] = {}


def _ask_the_kernel(plan: _Plan) -> list[Refusal] | str:
    def work() -> list[tuple[str, str, int, str]]:  # in the child, in its own namespace
        kmsg = _Kmsg()
        refusals: list[tuple[str, str, int, str]] = []
        for table in plan.tables:
            refusals += _check_table(table, kmsg)
        return refusals

    reply = ask_in_new_namespace(work, "the kernel check", TIMEOUT, MAX_REPLY)
    if isinstance(reply, str):
        return reply
    assert isinstance(reply, list)
    return [Refusal(str(t), str(c), int(i), str(reason)) for t, c, i, reason in reply]


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class _Table:
    key: str  # "filter", "ip6 filter"
    chains: tuple[str, ...]  # user chains to create (declared and foreign placeholders)
    rules: tuple[tuple[str, int, tuple[bytes, ...]], ...]  # (chain, declared index, entries) in order


@dataclass(frozen=True, slots=True)
class _Plan:
    tables: tuple[_Table, ...]

    def digest(self) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for table in self.tables:
            h.update(f"{table.key}\0{','.join(table.chains)}\0".encode())
            for chain, index, entries in table.rules:
                h.update(f"{chain}\0{index}\0".encode())
                for entry in entries:
                    h.update(len(entry).to_bytes(4, "little") + entry)
        return h.digest()

    @staticmethod
    def build(chains: Sequence[ChainSpec], compiled: Mapping[tuple[str, str, int], CompiledRule],
              foreign_chains: Mapping[str, Iterable[str]]) -> _Plan:
        tables = []
        for key in dict.fromkeys(c.table_key for c in chains):
            declared = [c for c in chains if c.table_key == key]
            layout = LAYOUTS[declared[0].family]
            user = [c.name for c in declared if not c.builtin]
            user += [n for n in foreign_chains.get(key, ()) if n not in user]
            rules = []
            for chain in declared:
                for i in range(len(chain.all_rules)):
                    rule = compiled.get((key, chain.name, i))
                    if rule is not None:
                        rules.append((chain.name, i, tuple(checkable_entry(e, layout) for e in rule.entries)))
            if rules:
                tables.append(_Table(key, tuple(user), tuple(rules)))
        return _Plan(tuple(tables))


# --------------------------------------------------------------------------- in the child


def _check_table(table: _Table, kmsg: _Kmsg) -> list[tuple[str, str, int, str]]:
    everything = list(range(len(table.rules)))
    if _commit(table, everything) is None:
        return []
    refused: list[tuple[str, str, int, str]] = []
    for k in _failing(table, everything):
        chain, index, _entries = table.rules[k]
        kmsg.skip()
        code = _commit(table, [k])
        reason = kmsg.read()
        why = os.strerror(code) if code else "refused"
        detail = f": {reason}" if reason else " (dmesg may say why)"
        family, name = split_table_key(table.key)
        what = f"the IPv6 {name} table" if family == 6 else f"the {name} table"
        refused.append((table.key, chain, index, f"the kernel refuses this rule in {what} ({why}){detail}"))
    return refused


def _failing(table: _Table, subset: list[int]) -> list[int]:
    """The rules of ``subset`` the kernel refuses alone (halving: a few commits per culprit)."""
    if len(subset) == 1:
        return subset
    half = len(subset) // 2
    out = []
    for part in (subset[:half], subset[half:]):
        if _commit(table, part) is not None:
            out += _failing(table, part)
    return out


def _commit(table: _Table, which: list[int]) -> int | None:
    """Write the chains and the rules ``which`` into this namespace's table; None if
    the kernel took them, else the errno of the refusal. The table is reset first."""
    from vnetd.backends.xtables import iptc_module

    iptc = iptc_module()
    family, name = split_table_key(table.key)
    table_class = iptc.Table6 if family == 6 else iptc.Table
    table_class._cache.pop(name, None)
    t = table_class(name, autocommit=False)
    try:
        t.refresh()
        names = [c.name for c in t.chains]
        for name in names:
            t.flush_entries(name)
        for name in names:
            if not t.builtin_chain(name):
                t.delete_chain(name)
        for name in table.chains:
            t.create_chain(name)
        for k in which:
            chain, _index, entries = table.rules[k]
            for entry in entries:
                buf = (ctypes.c_ubyte * len(entry)).from_buffer_copy(entry)
                t.append_entry(chain, buf)
        try:
            t.commit()
        except iptc.IPTCError:
            return ctypes.get_errno() or errno.EINVAL
        return None
    finally:
        t.close()
        table_class._cache.pop(name, None)


class _Kmsg:
    """The kernel's log since the last skip(): x_tables says there why it refused a rule."""

    def __init__(self) -> None:
        try:
            self.fd: int | None = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self.fd = None
        self.skip()

    def skip(self) -> None:
        if self.fd is not None:
            try:
                os.lseek(self.fd, 0, os.SEEK_END)
            except OSError:
                self.fd = None

    def read(self) -> str:
        if self.fd is None:
            return ""
        lines = []
        while True:
            try:
                record = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten records: go on with the next
                    continue
                break
            if not record:
                break
            text = record.decode("utf-8", "replace").split(";", 1)[-1].strip()
            if "x_tables" in text or "ip_tables" in text or "ip6_tables" in text or text.startswith("xt_"):
                lines.append(text.removeprefix("x_tables: ").removeprefix("ip_tables: ").removeprefix("ip6_tables: "))
        return "; ".join(lines[-3:])


# --------------------------------------------------------------------------- the real namespace


def namespace_unasked(compiled: Mapping[tuple[str, str, int], CompiledRule]) -> list[tuple[str, str, int]]:
    """The ip6tables rules naming ipsets, nfacct objects or rate estimators: the kernel
    checks them when they are written, not before (``namespace_refusals`` encodes IPv4
    entries only)."""
    return [key for key, rule in compiled.items()
            if rule.family == 6 and any(_names(entry, LAYOUTS[6]) & UNCHECKABLE for entry in rule.entries)]


def namespace_refusals(chains: Sequence[ChainSpec], compiled: Mapping[tuple[str, str, int], CompiledRule]
                       ) -> list[Refusal] | str:
    """What the kernel refuses of the rules that name objects of this namespace (ipsets,
    nfacct objects, rate estimators): asked in this very namespace, as the same xt
    matches and targets in an nf_tables transaction that is never committed (the
    kernel checks each one, then aborts the whole: nothing changes, as with
    ``nft --check``). None of them: an empty list. The reason when it cannot be asked.
    IPv4 rules only: the ip6tables ones are listed by ``namespace_unasked``."""
    from vnetd.backends import nfnl
    from vnetd.backends.nftables import HOOKS
    from vnetd.backends.nftcompat import CannotEncode, encode

    todo = [(key, rule) for key, rule in compiled.items()
            if rule.family == 4 and any(_names(entry) & UNCHECKABLE for entry in rule.entries)]
    if not todo:
        return []
    if os.geteuid() != 0:
        return "not root: ipset, nfacct and rateest rules were not checked by the kernel"
    messages: list[nfnl.Message] = []
    owners: list[tuple[str, str, int] | None] = []
    made: set[tuple[str, str]] = set()
    check_chain = f"vnetd-check-{os.getpid()}"
    for (table, chain, index), rule in todo:
        name = f"{check_chain}-{chain}"[:28]
        if (table, chain) not in made:
            made.add((table, chain))
            messages.append(nfnl.new_table(table))
            owners.append(None)
            hook = HOOKS.get(table, {}).get(chain)
            if hook is not None:
                messages.append(nfnl.new_base_chain(table, name, hook[0], hook[1], hook[2], nfnl.NF_ACCEPT))
            else:
                messages.append(nfnl.new_user_chain(table, name))
            owners.append(None)
        place = nfnl.rule_place(table, name)
        meaning = rule.target_name if rule.target_name in ("", "ACCEPT", "DROP", "RETURN") else ""
        for entry in rule.entries:
            try:
                nft_rule = encode(entry, meaning if rule.target_name is not None else None, False, skip_matches=1)
            except CannotEncode:
                continue
            messages.append(nfnl.add_rule(place, nfnl.rule_body(nft_rule.exprs,
                                                                (nft_rule.proto, nft_rule.proto_inverted), None)))
            owners.append((table, chain, index))
    try:
        sock = nfnl.NftSocket()
    except OSError as exc:
        return f"nf_tables is not available to check ipset, nfacct and rateest rules ({exc.strerror or exc})"
    try:
        kmsg = _Kmsg()
        result = sock.batch(messages, None, commit=False)
        reason = kmsg.read()
    except (OSError, nfnl.BatchRestart) as exc:
        return f"the kernel could not be asked about ipset, nfacct and rateest rules ({exc})"
    finally:
        sock.close()
    chains_by_name = {(c.table_key, c.name): c for c in chains}
    refused: dict[tuple[str, str, int], Refusal] = {}
    for index, (code, text) in sorted(result.errors.items()):
        owner = owners[index] if 0 <= index < len(owners) else None
        if owner is None or owner in refused or owner[:2] not in chains_by_name:
            continue
        why = os.strerror(code) if code else "refused"
        detail = f": {text}" if text else (f": {reason}" if reason else " (dmesg may say why)")
        refused[owner] = Refusal(owner[0], owner[1], owner[2],
                                 f"the kernel refuses this rule in the {owner[0]} table ({why}){detail}")
    return list(refused.values())


def _names(entry: bytes, layout: EntryLayout = IPV4) -> set[str]:
    target_offset = struct.unpack_from("=H", entry, layout.target_offset)[0]
    names = {name for _off, _size, name in iter_segments(entry, target_offset, layout.size)}
    names.add(entry[target_offset + 2 : target_offset + 31].split(b"\0", 1)[0].decode("ascii", "replace"))
    return names
