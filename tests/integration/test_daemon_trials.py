# SPDX-License-Identifier: MIT
"""Issue 12, the daemon's side: it pauses for an ``apply --confirm`` trial, recovers an
orphaned one, shows it in ``vnetd status``, rolls back a change of the files that breaks
the health probes, and observes without acting when asked to.

The "remote host" is the one of test_trial.py: ``br0`` (192.0.2.1/24) over ``eth1``,
whose peer sits in the "admin" namespace (192.0.2.50, the SSH side). The daemon runs
in the host namespace on a state directory that declares exactly that; a trial tries
files of another directory (docs/OPERATIONS.md: a running daemon applies its own
directory as soon as a file changes). Waits are on log events and on status round
trips (each answered by the main loop, after it handled what was queued), never sleeps.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon_support import DaemonProcess
from tests.integration.test_trial import LOCKOUT, Host, _ns_key, finish, start_trial
from tests.support import Netns, NetnsFactory, StateDir, vnetd
from tests.traffic import TcpServer

pytestmark = pytest.mark.kernel

BASE = """\
interfaces:
- name: br0
  type: linux-bridge
  state: up
  ipv4:
    enabled: true
    address: [192.0.2.1/24]
"""
PROBE = """\
health:
  probes:
  - tcp: 192.0.2.50:2222
    name: admin-ssh
    timeout: 1
"""


@pytest.fixture
def remote(make_netns: NetnsFactory) -> Iterator[Host]:
    host = make_netns("host")
    admin = make_netns("admin")
    host.veth("eth1", "adm0", peer_ns=admin)
    host.ip("link", "add", "br0", "type", "bridge")
    host.ip("link", "set", "eth1", "master", "br0")
    for name in ("br0", "eth1"):
        host.ip("link", "set", name, "up")
    host.ip("addr", "add", "192.0.2.1/24", "dev", "br0")
    host.ip("route", "add", "203.0.113.0/24", "via", "192.0.2.254")
    admin.ip("link", "set", "adm0", "up")
    admin.ip("addr", "add", "192.0.2.50/24", "dev", "adm0")
    yield Host(host, admin)
    leftovers = [p for p in Path("/run/vnetd").glob(f"trial-{_ns_key(host)}*")]
    for path in leftovers:
        path.unlink()
    assert not leftovers, leftovers


@pytest.fixture
def daemon_on(remote: Host) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(state: StateDir, *args: str) -> DaemonProcess:
        process = DaemonProcess(remote.host, state, *args)
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.stop()


def addresses(ns: Netns) -> list[str]:
    data = json.loads(ns.ip("-j", "-4", "addr", "show", "br0"))
    return [f"{a['local']}/{a['prefixlen']}" for a in data[0]["addr_info"]]


def status(daemon: DaemonProcess, *args: str) -> str:
    """`vnetd status`; its answer comes from the main loop, after what was queued before it."""
    result = vnetd("status", "--socket", daemon.socket, *args)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.stdout


def settle(daemon: DaemonProcess) -> None:
    """Two status round trips: the loop has handled every event queued before the first."""
    status(daemon)
    status(daemon)


# --------------------------------------------------------------------------- a/b: trials


def test_the_daemon_pauses_for_a_trial_shows_it_and_takes_the_confirmed_files(
        remote: Host, make_state_dir: Callable[[], StateDir], daemon_on: Callable[..., DaemonProcess]) -> None:
    state = make_state_dir()
    state.write("10-br0.yaml", BASE)
    daemon = daemon_on(state)
    tried = make_state_dir()
    tried.write("10-br0.yaml", LOCKOUT)
    mark = daemon.mark()
    proc = start_trial(remote.host, tried, 300)
    try:
        pending = daemon.wait_for("trial.pending", since=mark, pid=proc.pid)
        assert any("198.51.100.7/24" in change for change in pending["changes"]), pending
        settle(daemon)
        assert addresses(remote.host) == ["198.51.100.7/24"]  # the trial's change, not repaired away
        assert not daemon.find("action.applied", since=mark)

        shown = json.loads(status(daemon, "--json"))["trial"]
        assert shown["pid"] == proc.pid and shown["state_dir"] == str(tried)
        assert shown["since"] <= shown["deadline"] and 0 < shown["deadline_in_s"] <= 300
        assert shown["user"] and "apply --confirm" in shown["command"]
        text = status(daemon)
        assert f"TRIAL PENDING (pid {proc.pid}" in text and "reconciling is paused" in text, text
        assert "changes: interface/br0: ipv4.address want [198.51.100.7/24]" in text, text

        state.write("10-br0.yaml", LOCKOUT)  # install the tried files while the daemon waits
        settle(daemon)
        assert not daemon.find("config.loaded", since=mark)  # not read during the trial
        decision = "confirm"
    finally:
        assert vnetd(decision if "decision" in locals() else "rollback", netns=remote.host).returncode == 0
        code, out = finish(proc)
    assert code == 0, out
    daemon.wait_for("trial.ended", since=mark, outcome="confirmed")
    daemon.wait_for("config.loaded", since=mark, source="reload")
    settle(daemon)
    assert addresses(remote.host) == ["198.51.100.7/24"]
    assert not daemon.find("action.applied", since=mark)  # the daemon's files are the trial's: nothing to do
    assert json.loads(status(daemon, "--json"))["trial"] is None


def test_after_a_rolled_back_trial_the_daemon_keeps_the_previous_configuration(
        remote: Host, make_state_dir: Callable[[], StateDir], daemon_on: Callable[..., DaemonProcess]) -> None:
    before = remote.view()
    state = make_state_dir()
    state.write("10-br0.yaml", BASE)
    daemon = daemon_on(state)
    tried = make_state_dir()
    tried.write("10-br0.yaml", LOCKOUT)
    mark = daemon.mark()
    proc = start_trial(remote.host, tried, 2)
    daemon.wait_for("trial.pending", since=mark)
    state.write("10-br0.yaml", LOCKOUT)  # installed, but never confirmed
    code, out = finish(proc)
    assert code == 4, out
    daemon.wait_for("trial.ended", since=mark, outcome="rolled back")
    daemon.wait_for("config.rejected", since=mark, source="files")
    settle(daemon)
    assert remote.view() == before
    assert not daemon.find("action.applied", since=mark)
    assert "ROLLED BACK" in status(daemon)

    later = daemon.mark()
    state.write("10-br0.yaml", BASE.replace("state: up", "state: up\n  mtu: 1450"))  # the files change again
    daemon.wait_for("config.loaded", since=later, source="files")
    daemon.wait_for("action.applied", since=later, resource="interface/br0", field="mtu")
    assert remote.host.link("br0")["mtu"] == 1450  # type: ignore[index]


def test_an_orphaned_trial_is_rolled_back_when_the_daemon_starts(
        remote: Host, state_dir: StateDir, daemon_on: Callable[..., DaemonProcess]) -> None:
    """The trial tried the daemon's own files, then its process was killed: the daemon
    restores the checkpoint at start and does not apply those files again."""
    before = remote.view()
    state_dir.write("10-br0.yaml", LOCKOUT)
    proc = start_trial(remote.host, state_dir, 600)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert remote.view() != before
    daemon = daemon_on(state_dir)
    recovered = daemon.wait_for("trial.recovered", pid=proc.pid)
    assert recovered["complete"] is True and recovered["restored"], recovered
    daemon.wait_for("config.rejected", source="startup")
    settle(daemon)
    assert remote.view() == before
    assert not daemon.find("action.applied")


def test_a_trial_whose_process_dies_is_rolled_back_by_the_running_daemon(
        remote: Host, make_state_dir: Callable[[], StateDir], daemon_on: Callable[..., DaemonProcess]) -> None:
    before = remote.view()
    state = make_state_dir()
    state.write("10-br0.yaml", BASE)
    daemon = daemon_on(state)
    tried = make_state_dir()
    tried.write("10-br0.yaml", LOCKOUT)
    mark = daemon.mark()
    proc = start_trial(remote.host, tried, 600)
    daemon.wait_for("trial.pending", since=mark)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    recovered = daemon.wait_for("trial.recovered", since=mark, pid=proc.pid)
    assert recovered["complete"] is True, recovered
    settle(daemon)
    assert remote.view() == before
    assert json.loads(status(daemon, "--json"))["trial"] is None
    assert 'vnetd_config_rollbacks_total{reason="trial"} 1.0' in status(daemon, "--prometheus")


# --------------------------------------------------------------------------- c: probes


def test_a_file_change_that_breaks_a_probe_is_rolled_back(
        remote: Host, state_dir: StateDir, daemon_on: Callable[..., DaemonProcess]) -> None:
    with TcpServer(remote.admin, "192.0.2.50", 2222, lifetime=120):
        state_dir.write("00-health.yaml", PROBE)
        state_dir.write("10-br0.yaml", BASE)
        daemon = daemon_on(state_dir)
        before = remote.view()
        mark = daemon.mark()
        state_dir.write("10-br0.yaml", LOCKOUT)
        rolled = daemon.wait_for("config.rolled_back", since=mark)
        assert rolled["failed_probes"][0]["probe"] == "admin-ssh", rolled
        assert any("198.51.100.7/24" in change for change in rolled["undone"]), rolled
        assert rolled["complete"] is True
        settle(daemon)
        assert remote.view() == before
        assert addresses(remote.host) == ["192.0.2.1/24"]
        assert 'vnetd_config_rollbacks_total{reason="probe"} 1.0' in status(daemon, "--prometheus")
        assert "ROLLED BACK" in status(daemon) and "admin-ssh" in status(daemon)

        # the previous configuration stays enforced: a drift of it is repaired
        later = daemon.mark()
        remote.host.ip("addr", "add", "198.51.100.9/24", "dev", "br0")
        daemon.wait_for("action.applied", since=later, resource="interface/br0", field="ipv4.address")
        settle(daemon)
        assert addresses(remote.host) == ["192.0.2.1/24"]
        assert not daemon.find("config.rolled_back", since=later)


def test_a_file_change_that_keeps_the_probes_green_stays(
        remote: Host, state_dir: StateDir, daemon_on: Callable[..., DaemonProcess]) -> None:
    with TcpServer(remote.admin, "192.0.2.50", 2222, lifetime=120):
        state_dir.write("00-health.yaml", PROBE)
        state_dir.write("10-br0.yaml", BASE)
        daemon = daemon_on(state_dir)
        mark = daemon.mark()
        state_dir.write("10-br0.yaml", BASE.replace("state: up", "state: up\n  mtu: 1400"))
        passed = daemon.wait_for("probes.passed", since=mark)
        assert passed["probes"] == ["admin-ssh"]
        settle(daemon)
        assert remote.host.link("br0")["mtu"] == 1400  # type: ignore[index]
        assert not daemon.find("config.rolled_back", since=mark)


def test_drift_repairs_never_run_the_probes(
        remote: Host, state_dir: StateDir, daemon_on: Callable[..., DaemonProcess]) -> None:
    """No probe server at all: a probe would fail; a repair must not care."""
    state_dir.write("00-health.yaml", PROBE)
    state_dir.write("10-br0.yaml", BASE)
    daemon = daemon_on(state_dir)
    mark = daemon.mark()
    remote.host.ip("addr", "del", "192.0.2.1/24", "dev", "br0")
    daemon.wait_for("action.applied", since=mark, resource="interface/br0")
    daemon.wait_for("reconcile.done", since=mark)
    settle(daemon)
    assert addresses(remote.host) == ["192.0.2.1/24"]
    assert not daemon.find("probes.passed", since=mark) and not daemon.find("config.rolled_back", since=mark)


# --------------------------------------------------------------------------- d: observe only

DUMMIES = "interfaces:\n" + "".join(f"- {{name: obs{i}, type: linux-bridge, state: up, mtu: 1500}}\n"
                                    for i in range(10))


def _dummies(ns: Netns) -> None:
    for i in range(10):
        ns.ip("link", "add", f"obs{i}", "type", "bridge")
        ns.ip("link", "set", f"obs{i}", "up")


@pytest.mark.parametrize("how", ["--observe", "daemon: {observe: true}"])
def test_observe_only_reports_each_drift_once_and_changes_nothing(
        how: str, remote: Host, state_dir: StateDir, daemon_on: Callable[..., DaemonProcess]) -> None:
    _dummies(remote.host)
    state_dir.write("10-dummies.yaml", DUMMIES)
    if how == "--observe":
        daemon = daemon_on(state_dir, "--observe")
    else:
        state_dir.write("00-daemon.yaml", how + "\n")
        daemon = daemon_on(state_dir)
    daemon.wait_for("daemon.observing")
    mark = daemon.mark()
    for i in range(10):
        remote.host.ip("link", "set", f"obs{i}", "mtu", "1400")
    assert daemon.wait_until(lambda: len(daemon.find("drift.detected", since=mark)) >= 10)
    settle(daemon)
    remote.host.ip("link", "set", "obs0", "mtu", "1400")  # no change: no new report
    settle(daemon)
    drifts = daemon.find("drift.detected", since=mark)
    assert sorted(d["resource"] for d in drifts) == [f"interface/obs{i}" for i in range(10)]
    assert all(d["field"] == "mtu" and d["want"] == 1500 and d["have"] == 1400 for d in drifts), drifts
    assert not daemon.find("action.applied")
    assert all(remote.host.link(f"obs{i}")["mtu"] == 1400 for i in range(10))  # type: ignore[index]
    shown = json.loads(status(daemon, "--json"))
    assert shown["observing"] is True and shown["counts"]["drifted"] == 10
    assert "OBSERVING ONLY" in status(daemon)
    assert "vnetd_observe_only 1.0" in status(daemon, "--prometheus")


def test_no_observe_overrides_the_setting(
        remote: Host, state_dir: StateDir, daemon_on: Callable[..., DaemonProcess]) -> None:
    _dummies(remote.host)
    state_dir.write("00-daemon.yaml", "daemon: {observe: true}\n")
    state_dir.write("10-dummies.yaml", DUMMIES)
    daemon = daemon_on(state_dir, "--no-observe")
    mark = daemon.mark()
    remote.host.ip("link", "set", "obs3", "mtu", "1400")
    daemon.wait_for("action.applied", since=mark, resource="interface/obs3", field="mtu")
    assert not daemon.find("daemon.observing")


def test_trying_the_daemons_own_directory_after_it_applied_it_says_how_to_try_instead(
        remote: Host, state_dir: StateDir, daemon_on: Callable[..., DaemonProcess]) -> None:
    state_dir.write("10-br0.yaml", BASE)
    daemon = daemon_on(state_dir)
    mark = daemon.mark()
    state_dir.write("10-br0.yaml", BASE.replace("state: up", "state: up\n  mtu: 1400"))
    daemon.wait_for("action.applied", since=mark, resource="interface/br0", field="mtu")
    result = vnetd("apply", "--confirm", "5", netns=remote.host, state_dir=state_dir)
    assert result.returncode == 0 and "nothing to change" in result.stdout, result.stdout + result.stderr
    assert f"the daemon of this namespace (pid {daemon.proc.pid}) applies" in result.stderr
    assert "edit a copy of the directory" in result.stderr


def test_a_daemon_started_during_a_trial_waits_for_it_and_does_not_apply_the_tried_files(
        remote: Host, state_dir: StateDir, daemon_on: Callable[..., DaemonProcess]) -> None:
    """vnetd restarted in the middle of a trial of its own files: it pauses at once, and
    after the rollback it does not enforce the files that were just rolled back."""
    before = remote.view()
    state_dir.write("10-br0.yaml", LOCKOUT)
    proc = start_trial(remote.host, state_dir, 300)
    try:
        daemon = daemon_on(state_dir)
        daemon.wait_for("trial.pending", pid=proc.pid)
        settle(daemon)
        assert addresses(remote.host) == ["198.51.100.7/24"]
        assert 'vnetd_paused 1.0' in status(daemon, "--prometheus")
    finally:
        assert vnetd("rollback", netns=remote.host).returncode == 0
        code, out = finish(proc)
    assert code == 4, out
    daemon.wait_for("trial.ended", outcome="rolled back")
    daemon.wait_for("config.rejected", source="trial")
    settle(daemon)
    assert remote.view() == before
    assert not daemon.find("action.applied")
    assert 'vnetd_paused 0.0' in status(daemon, "--prometheus")
    shown = json.loads(status(daemon, "--json"))
    assert shown["files"] == [] and "rolled back" in shown["rejected_files"]["reason"]

    later = daemon.mark()  # new files: enforced again
    state_dir.write("10-br0.yaml", BASE.replace("state: up", "state: up\n  mtu: 1450"))
    daemon.wait_for("action.applied", since=later, resource="interface/br0", field="mtu")


def test_a_change_that_removes_a_probe_with_what_it_watches_is_still_checked_by_it(
        remote: Host, state_dir: StateDir, daemon_on: Callable[..., DaemonProcess]) -> None:
    with TcpServer(remote.admin, "192.0.2.50", 2222, lifetime=120):
        state_dir.write("00-health.yaml", PROBE)
        state_dir.write("10-br0.yaml", BASE)
        daemon = daemon_on(state_dir)
        before = remote.view()
        mark = daemon.mark()
        state_dir.write("00-health.yaml", "")  # emptied: held (still enforced) until a reload
        state_dir.write("10-br0.yaml", LOCKOUT)
        daemon.wait_for("config.rolled_back", since=mark)
        settle(daemon)
        assert remote.view() == before
