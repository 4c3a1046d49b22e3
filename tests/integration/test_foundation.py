# SPDX-License-Identifier: MIT
"""Issue 2 against the real kernel: the article's set-ups 2 and 3 built from an empty
namespace, a second apply that changes nothing, and every link/address/route drift
shown by ``plan`` and repaired by ``apply``."""

from __future__ import annotations

import json

import pytest

from tests.support import ROOT, Netns, StateDir, vnetd

pytestmark = pytest.mark.kernel

HOST_STATE = ROOT / "etc" / "vnetd.d"
DMZ_ROUTE = """
routes:
  config:
  - destination: 198.51.100.0/24
    next-hop-address: 192.168.10.1
    next-hop-interface: br0
"""


def host_without_libvirt(state_dir: StateDir) -> None:
    for name in ("10-uplink-br0.yaml", "20-dmz-brdmz.yaml"):
        state_dir.write(name, (HOST_STATE / name).read_text())
    state_dir.write("40-route.yaml", DMZ_ROUTE)


@pytest.fixture
def host(make_netns, state_dir) -> tuple[Netns, StateDir]:  # type: ignore[no-untyped-def]
    ns = make_netns("host")
    upstream = make_netns("up")
    ns.veth("eth1", "uplink", upstream)  # eth1 is the stand-in NIC
    upstream.ip("link", "set", "uplink", "up")
    host_without_libvirt(state_dir)
    result = vnetd("apply", netns=ns, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    return ns, state_dir


def plan_json(ns: Netns, state_dir: StateDir) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = vnetd("plan", "--format", "json", netns=ns, state_dir=state_dir)
    assert result.returncode in (0, 2), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_apply_builds_setups_2_and_3(host: tuple[Netns, StateDir]) -> None:
    ns, _ = host
    br0 = ns.link("br0")
    eth1 = ns.link("eth1")
    brdmz = ns.link("brdmz")
    assert br0 and eth1 and brdmz
    assert br0["mtu"] == 9000 and eth1["mtu"] == 9000
    assert eth1["master"] == "br0"
    assert "UP" in br0["flags"] and "UP" in eth1["flags"] and "UP" in brdmz["flags"]
    info = br0["linkinfo"]["info_data"]
    assert info["stp_state"] == 0 and info["forward_delay"] == 0
    assert brdmz["linkinfo"]["info_data"]["forward_delay"] == 0
    addrs = [(a["local"], a["prefixlen"]) for a in ns.json("addr", "show", "dev", "br0")[0]["addr_info"]
             if a["family"] == "inet"]
    assert addrs == [("192.168.10.212", 24)]
    routes = ns.json("route", "show", "198.51.100.0/24")
    assert routes and routes[0]["gateway"] == "192.168.10.1" and routes[0]["dev"] == "br0"
    assert "-m physdev --physdev-is-bridged" in ns.iptables_save("filter")


def test_second_apply_changes_nothing(host: tuple[Netns, StateDir]) -> None:
    ns, state_dir = host
    before = ns.settled_snapshot()
    result = vnetd("apply", netns=ns, state_dir=state_dir)
    assert result.returncode == 0
    assert "converged: nothing to do" in result.stdout
    assert ns.snapshot() == before  # no managed link flapped, nothing rewritten
    code, plan = plan_json(ns, state_dir)
    assert code == 0 and plan["changes"] == []


DRIFTS = [
    # (name, command that breaks the host, resource, field, want, have)
    ("port released", ("link", "set", "eth1", "nomaster"), "interface/eth1", "controller", "br0", None),
    ("bridge deleted", ("link", "del", "br0"), "interface/br0", "exists", "linux-bridge", None),
    ("bridge mtu reset", ("link", "set", "br0", "mtu", "1500"), "interface/br0", "mtu", 9000, 1500),
    ("port mtu reset", ("link", "set", "eth1", "mtu", "1500"), "interface/eth1", "mtu", 9000, 1500),
    ("address removed", ("addr", "del", "192.168.10.212/24", "dev", "br0"), "interface/br0", "ipv4.address",
     ["192.168.10.212/24"], []),
    ("admin down", ("link", "set", "brdmz", "down"), "interface/brdmz", "state", "up", "down"),
    ("stp turned on", ("link", "set", "br0", "type", "bridge", "stp_state", "1"), "interface/br0",
     "bridge.options.stp.enabled", False, True),

    ("route deleted", ("route", "del", "198.51.100.0/24"), "route/198.51.100.0/24 via 192.168.10.1 dev br0",
     "route", "198.51.100.0/24 via 192.168.10.1 dev br0", None),
]


@pytest.mark.parametrize(("cmd", "resource", "field", "want", "have"),
                         [d[1:] for d in DRIFTS], ids=[d[0] for d in DRIFTS])
def test_drift_is_planned_and_repaired(host: tuple[Netns, StateDir], cmd: tuple[str, ...], resource: str,
                                       field: str, want: object, have: object) -> None:
    ns, state_dir = host
    converged = ns.settled_snapshot()
    ns.ip(*cmd)
    code, plan = plan_json(ns, state_dir)
    assert code == 2
    matching = [c for c in plan["changes"] if c["resource"] == resource and c["field"] == field]
    assert matching, plan["changes"]
    assert matching[0]["want"] == want
    assert matching[0]["have"] == have
    text = vnetd("plan", netns=ns, state_dir=state_dir)
    assert text.returncode == 2 and resource in text.stdout and field in text.stdout
    result = vnetd("apply", netns=ns, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "converged" in result.stdout
    assert plan_json(ns, state_dir)[0] == 0
    if cmd[:2] != ("link", "del"):  # a re-created bridge gets a new index and MAC
        assert ns.settled_snapshot() == converged


def test_mtu_reset_on_bridge_and_port_together(host: tuple[Netns, StateDir]) -> None:
    ns, state_dir = host
    ns.ip("link", "set", "eth1", "mtu", "1500")
    ns.ip("link", "set", "br0", "mtu", "1500")
    result = vnetd("apply", netns=ns, state_dir=state_dir)
    assert result.returncode == 0, result.stdout
    lines = [line for line in result.stdout.splitlines() if "mtu" in line]
    assert lines[0].startswith("applied: interface/eth1")  # the port first, then the bridge
    assert ns.link("br0")["mtu"] == 9000 and ns.link("eth1")["mtu"] == 9000  # type: ignore[index]


def test_unlisted_ports_are_left_alone(host: tuple[Netns, StateDir]) -> None:
    ns, state_dir = host
    ns.veth("vnet0", "guest0")
    ns.ip("link", "set", "vnet0", "master", "br0")
    result = vnetd("apply", netns=ns, state_dir=state_dir)
    assert result.returncode == 0 and "nothing to do" in result.stdout
    assert ns.link("vnet0")["master"] == "br0"  # type: ignore[index]


def test_foreign_links_routes_and_addresses_survive(host: tuple[Netns, StateDir]) -> None:
    ns, state_dir = host
    ns.veth("foreign0", "foreign1")
    ns.ip("link", "set", "foreign0", "up")
    ns.ip("addr", "add", "203.0.113.5/24", "dev", "foreign0")
    ns.ip("route", "add", "192.0.2.0/24", "via", "203.0.113.1")
    before = ns.settled_snapshot()
    assert vnetd("apply", netns=ns, state_dir=state_dir).returncode == 0
    assert ns.snapshot() == before


def test_show_output_fed_back_plans_nothing(host: tuple[Netns, StateDir], make_state_dir) -> None:  # type: ignore[no-untyped-def]
    ns, state_dir = host
    ns.veth("vnet0", "guest0")  # something vnetd does not manage, on a bridge
    ns.ip("link", "set", "vnet0", "master", "brdmz", "up")
    shown = vnetd("show", netns=ns, state_dir=state_dir)
    assert shown.returncode == 0, shown.stderr
    assert "name: br0" in shown.stdout and "physdev" in shown.stdout
    fed_back = make_state_dir()
    fed_back.write("00-show.yaml", shown.stdout)
    assert vnetd("check", state_dir=fed_back).returncode == 0
    plan = vnetd("plan", netns=ns, state_dir=fed_back)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "nothing to do" in plan.stdout
