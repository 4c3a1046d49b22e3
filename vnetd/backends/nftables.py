# SPDX-License-Identifier: MIT
"""The iptables-nft backend: vnetd's rules in the nf_tables tables iptables-nft uses.

Same state files, same rule language, same contract as the legacy backend
(``backends/firewall.py``), written where a modern host's ``iptables`` and
``ip6tables`` read: ``table ip filter|nat|mangle|raw|security`` for the
``firewall:`` chains, ``table ip6 ...`` for the ``firewall6:`` chains. As the legacy
backend, one instance serves one address family (``NftFirewallBackend(4)``,
``NftFirewallBackend(6)``, behind ``backends.firewall.FirewallFamilies``); both
instances of a namespace share one ``NftSession`` (the sockets and the mirror of
both families' tables: nf_tables has one generation id and one notification group
for every family). Each rule is compiled by vnetd's
libxtables driver (``xtables.py``) and stored as iptables-nft 1.8.9 stores the
same words (``nftcompat.py``), so ``iptables-nft-save`` (``ip6tables-nft-save``)
prints it as it prints ``iptables-nft -A`` of those words, plus ``-m comment --comment vnetd:<hash>``:
vnetd's tag lives in the rule's user data, where iptables-nft keeps comments.
A chain vnetd owns starts with the owner mark, a rule with only a counter and
the ``vnetd:owned-chain`` comment.

Reading: ``nftcache.Mirror`` holds the tables (one dump each, then the kernel's
notifications). "Changed since?" is one generation-id request. Writing: one
nf_tables transaction per ``apply``, rules placed by handle (before the first
foreign rule kept below vnetd's, or appended), the batch guarded by the
generation id the mirror was read at, so a concurrent writer's rule is never
lost: the kernel refuses the batch whole (ERESTART), vnetd catches up and
builds it again. The kernel reports each refused message; those actions fail
with its reason, and the others are committed again without them.

Tables and chains are created as iptables-nft creates them when it needs them:
the table, then only the built-in chains used, with iptables' hook, priority
and type and an ACCEPT policy. Chains, rules and tables of others (Docker's,
libvirt's, firewalld's ``inet firewalld``, any native nft table) are never
written; nothing but vnetd's tagged rules is deleted, except in ``exclusive``
chains.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from vnetd.backends import nfnl
from vnetd.backends.firewall import FamilyChains
from vnetd.backends.nftcache import IPTABLES_TABLES, CachedChain, CachedRule, CachedTable, Mirror
from vnetd.backends.nftcompat import HEADERS, CannotEncode, NftRule, encode, to_entry
from vnetd.backends.nftexpr import NFTA_IMMEDIATE_DATA, Fingerprinter, data_verdict, fields, split
from vnetd.backends.xtables import (
    XT_ENTRY_HEADER,
    CompiledRule,
    RuleCompileError,
    RuleCompiler,
    declared_texts,
    render_entry,
    shared_compiler,
)
from vnetd.errors import BackendError
from vnetd.model.checkpoint import ChainRecord
from vnetd.model.firewall import (
    BUILTIN_CHAINS,
    KEY_SIZE,
    OWNER_MARK,
    TAG_PREFIX,
    ChainMode,
    ChainSpec,
    ObservedChain,
    ObservedRule,
    ObservedTable,
    Rule,
    RuleId,
    RuleKey,
    ShownChain,
    ShownRule,
    ShownTable,
    common_prefix,
    common_suffix,
    rule_key,
    split_table_key,
    table_key,
)
from vnetd.plan.actions import Action, PruneChain, RestoreChain, SetPolicy, SyncChain
from vnetd.plan.firewall import in_commit_order, owner_key

if TYPE_CHECKING:
    from vnetd.backends.firewall import FirewallBackend as FirewallSeam

NF_INET_PRE_ROUTING, NF_INET_LOCAL_IN, NF_INET_FORWARD, NF_INET_LOCAL_OUT, NF_INET_POST_ROUTING = 0, 1, 2, 3, 4

#: table -> built-in chain -> (hook, priority, type), as iptables-nft 1.8.9 creates them
HOOKS: dict[str, dict[str, tuple[int, int, str]]] = {
    "filter": {"INPUT": (NF_INET_LOCAL_IN, 0, "filter"), "FORWARD": (NF_INET_FORWARD, 0, "filter"),
               "OUTPUT": (NF_INET_LOCAL_OUT, 0, "filter")},
    "nat": {"PREROUTING": (NF_INET_PRE_ROUTING, -100, "nat"), "INPUT": (NF_INET_LOCAL_IN, 100, "nat"),
            "OUTPUT": (NF_INET_LOCAL_OUT, -100, "nat"), "POSTROUTING": (NF_INET_POST_ROUTING, 100, "nat")},
    "mangle": {"PREROUTING": (NF_INET_PRE_ROUTING, -150, "filter"), "INPUT": (NF_INET_LOCAL_IN, -150, "filter"),
               "FORWARD": (NF_INET_FORWARD, -150, "filter"), "OUTPUT": (NF_INET_LOCAL_OUT, -150, "route"),
               "POSTROUTING": (NF_INET_POST_ROUTING, -150, "filter")},
    "raw": {"PREROUTING": (NF_INET_PRE_ROUTING, -300, "filter"), "OUTPUT": (NF_INET_LOCAL_OUT, -300, "filter")},
    "security": {"INPUT": (NF_INET_LOCAL_IN, 150, "filter"), "FORWARD": (NF_INET_FORWARD, 150, "filter"),
                 "OUTPUT": (NF_INET_LOCAL_OUT, 150, "filter")},
}
POLICY_NAMES = {nfnl.NF_ACCEPT: "ACCEPT", nfnl.NF_DROP: "DROP"}
POLICY_CODES = {"ACCEPT": nfnl.NF_ACCEPT, "DROP": nfnl.NF_DROP}
#: Foreign rules are rendered as text (for plan output) in declared chains up to this size.
RENDER_LIMIT = 200
#: Batches refused because the ruleset changed meanwhile, before giving up
RESTARTS = 20
#: seconds between two tries at the chains the mirror holds unread (see Mirror.reload)
UNREAD_RETRY = 1.0


@dataclass(frozen=True, slots=True)
class Declared:
    """A declared rule (or the owner mark) as vnetd writes it: one kernel rule per entry,
    its fingerprint and the body of its NFT_MSG_NEWRULE (expressions, compat, tag)."""

    tag: str
    rules: tuple[NftRule, ...]
    fingerprints: tuple[bytes, ...]
    bodies: tuple[bytes, ...]


F = TypeVar("F", bound=Callable[..., Any])


def _kernel_errors(method: F) -> F:
    """Netlink failures leave the backend as BackendError (what the engine handles)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except OSError as exc:
            raise BackendError("nftables", "firewall", f"nf_tables: {exc.strerror or exc}", exc.errno or None
                               ) from exc

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Compiling and writing thousands of rules makes objects that live on and no
    reference cycles; meanwhile the cyclic collector would walk every live object
    again and again (10-20 % of a 10,000-rule apply). It is paused for that while."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _policy_name(policy: int | None) -> str | None:
    if policy is None:
        return None
    return POLICY_NAMES.get(policy, f"verdict{policy}")


def render_rule(exprs: bytes, family: int = 4) -> str:
    """A rule as iptables-nft-save (``family`` 6: ip6tables-nft-save) prints it (without
    ``-A CHAIN`` and vnetd's tag)."""
    try:
        got = to_entry(exprs, family)
    except (ValueError, struct.error, IndexError):  # malformed expressions from another writer
        got = None
    if got is None:
        names = " ".join(name for name, _data in split(exprs))
        what = "an ip6tables" if family == 6 else "an iptables"
        return f"(not {what} rule: {names})"
    return render_entry(*got, family=family)


def _jump_target(exprs: bytes) -> str | None:
    for name, data in split(exprs):
        if name == "immediate":
            v = data_verdict(fields(data).get(NFTA_IMMEDIATE_DATA))
            if v is not None and v[1]:
                return v[1]
    return None


class NftSession:
    """What the backends of both families share in one network namespace: the request
    socket, the event socket, and the mirror of the iptables and ip6tables tables (one
    fingerprinter per family). nf_tables has one generation id per namespace and one
    notification group for every family: one event socket, one "changed?" request and
    one parse of each notification serve both families.

    ``shared()`` gives the process's session of the current namespace (made on first
    use, closed when its last backend is); a test that wants a second, independent
    view of the kernel makes its own."""

    _shared: dict[tuple[int, int, int], NftSession] = {}

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.sock = nfnl.NftSocket()
        try:
            self.events = nfnl.NftEvents()
        except OSError:
            self.sock.close()
            raise
        self.fingerprinters = {4: Fingerprinter(), 6: Fingerprinter()}
        self.mirror = Mirror(self.sock, self.events, self.fingerprinters, clock)
        self.users = 0
        self._key: tuple[int, int, int] | None = None

    @classmethod
    def shared(cls, clock: Callable[[], float] = time.monotonic) -> NftSession:
        """The session of this process in its current network namespace (sockets belong
        to the namespace they were made in; a forked child makes its own)."""
        st = os.stat("/proc/self/ns/net")
        key = (os.getpid(), st.st_dev, st.st_ino)
        session = cls._shared.get(key)
        if session is None:
            session = cls._shared[key] = cls(clock)
            session._key = key
        return session

    def acquire(self) -> None:
        self.users += 1

    def release(self) -> None:
        """A backend is done with the session; the last one closes it."""
        self.users -= 1
        if self.users <= 0:
            self.close()

    def close(self) -> None:
        if self._key is not None and NftSession._shared.get(self._key) is self:
            del NftSession._shared[self._key]
        self.events.close()
        self.sock.close()


class NftFirewallBackend:
    """``backends.firewall.FirewallBackend`` over nf_tables, as iptables-nft (``family``
    4) or ip6tables-nft (``family`` 6) writes it. Its sockets and mirror belong to the
    network namespace it was made in (``NftSession``, shared by the two families unless
    ``session`` gives one).

    It takes the chains of every family and keeps to its own (``ChainSpec.family``);
    tables are named by their key (``filter``, ``ip6 filter``) as by the legacy backend."""

    name = "iptables-nft"

    def __init__(self, family: int = 4, clock: Any = time.monotonic, session: NftSession | None = None) -> None:
        if family not in nfnl.NFPROTO:
            raise ValueError(f"no such address family: {family!r}")
        self.family = family
        self.nfproto = nfnl.NFPROTO[family]
        self._session = session if session is not None else NftSession.shared(clock)
        self._session.acquire()
        self._sock = self._session.sock
        self._events = self._session.events
        self._fp = self._session.fingerprinters[family]
        self._mirror = self._session.mirror
        #: this family's chains of the desired state (see FamilyChains)
        self.mine = FamilyChains(family)
        self._compiler: RuleCompiler | None = None
        self._declared: dict[str, Declared] = {}
        self._declared_for: tuple[ChainSpec, ...] | None = None
        self._wanted: dict[tuple[str, str, bool], Wanted] = {}
        #: tag -> the compiled rule, the fingerprinter version and what was made of it (kept
        #: across desired states: a reload re-encodes only the rules that changed)
        self._encoded: dict[str, tuple[CompiledRule, int, Declared]] = {}
        self._ids: dict[RuleKey, RuleId] = {}
        self._tag_of: dict[RuleKey, str] = {}
        self._observed_gen: int | None = None
        #: (table key, chain) -> (chain version, render, view, foreign rules shown with their text)
        self._views: dict[tuple[str, str], tuple[int, bool, ObservedChain, int]] = {}
        self.lock_waits = 0.0
        self.restarts = 0
        self._clock = clock
        self._unread_tried = float("-inf")

    def close(self) -> None:
        if self._session is not None:
            self._session.release()
            self._session = None  # type: ignore[assignment]

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

    def _my_tables(self) -> Iterable[CachedTable]:
        return [t for t in self._mirror.tables.values() if t.family == self.family]

    @staticmethod
    def cannot_write(compiled: CompiledRule) -> str | None:
        """Why a compiled rule cannot be written into nf_tables as iptables-nft writes it
        (``-j QUEUE``: iptables-nft cannot either); None when it can (backends.firewall)."""
        for entry in compiled.entries:
            try:
                encode(entry, compiled.target_name, compiled.goto, skip_matches=1, family=compiled.family)
            except CannotEncode as exc:
                return str(exc)
        return None

    @property
    def compiler(self) -> RuleCompiler:
        if self._compiler is None:
            self._compiler = shared_compiler()
        return self._compiler

    # -- declared rules --------------------------------------------------------------

    def _learn(self, compiled: CompiledRule, rule: NftRule) -> None:
        """Remember how much of each extension's blob userspace owns (the rest is the kernel's)."""
        for (kind, xt_name, rev, length), usersize in zip(rule.segments, compiled.usersizes, strict=False):
            if usersize - XT_ENTRY_HEADER < length:
                self._fp.learn(kind, xt_name, rev, length, usersize - XT_ENTRY_HEADER)

    def _encode(self, compiled: CompiledRule, resource: str, text: str) -> tuple[NftRule, ...]:
        rules = []
        for entry in compiled.entries:
            try:
                # the compiled entry carries the tag as its last match: it goes to the user data
                rules.append(encode(entry, compiled.target_name, compiled.goto, skip_matches=1, family=self.family))
            except CannotEncode as exc:
                raise BackendError("nftables", resource, f"cannot write {text!r}: {exc}") from exc
        self._learn(compiled, rules[0])
        return tuple(rules)

    def _declare(self, tag: str, rules: tuple[NftRule, ...]) -> Declared:
        udata = nfnl.udata_comment(tag)
        return Declared(tag, rules, tuple(self._fp.of_elements(r.elements) for r in rules),
                        tuple(nfnl.rule_body(r.exprs, (r.proto, r.proto_inverted), udata) for r in rules))

    @_kernel_errors
    def compile_all(self, chains: Iterable[ChainSpec]) -> dict[str, Declared]:
        """Every declared rule compiled and encoded, by tag (plus the owner mark); cached
        per desired state, and per rule across desired states."""
        chains = self.mine(tuple(chains) if not isinstance(chains, tuple) else chains)
        if self._declared_for is chains:
            return self._declared
        with _collector_paused():
            return self._compile_all(chains)

    def _compile_all(self, chains: tuple[ChainSpec, ...]) -> dict[str, Declared]:
        mirror = self._mirror
        if not mirror.valid:
            mirror.sync()
        encoded = self._encoded
        pending: list[tuple[CompiledRule, tuple[NftRule, ...]]] = []
        tag_of: dict[RuleKey, str] = {}
        compile_rule = self.compiler.compile
        for chain in chains:
            known_table = mirror.tables.get(chain.table_key)
            existing = set(known_table.chains) if known_table is not None else set()
            jumpable = {c.name for c in chains if c.table == chain.table and not c.builtin} | existing
            for rule in chain.all_rules:
                try:
                    c = compile_rule(chain, rule, jumpable)
                except RuleCompileError as exc:
                    raise BackendError("nftables", chain.resource, f"cannot compile {rule.text!r}: {exc}") from exc
                tag_of[chain.key(rule)] = c.tag
                known = encoded.get(c.tag)
                rules = known[2].rules if known is not None and known[0] is c else self._encode(c, chain.resource,
                                                                                                 rule.text)
                pending.append((c, rules))
        declared: dict[str, Declared] = {}
        version = self._fp.version  # every usersize is known now: fingerprints are final
        for c, rules in pending:
            known = encoded.get(c.tag)
            if known is not None and known[0] is c and known[1] == version:
                declared[c.tag] = known[2]  # the same rule as in the last desired state
            else:
                declared[c.tag] = self._declare(c.tag, rules)
        self._encoded = {c.tag: (c, version, declared[c.tag]) for c, _rules in pending}
        mark = NftRule(encode_owner_mark(), 0, False, (encode_owner_mark(),))
        declared[OWNER_MARK] = self._declare(OWNER_MARK, (mark,))
        tag_of[owner_key(self.family)] = OWNER_MARK
        self._declared = declared
        self._declared_for = chains
        self._wanted = {}
        self._tag_of = tag_of
        self._ids = {key: RuleId(tag, declared[tag].fingerprints) for key, tag in tag_of.items()}
        return declared

    def rule_ids(self, chains: Iterable[ChainSpec]) -> dict[RuleKey, RuleId]:
        self.compile_all(chains)
        return self._ids

    # -- reading ---------------------------------------------------------------------

    @_kernel_errors
    def tables_to_read(self, chains: Iterable[ChainSpec]) -> list[str]:
        """Keys of the declared tables of this family and of every table of it that exists."""
        mirror = self._mirror
        if not mirror.valid:
            mirror.sync()
        names = {c.table for c in self.mine(chains)} | {t.name for t in self._my_tables() if t.name in BUILTIN_CHAINS}
        return [self._key(name) for name in sorted(names)]

    @_kernel_errors
    def has_vnetd_rules(self) -> bool:
        """True also when a chain is held unread (it may hold some)."""
        self._mirror.sync()
        return any(chain.unread or any(rule.ours for rule in chain.rules)
                   for table in self._my_tables() for chain in table.chains.values())

    @_kernel_errors
    def observe(self, chains: Iterable[ChainSpec]) -> dict[str, ObservedTable]:
        """This family's tables, by table key."""
        chains = self.mine(tuple(chains) if not isinstance(chains, tuple) else chains)
        self.compile_all(chains)  # learns usersizes before the mirror fingerprints anything
        mirror = self._mirror
        gen = self._sync_with([(c.table_key, c.name) for c in chains])
        observed: dict[str, ObservedTable] = {}
        declared_tables = {c.table for c in chains}
        for table_name in self._tables_of(self.tables_to_read(chains)):
            key = self._key(table_name)
            render = {c.name for c in chains if c.table == table_name}
            table = mirror.tables.get(key)
            views: dict[str, ObservedChain] = {}
            if table is not None:
                for chain in table.chains.values():
                    views[chain.name] = self._view(key, chain, chain.name in render)
            for name in HOOKS.get(table_name, {}):
                # built-in chains iptables-nft has not created yet read as empty, policy ACCEPT
                # (iptables-nft-save shows them so); a missing table likewise
                if name not in views and (table is not None or table_name in declared_tables):
                    views[name] = ObservedChain(name, True, "ACCEPT", ())
            if table is not None or views:
                observed[key] = ObservedTable(table_name, views, self.family)
        self._observed_gen = gen
        mirror.mark_seen(self.family)
        for view_key in [k for k in self._views if k[0] in observed and k[1] not in observed[k[0]].chains]:
            del self._views[view_key]
        return observed

    def _sync_with(self, keys: Iterable[tuple[str, str]], retry: bool = True) -> int:
        """The mirror brought up to date, with the rules of the chains ``keys`` (table key,
        chain) read whatever it takes (NftError when they keep changing for the whole
        budget); the other chains held unread are tried again now and then (``retry``)."""
        mirror = self._mirror
        gen = mirror.sync()
        read = mirror.require(keys)
        if retry and mirror.unread(self.family) and self._clock() - self._unread_tried >= UNREAD_RETRY:
            self._unread_tried = self._clock()
            read = mirror.retry_unread() or read
        return mirror.sync() if read else gen

    def _view(self, table: str, chain: CachedChain, render: bool) -> ObservedChain:
        """A chain as the planner sees it (``table``: its key). Made again from the last
        view of the chain where it still holds: the rules that changed (found by their
        keys, at memcmp speed) are looked at, the others taken as they were."""
        key = (table, chain.name)
        cached = self._views.get(key)
        if cached is not None and cached[0] == chain.version and cached[1] == render:
            return cached[2]
        keys = chain.keys()
        cached_rules = chain.rules
        view: ObservedChain | None = None
        if cached is not None and cached[1] == render and cached[3] < RENDER_LIMIT and cached[2].keys is not None:
            old, old_keys = cached[2], cached[2].keys
            k = common_prefix(old_keys, keys)
            s = common_suffix(old_keys, keys, k)
            gone = sum(1 for r in old.rules[k : len(old.rules) - s] if r.text is not None)
            middle, shown = self._rule_views(cached_rules[k : len(cached_rules) - s], render, RENDER_LIMIT)
            total = cached[3] - gone + shown
            if total < RENDER_LIMIT:  # every foreign rule shown with its text, as a rebuild would
                view = ObservedChain(chain.name, chain.base, _policy_name(chain.policy) if chain.base else None,
                                     old.rules[:k] + tuple(middle) + old.rules[len(old.rules) - s :], keys)
        if view is None:
            rules, total = self._rule_views(cached_rules, render, RENDER_LIMIT)
            view = ObservedChain(chain.name, chain.base, _policy_name(chain.policy) if chain.base else None,
                                 tuple(rules), keys)
        self._views[key] = (chain.version, render, view, total)
        return view

    def _rule_views(self, cached_rules: list[CachedRule], render: bool, limit: int) -> tuple[list[ObservedRule], int]:
        """Each kernel rule's view (made once per rule), and how many are shown with their
        text: foreign rules of a chain vnetd renders, up to ``limit``."""
        # one pass takes the views made before, a second one fills in the others, in order
        rules: list[ObservedRule | None] = [r.plain if r.tag is not None or not render else None
                                            for r in cached_rules]
        rendered = 0
        for index in [i for i, view in enumerate(rules) if view is None]:
            rule = cached_rules[index]
            if rule.tag is None and render and rendered < limit:
                rendered += 1
                if rule.shown is None:
                    rule.shown = ObservedRule(None, rule.fingerprint, render_rule(rule.exprs, self.family))
                rules[index] = rule.shown
                continue
            if rule.plain is None:
                rule.plain = ObservedRule(rule.tag, rule.fingerprint)
            rules[index] = rule.plain
        return rules, rendered  # type: ignore[return-value]  # no None left

    @_kernel_errors
    def changed(self, tables: Iterable[str]) -> list[str]:
        """Keys of this family's tables (among ``tables``) changed since the last observe:
        one GETGEN when nothing was committed."""
        keys = [self._key(t) for t in self._tables_of(tables)]
        if self._observed_gen is None:
            return keys  # never observed: everything is news
        if self._sock.getgen() == self._observed_gen:
            return []  # no transaction committed since: nothing changed (counters do not count)
        mirror = self._mirror
        gen = mirror.sync()
        out = [k for k in keys if k in mirror.dirty]
        if not any(split_table_key(k)[0] == self.family for k in mirror.dirty):
            self._observed_gen = gen  # committed, but nothing of this family: as observed
        return out

    def event_fileno(self) -> int | None:
        return self._events.fileno()

    def drain_events(self) -> bool:
        """Apply waiting notifications; True if another writer changed a table of this
        family (or notifications were lost: then the next read is a full one). Never raises."""
        try:
            self._mirror.pump()
        except (OSError, ValueError, struct.error, KeyError):
            self._mirror.valid = False  # whatever went wrong, the next read is a full one
            self._mirror.foreign.update(nfnl.FAMILY_OF.values())
        return self._mirror.take_foreign(self.family)

    # -- writing ---------------------------------------------------------------------

    def apply(self, actions: Sequence[Action]) -> list[tuple[Action, BackendError | None]]:
        """One nf_tables transaction for all the actions, guarded by the generation id."""
        with _collector_paused():
            return self._apply(actions)

    @staticmethod
    def _may_go_unguarded(batch: _Batch) -> bool:
        """False if the batch deletes a chain or a table (the kernel deletes a chain with
        its rules) or replaces a rule in place (adopting another's rule: had its owner
        just changed it, the change would be overwritten): such a batch is only ever
        sent guarded."""
        return not any(m.mtype in (nfnl.NFT_MSG_DELCHAIN, nfnl.NFT_MSG_DELTABLE)
                       or (m.mtype == nfnl.NFT_MSG_NEWRULE and m.flags & nfnl.NLM_F_REPLACE)
                       for m in batch.messages)

    def _footprint(self, keys: Sequence[tuple[str, str]]) -> tuple[object, ...]:
        """What a batch was built from: each chain it writes (which one, its version)."""
        tables = self._mirror.tables
        out: list[object] = []
        for key, name in keys:
            table = tables.get(key)
            chain = table.chains.get(name) if table is not None else None
            out.append((key, name, table is not None, id(chain) if chain else None, chain.version if chain else None))
        return tuple(out)

    def _apply(self, actions: Sequence[Action]) -> list[tuple[Action, BackendError | None]]:
        """The batch is guarded by the generation its view was read at. Refused because
        something was committed meanwhile, it is built again from the view brought up to
        date; if what was committed changed none of the chains it writes (another writer
        busy elsewhere, which may commit faster than a guarded batch can ever be sent),
        it is sent unguarded: every message names its rules by handle and its chains by
        name, so the kernel still refuses, message by message, what a change in the
        moment between the view and the commit made wrong (a rule gone, a chain made or
        deleted), and a rule another writer added meanwhile stays where it went, as if
        added right after. A batch deleting a chain or a table, or replacing a rule, is
        always guarded."""
        pending = list(actions)
        results: dict[int, BackendError | None] = {}
        unguarded = False
        for _attempt in range(RESTARTS):
            if not pending:
                break
            try:
                gen = self._sync_with(_written(pending), retry=False)
            except OSError as exc:
                err = BackendError("nftables", "firewall", f"cannot read the ruleset: {exc.strerror or exc}",
                                   exc.errno or None)
                for a in pending:
                    results[id(a)] = err
                pending = []
                break
            batch = _Batch(self._mirror, self.family, self._declared, self._tag_of, self._wanted)
            batch.create_restored_chains(pending)
            for action in in_commit_order(pending):
                error = batch.add(action)
                if error is not None:
                    results[id(action)] = error
            pending = [a for a in pending if id(a) not in results]
            batch.drop_emptied_tables(self._sock)
            if not batch.messages:
                for a in pending:
                    results[id(a)] = None
                pending = []
                break
            keys = _written(pending)  # (those whose actions the batch holds)
            footprint = self._footprint(keys) if self._may_go_unguarded(batch) else None
            try:
                outcome = self._sock.batch(batch.messages, None if unguarded and footprint is not None else gen)
            except nfnl.BatchRestart:
                self.restarts += 1
                unguarded = footprint is not None and self._unchanged(footprint, keys)
                continue
            except OSError as exc:
                err = BackendError("nftables", "firewall", f"cannot send the transaction: {exc}", exc.errno)
                for a in pending:
                    results[id(a)] = err
                pending = []
                break
            if not outcome.errors:
                for a in pending:
                    results[id(a)] = None
                pending = []
                self._mirror.expect({outcome.first_seq + i: known for i, known in batch.added.items()})
                self._mirror.pump()
                break
            pending = self._blame(batch, outcome.errors, pending, results)
        for a in pending:
            results[id(a)] = BackendError("nftables", a.resource, "the ruleset kept changing under vnetd",
                                          errno.EAGAIN)
        return [(a, results.get(id(a))) for a in actions]

    def _unchanged(self, footprint: tuple[object, ...], keys: Sequence[tuple[str, str]]) -> bool:
        """After a refused batch: whether the chains it writes are as it was built from
        (the mirror brought up to date)."""
        try:
            self._mirror.sync()
        except OSError:
            return False
        return self._mirror.valid and footprint == self._footprint(keys)

    def _blame(self, batch: _Batch, errors: Mapping[int, tuple[int, str | None]], pending: list[Action],
               results: dict[int, BackendError | None]) -> list[Action]:
        """Fail the actions whose messages the kernel refused; the rest is tried again."""
        if -1 in errors:  # the commit as a whole failed: try the actions one by one
            code, message = errors[-1]
            if len(pending) == 1:
                results[id(pending[0])] = BackendError("nftables", pending[0].resource,
                                                       f"the kernel refused the transaction: {message or ''}".strip(),
                                                       code)
                return []
            for action in pending:
                for a, err in self.apply([action]):
                    results[id(a)] = err
            return []
        failed = []
        for index, (code, message) in sorted(errors.items()):
            owner = batch.owners[index]
            if owner is not None and id(owner) not in results:
                what = batch.describe[index]
                if what.startswith(TAG_PREFIX):
                    what = f"rule {what}"
                reason = f": {message}" if message else ""
                results[id(owner)] = BackendError("nftables", owner.resource,
                                                  f"the kernel refused {what}{reason}", code)
                failed.append(owner)
        if not failed:  # refused messages that belong to no action (should not happen)
            for a in pending:
                results[id(a)] = BackendError("nftables", a.resource, "the kernel refused the transaction")
            return []
        return [a for a in pending if id(a) not in results]

    # -- checkpoints -----------------------------------------------------------------

    @_kernel_errors
    def record_chains(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], ChainRecord]:
        """The chains as they are now, for a checkpoint (model.checkpoint): each rule as
        the body of the NFT_MSG_NEWRULE that puts it back (expressions, user data with its
        comment or vnetd's tag, compat info as iptables-nft sets it). ``keys``: (table
        key, chain); keys of the other family are left out."""
        mirror = self._mirror
        keys = list(keys)
        self._sync_with([(key, name) for key, name in keys if split_table_key(key)[0] == self.family], retry=False)
        out: dict[tuple[str, str], ChainRecord] = {}
        for key, name in keys:
            family, table = split_table_key(key)
            if family != self.family:
                continue
            t = mirror.tables.get(key)
            chain = t.chains.get(name) if t is not None else None
            if chain is None:
                out[(key, name)] = ChainRecord(self.name, table, name, False, name in HOOKS.get(table, {}),
                                               family=self.family)
                continue
            entries = tuple((restorable_body(rule, self.family), None) for rule in chain.rules)
            out[(key, name)] = ChainRecord(self.name, table, name, True, chain.base,
                                           _policy_name(chain.policy) if chain.base else None, entries, self.family)
        return out

    # -- show ------------------------------------------------------------------------

    @_kernel_errors
    def show(self, chains: Iterable[ChainSpec]) -> tuple[ShownTable, ...]:
        """This family's iptables-nft tables, rule by rule: vnetd's (declared texts where
        known) and everyone else's (as iptables-nft-save / ip6tables-nft-save print them)."""
        texts = declared_texts(self.mine(tuple(chains) if not isinstance(chains, tuple) else chains))
        mirror = self._mirror
        mirror.sync()
        self._sync_with(mirror.unread(self.family), retry=False)  # every chain, whole
        tables = []
        for table in self._my_tables():
            table_name = table.name
            shown = []
            for chain in table.chains.values():
                rules: list[ShownRule] = []
                last: str | None = None
                owned = False
                for rule in chain.rules:
                    tag = rule.tag
                    if tag == OWNER_MARK:
                        owned = True
                    elif tag is None:
                        rules.append(ShownRule(render_rule(rule.exprs, self.family), False))
                    elif not (tag in texts and last == tag):  # once per -s a,b rule
                        rules.append(ShownRule(texts.get(tag) or render_rule(rule.exprs, self.family), True))
                    last = tag
                shown.append(ShownChain(chain.name, chain.base, _policy_name(chain.policy) if chain.base else None,
                                        owned, tuple(rules)))
            tables.append(ShownTable(table_name, tuple(shown), self.family))
        return tuple(tables)


def restorable_body(rule: CachedRule, family: int = 4) -> bytes:
    """A kernel rule as the body of the message that adds it again. The kernel does not
    report a rule's compat info (the ``-p`` protocol xt matches are checked against):
    it is read back from the expressions, as iptables-nft reads them; a native nft rule
    (no iptables spelling) has none, and needs none."""
    try:
        got = to_entry(rule.exprs, family)
    except (ValueError, struct.error, IndexError):
        got = None
    compat = HEADERS[family].proto_of(got[0]) if got is not None else None
    return nfnl.rule_body(rule.exprs, compat, rule.udata)


def encode_owner_mark() -> bytes:
    """The owner mark's expressions: only the counter iptables-nft adds to every rule
    (``iptables-nft -A CHAIN -m comment --comment vnetd:owned-chain`` minus the comment
    match, which vnetd keeps in the user data)."""
    from vnetd.backends.nftexpr import counter

    return counter()


@dataclass(frozen=True, slots=True)
class Wanted:
    """What a chain must start with (or hold), for one declaration: kept across passes."""

    rules: tuple[Rule, ...]  # the declaration it was made for (compared by identity)
    items: list[tuple[str, bytes, bytes, bytes]]  # tag, fingerprint, key, the rule message's body
    keys: bytes  # rule_key of each item, joined


class _Batch:
    """The messages of one transaction, built from the mirror's view of the tables."""

    def __init__(self, mirror: Mirror, family: int, declared: Mapping[str, Declared], tag_of: Mapping[RuleKey, str],
                 wanted: dict[tuple[str, str, bool], Wanted]
                 ) -> None:
        self.mirror = mirror
        self.family = family
        self.nfproto = nfnl.NFPROTO[family]
        self.ip = "ip6" if family == 6 else "ip"
        self.declared = declared
        self.tag_of = tag_of
        self.wanted = wanted
        self.messages: list[nfnl.Message] = []
        self.owners: list[Action | None] = []
        self.describe: list[str] = []
        self.new_tables: set[str] = set()
        self.new_chains: set[tuple[str, str]] = set()
        self.deleted: set[int] = set()  # handles deleted in this transaction
        #: table -> the restore that deleted chains of it which had not existed when recorded
        self.unrecorded: dict[str, Action] = {}
        self.deleted_chains: set[tuple[str, str]] = set()
        self.added: dict[int, tuple[str | None, bytes, bytes]] = {}  # message index -> tag, fingerprint, key

    def _emit(self, message: nfnl.Message, owner: Action, what: str) -> None:
        """Add a message; ``what`` names it in an error (a rule's tag, "the creation of ...")."""
        self.messages.append(message)
        self.owners.append(owner)
        self.describe.append(what)

    def _chain(self, table: str, name: str) -> CachedChain | None:
        t = self.mirror.tables.get(table_key(table, self.family))
        return t.chains.get(name) if t is not None else None

    def _ensure_table(self, table: str, owner: Action) -> None:
        if table_key(table, self.family) not in self.mirror.tables and table not in self.new_tables:
            self._emit(nfnl.new_table(table, self.nfproto), owner, f"the creation of table {self.ip} {table}")
            self.new_tables.add(table)

    def _ensure_base_chain(self, table: str, name: str, policy: int, owner: Action) -> bool:
        """Create a built-in chain iptables-nft would create; False if it existed."""
        if self._chain(table, name) is not None or (table, name) in self.new_chains:
            return False
        hook = HOOKS.get(table, {}).get(name)
        if hook is None:
            raise BackendError("nftables", owner.resource, f"{name} is not a built-in chain of the {table} table")
        self._ensure_table(table, owner)
        self._emit(nfnl.new_base_chain(table, name, hook[0], hook[1], hook[2], policy, self.nfproto), owner,
                   f"the creation of chain {name}")
        self.new_chains.add((table, name))
        return True

    def add(self, action: Action) -> BackendError | None:
        """Add an action's messages; an action that cannot be written leaves none."""
        mark = len(self.messages)
        try:
            self._add(action)
        except BackendError as exc:
            del self.messages[mark:], self.owners[mark:], self.describe[mark:]
            for index in [i for i in self.added if i >= mark]:
                del self.added[index]
            return exc
        return None

    def _add(self, action: Action) -> None:
        op = action.op
        if isinstance(op, SyncChain):
            self._sync(op, action)
        elif isinstance(op, SetPolicy):
            code = POLICY_CODES[op.policy]
            if not self._ensure_base_chain(op.table, op.chain, code, action):
                self._emit(nfnl.set_policy(op.table, op.chain, code, self.nfproto), action, f"policy {op.policy}")
        elif isinstance(op, PruneChain):
            self._prune(op, action)
        elif isinstance(op, RestoreChain):
            self._restore(op.record, action)

    def create_restored_chains(self, actions: Sequence[Action]) -> None:
        """Create the user chains restores fill, before any restored rule jumps to one."""
        for action in actions:
            op = action.op
            if isinstance(op, RestoreChain) and op.record.exists and not op.record.builtin \
                    and self._chain(op.table, op.chain) is None and (op.table, op.chain) not in self.new_chains:
                self._ensure_table(op.table, action)
                self._emit(nfnl.new_user_chain(op.table, op.chain, self.nfproto), action,
                           f"the creation of chain {op.chain}")
                self.new_chains.add((op.table, op.chain))

    def _restore(self, record: ChainRecord, action: Action) -> None:
        """The chain exactly as recorded: every rule it holds now deleted, the recorded
        ones added in order (foreign rules included), its policy; gone if it was."""
        if record.backend != NftFirewallBackend.name:
            raise BackendError("nftables", action.resource, f"the checkpoint was made by {record.backend}")
        if record.family != self.family:
            raise BackendError("nftables", action.resource, f"the checkpoint is of IPv{record.family} rules")
        table, name = record.table, record.chain
        nfproto = self.nfproto
        chain = self._chain(table, name)
        for rule in reversed(chain.rules if chain is not None else []):
            self._emit(nfnl.del_rule(table, name, rule.handle, nfproto), action, f"deleting rule {rule.handle}")
            self.deleted.add(rule.handle)
        if not record.exists:
            if chain is not None:
                self._emit(nfnl.del_chain(table, name, nfproto), action, f"the deletion of chain {name}")
                self.deleted_chains.add((table, name))
                self.unrecorded[table] = action
            return
        if record.builtin:
            code = POLICY_CODES.get(record.policy or "ACCEPT", nfnl.NF_ACCEPT)
            if not self._ensure_base_chain(table, name, code, action) and chain is not None \
                    and chain.policy != code:
                self._emit(nfnl.set_policy(table, name, code, nfproto), action, f"policy {record.policy}")
        place = nfnl.rule_place(table, name)
        for body, _meaning in record.entries:
            self._emit(nfnl.add_rule(place, body, family=nfproto), action, "a recorded rule")

    def drop_emptied_tables(self, sock: nfnl.NftSocket) -> None:
        """A table left with nothing by restores of chains that did not exist when they were
        recorded (the change made them, and the table for them) is deleted too, as
        iptables-nft-save did not show it then. Only when it holds nothing else: no chain
        kept, no set, no stateful object, no flowtable (the kernel's use count)."""
        if not self.unrecorded:
            return
        replies, _interrupted = sock.dump(nfnl.dump_tables(self.nfproto))
        uses = dict(nfnl.table_uses(data, off, length) for data, _kind, off, length in replies)
        for table, action in self.unrecorded.items():
            cached = self.mirror.tables.get(table_key(table, self.family))
            if cached is None or table in self.new_tables or any(c in self.new_chains for c in
                                                                 ((table, n) for n in cached.chains)):
                continue
            if all((table, n) in self.deleted_chains for n in cached.chains) and uses.get(table) == len(cached.chains):
                self._emit(nfnl.del_table(table, self.nfproto), action, f"the deletion of table {self.ip} {table}")

    def _want(self, op: SyncChain, resource: str, tail: bool = False) -> Wanted:
        rules = op.tail if tail else op.rules
        key = (op.table, op.chain + ("\0tail" if tail else ""), op.builtin)
        cached = self.wanted.get(key)
        if cached is not None and cached.rules is rules:
            return cached
        tags = [] if op.builtin or tail else [OWNER_MARK]
        tkey = table_key(op.table, self.family)
        tags += [self.tag_of[(tkey, op.chain, rule.text)] for rule in rules]
        items = []
        for tag in tags:
            d = self.declared.get(tag)
            if d is None:
                raise BackendError("nftables", resource, f"rule {tag} was not compiled (observe first)")
            items += [(tag, fp, rule_key(tag, fp), body) for fp, body in zip(d.fingerprints, d.bodies, strict=True)]
        wanted = Wanted(rules, items, b"".join(key for _t, _f, key, _b in items))
        self.wanted[key] = wanted
        return wanted

    def _adopt(self, op: SyncChain, chain: CachedChain, items: list[tuple[str, bytes, bytes, bytes]],
               action: Action) -> bool:
        """Tag, in place, foreign rules identical to declared rules missing from the chain
        (an imported ruleset applied on the host it came from): one transaction of
        replacements; the next pass puts the chain in order. True if any was adopted."""
        present = {r.tag for r in chain.rules if r.tag}
        missing: dict[bytes, tuple[str, bytes, bytes, bytes]] = {}
        for item in items:
            if item[0] not in present:
                missing.setdefault(item[1], item)
        if not missing:
            return False
        place = nfnl.rule_place(op.table, op.chain)
        adopted = False
        for rule in chain.rules:
            if rule.ours or rule.fingerprint not in missing:
                continue
            tag, fp, key, body = missing.pop(rule.fingerprint)
            self.added[len(self.messages)] = (tag, fp, key)
            self._emit(nfnl.replace_rule(place, body, rule.handle, self.nfproto), action, tag)
            adopted = True
        return adopted

    def _sync(self, op: SyncChain, action: Action) -> None:
        chain = self._chain(op.table, op.chain)
        if chain is None:
            if op.builtin:
                self._ensure_base_chain(op.table, op.chain, nfnl.NF_ACCEPT, action)
            elif (op.table, op.chain) not in self.new_chains:
                self._ensure_table(op.table, action)
                self._emit(nfnl.new_user_chain(op.table, op.chain, self.nfproto), action,
                           f"the creation of chain {op.chain}")
                self.new_chains.add((op.table, op.chain))
        wanted = self._want(op, action.resource)
        bottom = self._want(op, action.resource, tail=True)
        want = wanted.items
        exclusive = op.mode == ChainMode.EXCLUSIVE
        if not exclusive and chain is not None and self._adopt(op, chain, want + bottom.items, action):
            return
        have: list[CachedRule] = chain.rules if chain is not None else []
        have_keys = chain.keys() if chain is not None else b""
        # the chain as it must end: the declared rules, then (merge) the foreign rules in
        # their order, then the rules kept at the bottom (position: append)
        target_keys = wanted.keys
        foreign_keys = chain.foreign_keys() if not exclusive and chain is not None else b""
        target_keys += foreign_keys + bottom.keys
        # keep what already matches at both ends; rewrite only the middle (a drift is
        # usually one rule: one deletion or one insertion, not the rest of the chain)
        k = common_prefix(have_keys, target_keys)
        s = common_suffix(have_keys, target_keys, k)
        n_target = len(target_keys) // KEY_SIZE
        middle = have[k : len(have) - s]
        kept = []
        for rule in middle:
            if exclusive or rule.ours:
                self._emit(nfnl.del_rule(op.table, op.chain, rule.handle, self.nfproto), action,
                           f"deleting rule {rule.handle}")
                self.deleted.add(rule.handle)
            else:
                kept.append(rule)  # a foreign rule: vnetd's go above it
        end = have[len(have) - s].handle if s else None  # None: appended
        top_anchor = kept[0].handle if kept else end
        place = nfnl.rule_place(op.table, op.chain)
        n_top, n_foreign = len(want), len(foreign_keys) // KEY_SIZE
        for index in range(k, n_target - s):
            if index < n_top:
                tag, fp, key, body = want[index]
                anchor = top_anchor
            elif index < n_top + n_foreign:
                continue  # a foreign rule: in place
            else:
                tag, fp, key, body = bottom.items[index - n_top - n_foreign]
                anchor = end
            self.added[len(self.messages)] = (tag, fp, key)
            self._emit(nfnl.add_rule(place, body, before=anchor, family=self.nfproto), action, tag)

    def _prune(self, op: PruneChain, action: Action) -> None:
        chain = self._chain(op.table, op.chain)
        if chain is None:
            return
        ours = [r for r in chain.rules if r.ours]
        for rule in reversed(ours):
            self._emit(nfnl.del_rule(op.table, op.chain, rule.handle, self.nfproto), action,
                       f"deleting rule {rule.handle}")
            self.deleted.add(rule.handle)
        if not op.delete_chain or chain.base or len(ours) != len(chain.rules):
            return
        table = self.mirror.tables[table_key(op.table, self.family)]
        unread = [c.name for c in table.chains.values() if c.unread]
        if unread:  # one of them may jump to it: kept until they can be read
            raise BackendError("nftables", action.resource,
                               f"not deleted yet: chain {unread[0]} kept changing while being read, and may jump to it")
        needle = op.chain.encode()
        for other in table.chains.values():
            for rule in other.rules:
                if rule.handle in self.deleted or needle not in rule.exprs:
                    continue
                if _jump_target(rule.exprs) == op.chain:
                    return  # still jumped to by a rule vnetd does not own
        self._emit(nfnl.del_chain(op.table, op.chain, self.nfproto), action, f"the deletion of chain {op.chain}")


def _written(actions: Iterable[Action]) -> list[tuple[str, str]]:
    """(table key, chain) of the chains the firewall actions write, in order, once each."""
    out: dict[tuple[str, str], None] = {}
    for action in actions:
        op = action.op
        if isinstance(op, SyncChain | SetPolicy | PruneChain | RestoreChain):
            out[(table_key(op.table, op.family), op.chain)] = None
    return list(out)


def _conforms(backend: NftFirewallBackend) -> FirewallSeam:
    """mypy checks here that the iptables-nft backend implements the seam."""
    return backend


__all__ = ["HOOKS", "IPTABLES_TABLES", "NftFirewallBackend", "NftSession", "render_rule"]
