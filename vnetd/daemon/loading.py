# SPDX-License-Identifier: MIT
"""Loading the state directory off the repair path: one worker thread per load.

Reading and parsing the files is the daemon's only work whose size the
administrator's input decides (up to the loader's bounds: 8 MiB a file, 500,000
YAML nodes a document, aliases counted as what they stand for). It runs in a
``LoadJob`` thread while the main thread goes on repairing the last good state;
the result, an immutable ``DesiredState``, is handed over whole when the job is
done (``wake("loaded")``), and only then does the main thread adopt it.

Why a thread and not a forked child: the child would have to send the parsed
state back, and unpickling the ~100,000 frozen objects of a big state (2,500
interfaces, 10,000 rules) costs the main thread 0.6-0.9 s, about what parsing
costs (measured here). A thread shares the result for free. Its cost is the GIL:
while a job runs, the interpreter's switch interval is lowered to
``SWITCH_INTERVAL`` so that the main thread, which releases the GIL on every
system call of a pass, gets it back within that time instead of the default 5 ms.

What stays on the main thread: compiling the rules through libxtables
(``checks.check_state``), whose global state is not thread-safe and which the
firewall backend uses during passes. A job therefore does only pure work:
``os``-level reads and the loader (desired/), plus the comparison with the state
being enforced for files that disappeared (SPEC: a vanished file is not a
decision, ``loader.hold_vanished``).
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from vnetd.desired.loader import (
    Held,
    hold_vanished,
    load_sources,
    read_state_dir,
    unloaded_files,
)
from vnetd.errors import ConfigError, ConfigIssue
from vnetd.model.state import DesiredState

#: GIL switch interval while a load runs (Python's default is 5 ms).
SWITCH_INTERVAL = 0.0005


@dataclass
class LoadOutcome:
    """What one load found: a state to adopt, or the issues that refused it."""

    source: str
    desired: DesiredState | None = None
    issues: tuple[ConfigIssue, ...] = ()
    #: files whose declarations are kept although the file disappeared or was emptied
    held: tuple[Held, ...] = ()
    #: names in the state directory that are not loaded (not *.yaml / *.yml, not leftovers)
    unloaded: tuple[str, ...] = ()
    #: the names of the state files present when the directory was read
    present: tuple[str, ...] = ()
    #: an unexpected exception in the job (its traceback): reported as a crash, not as bad input
    crash: str | None = None
    duration_s: float = 0.0
    started: float = field(default_factory=time.monotonic)


def load_now(state_dir: str, source: str, enforced: DesiredState | None,
             hold: frozenset[str] = frozenset()) -> LoadOutcome:
    """Read, parse and merge the state directory (the job's work, also usable inline).

    ``hold``: names of files that were loaded before and whose declarations must be
    kept if they are gone or empty now (with ``enforced``, the state they came from).
    """
    start = time.monotonic()
    outcome = LoadOutcome(source)
    try:
        sources, issues = read_state_dir(state_dir)
        outcome.unloaded = tuple(unloaded_files(state_dir))
        outcome.present = tuple(s.name for s in sources if s.text.strip())
        desired = load_sources(sources, issues)
        if hold and enforced is not None:
            vanished = hold - set(outcome.present)
            if vanished:
                desired, outcome.held = hold_vanished(desired, enforced, vanished)
        outcome.desired = desired
    except ConfigError as exc:
        outcome.issues = exc.issues
    except Exception:  # a bug in the loader must not stop the daemon: reported as a crash
        outcome.crash = traceback.format_exc()
    outcome.duration_s = time.monotonic() - start
    return outcome


class LoadJob:
    """One load in a worker thread; ``done`` is called (from that thread) when it ends."""

    def __init__(self, state_dir: str, source: str, enforced: DesiredState | None, hold: frozenset[str],
                 done: Callable[[], None]) -> None:
        self.source = source
        self.outcome: LoadOutcome | None = None
        self._done = done
        self._args = (state_dir, source, enforced, hold)
        self._previous_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(SWITCH_INTERVAL, self._previous_interval))
        self._thread = threading.Thread(target=self._run, name=f"vnetd-load-{source}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        outcome = LoadOutcome(self.source, crash="the load ended without a result")
        try:
            outcome = load_now(*self._args)
        finally:
            self.outcome = outcome
            self._done()

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def collect(self) -> LoadOutcome:
        """The outcome of a finished job (called by the main thread)."""
        self._thread.join()
        sys.setswitchinterval(self._previous_interval)
        assert self.outcome is not None
        return self.outcome
