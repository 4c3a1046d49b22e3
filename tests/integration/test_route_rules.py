# SPDX-License-Identifier: MIT
"""Policy routing (``route-rules:``) against the real kernel, with ``ip rule`` as the oracle.

The host namespace has a management uplink (``mgmt0``, 192.0.2.1/24) whose replies
must leave through its own gateway: the nmstate idiom of a second routing table
(``table-id: 100``) and a rule sending traffic from the management address to it.
``ip route get`` (the kernel's own FIB lookup) proves the rule steers traffic.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.daemon_support import DaemonProcess
from tests.support import PY, ROOT, Netns, NetnsFactory, StateDir, vnetd

pytestmark = pytest.mark.kernel

STATE = """\
interfaces:
- name: mgmt0
  type: ethernet
  state: up
  ipv4:
    enabled: true
    address: [192.0.2.1/24]
  ipv6:
    enabled: true
    address: [2001:db8:1::1/64]
routes:
  config:
  - destination: 0.0.0.0/0
    next-hop-address: 192.0.2.254
    next-hop-interface: mgmt0
    table-id: 100
  - destination: ::/0
    next-hop-address: 2001:db8:1::fffe
    next-hop-interface: mgmt0
    table-id: 100
route-rules:
  config:
  - ip-from: 192.0.2.1
    priority: 1000
    route-table: 100
  - ip-from: 2001:db8:1::/64
    priority: 1000
    route-table: 100
  - family: ipv4
    iif: mgmt0
    fwmark: 0x10
    fwmask: 0xff
    priority: 1001
    action: prohibit
"""


@pytest.fixture
def host(make_netns: NetnsFactory) -> Netns:
    ns = make_netns("rules")
    ns.veth("mgmt0", "peer0")
    ns.ip("link", "set", "peer0", "up")
    return ns


def rules(ns: Netns, family: str = "-4") -> list[dict[str, object]]:
    return json.loads(ns.ip("-j", family, "rule"))  # type: ignore[no-any-return]


def by_priority(ns: Netns, family: str = "-4") -> dict[int, dict[str, object]]:
    return {int(r["priority"]): r for r in rules(ns, family)}  # type: ignore[call-overload]


def test_rules_are_applied_as_ip_rule_shows_them_and_steer_traffic(host: Netns, state_dir: StateDir) -> None:
    host.ip("rule", "add", "from", "198.51.100.0/24", "lookup", "200", "pref", "500")  # another tool's
    state_dir.write("10-mgmt.yaml", STATE)
    result = vnetd("apply", netns=host, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    v4 = by_priority(host)
    assert v4[1000] == {"priority": 1000, "src": "192.0.2.1", "table": "100", "protocol": "static"}
    assert v4[1001]["action"] == "prohibit" and v4[1001]["iif"] == "mgmt0"
    assert (v4[1001]["fwmark"], v4[1001]["fwmask"]) == ("0x10", "0xff")
    assert v4[500]["src"] == "198.51.100.0" and 0 in v4 and 32766 in v4 and 32767 in v4  # untouched
    v6 = by_priority(host, "-6")
    assert v6[1000]["src"] == "2001:db8:1::" and v6[1000]["table"] == "100"
    # the kernel's own lookup: replies from the management address take table 100's gateway
    steered = host.ip("-4", "route", "get", "203.0.113.9", "from", "192.0.2.1")
    assert "via 192.0.2.254" in steered and "table 100" in steered, steered
    unsteered = host.ip("-4", "route", "get", "192.0.2.9")
    assert "table 100" not in unsteered
    again = vnetd("plan", netns=host, state_dir=state_dir)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout  # idempotent


def test_a_deleted_or_changed_rule_is_repaired(host: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-mgmt.yaml", STATE)
    assert vnetd("apply", netns=host, state_dir=state_dir).returncode == 0
    host.ip("rule", "del", "pref", "1000", "from", "192.0.2.1")
    host.ip("rule", "del", "pref", "1001")
    host.ip("rule", "add", "iif", "mgmt0", "fwmark", "0x10/0xff", "pref", "1001", "blackhole")  # not prohibit
    plan = vnetd("plan", "--format", "json", netns=host, state_dir=state_dir)
    assert plan.returncode == 2
    changes = {c["resource"] for c in json.loads(plan.stdout)["changes"]}
    assert changes == {"route-rule/priority 1000 from 192.0.2.1/32 lookup 100",
                       "route-rule/priority 1001 from all iif mgmt0 fwmark 0x10/0xff prohibit"}, changes
    assert vnetd("apply", netns=host, state_dir=state_dir).returncode == 0
    v4 = by_priority(host)
    assert v4[1000]["table"] == "100"
    prio_1001 = [r for r in rules(host) if r["priority"] == 1001]
    assert {r.get("action") for r in prio_1001} == {"prohibit", "blackhole"}  # the foreign rule stays


def test_absent_rules_go_and_the_kernels_own_stay(host: Netns, state_dir: StateDir) -> None:
    for table in ("100", "101"):
        host.ip("rule", "add", "from", "203.0.113.0/24", "lookup", table)
    host.ip("rule", "add", "oif", "mgmt0", "lookup", "100", "pref", "900")  # a selector vnetd does not manage
    state_dir.write("10-gone.yaml", "route-rules:\n  config:\n  - family: ipv4\n    route-table: 100\n"
                                    "    state: absent\n  - family: ipv4\n    priority: 32767\n    state: absent\n")
    result = vnetd("apply", netns=host, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    left = [(r["priority"], r.get("table"), r.get("oif")) for r in rules(host)]
    assert (0, "local", None) in left and (32766, "main", None) in left
    assert not any(p == 32767 for p, _t, _o in left)  # named by its priority: removed
    assert any(t == "101" for _p, t, _o in left) and (900, "100", "mgmt0") in left
    assert not any(t == "100" and o is None for _p, t, o in left)


def test_show_writes_the_rules_back_as_a_state_file_that_plans_nothing(host: Netns, state_dir: StateDir,
                                                                       make_state_dir: object) -> None:
    state_dir.write("10-mgmt.yaml", STATE)
    assert vnetd("apply", netns=host, state_dir=state_dir).returncode == 0
    shown = vnetd("show", netns=host, state_dir=state_dir)
    assert shown.returncode == 0 and "route-rules:" in shown.stdout
    other: StateDir = make_state_dir()  # type: ignore[operator]
    other.write("10-shown.yaml", shown.stdout)
    plan = vnetd("plan", netns=host, state_dir=other)
    assert plan.returncode == 0, plan.stdout + plan.stderr


def test_an_unconfirmed_rule_change_is_rolled_back(host: Netns, state_dir: StateDir) -> None:
    host.ip("addr", "add", "192.0.2.1/24", "dev", "mgmt0")
    host.ip("link", "set", "mgmt0", "up")
    host.ip("rule", "add", "from", "198.51.100.0/24", "lookup", "200", "pref", "500")
    before = host.settled_snapshot()
    state_dir.write("10-divert.yaml", "route-rules:\n  config:\n  - family: ipv4\n    priority: 10\n"
                                      "    action: unreachable\n  - family: ipv4\n    route-table: 200\n"
                                      "    state: absent\n")
    result = vnetd("apply", "--confirm", "2", netns=host, state_dir=state_dir)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "rolled back: the checkpoint is restored" in result.stdout
    assert host.settled_snapshot() == before


def test_the_daemon_repairs_a_rule_from_the_kernels_notification(host: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-mgmt.yaml", STATE)
    daemon = DaemonProcess(host, state_dir, check_interval=30)  # the periodic checks cannot be what notices
    try:
        daemon.wait_ready()
        assert daemon.wait_until(lambda: 1000 in by_priority(host) and 1000 in by_priority(host, "-6"))
        mark = daemon.mark()
        host.ip("-6", "rule", "del", "pref", "1000")
        resource = "route-rule/-6 priority 1000 from 2001:db8:1::/64 lookup 100"
        detected = daemon.wait_for("drift.detected", since=mark, resource=resource)
        assert detected["source"] == "netlink"
        daemon.wait_for("action.applied", since=mark, resource=resource)
        assert daemon.wait_until(lambda: 1000 in by_priority(host, "-6"))
    finally:
        assert daemon.stop() == 0, "\n".join(daemon.lines[-30:])


def test_the_notification_decoder_follows_ip_rule(host: Netns) -> None:
    """NetCache's cache (the daemon's view) equals a fresh dump after rules come and go."""
    script = r"""
import sys
from vnetd import netns
netns.enter(sys.argv[1])
from vnetd.backends import rtnl
from vnetd.backends.netlink import NetlinkBackend
from vnetd.model.netstate import NetState
events = rtnl.RtnlSocket(groups=rtnl.EVENT_GROUPS)
cache = NetState.build([], [], [], NetlinkBackend().dump_rules())
print("ready", flush=True)
sys.stdin.readline()
import socket
while True:
    try:
        data = events.sock.recv(1 << 20, socket.MSG_DONTWAIT)
    except BlockingIOError:
        break
    for mtype, _f, _s, off, length in rtnl.iter_messages(data):
        if mtype in (rtnl.RTM_NEWRULE, rtnl.RTM_DELRULE):
            rule = rtnl.decode_rule(data, off, length)
            if rule is not None:
                (cache.put_rule if mtype == rtnl.RTM_NEWRULE else cache.drop_rule)(rule)
print(cache.rules == NetState.build([], [], [], NetlinkBackend().dump_rules()).rules, sum(cache.rules.values()))
"""
    proc = subprocess.Popen([PY, "-c", script, host.name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={"PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    host.ip("rule", "add", "from", "192.0.2.0/24", "lookup", "100", "pref", "100")
    host.ip("rule", "add", "fwmark", "1", "blackhole", "pref", "101")
    host.ip("-6", "rule", "add", "to", "2001:db8::/32", "unreachable", "pref", "102")
    host.ip("rule", "del", "pref", "100")
    host.ip("rule", "del", "pref", "32767")
    out, err = proc.communicate("go\n", timeout=30)
    assert proc.returncode == 0, err
    same, count = out.split()
    assert same == "True" and int(count) == 5 + 2 + 1 - 1 - 1, out
