# SPDX-License-Identifier: MIT
"""Loading off the repair path (vnetd/daemon/loading.py), holding vanished files, and
forgetting the health of what is gone (vnetd/daemon/reconciler.py)."""

from __future__ import annotations

import threading

import pytest
import structlog

from tests.support import StateDir
from vnetd.daemon import loading
from vnetd.daemon.loading import LoadJob, LoadOutcome, load_now
from vnetd.daemon.reconciler import Reconciler
from vnetd.model.libvirt import GuestTap

BRIDGES = "interfaces:\n- {name: br0, type: linux-bridge, state: up}\n- {name: br1, type: linux-bridge}\n"
GATEWAY = "sysctl:\n  net.ipv4.ip_forward: 1\nfirewall:\n  nat:\n    POSTROUTING:\n      rules:\n" \
          "      - -o eth0 -j MASQUERADE\n"


def run_job(state: StateDir, source: str = "files", **kwargs: object) -> LoadOutcome:
    done = threading.Event()
    job = LoadJob(str(state), source, kwargs.get("enforced"), kwargs.get("hold", frozenset()),  # type: ignore[arg-type]
                  done.set)
    assert done.wait(120)
    assert job.finished
    return job.collect()


def test_a_valid_directory_is_checked_in_a_child_then_built_here(state_dir: StateDir) -> None:
    state_dir.write("10-br.yaml", BRIDGES)
    outcome = run_job(state_dir)
    assert outcome.crash is None and not outcome.issues
    assert outcome.desired is not None and [i.name for i in outcome.desired.interfaces] == ["br0", "br1"]


def test_an_invalid_directory_is_refused_by_the_child_alone(state_dir: StateDir, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    original = loading.build
    monkeypatch.setattr(loading, "build", lambda *a: built.append("here") or original(*a))  # type: ignore[func-returns-value]
    state_dir.write("10-flood.yaml", "interfaces:\n- &a {name: br0, type: linux-bridge}\n" + "- *a\n" * 200_000)
    outcome = run_job(state_dir)
    assert outcome.desired is None and len(outcome.issues) == 1 and "referenced" in outcome.issues[0].message
    assert not built  # the parent thread never parsed it (the child's calls are in another process)


def test_a_child_over_its_memory_or_time_is_refused(state_dir: StateDir, monkeypatch: pytest.MonkeyPatch) -> None:
    state_dir.write("10-big.yaml", "interfaces:\n" + "- {name: bx, type: linux-bridge}\n" * 90_000)
    monkeypatch.setattr(loading, "CHILD_MEMORY", 20 << 20)
    outcome = run_job(state_dir)
    assert outcome.desired is None and "needed more than 20 MiB" in outcome.issues[0].message, outcome
    monkeypatch.setattr(loading, "CHILD_MEMORY", 1 << 30)
    monkeypatch.setattr(loading, "CHILD_TIMEOUT", 0.05)
    outcome = run_job(state_dir)
    assert outcome.desired is None and "took longer than 0 s" in outcome.issues[0].message, outcome


def test_a_vanished_file_is_held_for_file_events_only(state_dir: StateDir) -> None:
    state_dir.write("10-br.yaml", BRIDGES)
    state_dir.write("20-gw.yaml", GATEWAY)
    before = load_now(str(state_dir), "startup", None).desired
    assert before is not None
    gateway = str(state_dir.path / "20-gw.yaml")
    state_dir.remove("20-gw.yaml")
    held = run_job(state_dir, "files", enforced=before, hold=frozenset(before.files))
    assert held.desired is not None and [h.file for h in held.held] == [gateway]
    assert held.held[0].resources == ("firewall/nat/POSTROUTING", "sysctl/net.ipv4.ip_forward")
    assert [c.name for c in held.desired.chains] == ["POSTROUTING"] and len(held.desired.sysctls) == 1
    confirmed = run_job(state_dir, "reload", enforced=before, hold=frozenset())
    assert confirmed.desired is not None and not confirmed.held and not confirmed.desired.chains


def test_a_file_renamed_or_whose_content_moved_is_not_held(state_dir: StateDir) -> None:
    state_dir.write("10-br.yaml", BRIDGES)
    state_dir.write("20-gw.yaml", GATEWAY)
    before = load_now(str(state_dir), "startup", None).desired
    assert before is not None
    state_dir.remove("20-gw.yaml")
    state_dir.write("30-gw.yaml", GATEWAY)
    outcome = load_now(str(state_dir), "files", before, frozenset(before.files))
    assert outcome.desired is not None and not outcome.held


# --------------------------------------------------------------------------- forgetting


def test_health_is_kept_only_for_declared_resources_running_taps_and_troubled_ones(state_dir: StateDir) -> None:
    state_dir.write("10-br.yaml", BRIDGES)
    rec = Reconciler(str(state_dir), structlog.get_logger())
    try:
        assert rec.reload("startup")
        book = rec.health
        for resource in ("interface/br0", "guest/vm1/vnet0", "interface/gone", "firewall/filter/OLD"):
            book.repaired(resource, now=1.0)
        book.failed("firewall/filter/OLD", "EBUSY", now=1.0)  # still being pruned: keep its back-off
        rec.engine.managers.libvirt.taps = (GuestTap("vm1", "vnet0", "br0"),)
        rec._forget_gone()
        assert set(book.resources) == {"interface/br0", "guest/vm1/vnet0", "firewall/filter/OLD"}
        rec.engine.managers.libvirt.taps = ()  # the guest stopped
        rec._forget_gone()
        assert set(book.resources) == {"interface/br0", "firewall/filter/OLD"}
        book.settled("firewall/filter/OLD", now=100.0)  # pruned at last
        rec._forget_gone()
        assert set(book.resources) == {"interface/br0"}
        state_dir.write("10-br.yaml", "interfaces:\n- {name: br1, type: linux-bridge}\n")
        assert rec.reload("reload")
        assert set(book.resources) == set()  # br0 is no longer declared
    finally:
        rec.close()
