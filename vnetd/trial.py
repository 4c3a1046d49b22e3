# SPDX-License-Identifier: MIT
"""Trying a change on a remote host: apply, then keep it only if confirmed in time.

``vnetd apply --confirm SECONDS`` takes a checkpoint of everything the plan is
about to touch (``vnetd.plan.restore``), writes it to the run directory, applies,
runs the health probes, and waits. ``vnetd confirm`` (any shell, over the
trial's root-only socket) or Enter on the terminal keeps the change; the
deadline, Ctrl-C, the terminal going away (SIGHUP: an SSH session dropped),
SIGTERM, ``vnetd rollback`` or a probe that passed before and fails after puts
the checkpoint back -- a restore plan applied and verified like any plan -- and
the command exits non-zero saying what was restored.

The trial's record (its checkpoint, owner pid and deadline) is a file under
``/run/vnetd``, root-only, named after the network namespace: if the owner
dies (SIGKILL, a crash), ``vnetd rollback`` or the daemon's next start finds
it and restores. While a trial is pending, ``apply`` and the daemon leave the
namespace alone.

The run directory is vnetd's own: created 0700 if missing, refused if it is not
root's or is group/world-writable. Files in it are opened without following links.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from vnetd.engine import Engine
from vnetd.errors import BackendError, VnetdError
from vnetd.model.checkpoint import Checkpoint, NetworkRecord
from vnetd.model.health import ProbeResult, ProbeSpec
from vnetd.model.state import DesiredState
from vnetd.plan.actions import Action, Plan
from vnetd.plan.planner import Observed
from vnetd.plan.restore import record_links, record_rules, restore_plan, scope_of

RUN_DIR = os.environ.get("VNETD_RUN_DIR", "/run/vnetd")
EXIT_ROLLED_BACK = 4
MAX_RESTORE_ROUNDS = 3
SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
#: a trial whose process is still alive this long after its deadline is treated as orphaned
ORPHAN_GRACE = 5.0


class TrialError(VnetdError):
    """A trial cannot start or be reached (another is pending, an unsafe run directory)."""


def namespace_key() -> str:
    """Names the current network namespace (device and inode of /proc/self/ns/net)."""
    st = os.stat("/proc/self/ns/net")
    return f"{st.st_dev}-{st.st_ino}"


def run_dir() -> str:
    """The run directory, created 0700 if missing; refused if someone else could write it."""
    try:
        os.mkdir(RUN_DIR, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(RUN_DIR)
    if not stat.S_ISDIR(st.st_mode):
        raise TrialError(f"{RUN_DIR} is not a directory")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise TrialError(f"refusing the run directory {RUN_DIR}: it must be owned by root and not "
                         f"group/world-writable (mode {stat.S_IMODE(st.st_mode):04o})")
    return RUN_DIR


@dataclass(frozen=True, slots=True)
class TrialPaths:
    record: str
    socket: str

    @classmethod
    def here(cls) -> TrialPaths:
        base = os.path.join(run_dir(), f"trial-{namespace_key()}")
        return cls(base + ".json", base + ".sock")


@dataclass(frozen=True, slots=True)
class TrialRecord:
    checkpoint: Checkpoint
    pid: int
    deadline: float  # wall clock (time.time())
    #: the state directory the trial applied (absolute; "" in records of older versions):
    #: a daemon on the same directory re-reads it once the change is confirmed
    state_dir: str = ""

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "deadline": self.deadline, "state_dir": self.state_dir,
                           "checkpoint": self.checkpoint.to_json()})

    @classmethod
    def from_json(cls, text: str) -> TrialRecord:
        try:
            data = json.loads(text)
            return cls(Checkpoint.from_json(data["checkpoint"]), int(data["pid"]), float(data["deadline"]),
                       str(data.get("state_dir") or ""))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a vnetd trial record: {exc}") from exc

    @property
    def owner_alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def orphaned(self, now: float | None = None) -> bool:
        """Nobody will end this trial: its process is gone, or is still there
        ``ORPHAN_GRACE`` seconds after the deadline (stopped, stuck, or a reused pid)."""
        return not self.owner_alive or (time.time() if now is None else now) >= self.deadline + ORPHAN_GRACE


def read_record(paths: TrialPaths) -> TrialRecord | None:
    try:
        fd = os.open(paths.record, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as f:
        return TrialRecord.from_json(f.read(1 << 26))


def write_record(paths: TrialPaths, record: TrialRecord) -> None:
    """Atomically, root-only, never through a link."""
    tmp = f"{paths.record}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(record.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, paths.record)


def remove_trial(paths: TrialPaths) -> None:
    for path in (paths.record, paths.socket):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# --------------------------------------------------------------------------- checkpoints


def take_checkpoint(engine: Engine, plan: Plan, observed: Observed) -> Checkpoint:
    """Record everything ``plan`` touches, as it is now."""
    scope = scope_of(plan, observed.net)
    links, addresses, routes = record_links(scope.links, observed.net)
    managers = engine.managers
    sysctls = managers.sysctl.read(sorted(scope.sysctls)) if scope.sysctls else {}
    chains = managers.firewall.backend.record_chains(scope.chains) if scope.chains else {}
    networks = []
    for name in sorted(scope.networks):
        net = (observed.networks or {}).get(name)
        networks.append(NetworkRecord(name, net is not None, net.active if net else False,
                                      net.autostart if net else False))
    return Checkpoint(time.time(), namespace_key(), links, addresses, routes, tuple(sorted(sysctls.items())),
                      tuple(chains[k] for k in sorted(chains)), tuple(networks),
                      tuple(a.describe() for a in plan.actions), tuple(sorted(scope.rule_families)),
                      record_rules(scope.rule_families, observed.net))


@dataclass
class RestoreResult:
    applied: list[Action] = field(default_factory=list)
    failed: list[tuple[Action, BackendError]] = field(default_factory=list)
    remaining: Plan = field(default_factory=Plan)

    @property
    def restored(self) -> bool:
        return self.remaining.empty and not self.remaining.problems


def restore(engine: Engine, checkpoint: Checkpoint,
            hook: Callable[[Action, BackendError | None], None] | None = None) -> RestoreResult:
    """Apply the checkpoint's restore plan until nothing is left (verified by observing again)."""
    result = RestoreResult()
    for _ in range(MAX_RESTORE_ROUNDS + 1):
        observed, plan = _restore_view(engine, checkpoint)
        result.remaining = plan
        if plan.empty:
            break
        applied, failed = engine.execute(plan.actions, observed, hook)
        result.applied += applied
        result.failed = failed
        if not applied:
            observed, result.remaining = _restore_view(engine, checkpoint)
            break
    return result


def restore_needed(engine: Engine, checkpoint: Checkpoint) -> Plan:
    """What it would take to put the checkpoint back now (empty: the system is as it was)."""
    return _restore_view(engine, checkpoint)[1]


def _restore_view(engine: Engine, checkpoint: Checkpoint) -> tuple[Observed, Plan]:
    managers = engine.managers
    observed = Observed(net=managers.net.backend.observe())
    sysctls = dict(checkpoint.sysctls)
    now_sysctls = managers.sysctl.read(sorted(sysctls)) if sysctls else {}
    keys = [(c.table_key, c.chain) for c in checkpoint.chains]
    # the chains are read, and put back, through the backend that recorded them
    chains = managers.firewall.use(checkpoint.chains[0].backend).record_chains(keys) if keys else {}
    networks = None
    if checkpoint.networks:
        libvirt = managers.libvirt.current
        if libvirt is not None and (libvirt.connected or libvirt.connect()):
            networks, _taps = libvirt.observe()
        observed.networks = networks
    return observed, restore_plan(checkpoint, observed.net, now_sysctls, chains, networks)


# --------------------------------------------------------------------------- the trial


@dataclass
class TrialOutcome:
    confirmed: bool
    reason: str
    restore: RestoreResult | None = None


class Trial:
    """One ``apply --confirm``: the checkpoint, the wait, the decision."""

    def __init__(self, engine: Engine, desired: DesiredState, seconds: float, out: TextIO = sys.stdout,
                 terminal: TextIO | None = None,
                 run_probes: Callable[[tuple[ProbeSpec, ...]], list[ProbeResult]] | None = None,
                 state_dir: str = "") -> None:
        self.engine = engine
        self.desired = desired
        self.seconds = seconds
        self.state_dir = os.path.abspath(state_dir) if state_dir else ""
        self.out = out
        self.terminal = terminal
        self.paths = TrialPaths.here()
        self._probes = run_probes
        self._signal: str | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def say(self, text: str) -> None:
        """Print, and never fail because the terminal is gone (the trial must still roll back)."""
        with contextlib.suppress(OSError, ValueError):
            self.out.write(text + "\n")
            self.out.flush()

    def _on_signal(self, signum: int, _frame: object) -> None:
        reasons = {int(signal.SIGINT): "interrupted (Ctrl-C)", int(signal.SIGHUP): "the terminal went away (SIGHUP)",
                   int(signal.SIGTERM): "terminated (SIGTERM)"}
        self._signal = reasons.get(signum, f"signal {signum}")
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"s")

    def run(self, hook: Callable[[Action, BackendError | None], None] | None = None) -> TrialOutcome:
        pending = read_record(self.paths)
        if pending is not None:
            raise TrialError(f"a trial is already pending (pid {pending.pid}, until "
                             f"{time.strftime('%H:%M:%S', time.localtime(pending.deadline))}); "
                             "end it with `vnetd confirm` or `vnetd rollback`")
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)}
        try:
            return self._run(hook)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _run(self, hook: Callable[[Action, BackendError | None], None] | None) -> TrialOutcome:
        plan, observed = self.engine.plan(self.desired)
        if plan.empty:
            return TrialOutcome(True, "nothing to change: the system matches the state files")
        checkpoint = take_checkpoint(self.engine, plan, observed)
        before = self._probe_round()
        deadline = time.time() + self.seconds
        write_record(self.paths, TrialRecord(checkpoint, os.getpid(), deadline, self.state_dir))
        with self._listening() as listener:
            result = self.engine.converge(self.desired, hook=hook)
            if self._signal:
                return self._rollback(checkpoint, self._signal)
            after = self._probe_round()
            broken = [r for r in after if not r.ok and any(b.ok and b.probe == r.probe for b in before)]
            if broken:
                return self._rollback(checkpoint, "probe failed: " + "; ".join(
                    f"{r.probe.name} ({r.probe.describe()}): {r.detail}" for r in broken))
            state = "applied" if result.converged else "applied, not fully converged"
            self.say(f"{state}; keep it? Confirm within {self.seconds:g} s: press Enter, or run "
                     f"`vnetd confirm` (`vnetd rollback` undoes it now).")
            decision = self._wait(listener, deadline)
            if decision == "confirm":
                remove_trial(self.paths)
                return TrialOutcome(True, "confirmed")
            return self._rollback(checkpoint, decision)

    def _probe_round(self) -> list[ProbeResult]:
        probes = self.desired.probes
        if not probes:
            return []
        if self._probes is not None:
            return self._probes(probes)
        from vnetd.backends.probes import run_probes

        return run_probes(probes)

    def _rollback(self, checkpoint: Checkpoint, why: str) -> TrialOutcome:
        self.say(f"rolling back: {why}")
        result = restore(self.engine, checkpoint)
        for action in result.applied:
            self.say(f"restored: {action.describe()}")
        for action, error in result.failed:
            self.say(f"failed to restore: {action.describe()}: {error}")
        if result.restored:
            remove_trial(self.paths)
            self.say("rolled back: the checkpoint is restored")
        else:
            self.say(f"NOT fully rolled back; the checkpoint stays in {self.paths.record} "
                     "(`vnetd rollback` tries again)")
        return TrialOutcome(False, why, result)

    @contextlib.contextmanager
    def _listening(self) -> Iterator[socket.socket]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.paths.socket)  # our own name in our own directory, no live owner (checked above)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            old = os.umask(0o177)
            try:
                sock.bind(self.paths.socket)
            finally:
                os.umask(old)
            sock.listen(4)
            yield sock
        finally:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.socket)

    def _wait(self, listener: socket.socket, deadline: float) -> str:
        watched: list[int] = [self._wake_r, listener.fileno()]
        tty = self.terminal
        if tty is not None:
            watched.append(tty.fileno())
        while True:
            if self._signal:
                return self._signal
            left = deadline - time.time()
            if left <= 0:
                return f"not confirmed within {self.seconds:g} s"
            try:
                readable, _, _ = select.select(watched, [], [], left)
            except InterruptedError:
                continue
            if tty is not None and tty.fileno() in readable:
                line = tty.readline()
                if line == "":  # end of input: the terminal is gone
                    watched.remove(tty.fileno())
                    tty = None
                    continue
                return "confirm"
            if listener.fileno() in readable:
                answer = self._serve(listener)
                if answer is not None:
                    return answer


    def _serve(self, listener: socket.socket) -> str | None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(2.0)
            creds = conn.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid != 0:
                with contextlib.suppress(OSError):
                    conn.sendall(b"refused: root only\n")
                return None
            try:
                request = conn.recv(64).decode("ascii", "replace").strip()
            except (OSError, UnicodeError):
                return None
            if request == "confirm":
                with contextlib.suppress(OSError):
                    conn.sendall(b"confirmed\n")
                return "confirm"
            if request == "rollback":
                with contextlib.suppress(OSError):
                    conn.sendall(b"rolling back\n")
                return "rolled back by `vnetd rollback`"
            with contextlib.suppress(OSError):
                conn.sendall(b"unknown request\n")
            return None


# --------------------------------------------------------------------------- confirm / rollback


def end_trial(engine: Engine, request: str, say: Callable[[str], None]) -> int:
    """``vnetd confirm`` / ``vnetd rollback``: 0 when done, 1 when no trial is pending.

    The trial's own process is asked over its socket. If it is gone (killed), the
    record on disk is used: rollback restores it here; confirm keeps the change.
    """
    paths = TrialPaths.here()
    record = read_record(paths)
    if record is None:
        say("no trial is pending")
        return 1
    answer = _ask(paths.socket, request)
    if answer is not None:
        say(answer)
        return 0
    if record.owner_alive:
        raise TrialError(f"the trial's process (pid {record.pid}) does not answer on {paths.socket}")
    if request == "confirm":
        remove_trial(paths)
        say(f"confirmed (the trial's process, pid {record.pid}, is gone; the change is kept)")
        return 0
    result = restore(engine, record.checkpoint)
    for action in result.applied:
        say(f"restored: {action.describe()}")
    if not result.restored:
        for action in result.remaining.actions:
            say(f"still different: {action.describe()}")
        raise TrialError("the checkpoint could not be fully restored; it stays on disk")
    remove_trial(paths)
    say("rolled back: the checkpoint is restored")
    return 0


def _ask(path: str, request: str) -> str | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(5.0)
    try:
        sock.connect(path)
        sock.sendall(request.encode() + b"\n")
        return sock.recv(256).decode("ascii", "replace").strip() or None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, None) or isinstance(exc, TimeoutError):
            return None
        raise
    finally:
        sock.close()


def recover_trial(engine: Engine, paths: TrialPaths, record: TrialRecord, log: Callable[..., None]) -> RestoreResult:
    """Roll an orphaned trial back (its change was never confirmed), logged as
    ``trial.recovered``; the record goes once the checkpoint is fully restored."""
    result = restore(engine, record.checkpoint)
    log("trial.recovered", pid=record.pid, restored=[a.describe() for a in result.applied],
        undone=list(record.checkpoint.changes), complete=result.restored,
        failed=[f"{a.describe()}: {e}" for a, e in result.failed])
    if result.restored:
        remove_trial(paths)
    return result


def recover_orphaned_trial(engine: Engine, log: Callable[..., None]) -> bool | None:
    """A trial whose process is gone is rolled back (its changes were never confirmed).
    Returns None when no trial is pending, True when one was restored (or tried: the
    record stays when the restore was incomplete), False when one is still running."""
    paths = TrialPaths.here()
    try:
        record = read_record(paths)
    except ValueError as exc:
        log("trial.unreadable", path=paths.record, error=str(exc))
        return None
    if record is None:
        return None
    if not record.orphaned():
        return False
    recover_trial(engine, paths, record, log)
    return True
