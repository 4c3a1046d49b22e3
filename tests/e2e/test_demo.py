# SPDX-License-Identifier: MIT
"""`vnetd demo` (the README's first command): runs, converges, cleans up after itself."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support import PY, ROOT, sh

pytestmark = pytest.mark.kernel


def test_demo_builds_its_namespace_runs_the_daemon_and_removes_everything() -> None:
    assert "vnetd-demo" not in sh("ip", "netns", "list").stdout.split()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([PY, "-m", "vnetd", "--log-format", "json", "demo", "--duration", "4"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ip -n vnetd-demo link set eth1 nomaster" in result.stdout  # tells the user how to break something
    assert '"event": "daemon.ready"' in result.stderr
    assert '"resource": "interface/br0", "field": "exists"' in result.stderr  # it built the article's host
    assert "removed namespaces vnetd-demo and vnetd-demo-switch" in result.stdout
    names = sh("ip", "netns", "list").stdout.split()
    assert "vnetd-demo" not in names and "vnetd-demo-switch" not in names
