# SPDX-License-Identifier: MIT
"""The firewall: ``firewall:`` and ``firewall6:`` chains, through whichever backend is used.

Generic over ``backends.firewall.FirewallBackend``: the backend is the one
``firewall.backend`` names, or the one ``auto`` selects
(``backends.firewall.select_backend``), chosen once per desired state; every
backend is opened through its registration (model.firewall.FIREWALL_BACKENDS)
behind ``FirewallFamilies`` (one instance per address family).

When ``auto`` has no clear answer on this host (``BackendRefused``: vnetd's rules
in two backends, ``iptables`` and ``ip6tables`` of different variants...), the
firewall is not touched at all: ``check``/``plan``/``apply`` refuse the state with
the reason (vnetd.checks), the daemon logs ``firewall.backend_refused`` once and
each pass's plan carries the reason as a problem (never "converged").

Backends no longer used that still hold vnetd's rules (the setting changed, or
``auto`` chose another backend) are *retired*: their tables holding vnetd's rules
are observed too, and the planner prunes vnetd's rules and owned chains there
(plan.firewall.plan_retired); nothing else of them is touched.

The daemon plans from the last parsed tables, re-read only when vnetd wrote them,
when the backend's events say another writer changed them (nf_tables
notifications: ``event_fileno``/``drain_events``, a pass at once), or, for a
backend without events (the legacy tables), when the periodic cheap check says
so (``changed``). The retired backends are looked at on each load, on the slow
timer and after vnetd pruned them, never in a quiet pass.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vnetd.errors import BackendError
from vnetd.managers.base import BaseManager, Results
from vnetd.model.firewall import AUTO_BACKEND, FIREWALL_BACKENDS, SECTIONS, ObservedTable
from vnetd.model.state import DesiredState
from vnetd.plan.actions import FIREWALL_OPS, Action, Op, PruneChain
from vnetd.plan.planner import Observed

if TYPE_CHECKING:
    from vnetd.backends.firewall import FirewallFamilies, Selection
    from vnetd.backends.nftdetect import BackendWatch


def _has_tags(table: ObservedTable) -> bool:
    return any(r.tag for c in table.chains.values() for r in c.rules)


@dataclass
class ShowNames:
    """What ``show`` found: every chain name there is, and the names asked for that matched."""

    candidates: set[str] = field(default_factory=set)
    found: set[str] = field(default_factory=set)


class FirewallManager(BaseManager):
    """``firewall/`` and ``firewall6/`` resources; forgetting a chain prunes vnetd's rules."""

    name = "netfilter"
    #: the pass source when the backend's events (nf_tables notifications) ask for a pass
    event_source = "nftables"
    prunes = True
    prefixes = ("firewall/", "firewall6/")

    def __init__(self, log: Any) -> None:
        self.log = log
        self._open: dict[str, FirewallFamilies] = {}
        self.selection: Selection | None = None
        self._selected_for: DesiredState | None = None
        #: the daemon's view: the last parsed tables, whether they must be read again, what ``changed`` watches
        self.tables: dict[str, ObservedTable] | None = None
        self.dirty = True
        self.watch: list[str] = []
        #: how often the tables were read (what the daemon's shadowing check keys its reading of vnetd's chains on)
        self.reads = 0
        #: backends no longer used that still hold vnetd's rules: name -> those tables
        self.retired: dict[str, dict[str, ObservedTable]] = {}
        self._retired_stale = True
        self._watch: BackendWatch | None = None
        #: why ``auto`` refused the desired state it was last asked about (None: not refused)
        self.refused: str | None = None

    # -- the backend -------------------------------------------------------------------

    def opened(self, name: str) -> FirewallFamilies:
        """The backend registered as ``name``, opened once."""
        backend = self._open.get(name)
        if backend is None:
            from vnetd.backends.firewall import open_backend

            backend = self._open[name] = open_backend(name)
        return backend

    def select(self, desired: DesiredState) -> Selection:
        """The backend ``desired`` uses (chosen once per desired state); raises
        ``BackendRefused`` when ``auto`` has no clear answer here."""
        from vnetd.backends.firewall import BackendRefused, select_backend

        if self._selected_for is desired:
            if self.refused is not None:
                raise BackendRefused(self.refused)
            if self.selection is not None:
                return self.selection
        self._selected_for = desired
        try:
            selection = select_backend(desired, self.opened)
        except BackendRefused as exc:
            self.refused = exc.message
            raise
        self.refused = None
        self._set(selection)
        return selection

    def selected(self, desired: DesiredState) -> Selection | None:
        """``select``, None when refused (``refused`` says why)."""
        from vnetd.backends.firewall import BackendRefused

        try:
            return self.select(desired)
        except BackendRefused:
            return None

    def _set(self, selection: Selection) -> None:
        previous, self.selection = self.selection, selection
        if previous is None or previous.name != selection.name:
            self.tables = None  # another backend: nothing read from the last one is valid
            self.dirty = True
            self.watch = []
            self._retired_stale = True

    def use(self, name: str) -> FirewallFamilies:
        """Use ``name`` whatever a state file says (restoring a checkpoint recorded through
        it); the next desired state planned chooses again."""
        from vnetd.backends.firewall import Selection

        if self.selection is None or self.selection.name != name:
            self._set(Selection(name, name, "the checkpoint was recorded through it"))
        self._selected_for = None
        return self.backend

    @property
    def backend(self) -> FirewallFamilies:
        """The backend in use (``select`` or ``use`` first)."""
        assert self.selection is not None, "no firewall backend selected yet"
        return self.opened(self.selection.name)

    def in_use(self, desired: DesiredState) -> bool:
        """Whether the firewall concerns this state: chains declared, a backend named, or
        vnetd's rules found in some backend (to prune)."""
        selection = self.selected(desired)
        holding = selection is not None and bool(selection.holding)
        return bool(desired.chains) or desired.firewall_backend != AUTO_BACKEND or holding

    # -- what it owns ------------------------------------------------------------------

    def handles(self, op: Op) -> bool:
        return isinstance(op, FIREWALL_OPS)

    def resources(self, desired: DesiredState) -> list[str]:
        return [c.resource for c in desired.chains]

    def adopt(self, desired: DesiredState) -> None:
        """A new desired state: the backend is chosen again (and logged), the tables read again."""
        from vnetd.backends.firewall import BackendRefused

        try:
            selection = self.select(desired)
        except BackendRefused as exc:
            self.log.error("firewall.backend_refused", message=exc.message,
                           note="the firewall is left as it is until the state or the host says which backend")
            self.dirty = True
            return
        except (BackendError, OSError) as exc:
            self.log.error("firewall.backend_failed", error=str(exc))
            return
        self.dirty = True
        self._retired_stale = True
        if self.in_use(desired):
            self.log.info("firewall.backend", backend=selection.name, reason=selection.reason,
                          requested=selection.requested)
        self.watch_others(desired)

    # -- observing ---------------------------------------------------------------------

    def _refused(self, desired: DesiredState, observed: Observed) -> bool:
        """Record a refused choice as the plan's problem: nothing of the firewall is read or written."""
        if self.selected(desired) is not None:
            return False
        from vnetd.plan.actions import Problem

        why = f"firewall.backend: {self.refused or 'no backend chosen'}; the firewall is left as it is"
        observed.problems += [Problem(c.resource, why) for c in desired.chains] or [Problem("firewall.backend", why)]
        return True

    def observe(self, desired: DesiredState, observed: Observed) -> None:
        if self._refused(desired, observed):
            return
        backend = self.backend
        if desired.chains or backend.has_vnetd_rules():
            observed.firewall = backend.observe(desired.chains)
            observed.rule_ids = backend.rule_ids(desired.chains)
        observed.firewall_retired = self._read_retired()

    def observe_cached(self, desired: DesiredState, observed: Observed) -> None:
        if self._refused(desired, observed):
            return
        backend = self.backend
        if desired.chains or self.tables or self.dirty:
            if self.dirty or self.tables is None:
                self.tables = backend.observe(desired.chains)
                self.reads += 1
                self.watch = backend.tables_to_read(desired.chains)
                self.dirty = False
            if desired.chains or any(_has_tags(t) for t in self.tables.values()):
                observed.firewall = self.tables
                observed.rule_ids = backend.rule_ids(desired.chains)
        if self._retired_stale:
            self.retired = self._read_retired()
            self._retired_stale = False
        observed.firewall_retired = self.retired

    def _read_retired(self) -> dict[str, dict[str, ObservedTable]]:
        """The tables of every other backend that hold vnetd's rules (those are pruned)."""
        from vnetd.backends.firewall import holds_vnetd_rules

        assert self.selection is not None
        retired: dict[str, dict[str, ObservedTable]] = {}
        for name in FIREWALL_BACKENDS:
            if name == self.selection.name:
                continue
            try:
                other = self.opened(name)
            except (BackendError, OSError):
                continue  # not available here (no kernel support, no root): nothing of vnetd's in it
            if not holds_vnetd_rules(other):
                self._open.pop(name, None)
                other.close()
                continue
            tables = {key: table for key, table in other.observe(()).items() if _has_tags(table)}
            if tables:
                retired[name] = tables
        return retired

    def changed(self, desired: DesiredState) -> bool:
        """The other firewalls of the namespace (logged once per change), and, for a backend
        without events, the cheap "changed since the last read?" of the tables watched."""
        self.watch_others(desired)
        if self.selection is None:
            return False
        backend = self.backend
        if backend.event_fileno() is not None:
            return False  # its events say when it changed: no polling
        if self.watch or desired.chains:
            try:
                changed: Sequence[str] = backend.changed(self.watch)
            except BackendError as exc:
                self.log.warning("firewall.check_failed", error=str(exc))
                changed = self.watch
            if changed:
                self.dirty = True
                return True
        return False

    def watch_others(self, desired: DesiredState) -> None:
        """Log other firewalls beside vnetd's tables (``firewall.backend_mismatch``), once per change."""
        if self._watch is None:
            from vnetd.backends.nftdetect import BackendWatch

            self._watch = BackendWatch(self.log)
        self._watch.check({c.family for c in desired.chains},
                          self.selection.name if self.selection is not None else "iptables-legacy")

    # -- events ------------------------------------------------------------------------

    def event_fileno(self) -> int | None:
        return self.backend.event_fileno() if self.selection is not None else None

    def drain_events(self) -> bool:
        """Another writer changed the backend's tables (or notifications were lost): read them again."""
        if self.selection is None or not self.backend.drain_events():
            return False
        self.dirty = True
        return True

    def invalidate(self) -> None:
        self.dirty = True
        self._retired_stale = True

    def resync(self) -> None:
        self._retired_stale = True
        if self.refused is not None:
            self._selected_for = None  # ask the host again: it may say now

    # -- applying ----------------------------------------------------------------------

    def apply(self, actions: Sequence[Action], observed: Observed) -> Results:
        """The backend in use carries out the actions (one commit per table); pruning in a
        retired backend goes to that backend."""
        by_backend: dict[str, list[Action]] = {}
        for action in actions:
            op = action.op
            by_backend.setdefault(op.backend if isinstance(op, PruneChain) else "", []).append(action)
        results: Results = []
        for name, todo in by_backend.items():
            backend = self.opened(name) if name else self.backend
            try:
                results += backend.apply(todo)
            except BackendError as exc:
                # the whole batch could not start (the xtables lock held by another tool,
                # a table that cannot be opened): each of its resources failed
                results += [(action, exc) for action in todo]
            if name:
                self._retired_stale = True
        self.dirty = True
        return results

    # -- status and show ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        if self.selection is None:
            return {}
        return {"firewall_backend": self.selection.name, "firewall_backend_reason": self.selection.reason}

    def show(self, desired: DesiredState | None, names: Collection[str] = (),
             sections: Collection[str] | None = None, seen: ShowNames | None = None) -> str:
        """Every family's section as the backend in use holds it (foreign rules, chains and
        tables as comments), then the nf_tables tables of other tools, named. ``names``:
        only the chains named so (CHAIN or TABLE/CHAIN); ``sections``: only those
        (``firewall``, ``firewall6``); ``seen``: gets the chain names there are and
        those that matched ``names`` (for ``vnetd show``'s did-you-mean)."""
        from vnetd.backends.nftdetect import nft_tables, own_nft_tables
        from vnetd.show import chain_matches, firewall_text, nft_comment

        desired = desired if desired is not None else DesiredState()
        selection = self.selected(desired)
        if selection is None:
            return f"# firewall: not shown: {self.refused}\n"
        backend = self.backend
        entry = FIREWALL_BACKENDS[selection.name]
        text = f"# {selection.line}\n"
        for family, section in SECTIONS.items():
            if family not in entry.families or (sections is not None and section not in sections):
                continue
            mine = tuple(c for c in desired.chains if c.family == family)
            shown = backend.member(family).show(mine)
            if seen is not None:
                seen.candidates |= {c.name for t in shown for c in t.chains}
                seen.found |= {n for n in names for t in shown for c in t.chains if chain_matches(t.name, c.name, (n,))}
            part = firewall_text(shown, {(c.table, c.name) for c in mine}, (), names=names, section=section,
                                 variant=entry.variant)
            if family == 4 and desired.firewall_backend != AUTO_BACKEND:
                # named in the files: named here too, so that the output fed back plans nothing
                named = f"firewall:\n  backend: {selection.name}\n"
                part = named + part.removeprefix("firewall:\n")
            text += part
        if names:
            return text
        own = own_nft_tables(selection.name)
        return text + nft_comment([t for t in nft_tables() or () if t not in own])

    def close(self) -> None:
        for backend in self._open.values():
            backend.close()
        self._open.clear()
