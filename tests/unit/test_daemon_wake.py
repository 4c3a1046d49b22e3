# SPDX-License-Identifier: MIT
"""Issue 11: ``Wakeup.post`` is called from signal handlers, so it must never wait for
anything the interrupted main thread may hold (it used to take a lock ``take`` held)."""

from __future__ import annotations

import subprocess
import threading

from tests.support import PY, ROOT
from vnetd.daemon.wake import Wakeup

# A signal is delivered before every bytecode of take() (once per bytecode position
# and call: a signal at every iteration of a loop would keep adding reasons to a
# take() that empties them): its handler, which posts as the daemon's handlers do,
# runs inside take's critical section, whatever the implementation makes it.
SIGNAL_INSIDE_TAKE = r"""
import os, signal, sys
from vnetd.daemon.wake import Wakeup

wake = Wakeup()
handled = 0

def on_signal(signum, frame):
    global handled
    handled += 1
    wake.post(f"signal-{handled}")

signal.signal(signal.SIGUSR1, on_signal)

seen = set()

def tracer(frame, event, arg):
    if frame.f_code is Wakeup.take.__code__:
        frame.f_trace_opcodes = True
        if event == "opcode" and frame.f_lasti not in seen:
            seen.add(frame.f_lasti)
            os.kill(os.getpid(), signal.SIGUSR1)
        return tracer
    return None

taken = set()
for i in range(20):
    wake.post(f"thread-{i}")
    seen.clear()
    sys.settrace(tracer)
    got = wake.take()
    sys.settrace(None)
    taken |= got
    positions = len(seen)
taken |= wake.take()
assert handled >= 20 * positions, (handled, positions)
expected = {f"thread-{i}" for i in range(20)} | {f"signal-{n}" for n in range(1, handled + 1)}
missing = expected - taken
assert not missing, sorted(missing)[:5]
print("ok", handled)
"""


def test_post_from_a_signal_handler_inside_take_neither_deadlocks_nor_loses_a_reason() -> None:
    result = subprocess.run([PY, "-c", SIGNAL_INSIDE_TAKE], capture_output=True, text=True, timeout=30,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_reasons_are_coalesced_and_every_post_wakes_select() -> None:
    import select

    wake = Wakeup()
    try:
        for _ in range(3):
            wake.post("files")
        wake.post("netlink")
        assert select.select([wake.fileno()], [], [], 0)[0]
        assert wake.take() == {"files", "netlink"}
        assert not select.select([wake.fileno()], [], [], 0)[0]
        assert wake.take() == set()
    finally:
        wake.close()


def test_posts_from_many_threads_are_all_taken_even_when_the_pipe_is_full() -> None:
    wake = Wakeup()
    try:
        def post_many(n: int) -> None:
            for i in range(20_000):
                wake.post(f"t{n}-{i % 50}")

        threads = [threading.Thread(target=post_many, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        taken: set[str] = set()
        while any(t.is_alive() for t in threads):
            taken |= wake.take()
        for t in threads:
            t.join()
        taken |= wake.take()
        assert taken == {f"t{n}-{i}" for n in range(4) for i in range(50)}
    finally:
        wake.close()
