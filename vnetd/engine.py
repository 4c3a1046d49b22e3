# SPDX-License-Identifier: MIT
"""One reconcile pass: observe -> plan -> apply -> verify (observe and plan again).

Used by ``vnetd apply`` (a full read each round) and by the daemon (its cached,
event-maintained view). A pass applies the plan's actions in order; an action whose
resource already failed in this pass is skipped (its errors would only repeat the
first one); then the state is observed again and re-planned. Up to ``MAX_ROUNDS``
rounds run while progress is made, so that a step that needs the result of another
(a veth peer that only exists once its pair is created) converges in one pass.
The pass has converged when the final plan is empty and nothing is left unfixable.

A failure on a stale view is not a failure of the resource. The daemon plans from
a cache kept by notifications, and the kernel announces one change in several
messages (deleting a bridge first releases its ports, then deletes it): a pass
woken by the first message can plan "attach eth1 to br0" for a br0 that is already
gone, and the kernel refuses. When the view changed between the plan and the
re-read that follows the round (``view_version``), the failed actions are re-planned
at once in the next round instead of being reported (``on_stale``); only a failure
on a view that did not change, or in the last round, is reported to ``hook`` (and
backed off by the daemon).

The engine knows no kind of resource: it asks each manager (``vnetd.managers``) to
observe and hands each run of consecutive actions to the manager that handles them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vnetd.errors import BackendError, DriftError
from vnetd.managers import Manager, Managers
from vnetd.model.state import DesiredState
from vnetd.plan.actions import Action, Plan
from vnetd.plan.planner import Observed, PlanMemo, plan
from vnetd.plan.render import drift_diff

MAX_ROUNDS = 3


@dataclass
class PassResult:
    first_plan: Plan
    final_plan: Plan
    applied: list[Action] = field(default_factory=list)
    failed: list[tuple[Action, BackendError]] = field(default_factory=list)
    duration_ms: float = 0.0
    rounds: int = 0

    @property
    def converged(self) -> bool:
        """Verified: the state observed after applying needs nothing and has no problem."""
        return self.final_plan.empty and not self.final_plan.problems


Observer = Callable[[DesiredState], Observed]
ActionHook = Callable[[Action, BackendError | None], None]
StaleHook = Callable[[Action, BackendError], None]


class Engine:
    """Passes over every kind's manager (``vnetd.managers``); it never names a kind."""

    def __init__(self, managers: Managers | None = None) -> None:
        self.managers = managers or Managers()
        self.memo = PlanMemo()

    # -- observe --------------------------------------------------------------------

    def observe(self, desired: DesiredState, cached: bool = False) -> Observed:
        """What the desired state touches: read in full, or (``cached``: the daemon) from
        the managers' caches, re-reading only what changed."""
        observed = Observed()
        for manager in self.managers.all:
            if cached:
                manager.observe_cached(desired, observed)
            else:
                manager.observe(desired, observed)
        return observed

    def plan(self, desired: DesiredState, observer: Observer | None = None, cached: bool = False
             ) -> tuple[Plan, Observed]:
        observed = observer(desired) if observer is not None else self.observe(desired, cached)
        return plan(desired, observed, self.memo), observed

    # -- apply ----------------------------------------------------------------------

    def _runs(self, actions: tuple[Action, ...]) -> list[tuple[Manager, list[Action]]]:
        """Split actions, in order, into runs that one manager carries out together."""
        runs: list[tuple[Manager, list[Action]]] = []
        for action in actions:
            manager = self.managers.of(action.op)
            if runs and runs[-1][0] is manager:
                runs[-1][1].append(action)
            else:
                runs.append((manager, [action]))
        return runs

    def execute(self, actions: tuple[Action, ...], observed: Observed, hook: ActionHook | None = None,
                report_failures: bool = True) -> tuple[list[Action], list[tuple[Action, BackendError]]]:
        """Run actions in order. Consecutive actions of one manager go to it together (netlink
        pipelines them, a firewall backend commits once per table); an action of a resource
        that already failed in this pass is skipped. ``hook`` hears of every applied action,
        and of failures when ``report_failures``."""
        applied: list[Action] = []
        failed: list[tuple[Action, BackendError]] = []
        broken: set[str] = set()

        def record(action: Action, error: BackendError | None) -> None:
            if error is None:
                applied.append(action)
            else:
                failed.append((action, error))
                broken.add(action.resource)
            if hook and (error is None or report_failures):
                hook(action, error)

        for manager, group in self._runs(actions):
            todo = [a for a in group if a.resource not in broken]
            if not todo:
                continue
            results = manager.apply(todo, observed)
            for each in self.managers.all:
                each.applied(results)
            for action, error in results:
                record(action, error)
        return applied, failed

    def _versions(self) -> dict[int, int | None]:
        return {id(m): m.view_version() for m in self.managers.all}

    def converge(self, desired: DesiredState, observer: Observer | None = None,
                 hook: ActionHook | None = None, plan_filter: Callable[[Plan], Plan] | None = None,
                 cached: bool = False, on_stale: StaleHook | None = None) -> PassResult:
        """Plan, apply, re-observe and re-plan until nothing is left or nothing progresses.

        ``plan_filter`` lets the daemon hold back resources it is backing off from.
        ``cached`` (the daemon): observe from the managers' caches; a failure on a view
        kept by notifications that changed since the plan (``Manager.view_version``) is
        re-planned at once and reported to ``on_stale`` instead of ``hook``.
        """
        start = time.perf_counter()
        first, observed = self.plan(desired, observer, cached)
        versions = self._versions() if cached else None
        current = plan_filter(first) if plan_filter else first
        result = PassResult(first, current)
        for round_no in range(MAX_ROUNDS):
            if current.empty:
                break
            result.rounds += 1
            applied, failed = self.execute(current.actions, observed, hook, report_failures=not cached)
            result.applied += applied
            current, observed = self.plan(desired, observer, cached)
            if plan_filter:
                current = plan_filter(current)
            retried: list[tuple[Action, BackendError]] = []
            if versions is not None:
                now = self._versions()
                last_round = round_no + 1 >= MAX_ROUNDS
                for action, error in failed:
                    key = id(self.managers.of(action.op))
                    # only a view kept by notifications can be stale; the others are read fresh
                    if not last_round and now[key] is not None and now[key] != versions[key]:
                        retried.append((action, error))
                        if on_stale is not None:
                            on_stale(action, error)
                    elif hook is not None:
                        hook(action, error)
                versions = now
            result.failed = [f for f in failed if f not in retried]  # earlier rounds' are retried in later ones
            if not applied and not retried:
                break

        result.final_plan = current
        result.duration_ms = (time.perf_counter() - start) * 1000
        return result


def verify(result: PassResult) -> None:
    """After a pass: raise DriftError with the desired/current diff of every resource
    that still differs (the final observation re-planned to something)."""
    remaining = result.final_plan.actions
    if remaining:
        raise DriftError(result.final_plan.resources(), drift_diff(remaining))
