# SPDX-License-Identifier: MIT
"""Issue 11: ``vnetd status`` exits 0 ok, 1 running but degraded (the last load failed,
resources failing or backed off), 3 not running, 4 unknown (not root).

Before the fix it exited 0 while printing "last load FAILED".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import pytest

from tests.daemon_support import DaemonProcess
from tests.support import ROOT, Netns, StateDir, vnetd
from tests.unprivileged import UnprivilegedPython, as_nobody

pytestmark = pytest.mark.kernel

BRIDGE = """\
interfaces:
- name: br5
  type: linux-bridge
  state: up
"""


@pytest.fixture
def daemon(netns: Netns, state_dir: StateDir) -> Iterator[DaemonProcess]:
    state_dir.write("10-br5.yaml", BRIDGE)
    process = DaemonProcess(netns, state_dir)
    try:
        process.wait_ready()
        yield process
    finally:
        assert process.stop() == 0, "\n".join(process.lines[-30:])


def status(daemon: DaemonProcess, *args: str) -> tuple[int, str, str]:
    result = vnetd("status", *args, "--socket", daemon.socket)
    return result.returncode, result.stdout, result.stderr


def wait_status(daemon: DaemonProcess, check: Callable[[int, str, str], bool]) -> tuple[int, str, str]:
    """The status once ``check`` holds (a pass may still be running when the log says it)."""
    last: list[tuple[int, str, str]] = []

    def probe() -> bool:
        last[:] = [status(daemon, "--json")]
        return check(*last[0])

    assert daemon.wait_until(probe), last
    return last[0]


def test_a_healthy_daemon_exits_0(daemon: DaemonProcess, netns: Netns) -> None:
    wait_status(daemon, lambda code, out, _err: json.loads(out)["counts"].get("converged") == 1)
    code, out, err = status(daemon)
    assert code == 0 and "vnetd is running" in out and "degraded" not in err, (out, err)
    assert status(daemon, "--json")[0] == 0
    assert status(daemon, "--prometheus")[0] == 0


def test_a_failed_load_exits_1_and_says_why(daemon: DaemonProcess, state_dir: StateDir) -> None:
    mark = daemon.mark()
    state_dir.write("20-broken.yaml", "interfaces:\n- name: br6\n  type: linux-bridge\n  mtu: 10\n")
    daemon.wait_for("config.invalid", since=mark)
    code, out, err = wait_status(daemon, lambda code, _out, _err: code != 0)
    assert code == 1 and json.loads(out)["last_load_errors"], (out, err)
    code, out, err = status(daemon)
    assert code == 1
    assert "last load FAILED" in out
    assert "vnetd is degraded: the last load of the state files failed" in err
    state_dir.remove("20-broken.yaml")
    wait_status(daemon, lambda code, _out, _err: code == 0)  # a good load makes it whole again


def test_a_failing_resource_exits_1(daemon: DaemonProcess, state_dir: StateDir) -> None:
    # only the kernel knows ip_forward takes a number: writing it fails on every pass
    state_dir.write("30-sysctl.yaml", "sysctl:\n  net.ipv4.ip_forward: forty-two\n")
    daemon.wait_for("action.failed", resource="sysctl/net.ipv4.ip_forward")
    code, out, err = wait_status(daemon, lambda code, _out, _err: code != 0)
    states = {r["resource"]: r["state"] for r in json.loads(out)["resources"]}
    assert code == 1 and states["sysctl/net.ipv4.ip_forward"] in ("failing", "backed-off"), out
    assert states["interface/br5"] == "converged"
    assert "resource failing" in err or "resource backed-off" in err, err


def test_not_running_exits_3_and_no_permission_exits_4(daemon: DaemonProcess) -> None:
    assert vnetd("status", "--socket", daemon.socket + ".nope").returncode == 3
    nobody = UnprivilegedPython()
    try:
        env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
        result = as_nobody(nobody.python, "-m", "vnetd", "status", "--socket", daemon.socket, cwd="/", env=env)
    finally:
        nobody.cleanup()
    assert result.returncode == 4, result.stdout + result.stderr
    assert "vnetd status is for root" in result.stderr
