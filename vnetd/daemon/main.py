# SPDX-License-Identifier: MIT
"""``vnetd run``: start-up, the event loop, shutdown.

Start-up order matters: the state directory is checked before anything else (an
insecure directory refuses the start, on the terminal, before detaching); then
daemonize (``--daemon``), write the pidfile, enter ``--netns`` (before any thread
exists, so every thread inherits it), open the netlink notification socket
*before* the first full read (nothing changes unseen in between), and only then
start the watcher, the control socket and libvirt's event thread.

The loop waits in ``select()`` on the wake-up pipe and the netlink socket, with a
timeout for the next timer (netfilter/sysctl check, slow resync, debounced reload,
a back-off ending, the systemd watchdog). Wake-up reasons are coalesced; each
wake-up runs at most one pass, and passes never overlap.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import os
import queue
import select
import signal
import sys
import threading
import time
from typing import Any

from vnetd import log as vlog
from vnetd.errors import ConfigError

INSECURE_MARKERS = ("refusing an insecure", "does not exist", "is not a directory", "cannot open state directory")
HOLD_AFTER_NOOP = 0.05  # minimum spacing of passes that only found held-back resources
STATUS_EVERY = 5.0  # seconds between sd_notify STATUS= updates
STATUS_WAIT = 5.0  # how long `vnetd status` waits for a busy main loop
MAX_SETTLE = 3.0


class _StatusRequest:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: dict[str, Any] | None = None


class PidFile:
    """A locked pidfile: a second daemon on the same pidfile refuses to start."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise SystemExit(f"vnetd: another vnetd holds {path}") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)


def _refuse_insecure(state_dir: str) -> None:
    from vnetd.desired.loader import load_state_dir

    try:
        load_state_dir(state_dir)
    except ConfigError as exc:
        fatal = [i for i in exc.issues if any(m in i.message for m in INSECURE_MARKERS)]
        if fatal:
            for issue in fatal:
                print(f"vnetd: {issue}", file=sys.stderr)
            raise SystemExit(1) from None


def _metrics_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise SystemExit(f"vnetd: --metrics-listen wants ADDRESS:PORT, got {value!r}")
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"vnetd: --metrics-listen must be a loopback address (127.0.0.1, ::1), not {host}")
    return host, int(port)


def run_daemon(args: argparse.Namespace) -> int:
    _refuse_insecure(args.state_dir)
    metrics_addr = _metrics_address(args.metrics_listen) if args.metrics_listen else None
    if args.check_interval <= 0 or args.resync_interval <= 0:
        raise SystemExit("vnetd: intervals must be positive")
    if args.daemon:
        import daemon  # python-daemon: double fork, setsid, umask, chdir, stdio to /dev/null

        context = daemon.DaemonContext(working_directory="/", umask=0o022, detach_process=True,
                                       signal_map={}, prevent_core=True)
        context.open()
    pidfile = PidFile(args.pidfile) if args.pidfile else None
    try:
        vlog.configure(args.log_format, args.log_level or "info", args.log_file)
        if args.netns:
            from vnetd import netns

            netns.enter(args.netns)
        daemon = Daemon(args, metrics_addr)
        profile = os.environ.get("VNETD_PROFILE")  # developers: where the daemon's CPU goes
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            try:
                return int(profiler.runcall(daemon.run))
            finally:
                profiler.dump_stats(profile)
        return daemon.run()

    finally:
        if pidfile is not None:
            pidfile.remove()


class Daemon:
    def __init__(self, args: argparse.Namespace, metrics_addr: tuple[str, int] | None) -> None:
        from vnetd.daemon.notify import Notifier
        from vnetd.daemon.reconciler import Reconciler
        from vnetd.daemon.status import Metrics
        from vnetd.daemon.wake import Wakeup

        self.args = args
        self.log = vlog.get_logger()
        self.wake = Wakeup()
        self.notifier = Notifier()
        self.metrics = Metrics()
        self.metrics_addr = metrics_addr
        self.reconciler = Reconciler(args.state_dir, self.log, metrics=self.metrics,
                                     conflict_repairs=args.conflict_repairs)

        self.stopping = False
        self.snapshot: dict[str, Any] = {}
        self.snapshot_at = 0.0
        self.status_requests: queue.Queue[_StatusRequest] = queue.Queue()

    # -- signals ----------------------------------------------------------------------

    def _on_term(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self.wake.post("stop")

    def _on_hup(self, _signum: int, _frame: object) -> None:
        self.wake.post("reload")

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        from vnetd.daemon.files import FileDebounce, StateDirWatcher
        from vnetd.daemon.status import ControlServer

        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        rec = self.reconciler
        self.log.info("daemon.starting", pid=os.getpid(), state_dir=self.args.state_dir, netns=self.args.netns,
                      check_interval_s=self.args.check_interval, resync_interval_s=self.args.resync_interval)
        rec.reload("startup")
        rec.net.resync()
        watcher = StateDirWatcher(self.args.state_dir, self.wake.post)
        watcher.start()
        control = ControlServer(self.args.socket, self._status, self._metrics)
        control.start()
        if self.metrics_addr:
            from prometheus_client import start_http_server

            start_http_server(self.metrics_addr[1], addr=self.metrics_addr[0], registry=self.metrics.registry)
        debounce = FileDebounce(self.args.state_dir)
        settle_started: float | None = None
        now = time.monotonic()
        next_check = now + self.args.check_interval
        next_resync = now + self.args.resync_interval
        next_watchdog = now
        last_noop = 0.0
        self._pass({"startup"})
        self.notifier.ready(rec.summary_line())
        self.log.info("daemon.ready", summary=rec.summary_line())
        # libvirt only after READY: at boot libvirtd is ordered after network.target, which
        # waits for vnetd, and a socket-activated libvirtd would leave the connect hanging
        # until vnetd timed out (docs/OPERATIONS.md, "Boot order"); the next pass has libvirt
        self._connect_libvirt()
        self.wake.post("libvirt")
        try:
            while not self.stopping:
                now = time.monotonic()
                deadlines = [next_check, next_resync]
                if debounce.due is not None:
                    deadlines.append(debounce.due)
                release = rec.health.next_release(now)
                if release is not None:
                    deadlines.append(release)
                if self.notifier.watchdog_interval:
                    deadlines.append(next_watchdog)
                timeout = max(0.0, min(deadlines) - now)
                try:
                    readable, _, _ = select.select([self.wake.fileno(), rec.net.events.fileno()], [], [], timeout)
                except InterruptedError:
                    readable = []
                reasons = self.wake.take()
                if "status" in reasons:
                    reasons.discard("status")
                    self._answer_status_requests()
                now = time.monotonic()
                if rec.net.events.fileno() in readable and rec.net.drain():
                    reasons.add("netlink")
                if rec.net.overrun:
                    reasons.add("netlink")
                if self.stopping or "stop" in reasons:
                    break
                if "files" in reasons:
                    reasons.discard("files")
                    debounce.touched(now)
                if debounce.ready(now):
                    debounce.done()
                    if debounce.recently_written(now) and not self._loads_cleanly():
                        settle_started = settle_started or now
                        if now - settle_started < MAX_SETTLE:
                            debounce.touched(now)  # probably still being written: look again shortly
                        else:
                            settle_started = None
                            rec.reload("files")
                            reasons.add("files")
                    else:
                        settle_started = None
                        rec.reload("files")
                        reasons.add("files")
                if "reload" in reasons:
                    self.notifier.reloading()
                    rec.reload("reload")
                    self._connect_libvirt()
                if "libvirt" in reasons:
                    rec.lv_dirty = True
                if now >= next_check:
                    reasons.update(rec.check_unevented())
                    self._libvirt_reconnect(reasons)
                    next_check = now + self.args.check_interval
                if now >= next_resync:
                    # netlink may have lost notifications: read it all again; netfilter's
                    # check is exact (the whole table compared), so it needs no full re-read
                    rec.net.resync()
                    rec.lv_dirty = True
                    reasons.add("resync")

                    next_resync = now + self.args.resync_interval
                if release is not None and now >= release:
                    reasons.add("retry")
                if reasons - {"stop"}:
                    if reasons <= {"netlink", "retry"} and now - last_noop < HOLD_AFTER_NOOP:
                        time.sleep(HOLD_AFTER_NOOP)  # a fight over a held-back resource: keep CPU bounded
                    summary = self._pass(reasons)
                    if summary is not None and summary.backed_off and not (summary.result and summary.result.applied):
                        last_noop = time.monotonic()
                if self.notifier.watchdog_interval and now >= next_watchdog:
                    self.notifier.watchdog()
                    next_watchdog = now + self.notifier.watchdog_interval
        finally:
            self.notifier.stopping()
            self.log.info("daemon.stopping", passes=rec.passes)
            watcher.stop()
            control.stop()
            rec.close()
            self.reconciler.engine.backends.close()
        return 0

    def _pass(self, reasons: set[str]) -> Any:
        rec = self.reconciler
        for reason in reasons:
            self.metrics.passes.labels(source=reason).inc()
        summary = rec.run_pass(reasons)
        now = time.monotonic()
        if self.notifier.enabled and (now - self.snapshot_at > STATUS_EVERY or reasons & {"files", "reload"}):
            self.snapshot_at = now
            self.notifier.status(rec.summary_line())
        return summary

    def _answer_status_requests(self) -> None:
        """Status is computed by the main thread (it owns the state), only when asked."""
        while True:
            try:
                request = self.status_requests.get_nowait()
            except queue.Empty:
                return
            request.result = self.reconciler.status()
            request.done.set()

    def _loads_cleanly(self) -> bool:
        from vnetd.desired.loader import load_state_dir

        try:
            load_state_dir(self.args.state_dir)
        except ConfigError:
            return False
        return True

    def _status(self) -> dict[str, Any]:
        """Called by the control socket's thread: ask the main loop and wait for it."""
        request = _StatusRequest()
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

    def _metrics(self) -> bytes:
        return self.metrics.render(self._status().get("counts", {}))

    # -- libvirt ----------------------------------------------------------------------

    def _libvirt_backend(self) -> Any:
        spec = self.reconciler.desired.libvirt
        if spec is None:
            return None
        return self.reconciler.engine.backends.libvirt(spec.uri)

    def _connect_libvirt(self) -> None:
        backend = self._libvirt_backend()
        if backend is None:
            return
        start_events = getattr(backend, "start_events", None)
        if start_events is not None:
            start_events(self.wake.post)
        if not backend.connected:
            backend.connect()

    def _libvirt_reconnect(self, reasons: set[str]) -> None:
        backend = self._libvirt_backend()
        if backend is None or backend.connected:
            return
        reconnect = getattr(backend, "maybe_reconnect", None)
        if reconnect is not None and reconnect():
            reasons.add("libvirt")
