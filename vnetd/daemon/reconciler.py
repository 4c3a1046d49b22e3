# SPDX-License-Identifier: MIT
"""One pass of the daemon, from wake-up reasons to ``reconcile.done``.

The daemon plans from caches instead of re-reading the world (a full pyroute2-sized
read of 2,500 links costs more than the whole 100 ms budget of a pass). Each kind's
manager (``vnetd.managers``) keeps its own: links, addresses, routes and rules from
netlink notifications (an overrun or the slow timer re-dumps everything); the
firewall's parsed tables, re-read only when its backend's events or the cheap check
say they changed, or after vnetd wrote them; sysctls read every pass (a few small
files); libvirt re-read on its events, after vnetd acted on it, and on resync. The
reconciler only iterates the managers: it never names a kind.

Events caused by vnetd's own writes are drained the same way: they update the
cache (the verify step of the pass sees them) and, at most, cause one more pass
that finds nothing to do.

Loading the files is not done here but in a ``LoadJob`` (daemon/loading.py), off
the repair path; ``adopt`` takes its outcome. Per-resource health is kept only
for what can still need it: resources declared, the managers' transient resources
(running guests' taps), and resources still failing or fought over (``_forget_gone``).
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from typing import Any

from vnetd.daemon.backoff import Health, HealthBook
from vnetd.daemon.loading import LoadOutcome, load_now
from vnetd.desired.loader import Held, unloaded_warning
from vnetd.engine import Engine, PassResult
from vnetd.errors import BackendError, ConfigError
from vnetd.managers import Managers
from vnetd.model.state import DesiredState
from vnetd.plan.actions import Action, Plan, jsonable
from vnetd.plan.planner import Observed

#: Sources whose passes apply the administrator's own changes (never counted as drift repairs).
CONFIG_SOURCES = {"startup", "files", "reload"}


@dataclass
class PassSummary:
    source: str
    result: PassResult | None
    backed_off: list[str] = field(default_factory=list)


class Reconciler:
    """Owns the desired state, the caches and the per-resource health; runs passes."""

    def __init__(self, state_dir: str, log: Any, engine: Engine | None = None,
                 metrics: Any = None, conflict_repairs: int = 5) -> None:
        self.state_dir = state_dir
        self.log = log
        self.engine = engine or Engine(Managers(log))
        self.managers = self.engine.managers.all
        self.metrics = metrics
        self.desired = DesiredState()
        self.loaded = False
        self.load_errors: list[str] = []
        self.health = HealthBook(conflict_repairs)
        #: every resource the desired state declares (health of anything else is forgotten)
        self.declared: frozenset[str] = frozenset()
        #: files gone (or emptied) whose declarations are still enforced, until a reload confirms it
        self.held: tuple[Held, ...] = ()
        self._holds_reported: set[str] = set()
        self._unloaded_reported: set[str] = set()
        #: the managers' transient resources when health was last pruned (``_forget_gone``)
        self.transient: frozenset[str] = frozenset()
        self.last_plan = Plan()
        self.last_pass: float | None = None
        self.passes = 0
        self.last_source = ""

    # -- configuration ----------------------------------------------------------------

    def reload(self, source: str) -> bool:
        """Load the state directory now, in this thread (benchmarks; the daemon uses a LoadJob)."""
        return self.adopt(load_now(self.state_dir, source, self.desired, self.hold_candidates(source)))

    def hold_candidates(self, source: str) -> frozenset[str]:
        """Files whose disappearance is held for this load: those loaded (or held) so far,
        for a load caused by file events. A reload (SIGHUP, ``vnetd reload``, after
        ``vnetd apply``) is the administrator's confirmation: nothing is held."""
        if source != "files" or not self.loaded:
            return frozenset()
        return frozenset(self.desired.files) | frozenset(h.file for h in self.held)

    def adopt(self, outcome: LoadOutcome) -> bool:
        """Take a load's outcome; on any error keep enforcing the last valid state."""
        source = outcome.source
        self._report_unloaded(outcome.unloaded)
        if outcome.crash is not None:
            self.log.error("pass.crashed", step="load", source=source, traceback=outcome.crash,
                           keeping="last valid state" if self.loaded else "nothing (no valid state yet)")
            return False
        issues: tuple[Any, ...] = outcome.issues
        desired = outcome.desired
        warnings: list[str] = []
        if desired is not None:
            try:
                from vnetd.checks import finish

                warnings = finish(desired, [], environment=False)  # backend_watch reports those
            except ConfigError as exc:
                issues, desired = exc.issues, None
        if desired is None:
            self.load_errors = [str(i) for i in issues]
            self.log.error("config.invalid", source=source, errors=self.load_errors, error_count=len(issues),
                           keeping="last valid state" if self.loaded else "nothing (no valid state yet)")
            if self.metrics:
                self.metrics.config_errors.inc()
            return False
        previous = self.desired
        self.desired = desired
        self.loaded = True
        self.load_errors = []
        for warning in warnings:
            event, _, message = warning.partition(": ")
            self.log.warning(event if event.startswith("firewall.") else "config.warning", message=message)
        self._report_holds(outcome.held)
        self._log_forgotten(previous, desired)
        for manager in self.managers:
            manager.adopt(desired)
        self.declared = frozenset(self.resources_of(desired))
        self._forget_gone()
        release_memory()  # the YAML node tree of a big state is garbage now
        self.log.info("config.loaded", source=source, files=list(desired.files),
                      interfaces=len(desired.interfaces), routes=len(desired.routes),
                      sysctls=len(desired.sysctls), chains=len(desired.chains),
                      networks=len(desired.libvirt.networks) if desired.libvirt else 0,
                      held=[h.file for h in self.held], duration_ms=round(outcome.duration_s * 1000, 1))
        return True

    def _report_holds(self, held: tuple[Held, ...]) -> None:
        """``config.file_removed`` once per file that disappeared, with what would go."""
        for hold in held:
            if hold.file in self._holds_reported:
                continue
            prune = [r for r in hold.resources if self.prunes(r)]
            release = [r for r in hold.resources if not self.prunes(r)]
            if hold.kept:
                self.log.warning("config.file_removed", file=hold.file, kept=True, would_prune=prune,
                                 would_release=release, note="still enforced: the removal takes effect on "
                                 "`vnetd reload` (or SIGHUP, or `vnetd apply`)")
            else:
                self.log.warning("config.file_removed", file=hold.file, kept=False, would_prune=prune,
                                 would_release=release, reason=hold.reason)
        self.held = tuple(h for h in held if h.kept)
        self._holds_reported = {h.file for h in self.held}

    def _report_unloaded(self, names: tuple[str, ...]) -> None:
        """One ``config.file_ignored`` per file that is not loaded (again if it comes back)."""
        for name in names:
            if name not in self._unloaded_reported:
                self.log.warning("config.file_ignored", file=f"{self.state_dir}/{name}",
                                 message=unloaded_warning(self.state_dir, name))
        self._unloaded_reported = set(names)

    def _forget_gone(self) -> None:
        """Drop the health of resources that are gone: no longer declared (and no longer
        failing or fought over, e.g. a chain still being pruned), or a guest's tap that
        vanished. Without this, the book grows for the life of the daemon as VMs come and go."""
        self.transient = self._transient()
        keep = self.declared | self.transient | self.health.troubled
        if any(r not in keep for r in self.health.resources):
            self.health.forget(keep)

    def _transient(self) -> frozenset[str]:
        return frozenset().union(*(m.transient_resources() for m in self.managers))

    def resync(self) -> None:
        """The slow timer (and the start): every manager reads again what it may have missed."""
        for manager in self.managers:
            manager.resync()

    def start(self, post: Any) -> list[str]:
        """After READY and after a reload: the managers connect what had to wait (libvirt).
        Returns the sources of the passes that what they connected needs."""
        return [m.event_source for m in self.managers if m.start(self.desired, post)]

    def after_crash(self) -> None:
        """A pass died half-way: trust no cache."""
        for manager in self.managers:
            manager.invalidate()

    def prunes(self, resource: str) -> bool:
        """Whether forgetting ``resource`` deletes what vnetd made of it (a firewall chain's rules)."""
        return any(m.prunes and m.owns(resource) for m in self.managers)

    def resources_of(self, desired: DesiredState) -> list[str]:
        """Every resource name the desired state manages (for status and forgetting)."""
        return [r for m in self.managers for r in m.resources(desired)]

    def _log_forgotten(self, old: DesiredState, new: DesiredState) -> None:
        """Removing something from the files stops managing it (SPEC: forgetting vs deleting)."""
        gone = sorted(set(self.resources_of(old)) - set(self.resources_of(new)))
        for resource in gone:
            if self.prunes(resource):
                self.log.info("resource.pruned", resource=resource, note="vnetd's tagged rules are removed")
            else:
                self.log.info("resource.released", resource=resource,
                              note="no longer managed; left as it is (use state: absent to delete)")

    # -- observing --------------------------------------------------------------------

    def observe(self, desired: DesiredState) -> Observed:
        """The cached observation a pass plans from (each manager's caches)."""
        return self.engine.observe(desired, cached=True)

    # -- cheap checks for what sends no events ------------------------------------------

    def check_unevented(self) -> list[str]:
        """What sends no events (netfilter's legacy tables, sysctls, libvirt's autostart):
        the managers that changed since the last pass (cheap, no parsing)."""
        return [m.name for m in self.managers if m.changed(self.desired)]

    # -- the pass ---------------------------------------------------------------------

    def run_pass(self, sources: set[str]) -> PassSummary:
        source = ",".join(sorted(sources)) or "timer"
        self.last_source = source
        if not self.loaded:
            return PassSummary(source, None)
        now = time.monotonic()
        held: list[str] = []
        drifted_reported: set[str] = set()

        def filter_plan(plan: Plan) -> Plan:
            keep = []
            for action in plan.actions:
                if self.health.held(action.resource, now):
                    if action.resource not in held:
                        held.append(action.resource)
                    continue
                keep.append(action)
                key = f"{action.resource}\0{action.field}"
                if key not in drifted_reported:
                    drifted_reported.add(key)
                    self.log.info("drift.detected", resource=action.resource, field=action.field,
                                  want=jsonable(action.want), have=jsonable(action.have), source=source)
            return Plan(tuple(keep), plan.problems, plan.notes)

        def hook(action: Action, error: BackendError | None) -> None:
            fields = dict(resource=action.resource, field=action.field, want=jsonable(action.want),
                          have=jsonable(action.have), source=source)
            if error is None:
                self.log.info("action.applied", **fields)
                if self.metrics:
                    self.metrics.repairs.labels(kind=action.resource.split("/", 1)[0]).inc()
            else:
                hold = self.health.failed(action.resource, str(error), time.monotonic())
                self.log.error("action.failed", error=error.message, errno=error.errno,
                               retry_in_s=round(hold, 1), **fields)

        def stale(action: Action, error: BackendError) -> None:
            self.log.debug("action.replanned", resource=action.resource, field=action.field, error=error.message,
                           note="failed on a view that changed since the plan; planned again at once")

        start = time.perf_counter()
        result = self.engine.converge(self.desired, observer=self.observe, hook=hook, plan_filter=filter_plan,
                                      cached=True, on_stale=stale)
        done = time.monotonic()
        repaired = {a.resource for a in result.applied}
        if not (sources & CONFIG_SOURCES):
            for resource in sorted(repaired):
                hold = self.health.repaired(resource, done)
                if hold is not None:
                    self.log.warning("conflict.suspected", resource=resource,
                                     repairs_in_window=f">{self.health.conflict_repairs} in 60s", backoff_s=hold,

                                     note="something keeps reverting this; vnetd leaves it alone for a while")
        else:
            for resource in repaired:
                self.health.settled(resource, done)
        remaining = {a.resource for a in result.final_plan.actions}
        for resource in sorted(self.health.troubled - remaining - repaired):
            self.health.settled(resource, done)
        for problem in result.final_plan.problems:
            self.log.warning("resource.problem", resource=problem.resource, message=problem.message)
        if len(result.applied) >= 100:
            release_memory()  # a big apply leaves table copies and netlink buffers behind
        if result.applied or result.failed or self._transient() != self.transient:
            self._forget_gone()  # (a guest stopped: its taps' health goes with it)

        self.last_plan = result.final_plan
        self.last_pass = done
        self.passes += 1
        duration_ms = (time.perf_counter() - start) * 1000
        if self.metrics:
            self.metrics.pass_duration.observe(duration_ms / 1000)
        busy = result.applied or result.failed or held or result.final_plan.actions
        log = self.log.info if busy else self.log.debug
        log("reconcile.done", source=source, duration_ms=round(duration_ms, 2), changes=len(result.applied),
            failed=len(result.failed), drifted=len(result.final_plan.actions), backed_off=len(held),
            problems=len(result.final_plan.problems), rounds=result.rounds)
        return PassSummary(source, result, held)

    # -- status -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        wall = time.time()
        drifted = {a.resource for a in self.last_plan.actions}
        # what the last plan says vnetd cannot act on (a firewall backend refused) is not converged
        problems = {p.resource: p.message for p in self.last_plan.problems}
        resources = []
        counts: dict[str, int] = {h.value: 0 for h in Health}
        for resource in self.resources_of(self.desired):
            health = self.health.health(resource, resource in drifted, now)
            state = self.health.resources.get(resource)
            error = state.last_error if state else None
            if health is Health.CONVERGED and resource in problems:
                health, error = Health.FAILING, problems[resource]
            counts[health.value] += 1
            last_repair = None
            if state is not None and state.last_repair is not None:
                last_repair = round(wall - (now - state.last_repair), 3)
            resources.append({"resource": resource, "state": health.value, "last_repair": last_repair,
                              "error": error})
        return {
            "state_dir": self.state_dir,
            "files": list(self.desired.files),
            "config_valid": not self.load_errors,
            "last_load_errors": self.load_errors,
            "passes": self.passes,
            "last_pass_age_s": round(now - self.last_pass, 3) if self.last_pass else None,
            "last_source": self.last_source,
            "counts": counts,
            "resources": resources,
            "held_files": [{"file": h.file, "resources": list(h.resources)} for h in self.held],
            "health_tracked": len(self.health.resources),
            "unloaded_files": sorted(self._unloaded_reported),
            **{k: v for m in self.managers for k, v in m.status().items()},
        }

    def summary_line(self) -> str:
        counts = self.status()["counts"]
        parts = [f"{n} {state}" for state, n in counts.items() if n]
        text = ", ".join(parts) or "nothing managed"
        if self.load_errors:
            text += f"; config invalid ({len(self.load_errors)} errors)"
        return text

    def close(self) -> None:
        """Close every manager's sockets and connections."""
        self.engine.managers.close()


def release_memory() -> None:
    """Give freed heap back to the kernel (glibc keeps it otherwise): a daemon's RSS
    then reflects what it holds, not the peak of its largest parse."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
