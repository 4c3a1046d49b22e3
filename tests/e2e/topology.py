# SPDX-License-Identifier: MIT
"""The article's whole topology in network namespaces, one vnetd per host or guest.

    upstream ns                hypervisor ns                          guests
    uplink 203.0.113.254 ---- eth1 -[br0 203.0.113.212/24]- vnet0 ---- gateway eth0 203.0.113.10/24
                                     [brdmz]-------------- vnet1 ---- gateway eth1 198.51.100.10/24
                                            `------------- vnet2 ---- dmz eth0 198.51.100.20/24 (default via .10)

The hypervisor starts CentOS-like: bridged frames go through iptables
(bridge-nf-call-iptables=1) and FORWARD ends in REJECT, so nothing flows until
vnetd puts the physdev rule in place. Addresses are from the documentation ranges;
the guests' state files are the article's (gateway: MASQUERADE on eth0, stateful
FORWARD; DMZ: default route via the gateway).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.daemon_support import DaemonProcess
from tests.support import ROOT, Netns, StateDir
from tests.traffic import TcpServer, ping, tcp_connect

UPSTREAM = "203.0.113.254"
HYPERVISOR = "203.0.113.212"
GW_OUT = "203.0.113.10"
GW_IN = "198.51.100.10"
DMZ = "198.51.100.20"

HYPERVISOR_STATE = {
    "10-uplink-br0.yaml": f"""\
# set-up 2: the uplink bridge over eth1, MTU 9000; the gateway's tap vnet0 is a port
interfaces:
- name: eth1
  type: ethernet
  state: up
  mtu: 9000
- name: br0
  type: linux-bridge
  state: up
  mtu: 9000
  ipv4:
    enabled: true
    address:
    - ip: {HYPERVISOR}
      prefix-length: 24
  bridge:
    options:
      stp: {{enabled: false, forward-delay: 0}}
    port:
    - name: eth1
    - name: vnet0
- name: vnet0
  type: ethernet
  state: up
  mtu: 9000
""",
    "20-dmz-brdmz.yaml": """\
# set-up 3: the internal switch brdmz with the guests' taps, bridged traffic
# through the host firewall thanks to the physdev rule
interfaces:
- name: brdmz
  type: linux-bridge
  state: up
  bridge:
    options:
      stp: {enabled: false, forward-delay: 0}
    port:
    - name: vnet1
    - name: vnet2
- {name: vnet1, type: ethernet, state: up}
- {name: vnet2, type: ethernet, state: up}
sysctl:
  net.bridge.bridge-nf-call-iptables: 1
firewall:
  filter:
    FORWARD:
      rules:
      - -m physdev --physdev-is-bridged -j ACCEPT
""",
}

GATEWAY_STATE = {
    "10-interfaces.yaml": f"""\
interfaces:
- name: eth0
  type: ethernet
  state: up
  ipv4: {{enabled: true, address: [{GW_OUT}/24]}}
- name: eth1
  type: ethernet
  state: up
  ipv4: {{enabled: true, address: [{GW_IN}/24]}}
""",
    "20-firewall.yaml": (ROOT / "etc" / "examples" / "gateway" / "20-firewall.yaml").read_text(),
}

DMZ_STATE = {
    "10-interfaces.yaml": f"""\
interfaces:
- name: eth0
  type: ethernet
  state: up
  ipv4: {{enabled: true, address: [{DMZ}/24]}}
routes:
  config:
  - destination: 0.0.0.0/0
    next-hop-address: {GW_IN}
    next-hop-interface: eth0
""",
}


@dataclass
class Article:
    upstream: Netns
    hypervisor: Netns
    gateway: Netns
    dmz: Netns
    states: dict[str, StateDir]
    daemons: dict[str, DaemonProcess]
    libvirtd: Any = None  # the real libvirtd in the hypervisor's namespace (tests/libvirtd_support.py)

    def ns(self, host: str) -> Netns:
        return {"hypervisor": self.hypervisor, "gateway": self.gateway, "dmz": self.dmz,
                "upstream": self.upstream}[host]

    # -- traffic ----------------------------------------------------------------

    def dmz_to_upstream_tcp(self) -> str:
        with TcpServer(self.upstream, UPSTREAM, 8080):
            return tcp_connect(self.dmz, UPSTREAM, 8080)

    def upstream_to_dmz_tcp(self) -> str:
        with TcpServer(self.dmz, DMZ, 2222):
            return tcp_connect(self.upstream, DMZ, 2222)

    def traffic_as_designed(self) -> bool:
        """DMZ -> upstream works through MASQUERADE, upstream -> DMZ is rejected,
        ICMP passes, and the hypervisor itself reaches upstream over br0."""
        return (self.dmz_to_upstream_tcp() == f"ok {GW_OUT}"
                and self.upstream_to_dmz_tcp() == "unreachable"
                and ping(self.dmz, UPSTREAM)
                and ping(self.hypervisor, UPSTREAM))


def build(make_netns: Callable[..., Netns], make_state_dir: Callable[[], StateDir],
          backend: str = "iptables-legacy", centos_reject: bool = True) -> Article:
    """The namespaces, links and state directories (pinned to the firewall ``backend``),
    no daemon yet. ``centos_reject``: the hypervisor's legacy FORWARD ends in REJECT, as
    CentOS's does (a test of another host's firewall writes its own instead)."""
    upstream, hyp = make_netns("upstream"), make_netns("hyp")
    gateway, dmz = make_netns("gw"), make_netns("dmz")
    hyp.veth("eth1", "uplink", upstream)
    hyp.veth("vnet0", "eth0", gateway)
    hyp.veth("vnet1", "eth1", gateway)
    hyp.veth("vnet2", "eth0", dmz)
    upstream.ip("addr", "add", f"{UPSTREAM}/24", "dev", "uplink")
    upstream.ip("link", "set", "uplink", "mtu", "9000")
    upstream.ip("link", "set", "uplink", "up")
    upstream.ip("route", "add", "198.51.100.0/24", "via", GW_OUT)  # so it can try to reach the DMZ
    # CentOS-like hypervisor: bridged traffic is filtered, FORWARD ends in REJECT
    hyp.exec("sysctl", "-w", "net.bridge.bridge-nf-call-iptables=1")
    if centos_reject:
        hyp.exec("iptables-legacy", "-A", "FORWARD", "-j", "REJECT", "--reject-with", "icmp-host-prohibited")
    states = {}
    for host, files in (("hypervisor", HYPERVISOR_STATE), ("gateway", GATEWAY_STATE), ("dmz", DMZ_STATE)):
        state = make_state_dir()
        state.pin(backend)
        for name, text in files.items():
            state.write(name, text)
        states[host] = state
    return Article(upstream, hyp, gateway, dmz, states, {})


def start_daemons(article: Article, check_interval: float = 1.0) -> None:
    for host in ("hypervisor", "gateway", "dmz"):
        article.daemons[host] = DaemonProcess(article.ns(host), article.states[host], check_interval=check_interval)
    for daemon in article.daemons.values():
        daemon.wait_ready()
