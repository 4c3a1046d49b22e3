# SPDX-License-Identifier: MIT
"""Issue 11: ``pytest tests/unit`` as an unprivileged user passes, skipping what needs
root with the reason instead of erroring in its fixtures.

The run is real: a copy of the working tree owned by ``nobody`` (so pytest, mypy and
hypothesis can write their caches in it), the suite's own packages through a Python
``nobody`` can execute (tests/unprivileged.py), and ``setpriv`` to drop to
``nobody:nogroup`` with no supplementary groups.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.unprivileged import UnprivilegedPython, as_nobody

pytestmark = [pytest.mark.root("switches to the user nobody with setpriv"), pytest.mark.slow]

NOT_COPIED = (".venv", ".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
              "build", "dist", "*.egg-info", "results")


def test_unit_tests_pass_as_nobody_and_skip_what_needs_root() -> None:
    python = UnprivilegedPython()
    where = Path(tempfile.mkdtemp(prefix="vnetd-unit-nobody-", dir="/tmp"))
    try:
        tree = where / ROOT.name
        shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*NOT_COPIED), symlinks=True)
        shared = ROOT.parent / "shared"  # the article's files, which some unit tests read
        if shared.is_dir():
            (where / "shared").symlink_to(shared)
        subprocess.run(["chown", "-R", "nobody:nogroup", str(where)], check=True)
        os.chmod(where, 0o755)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(where), "LANG": "C.UTF-8", "NO_COLOR": "1"}
        result = as_nobody(python.python, "-m", "pytest", "tests/unit", "-q", "-rs", "-p", "no:cacheprovider",
                           cwd=tree, env=env, timeout=1200)
    finally:
        python.cleanup()
        shutil.rmtree(where, ignore_errors=True)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    summary = out.strip().splitlines()[-1]
    assert " passed" in summary and " skipped" in summary and "error" not in summary, summary
    assert "needs root: it works in network namespaces against the real kernel (marker 'kernel'" in out
    assert "needs root: chowns a state file to another user (marker 'root')" in out
