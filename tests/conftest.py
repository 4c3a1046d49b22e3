# SPDX-License-Identifier: MIT
"""Fixtures: throw-away network namespaces, state directories, a root-namespace guard.

Every kernel test works inside namespaces it creates here; they are removed after
the test even when it fails. A session guard compares the root namespace's links,
addresses, routes and legacy iptables and ip6tables before and after the whole run: a test that
leaks into the host fails the session.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import PREFIX, Netns, NetnsFactory, StateDir, sh
from tests.unprivileged import NobodyUnitRun


def pytest_configure(config: pytest.Config) -> None:
    """A run stopped with SIGTERM (a CI time limit, kill) unwinds like Ctrl-C: pytest
    still runs every fixture's teardown, so no namespace or daemon is left behind."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


#: fixtures that make network namespaces (``ip netns add`` needs root)
NAMESPACE_FIXTURES = {"netns", "make_netns"}


def root_needed(item: pytest.Item) -> str | None:
    """Why a test cannot run without root, or None."""
    if item.get_closest_marker("kernel") is not None or NAMESPACE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return ("needs root: it works in network namespaces against the real kernel "
                "(marker 'kernel'; run the whole suite as root with ./run tests)")
    if item.get_closest_marker("libvirtd") is not None:
        return "needs root: it starts a real libvirtd in a network namespace (marker 'libvirtd')"
    marker = item.get_closest_marker("root")
    if marker is not None:
        return f"needs root: {marker.args[0] if marker.args else 'privileged system calls'} (marker 'root')"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without root (``pytest tests/unit`` as a user), what needs root is skipped with
    the reason, instead of erroring in its fixtures; everything else runs."""
    if os.geteuid() == 0:
        return
    for item in items:
        reason = root_needed(item)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


NOBODY_TEST = "test_unit_tests_without_root.py::test_unit_tests_pass_as_nobody_and_skip_what_needs_root"


def pytest_collection_finish(session: pytest.Session) -> None:
    """The unit suite as nobody (tests/e2e/test_unit_tests_without_root.py) starts now
    and runs beside the other tests: a minute of the run's wall time saved."""
    if os.geteuid() == 0 and not session.config.option.collectonly and \
            any(item.nodeid.endswith(NOBODY_TEST) for item in session.items):
        session.config.stash[NobodyUnitRun.KEY] = NobodyUnitRun.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    run = session.config.stash.get(NobodyUnitRun.KEY, None)
    if run is not None:
        run.stop()  # a run stopped before the test (-x, Ctrl-C) leaves nothing behind


@pytest.fixture
def make_netns() -> Iterator[NetnsFactory]:
    """Factory: make_netns() -> Netns; every namespace is deleted after the test."""
    factory = NetnsFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def netns(make_netns: object) -> Netns:
    return make_netns()  # type: ignore[operator,no-any-return]


@pytest.fixture
def state_dir(tmp_path: Path) -> StateDir:
    return StateDir(tmp_path / "vnetd.d")


@pytest.fixture
def make_state_dir(tmp_path: Path) -> object:
    counter = itertools.count()

    def make() -> StateDir:
        return StateDir(tmp_path / f"state{next(counter)}")

    return make


@pytest.fixture(scope="session", autouse=True)
def root_namespace_untouched() -> Iterator[None]:
    """The host's own network must look the same after the whole session."""
    if os.geteuid() != 0:
        yield
        return

    def view() -> str:
        links = [(lk["ifname"], lk.get("mtu"), lk.get("master"), "UP" in lk.get("flags", []))
                 for lk in json.loads(sh("ip", "-j", "link").stdout)]
        addrs = sorted((a["ifname"], i["local"], i["prefixlen"]) for a in json.loads(sh("ip", "-j", "addr").stdout)
                       for i in a.get("addr_info", []))
        routes = sorted(json.dumps(r, sort_keys=True) for r in json.loads(sh("ip", "-j", "route").stdout))
        rules = sh("iptables-legacy-save", check=False).stdout + sh("ip6tables-legacy-save", check=False).stdout
        rules = "\n".join(line for line in rules.splitlines() if not line.startswith("#"))
        return json.dumps([sorted(links), addrs, routes, rules], indent=1)

    before = view()
    yield
    after = view()
    assert after == before, "the test session changed the root network namespace"
    leftovers = [n for n in sh("ip", "netns", "list").stdout.split() if n.startswith(PREFIX)]
    assert not leftovers, f"namespaces left behind: {leftovers}"
