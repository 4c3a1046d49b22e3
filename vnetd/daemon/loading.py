# SPDX-License-Identifier: MIT
"""Loading the state directory off the repair path: a forked child checks, a thread builds.

Reading and parsing the files is the daemon's only work whose size the
administrator's input decides (within the loader's bounds: 8 MiB a file, 500,000
YAML nodes a document, aliases counted as what they stand for, 2,000,000 in all).
While it runs, the main thread goes on repairing the last good state. A load
(``LoadJob``) has two steps:

1. **A forked child reads and checks the files** (``check_in_child``): it runs the
   whole loader on its copy of the daemon's memory, under ``RLIMIT_AS`` (the
   daemon's size plus ``CHILD_MEMORY``) and a deadline (``CHILD_TIMEOUT``, then
   SIGKILL), at a lower CPU priority (``CHILD_NICE``), and sends back the files it
   read and its verdict: the issues (at most
   a few hundred lines), or "valid". Whatever a file does to the parser (an alias
   flood, 8 MiB of list items, a bug), it does it in another process, on the other
   core: the daemon's memory, CPU share and GIL are not involved. An invalid file,
   the usual case of a hostile or mistaken one, costs the daemon nothing more.
2. **A worker thread builds the state** from the very texts the child checked
   (``build``, the same pure code), only when the child found them valid. The
   result, an immutable ``DesiredState``, is handed to the main loop whole
   (``wake("loaded")``), and only then adopted.

Why not send the parsed state back from the child: unpickling the ~100,000
frozen objects of a big state (2,500 interfaces, 10,000 rules) costs the main
thread 0.6-0.9 s, about what parsing costs (measured here). Why not only a thread:
a thread shares the GIL, and a 400,000-node file parsed in one delayed the
daemon's repairs by 10-40 ms at the 99th percentile (bench/daemon.py, on this
2-core machine), with single stalls of 25-60 ms when big objects were freed. The
build step still shares the GIL, with a valid state the administrator wrote; to
keep the main thread's waits short meanwhile:

* the interpreter's switch interval is lowered to ``SWITCH_INTERVAL`` (the main
  thread, which releases the GIL on every system call of a pass, gets it back
  within that time instead of the default 5 ms);
* the cyclic garbage collector is off (a full collection over the objects a big
  file makes holds the GIL for up to half a second, measured: 576 ms; a state's
  objects form no cycles, reference counting frees them);
* the YAML node tree is freed node by node (``loader._dismantle``; dropping it
  whole is one C call of ~100 ms).

Forking a process that has threads is safe here because the child runs only the
pure loader (desired/, yaml, os reads) on memory the fork copied: no lock another
thread may hold (libvirt's, the logger's) is ever taken in the child, it never
logs, and it leaves with ``os._exit``.

What stays on the main thread: compiling the rules through libxtables
(``checks.check_state``), whose global state is not thread-safe and which the
firewall backend uses during passes.
"""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import resource
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vnetd.desired.loader import (
    Held,
    SourceFile,
    hold_vanished,
    load_sources,
    read_state_dir,
    unloaded_files,
)
from vnetd.errors import ConfigError, ConfigIssue
from vnetd.model.state import DesiredState

#: GIL switch interval while a state is built (Python's default is 5 ms).
SWITCH_INTERVAL = 0.0005
#: the child may use this much memory beyond the daemon's own size
CHILD_MEMORY = 1 << 30
#: and this much time
CHILD_TIMEOUT = 60.0
#: and runs at this niceness
CHILD_NICE = 10


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
    #: the names of the state files present (and not empty) when the directory was read
    present: tuple[str, ...] = ()
    #: an unexpected exception while loading (its traceback): reported as a crash, not as bad input
    crash: str | None = None
    #: names and texts of the files read (``digest_of``): tells whether the files changed since
    digest: str = ""
    duration_s: float = 0.0
    started: float = field(default_factory=time.monotonic)


@dataclass
class _Read:
    """The directory as read: the files, and what reading them found."""

    sources: list[SourceFile]
    issues: list[ConfigIssue]
    unloaded: tuple[str, ...]


def read(state_dir: str) -> _Read:
    sources, issues = read_state_dir(state_dir)
    return _Read(sources, issues, tuple(unloaded_files(state_dir)))


def build(files: _Read, source: str, enforced: DesiredState | None, hold: frozenset[str]) -> LoadOutcome:
    """Parse and merge files already read (pure; the same in the child and the thread).

    ``hold``: names of files that were loaded before and whose declarations must be
    kept if they are gone or empty now (``enforced`` is the state they came from).
    """
    start = time.monotonic()
    outcome = LoadOutcome(source, unloaded=files.unloaded,
                          present=tuple(s.name for s in files.sources if s.text.strip()),
                          digest=digest_of(files.sources))
    try:
        desired = load_sources(files.sources, files.issues)
        if hold and enforced is not None:
            vanished = hold - set(outcome.present)
            if vanished:
                desired, outcome.held = hold_vanished(desired, enforced, vanished)
        outcome.desired = desired
    except ConfigError as exc:
        outcome.issues = exc.issues
    except MemoryError:
        outcome.issues = (ConfigIssue(files.sources[0].name if files.sources else "", 0, "",
                                      f"loading the state files needed more than {CHILD_MEMORY >> 20} MiB beyond "
                                      "the daemon's own memory; refused"),)
    except Exception:  # a bug in the loader must not stop the daemon: reported as a crash
        outcome.crash = traceback.format_exc()
    outcome.duration_s = time.monotonic() - start
    return outcome


def digest_of(sources: Sequence[SourceFile]) -> str:
    """A digest of the files' names and texts: equal digests, same files."""
    h = hashlib.sha256()
    for source in sorted(sources, key=lambda s: s.name):
        for part in (source.name, source.text):
            data = part.encode("utf-8", "surrogateescape")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return h.hexdigest()


def current_digest(state_dir: str) -> str:
    """The digest of the state directory as it is now (read in the calling thread)."""
    return digest_of(read(state_dir).sources)


def load_now(state_dir: str, source: str, enforced: DesiredState | None,
             hold: frozenset[str] = frozenset()) -> LoadOutcome:
    """The whole load in the calling thread (benchmarks and tests; the daemon uses LoadJob)."""
    try:
        files = read(state_dir)
    except Exception:
        return LoadOutcome(source, crash=traceback.format_exc())
    return build(files, source, enforced, hold)


def _vm_size() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _child(out: int, state_dir: str, source: str, enforced: DesiredState | None, hold: frozenset[str]) -> None:
    """The forked child: check the files, send (outcome without the state, files read), exit."""
    code = 1
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)  # the daemon's handlers would post to its pipe
        limit = _vm_size() + CHILD_MEMORY
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        os.nice(CHILD_NICE)  # background work: the daemon's repairs win the CPU
        gc.disable()
        files: _Read | None = None
        try:
            files = read(state_dir)
        except Exception:
            outcome = LoadOutcome(source, crash=traceback.format_exc())
        else:
            outcome = build(files, source, enforced, hold)
        valid = outcome.desired is not None
        outcome.desired = None
        data = pickle.dumps((outcome, files if valid else None), protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(data)
        while view:
            view = view[os.write(out, view[:1 << 20]):]
        code = 0
    except BaseException:  # noqa: S110 - nothing may escape a forked child; the parent sees no verdict
        pass
    finally:
        os._exit(code)


class LoadJob:
    """One load: a checking child, then (if valid) a building thread; ``done`` is called
    (from the job's thread) when the outcome is ready."""

    def __init__(self, state_dir: str, source: str, enforced: DesiredState | None, hold: frozenset[str],
                 done: Callable[[], None]) -> None:
        self.source = source
        self.outcome: LoadOutcome | None = None
        self._done = done
        self._args = (state_dir, source, enforced, hold)
        self._gc_was_enabled = gc.isenabled()
        self._previous_interval = sys.getswitchinterval()
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _child(w, state_dir, source, enforced, hold)
        os.close(w)
        self._pid = pid
        self._thread = threading.Thread(target=self._run, args=(r,), name=f"vnetd-load-{source}", daemon=True)
        self._thread.start()

    def _verdict(self, fd: int) -> tuple[LoadOutcome, _Read | None]:
        """Read the child's answer (killing it past the deadline) and reap it."""
        source = self.source
        chunks: list[bytes] = []
        deadline = time.monotonic() + CHILD_TIMEOUT
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    os.kill(self._pid, signal.SIGKILL)
                    return LoadOutcome(source, issues=(ConfigIssue(self._args[0], 0, "", f"loading the state files "
                                       f"took longer than {CHILD_TIMEOUT:.0f} s; refused"),)), None
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(fd)
            _pid, status = os.waitpid(self._pid, 0)
        if status != 0 or not chunks:
            why = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"status {os.WEXITSTATUS(status)}"
            return LoadOutcome(source, issues=(ConfigIssue(self._args[0], 0, "", f"loading the state files failed "
                               f"({why}: over {CHILD_MEMORY >> 20} MiB or {CHILD_TIMEOUT:.0f} s?); refused"),)), None
        outcome, files = pickle.loads(b"".join(chunks))  # noqa: S301 - our own child's answer
        return outcome, files

    def _run(self, fd: int) -> None:
        outcome = LoadOutcome(self.source, crash="the load ended without a result")
        try:
            outcome, files = self._verdict(fd)
            if files is not None:  # valid: build the state here, from the texts the child checked
                sys.setswitchinterval(min(SWITCH_INTERVAL, self._previous_interval))
                gc.disable()
                _state_dir, source, enforced, hold = self._args
                built = build(files, source, enforced, hold)
                built.duration_s += outcome.duration_s
                outcome = built
        except Exception:
            outcome = LoadOutcome(self.source, crash=traceback.format_exc())
        finally:
            self.outcome = outcome
            self._done()

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def cancel(self) -> None:
        """The daemon is stopping: the child has nothing left to do."""
        if self.outcome is None:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def collect(self) -> LoadOutcome:
        """The outcome of a finished job (called by the main thread)."""
        self._thread.join()
        sys.setswitchinterval(self._previous_interval)
        if self._gc_was_enabled:
            gc.enable()
        assert self.outcome is not None
        return self.outcome
