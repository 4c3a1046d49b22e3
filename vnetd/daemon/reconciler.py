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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vnetd.backends.shadowing import ShadowWatch
from vnetd.daemon.backoff import Health, HealthBook
from vnetd.daemon.loading import LoadOutcome, load_now
from vnetd.desired.loader import Held, unloaded_warning
from vnetd.engine import Engine, PassResult
from vnetd.errors import BackendError, ConfigError
from vnetd.managers import Managers
from vnetd.model.health import ProbeResult, ProbeSpec
from vnetd.model.state import DesiredState
from vnetd.plan.actions import Action, Plan, jsonable
from vnetd.plan.planner import Observed

#: Sources whose passes apply the administrator's own changes (never counted as drift repairs).
CONFIG_SOURCES = {"startup", "files", "reload"}
#: Sources whose changes are checked by the health probes (not the first load: there is no
#: previous configuration to go back to)
PROBED_SOURCES = {"files", "reload"}


@dataclass
class PassSummary:
    source: str
    result: PassResult | None
    backed_off: list[str] = field(default_factory=list)
    #: the change of this pass failed the health probes and was rolled back
    rolled_back: bool = False


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
        self.shadow_watch = ShadowWatch(log)
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
        #: digest of the files the desired state was loaded from (loading.digest_of)
        self.loaded_digest: str | None = None
        #: files refused because a change made from them was rolled back (a trial's, or a
        #: probe's verdict): not adopted again until they change (``rejected_digest``)
        self.rejected_digest: str | None = None
        self.rejected: dict[str, Any] | None = None
        #: the state enforced before the last file-driven load; the rollback target
        self.previous_good: DesiredState | None = None
        #: a file-driven load was adopted and its change is not made yet: the next pass
        #: that changes something runs the probes before and after (``_probed_pass``)
        self.probe_pending = False
        self.previous_digest: str | None = None
        self.rollbacks = 0
        self.run_probes: Callable[[tuple[ProbeSpec, ...]], list[ProbeResult]] = _run_probes
        #: observe only (``vnetd run --observe`` or ``daemon: {observe: true}``): plan, report, change nothing
        self.observe_flag: bool | None = None
        self._drift_seen: set[str] = set()
        #: True when reconciling must stop at once (an `apply --confirm` trial began); asked
        #: before every round of a pass
        self.pause_check: Callable[[], bool] | None = None

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
        if outcome.digest and outcome.digest == self.rejected_digest and source != "reload":
            self.log.warning("config.rejected", source=source, files=list(self.rejected.get("files", []))
                             if self.rejected else [], reason=self.rejected.get("reason") if self.rejected else None,
                             note="these files were rolled back; the previous configuration stays enforced "
                                  "until they change again (or `vnetd reload`)")
            return False
        issues: tuple[Any, ...] = outcome.issues
        desired = outcome.desired
        warnings: list[str] = []
        if desired is not None:
            try:
                from vnetd.checks import finish

                warnings = finish(desired, [], environment=False)  # the firewall manager's watch reports those
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
        was_observing = self.observing
        if not self.probe_pending:  # (a state adopted but never applied is no rollback target)
            self.previous_good = previous if self.loaded else None
            self.previous_digest = self.loaded_digest
        self.probe_pending = source in PROBED_SOURCES and self.loaded and bool(
            desired.probes or (self.previous_good is not None and self.previous_good.probes))
        self.desired = desired
        self.loaded = True
        self.loaded_digest = outcome.digest or None
        self.rejected_digest = None
        self.rejected = None
        if self.observing != was_observing or (source == "startup" and self.observing):
            self.report_mode()
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

    @property
    def observing(self) -> bool:
        """Observe only: ``--observe``/``--no-observe`` if given, else the files' ``daemon: {observe:}``."""
        if self.observe_flag is not None:
            return self.observe_flag
        return bool(self.desired.daemon.observe)

    def report_mode(self) -> None:
        if self.metrics:
            self.metrics.observing.set(1 if self.observing else 0)
        by = "--observe" if self.observe_flag is not None else (
            "daemon.observe" if self.desired.daemon.observe is not None else "default")
        if self.observing:
            self.log.warning("daemon.observing", set_by=by, note="observe only: drift is reported "
                             "(drift.detected), nothing is changed")
        else:
            self._drift_seen = set()
            self.log.info("daemon.enforcing", set_by=by)

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

    def check_shadowing(self) -> bool:
        """Chains of others that drop what vnetd's rules accept: logged once per change
        (``firewall.shadowed``; a step of its own, so a failure here delays no repair)."""
        manager = self.engine.managers.firewall
        if manager.selection is None:
            return False  # no backend chosen (none yet, or auto refused): nothing of vnetd's to compare
        firewall = manager.backend
        return self.shadow_watch.check(self.desired.chains, lambda: str(firewall.name),
                                       lambda: firewall.show(self.desired.chains), manager.reads)

    # -- the pass ---------------------------------------------------------------------

    def run_pass(self, sources: set[str]) -> PassSummary:
        source = ",".join(sorted(sources)) or "timer"
        self.last_source = source
        if not self.loaded:
            return PassSummary(source, None)
        now = time.monotonic()
        held: list[str] = []
        drifted_reported: set[str] = set()
        observing = self.observing
        # observe only: each drift is reported once while it lasts (not again on every pass)
        already = self._drift_seen if observing else set()

        def filter_plan(plan: Plan) -> Plan:
            if self.pause_check is not None and self.pause_check():
                return Plan((), plan.problems)  # a trial began during this pass: leave its change alone
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
                    if key not in already:
                        self.log.info("drift.detected", resource=action.resource, field=action.field,
                                      want=jsonable(action.want), have=jsonable(action.have), source=source,
                                      **({"observe": True} if observing else {}))
            if observing:
                return Plan((), plan.problems, plan.notes)
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
        probed = self.probe_pending and bool(sources & PROBED_SOURCES) and not observing
        checkpoint, before = self._before_change(now) if probed else (None, [])
        result = self.engine.converge(self.desired, observer=self.observe, hook=hook, plan_filter=filter_plan,
                                      cached=True, on_stale=stale)
        if observing:
            self._drift_seen = drifted_reported
        rolled_back = False
        if checkpoint is not None and result.applied:
            rolled_back = self._after_change(checkpoint, before, source)
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

        self.last_plan = result.first_plan if observing else result.final_plan
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
        return PassSummary(source, result, held, rolled_back)

    # -- probes around a change the files asked for ----------------------------------------

    def _before_change(self, now: float) -> tuple[Any, list[ProbeResult]]:
        """Before the first change of a newly loaded state: the probes, and a checkpoint
        of what the change touches (None: nothing to change)."""
        from vnetd.trial import take_checkpoint

        self.probe_pending = False
        plan, observed = self.engine.plan(self.desired, self.observe)
        actions = tuple(a for a in plan.actions if not self.health.held(a.resource, now))
        if not actions:
            return None, []
        before = self.run_probes(self._probes())
        return take_checkpoint(self.engine, Plan(actions, plan.problems), observed), before

    def _probes(self) -> tuple[ProbeSpec, ...]:
        """The probes of the new configuration and of the one before (a change that drops
        a probe together with what it watches is still checked by it)."""
        probes = {p.name: p for p in (self.previous_good.probes if self.previous_good else ())}
        probes.update((p.name, p) for p in self.desired.probes)
        return tuple(probes.values())

    def _after_change(self, checkpoint: Any, before: list[ProbeResult], source: str) -> bool:
        """Probes that passed before the change and fail now: restore the checkpoint and go
        back to the previous configuration (``config.rolled_back``). True when rolled back."""
        from vnetd.trial import restore

        after = self.run_probes(self._probes())
        passed = {r.probe.name for r in before if r.ok}
        broken = [r for r in after if not r.ok and r.probe.name in passed]
        if not broken:
            if before or after:
                self.log.info("probes.passed", probes=[r.probe.name for r in after if r.ok],
                              failing_before_and_after=[r.probe.name for r in after if not r.ok])
            return False
        result = restore(self.engine, checkpoint)
        self.after_crash()
        files = list(self.desired.files)
        self.reject(self.loaded_digest, files, "health probes failed after the change: " + "; ".join(
            f"{r.probe.name} ({r.probe.describe()}): {r.detail}" for r in broken))
        self.enforce(self.previous_good or DesiredState(), self.previous_digest)
        self.rollbacks += 1
        if self.metrics:
            self.metrics.rollbacks.labels(reason="probe").inc()
        self.log.error("config.rolled_back", source=source, files=files,
                       failed_probes=[{"probe": r.probe.name, "check": r.probe.describe(), "detail": r.detail}
                                      for r in broken],
                       undone=list(checkpoint.changes), restored=[a.describe() for a in result.applied],
                       complete=result.restored,
                       failed=[f"{a.describe()}: {e}" for a, e in result.failed],
                       note="the previous configuration is enforced until the files change again")
        return True

    def reject(self, digest: str | None, files: list[str], reason: str) -> None:
        """Refuse these files (by digest) until they change: a change made from them was rolled back."""
        self.rejected_digest = digest
        self.rejected = {"files": files, "reason": reason, "at": round(time.time(), 3)}

    def enforce(self, desired: DesiredState, digest: str | None) -> None:
        """Go back to a state enforced before (after a rollback)."""
        self.desired = desired
        self.loaded_digest = digest
        self.previous_good = None
        self.probe_pending = False
        for manager in self.managers:
            manager.adopt(desired)  # (what the state invalidates is read again)
        self.declared = frozenset(self.resources_of(desired))
        self._forget_gone()

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
            "observing": self.observing,
            "rejected_files": self.rejected,
            "rollbacks": self.rollbacks,
            "shadowed": self.shadow_watch.status(),
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
        self.shadow_watch.close()


def _run_probes(probes: tuple[ProbeSpec, ...]) -> list[ProbeResult]:
    if not probes:
        return []
    from vnetd.backends.probes import run_probes

    return run_probes(probes)


def release_memory() -> None:
    """Give freed heap back to the kernel (glibc keeps it otherwise): a daemon's RSS
    then reflects what it holds, not the peak of its largest parse."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
