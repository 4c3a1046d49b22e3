# SPDX-License-Identifier: MIT
"""Issue 11: vnetd's place in the boot, checked against the real units and scripts.

``contrib/systemd/vnetd.service`` had ``After=libvirtd.service`` and
``Before=network.target`` while Debian's libvirtd.service is ``After=network.target``:
an ordering cycle, which systemd breaks at boot by dropping libvirtd's start job.
``systemd-analyze verify`` (no PID 1 needed) checks a boot transaction made of vnetd
and the real units of libvirt-daemon-system, systemd-networkd and NetworkManager
(installed by ./run); ``insserv --dry-run`` does the same for the LSB headers with the
real init scripts. The daemon side: vnetd sends READY before it connects to libvirt,
since a socket-activated libvirtd waits for network.target, which waits for vnetd.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon_support import DaemonProcess
from tests.support import ROOT, Netns, StateDir

UNIT = ROOT / "contrib" / "systemd" / "vnetd.service"
INIT_SCRIPT = ROOT / "contrib" / "init.d" / "vnetd"
SYSTEM_UNITS = Path("/lib/systemd/system")
#: the real units vnetd is ordered against, and the Debian packages they come from
REAL_UNITS = {"libvirtd.service": "libvirt-daemon-system", "libvirt-guests.service": "libvirt-daemon-system",
              "NetworkManager.service": "network-manager", "systemd-networkd.service": "systemd",
              "network.target": "systemd", "network-pre.target": "systemd", "network-online.target": "systemd"}
BOOT = ("[Unit]\nDescription=a boot with vnetd, libvirtd, NetworkManager and systemd-networkd enabled\n"
        "Wants=vnetd.service libvirtd.service libvirt-guests.service NetworkManager.service "
        "systemd-networkd.service network-online.target\n")


def real_unit(name: str) -> Path:
    path = SYSTEM_UNITS / name
    assert path.is_file(), f"{path} is missing: ./run installs {REAL_UNITS.get(name, 'its package')}"
    return path


def directives(path: Path, key: str) -> set[str]:
    """Every value of ``key=`` in a unit file (space-separated lists split)."""
    values: set[str] = set()
    for line in path.read_text().splitlines():
        if line.startswith(f"{key}="):
            values.update(line.split("=", 1)[1].split())
    return values


def verify(unit_text: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify of a boot wanting vnetd (this unit text) and the real units.

    vnetd's path is the admin's (/usr/local/bin, a symlink to the venv): here it is the
    suite's own entry point, so that verify's executable check has something to check."""
    for name in REAL_UNITS:
        real_unit(name)
    vnetd = Path(sys.executable).parent / "vnetd"
    assert vnetd.is_file()
    (tmp / "vnetd.service").write_text(unit_text.replace("/usr/local/bin/vnetd", str(vnetd)))
    (tmp / "boot-test.target").write_text(BOOT)
    return subprocess.run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=yes",
                           str(tmp / "boot-test.target"), str(tmp / "vnetd.service")],
                          capture_output=True, text=True, timeout=120, cwd=tmp)


def test_the_unit_verifies_in_a_boot_with_libvirtd_networkd_and_networkmanager(tmp_path: Path) -> None:
    result = verify(UNIT.read_text(), tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "cycle" not in out and "deleted" not in out, out
    assert "vnetd.service" not in out, out  # no warning about vnetd's unit at all


def test_the_old_ordering_is_the_cycle_verify_reports(tmp_path: Path) -> None:
    """The oracle sees the bug: After=libvirtd.service with Before=network.target."""
    old = UNIT.read_text().replace("After=network-pre.target\n", "After=network-pre.target libvirtd.service\n")
    assert old != UNIT.read_text()
    out = verify(old, tmp_path)
    text = out.stdout + out.stderr
    assert "Found ordering cycle" in text and "deleted to break ordering cycle" in text, text


def test_vnetd_is_a_network_manager_before_network_target_and_libvirtd_comes_after() -> None:
    assert directives(UNIT, "After") == {"network-pre.target"}
    assert directives(UNIT, "Before") == {"network.target"} and directives(UNIT, "Wants") == {"network.target"}
    for key in ("After", "Before", "Wants", "Requires", "BindsTo", "Requisite"):
        assert "libvirtd.service" not in directives(UNIT, key), key
    assert "network.target" in directives(real_unit("libvirtd.service"), "After")
    for peer in ("NetworkManager.service", "systemd-networkd.service"):  # vnetd's peers, not ordered with it
        assert "network.target" in directives(real_unit(peer), "Before")
        assert "network-pre.target" in directives(real_unit(peer), "After")


# --------------------------------------------------------------------------- SysV (LSB headers)


def insserv_order(script_text: str, tmp: Path) -> tuple[dict[str, dict[str, int]], str]:
    """Start/stop sequence numbers insserv computes for the real /etc/init.d scripts
    plus this vnetd script: {"S": {name: n}} for runlevel 2 (rcS scripts before, as
    negative numbers), {"K": {name: n}} for runlevel 0; and insserv's stderr."""
    initd = tmp / "init.d"
    shutil.copytree("/etc/init.d", initd, symlinks=True)
    for level in "0123456S":
        (tmp / f"rc{level}.d").mkdir()
    (initd / "vnetd").write_text(script_text)
    os.chmod(initd / "vnetd", 0o755)
    (tmp / "insserv").mkdir()
    result = subprocess.run(["insserv", "--dry-run", "--show-all", "--path", str(initd), "--config",
                             "/etc/insserv.conf", "--insserv-dir", str(tmp / "insserv")],
                            capture_output=True, text=True, timeout=120)
    order: dict[str, dict[str, int]] = {"S": {}, "K": {}}
    for line in (result.stdout + result.stderr).splitlines():
        m = re.match(r"^([SK]):(\d+):([0-6S ]+):(\S+)$", line)
        if m is None:
            continue
        kind, number, levels, name = m.group(1), int(m.group(2)), m.group(3).split(), m.group(4)
        if kind == "S" and ("2" in levels or levels == ["S"]):
            order["S"][name] = number - (100 if levels == ["S"] else 0)
        elif kind == "K" and "0" in levels:
            order["K"][name] = number
    return order, result.stderr


def test_lsb_headers_start_vnetd_after_network_and_before_libvirtd_without_loops(tmp_path: Path) -> None:
    for script in ("libvirtd", "virtlogd", "networking"):
        assert Path("/etc/init.d", script).is_file(), f"/etc/init.d/{script}: ./run installs its package"
    order, stderr = insserv_order(INIT_SCRIPT.read_text(), tmp_path)
    assert "loop" not in stderr.lower() and "warning" not in stderr.lower(), stderr
    start, stop = order["S"], order["K"]
    assert start["networking"] < start["vnetd"] < start["libvirtd"], start  # networking is in rcS
    assert stop["libvirtd"] < stop["vnetd"], stop


def test_the_old_lsb_headers_started_vnetd_after_libvirtd(tmp_path: Path) -> None:
    old = INIT_SCRIPT.read_text().replace("# X-Start-Before:    libvirtd\n", "# Should-Start:      libvirtd\n")
    old = old.replace("# Should-Start:      $network\n", "")
    order, _stderr = insserv_order(old, tmp_path)
    assert order["S"]["vnetd"] > order["S"]["libvirtd"]


# --------------------------------------------------------------------------- the daemon


class SilentLibvirtd:
    """A libvirt socket that accepts and never answers: a socket-activated libvirtd
    whose start job waits for network.target (which waits for vnetd's READY)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.clients: list[socket.socket] = []
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.clients.append(client)
            self.accepted.set()

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "notify.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(path)
        server.settimeout(60)
        try:
            yield path, server
        finally:
            server.close()


@pytest.mark.kernel
def test_ready_is_sent_while_libvirtd_does_not_answer_yet(make_netns: Callable[..., Netns], state_dir: StateDir,
                                                          notify_socket: tuple[str, socket.socket]) -> None:
    ns = make_netns("boot")
    notify_path, notify = notify_socket
    with tempfile.TemporaryDirectory() as tmp:
        libvirt_sock = os.path.join(tmp, "libvirt-sock")
        silent = SilentLibvirtd(libvirt_sock)
        state_dir.write("10-br.yaml", "interfaces:\n- name: br0\n  type: linux-bridge\n  state: up\n")
        state_dir.write("30-libvirt.yaml", f"libvirt:\n  uri: qemu:///system?socket={libvirt_sock}\n"
                                           "  guests:\n    reattach: true\n")
        daemon = DaemonProcess(ns, state_dir, env={"NOTIFY_SOCKET": notify_path})
        try:
            messages: list[str] = []
            while not any("READY=1" in m for m in messages):
                messages.append(notify.recv(4096).decode())  # times out (fails) if READY never comes
            assert ns.link("br0") is not None  # the first pass made the network before READY
            assert silent.accepted.wait(30)  # then vnetd asked libvirt, which does not answer yet
            silent.close()  # "libvirtd" goes away: vnetd carries on and reconnects later
            daemon.wait_for("libvirt.disconnected")
        finally:
            silent.close()
            code = daemon.stop()
        assert code == 0, "\n".join(daemon.lines[-30:])
