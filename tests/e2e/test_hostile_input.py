# SPDX-License-Identifier: MIT
"""Issue 6: hostile input against `vnetd check` and against the running daemon.

Every case is a set of files (or a trick on the state directory) that must give a
clear error (or, for the merely huge, a valid load), never a crash, and never a
change in the kernel. The same catalogue is then dropped, case by case, into the
state directory of a running daemon: it logs the problem, stays alive, and the
namespace stays byte-for-byte as it was. A bounded fuzzing run (hypothesis) feeds
the loader and the rule parser arbitrary text.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.daemon_support import DaemonProcess
from tests.support import Netns, StateDir, vnetd
from vnetd.desired.loader import SourceFile, load_sources
from vnetd.desired.rules import RuleSyntaxError, parse_rule
from vnetd.errors import ConfigError

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
interfaces: *i
"""
ALIAS_BOMB_IN_RULES = """\
x: &x ["-j ACCEPT", "-j ACCEPT", "-j ACCEPT", "-j ACCEPT"]
firewall:
  filter:
    FORWARD:
      rules: [*x, *x, *x]
"""
RECURSIVE = "interfaces: &r [*r]\n"


@dataclass
class Case:
    name: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    expect: str = ""  # a fragment of the error; "" means the load must succeed
    setup: Callable[[Path], None] | None = None  # tricks on the directory itself
    daemon: bool = True  # also dropped into a running daemon's directory


def huge_interfaces(n: int) -> str:
    return "interfaces:\n" + "".join(f"- {{name: nic{i}, type: ethernet, state: up, mtu: 9000}}\n" for i in range(n))


def symlink_out(directory: Path) -> None:
    (directory.parent / "outside.yaml").write_text("interfaces: []\n")
    os.symlink(directory.parent / "outside.yaml", directory / "50-link.yaml")


def symlink_to_shadow(directory: Path) -> None:
    os.symlink("/etc/shadow", directory / "50-shadow.yaml")


def foreign_owner(directory: Path) -> None:
    path = directory / "50-owned.yaml"
    path.write_text("interfaces: []\n")
    os.chmod(path, 0o644)
    os.chown(path, 65534, 65534)


def world_writable(directory: Path) -> None:
    path = directory / "50-ww.yaml"
    path.write_text("interfaces: []\n")
    os.chmod(path, 0o666)


def fifo(directory: Path) -> None:
    os.mkfifo(directory / "50-fifo.yaml", 0o644)


CASES = [
    # YAML itself
    Case("yaml syntax error", {"50.yaml": "interfaces: [\n"}, "YAML syntax error"),
    Case("tab indentation", {"50.yaml": "interfaces:\n\t- name: x\n"}, "YAML syntax error"),
    Case("two documents", {"50.yaml": "interfaces: []\n---\nroutes: {}\n"}, "YAML"),
    Case("top level is a list", {"50.yaml": "- a\n- b\n"}, "expected a mapping"),
    Case("top level is a string", {"50.yaml": "hello\n"}, "expected a mapping"),
    Case("unknown top level key", {"50.yaml": "dns-resolver: {}\n"}, "unknown key"),
    Case("billion laughs", {"50.yaml": BILLION_LAUGHS}, "aliases expand this to more than"),
    Case("alias bomb in rules", {"50.yaml": ALIAS_BOMB_IN_RULES}, "unknown key"),
    Case("recursive alias", {"50.yaml": RECURSIVE}, "recursive structure"),
    Case("deep flow nesting", {"50.yaml": "interfaces: " + "[" * 5000 + "]" * 5000 + "\n"}, "YAML"),
    Case("deep block nesting", {"50.yaml": "interfaces:\n" + "".join("  " * i + "- \n" for i in range(300))},
         "expected"),
    Case("python object tag", {"50.yaml": "interfaces: !!python/object/apply:os.system ['reboot']\n"}, "expected"),
    Case("binary garbage", {"50.yaml": bytes(range(256)) * 20}, "binary"),
    Case("not utf-8", {"50.yaml": b"interfaces:\n- name: \xff\xfe\n"}, "not UTF-8"),
    Case("very large file", {"50.yaml": "# " + "x" * (9 * 1024 * 1024) + "\n"}, "limited to 8 MiB"),
    Case("10,000 interfaces (valid)", {"50.yaml": huge_interfaces(10000)}, ""),
    Case("duplicate key", {"50.yaml": "sysctl:\n  net.ipv4.ip_forward: 1\n  net.ipv4.ip_forward: 0\n"}, "duplicate key"),
    Case("key is a list", {"50.yaml": "? [a, b]\n: 1\n"}, "keys must be plain strings"),
    Case("null document", {"50.yaml": "~\n"}, ""),
    Case("huge integer", {"50.yaml": "interfaces:\n- {name: x, type: ethernet, mtu: " + "9" * 5000 + "}\n"},
         "expected an integer"),
    # interfaces
    Case("interface name 16 chars", {"50.yaml": "interfaces:\n- {name: abcdefghijklmnop, type: linux-bridge}\n"},
         "the kernel allows 1-15"),
    Case("interface name with slash", {"50.yaml": "interfaces:\n- {name: a/b, type: linux-bridge}\n"}, "'/'"),
    Case("interface name with newline", {"50.yaml": 'interfaces:\n- {name: "a\\nb", type: linux-bridge}\n'},
         "not allowed"),
    Case("interface name dot-dot", {"50.yaml": "interfaces:\n- {name: '..', type: linux-bridge}\n"},
         "not a valid interface name"),
    Case("mtu 50", {"50.yaml": "interfaces:\n- {name: br9, type: linux-bridge, mtu: 50}\n"}, "68-65535"),
    Case("mtu string", {"50.yaml": "interfaces:\n- {name: br9, type: linux-bridge, mtu: '9000'}\n"},
         "expected an integer"),
    Case("mtu float", {"50.yaml": "interfaces:\n- {name: br9, type: linux-bridge, mtu: 1500.5}\n"},
         "expected an integer"),
    Case("unknown type", {"50.yaml": "interfaces:\n- {name: br9, type: ovs-bridge}\n"}, "one of"),
    Case("absent ethernet", {"50.yaml": "interfaces:\n- {name: eth9, type: ethernet, state: absent}\n"},
         "deletes virtual interfaces only"),
    Case("bad mac", {"50.yaml": "interfaces:\n- {name: br9, type: linux-bridge, mac-address: zz:zz}\n"},
         "not a MAC address"),
    Case("bad address", {"50.yaml": "interfaces:\n- {name: br9, type: linux-bridge, ipv4: {address: [300.1.1.1/24]}}\n"},
         "not a valid address"),
    Case("port is its own bridge", {"50.yaml": "interfaces:\n- {name: br9, type: linux-bridge, bridge: {port: [br9]}}\n"},
         "port of itself"),
    Case("port on two bridges", {"50.yaml": "interfaces:\n- {name: brA, type: linux-bridge, bridge: {port: [p1]}}\n"
                                           "- {name: brB, type: linux-bridge, bridge: {port: [p1]}}\n"},
         "one bridge or bond only"),
    Case("duplicate interface across files", {"50.yaml": "interfaces:\n- {name: brx, type: linux-bridge}\n",
                                              "51.yaml": "interfaces:\n- {name: brx, type: linux-bridge}\n"},
         "defined twice"),
    Case("dhcp on a disabled family", {"50.yaml": "interfaces:\n- {name: eth9, type: ethernet, "
                                                 "ipv4: {enabled: false, dhcp: true}}\n"},
         "disabled (enabled: false) but dhcp is true"),
    Case("dhcp (valid)", {"50.yaml": "interfaces:\n- {name: eth9, type: ethernet, ipv4: {dhcp: true}}\n"}, ""),
    Case("nic by a mac nobody has (valid)", {"50.yaml": "interfaces:\n- {name: eth9, type: ethernet, "
                                                       "identifier: mac-address, mac-address: '52:54:00:99:99:99'}\n"},
         ""),
    Case("identifier without mac", {"50.yaml": "interfaces:\n- {name: eth9, type: ethernet, "
                                              "identifier: mac-address}\n"}, "required with identifier"),
    Case("bond option of another mode", {"50.yaml": "interfaces:\n- {name: bond9, type: bond, link-aggregation: "
                                                   "{mode: balance-rr, options: {lacp_rate: fast}}}\n"},
         "the kernel refuses lacp_rate in mode balance-rr"),
    Case("vxlan huge id", {"50.yaml": "interfaces:\n- {name: vx9, type: vxlan, vxlan: {id: 99999999999}}\n"},
         "out of range"),
    # route rules
    Case("rule huge fwmark", {"50.yaml": "route-rules:\n  config:\n  - {family: ipv4, route-table: 9, fwmark: "
                                        + "9" * 5000 + "}\n"}, "out of range"),
    Case("rule without family", {"50.yaml": "route-rules:\n  config:\n  - {route-table: 9}\n"},
         "needs ip-from, ip-to or family"),
    Case("rule absent everything (valid)", {"50.yaml": "route-rules:\n  config:\n  - {family: ipv6, "
                                                      "state: absent}\n"}, ""),
    # routes
    Case("route host bits", {"50.yaml": "routes:\n  config:\n  - {destination: 10.0.0.1/24, next-hop-interface: lo}\n"},
         "host bits set"),
    Case("route without next hop", {"50.yaml": "routes:\n  config:\n  - {destination: 10.0.0.0/24}\n"},
         "next-hop"),
    Case("route family mismatch", {"50.yaml": "routes:\n  config:\n  - {destination: 10.0.0.0/24, "
                                             "next-hop-address: '2001:db8::1'}\n"}, "IPv6"),
    Case("route table local", {"50.yaml": "routes:\n  config:\n  - {destination: 10.0.0.0/24, "
                                         "next-hop-interface: lo, table-id: 255}\n"}, "kernel's"),
    Case("route metric negative", {"50.yaml": "routes:\n  config:\n  - {destination: 10.0.0.0/24, "
                                             "next-hop-interface: lo, metric: -1}\n"}, "out of range"),
    Case("routes not a list", {"50.yaml": "routes:\n  config: yes\n"}, "expected a list"),
    # sysctl
    Case("kernel key", {"50.yaml": "sysctl:\n  kernel.sysrq: 1\n"}, "(net.*) only"),
    Case("path traversal key", {"50.yaml": "sysctl:\n  net/../kernel/sysrq: 1\n"}, "invalid component"),
    Case("absolute key", {"50.yaml": "sysctl:\n  /proc/sys/net/ipv4/ip_forward: 1\n"}, "not a sysctl key"),
    Case("empty component", {"50.yaml": "sysctl:\n  net..ipv4: 1\n"}, "not a sysctl key"),
    Case("sysctl list value", {"50.yaml": "sysctl:\n  net.ipv4.ip_forward: [1]\n"}, "expected a value"),
    Case("sysctl multiline value", {"50.yaml": 'sysctl:\n  net.ipv4.ip_forward: "1\\n2"\n'}, "single-line"),
    Case("sysctl null value", {"50.yaml": "sysctl:\n  net.ipv4.ip_forward:\n"}, "expected a value"),
    Case("sysctl key shell", {"50.yaml": "sysctl:\n  net.$(reboot): 1\n"}, "invalid component"),
    # firewall
    Case("unknown table", {"50.yaml": "firewall:\n  security2: {}\n"}, "unknown key"),
    Case("unknown match", {"50.yaml": "firewall:\n  filter:\n    FORWARD:\n      rules: ['-m nosuchmatch -j ACCEPT']\n"},
         "nosuchmatch"),
    Case("unbalanced quote", {"50.yaml": "firewall:\n  filter:\n    FORWARD:\n      rules: ['-m comment --comment \"x -j ACCEPT']\n"},
         "unbalanced"),
    Case("missing -j argument", {"50.yaml": "firewall:\n  filter:\n    FORWARD:\n      rules: ['-j']\n"},
         'option "-j" requires an argument'),
    Case("-A prefix", {"50.yaml": "firewall:\n  filter:\n    FORWARD:\n      rules: ['-A FORWARD -j ACCEPT']\n"},
         "drop '-A CHAIN'"),
    Case("policy on user chain", {"50.yaml": "firewall:\n  filter:\n    MINE:\n      policy: DROP\n"},
         "only built-in chains"),
    Case("masquerade in filter", {"50.yaml": "firewall:\n  filter:\n    FORWARD:\n      rules: ['-j MASQUERADE']\n"},
         "the kernel refuses this rule in the filter table"),
    Case("hostname source", {"50.yaml": "firewall:\n  filter:\n    FORWARD:\n      rules: ['-s example.com -j DROP']\n"},
         "does not resolve host names"),
    Case("rule with control characters", {"50.yaml": 'firewall:\n  filter:\n    FORWARD:\n      rules: ["-j ACCEPT\\u0007"]\n'},
         "control characters"),
    Case("4,000-character rule", {"50.yaml": "firewall:\n  filter:\n    FORWARD:\n      rules: ['-m comment --comment "
                                             + "x" * 5000 + " -j ACCEPT']\n"}, "at most 4096"),
    Case("chain name too long", {"50.yaml": "firewall:\n  filter:\n    " + "C" * 40 + ": {}\n"}, "valid chain name"),
    # libvirt
    Case("libvirt bad uri", {"50.yaml": "libvirt:\n  uri: 'file:///etc/passwd; rm -rf /'\n"}, "not a libvirt URI"),
    Case("libvirt bad network name", {"50.yaml": "libvirt:\n  networks: [{name: ../x}]\n"}, "not a libvirt network name"),
    Case("libvirt bad state", {"50.yaml": "libvirt:\n  networks: [{name: default, state: running}]\n"}, "one of"),
    Case("libvirt xml not a network", {"50.yaml": "libvirt:\n  networks: [{name: x, xml: '<domain/>'}]\n"},
         "expected a <network>"),
    Case("libvirt unknown key", {"50.yaml": "libvirt:\n  guest: {reattach: true}\n"}, "unknown key"),
    # the directory
    Case("symlink out of the directory", setup=symlink_out, expect="outside the state directory"),
    Case("symlink to /etc/shadow", setup=symlink_to_shadow, expect="outside the state directory"),
    Case("file owned by another user", setup=foreign_owner, expect="owned by uid 65534"),
    Case("world-writable file", setup=world_writable, expect="writable by group and others"),
    Case("fifo named like a state file", setup=fifo, expect="not a regular file"),
]


def materialize(case: Case, state: StateDir) -> None:
    for name, content in case.files.items():
        path = state.path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        os.chmod(path, 0o644)
    if case.setup is not None:
        case.setup(state.path)


def backdate(state: StateDir) -> None:
    """The case's files as if written a while ago: the daemon gives an invalid file written
    within the last second more time (it may be half-written; tests/integration/
    test_daemon_files.py covers that), which this test, about surviving the content, need
    not wait for once per case."""
    then = time.time() - 10
    for path in state.path.iterdir():
        if path.name.startswith("50") or path.name.startswith("51"):
            try:
                os.utime(path, (then, then), follow_symlinks=False)
            except OSError:
                continue


def clear(state: StateDir) -> None:
    for path in state.path.iterdir():
        if path.name.startswith("50") or path.name.startswith("51"):
            path.unlink()


def test_catalogue_is_big_enough() -> None:
    assert len(CASES) >= 60


@pytest.mark.kernel
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_check_gives_a_clear_error(case: Case, make_state_dir: Callable[[], StateDir], netns: Netns) -> None:
    state = make_state_dir()
    materialize(case, state)
    before = netns.snapshot()
    result = vnetd("check", netns=netns, state_dir=state, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if case.expect:
        assert result.returncode == 1, result.stdout + result.stderr
        assert case.expect in result.stderr, result.stderr[-2000:]
        assert result.stderr.count("error:") >= 1
    else:
        assert result.returncode == 0, result.stderr[-2000:]
    assert netns.snapshot() == before


@pytest.mark.kernel
@pytest.mark.slow
def test_running_daemon_survives_every_case(make_netns: Callable[..., Netns],
                                            make_state_dir: Callable[[], StateDir]) -> None:
    ns = make_netns("hostile")
    ns.veth("eth1", "uplink")
    state = make_state_dir()
    state.write("10-base.yaml", "interfaces:\n- {name: brh, type: linux-bridge, state: up, mtu: 4000}\n"
                                "firewall:\n  filter:\n    FORWARD:\n      rules: ['-i brh -j ACCEPT']\n")
    daemon = DaemonProcess(ns, state, check_interval=0.5)
    try:
        daemon.wait_ready()
        assert daemon.wait_until(lambda: (ns.link("brh") or {}).get("mtu") == 4000)
        before, rules = ns.settled_snapshot(), ns.iptables_save()
        for case in CASES:
            if not case.daemon:
                continue
            mark = daemon.mark()
            materialize(case, state)
            backdate(state)
            event = "config.loaded" if not case.expect else "config.invalid"
            daemon.wait_for(event, since=mark, timeout=60)
            assert daemon.proc.poll() is None, f"{case.name}: the daemon died"
            cleared = daemon.mark()
            clear(state)
            daemon.wait_for("config.loaded", since=cleared, timeout=60)
        # the main loop answers status between passes: once it has, the pass that
        # followed the last load is over, and whatever it did is in the namespace
        assert vnetd("status", "--json", "--socket", daemon.socket).returncode == 0
        assert ns.settled_snapshot() == before
        assert ns.iptables_save() == rules
    finally:
        assert daemon.stop() == 0
    assert not daemon.bad_lines


# --------------------------------------------------------------------------- fuzzing

KEYS = ["interfaces", "routes", "config", "sysctl", "firewall", "libvirt", "name", "type", "state", "mtu",
        "ipv4", "address", "bridge", "port", "options", "stp", "filter", "FORWARD", "rules", "policy", "mode",
        "networks", "net.ipv4.ip_forward", "destination", "next-hop-address", "veth", "peer", "vlan", "id",
        "route-rules", "ip-from", "ip-to", "route-table", "fwmark", "fwmask", "iif", "action", "family", "priority",
        "identifier", "mac-address", "profile-name", "dhcp", "autoconf", "link-aggregation", "miimon",
        "arp_ip_target", "vxlan", "remote", "local", "base-iface", "destination-port", "learning", "daemon", "observe",
        "health", "probes", "tcp", "icmp", "timeout"]
SCALARS = ["up", "down", "absent", "linux-bridge", "ethernet", "veth", "9000", "-1", "1e9", "true", "null",
           "192.0.2.1/24", "0.0.0.0/0", "-j ACCEPT", "-m tcp -p tcp --dport 22 -j ACCEPT", "br0", "&a x", "*a",
           "!!str", "'quoted'", '"dq"', "{}", "[]", "~", "::1", "yes", "ACCEPT", "exclusive", "bond", "vxlan",
           "mac-address", "802.3ad", "0x10", "'0xff'", "ipv6", "blackhole", "192.0.2.1", "52:54:00:aa:bb:01"]


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 25))):
        indent = "  " * draw(st.integers(0, 4))
        key = draw(st.sampled_from(KEYS))
        style = draw(st.integers(0, 3))
        if style == 0:
            lines.append(f"{indent}{key}:")
        elif style == 1:
            lines.append(f"{indent}{key}: {draw(st.sampled_from(SCALARS))}")
        elif style == 2:
            lines.append(f"{indent}- {key}: {draw(st.sampled_from(SCALARS))}")
        else:
            lines.append(f"{indent}- {draw(st.sampled_from(SCALARS))}")
    return "\n".join(lines) + "\n"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(yaml_texts(), st.text(max_size=400)))
def test_fuzz_loader_never_crashes(text: str) -> None:
    try:
        load_sources([SourceFile("/fuzz/50.yaml", text)])
    except ConfigError as exc:
        assert exc.issues and all(i.file == "/fuzz/50.yaml" for i in exc.issues)


TOKENS = ["-s", "-d", "-i", "-o", "-p", "-f", "!", "-m", "-j", "-g", "--dport", "--sport", "--state", "tcp", "udp",
          "icmp", "state", "NEW,ESTABLISHED", "22", "10.0.0.0/8", "eth0", "ACCEPT", "DROP", "REJECT",
          "--reject-with", "MASQUERADE", '"', "'", "\\", "comment", "--comment", "x y", "", "-A", "--to-ports"]


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.lists(st.sampled_from(TOKENS), max_size=14).map(" ".join), st.text(max_size=200)))
def test_fuzz_rule_parser_never_crashes(text: str) -> None:
    try:
        rule = parse_rule(text)
    except RuleSyntaxError:
        return
    assert parse_rule(rule.text).text == rule.text  # the canonical text parses to itself
