# SPDX-License-Identifier: MIT
"""NICs found by their MAC against the real kernel (issue 14, item 3): a state file
written for CentOS 6's ``eth1`` follows the NIC that has eth1's MAC, whatever the
kernel named it. Veths with chosen MACs stand in for the NICs; the kernel's own
``eth1`` here is *another* NIC, which must be left alone.
"""

from __future__ import annotations

import pytest

from tests.daemon_support import DaemonProcess
from tests.support import Netns, NetnsFactory, StateDir, vnetd

pytestmark = pytest.mark.kernel

MAC = "52:54:00:aa:bb:01"
OTHER = "52:54:00:aa:bb:02"

STATE = f"""\
interfaces:
- name: eth1
  type: ethernet
  state: up
  identifier: mac-address
  mac-address: {MAC.upper()}
  mtu: 9000
- name: br0
  type: linux-bridge
  state: up
  mtu: 9000
  ipv4:
    enabled: true
    address: [192.0.2.1/24]
  bridge:
    options:
      stp: {{enabled: false, forward-delay: 0}}
    port:
    - name: eth1
route-rules:
  config:
  - iif: eth1
    family: ipv4
    priority: 100
    route-table: 100
sysctl:
  net.ipv6.conf.eth1.disable_ipv6: 1
"""


@pytest.fixture
def host(make_netns: NetnsFactory) -> Netns:
    """enp3s0f1 has the MAC the state file names; the kernel's eth1 is another NIC."""
    ns = make_netns("mac")
    lan, dmz = make_netns("lan"), make_netns("dmz")
    ns.ip("link", "add", "enp3s0f1", "address", MAC, "type", "veth", "peer", "name", "up0", "netns", lan.name)
    ns.ip("link", "add", "eth1", "address", OTHER, "type", "veth", "peer", "name", "up1", "netns", dmz.name)
    return ns


def test_a_file_written_for_eth1_follows_the_nic_with_its_mac(host: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-uplink.yaml", STATE)
    plan = vnetd("plan", netns=host, state_dir=state_dir)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert (f"= interface/eth1: the NIC with the MAC {MAC} is enp3s0f1 here; the link named eth1 here is another "
            "device, and eth1 in the state files means this NIC") in plan.stdout
    assert "~ interface/enp3s0f1: controller want br0" in plan.stdout
    result = vnetd("apply", netns=host, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    nic, other = host.link("enp3s0f1"), host.link("eth1")
    assert nic is not None and other is not None
    assert nic["master"] == "br0" and nic["mtu"] == 9000 and "UP" in nic["flags"]
    assert "master" not in other and other["mtu"] == 1500 and "UP" not in other["flags"]  # left alone
    assert host.sysctl("net.ipv6.conf.enp3s0f1.disable_ipv6") == "1"
    assert host.sysctl("net.ipv6.conf.eth1.disable_ipv6") == "0"
    rule = next(r for r in host.json("-4", "rule") if r["priority"] == 100)  # type: ignore[index]
    assert rule["iif"] == "enp3s0f1" and rule["table"] == "100"  # type: ignore[index]
    again = vnetd("plan", netns=host, state_dir=state_dir)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout


def test_a_renamed_nic_is_still_found(host: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-uplink.yaml", STATE)
    assert vnetd("apply", netns=host, state_dir=state_dir).returncode == 0
    host.ip("link", "set", "enp3s0f1", "down")
    host.ip("link", "set", "enp3s0f1", "name", "wan0")  # udev, another distribution, another slot
    host.ip("link", "set", "wan0", "nomaster")
    result = vnetd("apply", netns=host, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    wan0 = host.link("wan0")
    assert wan0 is not None and wan0["master"] == "br0" and "UP" in wan0["flags"]
    assert host.sysctl("net.ipv6.conf.wan0.disable_ipv6") == "1"
    assert any(r.get("iif") == "wan0" for r in host.json("-4", "rule"))  # type: ignore[union-attr]


@pytest.mark.parametrize("case", ["none", "two"])
def test_no_nic_or_two_nics_with_the_mac_is_a_problem_and_nothing_is_guessed(host: Netns, state_dir: StateDir,
                                                                            case: str) -> None:
    if case == "none":
        host.ip("link", "set", "enp3s0f1", "address", "52:54:00:aa:bb:03")
        says = f"interface/eth1: no NIC has the MAC {MAC} (identifier: mac-address)"
    else:
        host.ip("link", "add", "enp4s0", "address", MAC, "type", "veth", "peer", "name", "spare0")
        says = f"interface/eth1: 2 NICs have the MAC {MAC}: enp3s0f1, enp4s0; vnetd does not guess"
    state_dir.write("10-uplink.yaml", STATE)
    plan = vnetd("plan", netns=host, state_dir=state_dir)
    assert plan.returncode == 1, plan.stdout + plan.stderr
    assert f"! {says}" in plan.stdout
    assert "! interface/eth1: port of br0, is a NIC that was not found" in plan.stdout
    result = vnetd("apply", netns=host, state_dir=state_dir)
    assert result.returncode == 1 and f"problem: {says}" in result.stdout, result.stdout
    for name in ("enp3s0f1", "eth1"):  # br0 is made, but no NIC is put in it
        link = host.link(name)
        assert link is not None and "master" not in link and link["mtu"] == 1500
    assert host.sysctl("net.ipv6.conf.eth1.disable_ipv6") == "0"
    assert not any(r["priority"] == 100 for r in host.json("-4", "rule"))  # type: ignore[index]


def test_the_daemon_repairs_the_sysctl_and_rule_of_a_nic_found_by_its_mac(host: Netns, state_dir: StateDir) -> None:
    """The daemon watches the NIC's own per-device sysctl (net.ipv6.conf.enp3s0f1...,
    not the eth1 the file names) and its policy-routing rule: both are put back.
    arp_ignore: a key whose change the kernel announces by no event at all."""
    state_dir.write("10-uplink.yaml", STATE + "  net.ipv4.conf.eth1.arp_ignore: 1\n")
    daemon = DaemonProcess(host, state_dir)
    try:
        daemon.wait_ready()

        def converged() -> bool:
            rules = [r for r in host.json("-4", "rule") if r["priority"] == 100]  # type: ignore[index]
            return (host.sysctl("net.ipv6.conf.enp3s0f1.disable_ipv6") == "1" and len(rules) == 1
                    and host.sysctl("net.ipv4.conf.enp3s0f1.arp_ignore") == "1")

        assert daemon.wait_until(converged)
        mark = daemon.mark()
        host.exec("sysctl", "-qw", "net.ipv4.conf.enp3s0f1.arp_ignore=0")
        detected = daemon.wait_for("drift.detected", since=mark)
        assert detected["resource"].startswith("sysctl/"), detected
        daemon.wait_for("action.applied", since=mark)
        assert daemon.wait_until(converged)
        mark = daemon.mark()
        host.ip("-4", "rule", "del", "priority", "100")
        daemon.wait_for("action.applied", since=mark)
        assert daemon.wait_until(converged)
        assert host.sysctl("net.ipv6.conf.eth1.disable_ipv6") == "0"  # the other NIC left alone
        assert host.sysctl("net.ipv4.conf.eth1.arp_ignore") == "0"
    finally:
        assert daemon.stop() == 0, "\n".join(daemon.lines[-30:])
