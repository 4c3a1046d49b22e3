# SPDX-License-Identifier: MIT
"""Issue 11: other firewalls in the namespace are reported, whatever their family.

The detection used to dump the ``ip`` family only: firewalld's ``inet firewalld``, a
distribution's ``table inet filter`` and ``ip6``/``bridge``/``netdev`` tables went
unreported, and tables created while the daemon ran were noticed only on reload.
Now one dump lists every family; ``check``/``plan``/``apply`` print one short line,
once; the daemon looks again on its periodic check and logs once per change.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.daemon_support import DaemonProcess
from tests.support import Netns, StateDir, vnetd
from vnetd.backends.nftdetect import BackendReport, backend_warnings, mismatch_line

pytestmark = pytest.mark.kernel

FIREWALL = """\
firewall:
  filter:
    FORWARD:
      rules:
      - -m physdev --physdev-is-bridged -j ACCEPT
"""
TABLES = (("inet", "firewalld"), ("ip6", "x"), ("bridge", "y"), ("netdev", "z"), ("inet", "filter"))


def add_tables(ns: Netns, *tables: tuple[str, str]) -> None:
    for family, name in tables:
        ns.exec("nft", "add", "table", family, name)


@pytest.mark.parametrize("command", ["check", "plan", "apply"])
def test_tables_of_every_family_are_reported_once_in_one_line(command: str, netns: Netns,
                                                             state_dir: StateDir) -> None:
    state_dir.write("20-firewall.yaml", FIREWALL)
    add_tables(netns, *TABLES)
    result = vnetd(command, netns=netns, state_dir=state_dir)
    assert result.returncode in (0, 2), result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if "backend_mismatch" in line]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("warning: firewall.backend_mismatch: nf_tables has ")
    for family, name in TABLES:
        assert f"{family} {name}" in line
    assert "see docs/OPERATIONS.md" in line
    assert len(line) < 300


def test_no_foreign_table_no_table_warning(netns: Netns, state_dir: StateDir) -> None:
    state_dir.write("20-firewall.yaml", FIREWALL)
    result = vnetd("check", netns=netns, state_dir=state_dir)
    assert result.returncode == 0
    assert "nf_tables has" not in result.stderr


def test_the_line_stays_short_with_many_tables() -> None:
    line = mismatch_line(BackendReport("legacy", tuple(f"inet t{i}" for i in range(40))))
    assert line is not None and "and 34 more" in line and len(line) < 200
    assert backend_warnings(BackendReport("legacy", ())) == []
    assert backend_warnings(BackendReport("nft", ())) == [
        "firewall.backend_mismatch: `iptables` is iptables-nft; vnetd writes the legacy tables and packets "
        "pass both (see docs/OPERATIONS.md)"]


@pytest.fixture
def daemon(netns: Netns, state_dir: StateDir) -> Iterator[DaemonProcess]:
    state_dir.write("20-firewall.yaml", FIREWALL)
    process = DaemonProcess(netns, state_dir)
    try:
        process.wait_ready()
        yield process
    finally:
        assert process.stop() == 0, "\n".join(process.lines[-30:])


def test_a_table_added_under_a_running_daemon_is_logged_once_without_reload(daemon: DaemonProcess,
                                                                             netns: Netns) -> None:
    mark = daemon.mark()
    add_tables(netns, ("inet", "firewalld"))
    first = daemon.wait_for("firewall.backend_mismatch", since=mark, added=["inet firewalld"])
    assert first["nft_tables"] == ["inet firewalld"] and "inet firewalld" in first["message"]
    add_tables(netns, ("bridge", "y"))
    second = daemon.wait_for("firewall.backend_mismatch", since=mark, added=["bridge y"])
    assert second["nft_tables"] == ["bridge y", "inet firewalld"]
    netns.exec("nft", "delete", "table", "inet", "firewalld")
    daemon.wait_for("firewall.backend_mismatch", since=mark, removed=["inet firewalld"])
    # each change logged once, though the periodic check ran many times in between
    assert len(daemon.find("firewall.backend_mismatch", since=mark)) == 3
    assert not daemon.find("config.loaded", since=mark)  # no reload was needed


def test_the_daemon_logs_nothing_about_backends_without_a_firewall_section(netns: Netns,
                                                                          state_dir: StateDir) -> None:
    state_dir.write("10-br.yaml", "interfaces:\n- name: br5\n  type: linux-bridge\n")
    add_tables(netns, ("inet", "firewalld"))
    process = DaemonProcess(netns, state_dir)
    try:
        process.wait_ready()
        mark = process.mark()
        state_dir.write("20-firewall.yaml", FIREWALL)  # now vnetd writes a firewall: it says so
        process.wait_for("config.loaded", since=mark)
        process.wait_for("firewall.backend_mismatch", since=mark, nft_tables=["inet firewalld"])
    finally:
        assert process.stop() == 0
    before = [e for e in process.events[:mark] if e.get("event") == "firewall.backend_mismatch"]
    assert before == []
