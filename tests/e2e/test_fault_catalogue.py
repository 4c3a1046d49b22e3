# SPDX-License-Identifier: MIT
"""Issue 6: the article end to end, three daemons, a catalogue of ordinary accidents.

Each fault is injected while the daemons run; the test then waits for the kernel
state to be as declared again (the repair time is measured from the injection to
that moment) and checks that traffic flows as designed. The run writes
docs/FAULTS.md: one row per fault, what was broken, what vnetd logged, the repair
time. The table is produced by this test, never typed by hand.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.daemon_support import DaemonProcess
from tests.e2e.topology import GW_IN, HYPERVISOR, Article, build, start_daemons
from tests.support import ROOT, Netns
from tests.traffic import eventually

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

FAULTS_MD = ROOT / "docs" / "FAULTS.md"


@dataclass
class Fault:
    name: str
    host: str
    breaks: str
    inject: Callable[[Article], object]
    restored: Callable[[Article], bool] = field(default=lambda a: True)


@dataclass
class Outcome:
    fault: Fault
    logged: str
    repair_s: float | None
    traffic: bool
    note: str = ""


# --------------------------------------------------------------------------- kernel state predicates


def link(ns: Netns, name: str) -> dict:  # type: ignore[type-arg]
    return ns.link(name) or {}


def hypervisor_ok(a: Article) -> bool:
    h = a.hypervisor
    br0, eth1, brdmz = link(h, "br0"), link(h, "eth1"), link(h, "brdmz")
    return (br0.get("mtu") == 9000 and eth1.get("mtu") == 9000 and eth1.get("master") == "br0"
            and link(h, "vnet0").get("master") == "br0" and link(h, "vnet1").get("master") == "brdmz"
            and link(h, "vnet2").get("master") == "brdmz" and "UP" in brdmz.get("flags", [])
            and HYPERVISOR in h.ip("addr", "show", "dev", "br0")
            and h.sysctl("net.bridge.bridge-nf-call-iptables") == "1"
            and "physdev" in "".join(h.exec("iptables-legacy", "-S", "FORWARD").stdout.splitlines()[1:2]))



def gateway_ok(a: Article) -> bool:
    g = a.gateway
    forward = g.exec("iptables-legacy", "-S", "FORWARD").stdout.splitlines()
    inputs = g.exec("iptables-legacy", "-S", "INPUT").stdout.splitlines()
    return (g.sysctl("net.ipv4.ip_forward") == "1" and "MASQUERADE" in g.iptables_save("nat")
            and len(forward) == 7 and all("vnetd:" in r for r in forward[1:])
            and len(inputs) == 7 and all("vnetd:" in r for r in inputs[1:])
            and "UP" in link(g, "eth0").get("flags", [])
            and GW_IN in g.ip("addr", "show", "dev", "eth1"))


def dmz_ok(a: Article) -> bool:
    d = a.dmz
    return ("default via" in d.ip("route") and "198.51.100.20" in d.ip("addr", "show", "dev", "eth0")
            and "UP" in link(d, "eth0").get("flags", []))


def libvirt_ok(a: Article) -> bool:
    """Set-up 1: libvirt's NAT network defined, active, autostarted, with its bridge."""
    if a.libvirtd is None:
        return True
    conn = a.libvirtd.connect()
    try:
        net = conn.networkLookupByName("default")
        return bool(net.isActive()) and bool(net.autostart()) and a.hypervisor.link("virbr0") is not None
    except Exception:
        return False
    finally:
        conn.close()


def all_ok(a: Article) -> bool:
    return hypervisor_ok(a) and gateway_ok(a) and dmz_ok(a) and libvirt_ok(a)


def _libvirt_network(a: Article, action: str) -> None:
    assert a.libvirtd is not None
    conn = a.libvirtd.connect()
    try:
        net = conn.networkLookupByName("default")
        if action == "destroy":
            net.destroy()
        elif action == "autostart-off":
            net.setAutostart(0)
    finally:
        conn.close()


# --------------------------------------------------------------------------- faults

def _move_physdev_below_reject(a: Article) -> None:
    h = a.hypervisor
    rules = h.exec("iptables-legacy", "-S", "FORWARD").stdout.splitlines()
    if not any("REJECT" in r for r in rules):  # the earlier flush took the host's own REJECT: put it back
        h.exec("iptables-legacy", "-A", "FORWARD", "-j", "REJECT", "--reject-with", "icmp-host-prohibited")
    rule = next(r for r in rules if "physdev" in r)
    h.exec("iptables-legacy", "-D", "FORWARD", "1")
    h.exec("sh", "-c", "iptables-legacy " + rule)
    assert "REJECT" in h.exec("iptables-legacy", "-S", "FORWARD").stdout.splitlines()[1]



def _invalid_file_then_fix(a: Article) -> None:
    state = a.states["gateway"]
    good = (state.path / "20-firewall.yaml").read_text()
    daemon = a.daemons["gateway"]
    mark = daemon.mark()
    before = a.gateway.iptables_save()
    state.write("20-firewall.yaml", good.replace("-j MASQUERADE", "-j MASQUERADE --to-ports"))
    daemon.wait_for("config.invalid", since=mark)
    time.sleep(1.5)  # a full check interval: nothing may change because of the invalid file
    assert a.gateway.iptables_save() == before
    a.gateway.exec("iptables-legacy", "-t", "nat", "-F", "POSTROUTING")  # and the last valid state is enforced
    assert eventually(lambda: "MASQUERADE" in a.gateway.iptables_save("nat"), timeout=10)
    state.write("20-firewall.yaml", good.replace("      - -i lo -j ACCEPT\n", "", 1))
    daemon.wait_for("config.loaded", since=mark)
    assert eventually(lambda: a.gateway.exec("iptables-legacy", "-S", "INPUT").stdout.count("-i lo") == 0,
                      timeout=10)
    state.write("20-firewall.yaml", good)


def _kill_and_restart(a: Article) -> None:
    old = a.daemons["hypervisor"]
    old.kill()
    a.hypervisor.ip("link", "set", "eth1", "nomaster")  # drift while no daemon runs
    a.hypervisor.exec("iptables-legacy", "-D", "FORWARD", "1")
    a.daemons["hypervisor"] = DaemonProcess(a.hypervisor, a.states["hypervisor"], check_interval=1.0)


FAULTS = [
    Fault("port released", "hypervisor", "`ip link set eth1 nomaster`",
          lambda a: a.hypervisor.ip("link", "set", "eth1", "nomaster")),
    Fault("bridge deleted with guests on it", "hypervisor", "`ip link del br0` (eth1 and vnet0 fall off)",
          lambda a: a.hypervisor.ip("link", "del", "br0")),
    Fault("internal bridge deleted with guests on it", "hypervisor", "`ip link del brdmz` (vnet1, vnet2 fall off)",
          lambda a: a.hypervisor.ip("link", "del", "brdmz")),
    Fault("bridge MTU reset", "hypervisor", "`ip link set br0 mtu 1500`",
          lambda a: a.hypervisor.ip("link", "set", "br0", "mtu", "1500")),
    Fault("port MTU reset", "hypervisor", "`ip link set eth1 mtu 1500` (br0 follows it down)",
          lambda a: a.hypervisor.ip("link", "set", "eth1", "mtu", "1500")),
    Fault("host address removed", "hypervisor", "`ip addr flush dev br0`",
          lambda a: a.hypervisor.ip("addr", "flush", "dev", "br0")),
    Fault("interface set down", "hypervisor", "`ip link set brdmz down`",
          lambda a: a.hypervisor.ip("link", "set", "brdmz", "down")),
    Fault("guest tap released", "hypervisor", "`ip link set vnet1 nomaster`",
          lambda a: a.hypervisor.ip("link", "set", "vnet1", "nomaster")),
    Fault("physdev rule deleted", "hypervisor", "`iptables -D FORWARD 1`",
          lambda a: a.hypervisor.exec("iptables-legacy", "-D", "FORWARD", "1")),
    Fault("FORWARD flushed on the host", "hypervisor", "`iptables -F FORWARD`",
          lambda a: a.hypervisor.exec("iptables-legacy", "-F", "FORWARD")),
    Fault("vnetd rule moved below REJECT", "hypervisor", "physdev rule re-appended after the foreign REJECT",
          _move_physdev_below_reject),
    Fault("bridge-nf sysctl flipped", "hypervisor", "`sysctl net.bridge.bridge-nf-call-iptables=0`",
          lambda a: a.hypervisor.exec("sysctl", "-w", "net.bridge.bridge-nf-call-iptables=0")),
    Fault("MASQUERADE deleted", "gateway", "`iptables -t nat -F POSTROUTING`",
          lambda a: a.gateway.exec("iptables-legacy", "-t", "nat", "-F", "POSTROUTING")),
    Fault("foreign ACCEPT in the exclusive FORWARD", "gateway", "`iptables -I FORWARD -j ACCEPT` (DMZ open)",
          lambda a: a.gateway.exec("iptables-legacy", "-I", "FORWARD", "-j", "ACCEPT")),
    Fault("FORWARD flushed on the gateway", "gateway", "`iptables -F FORWARD`",
          lambda a: a.gateway.exec("iptables-legacy", "-F", "FORWARD")),
    Fault("INPUT flushed on the gateway", "gateway", "`iptables -F INPUT`",
          lambda a: a.gateway.exec("iptables-legacy", "-F", "INPUT")),
    Fault("ip_forward reset", "gateway", "`sysctl net.ipv4.ip_forward=0`",
          lambda a: a.gateway.exec("sysctl", "-w", "net.ipv4.ip_forward=0")),
    Fault("trusted address removed", "gateway", "`ip addr flush dev eth1`",
          lambda a: a.gateway.ip("addr", "flush", "dev", "eth1")),
    Fault("untrusted interface set down", "gateway", "`ip link set eth0 down`",
          lambda a: a.gateway.ip("link", "set", "eth0", "down")),
    Fault("default route deleted", "dmz", "`ip route del default`",
          lambda a: a.dmz.ip("route", "del", "default")),
    Fault("DMZ address removed", "dmz", "`ip addr flush dev eth0` (the default route goes with it)",
          lambda a: a.dmz.ip("addr", "flush", "dev", "eth0")),
    Fault("DMZ interface set down", "dmz", "`ip link set eth0 down`",
          lambda a: a.dmz.ip("link", "set", "eth0", "down")),
    Fault("libvirt's default network destroyed", "hypervisor", "`virsh net-destroy default` (real libvirtd)",
          lambda a: _libvirt_network(a, "destroy")),
    Fault("libvirt network autostart turned off", "hypervisor", "`virsh net-autostart --disable default`",
          lambda a: _libvirt_network(a, "autostart-off")),
    Fault("libvirt's bridge deleted under the active network", "hypervisor", "`ip link del virbr0`",
          lambda a: a.hypervisor.ip("link", "del", "virbr0")),
    Fault("state file replaced by an invalid one", "gateway",
          "20-firewall.yaml made invalid (nothing changes, the last valid state is kept), then fixed twice",
          _invalid_file_then_fix),
    Fault("daemon SIGKILLed and restarted", "hypervisor",
          "`kill -9`, eth1 released and the physdev rule deleted while no daemon runs, then a new start",
          _kill_and_restart),
]


def summarize(daemon: DaemonProcess, since: int) -> str:
    seen: dict[str, set[str]] = {}
    for event in daemon.events[since:]:
        name = event.get("event", "")
        if name in ("drift.detected", "action.applied", "action.failed", "config.invalid", "config.loaded",
                    "conflict.suspected", "resource.problem"):
            seen.setdefault(name, set()).add(event.get("resource") or event.get("source") or "")
    parts = []
    for name in ("drift.detected", "action.applied", "action.failed", "conflict.suspected", "config.invalid",
                 "config.loaded", "resource.problem"):
        if name in seen:
            resources = sorted(r for r in seen[name] if r)
            parts.append(f"`{name}` " + ", ".join(resources[:4]) + (" ..." if len(resources) > 4 else ""))
    return "; ".join(parts) or "(nothing)"


@pytest.fixture(scope="module")
def article(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Article]:
    """Built once for the module: the faults run one after the other on the same hosts,
    each ending with everything repaired, as an administrator's day would."""
    from tests.support import NetnsFactory, StateDir

    make_netns = NetnsFactory()

    counter = iter(range(100))

    def make_state_dir() -> StateDir:
        return StateDir(tmp_path_factory.mktemp(f"article{next(counter)}"))

    from tests.libvirtd_support import DEFAULT_XML, sandboxed_libvirtd

    a = build(make_netns, make_state_dir)
    try:
        with sandboxed_libvirtd(tmp_path_factory.mktemp("libvirtd"), ns=a.hypervisor) as libvirtd:
            a.libvirtd = libvirtd
            xml = "".join(f"      {line}\n" for line in DEFAULT_XML.splitlines())
            a.states["hypervisor"].write("30-libvirt.yaml", f"""\
libvirt:
  uri: {libvirtd.uri}
  networks:
  - name: default
    state: active
    autostart: true
    xml: |
{xml}""")
            try:
                start_daemons(a)
                yield a
            finally:
                for daemon in a.daemons.values():
                    daemon.stop()
    finally:
        make_netns.cleanup()


def test_traffic_flows_as_designed(article: Article) -> None:
    assert eventually(lambda: all_ok(article), timeout=30)
    assert eventually(article.traffic_as_designed, timeout=20)


def test_fault_catalogue(article: Article) -> None:
    assert eventually(lambda: all_ok(article), timeout=30)
    assert eventually(article.traffic_as_designed, timeout=20)
    outcomes: list[Outcome] = []
    failures = []
    for fault in FAULTS:
        daemon = article.daemons[fault.host]
        mark = daemon.mark()
        start = time.monotonic()
        fault.inject(article)
        daemon = article.daemons[fault.host]  # a restart replaces it
        if daemon.mark() < mark:
            mark = 0
        repaired = eventually(lambda: all_ok(article), timeout=20, interval=0.01)
        repair_s = time.monotonic() - start if repaired else None
        traffic = eventually(article.traffic_as_designed, timeout=20)
        outcomes.append(Outcome(fault, summarize(daemon, mark), repair_s, traffic))
        if not (repaired and traffic):
            failures.append(fault.name)
    write_faults_md(outcomes)
    assert len(FAULTS) >= 20
    assert not failures, f"not repaired: {failures}"
    for daemon in article.daemons.values():
        assert not daemon.bad_lines


def write_faults_md(outcomes: list[Outcome]) -> None:
    lines = [
        "# Fault catalogue",
        "",
        "Written by `tests/e2e/test_fault_catalogue.py` (run with `./run tests tests/e2e`) on "
        f"{datetime.date.today().isoformat()}: the article's topology in network namespaces, one vnetd per host",
        "and guest (check interval 1 s), each fault injected while the daemons run. *Repair* is the time from",
        "the injection until every host's kernel state is as declared again (polled every 10 ms); *traffic*",
        "is checked after it: DMZ -> upstream TCP through MASQUERADE, upstream -> DMZ rejected, ICMP, and the",
        "hypervisor's own uplink. Nothing here is typed by hand.",
        "",
        "| # | fault | host | what was broken | what vnetd logged | repair | traffic |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, o in enumerate(outcomes, 1):
        repair = f"{o.repair_s * 1000:.0f} ms" if o.repair_s is not None else "NOT REPAIRED"
        lines.append(f"| {i} | {o.fault.name} | {o.fault.host} | {o.fault.breaks} | {o.logged} | {repair} | "
                     f"{'restored' if o.traffic else 'BROKEN'} |")
    FAULTS_MD.write_text("\n".join(lines) + "\n")
    if os.environ.get("VNETD_FAULTS_JSON"):
        Path(os.environ["VNETD_FAULTS_JSON"]).write_text(json.dumps(
            [{"fault": o.fault.name, "repair_s": o.repair_s, "traffic": o.traffic} for o in outcomes]))
