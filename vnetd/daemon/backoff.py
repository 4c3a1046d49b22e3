# SPDX-License-Identifier: MIT
"""Per-resource health: retry failures with back-off, detect a tool fighting vnetd.

* A resource whose apply fails is retried after 1 s, 2 s, 4 s ... up to 5 min,
  while every other resource goes on being managed.
* A resource repaired more than ``CONFLICT_REPAIRS`` times within ``CONFLICT_WINDOW``
  seconds is being reverted by someone else: it is left alone for 30 s, then 60 s,
  120 s ... (up to 30 min), and ``conflict.suspected`` is logged once per step.
  Without this, vnetd and another manager (NetworkManager, a script) would burn CPU
  flipping a link forever.
"""

from __future__ import annotations

import collections
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum

CONFLICT_REPAIRS = 5
CONFLICT_WINDOW = 60.0
FAILURE_BASE, FAILURE_MAX = 1.0, 300.0
CONFLICT_BASE, CONFLICT_MAX = 30.0, 1800.0


class Health(StrEnum):
    CONVERGED = "converged"
    DRIFTED = "drifted"
    FAILING = "failing"
    BACKED_OFF = "backed-off"


@dataclass
class ResourceState:
    repairs: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=64))
    failures: int = 0
    conflicts: int = 0
    hold_until: float = 0.0
    last_error: str | None = None
    last_repair: float | None = None
    conflict: bool = False


class HealthBook:
    """What vnetd knows about each resource across passes."""

    def __init__(self, conflict_repairs: int = CONFLICT_REPAIRS) -> None:
        """``conflict_repairs``: repairs within the window that mean a fight (0: never back off)."""
        self.resources: dict[str, ResourceState] = {}
        self.conflict_repairs = conflict_repairs
        #: resources failing or held for a conflict: the only ones a pass must look at
        self.troubled: set[str] = set()

    def _get(self, resource: str) -> ResourceState:
        return self.resources.setdefault(resource, ResourceState())

    def held(self, resource: str, now: float) -> bool:
        state = self.resources.get(resource)
        return state is not None and state.hold_until > now

    def next_release(self, now: float) -> float | None:
        times = [s.hold_until for r in self.troubled if (s := self.resources[r]).hold_until > now]
        return min(times) if times else None

    def repaired(self, resource: str, now: float) -> float | None:
        """Record a successful repair; returns the hold time if this looks like a fight."""
        state = self._get(resource)
        state.failures = 0
        state.last_error = None
        state.last_repair = now
        state.repairs.append(now)
        recent = [t for t in state.repairs if now - t <= CONFLICT_WINDOW]
        if self.conflict_repairs and len(recent) > self.conflict_repairs:

            hold = float(min(CONFLICT_BASE * 2 ** state.conflicts, CONFLICT_MAX))
            state.conflicts += 1
            state.conflict = True
            state.hold_until = now + hold
            self.troubled.add(resource)
            state.repairs.clear()
            return hold
        return None

    def failed(self, resource: str, error: str, now: float) -> float:
        state = self._get(resource)
        hold = float(min(FAILURE_BASE * 2 ** state.failures, FAILURE_MAX))
        state.failures += 1
        state.last_error = error
        state.hold_until = now + hold
        self.troubled.add(resource)
        return hold

    def settled(self, resource: str, now: float) -> None:
        """The resource is as declared: a conflict that stopped is forgotten after a quiet window."""
        state = self.resources.get(resource)
        if state is None:
            return
        if state.failures and state.hold_until <= now:
            state.failures = 0
            state.last_error = None
        if state.conflict and state.hold_until <= now and not any(now - t <= CONFLICT_WINDOW for t in state.repairs):
            state.conflict = False
            state.conflicts = 0
        if not state.failures and not state.conflict:
            self.troubled.discard(resource)

    def health(self, resource: str, drifted: bool, now: float) -> Health:
        state = self.resources.get(resource)
        if state is not None and state.hold_until > now:
            return Health.BACKED_OFF if state.conflict else Health.FAILING
        if state is not None and state.last_error:
            return Health.FAILING
        return Health.DRIFTED if drifted else Health.CONVERGED

    def forget(self, keep: AbstractSet[str]) -> None:
        """Drop what is known about every resource not in ``keep``."""
        for resource in list(self.resources):
            if resource not in keep:
                del self.resources[resource]
                self.troubled.discard(resource)
