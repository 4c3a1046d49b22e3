# SPDX-License-Identifier: MIT
"""Issue 13, Tests: the article's topology end to end on the iptables-nft backend,
next to a Docker-like ruleset.

Before any vnetd starts, every host with firewall rules (the hypervisor and the
gateway) gets what Docker writes with ``iptables-nft``: ``-P FORWARD DROP``, a
DOCKER-USER chain jumped to first from FORWARD, the DOCKER and isolation chains,
nat's DOCKER chain and a MASQUERADE for 172.17.0.0/16 (a rule, no address: every
address in use is in this test's namespaces). The state directories pin
``firewall.backend: iptables-nft`` and the hypervisor keeps no legacy REJECT:
Docker's DROP policy is what would drop bridged frames.

Why bridge-nf-call-iptables matters: with it on (the default once br_netfilter
is there, and what Docker turns on), a frame that the bridge brdmz forwards
between two guests' taps also passes ``table ip filter`` chain FORWARD, so
Docker's DROP policy drops guest-to-guest traffic on the KVM bridge ("Docker
broke my KVM bridges"). The article's physdev rule, written by vnetd into that
same nf_tables chain, accepts bridged frames before the policy applies.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.e2e.topology import DMZ, GW_IN, GW_OUT, UPSTREAM, Article, build, start_daemons
from tests.support import Netns, NetnsFactory, StateDir, vnetd
from tests.traffic import eventually, ping, wait_bridged

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

#: what Docker (20.10+, iptables backend) writes, in its order, with ``iptables-nft``
DOCKER_LIKE = [
    "-t nat -N DOCKER",
    "-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
    "-t nat -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
    "-t nat -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
    "-t nat -A DOCKER -i docker0 -j RETURN",
    "-N DOCKER",
    "-N DOCKER-ISOLATION-STAGE-1",
    "-N DOCKER-ISOLATION-STAGE-2",
    "-N DOCKER-USER",
    "-P FORWARD DROP",
    "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
    "-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A FORWARD -o docker0 -j DOCKER",
    "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
    "-A FORWARD -i docker0 -o docker0 -j ACCEPT",
    "-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2",
    "-A DOCKER-ISOLATION-STAGE-1 -j RETURN",
    "-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP",
    "-A DOCKER-ISOLATION-STAGE-2 -j RETURN",
    "-A DOCKER-USER -j RETURN",
    "-I FORWARD -j DOCKER-USER",  # Docker puts its users' chain first, last thing it does
]
FIREWALL_HOSTS = ("hypervisor", "gateway")
#: the chains a host's state files declare ``mode: exclusive``: vnetd removes every
#: other rule in them (the SPEC's contract), Docker's jumps included
EXCLUSIVE = {"hypervisor": (), "gateway": ("INPUT", "FORWARD")}


def nft_save(ns: Netns) -> list[str]:
    return ns.iptables_save(variant="nft").splitlines()


def without_vnetd(lines: list[str]) -> list[str]:
    return [line for line in lines if "vnetd:" not in line]


def forward(ns: Netns) -> list[str]:
    return ns.exec("iptables-nft", "-S", "FORWARD").stdout.splitlines()


def physdev_packets(ns: Netns) -> int:
    """The packet counter of vnetd's physdev rule in nf_tables ``ip filter FORWARD``."""
    for line in ns.exec("iptables-nft-save", "-c", "-t", "filter").stdout.splitlines():
        if "physdev" in line and "vnetd:" in line:
            return int(re.match(r"\[(\d+):\d+\]", line).group(1))  # type: ignore[union-attr]
    raise AssertionError("vnetd's physdev rule is not in iptables-nft's FORWARD")


@dataclass
class DockerHost:
    article: Article
    #: each firewall host's iptables-nft-save right after the Docker-like ruleset
    docker_save: dict[str, list[str]] = field(default_factory=dict)
    bridge_nf_call_iptables: str = ""
    bridged_before_vnetd: bool = True
    bridged_with_bridge_nf_off: bool = False


def write_docker_like(ns: Netns) -> None:
    for command in DOCKER_LIKE:
        ns.exec("iptables-nft", *shlex.split(command))


def hypervisor_converged(a: Article) -> bool:
    rules = forward(a.hypervisor)
    return len(rules) > 1 and "physdev" in rules[1] and "vnetd:" in rules[1]


def gateway_converged(a: Article) -> bool:
    g = a.gateway
    rules = forward(g)
    return (g.sysctl("net.ipv4.ip_forward") == "1"
            and any("MASQUERADE" in r and "vnetd:" in r for r in nft_save(g))
            and len(rules) == 7 and all("vnetd:" in r for r in rules[1:]))


def converged(a: Article) -> bool:
    return (hypervisor_converged(a) and gateway_converged(a)
            and "default via" in a.dmz.ip("route"))


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerHost]:
    """The article on Docker-like hosts, built once: the guests' links and addresses by
    hand first (so brdmz can be tried before vnetd runs), then the daemons."""
    make_netns = NetnsFactory()
    counter = iter(range(100))

    def make_state_dir() -> StateDir:
        return StateDir(tmp_path_factory.mktemp(f"nft-article{next(counter)}"))

    try:
        a = build(make_netns, make_state_dir, backend="iptables-nft", centos_reject=False)
        host = DockerHost(a)
        for name in FIREWALL_HOSTS:
            write_docker_like(a.ns(name))
            host.docker_save[name] = nft_save(a.ns(name))
        # brdmz as the administrator had it before vnetd (vnetd adopts the same links)
        h = a.hypervisor
        h.ip("link", "add", "brdmz", "type", "bridge", "forward_delay", "0", "stp_state", "0")
        for port in ("vnet1", "vnet2"):
            h.ip("link", "set", port, "master", "brdmz")
            h.ip("link", "set", port, "up")
        h.ip("link", "set", "brdmz", "up")
        for ns, dev, address in ((a.gateway, "eth1", GW_IN), (a.dmz, "eth0", DMZ)):
            ns.ip("addr", "add", f"{address}/24", "dev", dev)
            ns.ip("link", "set", dev, "up")
        wait_bridged(h, "brdmz", ("vnet1", "vnet2"))  # so that only the firewall can stop the ping
        host.bridge_nf_call_iptables = h.sysctl("net.bridge.bridge-nf-call-iptables")
        host.bridged_before_vnetd = ping(a.dmz, GW_IN)
        h.exec("sysctl", "-w", "net.bridge.bridge-nf-call-iptables=0")
        host.bridged_with_bridge_nf_off = eventually(lambda: ping(a.dmz, GW_IN), timeout=10)
        h.exec("sysctl", "-w", "net.bridge.bridge-nf-call-iptables=1")
        # the hypervisor's periodic check runs once an hour: only nf_tables events repair its rules
        start_daemons(a, check_interval=3600)
        try:
            yield host
        finally:
            codes = {name: daemon.stop() for name, daemon in a.daemons.items()}
            assert codes == {name: 0 for name in codes}, codes
            assert not any(daemon.bad_lines for daemon in a.daemons.values())
    finally:
        make_netns.cleanup()


@pytest.fixture
def article(docker_host: DockerHost) -> Article:
    assert eventually(lambda: converged(docker_host.article), timeout=30)
    return docker_host.article


def test_docker_drop_policy_drops_bridged_traffic_before_vnetd(docker_host: DockerHost) -> None:
    """The problem vnetd cures: bridge-nf-call-iptables is on in the hypervisor's namespace,
    so Docker's FORWARD policy DROP drops frames bridged between the guests on brdmz; with
    bridge-nf-call-iptables off the same frames never meet iptables and pass."""
    assert docker_host.bridge_nf_call_iptables == "1"
    assert not docker_host.bridged_before_vnetd
    assert docker_host.bridged_with_bridge_nf_off


def test_bridged_traffic_on_brdmz_passes_dockers_drop_policy(article: Article) -> None:
    h = article.hypervisor
    assert h.sysctl("net.bridge.bridge-nf-call-iptables") == "1"
    rules = forward(h)
    assert rules[0] == "-P FORWARD DROP"  # Docker's policy is still there
    assert "-m physdev --physdev-is-bridged" in rules[1] and rules[1].endswith("-j ACCEPT")
    assert rules[2] == "-A FORWARD -j DOCKER-USER"  # Docker's chain right below vnetd's rule
    before = physdev_packets(h)
    assert eventually(lambda: ping(article.dmz, GW_IN), timeout=10)  # dmz eth0 - vnet2 [brdmz] vnet1 - gw eth1
    # the frames went through nf_tables ip filter FORWARD and vnetd's rule accepted them
    assert physdev_packets(h) > before
    # vnetd's ACCEPT sits in the chain whose policy drops: nothing shadows it, nothing to warn
    assert not article.daemons["hypervisor"].find("firewall.shadowed")
    check = vnetd("check", netns=h, state_dir=article.states["hypervisor"])
    assert check.returncode == 0 and "firewall.shadowed" not in check.stderr, check.stdout + check.stderr


def test_gateway_masquerade_and_stateful_forward(article: Article) -> None:
    assert eventually(lambda: article.dmz_to_upstream_tcp() == f"ok {GW_OUT}", timeout=20)
    assert article.upstream_to_dmz_tcp() == "unreachable"  # inbound stays blocked
    assert ping(article.dmz, UPSTREAM) and ping(article.hypervisor, UPSTREAM)
    assert eventually(article.traffic_as_designed, timeout=20)


def test_docker_rules_and_chains_are_kept_byte_for_byte(docker_host: DockerHost, article: Article) -> None:
    for name in FIREWALL_HOSTS:
        before = docker_host.docker_save[name]
        exclusive = tuple(f"-A {chain} " for chain in EXCLUSIVE[name])
        expected = [line for line in before if not line.startswith(exclusive)] if exclusive else before
        after = without_vnetd(nft_save(article.ns(name)))
        assert after == expected, name
        assert any(line.startswith("-A FORWARD -j DOCKER-USER") for line in before)
    # on the gateway FORWARD and INPUT are `mode: exclusive`: they hold vnetd's rules only,
    # Docker's chains and its nat rules stay
    assert all("vnetd:" in r for r in forward(article.gateway)[1:])
    assert forward(article.gateway)[0] == "-P FORWARD DROP"


def test_nothing_is_written_to_the_legacy_tables(article: Article) -> None:
    for name in ("hypervisor", "gateway", "dmz"):
        ns = article.ns(name)
        for family in (4, 6):
            legacy = ns.iptables_save(family=family)
            assert "vnetd:" not in legacy, (name, family)
            assert not [line for line in legacy.splitlines() if line.startswith("-A ")], (name, family)


def test_physdev_rule_deleted_with_iptables_nft_is_repaired_from_the_event(
        docker_host: DockerHost, article: Article) -> None:
    h = article.hypervisor
    daemon = article.daemons["hypervisor"]
    ours = forward(h)[1]
    assert "physdev" in ours and "vnetd:" in ours
    mark = daemon.mark()
    h.exec("iptables-nft", *shlex.split(ours.replace("-A FORWARD", "-D FORWARD", 1)))
    detected = daemon.wait_for("drift.detected", since=mark, resource="firewall/filter/FORWARD")
    assert detected["source"] == "nftables"  # the periodic check runs once an hour
    daemon.wait_for("action.applied", since=mark, resource="firewall/filter/FORWARD")
    assert daemon.wait_until(lambda: hypervisor_converged(article))
    assert forward(h)[1] == ours
    assert without_vnetd(nft_save(h)) == docker_host.docker_save["hypervisor"]
    assert eventually(lambda: ping(article.dmz, GW_IN), timeout=10)
    assert not daemon.bad_lines


def test_docker_restart_putting_its_jump_first_leaves_both_in_place(
        docker_host: DockerHost, article: Article) -> None:
    """Docker restarting deletes and inserts its DOCKER-USER jump at the top of FORWARD,
    above vnetd's rule: vnetd (merge mode) moves only its own rule back on top."""
    h = article.hypervisor
    daemon = article.daemons["hypervisor"]
    ours = forward(h)[1]
    mark = daemon.mark()
    h.exec("iptables-nft", "-D", "FORWARD", "-j", "DOCKER-USER")
    h.exec("iptables-nft", "-I", "FORWARD", "-j", "DOCKER-USER")
    daemon.wait_for("action.applied", since=mark, resource="firewall/filter/FORWARD")
    assert daemon.wait_until(lambda: forward(h)[1:3] == [ours, "-A FORWARD -j DOCKER-USER"])
    assert without_vnetd(nft_save(h)) == docker_host.docker_save["hypervisor"]
    assert eventually(lambda: ping(article.dmz, GW_IN), timeout=10)
