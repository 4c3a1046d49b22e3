# SPDX-License-Identifier: MIT
"""The daemon's event loop: one thread owns all state and runs every pass.

The loop waits in ``select()`` on the wake-up pipe and every manager's event
descriptor (netlink notifications, nf_tables notifications when the firewall
backend has them), with a timeout for the next timer (the periodic check of what
sends no events, slow resync, debounced load, a back-off ending, a crashed pass's
retry, the systemd watchdog, a restart of the state directory's watch). It never
names a kind of resource: it iterates the managers (``vnetd.managers``).
Wake-up reasons are coalesced; each
wake-up runs at most one pass, and passes never overlap. Other threads (control
socket, libvirt's event loop, a load job, the metrics listener, watchdog's
observer of the state directory) only post wake-ups; signal handlers too.

The daemon never dies of an exception (SPEC section 5). Every step of an
iteration (the pass, the periodic check, the resync, reading a manager's events
or what the state directory's watch noted, connecting libvirt) is guarded: an
unexpected exception is logged once, with its traceback, as ``pass.crashed``
(``step`` says which), the caches are marked stale, and that step alone is
skipped until it is retried after 1, 2, 4 ... ``CRASH_MAX`` seconds, while the other steps, signals, status requests and
loads go on. Errors the backends expect (``BackendError``) never get here: they
are per-resource failures with back-off.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import select
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from vnetd import log as vlog
from vnetd.daemon.wake import SignalRelay, Wakeup

#: how long a pass waits for the xtables lock another tool holds (then: firewall back-off)
XTABLES_LOCK_WAIT = 1.0
HOLD_AFTER_NOOP = 0.05  # minimum spacing of passes that only found held-back resources
STATUS_EVERY = 5.0  # seconds between sd_notify STATUS= updates
STATUS_WAIT = 5.0  # how long `vnetd status` waits for a busy main loop
CRASH_FIRST, CRASH_MAX = 1.0, 60.0  # retry delays after a crashed step


class _Request:
    """A control-socket request the main loop answers (it owns the state)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: dict[str, Any] | None = None


class Daemon:
    def __init__(self, args: argparse.Namespace, wake: Wakeup, signals: SignalRelay, control: Any,
                 metrics: Any, metrics_server: Any = None) -> None:
        from vnetd.backends import xtlock
        from vnetd.daemon.notify import Notifier
        from vnetd.daemon.reconciler import Reconciler

        xtlock.set_wait(XTABLES_LOCK_WAIT)

        self.args = args
        self.log = vlog.get_logger()
        self.wake = wake
        self.signals = signals
        self.control = control
        self.metrics = metrics
        self.metrics_server = metrics_server
        self.notifier = Notifier()
        self.reconciler = Reconciler(args.state_dir, self.log, metrics=self.metrics,
                                     conflict_repairs=args.conflict_repairs)
        self.snapshot: dict[str, Any] = {}
        self.snapshot_at = 0.0
        self.status_requests: queue.Queue[_Request] = queue.Queue()
        self.reload_requests: queue.Queue[_Request] = queue.Queue()
        self.job: Any = None  # the running LoadJob
        self.job_waiters: list[_Request] = []
        self.reload_waiters: list[_Request] = []
        self.pending_loads: set[str] = set()
        self.started = False  # the startup load was adopted (valid or not)
        self.ready = False
        #: per step: crashes in a row, and until when the step is skipped
        self.crashes: dict[str, int] = {}
        self.crash_until: dict[str, float] = {}
        self.held_reasons: set[str] = set()
        self.watcher: Any = None
        self.debounce: Any = None
        self.files_wanted = False  # the watch posted (or is due): read what it noted
        self.trials: Any = None  # daemon.trials.TrialWatch
        #: wake-up reasons that came while reconciling was paused for a trial
        self.paused_reasons: set[str] = set()
        #: a trial was confirmed: no pass until the files are read again
        self.resume_after_load = False
        self.reconciler.observe_flag = getattr(args, "observe", None)

    @property
    def stopping(self) -> bool:
        return self.signals.stop_requested

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        from vnetd.daemon.files import WAKE_REASON, FileDebounce, StateDirWatcher

        rec = self.reconciler
        if self.stopping:  # SIGTERM while starting: nothing was done yet
            self.control.stop()
            rec.close()
            return 0
        from vnetd.daemon.trials import TrialWatch

        self.log.info("daemon.starting", pid=os.getpid(), state_dir=self.args.state_dir, netns=self.args.netns,
                      check_interval_s=self.args.check_interval, resync_interval_s=self.args.resync_interval,
                      observe=rec.observe_flag)
        if rec.observe_flag:
            rec.report_mode()
        self.trials = TrialWatch(self.log)
        rec.pause_check = self.trials.appeared
        self.watch_reason = WAKE_REASON
        self.watcher = StateDirWatcher(self.args.state_dir, self.wake.post)
        self.debounce = FileDebounce(self.args.state_dir)
        self.pending_loads.add("startup")
        self._start_load()
        self._guarded("resync", rec.resync)
        self.control.start({"status": self._status_answer, "metrics": self._metrics_answer,
                            "reload": self._reload_answer})
        if self.metrics_server is not None:
            threading.Thread(target=self.metrics_server.serve_forever, name="vnetd-metrics", daemon=True).start()
        now = time.monotonic()
        self.next_check = now + self.args.check_interval
        self.next_resync = now + self.args.resync_interval
        self.next_watchdog = now
        self.last_noop = 0.0
        try:
            while not self.stopping:
                try:
                    self._iterate()
                except Exception as exc:  # the loop's own code: logged, slowed down, never fatal
                    self._nap(self._crashed("loop", exc))
        finally:
            self.notifier.stopping()
            self.log.info("daemon.stopping", passes=rec.passes)
            if self.job is not None:
                self.job.cancel()
            for close in (self.control.stop, self.watcher.close, rec.close):
                try:
                    close()
                except Exception as exc:  # stopping goes on whatever one part does
                    self.log.warning("daemon.stop_failed", error=repr(exc))
            if self.metrics_server is not None:
                self.metrics_server.server_close()
        return 0

    def _nap(self, seconds: float) -> None:
        """Sleep, but wake for a signal (the wake-up pipe)."""
        try:
            select.select([self.wake.fileno()], [], [], seconds)
        except InterruptedError:
            pass

    def _iterate(self) -> None:
        rec = self.reconciler
        args = self.args
        now = time.monotonic()
        deadlines = [self.next_check, self.next_resync]
        if self.debounce.due is not None:
            deadlines.append(self.debounce.due)
        release = rec.health.next_release(now)
        if release is not None:
            deadlines.append(release)
        if self.crash_until.get("pass", 0.0) > now:
            deadlines.append(self.crash_until["pass"])
        if self.notifier.watchdog_interval:
            deadlines.append(self.next_watchdog)
        watch_due = self.watcher.next_due()
        if watch_due is not None:
            deadlines.append(watch_due)
        if self.files_wanted:  # (only while reading what the watch noted waits for its retry)
            deadlines.append(self.crash_until.get("files", now))
        timeout = max(0.0, min(deadlines) - now)
        fds = [self.wake.fileno()]
        evented = []  # (manager, its descriptor)
        for manager in rec.managers:
            fd = self._guarded(manager.event_source, manager.event_fileno)
            if fd is not None:
                evented.append((manager, fd))
        # a descriptor whose reading crashed is left alone until its retry (not a busy loop)
        for step, fd in [(m.event_source, fd) for m, fd in evented]:
            retry_at = self.crash_until.get(step, 0.0)
            if retry_at > now:
                timeout = min(timeout, retry_at - now)
            else:
                fds.append(fd)
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            readable = []
        reasons = self.wake.take()
        now = time.monotonic()
        if self.stopping or "stop" in reasons:
            return
        if "status" in reasons:
            reasons.discard("status")
            self._answer_status_requests()
        watch_due = self.watcher.next_due()
        if self.watch_reason in reasons or (watch_due is not None and now >= watch_due):
            reasons.discard(self.watch_reason)
            self.files_wanted = True
        if self.files_wanted and self.crash_until.get("files", 0.0) <= now:
            self.files_wanted = False
            if self._guarded("files", self.watcher.read, now, default=True):
                self.debounce.touched(now)  # (a crash reading the events: read the files again, to be sure)
            self.files_wanted = self.crash_until.get("files", 0.0) > now  # crashed: again at its retry
        for manager, fd in evented:
            if fd in readable and self._guarded(manager.event_source, manager.drain_events):
                reasons.add(manager.event_source)
        for manager in rec.managers:
            if manager.needs_pass():  # lost notifications, a crash: its cache must be read again
                reasons.add(manager.event_source)
        if self.debounce.ready(now):
            self.debounce.done()
            self.pending_loads.add("files")
        if "reload" in reasons:
            reasons.discard("reload")
            self._queue_reload()
        if "loaded" in reasons:
            reasons.discard("loaded")
        self._guarded("trial", self._follow_trial, reasons)
        if self.job is not None and self.job.finished:
            reasons |= self._finish_load(now)
        self._start_load()
        for manager in rec.managers:
            manager.on_wake(reasons)  # (libvirt's events: read libvirt again)
        if now >= self.next_check:
            checked = self._guarded("check", rec.check_unevented)
            reasons.update(checked or ())
            self._guarded("shadowing", rec.check_shadowing)
            self.next_check = now + args.check_interval
        if now >= self.next_resync:
            # notifications may have been lost: each manager reads again what it may have
            # missed (netfilter's legacy check is exact -- the whole table compared -- so it
            # needs no full re-read)
            self._guarded("resync", rec.resync)
            reasons.add("resync")
            if self._guarded("files", self.watcher.check_identity):
                self.debounce.touched(now)
            self.next_resync = now + args.resync_interval
        if release is not None and now >= release:
            reasons.add("retry")
        self._maybe_pass(reasons, now)
        if self.notifier.watchdog_interval and now >= self.next_watchdog:
            self.notifier.watchdog()
            self.next_watchdog = now + self.notifier.watchdog_interval

    def _maybe_pass(self, reasons: set[str], now: float) -> None:
        """Run a pass for these reasons, unless a crashed pass is waiting for its retry."""
        reasons.discard("stop")
        if self.resume_after_load or (self.trials is not None and self.trials.pending):
            self.paused_reasons |= reasons  # run once the trial is over
            if self.started and not self.ready:
                self._declare_ready()
            return
        retry_at = self.crash_until.get("pass")
        if retry_at is not None:
            self.held_reasons |= reasons
            if now < retry_at:
                return
            reasons = self.held_reasons | {"retry"}
            self.held_reasons = set()
        if not reasons:
            return
        if reasons <= {"netlink", "retry"} and now - self.last_noop < HOLD_AFTER_NOOP:
            time.sleep(HOLD_AFTER_NOOP)  # a fight over a held-back resource: keep CPU bounded
        summary = self._pass(reasons)
        if summary is not None and summary.rolled_back:
            self.wake.post("rollback")  # enforce the previous configuration in full
        if summary is not None and summary.backed_off and not (summary.result and summary.result.applied):
            self.last_noop = time.monotonic()
        if self.started and not self.ready:
            self._declare_ready()

    def _declare_ready(self) -> None:
        self.ready = True
        summary = self.reconciler.summary_line()
        self.notifier.ready(summary)
        self.log.info("daemon.ready", summary=summary)
        # libvirt only after READY: at boot libvirtd is ordered after network.target, which
        # waits for vnetd, and a socket-activated libvirtd would leave the connect hanging
        # until vnetd timed out (docs/OPERATIONS.md, "Boot order"); the next pass has libvirt
        started = self._guarded("start", self.reconciler.start, self.wake.post, default=())
        for reason in started:
            self.wake.post(reason)  # the next pass has what was connected

    def _pass(self, reasons: set[str]) -> Any:
        rec = self.reconciler
        for reason in reasons:
            self.metrics.passes.labels(source=reason).inc()
        try:
            summary = rec.run_pass(reasons)
        except Exception as exc:
            self._crashed("pass", exc)
            self.held_reasons |= reasons
            return None
        self._recovered("pass")
        now = time.monotonic()
        if self.notifier.enabled and (now - self.snapshot_at > STATUS_EVERY or reasons & {"files", "reload"}):
            self.snapshot_at = now
            self.notifier.status(rec.summary_line())
        return summary

    # -- trials of `vnetd apply --confirm` ------------------------------------------------

    def _follow_trial(self, reasons: set[str]) -> None:
        """Pause while a trial is pending; when it ends, resume (daemon/trials.py)."""
        rec = self.reconciler
        event = self.trials.poll(rec.engine, recover=not rec.observing)  # observing: changes nothing
        if event is not None and self.metrics:
            self.metrics.paused.set(1 if self.trials.pending else 0)
        if event is not None and self.trials.pending and self.notifier.enabled:
            self.notifier.status(f"paused: an `apply --confirm` trial is pending (pid {event.record.pid})")
        if event is None or event.kind == "started":
            return
        if self.trials.pending:  # an orphan that could not be fully restored: still paused
            return
        rec.after_crash()  # the trial changed the system: trust no cache
        if event.kind == "recovered" and self.metrics:
            self.metrics.rollbacks.labels(reason="trial").inc()
        if event.rolled_back:
            self._refuse_tried_files(event.record.state_dir)
            reasons |= self.paused_reasons | {"trial"}
            self.paused_reasons = set()
        else:
            # confirmed: the administrator decided; the files are read before the next pass
            # (the state loaded before the trial would undo the change)
            self.pending_loads.add("reload")
            self.resume_after_load = True

    def _refuse_tried_files(self, trial_dir: str) -> None:
        """After a rollback: files of the state directory that differ from those last loaded
        are the change just refused; they are not adopted until they change again."""
        from vnetd.daemon.loading import current_digest
        from vnetd.model.state import DesiredState

        rec = self.reconciler
        digest = current_digest(self.args.state_dir)
        same_dir = bool(trial_dir) and os.path.realpath(trial_dir) == os.path.realpath(self.args.state_dir)
        if rec.loaded_digest is None and not same_dir:
            return  # nothing loaded yet, and the trial tried other files: the daemon's own are not suspect
        if digest == rec.loaded_digest:
            return
        rec.reject(digest, [], "an `apply --confirm` trial of these files was rolled back")
        if rec.loaded and rec.loaded_digest is None:
            # what is loaded came in during the trial (the daemon started then): the tried
            # files; no configuration from before the trial is known, so none is enforced
            rec.enforce(DesiredState(), None)
            rec.loaded = False
        self.log.warning("config.rejected", source="trial", state_dir=self.args.state_dir,
                         note="the state files differ from the configuration enforced before the trial that was "
                              "rolled back; that configuration stays enforced until the files change again "
                              "(or `vnetd reload`)")

    # -- crashes ----------------------------------------------------------------------

    def _guarded(self, step: str, fn: Callable[..., Any], *args: Any, default: Any = None) -> Any:
        """Run one step of the loop; an unexpected exception is a crash, not the end. A step
        that crashed is skipped (``default``) until its retry time."""
        if self.crash_until.get(step, 0.0) > time.monotonic():
            return default
        try:
            result = fn(*args)
        except Exception as exc:
            self._crashed(step, exc)
            return default
        self._recovered(step)
        return result

    def _recovered(self, step: str) -> None:
        self.crashes.pop(step, None)
        self.crash_until.pop(step, None)

    def _crashed(self, step: str, exc: BaseException) -> float:
        """Log a crash once, with its traceback; the step waits 1, 2, 4 ... 60 s. Returns the wait."""
        count = self.crashes[step] = self.crashes.get(step, 0) + 1
        delay = float(min(CRASH_FIRST * 2 ** (count - 1), CRASH_MAX))
        self.crash_until[step] = time.monotonic() + delay
        try:
            self.reconciler.after_crash()
        except Exception:  # noqa: S110 - marking caches stale cannot be allowed to fail the handler
            pass
        self.log.error("pass.crashed", step=step, error=f"{type(exc).__name__}: {exc}",
                       traceback="".join(traceback.format_exception(exc)), retry_in_s=delay,
                       crashes_in_a_row=count)
        return delay

    # -- loading ----------------------------------------------------------------------

    def _queue_reload(self) -> None:
        self.notifier.reloading()
        self.pending_loads.add("reload")
        while True:
            try:
                self.reload_waiters.append(self.reload_requests.get_nowait())
            except queue.Empty:
                break

    def _start_load(self) -> None:
        """Start the next load if one is wanted and none runs (a load that starts after a
        reload request answers it)."""
        from vnetd.daemon.loading import LoadJob

        if self.job is not None or not self.pending_loads:
            return
        if self.trials is not None and self.trials.pending and "startup" not in self.pending_loads:
            return  # the files may be the trial's: read once it is over
        pending = self.pending_loads
        source = "startup" if "startup" in pending else "reload" if "reload" in pending else "files"
        self.pending_loads = set()
        rec = self.reconciler
        self.job_waiters, self.reload_waiters = self.reload_waiters, []
        self.log.info("config.loading", source=source)
        self.job = LoadJob(self.args.state_dir, source, rec.desired if rec.loaded else None,
                           rec.hold_candidates(source), lambda: self.wake.post("loaded"))

    def _finish_load(self, now: float) -> set[str]:
        """Adopt a finished load; the reasons for the pass that follows."""
        outcome = self.job.collect()
        self.job = None
        rec = self.reconciler
        if self.trials is not None and self.trials.pending and outcome.source != "startup":
            self.pending_loads.add(outcome.source)  # read while a trial began: read again once it is over
            self.reload_waiters = self.job_waiters + self.reload_waiters
            self.job_waiters = []
            return set()
        waiters, self.job_waiters = self.job_waiters, []
        if outcome.source == "files" and outcome.desired is None and outcome.crash is None \
                and self.debounce.give_more_time(now):
            self.log.debug("config.settling", errors=len(outcome.issues),
                           note="a file was written moments ago; looking again before reporting")
            self.reload_waiters = waiters + self.reload_waiters
            return set()
        self.debounce.settled()
        rec.adopt(outcome)
        if self.trials is not None and self.trials.pending:
            # read while a trial is pending (the daemon started during one): these files may be
            # the trial's, not a configuration enforced before it (see _refuse_tried_files)
            rec.loaded_digest = None
        if outcome.source == "startup":
            self.started = True
        if outcome.source == "reload" or (outcome.source == "startup" and self.ready):
            self._guarded("start", rec.start, self.wake.post)  # at startup: after READY (_declare_ready)
        if outcome.source == "reload" and self.ready:
            self.notifier.ready(rec.summary_line())  # ends systemd's "reloading" state
        status = rec.status()
        for request in waiters:
            request.result = status
            request.done.set()
        if self.resume_after_load and not (self.trials is not None and self.trials.pending):
            self.resume_after_load = False
            resumed, self.paused_reasons = self.paused_reasons, set()
            return {outcome.source, "trial"} | resumed
        return {outcome.source}

    # -- control socket (called from its thread) ---------------------------------------

    def _status_answer(self) -> bytes:
        return json.dumps(self._status()).encode() + b"\n"

    def _metrics_answer(self) -> bytes:
        status = self._status()
        return bytes(self.metrics.render(status.get("counts", {}), len(status.get("shadowed", ()))))

    def _reload_answer(self) -> bytes:
        """Ask the main loop to reload, and answer with the status once that load is adopted."""
        from vnetd.daemon.status import RELOAD_WAIT

        request = _Request()
        self.reload_requests.put(request)
        self.wake.post("reload")
        if request.done.wait(RELOAD_WAIT) and request.result is not None:
            return json.dumps(request.result).encode() + b"\n"
        return b'{"pending": true}\n'

    def _answer_status_requests(self) -> None:
        """Status is computed by the main thread (it owns the state), only when asked."""
        while True:
            try:
                request = self.status_requests.get_nowait()
            except queue.Empty:
                return
            request.result = self.reconciler.status()
            if self.job is not None:
                request.result["loading"] = self.job.source
            request.result["trial"] = self.trials.status() if self.trials is not None else None
            request.done.set()

    def _status(self) -> dict[str, Any]:
        """Called by the control socket's thread: ask the main loop and wait for it."""
        request = _Request()
        self.status_requests.put(request)
        self.wake.post("status")
        if request.done.wait(STATUS_WAIT) and request.result is not None:
            self.snapshot = request.result
            return request.result
        stale = dict(self.snapshot or {"state_dir": self.args.state_dir, "files": [], "config_valid": True,
                                       "last_load_errors": [], "passes": 0, "last_pass_age_s": None,
                                       "last_source": "", "counts": {}, "resources": []})
        stale["stale"] = "the daemon is busy in a long pass; this is its last known status"
        return stale
