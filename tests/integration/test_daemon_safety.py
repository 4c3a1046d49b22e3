# SPDX-License-Identifier: MIT
"""Issue 11: a daemon that never dies, never runs twice on one namespace, and never
touches a file it did not create; issue 12 item 4: a state file that disappears is
not a decision.

Every daemon here runs in its own test namespace; the xtables lock it takes is a
file of the test's (``XTABLES_LOCKFILE``, honoured as by iptables), so holding it
never blocks another tool on the machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_support import BRIDGE, DaemonProcess
from tests.support import PY, ROOT, Netns, StateDir, vnetd

pytestmark = pytest.mark.kernel

FORWARD_RULE = """
firewall:
  filter:
    FORWARD:
      rules:
      - -s 192.0.2.0/24 -j ACCEPT
"""


def run_vnetd(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    full_env.update(env or {})
    return subprocess.run([PY, "-m", "vnetd", *args], capture_output=True, text=True, timeout=timeout, env=full_env)


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def enslaved(ns: Netns) -> bool:
    return (ns.link("eth1") or {}).get("master") == "br0" and "UP" in (ns.link("br0") or {}).get("flags", [])


@pytest.fixture
def host(make_netns: Callable[..., Netns]) -> Netns:
    ns = make_netns("safe")
    ns.veth("eth1", "uplink")
    ns.veth("eth0", "wan")
    return ns


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    """A directory only root can write (pytest's tmp_path is 0700 root)."""
    path = tmp_path / "run"
    path.mkdir(mode=0o755)
    return path


def stopped_cleanly(daemon: DaemonProcess) -> None:
    code = daemon.stop()
    assert code == 0, "\n".join(daemon.lines[-30:])
    assert not daemon.bad_lines, daemon.bad_lines[:5]
    assert not daemon.find("pass.crashed"), daemon.find("pass.crashed")


# --------------------------------------------------------------------------- the daemon never dies


def test_xtables_lock_held_by_another_tool_backs_off_the_firewall_and_converges_once_free(
        host: Netns, state_dir: StateDir, tmp_path: Path) -> None:
    lock = tmp_path / "xtables.lock"
    state_dir.write("10-bridge.yaml", BRIDGE)
    state_dir.write("20-rule.yaml", FORWARD_RULE)
    holder = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another tool (a slow iptables-restore) holds the lock
    daemon = DaemonProcess(host, state_dir, env={"XTABLES_LOCKFILE": str(lock)})
    try:
        failed = daemon.wait_for("action.failed", resource="firewall/filter/FORWARD", timeout=30)
        assert "xtables lock" in failed["error"] and failed["retry_in_s"] >= 1
        assert daemon.wait_until(lambda: enslaved(host))  # everything else is managed meanwhile
        host.ip("link", "set", "eth1", "nomaster")
        assert daemon.wait_until(lambda: enslaved(host))
        assert daemon.proc.poll() is None
        assert "192.0.2.0/24" not in host.iptables_save("filter")
        mark = daemon.mark()
        os.close(holder)  # the other tool is done
        holder = -1
        daemon.wait_for("action.applied", since=mark, resource="firewall/filter/FORWARD", timeout=30)
        assert "-A FORWARD -s 192.0.2.0/24" in host.iptables_save("filter")
    finally:
        if holder >= 0:
            os.close(holder)
        stopped_cleanly(daemon)


CRASHING_DAEMON = r"""
import sys
from vnetd.daemon.reconciler import Reconciler

original = Reconciler.run_pass
crashes = []

def run_pass(self, sources):
    if len(crashes) < 2:  # the first two passes hit a bug
        crashes.append(sources)
        raise RuntimeError("an unexpected bug in a pass")
    return original(self, sources)

Reconciler.run_pass = run_pass

def check_unevented(self):
    raise OSError("an unexpected bug in the periodic check")

Reconciler.check_unevented = check_unevented  # crashes every time: only that step backs off
from vnetd.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_unexpected_exception_is_one_event_with_its_traceback_in_the_log_file_under_daemon(
        host: Netns, state_dir: StateDir, private_dir: Path) -> None:
    state_dir.write("10-bridge.yaml", BRIDGE)
    pidfile, log = private_dir / "vnetd.pid", private_dir / "vnetd.log"
    started = subprocess.run(
        [PY, "-c", CRASHING_DAEMON, "--netns", host.name, "--state-dir", str(state_dir), "--log-format", "json",
         "run", "--daemon", "--pidfile", str(pidfile), "--log-file", str(log),
         "--socket", str(private_dir / "vnetd.sock")],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert started.returncode == 0, started.stderr

    def events() -> list[dict[str, object]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    assert wait_until(lambda: any(e["event"] == "daemon.ready" for e in events()), timeout=60), events()[-10:]
    assert wait_until(lambda: enslaved(host), timeout=30)  # retried with back-off, then converged
    pid = int(pidfile.read_text())
    crashes = [e for e in events() if e["event"] == "pass.crashed" and e["step"] == "pass"]
    assert len(crashes) == 2, crashes
    first, second = crashes
    assert "RuntimeError: an unexpected bug in a pass" in str(first["traceback"])
    assert "Traceback (most recent call last)" in str(first["traceback"])
    assert (first["retry_in_s"], second["retry_in_s"]) == (1.0, 2.0)  # back-off
    # a step that keeps crashing backs off alone (one line per attempt, 1, 2, 4 ... s apart)...
    assert wait_until(lambda: len([e for e in events() if e.get("step") == "check"]) >= 3, timeout=30)
    checks = [e for e in events() if e.get("step") == "check"]
    assert [e["retry_in_s"] for e in checks[:3]] == [1.0, 2.0, 4.0]
    assert "OSError: an unexpected bug in the periodic check" in str(checks[0]["error"])
    # ...while the rest goes on: a drift is repaired
    host.ip("link", "set", "eth1", "nomaster")
    assert wait_until(lambda: enslaved(host), timeout=30)
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=30)
    assert events()[-1]["event"] == "daemon.stopping"
    assert not pidfile.exists()


def test_sighup_and_sigterm_as_soon_as_the_pidfile_exists(host: Netns, state_dir: StateDir,
                                                         private_dir: Path) -> None:
    state_dir.write("10-bridge.yaml", BRIDGE)
    pidfile = private_dir / "vnetd.pid"

    def start() -> DaemonProcess:
        daemon = DaemonProcess(host, state_dir, "--pidfile", str(pidfile))
        assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() == str(daemon.proc.pid),
                          timeout=30), "\n".join(daemon.lines)
        return daemon

    daemon = start()
    daemon.signal(signal.SIGHUP)  # the first moment an init script could send it
    daemon.wait_ready()
    assert daemon.proc.poll() is None
    daemon.wait_for("config.loaded", source="reload")
    stopped_cleanly(daemon)

    daemon = start()
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=30) == 0, "\n".join(daemon.lines)
    daemon.stop()
    assert not daemon.bad_lines and not any("Traceback" in line for line in daemon.lines), daemon.lines
    assert not pidfile.exists()


# --------------------------------------------------------------------------- repairs, health


def test_a_deleted_bridge_is_back_with_its_port_without_a_failure_or_back_off(host: Netns, state_dir: StateDir) -> None:
    """The port's release notification arrives before the bridge's deletion: a pass woken
    by it plans "attach eth1 to br0" for a br0 that is gone. That is a stale view, not a
    failure: re-planned at once, no back-off."""
    state_dir.write("10-bridge.yaml", (ROOT / "etc" / "vnetd.d" / "10-uplink-br0.yaml").read_text())
    daemon = DaemonProcess(host, state_dir)
    try:
        daemon.wait_ready()
        assert daemon.wait_until(lambda: enslaved(host))
        for _ in range(5):
            mark = daemon.mark()
            host.ip("link", "del", "br0")
            daemon.wait_for("action.applied", since=mark, resource="interface/br0", field="exists")
            assert daemon.wait_until(lambda: enslaved(host) and (host.link("br0") or {}).get("mtu") == 9000)
            daemon.wait_for("reconcile.done", since=mark)
            assert not daemon.find("action.failed", since=mark), daemon.find("action.failed", since=mark)
        status = json.loads(vnetd("status", "--json", "--socket", daemon.socket).stdout)
        states = {r["resource"]: r["state"] for r in status["resources"]}
        assert states["interface/br0"] == states["interface/eth1"] == "converged"
    finally:
        stopped_cleanly(daemon)


def test_health_of_resources_no_longer_declared_is_forgotten(host: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-bridge.yaml", BRIDGE)
    state_dir.write("20-extra.yaml", "interfaces:\n" + "".join(
        f"- {{name: brx{i}, type: linux-bridge, state: up}}\n" for i in range(20)))
    daemon = DaemonProcess(host, state_dir)
    try:
        daemon.wait_ready()

        def tracked() -> int:
            return int(json.loads(vnetd("status", "--json", "--socket", daemon.socket).stdout)["health_tracked"])

        for i in range(20):  # drift repaired: each bridge now has a health record
            host.ip("link", "set", f"brx{i}", "down")
        assert daemon.wait_until(lambda: tracked() == 20)
        state_dir.remove("20-extra.yaml")
        daemon.wait_for("config.file_removed")
        assert tracked() == 20  # held: still enforced
        assert vnetd("reload", "--socket", daemon.socket).returncode == 0
        assert tracked() == 0
    finally:
        stopped_cleanly(daemon)


# --------------------------------------------------------------------------- one vnetd per namespace


def test_a_second_daemon_on_the_namespace_refuses_naming_the_first_and_touches_nothing(
        host: Netns, make_state_dir: Callable[[], StateDir], private_dir: Path) -> None:
    first_state = make_state_dir()
    first_state.write("10-bridge.yaml", BRIDGE)
    first = DaemonProcess(host, first_state)
    try:
        first.wait_ready()
        other_state = make_state_dir()
        other_state.write("20-rule.yaml", FORWARD_RULE)
        other_socket = private_dir / "other.sock"
        for state, sock in ((first_state, first.socket), (other_state, str(other_socket))):
            second = run_vnetd("--netns", host.name, "--state-dir", str(state), "run", "--socket", sock)
            assert second.returncode == 1, second.stderr
            assert f"another vnetd (pid {first.proc.pid}" in second.stderr and "already manages" in second.stderr
            assert "Traceback" not in second.stderr
        assert not other_socket.exists()
        assert os.path.exists(first.socket)  # the first one's socket is still there, and answers
        status = vnetd("status", "--json", "--socket", first.socket)
        assert status.returncode == 0 and json.loads(status.stdout)["config_valid"]
        assert "192.0.2.0/24" not in host.iptables_save("filter")  # the second one changed nothing
        host.ip("link", "set", "eth1", "nomaster")
        assert first.wait_until(lambda: enslaved(host))
    finally:
        stopped_cleanly(first)
    # once the first one is gone, the namespace is free again
    again = DaemonProcess(host, first_state)
    try:
        again.wait_ready()
    finally:
        stopped_cleanly(again)


# --------------------------------------------------------------------------- nothing of anyone else's


def test_a_socket_in_a_world_writable_directory_is_refused_and_the_directory_left_alone(
        host: Netns, state_dir: StateDir, tmp_path: Path) -> None:
    state_dir.write("10-bridge.yaml", BRIDGE)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    result = run_vnetd("--netns", host.name, "--state-dir", str(state_dir), "run", "--socket",
                       str(shared / "vnetd.sock"))
    assert result.returncode == 1 and "writable by group and others (mode 1777)" in result.stderr, result.stderr
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    assert os.listdir(shared) == []
    assert host.link("br0") is None  # refused before anything was done


def test_a_regular_file_at_the_socket_path_is_not_removed(host: Netns, state_dir: StateDir,
                                                         private_dir: Path) -> None:
    state_dir.write("10-bridge.yaml", BRIDGE)
    precious = private_dir / "vnetd.sock"
    precious.write_text("not a socket\n")
    result = run_vnetd("--netns", host.name, "--state-dir", str(state_dir), "run", "--socket", str(precious))
    assert result.returncode == 1 and "exists and is a regular file" in result.stderr, result.stderr
    assert precious.read_text() == "not a socket\n"


def test_a_live_socket_is_not_taken_over_and_a_stale_one_is_replaced(
        make_netns: Callable[..., Netns], state_dir: StateDir, private_dir: Path) -> None:
    state_dir.write("10-bridge.yaml", BRIDGE)
    first_ns, second_ns = make_netns("a"), make_netns("b")
    for ns in (first_ns, second_ns):
        ns.veth("eth1", "uplink")
    path = str(private_dir / "vnetd.sock")
    first = DaemonProcess(first_ns, state_dir, socket_path=path)
    try:
        first.wait_ready()
        result = run_vnetd("--netns", second_ns.name, "--state-dir", str(state_dir), "run", "--socket", path)
        assert result.returncode == 1 and "another process is listening on it" in result.stderr, result.stderr
        assert vnetd("status", "--socket", path).returncode == 0  # still the first daemon's
    finally:
        stopped_cleanly(first)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a socket nobody listens on (a daemon killed with -9 leaves one)
    stale.close()
    second = DaemonProcess(second_ns, state_dir, socket_path=path)
    try:
        second.wait_ready()
        assert vnetd("status", "--socket", path).returncode == 0
    finally:
        stopped_cleanly(second)
    assert not os.path.exists(path)


@pytest.mark.parametrize("option", ["--pidfile", "--log-file"])
def test_pidfile_and_log_file_are_never_opened_through_a_symlink(
        host: Netns, state_dir: StateDir, private_dir: Path, tmp_path: Path, option: str) -> None:
    state_dir.write("10-bridge.yaml", BRIDGE)
    victim = tmp_path / "victim.conf"  # a root-owned file elsewhere
    victim.write_text("precious\n")
    link = private_dir / "vnetd.out"
    link.symlink_to(victim)
    for daemonize in ([], ["--daemon"]):
        result = run_vnetd("--netns", host.name, "--state-dir", str(state_dir), "run", option, str(link),
                           "--socket", str(private_dir / "vnetd.sock"), *daemonize)
        assert result.returncode == 1 and "is a symlink; vnetd does not follow it" in result.stderr, result.stderr
        assert victim.read_text() == "precious\n"
    assert host.link("br0") is None


@pytest.mark.parametrize("kind", ["fifo", "directory", "hard link"])
def test_a_pidfile_that_is_not_a_plain_file_is_refused(host: Netns, state_dir: StateDir, private_dir: Path,
                                                      tmp_path: Path, kind: str) -> None:
    state_dir.write("10-bridge.yaml", BRIDGE)
    pidfile = private_dir / "vnetd.pid"
    if kind == "fifo":
        os.mkfifo(pidfile)
    elif kind == "directory":
        pidfile.mkdir()
    else:
        other = private_dir / "shadow"
        other.write_text("root:x:...\n")
        os.link(other, pidfile)
    result = run_vnetd("--netns", host.name, "--state-dir", str(state_dir), "run", "--pidfile", str(pidfile),
                       "--socket", str(private_dir / "vnetd.sock"))
    assert result.returncode == 1 and "refusing pidfile" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if kind == "hard link":
        assert (private_dir / "shadow").read_text() == "root:x:...\n"


@pytest.mark.parametrize("option", ["--pidfile", "--log-file"])
def test_pidfile_and_log_file_in_a_directory_others_can_write_are_refused(
        host: Netns, state_dir: StateDir, tmp_path: Path, option: str) -> None:
    state_dir.write("10-bridge.yaml", BRIDGE)
    for mode in (0o775, 0o1777):
        shared = tmp_path / f"shared-{mode:o}"
        shared.mkdir()
        os.chmod(shared, mode)
        result = run_vnetd("--netns", host.name, "--state-dir", str(state_dir), "run", option,
                           str(shared / "vnetd.out"), "--socket", str(tmp_path / "vnetd.sock"))
        assert result.returncode == 1 and "writable by group" in result.stderr, result.stderr
        assert os.listdir(shared) == []


def test_a_state_directory_below_a_directory_others_can_write_is_refused(netns: Netns, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o775)
    unsafe = StateDir(shared / "vnetd.d")
    unsafe.write("10-bridge.yaml", BRIDGE)
    for args in (("check",), ("run", "--socket", str(tmp_path / "vnetd.sock"))):
        result = run_vnetd("--netns", netns.name, "--state-dir", str(unsafe), *args)
        assert result.returncode == 1, result.stderr
        assert f"{shared} is writable by group (mode 0775)" in result.stderr
        assert "every directory above it must be owned by root" in result.stderr
    # a sticky world-writable directory (as /tmp) above a root-owned 0755 one is fine:
    # only the owner of an entry can rename or remove it there
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    fine = StateDir(sticky / "vnetd.d")
    fine.write("10-bridge.yaml", BRIDGE)
    assert run_vnetd("--state-dir", str(fine), "check").returncode == 0


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(("value", "says"), [
    ("127.0.0.1:99999", "the port must be a number from 1 to 65535"),
    ("127.0.0.1:0", "the port must be a number from 1 to 65535"),
    ("127.0.0.1", "wants ADDRESS:PORT"),
    ("example.org:9714", "is not an IP address"),
    ("0.0.0.0:9714", "must be a loopback address"),
])
def test_bad_metrics_addresses_are_clear_errors(netns: Netns, state_dir: StateDir, value: str, says: str) -> None:
    state_dir.write("10-bridge.yaml", BRIDGE)
    result = run_vnetd("--netns", netns.name, "--state-dir", str(state_dir), "run", "--metrics-listen", value)
    assert result.returncode == 1 and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_metrics_on_localhost_and_a_busy_port(host: Netns, state_dir: StateDir, private_dir: Path) -> None:
    state_dir.write("10-bridge.yaml", BRIDGE)
    daemon = DaemonProcess(host, state_dir, "--metrics-listen", "localhost:9714")
    try:
        daemon.wait_ready()
        fetch = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9714/metrics').read().decode())"
        assert "vnetd_passes_total" in host.exec(PY, "-c", fetch).stdout
        result = run_vnetd("--netns", host.name, "--state-dir", str(state_dir), "run", "--metrics-listen",
                           "127.0.0.1:9714", "--socket", str(private_dir / "x.sock"))
        assert result.returncode == 1, result.stderr  # the namespace's daemon is running: refused first
    finally:
        stopped_cleanly(daemon)
    busy = host.popen(PY, "-c", "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', 9715)); s.listen();"
                      "print('ok', flush=True); time.sleep(60)", stdout=subprocess.PIPE)
    try:
        assert busy.stdout is not None and busy.stdout.readline().strip() == "ok"
        result = run_vnetd("--netns", host.name, "--state-dir", str(state_dir), "run", "--metrics-listen",
                           "127.0.0.1:9715", "--socket", str(private_dir / "x.sock"))
        assert result.returncode == 1 and "cannot listen: Address already in use" in result.stderr, result.stderr
        assert not (private_dir / "x.sock").exists()
    finally:
        busy.kill()
        busy.wait()
