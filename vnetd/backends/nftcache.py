# SPDX-License-Identifier: MIT
"""The iptables-nft tables as nf_tables holds them, kept current from its notifications.

``Mirror`` holds the chains and rules (handle, user data, expressions, tag,
fingerprint) of the ``ip`` and ``ip6`` tables iptables-nft and ip6tables-nft use,
by table key (``filter``, ``ip6 filter``: ``model.firewall.table_key``). One mirror
serves both families: nf_tables has one generation id per namespace and one
notification group for every family, so one event socket, one "changed?" request
and one parse of each notification do for both. It is filled by one dump
per chain and then follows the kernel's notifications (``nfnl.NftEvents``)
instead of reading again: a rule deleted by ``iptables-nft -D`` arrives as one
``NFT_MSG_DELRULE`` of a few hundred bytes, where a re-read of a 10,000-rule
table is megabytes.

Why it stays exact:

* notifications come per transaction, the changed objects then ``NFT_MSG_NEWGEN``
  with the generation id the transaction made; the mirror applies a transaction
  only once it is complete, and only if it is newer than what the mirror holds
  (a dump already contains the transactions before it);
* a new rule's notification says where it went: ``NFTA_RULE_POSITION`` is the
  handle of the rule right before it, when it is not first or last; otherwise
  ``NLM_F_APPEND`` means last and its absence first. The kernel computes that
  position when the transaction is committed, so it may name a rule the same
  transaction adds further on: such a rule waits for that one;
* a dump is consistent when no part of it carries ``NLM_F_DUMP_INTR``; each part of
  the mirror (the chains, each chain's rules) is read at its own generation, and the
  notifications bring them together (see ``reload``);
* a foreign user chain whose rules a writer keeps changing faster than they can be
  read is held without its rules (``CachedChain.unread``) rather than making vnetd wait
  for the writer; ``require`` reads the chains vnetd needs, whatever it takes;
* anything the mirror cannot place, a lost notification (ENOBUFS) or a
  generation it has not seen arrive makes it read every table again.

``sync`` brings the mirror to the kernel's current generation (one GETGEN
request when nothing changed); ``pump`` applies whatever notifications wait,
without blocking (the daemon calls it when the event socket is readable).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from vnetd.backends import nfnl
from vnetd.backends.nftexpr import Fingerprinter, xt_comments
from vnetd.model.firewall import KEY_SIZE, TAG_PREFIX, ObservedRule, rule_key, split_table_key, table_key

#: the tables iptables-nft writes (family ip) and ip6tables-nft (family ip6)
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")
#: their keys in the mirror, family by family
TABLE_KEYS = {(nfproto, name): table_key(name, family) for nfproto, family in nfnl.FAMILY_OF.items()
              for name in IPTABLES_TABLES}
#: how long a generation id may be ahead of its notifications before the mirror re-reads
EVENT_GRACE = 0.5
#: seconds a read of a part the mirror needs (the chains, a built-in or declared chain's
#: rules) keeps trying when commits interrupt its dumps, before it gives up ...
RELOAD_BUDGET = 3.0
#: ... and dumps it tries at least, however slow the machine
RELOAD_MIN_TRIES = 20
#: the pause before a part is read again: the first, doubled after each try, up to the last
BACKOFF_FIRST, BACKOFF_MAX = 0.001, 0.05
#: dumps tried of a foreign user chain's rules before it is left unread for now
FOREIGN_TRIES = 2
_TAG = TAG_PREFIX.encode()


def rule_tag(exprs: bytes, udata: bytes | None) -> str | None:
    """vnetd's tag of a rule: its user-data comment (where vnetd writes it), or a
    ``comment`` match (a tagged line replayed through iptables-nft-restore)."""
    comment = nfnl.udata_get_comment(udata)
    if comment is not None and comment.startswith(TAG_PREFIX):
        return comment
    if _TAG in exprs:
        for text in xt_comments(exprs):
            if text.startswith(TAG_PREFIX):
                return text
    return None




class CachedRule:
    """One kernel rule; ``plain``/``shown``: its planner view, made once (see nftables.py)."""

    __slots__ = ("exprs", "fingerprint", "handle", "key", "ours", "plain", "shown", "tag", "udata")

    def __init__(self, handle: int, exprs: bytes, udata: bytes | None, tag: str | None, fingerprint: bytes,
                 key: bytes | None = None) -> None:
        self.handle = handle
        self.exprs = exprs
        self.udata = udata
        self.tag = tag
        self.fingerprint = fingerprint
        self.key = key if key is not None else rule_key(tag, fingerprint)
        self.ours = tag is not None and tag.startswith(TAG_PREFIX)  # vnetd's (tagged)
        self.plain: ObservedRule | None = None
        self.shown: ObservedRule | None = None


@dataclass
class CachedChain:
    name: str
    handle: int
    hooknum: int | None  # None: a user chain
    priority: int | None
    policy: int | None
    chain_type: str | None
    rules: list[CachedRule] = field(default_factory=list)
    by_handle: dict[int, CachedRule] = field(default_factory=dict)
    version: int = 0  # bumped on every change (what built views are keyed on)
    #: the generation its rules were read at (Mirror keeps those still ahead of the others)
    rules_gen: int = 0
    #: its rules could not be read (a writer kept changing them): ``rules`` is empty
    unread: bool = False
    _keys: tuple[int, bytes] | None = None
    _foreign: tuple[int, bytes] | None = None
    #: the keys kept in step with ``rules`` by the methods below (None: joined again)
    _kbuf: bytearray | None = field(default=None, repr=False, compare=False)

    @property
    def base(self) -> bool:
        return self.hooknum is not None

    def keys(self) -> bytes:
        """The keys of the chain's rules, joined (see rule_key)."""
        if self._keys is None or self._keys[0] != self.version:
            kbuf = self._kbuf
            if kbuf is not None and len(kbuf) == len(self.rules) * KEY_SIZE:
                joined = bytes(kbuf)  # a drift changes a rule or two: no join of 10,000 keys
            else:
                joined = b"".join([r.key for r in self.rules])
                self._kbuf = bytearray(joined)
            self._keys = (self.version, joined)
        return self._keys[1]

    def insert_rule(self, at: int, rule: CachedRule) -> None:
        self.rules.insert(at, rule)
        if self._kbuf is not None:
            self._kbuf[at * KEY_SIZE : at * KEY_SIZE] = rule.key

    def append_rule(self, rule: CachedRule) -> None:
        self.rules.append(rule)
        if self._kbuf is not None:
            self._kbuf += rule.key

    def delete_at(self, index: int) -> None:
        del self.rules[index]
        if self._kbuf is not None:
            del self._kbuf[index * KEY_SIZE : (index + 1) * KEY_SIZE]

    def set_rules(self, rules: list[CachedRule]) -> None:
        """The chain's rules as a dump read them."""
        self.rules = rules
        self.by_handle = {rule.handle: rule for rule in rules}
        self._kbuf = None

    def keys_changed(self) -> None:
        """A rule's key was changed in place: join the keys again when next asked."""
        self._kbuf = None

    def foreign_keys(self) -> bytes:
        """The keys of the rules that are not vnetd's, joined."""
        if self._foreign is None or self._foreign[0] != self.version:
            self._foreign = (self.version, b"".join([r.key for r in self.rules if not r.ours]))
        return self._foreign[1]


@dataclass
class CachedTable:
    name: str
    chains: dict[str, CachedChain] = field(default_factory=dict)
    family: int = 4

    @property
    def key(self) -> str:
        return table_key(self.name, self.family)


class Unplaceable(Exception):
    """A notification the mirror cannot apply (it re-reads instead)."""


def _newer(gen: int, than: int) -> bool:
    """Generation ids are 32-bit and wrap."""
    return 0 < ((gen - than) & 0xFFFFFFFF) < 0x80000000


class Mirror:
    """nf_tables' iptables and ip6tables tables in this namespace, as of generation ``gen``,
    by table key. ``fingerprinters``: one per family (4, 6), each learning the usersizes
    of its family's extensions."""

    def __init__(self, sock: nfnl.NftSocket, events: nfnl.NftEvents, fingerprinters: Mapping[int, Fingerprinter],
                 clock: Callable[[], float], sleep: Callable[[float], None] = time.sleep) -> None:
        self.sock = sock
        self.events = events
        self.fps = dict(fingerprinters)
        self.clock = clock
        self.sleep = sleep
        self.tables: dict[str, CachedTable] = {}
        #: the generation the tables and chains reflect, and the rules of every chain but
        #: those read later and not yet caught up with (``_ahead``)
        self.struct_gen: int | None = None
        #: id -> chain whose rules were read at a generation newer than struct_gen
        self._ahead: dict[int, CachedChain] = {}
        self.valid = False
        #: the fingerprinters' versions the fingerprints were made with
        self.fp_versions = {family: -1 for family in self.fps}
        self.dirty: set[str] = set()  # table keys changed since their owner last looked (mark_seen)
        self.foreign: set[int] = set()  # families whose tables another writer changed (take_foreign)
        self.reloads = 0
        self._pending: list[tuple[nfnl.Event, str]] = []  # the transaction being received (event, table key)
        #: sequence number -> (tag, fingerprint, key) of the rules vnetd's last batch added (see expect)
        self._expected: dict[int, tuple[str | None, bytes, bytes]] = {}
        self._hint: tuple[CachedChain, int] | None = None

    # -- reading the kernel --------------------------------------------------------

    def _rule(self, msg: nfnl.RuleMsg, family: int) -> CachedRule:
        return CachedRule(msg.handle, msg.exprs, msg.udata, rule_tag(msg.exprs, msg.udata),
                          self.fps[family](msg.exprs))

    @property
    def gen(self) -> int | None:
        """The generation the whole mirror reflects (its oldest part: the parts read
        later are ahead of it, and the notifications in between bring the others up)."""
        return self.struct_gen

    def _dump(self, request: nfnl.Message) -> tuple[list[tuple[bytes, int, int, int]], int] | None:
        """One dump and the generation it was read at; None if a commit interrupted it."""
        base = self.sock.getgen()
        replies, interrupted = self.sock.dump(request)
        if interrupted:
            return None
        gen = nfnl.dump_generation(replies, base)
        if gen is None:  # an empty dump says nothing: bracket it
            if self.sock.getgen() != base:
                return None
            gen = base
        return replies, gen

    def reload(self) -> None:
        """Read every iptables and ip6tables table again: one chain dump and one table dump
        (of every family), then one rule dump per chain (the kernel filters by table and
        chain, as for ``nft list chain``).

        A dump spanning several netlink messages is interrupted by any commit in the
        namespace, and a writer committing all the time (a container engine starting)
        may never leave a gap long enough for one dump of a whole table. So each part
        only has to be consistent in itself: the chains at one generation, each chain's
        rules at one of their own; the notifications of what was committed in between,
        queued meanwhile, bring every part to the same generation (``_apply`` applies a
        transaction to the parts older than it). An interrupted part is read again
        alone, after a pause that doubles (BACKOFF_FIRST up to BACKOFF_MAX); the chains
        and built-in chains' rules for RELOAD_BUDGET seconds and at least
        RELOAD_MIN_TRIES times, then the read fails ("kept changing"). The rules of a
        user chain are tried FOREIGN_TRIES times, then the chain is held unread: vnetd
        does not need the rules of another tool's chain to write its own (``require``
        reads the chains it writes, ``retry_unread`` tries the others again).
        """
        self.reloads += 1
        self.valid = False
        deadline = self.clock() + RELOAD_BUDGET
        tries = 0
        while True:
            try:
                self.events.read()  # what is queued predates the dumps
            except nfnl.EventOverrun:
                pass
            self._pending.clear()
            got = self._read_structure()
            if got is not None:
                break
            tries += 1
            self._back_off(tries, deadline)
        tables, struct_gen = got
        for table in tables.values():
            for chain in table.chains.values():
                self._read_chain(table, chain, deadline, None if chain.base else FOREIGN_TRIES)
        for name in set(self.tables) | set(tables):
            self.dirty.add(name)
        self.tables = tables
        self.struct_gen = struct_gen
        self._ahead = {}
        for table in tables.values():
            for chain in table.chains.values():
                self._note_read(chain)
        self.valid = True
        self.fp_versions = {family: fp.version for family, fp in self.fps.items()}
        self._hint = None

    def _back_off(self, tries: int, deadline: float) -> None:
        """Pause before a part interrupted ``tries`` times is read again (a writer pauses
        now and then); NftError when its budget is spent."""
        now = self.clock()
        if tries >= RELOAD_MIN_TRIES and now >= deadline:
            raise nfnl.NftError(0, "the ruleset kept changing while being read")
        pause = min(BACKOFF_FIRST * (1 << min(tries - 1, 16)), BACKOFF_MAX, max(deadline - now, 0.0))
        if pause > 0:
            self.sleep(pause)

    def _read_structure(self) -> tuple[dict[str, CachedTable], int] | None:
        """The iptables and ip6tables tables and their chains (no rules yet), at the
        generation of the chain dump; None if a commit interrupted a dump. The tables are
        dumped after the chains: a table only the table dump has had no chain at the
        chains' generation or was made since (its notification makes it again), a table
        only the chain dump has was deleted since (its notification deletes it)."""
        got_chains = self._dump(nfnl.dump_chains(nfnl.NFPROTO_UNSPEC))
        if got_chains is None:
            return None
        got_tables = self._dump(nfnl.dump_tables(nfnl.NFPROTO_UNSPEC))
        if got_tables is None:
            return None
        struct_gen = got_chains[1]
        tables: dict[str, CachedTable] = {}
        for data, kind, off, length in got_chains[0]:
            if kind == nfnl.NFT_MSG_NEWCHAIN:
                c = nfnl.decode_chain(data, off, length)
                key = TABLE_KEYS.get((c.family, c.table))
                if key is None:
                    continue
                table = tables.get(key)
                if table is None:
                    table = tables[key] = CachedTable(c.table, family=nfnl.FAMILY_OF[c.family])
                table.chains[c.name] = CachedChain(c.name, c.handle, c.hooknum, c.priority, c.policy, c.chain_type,
                                                   rules_gen=struct_gen)
        for data, kind, off, length in got_tables[0]:
            if kind == nfnl.NFT_MSG_NEWTABLE:
                t = nfnl.decode_table(data, off, length)
                key = TABLE_KEYS.get((t.family, t.name))
                if key is not None and key not in tables:
                    tables[key] = CachedTable(t.name, family=nfnl.FAMILY_OF[t.family])
        return tables, struct_gen

    def _read_chain(self, table: CachedTable, chain: CachedChain, deadline: float, tries: int | None) -> bool:
        """The chain's rules from one uninterrupted dump of that chain alone. ``tries``: how
        many dumps before the chain is left unread (False); None: as long as the budget
        lasts (then NftError)."""
        request = nfnl.dump_rules(table.name, nfnl.NFPROTO[table.family], chain.name)
        failed = 0
        while True:
            got = self._dump(request)
            if got is not None:
                break
            failed += 1
            if tries is not None and failed >= tries:
                if not chain.unread:
                    chain.unread = True
                    chain.set_rules([])
                    chain.version = self._next_version()
                return False
            self._back_off(failed, deadline)
        replies, gen = got
        family, name, table_name = table.family, chain.name, table.name
        rules = []
        for data, kind, off, length in replies:
            if kind != nfnl.NFT_MSG_NEWRULE:
                continue
            msg = nfnl.decode_rule(data, off, length)
            if msg.chain == name and msg.table == table_name:  # a kernel that does not filter sends more
                rules.append(self._rule(msg, family))
        chain.set_rules(rules)
        chain.rules_gen = gen
        chain.unread = False
        chain.version = self._next_version()
        return True

    def _note_read(self, chain: CachedChain) -> None:
        """A chain's rules were read: ahead of the mirror's generation, the notifications
        up to theirs are not applied to them."""
        if self.struct_gen is not None and not chain.unread and _newer(chain.rules_gen, self.struct_gen):
            self._ahead[id(chain)] = chain

    def unread(self, family: int | None = None) -> list[tuple[str, str]]:
        """(table key, chain) of the chains held without their rules (of ``family``)."""
        return [(key, chain.name) for key, table in self.tables.items()
                if family is None or table.family == family
                for chain in table.chains.values() if chain.unread]

    def require(self, keys: Iterable[tuple[str, str]]) -> bool:
        """Read the rules of the chains ``keys`` (table key, chain) held unread, as long as
        the budget lasts (NftError if one keeps changing all that time); True if any was
        read (the mirror's generation is then behind them until the notifications come)."""
        deadline: float | None = None
        read = False
        for key, name in keys:
            table = self.tables.get(key)
            chain = table.chains.get(name) if table is not None else None
            if table is None or chain is None or not chain.unread:
                continue
            if deadline is None:
                deadline = self.clock() + RELOAD_BUDGET
            self._read_chain(table, chain, deadline, None)
            self._note_read(chain)
            self.dirty.add(key)
            read = True
        return read

    def retry_unread(self) -> bool:
        """One more dump of each chain held unread (its writer may have paused); True if
        any was read."""
        read = False
        for key, table in self.tables.items():
            for chain in table.chains.values():
                if chain.unread and self._read_chain(table, chain, 0.0, 1):
                    self._note_read(chain)
                    self.dirty.add(key)
                    read = True
        return read

    _version = 0

    def _next_version(self) -> int:
        Mirror._version += 1
        return Mirror._version

    def refingerprint(self) -> None:
        """Fingerprints again after a family's fingerprinter learned new usersizes."""
        stale = {family for family, fp in self.fps.items() if self.fp_versions.get(family) != fp.version}
        if not stale:
            return
        for table in self.tables.values():
            if table.family not in stale:
                continue
            fingerprint = self.fps[table.family]
            for chain in table.chains.values():
                changed = False
                for rule in chain.rules:
                    fp = fingerprint(rule.exprs)
                    if fp != rule.fingerprint:
                        rule.fingerprint = fp
                        rule.key = rule_key(rule.tag, fp)
                        rule.plain = rule.shown = None
                        changed = True
                if changed:
                    chain.keys_changed()
                    chain.version = self._next_version()
                    self.dirty.add(table.key)
        self.fp_versions = {family: fp.version for family, fp in self.fps.items()}

    def sync(self) -> int:
        """Bring the mirror to the kernel's current generation; return it."""
        self.pump()
        self._catch_up(True)
        if not self.valid:
            self.reload()
            self.pump()
            self._catch_up(False)  # the parts read last are ahead: the notifications bring the others
        self.refingerprint()
        assert self.gen is not None
        return self.gen

    def _catch_up(self, strict: bool) -> None:
        """Wait briefly for the notifications of what was committed up to now (``strict``:
        those that do not come make the mirror read again)."""
        if not self.valid or self.gen is None:
            return
        current = self.sock.getgen()
        if _newer(current, self.gen):
            # committed, its notifications not read yet (or still being sent): wait briefly
            deadline = self.clock() + EVENT_GRACE
            while self.valid and self.gen is not None and _newer(current, self.gen) and self.clock() < deadline:
                self.events.wait(max(deadline - self.clock(), 0.0))
                self.pump()
            if strict and self.valid and self.gen is not None and _newer(current, self.gen):
                self.valid = False

    # -- notifications ---------------------------------------------------------------

    def pump(self) -> bool:
        """Apply the notifications waiting; True if another writer changed an iptables or
        ip6tables table (or notifications were lost). Which family: ``take_foreign``."""
        try:
            buffers = self.events.read()
        except nfnl.EventOverrun:
            self.valid = False
            self._pending.clear()
            self.foreign.update(self.fps)
            return True
        if not buffers:
            return False
        own = self.sock.portid
        foreign: set[int] = set()
        pending = self._pending
        for event in nfnl.parse_events(buffers):
            if event.kind != nfnl.NFT_MSG_NEWGEN:
                nfproto = nfnl.family_of(event.data, event.off)
                if nfproto in nfnl.FAMILY_OF:
                    key = TABLE_KEYS.get((nfproto, self._table_of(event)))
                    if key is not None:  # an iptables or ip6tables table
                        pending.append((event, key))
                continue
            gen = nfnl.decode_gen(event.data, event.off, event.length)
            transaction, self._pending = pending, []
            pending = self._pending
            for t, key in transaction:
                if t.pid != own:
                    foreign.add(split_table_key(key)[0])
            oldest = self.gen if self.valid else None
            if oldest is None or not _newer(gen, oldest):
                continue  # already in the dumps the mirror was built from
            try:
                self._apply(transaction, gen)
            except Unplaceable:
                self.valid = False
        self.foreign |= foreign
        return bool(foreign)

    @staticmethod
    def _table_of(event: nfnl.Event) -> str:
        # NFTA_TABLE_NAME, NFTA_CHAIN_TABLE and NFTA_RULE_TABLE are all attribute 1, and the
        # kernel writes it first
        data, off = event.data, event.off
        if event.length >= 24:
            alen, atype = struct.unpack_from("=HH", data, off + 20)
            if atype & 0x3FFF == 1 and 4 <= alen <= event.length - 20:
                return nfnl.cstr(data, off + 24, alen - 4)
        for atype, aoff, alen in nfnl.attrs(data, off + 20, off + event.length):
            if atype == 1:
                return nfnl.cstr(data, aoff, alen)
        return ""

    def expect(self, rules: dict[int, tuple[str | None, bytes, bytes]]) -> None:
        """The rules vnetd's batch just added, by request sequence number: their
        notifications take the tag and fingerprint vnetd computed for what it sent.

        The kernel announces a new rule with the sequence number of the request that
        made it; canonicalising 10,000 rules a second time, from the kernel's copy,
        would double the cost of a large commit. That the kernel's copy of a rule has
        the fingerprint vnetd computes for it is what the differential tests prove,
        rule form by rule form; every rule read in a dump, and every rule another
        writer adds, is fingerprinted from the kernel's bytes.
        """
        self._expected = rules

    def _apply(self, transaction: Iterable[tuple[nfnl.Event, str]], gen: int) -> None:
        """Apply one complete transaction (generation ``gen``) to the parts older than it:
        tables and chains, and each table's rules (see reload)."""
        waiting: dict[int, list[tuple[CachedChain, CachedRule]]] = {}  # rules placed after a rule to come
        own = self.sock.portid
        expected = self._expected
        touched: dict[int, tuple[str, CachedChain]] = {}
        for (kind, flags, seq, pid, data, off, length), key in transaction:
            if kind in (nfnl.NFT_MSG_NEWRULE, nfnl.NFT_MSG_DELRULE):
                msg = nfnl.decode_rule(data, off, length)
                chain_of = self._rules_of(key, msg, gen)
                if chain_of is None:
                    continue
                chain = chain_of
            if kind == nfnl.NFT_MSG_DELRULE:
                self._remove(chain, msg.handle)
                touched[id(chain)] = (key, chain)
            elif kind == nfnl.NFT_MSG_NEWRULE:
                known = expected.get(seq) if pid == own else None
                if known is not None:
                    rule = CachedRule(msg.handle, msg.exprs, msg.udata, known[0], known[1], known[2])
                else:
                    rule = self._rule(msg, self.tables[key].family)
                touched[id(chain)] = (key, chain)
                if msg.position is None:
                    self._insert(chain, len(chain.rules) if flags & nfnl.NLM_F_APPEND else 0, rule, waiting)
                    continue
                i = self._index(chain, msg.position)
                if i is None:
                    waiting.setdefault(msg.position, []).append((chain, rule))
                else:
                    self._insert(chain, i + 1, rule, waiting)
            elif kind == nfnl.NFT_MSG_NEWCHAIN:
                c = nfnl.decode_chain(data, off, length)
                table = self.tables.get(key)
                if table is None:
                    raise Unplaceable(f"chain {c.name} of unknown table {key}")
                old = next((x for x in table.chains.values() if x.handle == c.handle), None)
                if old is not None and old.name != c.name:  # renamed
                    if id(old) in self._ahead and not _newer(gen, old.rules_gen):
                        # its rules were read by its name after it lost it: another chain's, maybe
                        raise Unplaceable(f"chain {old.name} renamed before its rules were read")
                    del table.chains[old.name]
                    old.name = c.name
                if old is None:  # new: its rules come in this transaction and the next ones
                    old = CachedChain(c.name, c.handle, c.hooknum, c.priority, c.policy, c.chain_type,
                                      rules_gen=gen)
                else:
                    old.hooknum, old.priority, old.chain_type = c.hooknum, c.priority, c.chain_type
                    old.policy = c.policy
                table.chains[c.name] = old
                self._touch(key, old)
            elif kind == nfnl.NFT_MSG_DELCHAIN:
                c = nfnl.decode_chain(data, off, length)
                table = self.tables.get(key)
                if table is not None:
                    table.chains.pop(c.name, None)
                    self.dirty.add(key)
            elif kind == nfnl.NFT_MSG_NEWTABLE:
                t = nfnl.decode_table(data, off, length)
                # older than this transaction: its rules (if any) come in it
                self.tables.setdefault(key, CachedTable(t.name, family=nfnl.FAMILY_OF[t.family]))
                self.dirty.add(key)
            elif kind == nfnl.NFT_MSG_DELTABLE:
                self.tables.pop(key, None)
                self.dirty.add(key)
        for table_name, chain in touched.values():
            self._touch(table_name, chain)
        if waiting:
            raise Unplaceable("a new rule's position names a rule that never came")
        self.struct_gen = gen
        for ident in [i for i, chain in self._ahead.items() if not _newer(chain.rules_gen, gen)]:
            del self._ahead[ident]  # caught up with

    def _rules_of(self, key: str, msg: nfnl.RuleMsg, gen: int) -> CachedChain | None:
        """The chain a rule notification changes, or None if it is held unread or its
        rules were read at ``gen`` or later (a transaction newer than the mirror's
        generation: the tables and chains are older, see reload)."""
        table = self.tables.get(key)
        if table is None:
            raise Unplaceable(f"rule in unknown table {key}")
        chain = table.chains.get(msg.chain)
        if chain is None:
            raise Unplaceable(f"rule in unknown chain {key}/{msg.chain}")
        if chain.unread:
            self.dirty.add(key)
            return None
        if id(chain) in self._ahead and not _newer(gen, chain.rules_gen):
            return None
        return chain

    def _touch(self, table: str, chain: CachedChain) -> None:
        chain.version = self._next_version()
        self.dirty.add(table)

    def _index(self, chain: CachedChain, handle: int) -> int | None:
        rule = chain.by_handle.get(handle)
        if rule is None:
            return None
        rules = chain.rules
        # the common case first: right after the rule placed last (a transaction adding
        # many rules in a row); otherwise a scan by identity (C speed)
        hint = self._hint
        if hint is not None and hint[0] is chain and hint[1] < len(rules) and rules[hint[1]] is rule:
            return hint[1]
        if rules and rules[-1] is rule:
            return len(rules) - 1
        return rules.index(rule)

    def _remove(self, chain: CachedChain, handle: int) -> None:
        i = self._index(chain, handle)
        if i is not None:
            chain.delete_at(i)
            del chain.by_handle[handle]

    def _insert(self, chain: CachedChain, at: int, rule: CachedRule,
                waiting: dict[int, list[tuple[CachedChain, CachedRule]]]) -> None:
        chain.insert_rule(at, rule)
        chain.by_handle[rule.handle] = rule
        self._hint = (chain, at)
        for follower_chain, follower in waiting.pop(rule.handle, []):
            if follower_chain is not chain:
                raise Unplaceable("a rule placed after a rule of another chain")
            self._insert(chain, at + 1, follower, waiting)

    def mark_seen(self, family: int | None = None) -> None:
        """The owner of a family's tables (None: of both) has looked at them."""
        if family is None:
            self.dirty.clear()
        else:
            self.dirty = {key for key in self.dirty if split_table_key(key)[0] != family}

    def take_foreign(self, family: int | None = None) -> bool:
        """Whether another writer changed a table of the family (None: of either) since the
        last call for it."""
        families = set(self.fps) if family is None else {family}
        foreign = bool(self.foreign & families)
        self.foreign -= families
        return foreign
