# SPDX-License-Identifier: MIT
"""The base chains that may shadow vnetd's accepts, read cheaply from both netfilter backends.

``plan/shadowing.py`` decides; this module reads what it decides on, with no
program run and a bounded cost:

* nf_tables: one ``NFT_MSG_GETCHAIN`` dump of every family (``NFPROTO_UNSPEC``)
  gives every base chain with its hook, priority and policy. Only a base chain on
  a hook where vnetd accepts, of a family that sees vnetd's packets, whose policy
  is accept, is read further: one rule dump of that chain alone (the kernel
  filters by table and chain), of which only the last rule is decoded. The chain
  holding vnetd's own rules (iptables-nft backend) is never dumped. Only for a
  chain that drops, it (and each chain it jumps to) is dumped once more, chain by
  chain, to see whether it accepts vnetd's rules itself as the same iptables rules
  (vnetd's rules compiled and printed as ``iptables-nft-save`` prints them, only
  then).
* legacy tables: only those ``/proc/net/ip_tables_names`` (``ip6_tables_names``)
  lists (reading another would create it), each with one ``IPT_SO_GET_ENTRIES``;
  the policy is the entry at the hook's underflow, the last rule the entry right
  before it (only that chain is walked). With the legacy backend, vnetd's own
  ``filter`` table is not read (its chains on those hooks are vnetd's).

Reading needs CAP_NET_ADMIN (nf_tables) and CAP_NET_RAW (legacy): ``check`` run
as a user reports nothing. ``ShadowWatch`` is the daemon's periodic look: the
nf_tables part is read again only when the ruleset's generation id changed (one
``NFT_MSG_GETGEN``), and ``firewall.shadowed`` is logged once per change.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from vnetd.backends import nfnl
from vnetd.backends import nftexpr as nx
from vnetd.backends.nftexpr import data_verdict
from vnetd.errors import BackendError
from vnetd.model.firewall import ChainSpec, ShownTable
from vnetd.model.state import DesiredState
from vnetd.plan.shadowing import (
    BRIDGE,
    IN_LEGACY,
    IN_NF_TABLES,
    LEGACY,
    LEGACY_FAMILY,
    NF_FAMILIES,
    NFT,
    Acceptance,
    BaseChain,
    Finding,
    Shadow,
    Unreached,
    acceptances,
    as_declared,
    iptables_priority,
    own_chain,
    shadows,
    unreached,
    warning_lines,
)

#: nf_tables family numbers (NFPROTO_*) whose chains can see vnetd's packets
NF_FAMILY_NAMES = {1: "inet", 2: "ip", 7: "bridge", 10: "ip6"}
NFTA_LIST_ELEM, NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 1, 2
NFTA_IMMEDIATE_DREG, NFTA_IMMEDIATE_DATA = 1, 2
NFTA_DATA_VERDICT, NFTA_VERDICT_CODE = 2, 1
NFTA_XT_NAME = 1  # NFTA_MATCH_NAME, NFTA_TARGET_NAME
NFT_REG_VERDICT = 0
#: expressions that neither match nor decide: a rule made of these and a drop drops everything
PASSIVE = frozenset({"counter", "log", "notrack", "last"})
#: dumps interrupted by a concurrent commit are read again this many times
DUMP_TRIES = 3
#: looking for vnetd's accepting rules in a chain that drops: chains followed, rules read
MAX_JUMPS, MAX_RULES = 16, 5000
#: the built-in chain of an iptables table on each NF_INET_* hook
HOOK_CHAIN = {0: "PREROUTING", 1: "INPUT", 2: "FORWARD", 3: "OUTPUT", 4: "POSTROUTING"}
_U16 = struct.Struct("=H")
_I32 = struct.Struct("=i")
_BE32S = struct.Struct(">i")


def written_backend(desired: DesiredState) -> str:
    """The firewall backend vnetd writes for ``desired`` (for ``check``, which has no engine;
    ``plan``, ``apply`` and the daemon ask their engine's backend): the legacy tables,
    unless ``check`` passes the backend ``firewall.backend`` selected."""
    return LEGACY


# --------------------------------------------------------------------------- nf_tables


def _elements(exprs: bytes) -> list[tuple[str, bytes]]:
    """(name, data) of each expression of a rule (NFTA_RULE_EXPRESSIONS' payload)."""
    out = []
    for atype, off, length in nfnl.attrs(exprs, 0, len(exprs)):
        if atype != NFTA_LIST_ELEM:
            continue
        name, data = "", b""
        for etype, eoff, elen in nfnl.attrs(exprs, off, off + length):
            if etype == NFTA_EXPR_NAME:
                name = nfnl.cstr(exprs, eoff, elen)
            elif etype == NFTA_EXPR_DATA:
                data = exprs[eoff : eoff + elen]
        out.append((name, data))
    return out


def _xt_name(data: bytes) -> str | None:
    for atype, off, length in nfnl.attrs(data, 0, len(data)):
        if atype == NFTA_XT_NAME:
            return nfnl.cstr(data, off, length)
    return None


def _verdict_code(data: bytes) -> int | None:
    """The verdict an ``immediate`` expression sets (None: it loads a value, not a verdict)."""
    dreg, code = None, None
    for atype, off, length in nfnl.attrs(data, 0, len(data)):
        if atype == NFTA_IMMEDIATE_DREG and length >= 4:
            dreg = struct.unpack_from(">I", data, off)[0]
        elif atype == NFTA_IMMEDIATE_DATA:
            for dtype, doff, dlen in nfnl.attrs(data, off, off + length):
                if dtype == NFTA_DATA_VERDICT:
                    for vtype, voff, vlen in nfnl.attrs(data, doff, doff + dlen):
                        if vtype == NFTA_VERDICT_CODE and vlen >= 4:
                            code = _BE32S.unpack_from(data, voff)[0]
    return code if dreg == NFT_REG_VERDICT else None


def unconditional_verdict(exprs: bytes) -> str | None:
    """"drop" or "reject" when a rule drops (rejects) every packet that reaches it: nothing
    but counters, logs or comments before the verdict; None for anything else."""
    elements = _elements(exprs)
    if not elements:
        return None
    *head, (name, data) = elements
    for hname, hdata in head:
        if hname not in PASSIVE and not (hname == "match" and _xt_name(hdata) == "comment"):
            return None
    if name == "reject":
        return "reject"
    if name == "target" and _xt_name(data) == "REJECT":
        return "reject"
    if name == "immediate" and _verdict_code(data) == nfnl.NF_DROP:
        return "drop"
    return None


def _dump(sock: nfnl.NftSocket, request: nfnl.Message) -> list[tuple[bytes, int, int, int]] | None:
    for _try in range(DUMP_TRIES):
        replies, interrupted = sock.dump(request)
        if not interrupted:
            return replies
    return None


def _last_rule_verdict(sock: nfnl.NftSocket, family: int, table: str, chain: str) -> str | None:
    """How the chain's last rule ends (one dump of that chain's rules; only the last is decoded)."""
    request = nfnl.Message(nfnl.NFT_MSG_GETRULE, nfnl.NLM_F_DUMP, family,
                           nfnl.strz(nfnl.NFTA_RULE_TABLE, table) + nfnl.strz(nfnl.NFTA_RULE_CHAIN, chain))
    replies = _dump(sock, request)
    if replies is None:
        return None
    for data, kind, off, length in reversed(replies):
        if kind != nfnl.NFT_MSG_NEWRULE:
            continue
        rule = nfnl.decode_rule(data, off, length)
        if rule.chain == chain and rule.table == table:  # a kernel that does not filter by chain sends more
            return unconditional_verdict(rule.exprs)
    return None


def _chain_rules(sock: nfnl.NftSocket, family: int, table: str, chain: str,
                 read: dict[tuple[int, str, str], list[bytes]]) -> list[bytes]:
    """The expressions of a chain's rules, from one dump of that chain alone (read once per
    look; a dump of a whole table spans many messages, which any commit interrupts, and a
    busy writer commits all the time). Empty when it cannot be read."""
    key = (family, table, chain)
    if key not in read:
        replies = _dump(sock, nfnl.dump_rules(table, family, chain))
        rules: list[bytes] = []
        for data, kind, off, length in replies or ():
            if kind == nfnl.NFT_MSG_NEWRULE:
                rule = nfnl.decode_rule(data, off, length)
                if rule.table == table and rule.chain == chain:  # a kernel that does not filter sends more
                    rules.append(rule.exprs)
        read[key] = rules
    return read[key]


def _chain_accepts(sock: nfnl.NftSocket, family: int, table: str, chain: str, wanted: dict[str, str],
                   read: dict[tuple[int, str, str], list[bytes]]) -> frozenset[str]:
    """Which of ``wanted`` (iptables-save text -> vnetd's declared text) the chain accepts
    itself: the same rule with ``-j ACCEPT`` in it or in a chain it jumps to (each chain
    dumped alone, once; at most MAX_JUMPS chains and MAX_RULES rules are looked at)."""
    if not wanted:
        return frozenset()
    from vnetd.backends.nftables import render_rule

    found: set[str] = set()
    todo, seen, looked = [chain], {chain}, 0
    while todo and looked < MAX_RULES:
        for exprs in _chain_rules(sock, family, table, todo.pop(), read)[: MAX_RULES - looked]:
            looked += 1
            elements = _elements(exprs)
            if not elements or elements[-1][0] != "immediate":
                continue
            verdict = data_verdict(nx.fields(elements[-1][1]).get(NFTA_IMMEDIATE_DATA))
            if verdict is None:
                continue
            code, callee = verdict
            if code == nfnl.NF_ACCEPT:
                declared = wanted.get(render_rule(exprs))
                if declared is not None:
                    found.add(declared)
            elif code in (nx.NFT_JUMP, nx.NFT_GOTO) and callee and callee not in seen and len(seen) < MAX_JUMPS:
                seen.add(callee)
                todo.append(callee)
    return frozenset(found)


def nft_base_chains(sock: nfnl.NftSocket, hooks: dict[str, set[int]],
                    skip: set[tuple[str, str, str, str]],
                    wanted: Callable[[], dict[str, dict[str, str]]] = dict) -> list[BaseChain] | None:
    """The nf_tables base chains on ``hooks`` (nf_tables family name -> NF_INET_* hooks),
    their policy and, for those whose policy is accept and are not in ``skip``, how their
    last rule ends. None when nf_tables cannot be read (no CAP_NET_ADMIN, no nf_tables)."""
    replies = _dump(sock, nfnl.dump_chains(nfnl.NFPROTO_UNSPEC))
    if replies is None:
        return None
    out = []
    read: dict[tuple[int, str, str], list[bytes]] = {}
    texts: dict[str, dict[str, str]] | None = None
    for data, kind, off, length in replies:
        if kind != nfnl.NFT_MSG_NEWCHAIN:
            continue
        chain = nfnl.decode_chain(data, off, length)
        family = NF_FAMILY_NAMES.get(chain.family)
        if family is None or chain.hooknum is None or chain.hooknum not in hooks.get(family, ()):
            continue
        policy_drop = chain.policy == nfnl.NF_DROP
        final = None
        if not policy_drop and (IN_NF_TABLES, family, chain.table, chain.name) not in skip:
            final = _last_rule_verdict(sock, chain.family, chain.table, chain.name)
        accepts: frozenset[str] = frozenset()
        if policy_drop or final is not None:
            if texts is None:
                texts = wanted()  # compiled only when a chain drops
            accepts = _chain_accepts(sock, chain.family, chain.table, chain.name, texts.get(family, {}), read)
        out.append(BaseChain(IN_NF_TABLES, family, chain.table, chain.name, chain.hooknum, chain.priority,
                             policy_drop, final, accepts))
    return out


# --------------------------------------------------------------------------- legacy tables


def _legacy_verdict(blob: memoryview, off: int, layout: Any) -> str | None:
    """"drop" / "reject" when the entry at ``off`` drops (rejects) every packet: no address,
    interface or protocol in its header, no match but comments, a DROP or REJECT target."""
    if bytes(blob[off : off + layout.nfcache]) != bytes(layout.nfcache):
        return None
    t_off = _U16.unpack_from(blob, off + layout.target_offset)[0]
    m = off + layout.size
    while m < off + t_off:
        size = _U16.unpack_from(blob, m)[0]
        name = bytes(blob[m + 2 : m + 31]).split(b"\0", 1)[0]
        if size == 0 or name != b"comment":
            return None
        m += size
    target = off + t_off
    name = bytes(blob[target + 2 : target + 31]).split(b"\0", 1)[0]
    if name == b"REJECT":
        return "reject"
    if name == b"" and _I32.unpack_from(blob, target + 32)[0] == -1:  # -NF_DROP - 1
        return "drop"
    return None


def _legacy_chain(family: int, table: str, hook: int, info: Any, blob: memoryview, layout: Any) -> BaseChain:
    """A built-in chain of a legacy table: its policy (the entry at the hook's underflow) and
    its last rule (the entry right before it; only this chain's entries are walked)."""
    start, under = info.hook_entry[hook], info.underflow[hook]
    t_off = _U16.unpack_from(blob, under + layout.target_offset)[0]
    policy_drop = _I32.unpack_from(blob, under + t_off + 32)[0] == -1
    last, off, steps = None, start, 0
    while off < under and steps <= info.num_entries:
        last = off
        n_off = _U16.unpack_from(blob, off + layout.target_offset + 2)[0]
        if n_off == 0:
            break
        off += n_off
        steps += 1
    final = _legacy_verdict(blob, last, layout) if last is not None and off == under else None
    return BaseChain(IN_LEGACY, LEGACY_FAMILY[family], table, HOOK_CHAIN[hook], hook,
                     iptables_priority(table, hook), policy_drop, final)


def legacy_base_chains(hooks: dict[int, set[int]], skip_tables: set[tuple[int, str]]) -> list[BaseChain] | None:
    """The legacy tables' built-in chains on ``hooks`` (vnetd family 4/6 -> NF_INET_* hooks),
    of the tables that exist, but those in ``skip_tables``. None when they cannot be read."""
    from vnetd.backends.iptables import LEGACY as LEGACY_FAMILIES
    from vnetd.backends.iptables import RawTables, loaded_tables

    out: list[BaseChain] = []
    for family, family_hooks in sorted(hooks.items()):
        tables = [t for t in loaded_tables(family) if (family, t) not in skip_tables]
        if not tables or not family_hooks:
            continue
        try:
            raw = RawTables(family)
        except OSError:
            return None  # not root
        layout = LEGACY_FAMILIES[family].layout
        try:
            for table in tables:
                try:
                    got = raw.read(table)
                except BackendError:
                    continue
                if got is None:
                    continue
                info, blob = got
                for hook in sorted(family_hooks):
                    if info.valid_hooks & (1 << hook):
                        out.append(_legacy_chain(family, table, hook, info, blob, layout))
        finally:
            raw.close()
    return out


# --------------------------------------------------------------------------- together


def wanted_texts(chains: Sequence[ChainSpec], accepted: Sequence[Acceptance]) -> dict[str, dict[str, str]]:
    """nf_tables family -> vnetd's accepting ``-j ACCEPT`` rules as ``iptables-save`` prints
    them -> their declared text: what a chain that drops may hold to accept them itself."""
    from vnetd.backends.xtables import RuleCompileError, render_entry, shared_compiler

    by_name = {(c.family, c.table, c.name): c for c in chains}
    names = {f: {c.name for c in chains if c.family == f and c.table == "filter"} for f in (4, 6)}
    compiler = shared_compiler()
    out: dict[str, dict[str, str]] = {}
    for acc in accepted:
        spec = by_name.get((acc.family, acc.table, acc.chain))
        if spec is None:
            continue
        for rule in spec.all_rules:
            if rule.text not in acc.rules or rule.jump is None or rule.jump[0] != "ACCEPT":
                continue
            try:
                compiled = compiler.compile(spec, rule, names[acc.family])
            except RuleCompileError:
                continue
            if len(compiled.entries) != 1:  # -s a,b: several rules, not looked for
                continue
            text = render_entry(compiled.entries[0], compiled.target_name, family=acc.family)
            for family in NF_FAMILIES[acc.family]:
                out.setdefault(family, {})[text] = rule.text
    return out


class Reader:
    """Reads the base chains for a set of acceptances (an nf_tables socket kept open)."""

    def __init__(self) -> None:
        self._sock: nfnl.NftSocket | None = None

    def socket(self) -> nfnl.NftSocket | None:
        if self._sock is None:
            try:
                self._sock = nfnl.NftSocket()
                self._sock.sock.settimeout(2.0)
            except OSError:
                return None
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def nft(self, accepted: Sequence[Acceptance], backend: str,
            chains: Sequence[ChainSpec] = ()) -> list[BaseChain] | None:
        sock = self.socket()
        if sock is None:
            return None
        hooks: dict[str, set[int]] = {}
        for acc in accepted:
            for name in NF_FAMILIES[acc.family]:
                hooks.setdefault(name, set()).add(acc.hook)
            if acc.bridged and acc.chain == "FORWARD":
                hooks.setdefault(BRIDGE, set()).add(acc.hook)
        skip = {own_chain(backend, acc) for acc in accepted}
        try:
            return nft_base_chains(sock, hooks, skip, lambda: wanted_texts(chains, accepted))
        except (OSError, struct.error, IndexError):  # EPERM, no nf_tables, a timeout, a malformed message
            self.close()
            return None

    @staticmethod
    def legacy(accepted: Sequence[Acceptance], backend: str) -> list[BaseChain] | None:
        hooks: dict[int, set[int]] = {}
        for acc in accepted:
            hooks.setdefault(acc.family, set()).add(acc.hook)
        # with the legacy backend, the filter chains on those hooks are vnetd's own
        skip = {(acc.family, acc.table) for acc in accepted} if backend != NFT else set()
        try:
            return legacy_base_chains(hooks, skip)
        except (OSError, struct.error, IndexError):
            return None

    def shadows(self, chains: Sequence[ChainSpec], backend: str) -> tuple[Shadow, ...] | None:
        """What shadows vnetd's accepts now (None: nothing could be read)."""
        accepted = acceptances(chains)
        if not accepted:
            return ()
        return combine(chains, accepted, backend, self.nft(accepted, backend, chains),
                       self.legacy(accepted, backend))


def combine(chains: Sequence[ChainSpec], accepted: Sequence[Acceptance], backend: str,
            nft: list[BaseChain] | None, legacy: list[BaseChain] | None) -> tuple[Shadow, ...] | None:
    """The decision on what was read of both backends (None: neither could be read)."""
    if nft is None and legacy is None:
        return None
    return shadows(accepted, as_declared([*(nft or ()), *(legacy or ())], chains, backend), backend)


def find_shadows(chains: Sequence[ChainSpec], backend: str) -> tuple[Shadow, ...] | None:
    """What drops vnetd's accepted traffic here, for vnetd writing ``backend``
    ("iptables-legacy" or "iptables-nft"); None when nothing could be read (not root)."""
    if not chains:
        return ()
    reader = Reader()
    try:
        return reader.shadows(tuple(chains), backend)
    finally:
        reader.close()


def find_unreached(chains: Sequence[ChainSpec], show: Callable[[], Sequence[ShownTable]]) -> tuple[Unreached, ...]:
    """vnetd's ``position: append`` rules that a rule of another tool above them keeps every
    packet from; ``show``: the ruleset of the backend vnetd writes, read only when such
    rules are declared (empty when it cannot be read)."""
    if not any(c.tail for c in chains):
        return ()
    try:
        shown = show()
    except (BackendError, OSError):
        return ()
    return unreached(chains, shown)


def legacy_ruleset(chains: Sequence[ChainSpec]) -> tuple[ShownTable, ...]:
    """The legacy tables of the families whose chains keep rules at the bottom (for ``check``)."""
    from vnetd.backends.ruleset import read_ruleset

    return tuple(t for family in sorted({c.family for c in chains if c.tail}) for t in read_ruleset(chains, family))


def findings(chains: Sequence[ChainSpec], backend: str, show: Callable[[], Sequence[ShownTable]]
             ) -> tuple[Finding, ...]:
    """Everything that keeps packets from what vnetd's rules decide: other base chains that drop
    what they accept, then rules of others above vnetd's bottom rules."""
    return (*(find_shadows(chains, backend) or ()), *find_unreached(chains, show))


def shadow_warnings(desired: DesiredState, backend: str | None = None) -> list[str]:
    """``firewall.shadowed: ...`` lines for ``vnetd check`` (empty when nothing can be read);
    ``backend``: the one ``firewall.backend`` selected (vnetd.firewall_checks)."""
    chains = desired.chains
    name = backend or written_backend(desired)
    if name == LEGACY:
        return warning_lines(findings(chains, name, lambda: legacy_ruleset(chains)))

    def show() -> tuple[ShownTable, ...]:
        from vnetd.backends.firewall import open_backend

        opened = open_backend(name)
        try:
            return tuple(opened.show(chains))
        finally:
            opened.close()

    return warning_lines(findings(chains, name, show))


class ShadowWatch:
    """The daemon's periodic look for what keeps packets from vnetd's rules: logs
    ``firewall.shadowed`` once per chain that starts doing so and ``firewall.shadow_clear``
    when it stops; ``current`` is what ``vnetd status`` shows. The nf_tables part is read
    again only when the ruleset's generation changed, vnetd's own chains (for rules kept at
    the bottom) only when the daemon read its firewall again (``firewall_key``)."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.current: tuple[Finding, ...] = ()
        self._reader = Reader()
        self._nft_key: tuple[object, ...] | None = None
        self._nft_chains: list[BaseChain] | None = None
        self._tail_key: tuple[object, ...] | None = None
        self._tail: tuple[Unreached, ...] = ()

    def check(self, chains: Sequence[ChainSpec], backend: Callable[[], str],
              show: Callable[[], Sequence[ShownTable]] | None = None, firewall_key: object = None) -> bool:
        """Look again (``backend``: the name of the backend vnetd writes, asked only when
        chains are declared; ``show``: its ruleset); True when what was found changed (and
        was logged)."""
        shadowed: tuple[Shadow, ...] | None = ()
        if chains:
            name = backend()
            accepted = acceptances(chains)
            if accepted:
                shadowed = combine(chains, accepted, name, self._nft(accepted, name, chains),
                                   self._reader.legacy(accepted, name))
        if shadowed is None:  # nothing could be read this time: what was found stays
            shadowed = tuple(f for f in self.current if isinstance(f, Shadow))
        found: tuple[Finding, ...] = (*shadowed, *self._unreached(chains, show, firewall_key))
        if found == self.current:
            return False
        before, self.current = set(self.current), found
        for finding in found:
            if finding not in before:
                self.log.warning("firewall.shadowed", message=finding.message(), **finding.fields())
        now = set(found)
        for finding in sorted(before - now, key=lambda f: f.message()):
            self.log.info("firewall.shadow_clear", message=finding.clear_message(), **finding.fields())
        return True

    def _unreached(self, chains: Sequence[ChainSpec], show: Callable[[], Sequence[ShownTable]] | None,
                   firewall_key: object) -> tuple[Unreached, ...]:
        if show is None or not any(c.tail for c in chains):
            return ()
        key = (firewall_key, tuple(chains))
        if key != self._tail_key:
            self._tail, self._tail_key = find_unreached(chains, show), key
        return self._tail

    def _nft(self, accepted: Sequence[Acceptance], backend: str, chains: Sequence[ChainSpec]) -> list[BaseChain] | None:
        """The nf_tables chains, read again only when the generation (or what is asked) changed."""
        sock = self._reader.socket()
        if sock is None:
            return None
        try:
            gen: int | None = sock.getgen()
        except OSError:
            self._reader.close()
            gen = None
        key = (gen, tuple(accepted), backend)
        if gen is None or key != self._nft_key or self._nft_chains is None:
            self._nft_chains = self._reader.nft(accepted, backend, chains)
            self._nft_key = key if self._nft_chains is not None else None
        return self._nft_chains

    def status(self) -> list[str]:
        return [f.message() for f in self.current]

    def close(self) -> None:
        self._reader.close()
