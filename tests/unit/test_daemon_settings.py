# SPDX-License-Identifier: MIT
"""Issue 12, pure parts: the ``daemon:`` section (observe only), the warning about probes
the shipped systemd unit blocks, the digest that tells refused files, and how
``vnetd status`` shows a trial."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import StateDir
from tests.unit.test_loader import Broken, bad, issues_of, shown
from vnetd.checks import probe_unit_warnings, unit_allowed_addresses
from vnetd.daemon.loading import digest_of, load_now
from vnetd.daemon.status import render_status
from vnetd.desired.loader import SourceFile, load_state_dir


@pytest.mark.parametrize("value, expected", [("true", True), ("false", False)])
def test_the_daemon_section_sets_observe(value: str, expected: bool, state_dir: StateDir) -> None:
    state_dir.write("00-daemon.yaml", f"daemon:\n  observe: {value}\n")
    assert load_state_dir(str(state_dir)).daemon.observe is expected


def test_without_a_daemon_section_observe_is_unset(state_dir: StateDir) -> None:
    state_dir.write("10-x.yaml", "sysctl:\n  net.ipv4.ip_forward: 1\n")
    assert load_state_dir(str(state_dir)).daemon.observe is None


def test_observe_written_twice_is_refused(state_dir: StateDir) -> None:
    state_dir.write("00-a.yaml", "daemon: {observe: true}\n")
    state_dir.write("01-b.yaml", "daemon: {observe: false}\n")
    issues = issues_of(state_dir)
    assert any("daemon.observe" in i.message for i in issues), shown(issues)


BROKEN = [
    bad("observe-not-bool", "daemon:\n  observe: maybe\n", 2, "daemon.observe", "expected true or false"),
    bad("unknown-daemon-key", "daemon:\n  observ: true\n", 2, "daemon.observ", "unknown key", "valid keys: observe"),
    bad("daemon-not-mapping", "daemon: [observe]\n", 1, "daemon", "mapping"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c.id for c in BROKEN])
def test_broken_daemon_section(case: Broken, state_dir: StateDir) -> None:
    case.write(state_dir)
    issues = issues_of(state_dir)
    assert any(case.matches(i, state_dir) for i in issues), shown(issues)


# --------------------------------------------------------------------------- the unit and probes

PROBES = """\
health:
  probes:
  - tcp: 192.0.2.10:22
  - icmp: 2001:db8::1
  - icmp: 127.0.0.1
  - address: 192.0.2.1/24
    interface: br0
"""


def test_probes_the_shipped_unit_blocks_are_warned_about(state_dir: StateDir, tmp_path: Path) -> None:
    state_dir.write("00-h.yaml", PROBES)
    warnings = probe_unit_warnings(load_state_dir(str(state_dir)), (str(tmp_path / "none"),))
    assert len(warnings) == 2, warnings  # loopback and the address probe need no IP traffic
    assert warnings[0].startswith("probe.blocked_by_unit: probe 192.0.2.10:22 (tcp connect 192.0.2.10:22)")
    assert "IPAddressAllow=192.0.2.10" in warnings[0] and "IPAddressAllow=2001:db8::1" in warnings[1]


def test_a_drop_in_that_allows_the_targets_silences_the_warning(state_dir: StateDir, tmp_path: Path) -> None:
    state_dir.write("00-h.yaml", PROBES)
    dropins = tmp_path / "vnetd.service.d"
    dropins.mkdir()
    (dropins / "probes.conf").write_text("[Service]\nIPAddressAllow=192.0.2.0/24\nIPAddressAllow=2001:db8::/32\n")
    assert probe_unit_warnings(load_state_dir(str(state_dir)), (str(tmp_path),)) == []
    (dropins / "zz-reset.conf").write_text("[Service]\nIPAddressAllow=\nIPAddressAllow=localhost\n")
    assert len(probe_unit_warnings(load_state_dir(str(state_dir)), (str(tmp_path),))) == 2


def test_named_address_sets_of_systemd(tmp_path: Path) -> None:
    (tmp_path / "vnetd.service").write_text("[Service]\nIPAddressAllow=any link-local junk\n")
    allowed = {str(n) for n in unit_allowed_addresses((str(tmp_path),))}
    assert {"0.0.0.0/0", "::/0", "169.254.0.0/16", "127.0.0.0/8"} <= allowed


def test_check_prints_the_warning(state_dir: StateDir, tmp_path: Path) -> None:
    from tests.support import vnetd

    state_dir.write("00-h.yaml", PROBES)
    result = vnetd("check", state_dir=state_dir, env={"VNETD_SYSTEMD_UNIT_DIRS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "warning: probe.blocked_by_unit: probe 192.0.2.10:22" in result.stderr


# --------------------------------------------------------------------------- refused files


def test_the_digest_tells_files_apart() -> None:
    a = [SourceFile("a.yaml", "x: 1\n"), SourceFile("b.yaml", "")]
    assert digest_of(a) == digest_of(list(reversed(a)))
    assert digest_of(a) != digest_of([SourceFile("a.yaml", "x: 2\n"), SourceFile("b.yaml", "")])
    assert digest_of(a) != digest_of([SourceFile("a.yaml", "x: 1\n"), SourceFile("c.yaml", "")])
    assert digest_of([SourceFile("ab", "c")]) != digest_of([SourceFile("a", "bc")])


def test_a_load_carries_the_digest_of_what_it_read(state_dir: StateDir) -> None:
    state_dir.write("10-x.yaml", "sysctl:\n  net.ipv4.ip_forward: 1\n")
    first = load_now(str(state_dir), "files", None)
    assert first.digest and first.digest == load_now(str(state_dir), "files", None).digest
    state_dir.write("10-x.yaml", "sysctl:\n  net.ipv4.ip_forward: 0\n")
    assert load_now(str(state_dir), "files", None).digest != first.digest


# --------------------------------------------------------------------------- status


def _status(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {"passes": 3, "last_source": "files", "last_pass_age_s": 1.0, "state_dir": "/etc/vnetd.d",
                               "files": [], "last_load_errors": [], "counts": {}, "resources": []}
    base.update(extra)
    return base


def test_status_shows_a_pending_trial() -> None:
    now = time.time()
    text = render_status(_status(trial={
        "pid": 4242, "user": "alice", "command": "vnetd apply --confirm 120", "since": now - 10,
        "deadline": now + 110, "deadline_in_s": 110.0, "state_dir": "/root/try", "owner_alive": True,
        "changes": ["interface/br0: mtu want 1400, have 1500"]}))
    assert "TRIAL PENDING (pid 4242, user alice): since " in text
    assert "(in 110 s) unless `vnetd confirm`; reconciling is paused" in text
    assert "command: vnetd apply --confirm 120" in text and "state files tried: /root/try" in text
    assert "changes: interface/br0: mtu want 1400, have 1500" in text


def test_status_shows_observe_only_and_refused_files() -> None:
    text = render_status(_status(observing=True, rejected_files={"files": [], "at": time.time(),
                                                                 "reason": "health probes failed"}))
    assert "OBSERVING ONLY" in text
    assert "ROLLED BACK at" in text and "health probes failed" in text


# --------------------------------------------------------------------------- held files


def test_a_vanished_files_probes_and_observe_setting_are_held(state_dir: StateDir) -> None:
    state_dir.write("00-daemon.yaml", "daemon: {observe: true}\n")
    state_dir.write("05-health.yaml", "health:\n  probes:\n  - icmp: 192.0.2.254\n    name: gw\n")
    state_dir.write("10-x.yaml", "sysctl:\n  net.ipv4.ip_forward: 1\n")
    before = load_now(str(state_dir), "startup", None).desired
    assert before is not None
    state_dir.remove("00-daemon.yaml")
    state_dir.remove("05-health.yaml")
    held = load_now(str(state_dir), "files", before, frozenset(before.files))
    assert held.desired is not None
    assert [p.name for p in held.desired.probes] == ["gw"] and held.desired.daemon.observe is True
    assert sorted(r for h in held.held for r in h.resources) == ["daemon/observe", "probe/gw"]
    confirmed = load_now(str(state_dir), "reload", before, frozenset())
    assert confirmed.desired is not None and not confirmed.desired.probes
    assert confirmed.desired.daemon.observe is None
