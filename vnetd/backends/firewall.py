# SPDX-License-Identifier: MIT
"""The seam between the engine and a netfilter dataplane.

Every firewall backend -- the legacy iptables tables (``backends/iptables.py``),
the nf_tables tables iptables-nft uses (``backends/nftables.py``) -- takes the
same declared chains (iptables-save rule syntax, compiled by
``backends/xtables.py``) and keeps the same contract: vnetd's rules are tagged,
kept first and in order in ``merge`` chains, alone in ``exclusive`` chains,
pruned when no longer declared; foreign rules, chains and tables are never
touched; every read-modify-write is atomic per table and safe against other
writers. The planner (``plan/firewall.py``) only sees ``ObservedTable`` values
and fingerprints, so it is the same for every backend.

A fingerprint is backend-specific (a masked ``ipt_entry`` for legacy, the
expressions of an nf_tables rule for iptables-nft) but always compares a
declared rule's expected kernel form with the kernel's copy of it.

Address families: a backend instance serves one family (``family`` 4: the
``firewall:`` chains, iptables; 6: the ``firewall6:`` chains, ip6tables), keeps
to the chains of its family among those it is given, and names its tables by
their *key* (``filter``, ``ip6 filter``: ``model.firewall.table_key``).
``FirewallFamilies`` puts one instance per family behind the single backend the
engine and the daemon use: it merges what they observe (keys never collide;
tags are unique across families), and sends each table key and each action to
the instance of its family. A backend gains IPv6 by taking a family and naming
its tables by key; nothing above this seam changes.

Which backend: every backend is registered by name in
``model.firewall.FIREWALL_BACKENDS`` ("module:Class", the families it writes,
the ``iptables`` variant that shows its tables); ``open_backend`` imports and
makes it on first use. ``select_backend`` turns ``firewall.backend`` (``auto``
or a name) into the backend used, with the reason in a few words: ``auto`` is
the backend that already holds vnetd's rules when exactly one does, otherwise
the variant the host's ``iptables`` command is (legacy when there is none),
among the backends that write every family the state declares.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from vnetd.errors import BackendError
from vnetd.model.checkpoint import ChainRecord
from vnetd.model.firewall import (
    AUTO_BACKEND,
    FAMILIES,
    FIREWALL_BACKENDS,
    ChainSpec,
    ObservedTable,
    RuleId,
    RuleKey,
    ShownTable,
    split_table_key,
)
from vnetd.model.state import DesiredState
from vnetd.plan.actions import FIREWALL_OPS, Action

if TYPE_CHECKING:
    from vnetd.backends.xtables import CompiledRule


class FirewallBackend(Protocol):
    """What the engine and the daemon need of a netfilter dataplane.

    A backend that cannot write some rules the compiler accepts says so in a static
    method ``cannot_write(compiled: CompiledRule) -> str | None`` (the reason, or None),
    which ``vnetd check`` asks of the backend in use (see ``write_check`` below)."""

    #: the name administrators use (``firewall.backend``): "iptables-legacy", "iptables-nft"
    name: str
    #: seconds spent waiting for locks held by other tools (a metric)
    lock_waits: float

    def observe(self, chains: Iterable[ChainSpec]) -> dict[str, ObservedTable]:
        """Every table the declared chains use, plus every table holding vnetd's rules, by table key."""

    def rule_ids(self, chains: Iterable[ChainSpec]) -> Mapping[RuleKey, RuleId]:
        """Each declared rule's tag and the fingerprints of its kernel entries (the owner
        mark under plan.firewall.owner_key(family)); the same mapping while the rules are the same."""

    def tables_to_read(self, chains: Iterable[ChainSpec]) -> list[str]:
        """The table keys ``observe`` reads (what ``changed`` watches)."""

    def has_vnetd_rules(self) -> bool:
        """Whether any table holds a vnetd tag (work to prune with no chain declared)."""

    def changed(self, tables: Iterable[str]) -> list[str]:
        """Table keys whose rules changed since the last ``observe`` (counters ignored); cheap."""

    def apply(self, actions: Sequence[Action]) -> list[tuple[Action, BackendError | None]]:
        """Carry out SyncChain/SetPolicy/PruneChain/RestoreChain actions: one atomic commit per table."""

    def record_chains(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], ChainRecord]:
        """(table key, chain) -> the chain as it is now, for a checkpoint (``apply --confirm``)."""

    def event_fileno(self) -> int | None:
        """A file descriptor that becomes readable when the ruleset may have changed
        (nf_tables notifications), or None when the backend can only be polled."""

    def drain_events(self) -> bool:
        """Read what the event descriptor holds; True if the ruleset may have changed."""

    def show(self, chains: Iterable[ChainSpec]) -> tuple[ShownTable, ...]:
        """The whole ruleset, vnetd's rules (declared texts where known) and everyone else's."""

    def close(self) -> None: ...


class FirewallFamilies:
    """One backend per address family (made on first use by ``make(family)``), as the one
    firewall backend of the engine and the daemon."""

    def __init__(self, make: Callable[[int], FirewallBackend], families: Sequence[int] = FAMILIES) -> None:
        self._make = make
        self.families = tuple(families)
        self._members: dict[int, FirewallBackend] = {}
        self._merged: tuple[tuple[object, ...], dict[RuleKey, RuleId]] = ((), {})
        self.name = self.member(self.families[0]).name

    def member(self, family: int) -> FirewallBackend:
        backend = self._members.get(family)
        if backend is None:
            backend = self._members[family] = self._make(family)
        return backend

    def _all(self) -> list[FirewallBackend]:
        """Every family's backend: each reads its declared tables and every table of its
        family that exists (where vnetd's rules no longer declared are pruned from)."""
        return [self.member(f) for f in self.families]

    @property
    def lock_waits(self) -> float:
        """The families' lock waits, together."""
        return sum(b.lock_waits for b in self._members.values())

    @lock_waits.setter
    def lock_waits(self, value: float) -> None:
        """Set the total (0 resets the metric): it is kept by the first family's backend."""
        for b in self._members.values():
            b.lock_waits = 0.0
        self.member(self.families[0]).lock_waits = value

    def observe(self, chains: Iterable[ChainSpec]) -> dict[str, ObservedTable]:
        chains = tuple(chains) if not isinstance(chains, tuple) else chains
        observed: dict[str, ObservedTable] = {}
        for backend in self._all():
            observed.update(backend.observe(chains))
        return observed

    def rule_ids(self, chains: Iterable[ChainSpec]) -> Mapping[RuleKey, RuleId]:
        """One map for every family (rule keys name the table by its family's key, and
        each family's owner mark is under ``plan.firewall.owner_key(family)``); the same
        object while every member's map is the same (the planner's memo compares identity)."""
        chains = tuple(chains) if not isinstance(chains, tuple) else chains
        parts = tuple(backend.rule_ids(chains) for backend in self._all())
        if len(parts) == 1:
            return parts[0]
        cached_parts, merged = self._merged
        if len(cached_parts) != len(parts) or any(a is not b for a, b in zip(cached_parts, parts, strict=True)):
            merged = {}
            for part in parts:
                merged.update(part)
            self._merged = (parts, merged)
        return merged

    def tables_to_read(self, chains: Iterable[ChainSpec]) -> list[str]:
        chains = tuple(chains) if not isinstance(chains, tuple) else chains
        return [key for backend in self._all() for key in backend.tables_to_read(chains)]

    def has_vnetd_rules(self) -> bool:
        return any(backend.has_vnetd_rules() for backend in self._all())

    def changed(self, tables: Iterable[str]) -> list[str]:
        by_family: dict[int, list[str]] = {}
        for key in tables:
            by_family.setdefault(split_table_key(key)[0], []).append(key)
        return [key for family, keys in by_family.items() if family in self.families
                for key in self.member(family).changed(keys)]

    def apply(self, actions: Sequence[Action]) -> list[tuple[Action, BackendError | None]]:
        by_family: dict[int, list[Action]] = {}
        for action in actions:
            op = action.op
            assert isinstance(op, FIREWALL_OPS)
            by_family.setdefault(op.family, []).append(action)
        results: list[tuple[Action, BackendError | None]] = []
        for family, family_actions in by_family.items():
            results += self.member(family).apply(family_actions)
        return results

    def record_chains(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], ChainRecord]:
        by_family: dict[int, list[tuple[str, str]]] = {}
        for key, chain in keys:
            by_family.setdefault(split_table_key(key)[0], []).append((key, chain))
        out: dict[tuple[str, str], ChainRecord] = {}
        for family, family_keys in by_family.items():
            out.update(self.member(family).record_chains(family_keys))
        return out

    def event_fileno(self) -> int | None:
        for backend in self._members.values():
            fd = backend.event_fileno()
            if fd is not None:
                return fd
        return None

    def drain_events(self) -> bool:
        return any([backend.drain_events() for backend in self._members.values()])

    def show(self, chains: Iterable[ChainSpec]) -> tuple[ShownTable, ...]:
        chains = tuple(chains) if not isinstance(chains, tuple) else chains
        return tuple(table for backend in self._all() for table in backend.show(chains))

    def close(self) -> None:
        for backend in self._members.values():
            backend.close()


class FamilyChains:
    """A backend's chains of its address family, as the same tuple while it is handed the
    same chains, so that its caches keyed on the desired state (by identity) keep working:
    given this family's tuple back (observe passing it on to compile_all), or the same
    chains in a new container (a list made a tuple per call), it answers with the tuple
    it made the first time (the elements compare by identity first: one comparison a
    chain)."""

    def __init__(self, family: int) -> None:
        self.family = family
        self._last: tuple[object, tuple[ChainSpec, ...]] = (None, ())

    def __call__(self, chains: Iterable[ChainSpec]) -> tuple[ChainSpec, ...]:
        given, mine = self._last
        if given is chains and isinstance(chains, tuple):
            return mine
        now = tuple(c for c in chains if c.family == self.family)
        if now != mine:
            mine = now
        self._last = (chains, mine)
        return mine


# --------------------------------------------------------------------------- which backend


def backend_class(name: str) -> Callable[[int], FirewallBackend]:
    """The class registered as ``name`` (model.firewall.FIREWALL_BACKENDS), imported now;
    called with an address family it makes that family's backend."""
    module, _, attr = FIREWALL_BACKENDS[name].path.partition(":")
    return cast(Callable[[int], FirewallBackend], getattr(importlib.import_module(module), attr))


def write_check(name: str) -> Callable[[CompiledRule], str | None] | None:
    """Backend ``name``'s ``cannot_write``: why it cannot write a rule that compiled (None:
    it can), so that ``check`` refuses what ``apply`` would fail on; None when the backend
    writes every rule the compiler accepts."""
    check: Callable[[CompiledRule], str | None] | None = getattr(backend_class(name), "cannot_write", None)
    return check


def open_backend(name: str) -> FirewallFamilies:
    """The backend ``name`` for every family it writes (one instance per family, made on first use)."""
    return FirewallFamilies(backend_class(name), FIREWALL_BACKENDS[name].families)


@dataclass(frozen=True, slots=True)
class Selection:
    """The firewall backend used, and why (one short line for ``check``/``plan``/``apply``,
    ``status``, ``show`` and the daemon's log)."""

    name: str
    #: what the state files say: "auto" or a backend's name
    requested: str
    reason: str
    #: the backends that held vnetd's rules when it was chosen (where they were looked for)
    holding: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        return f"firewall backend: {self.name} ({self.reason})"


def families_of(desired: DesiredState) -> frozenset[int]:
    """The address families a state declares chains of (none: it only prunes)."""
    return frozenset(c.family for c in desired.chains)


class BackendRefused(BackendError):
    """``firewall.backend: auto`` cannot tell which backend this host uses (vnetd's rules in
    two backends, ``iptables`` and ``ip6tables`` of different variants, no ``iptables``
    command, ...): vnetd refuses rather than guess; the message says what to write."""

    def __init__(self, message: str) -> None:
        super().__init__("firewall", "firewall.backend", message)


def _sections(families: Iterable[int]) -> str:
    from vnetd.model.firewall import SECTIONS

    return " and ".join(f"{SECTIONS[f]}:" for f in sorted(families))


def choose(requested: str, families: frozenset[int], holding: Sequence[str],
           variants: Mapping[int, str | None], origin: str = "") -> Selection:
    """The pure decision. ``families``: those the state declares chains of; ``holding``: the
    backends that hold vnetd's rules now; ``variants``: what the host's ``iptables`` (4) and
    ``ip6tables`` (6) commands are ("nft", "legacy", None: no such command).

    A backend named is used. ``auto`` follows the host's ``iptables`` command, and refuses
    (``BackendRefused``) when that is not one clear answer: vnetd's rules in two backends,
    the commands of the families declared of different variants, no command at all, or no
    backend of that variant writing every family declared. vnetd's rules already in one
    other backend than the host's variant (an upgrade on a host whose vnetd wrote the
    legacy tables) stay there: nothing is moved that nobody asked to move. A state that
    declares no chain (it only prunes) is never refused: every backend holding vnetd's
    rules is pruned."""
    holding = tuple(holding)
    if requested != AUTO_BACKEND:
        where = f" at {origin}" if origin else ""
        return Selection(requested, requested, f"firewall.backend{where}", holding)
    fix = "write firewall.backend: iptables-legacy or iptables-nft (docs/OPERATIONS.md)"
    if not families:
        name = holding[0] if holding else next(iter(FIREWALL_BACKENDS))
        return Selection(name, requested, "auto: no chain declared", holding)
    if len(holding) > 1:
        raise BackendRefused(f"auto: vnetd's rules are in {' and '.join(holding)}; {fix} "
                             "(vnetd's rules are then pruned from the other)")
    commands = {4: "iptables", 6: "ip6tables"}
    known = {f: v for f in sorted(families) if (v := variants.get(f)) is not None}
    if len(set(known.values())) > 1:
        mixed = " but ".join(f"`{commands[f]}` is {commands[f]}-{v}" for f, v in known.items())
        raise BackendRefused(f"auto: {mixed} here; {fix}")
    if not known:
        if len(holding) == 1:
            return Selection(holding[0], requested, "auto: no iptables command here; vnetd's rules are there",
                             holding)
        raise BackendRefused(f"auto: no iptables command here to follow; {fix}")
    variant = next(iter(known.values()))
    able = [n for n, e in FIREWALL_BACKENDS.items() if e.variant == variant and families <= set(e.families)]
    if not able:
        raise BackendRefused(f"auto: the host's iptables is iptables-{variant}, and no backend of that variant "
                             f"writes {_sections(families)} chains; {fix}")
    name = able[0]
    if holding and holding[0] != name:
        # an upgrade on a host whose vnetd wrote the other backend: nothing moves that nobody
        # asked to move; the rules stay enforced where they are, and the reason says how to move them
        kept = FIREWALL_BACKENDS.get(holding[0])
        if kept is None or not families <= set(kept.families):
            raise BackendRefused(f"auto: vnetd's rules are in {holding[0]}, which cannot write "
                                 f"{_sections(families)} chains, but the host's iptables is iptables-{variant}; "
                                 f"{fix}")
        return Selection(holding[0], requested, f"auto: vnetd's rules are in {holding[0]} and stay there, though "
                         f"the host's iptables is iptables-{variant} (firewall.backend: {name} moves them)",
                         holding)
    return Selection(name, requested, f"auto: the host's iptables is iptables-{variant}", holding)


def holds_vnetd_rules(backend: FirewallBackend) -> bool:
    """Whether ``backend`` holds vnetd's rules (False when it cannot be read: no root, no kernel support)."""
    try:
        return backend.has_vnetd_rules()
    except (BackendError, OSError):
        return False


def select_backend(desired: DesiredState, opened: Callable[[str], FirewallBackend] | None = None) -> Selection:
    """The backend ``desired`` uses on this host (``opened``: the backends already open,
    by name, to look into for ``auto``; by default each is opened for the look and closed).
    Raises ``BackendRefused`` when ``auto`` has no clear answer here."""
    from vnetd.backends.nftdetect import iptables_variant

    requested = desired.firewall_backend
    holding: list[str] = []
    if requested == AUTO_BACKEND:
        for name in FIREWALL_BACKENDS:
            if opened is not None:
                try:
                    backend: FirewallBackend = opened(name)
                except (BackendError, OSError):
                    continue  # not available here (no kernel support, no root): nothing of vnetd's in it
                if holds_vnetd_rules(backend):
                    holding.append(name)
                continue
            try:
                made = open_backend(name)
            except (BackendError, OSError):
                continue
            try:
                if holds_vnetd_rules(made):
                    holding.append(name)
            finally:
                made.close()
    origin = str(desired.firewall_backend_at) if desired.firewall_backend_at else ""
    variants = {4: iptables_variant("iptables"), 6: iptables_variant("ip6tables")}
    return choose(requested, families_of(desired), holding, variants, origin)


def _conforms(backend: FirewallFamilies) -> FirewallBackend:
    """mypy checks here that the families' dispatcher is itself a firewall backend."""
    return backend
