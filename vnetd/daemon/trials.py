# SPDX-License-Identifier: MIT
"""The daemon and ``vnetd apply --confirm`` trials of its namespace (issue 12).

While a trial is pending the daemon must neither repair the trial's change away
nor fight its rollback, so it pauses: no pass runs and no load is adopted until
the trial ends (netlink, netfilter and file events are still read, so the caches
stay current). The trial's record (vnetd.trial) is looked at on every wake-up of
the loop (one ``lstat``; the file is read only when it changed).

When the record goes away the trial ended. Whether it was confirmed or rolled
back is read from the system, not from the trial: if the kernel is back to the
checkpoint, the change is not in effect (rolled back).

* confirmed: the daemon re-reads its files as a reload would (the administrator
  has decided);
* rolled back: files of the daemon's state directory that changed since its last
  load are the change that was just refused; they are not adopted (the previous
  configuration stays enforced) until they change again.

A trial whose process is gone (SIGKILL, a crash) or that is still there well past
its deadline is orphaned: nobody else will restore it, so the daemon does, at
start or whenever it finds one (``trial.recovered``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import time
from dataclasses import dataclass
from typing import Any

from vnetd.engine import Engine
from vnetd.errors import VnetdError
from vnetd.trial import TrialPaths, TrialRecord, read_record, recover_trial, restore_needed


@dataclass(frozen=True, slots=True)
class TrialEvent:
    """What changed about the namespace's trial since the last look."""

    kind: str  # "started", "ended", "recovered"
    record: TrialRecord
    #: for "ended" and "recovered": whether the change is no longer in effect
    rolled_back: bool = False


class TrialWatch:
    """Follows the trial record of the daemon's namespace."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.paths: TrialPaths | None = None
        self.record: TrialRecord | None = None
        self._identity: tuple[int, int, int] | None = None
        self._unreadable: str | None = None
        self._orphan_reported = False
        try:
            self.paths = TrialPaths.here()
        except (OSError, VnetdError) as exc:
            log.warning("trial.unwatched", error=str(exc),
                        note="trials of `vnetd apply --confirm` cannot be seen; the daemon does not pause for them")

    @property
    def pending(self) -> bool:
        return self.record is not None

    def appeared(self) -> bool:
        """A trial is pending, or a record not looked at yet exists (one ``lstat``; asked
        between the rounds of a pass)."""
        if self.record is not None:
            return True
        if self.paths is None:
            return False
        try:
            st = os.lstat(self.paths.record)
        except OSError:
            return False
        return (st.st_ino, st.st_mtime_ns, st.st_size) != self._identity

    def poll(self, engine: Engine, recover: bool = True) -> TrialEvent | None:
        """Look at the record (cheap when unchanged); recover an orphaned trial (unless
        ``recover`` is False: observe only, which changes nothing)."""
        if self.paths is None:
            return None
        try:
            st = os.lstat(self.paths.record)
            identity: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            identity = None
        except OSError as exc:
            self._report_unreadable(str(exc))
            return None
        if identity is None:
            self._identity = None
            return self._ended(engine) if self.record is not None else None
        if identity != self._identity:
            self._identity = identity
            try:
                record = read_record(self.paths)
            except (OSError, ValueError) as exc:
                self._report_unreadable(str(exc))
                return None
            self._unreadable = None
            if record is None:
                return self._ended(engine) if self.record is not None else None
            started = self.record is None
            self.record = record
            if started:
                if record.orphaned() and recover:
                    return self._recover(engine, record)
                self.log.warning("trial.pending", pid=record.pid, **describe(record),
                                 note="reconciling is paused until the trial is confirmed or rolled back")
                return TrialEvent("started", record)
        if self.record is not None and self.record.orphaned():
            if recover:
                return self._recover(engine, self.record)
            if not self._orphan_reported:
                self._orphan_reported = True
                self.log.warning("trial.orphaned", pid=self.record.pid, note="observe only: not restored; "
                                 "`vnetd rollback` restores it, `vnetd confirm` keeps the change")
        return None

    def _report_unreadable(self, error: str) -> None:
        if error != self._unreadable:
            self._unreadable = error
            self.log.error("trial.unreadable", path=self.paths.record if self.paths else "", error=error)

    def _recover(self, engine: Engine, record: TrialRecord) -> TrialEvent:
        assert self.paths is not None
        result = recover_trial(engine, self.paths, record, self.log.warning)
        self.record = None if result.restored else record
        self._identity = None
        if not result.restored:
            self.log.error("trial.recovery_incomplete", pid=record.pid, still_different=[
                a.describe() for a in result.remaining.actions], note="reconciling stays paused; "
                "`vnetd rollback` tries again, `vnetd confirm` keeps the system as it is")
        return TrialEvent("recovered", record, rolled_back=True)

    def _ended(self, engine: Engine) -> TrialEvent:
        record = self.record
        assert record is not None
        self.record = None
        try:
            rolled_back = restore_needed(engine, record.checkpoint).empty
        except Exception as exc:  # unknown outcome: assume the change was refused (the safe side)
            self.log.error("trial.outcome_unknown", pid=record.pid, error=f"{type(exc).__name__}: {exc}",
                           note="taken as rolled back: changed state files are not adopted until they change again")
            rolled_back = True
        self.log.info("trial.ended", pid=record.pid, outcome="rolled back" if rolled_back else "confirmed",
                      state_dir=record.state_dir or None, note="reconciling resumes")
        return TrialEvent("ended", record, rolled_back=rolled_back)

    def status(self) -> dict[str, Any] | None:
        """For ``vnetd status``: who runs the trial, since when, until when, what it changes."""
        record = self.record
        if record is None:
            return None
        return {"pid": record.pid, **describe(record), "deadline_in_s": round(record.deadline - time.time(), 1),
                "owner_alive": record.owner_alive}


def describe(record: TrialRecord) -> dict[str, Any]:
    return {"user": _user_of(record.pid), "command": _command_of(record.pid),
            "since": round(record.checkpoint.taken, 3), "deadline": round(record.deadline, 3),
            "state_dir": record.state_dir or None, "changes": list(record.checkpoint.changes)}


def _user_of(pid: int) -> str | None:
    """The login user of the trial's process (``loginuid``: who ran sudo), else its owner."""
    uid: int | None = None
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{pid}/loginuid") as f:
            login = int(f.read().strip())
        if login != 0xFFFFFFFF:
            uid = login
    if uid is None:
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _command_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(4096)
    except OSError:
        return None
    return " ".join(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part) or None
