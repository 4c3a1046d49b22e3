# SPDX-License-Identifier: MIT
"""Issue 11: sysctl keys checked against /proc/sys of the namespace.

* ``net.ipv4.ip_fowrard`` passed ``check`` silently: a key that does not exist here is
  now a warning naming FILE:LINE and the key it probably meant;
* keys under the per-interface directories of links the state creates do not warn
  (those directories appear with the link), but a typo in them still does;
* ``net.ipv4.route.flush`` passed ``check`` and failed ``apply``: a write-only key is
  an action, not a state, and is refused with FILE:LINE;
* ``check`` needs no root for this (stat and listdir only).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, Netns, StateDir, vnetd
from tests.unprivileged import UnprivilegedPython, as_nobody

pytestmark = pytest.mark.kernel

TYPO = """\
sysctl:
  net.ipv4.ip_forward: 1
  net.ipv4.ip_fowrard: 1
"""

CREATED = """\
interfaces:
- name: br9
  type: linux-bridge
  state: up
- name: v9a
  type: veth
  state: up
  veth:
    peer: v9b
sysctl:
  net.ipv4.conf.br9.forwarding: 1
  net.ipv6.conf.br9.disable_ipv6: 1
  net.ipv4.neigh.br9.gc_stale_time: 90
  net.ipv4.conf.v9b.rp_filter: 2
"""


def test_a_key_that_does_not_exist_here_warns_with_file_line_and_a_suggestion(netns: Netns,
                                                                               state_dir: StateDir) -> None:
    written = state_dir.write("10-sysctl.yaml", TYPO)
    result = vnetd("check", netns=netns, state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    assert (f"warning: sysctl.unknown_key: {written}:3: sysctl[net.ipv4.ip_fowrard]: no such key on this host: "
            "/proc/sys/net/ipv4/ip_fowrard does not exist; did you mean net.ipv4.ip_forward?") in result.stderr
    assert result.stderr.count("warning:") == 1, result.stderr  # ip_forward itself exists


def test_keys_of_links_the_state_creates_do_not_warn_and_are_applied(netns: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-created.yaml", CREATED)
    assert netns.link("br9") is None and netns.link("v9b") is None
    check = vnetd("check", netns=netns, state_dir=state_dir)
    assert check.returncode == 0 and "warning" not in check.stderr, check.stderr
    applied = vnetd("apply", netns=netns, state_dir=state_dir)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert netns.sysctl("net.ipv4.conf.br9.forwarding") == "1"
    assert netns.sysctl("net.ipv4.neigh.br9.gc_stale_time") == "90"
    assert netns.sysctl("net.ipv4.conf.v9b.rp_filter") == "2"


def test_a_typo_under_a_created_link_still_warns(netns: Netns, state_dir: StateDir) -> None:
    written = state_dir.write("10-created.yaml", CREATED.replace("br9.forwarding", "br9.forwardign"))
    result = vnetd("check", netns=netns, state_dir=state_dir)
    assert result.returncode == 0
    assert (f"warning: sysctl.unknown_key: {written}:11: sysctl[net.ipv4.conf.br9.forwardign]: no such key on "
            "this host: /proc/sys/net/ipv4/conf/default/forwardign does not exist; "
            "did you mean net.ipv4.conf.br9.forwarding?") in result.stderr


def test_a_key_of_a_link_neither_declared_nor_present_warns(netns: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-sysctl.yaml", "sysctl:\n  net.ipv4.conf.eth7.forwarding: 1\n")
    result = vnetd("check", netns=netns, state_dir=state_dir)
    assert result.returncode == 0
    assert ("/proc/sys/net/ipv4/conf/eth7/forwarding does not exist (is the interface it names present?)"
            in result.stderr)


@pytest.mark.parametrize(("key", "says"), [
    ("net.ipv4.route.flush", "net.ipv4.route.flush is write-only (mode 0200): writing it is an action"),
    ("net.ipv6.route.flush", "net.ipv6.route.flush is write-only (mode 0200)"),
    ("net.ipv4.conf", "net.ipv4.conf is a directory of settings, not a setting"),
])
def test_write_only_keys_and_directories_are_refused(key: str, says: str, netns: Netns,
                                                     state_dir: StateDir) -> None:
    written = state_dir.write("10-sysctl.yaml", f"sysctl:\n  net.ipv4.ip_forward: 1\n  {key}: 1\n")
    before = netns.exec("sysctl", "-a", check=False).stdout
    for command in ("check", "plan", "apply"):
        result = vnetd(command, netns=netns, state_dir=state_dir)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert f"error: {written}:3: sysctl[{key}]: {says}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert netns.sysctl("net.ipv4.ip_forward") == "0"  # nothing of the file was applied
    assert netns.exec("sysctl", "-a", check=False).stdout.count("\n") == before.count("\n")


@pytest.fixture(scope="module")
def nobody_python() -> Iterator[str]:
    python = UnprivilegedPython()
    try:
        yield python.python
    finally:
        python.cleanup()


def test_check_of_sysctl_keys_needs_no_root(nobody_python: str) -> None:
    # a state directory nobody can reach (pytest's tmp_path is root's, 0700), root's as vnetd wants
    where = Path(tempfile.mkdtemp(prefix="vnetd-check-", dir="/tmp"))
    try:
        os.chmod(where, 0o755)
        state = StateDir(where / "vnetd.d")
        env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
        state.write("10-sysctl.yaml", TYPO)
        result = as_nobody(nobody_python, "-m", "vnetd", "--state-dir", str(state), "check", cwd="/", env=env)
        assert result.returncode == 0, result.stderr
        assert "sysctl[net.ipv4.ip_fowrard]" in result.stderr and "did you mean net.ipv4.ip_forward?" in result.stderr
        state.write("10-sysctl.yaml", TYPO + "  net.ipv4.route.flush: 1\n")
        result = as_nobody(nobody_python, "-m", "vnetd", "--state-dir", str(state), "check", cwd="/", env=env)
        assert result.returncode == 1, result.stderr
        assert "sysctl[net.ipv4.route.flush]: net.ipv4.route.flush is write-only" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        shutil.rmtree(where, ignore_errors=True)
