# SPDX-License-Identifier: MIT
"""Back-off and conflict detection (vnetd/daemon/backoff.py), with a fake clock."""

from __future__ import annotations

from vnetd.daemon.backoff import CONFLICT_BASE, FAILURE_MAX, Health, HealthBook


def test_failures_back_off_exponentially_and_are_capped() -> None:
    book = HealthBook()
    holds = [book.failed("interface/br0", "EBUSY", now=100.0) for _ in range(12)]
    assert holds[:4] == [1.0, 2.0, 4.0, 8.0]
    assert holds[-1] == FAILURE_MAX
    assert book.held("interface/br0", 100.5) and not book.held("interface/eth1", 100.5)
    assert book.health("interface/br0", drifted=True, now=100.5) is Health.FAILING


def test_a_success_clears_the_failure_count() -> None:
    book = HealthBook()
    book.failed("r", "x", now=0.0)
    book.failed("r", "x", now=0.0)
    assert book.repaired("r", now=10.0) is None
    assert book.failed("r", "x", now=11.0) == 1.0


def test_more_than_five_repairs_in_a_minute_is_a_conflict() -> None:
    book = HealthBook()
    holds = [book.repaired("interface/br0", now=float(t)) for t in range(6)]
    assert holds[:5] == [None] * 5 and holds[5] == CONFLICT_BASE
    assert book.health("interface/br0", drifted=True, now=6.0) is Health.BACKED_OFF
    assert book.next_release(6.0) == 5.0 + CONFLICT_BASE
    # the next fight, after the hold, backs off twice as long
    later = [book.repaired("interface/br0", now=100.0 + t) for t in range(6)]
    assert later[5] == 2 * CONFLICT_BASE


def test_repairs_spread_over_more_than_a_minute_are_not_a_conflict() -> None:
    book = HealthBook()
    assert all(book.repaired("r", now=t * 15.0) is None for t in range(20))


def test_conflict_detection_can_be_turned_off() -> None:
    book = HealthBook(conflict_repairs=0)
    assert all(book.repaired("r", now=float(t)) is None for t in range(50))


def test_a_settled_resource_forgets_its_conflict_after_a_quiet_window() -> None:
    book = HealthBook()
    for t in range(6):
        book.repaired("r", now=float(t))
    book.settled("r", now=200.0)
    assert book.health("r", drifted=False, now=200.0) is Health.CONVERGED
    assert all(book.repaired("r", now=300.0 + t) is None for t in range(5))


def test_only_failing_or_fighting_resources_are_troubled() -> None:
    """A pass settles only these: with 2,500 quiet interfaces it looks at none of them."""
    book = HealthBook()
    book.repaired("interface/eth1", now=0.0)
    book.failed("interface/br0", "EBUSY", now=0.0)
    for t in range(6):
        book.repaired("interface/vnet0", now=float(t))
    assert book.troubled == {"interface/br0", "interface/vnet0"}
    book.settled("interface/br0", now=0.5)  # still held: stays troubled
    assert "interface/br0" in book.troubled
    book.settled("interface/br0", now=2.0)
    book.settled("interface/vnet0", now=200.0)
    assert book.troubled == set()
    book.failed("interface/eth1", "EBUSY", now=300.0)
    book.forget({"interface/br0"})
    assert book.troubled == set()
