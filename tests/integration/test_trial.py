# SPDX-License-Identifier: MIT
"""``vnetd apply --confirm``: a change kept only if confirmed, restored byte for byte otherwise (issue 12).

Each test builds a small "remote host" namespace: ``br0`` (192.0.2.1/24) over the
stand-in NIC ``eth1``, whose peer sits in an "admin" namespace (192.0.2.50, the
SSH side), a route through the gateway 192.0.2.254 and foreign firewall rules.
The change under trial takes the address the admin side uses away, or blocks
its TCP connections; the oracle for "restored" is what ``ip -d -j`` and
``iptables-legacy-save`` (``iptables-nft-save`` on that backend) print before and after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import PY, ROOT, Netns, NetnsFactory, StateDir, vnetd
from tests.traffic import TcpServer, tcp_connect

pytestmark = pytest.mark.kernel

LOCKOUT = """\
interfaces:
- name: br0
  type: linux-bridge
  state: up
  mtu: 1400
  ipv4:
    enabled: true
    address: [198.51.100.7/24]
"""

FIREWALL_LOCKOUT = """\
firewall:
  filter:
    INPUT:
      mode: exclusive
      rules:
      - -p tcp --dport 80 -j ACCEPT
      - -j DROP
"""


class Host:
    def __init__(self, host: Netns, admin: Netns, variant: str = "legacy") -> None:
        self.host = host
        self.admin = admin
        self.variant = variant  # the iptables variant of the firewall backend used

    def view(self) -> tuple[str, str]:
        return self.host.settled_snapshot(), self.host.iptables_save(variant=self.variant)


#: the firewall tests of a trial run over both backends (issue 13)
BOTH_BACKENDS = pytest.mark.parametrize("remote", ["iptables-legacy", "iptables-nft"], indirect=True)


@pytest.fixture
def remote(request: pytest.FixtureRequest, make_netns: NetnsFactory, state_dir: StateDir) -> Host:
    backend = getattr(request, "param", "iptables-legacy")
    variant = backend.removeprefix("iptables-")
    state_dir.pin(backend)
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
    host.exec(f"iptables-{variant}", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
    host.exec(f"iptables-{variant}", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT")
    return Host(host, admin, variant)


def start_trial(ns: Netns, state: StateDir, seconds: float, *extra: str) -> subprocess.Popen[str]:
    """`vnetd apply --confirm` in the background; returns once it waits for a decision."""
    cmd = [PY, "-m", "vnetd", "--netns", ns.name, "--state-dir", str(state), "apply", "--confirm", str(seconds),
           *extra]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout is not None
    for line in proc.stdout:
        if "keep it? Confirm within" in line or line.startswith("rolling back"):
            break
    return proc


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out + err


@BOTH_BACKENDS
def test_an_unconfirmed_change_is_restored_byte_for_byte(remote: Host, state_dir: StateDir) -> None:
    before = remote.view()
    state_dir.write("10-lockout.yaml", LOCKOUT + FIREWALL_LOCKOUT)
    result = vnetd("apply", "--confirm", "2", netns=remote.host, state_dir=state_dir)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "rolling back: not confirmed within 2 s" in result.stdout
    assert "restored: interface/br0: address want 192.0.2.1/24" in result.stdout
    assert "restored: route/203.0.113.0/24 via 192.0.2.254 dev br0" in result.stdout
    assert "rolled back: the checkpoint is restored" in result.stdout
    assert remote.view() == before


def test_a_confirmed_change_stays(remote: Host, state_dir: StateDir) -> None:
    state_dir.write("10-lockout.yaml", LOCKOUT)
    proc = start_trial(remote.host, state_dir, 60)
    confirm = vnetd("confirm", netns=remote.host)
    assert confirm.returncode == 0 and confirm.stdout.strip() == "confirmed", confirm.stdout + confirm.stderr
    code, out = finish(proc)
    assert code == 0, out
    assert "198.51.100.7/24" in remote.host.ip("-4", "addr", "show", "br0")
    assert "192.0.2.1/24" not in remote.host.ip("-4", "addr", "show", "br0")
    assert vnetd("confirm", netns=remote.host).returncode == 1  # no trial is pending any more


@BOTH_BACKENDS
def test_a_firewall_lockout_is_rolled_back_and_the_connection_works_again(remote: Host, state_dir: StateDir) -> None:
    before = remote.view()
    with TcpServer(remote.host, "192.0.2.1", 22):
        assert tcp_connect(remote.admin, "192.0.2.1", 22).startswith("ok")
        state_dir.write("20-fw.yaml", FIREWALL_LOCKOUT)
        proc = start_trial(remote.host, state_dir, 3)
        assert tcp_connect(remote.admin, "192.0.2.1", 22, timeout=0.5) == "timeout"  # locked out
        code, out = finish(proc)
        assert code == 4, out
        assert "restored: firewall/filter/INPUT" in out
        assert tcp_connect(remote.admin, "192.0.2.1", 22).startswith("ok")
    assert remote.view() == before


def test_rollback_ends_a_trial_at_once(remote: Host, state_dir: StateDir) -> None:
    before = remote.view()
    state_dir.write("10-lockout.yaml", LOCKOUT)
    proc = start_trial(remote.host, state_dir, 600)
    result = vnetd("rollback", netns=remote.host)
    assert result.returncode == 0, result.stdout + result.stderr
    code, out = finish(proc)
    assert code == 4 and "rolling back: rolled back by `vnetd rollback`" in out, out
    assert remote.view() == before


def test_a_killed_trial_is_rolled_back_by_vnetd_rollback(remote: Host, state_dir: StateDir) -> None:
    before = remote.view()
    state_dir.write("10-lockout.yaml", LOCKOUT + FIREWALL_LOCKOUT)
    proc = start_trial(remote.host, state_dir, 600)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert remote.view() != before  # the change is in place, its process gone
    result = vnetd("rollback", netns=remote.host)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rolled back: the checkpoint is restored" in result.stdout
    assert remote.view() == before


def test_ctrl_c_rolls_back(remote: Host, state_dir: StateDir) -> None:
    before = remote.view()
    state_dir.write("10-lockout.yaml", LOCKOUT)
    proc = start_trial(remote.host, state_dir, 600)
    proc.send_signal(signal.SIGINT)
    code, out = finish(proc)
    assert code == 4 and "rolling back: interrupted (Ctrl-C)" in out, out
    assert remote.view() == before


def test_the_terminal_going_away_rolls_back(remote: Host, state_dir: StateDir) -> None:
    before = remote.view()
    state_dir.write("10-lockout.yaml", LOCKOUT)
    proc = start_trial(remote.host, state_dir, 600)
    proc.send_signal(signal.SIGHUP)
    code, out = finish(proc)
    assert code == 4 and "the terminal went away (SIGHUP)" in out, out
    assert remote.view() == before


def test_a_probe_that_breaks_rolls_back_at_once(remote: Host, state_dir: StateDir) -> None:
    """The admin side's SSH port is a probe target; the change drops the address it is reached by."""
    before = remote.view()
    with TcpServer(remote.admin, "192.0.2.50", 2222):
        state_dir.write("00-health.yaml", "health:\n  probes:\n  - tcp: 192.0.2.50:2222\n    timeout: 1\n"
                                          "    name: admin-ssh\n")
        state_dir.write("10-lockout.yaml", LOCKOUT)
        started = time.monotonic()
        result = vnetd("apply", "--confirm", "600", netns=remote.host, state_dir=state_dir)
        assert result.returncode == 4, result.stdout + result.stderr
        assert time.monotonic() - started < 600  # it did not wait for the deadline
        assert "rolling back: probe failed: admin-ssh (tcp connect 192.0.2.50:2222)" in result.stdout
    assert remote.view() == before


def test_a_probe_that_keeps_passing_lets_the_trial_wait(remote: Host, state_dir: StateDir) -> None:
    with TcpServer(remote.admin, "192.0.2.50", 2222):
        state_dir.write("00-health.yaml", "health:\n  probes:\n  - tcp: 192.0.2.50:2222\n")
        state_dir.write("10-mtu.yaml", "interfaces:\n- name: br0\n  type: linux-bridge\n  mtu: 1400\n")
        proc = start_trial(remote.host, state_dir, 600)
        assert vnetd("confirm", netns=remote.host).returncode == 0
        code, out = finish(proc)
        assert code == 0, out
    assert remote.host.link("br0")["mtu"] == 1400  # type: ignore[index]


def test_apply_is_refused_while_a_trial_is_pending(remote: Host, state_dir: StateDir) -> None:
    state_dir.write("10-lockout.yaml", LOCKOUT)
    proc = start_trial(remote.host, state_dir, 600)
    try:
        for args in (("apply",), ("apply", "--confirm", "5")):
            result = vnetd(*args, netns=remote.host, state_dir=state_dir)
            assert result.returncode != 0
            assert "a trial is" in result.stderr and "pending" in result.stderr, result.stderr
    finally:
        vnetd("rollback", netns=remote.host)
        finish(proc)


def test_nothing_to_change_is_no_trial(remote: Host, state_dir: StateDir) -> None:
    state_dir.write("10-same.yaml", "interfaces:\n- name: br0\n  type: linux-bridge\n  state: up\n")
    result = vnetd("apply", "--confirm", "5", netns=remote.host, state_dir=state_dir)
    assert result.returncode == 0 and "nothing to change" in result.stdout, result.stdout + result.stderr
    assert vnetd("rollback", netns=remote.host).returncode == 1


@pytest.fixture(autouse=True)
def _no_trial_left(remote: Host) -> Iterator[None]:
    yield
    leftovers = [p for p in Path("/run/vnetd").glob("trial-*")
                 if p.name.startswith(f"trial-{_ns_key(remote.host)}")]
    assert not leftovers, leftovers


def _ns_key(ns: Netns) -> str:
    out = ns.exec("stat", "-L", "-c", "%d-%i", "/proc/self/ns/net").stdout.strip()
    return out
