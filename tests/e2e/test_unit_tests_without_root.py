# SPDX-License-Identifier: MIT
"""Issue 11: ``pytest tests/unit`` as an unprivileged user passes, skipping what needs
root with the reason instead of erroring in its fixtures.

The run is real: a copy of the working tree owned by ``nobody`` (so pytest, mypy and
hypothesis can write their caches in it), the suite's own packages through a Python
``nobody`` can execute (tests/unprivileged.py), and ``setpriv`` to drop to
``nobody:nogroup`` with no supplementary groups.

It takes a minute of one core and needs nothing from the rest of the run, so when
this test is selected the run starts as soon as collection ends
(``tests/conftest.py``: ``NobodyUnitRun.start``) and goes on beside the other
tests; the test waits for its end and judges its output.
"""

from __future__ import annotations

import pytest

from tests.unprivileged import NobodyUnitRun

pytestmark = [pytest.mark.root("switches to the user nobody with setpriv"), pytest.mark.slow]


def test_unit_tests_pass_as_nobody_and_skip_what_needs_root(request: pytest.FixtureRequest) -> None:
    run = request.config.stash.get(NobodyUnitRun.KEY, None) or NobodyUnitRun.start()
    returncode, out = run.result(timeout=1200)
    assert returncode == 0, out[-6000:]
    summary = out.strip().splitlines()[-1]
    assert " passed" in summary and " skipped" in summary and "error" not in summary, summary
    assert "needs root: it works in network namespaces against the real kernel (marker 'kernel'" in out
    assert "needs root: chowns a state file to another user (marker 'root')" in out
