# SPDX-License-Identifier: MIT
"""Addresses owned by a DHCP client (``ipv4: {dhcp: true}``) and SLAAC (``ipv6:
{autoconf: true}``) are left alone by plan, apply and the daemon (issue 14, item 6).

The gateway guest of the article: ``eth0`` gets its address and default route from
DHCP (here: what dhclient would do, an address with a lease time and a ``proto
dhcp`` default route), ``eth1`` is static. ``ip -d -j`` is the oracle.
"""

from __future__ import annotations

import pytest

from tests.daemon_support import DaemonProcess
from tests.support import Netns, NetnsFactory, StateDir, vnetd

pytestmark = pytest.mark.kernel

STATE = """\
interfaces:
- name: eth0
  type: ethernet
  state: up
  ipv4: {enabled: true, dhcp: true}
  ipv6: {enabled: true, autoconf: true}
- name: eth1
  type: ethernet
  state: up
  ipv4:
    enabled: true
    address: [10.0.0.10/24]
"""


@pytest.fixture
def guest(make_netns: NetnsFactory) -> Netns:
    ns = make_netns("gw")
    upstream = make_netns("lan")
    ns.veth("eth0", "up0", upstream)
    ns.veth("eth1", "dmz0")
    upstream.ip("link", "set", "up0", "up")
    ns.ip("link", "set", "eth0", "up")
    lease(ns, "192.0.2.57", "192.0.2.1")
    ns.ip("addr", "add", "2001:db8:1::57/64", "dev", "eth0", "valid_lft", "3600", "preferred_lft", "1800")
    return ns


def lease(ns: Netns, address: str, gateway: str) -> None:
    """What a DHCP client does with a lease: an address with a lifetime, its default route."""
    ns.ip("addr", "add", f"{address}/24", "dev", "eth0", "valid_lft", "600", "preferred_lft", "300")
    ns.ip("route", "replace", "default", "via", gateway, "dev", "eth0", "proto", "dhcp")


def owned(ns: Netns) -> tuple[str, str]:
    """eth0's IPv4 addresses (without their lifetimes, which count down) and the default route."""
    addresses = [f"{a['local']}/{a['prefixlen']}" for link in ns.json("-4", "addr", "show", "dev", "eth0")
                 for a in link["addr_info"]]  # type: ignore[index]
    return " ".join(addresses), ns.ip("route", "show", "default")


def test_plan_says_so_and_apply_leaves_the_lease_alone(guest: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-gateway.yaml", STATE)
    plan = vnetd("plan", netns=guest, state_dir=state_dir)
    assert plan.returncode == 2, plan.stdout + plan.stderr  # eth1: up and its address, nothing of eth0's
    assert ("= interface/eth0: IPv4 addresses and default route belong to the host's DHCP client "
            "(ipv4.dhcp: true): left alone") in plan.stdout
    assert "= interface/eth0: IPv6 addresses and default route belong to the host's router advertisements" \
        in plan.stdout
    assert not [line for line in plan.stdout.splitlines() if line.startswith("~ interface/eth0")], plan.stdout
    before = owned(guest)
    applied = vnetd("apply", netns=guest, state_dir=state_dir)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "interface/eth0" not in applied.stdout
    assert owned(guest) == before
    assert "192.0.2.57/24" in before[0] and "via 192.0.2.1" in before[1] and "proto dhcp" in before[1]
    assert "2001:db8:1::57/64" in guest.ip("-6", "addr", "show", "dev", "eth0")
    again = vnetd("plan", netns=guest, state_dir=state_dir)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout


def test_the_daemon_leaves_a_renewed_lease_alone(guest: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-gateway.yaml", STATE)
    daemon = DaemonProcess(guest, state_dir)
    try:
        daemon.wait_ready()
        assert daemon.wait_until(lambda: "10.0.0.10/24" in guest.ip("addr", "show", "dev", "eth1"))
        mark = daemon.mark()
        # the lease ends and the client gets another address and gateway (as dhclient-script does it)
        guest.ip("addr", "del", "192.0.2.57/24", "dev", "eth0")
        lease(guest, "192.0.2.99", "192.0.2.2")
        # a drift the daemon must repair afterwards: once it is repaired, the daemon has
        # seen the lease change too (the kernel's notifications come in order)
        guest.ip("addr", "flush", "dev", "eth1")
        daemon.wait_for("action.applied", since=mark, resource="interface/eth1")
        assert daemon.wait_until(lambda: "10.0.0.10/24" in guest.ip("addr", "show", "dev", "eth1"))
        assert not daemon.find("drift.detected", since=mark, resource="interface/eth0")
        assert not daemon.find("action.applied", since=mark, resource="interface/eth0")
        addresses, route = owned(guest)
        assert "192.0.2.99/24" in addresses and "192.0.2.57" not in addresses
        assert "via 192.0.2.2" in route and "proto dhcp" in route
    finally:
        assert daemon.stop() == 0, "\n".join(daemon.lines[-30:])
