# SPDX-License-Identifier: MIT
"""The firewall backend of a state, as ``check``, ``plan`` and ``apply`` check it
(kept apart from vnetd.checks, which calls ``backend_checked`` once).

* a backend named must write every family the state declares chains of
  (``firewall6:`` needs a backend that writes IPv6);
* ``auto`` must have one clear answer on this host (``backends.firewall.choose``);
  its refusal is an issue at the setting's line, or the first chain's;
* a jump may name a chain the state does not declare if the tables the backend
  writes have it: the chains are read from that backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vnetd.errors import ConfigIssue
from vnetd.model.firewall import AUTO_BACKEND, FIREWALL_BACKENDS, SECTIONS
from vnetd.model.state import DesiredState

if TYPE_CHECKING:
    from vnetd.backends.firewall import Selection

#: (table, family) -> the chains there (None: not known); what ``validate_rules`` asks
ChainsReader = Callable[[str, int], "set[str] | None"]

_SELECTED: list[tuple[DesiredState, Selection | str]] = []


def firewall_selection(desired: DesiredState) -> Selection | None:
    """The firewall backend this state uses here, and why (chosen once per state); None
    when the state has no firewall: no chain declared, no backend named, no rule of
    vnetd's found in any backend. Raises ``BackendRefused`` when ``auto`` has no clear
    answer on this host."""
    from vnetd.backends.firewall import BackendRefused, select_backend

    if not _SELECTED or _SELECTED[0][0] is not desired:
        try:
            chosen: Selection | str = select_backend(desired)
        except BackendRefused as exc:
            chosen = exc.message
        _SELECTED[:] = [(desired, chosen)]
    selection = _SELECTED[0][1]
    if isinstance(selection, str):
        raise BackendRefused(selection)
    if desired.chains or desired.firewall_backend != AUTO_BACKEND or selection.holding:
        return selection
    return None


def refusal_issue(desired: DesiredState, message: str) -> ConfigIssue:
    """``auto`` refused: an issue at ``firewall.backend`` if written, else at the first chain."""
    where = desired.firewall_backend_at or (desired.chains[0].origin if desired.chains else None)
    return ConfigIssue(where.file if where else "?", where.line if where else 0, "firewall.backend", message)


def backend_issues(desired: DesiredState) -> list[ConfigIssue]:
    """A backend named that cannot write a family the state declares chains of."""
    name = desired.firewall_backend
    if name == AUTO_BACKEND or not desired.chains:
        return []
    entry = FIREWALL_BACKENDS[name]
    missing = sorted({c.family for c in desired.chains} - set(entry.families))
    if not missing:
        return []
    where = desired.firewall_backend_at
    able = [n for n, e in FIREWALL_BACKENDS.items() if set(missing) <= set(e.families)]
    sections = ", ".join(f"{SECTIONS[f]}:" for f in missing)
    return [ConfigIssue(where.file if where else "?", where.line if where else 0, "firewall.backend",
                        f"{name} does not write {sections} chains (it writes "
                        f"{', '.join(SECTIONS[f] + ':' for f in entry.families)}); valid for this state: "
                        f"{', '.join([AUTO_BACKEND, *able])}")]


def chains_reader(backend: str, legacy: ChainsReader) -> ChainsReader:
    """The chains of the tables ``backend`` writes (``legacy``: the reader of the legacy
    tables); the backend's tables are read once, on the first question."""
    if FIREWALL_BACKENDS[backend].variant == "legacy":
        return legacy
    from vnetd.backends.firewall import open_backend
    from vnetd.errors import BackendError

    known: dict[int, dict[str, set[str]] | None] = {}

    def read(table: str, family: int) -> set[str] | None:
        if not known:
            try:
                opened = open_backend(backend)
            except (BackendError, OSError):
                opened = None  # not root, no nf_tables: not known
            try:
                for each in FIREWALL_BACKENDS[backend].families:
                    try:
                        shown = opened.member(each).show(()) if opened is not None else None
                    except (BackendError, OSError):
                        shown = None
                    known[each] = None if shown is None else {t.name: {c.name for c in t.chains} for t in shown}
            finally:
                if opened is not None:
                    opened.close()
        chains = known.get(family)
        return None if chains is None else chains.get(table, set())

    return read


def backend_checked(desired: DesiredState, environment: bool, legacy: ChainsReader
                    ) -> tuple[list[ConfigIssue], Selection | None, ChainsReader]:
    """The issues of the state's backend, the backend chosen (``environment``: looked at on
    this host; None when not, or refused) and the reader of its chains."""
    from vnetd.backends.firewall import BackendRefused

    issues = backend_issues(desired)
    selection = None
    if environment and not issues:
        try:
            selection = firewall_selection(desired)
        except BackendRefused as exc:
            issues.append(refusal_issue(desired, exc.message))
    reader = chains_reader(selection.name, legacy) if selection is not None else legacy
    return issues, selection, reader
