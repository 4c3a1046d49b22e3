# SPDX-License-Identifier: MIT
"""VXLAN (issue 14, item 4): the article's internal switch ``brdmz`` spanning two
hypervisors, a VXLAN port on each host's bridge, carrying the guests' traffic.

Two "hypervisor" namespaces share an underlay link (``eth1``, 198.51.100.0/24);
each runs vnetd on its own state file; a "guest" namespace hangs on each host's
``brdmz`` by a veth (standing in for libvirt's tap). The guests reach each other
only through the tunnel. ``ip -d -j link`` is the oracle for what vnetd made.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.support import Netns, NetnsFactory, StateDir, vnetd
from tests.traffic import TcpServer, eventually, ping, tcp_connect

pytestmark = pytest.mark.kernel

HYPERVISOR = """\
interfaces:
- name: eth1
  type: ethernet
  state: up
  ipv4:
    enabled: true
    address: [{local}/24]
- name: vx100
  type: vxlan
  state: up
  vxlan:
    id: 100
    remote: {remote}
    local: {local}
    base-iface: eth1
    destination-port: 4789
    learning: true
- name: brdmz
  type: linux-bridge
  state: up
  bridge:
    options:
      stp: {{enabled: false, forward-delay: 0}}
    port:
    - name: vx100
    - name: vnet0
"""


@dataclass
class Site:
    host: Netns
    guest: Netns
    state: StateDir
    address: str  # the guest's


@pytest.fixture
def sites(make_netns: NetnsFactory, make_state_dir: object) -> tuple[Site, Site]:
    a, b = make_netns("hvA"), make_netns("hvB")
    a.veth("eth1", "eth1", b)  # the underlay between the two hypervisors
    out = []
    for host, local, remote, guest_ip in ((a, "198.51.100.1", "198.51.100.2", "10.0.0.20"),
                                          (b, "198.51.100.2", "198.51.100.1", "10.0.0.30")):
        guest = make_netns("guest")
        host.veth("vnet0", "eth0", guest)  # the guest's NIC; vnet0 is its tap on the host
        host.ip("link", "set", "vnet0", "up")  # libvirt brings a guest's tap up
        guest.ip("link", "set", "eth0", "up")
        guest.ip("addr", "add", f"{guest_ip}/24", "dev", "eth0")
        state: StateDir = make_state_dir()  # type: ignore[operator]
        state.write("10-brdmz.yaml", HYPERVISOR.format(local=local, remote=remote))
        out.append(Site(host, guest, state, guest_ip))
    return out[0], out[1]


def vxlan_of(ns: Netns, name: str = "vx100") -> dict[str, object]:
    link = ns.link(name)
    assert link is not None, name
    return link["linkinfo"]["info_data"]  # type: ignore[index,no-any-return]


def test_guests_on_two_hypervisors_share_brdmz_over_vxlan(sites: tuple[Site, Site]) -> None:
    for site in sites:
        result = vnetd("apply", netns=site.host, state_dir=site.state)
        assert result.returncode == 0, result.stdout + result.stderr
    a, b = sites
    data = vxlan_of(a.host)
    assert (data["id"], data["remote"], data["local"], data["link"], data["port"], data["learning"]) == (
        100, "198.51.100.2", "198.51.100.1", "eth1", 4789, True)
    vx = a.host.link("vx100")
    assert vx is not None and vx["master"] == "brdmz" and vx["mtu"] == 1450  # 1500 less the encapsulation
    assert eventually(lambda: ping(a.guest, b.address), timeout=10), "no echo through the tunnel"
    with TcpServer(b.guest, b.address, 8080):
        assert tcp_connect(a.guest, b.address, 8080) == f"ok {a.address}"
    for site in sites:
        again = vnetd("plan", netns=site.host, state_dir=site.state)
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout


def test_vxlan_drift_is_repaired(sites: tuple[Site, Site]) -> None:
    a, b = sites
    for site in sites:
        assert vnetd("apply", netns=site.host, state_dir=site.state).returncode == 0
    a.host.ip("link", "set", "vx100", "type", "vxlan", "remote", "198.51.100.99", "nolearning")
    plan = vnetd("plan", netns=a.host, state_dir=a.state)
    assert "~ interface/vx100: vxlan.remote want 198.51.100.2, have 198.51.100.99" in plan.stdout, plan.stdout
    assert "~ interface/vx100: vxlan.learning want true, have false" in plan.stdout
    assert vnetd("apply", netns=a.host, state_dir=a.state).returncode == 0
    data = vxlan_of(a.host)
    assert data["remote"] == "198.51.100.2" and data["learning"] is True
    b.host.ip("link", "del", "vx100")  # deleted on the other side: made again and put back on the bridge
    result = vnetd("apply", netns=b.host, state_dir=b.state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert vxlan_of(b.host)["id"] == 100 and (b.host.link("vx100") or {}).get("master") == "brdmz"
    assert eventually(lambda: ping(a.guest, b.address), timeout=10)


def test_what_cannot_change_on_a_live_vxlan_is_a_problem(sites: tuple[Site, Site]) -> None:
    a, _b = sites
    a.host.ip("link", "add", "vx100", "type", "vxlan", "id", "101", "remote", "198.51.100.2", "dstport", "4789")
    plan = vnetd("plan", netns=a.host, state_dir=a.state)
    assert plan.returncode == 1, plan.stdout
    assert ("! interface/vx100: vxlan.id is 101, declared 100: the kernel cannot change it on a live link; "
            "delete it (state: absent) to re-create it") in plan.stdout
    absent = a.state.path / "10-brdmz.yaml"
    text = absent.read_text().replace("- name: vx100\n  type: vxlan\n  state: up\n",
                                      "- name: vx100\n  type: vxlan\n  state: absent\n")
    text = text.replace("    - name: vx100\n", "")
    a.state.write("10-brdmz.yaml", text)
    assert vnetd("apply", netns=a.host, state_dir=a.state).returncode == 0
    assert a.host.link("vx100") is None
