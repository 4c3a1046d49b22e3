# SPDX-License-Identifier: MIT
"""The schema tables (vnetd/desired/schema.py) are what the loader checks, key by key:
every mapping the loader reads is checked against a table, and the values and ranges
it enforces are the table's. So docs/SCHEMA.md and vnetd.d(5), generated from the
tables, cannot say something the loader does not do. Also "did you mean" for keys
and enumerated values.

Pure: files are loaded from memory.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT
from tests.unit.test_loader import BROKEN
from tests.unit.test_rule_syntax import BROKEN_FIREWALL
from vnetd.desired import nodes, schema
from vnetd.desired.loader import SourceFile, load_partial, load_sources
from vnetd.desired.suggest import close_matches, did_you_mean
from vnetd.errors import ConfigError

#: a state file that writes every key of every table (tests the tables are all read)
KITCHEN_SINK = """\
interfaces:
- name: eth1
  type: ethernet
  state: up
  mtu: 9000
  mac-address: "52:54:00:12:34:56"
  description: uplink
- name: br0
  type: linux-bridge
  state: up
  mtu: 9000
  ipv4:
    enabled: true
    dhcp: false
    address:
    - ip: 192.0.2.1
      prefix-length: 24
    - 192.0.2.2/24
  ipv6:
    enabled: true
    autoconf: false
    address: [2001:db8::1/64]
  bridge:
    options:
      stp: {enabled: false, forward-delay: 0, hello-time: 2, max-age: 20, priority: 32768}
    port:
    - name: eth1
    - v0
- name: v0
  type: veth
  veth: {peer: v1}
- name: eth1.100
  type: vlan
  vlan: {base-iface: eth1, id: 100, protocol: 802.1q}
- name: eth1.200
  type: vlan
  vlan: {base-iface: eth1, id: 200, protocol: 802.1ad, reorder-headers: true, loose-binding: false,
         registration-protocol: mvrp}
- name: eth9
  type: ethernet
  identifier: mac-address
  mac-address: "52:54:00:12:34:99"
  profile-name: wan0
  ipv4: {dhcp: true}
  ipv6: {autoconf: true, dhcp: true}
- name: vx100
  type: vxlan
  vxlan: {id: 100, remote: 192.0.2.12, local: 192.0.2.1, base-iface: br0, destination-port: 4789, learning: true}
- name: bond0
  type: bond
  link-aggregation:
    mode: 802.3ad
    port: [eth2, {name: eth3}]
    options:
      lacp_rate: fast
      ad_select: bandwidth
      ad_actor_sys_prio: 100
      ad_user_port_key: 7
      ad_actor_system: "02:00:00:00:00:01"
      miimon: 100
      updelay: 200
      downdelay: 200
      peer_notif_delay: 0
      use_carrier: true
      xmit_hash_policy: layer3+4
      resend_igmp: 1
      num_grat_arp: 1
      num_unsol_na: 1
      all_slaves_active: dropped
      min_links: 1
      lp_interval: 1
      arp_all_targets: any
      primary_reselect: always
      fail_over_mac: none
- name: bond1
  type: bond
  link-aggregation:
    mode: active-backup
    ports: [eth4, eth5]
    options: {primary: eth4, arp_interval: 1000, arp_validate: all, arp_ip_target: [192.0.2.254]}
- name: bond2
  type: bond
  link-aggregation: {mode: 0, port: [eth6], options: {packets_per_slave: 1}}
- name: bond3
  type: bond
  link-aggregation: {mode: balance-tlb, port: [eth7], options: {tlb_dynamic_lb: true}}
routes:
  config:
  - destination: 198.51.100.0/24
    next-hop-address: 192.0.2.254
    next-hop-interface: br0
    metric: 100
    table-id: 100
  - destination: 203.0.113.0/24
    state: absent
route-rules:
  config:
  - {ip-from: 192.0.2.0/24, ip-to: 198.51.100.0/24, priority: 1000, route-table: 100, fwmark: 0x10,
     fwmask: 0xff, iif: br0}
  - {family: ipv6, action: prohibit, priority: 2000}
  - {family: ipv4, priority: 3000, state: absent}
sysctl:
  net.ipv4.ip_forward: 1
firewall6:
  filter:
    INPUT: {policy: ACCEPT, rules: [-p ipv6-icmp -j ACCEPT]}
  nat: {}
  mangle: {}
  raw: {}
firewall:
  backend: auto
  filter:
    FORWARD:
      policy: DROP
      mode: merge
      position: top
      rules: [-j ACCEPT]
  nat: {}
  mangle: {}
  raw: {}
libvirt:
  uri: test:///default
  networks:
  - name: default
    state: active
    autostart: true
    xml: <network><name>default</name></network>
  guests: {reattach: true}
health:
  probes:
  - {name: ssh, tcp: 192.0.2.10:22, timeout: 2}
  - icmp: 192.0.2.254
  - {address: 192.0.2.1/24, interface: br0}
daemon:
  observe: false
"""


class Recorder:
    """What the loader asked of each mapping: the keys it was checked against, the
    values it read, and the choices and ranges it was given explicitly."""

    def __init__(self) -> None:
        self.allowed: list[object] = []
        self.read: set[tuple[str, str]] = set()
        self.explicit: list[tuple[str, str, object]] = []


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    rec = Recorder()
    init, value_node, key_node = nodes.MapView.__init__, nodes.MapView.value_node, nodes.MapView.key_node
    choice, integer = nodes.MapView.choice, nodes.MapView.integer

    def spy_init(self: nodes.MapView, node: Any, path: str, ctx: Any, allowed: Any, what: str = "") -> None:
        rec.allowed.append(allowed)
        init(self, node, path, ctx, allowed, what)

    def spy_value_node(self: nodes.MapView, key: str) -> Any:
        if self.table is not None:
            rec.read.add((self.table.name, key))
        return value_node(self, key)

    def spy_key_node(self: nodes.MapView, key: str) -> Any:
        if self.table is not None:  # a key refused by name (nmstate's DHCP client settings) is read too
            rec.read.add((self.table.name, key))
        return key_node(self, key)

    def spy_choice(self: nodes.MapView, key: str, choices: Any = None) -> Any:
        if choices is not None:
            rec.explicit.append((self.table.name if self.table else "?", key, ("choice", choices)))
        return choice(self, key, choices)

    def spy_integer(self: nodes.MapView, key: str, lo: Any = None, hi: Any = None, unit: Any = None) -> Any:
        if lo is not None or hi is not None:
            rec.explicit.append((self.table.name if self.table else "?", key, ("range", lo, hi)))
        return integer(self, key, lo, hi, unit)

    monkeypatch.setattr(nodes.MapView, "__init__", spy_init)
    monkeypatch.setattr(nodes.MapView, "value_node", spy_value_node)
    monkeypatch.setattr(nodes.MapView, "key_node", spy_key_node)
    monkeypatch.setattr(nodes.MapView, "choice", spy_choice)
    monkeypatch.setattr(nodes.MapView, "integer", spy_integer)
    yield rec


def load_everything() -> None:
    """The kitchen sink, the shipped examples and every broken file of the catalogues."""
    sources = [SourceFile("/virtual/kitchen-sink.yaml", KITCHEN_SINK)]
    for path in sorted((ROOT / "etc").rglob("*.yaml")):
        sources.append(SourceFile(str(path), path.read_text()))
    load_partial(sources)
    # nmstate's DHCP client settings: in the schema (so the reference says they are refused), never valid
    client = "\n".join(f"    {key}: {'1' if kind is schema.Kind.INTEGER else 'true'}"
                       for key, kind in schema.DHCP_CLIENT_KEYS)
    load_partial([SourceFile("/virtual/dhcp-client.yaml",
                             f"interfaces:\n- name: eth1\n  type: ethernet\n  ipv4:\n    dhcp: true\n{client}\n")])
    # firewall6.backend: in the schema (so the reference says where it belongs), never valid
    load_partial([SourceFile("/virtual/firewall6-backend.yaml", "firewall6:\n  backend: iptables-legacy\n")])
    for case in BROKEN + BROKEN_FIREWALL:
        load_partial([SourceFile(f"/virtual/{name}", textwrap.dedent(text)) for name, text in case.files])


def test_the_kitchen_sink_is_valid() -> None:
    state = load_sources([SourceFile("/virtual/kitchen-sink.yaml", KITCHEN_SINK)])
    assert len(state.interfaces) == 11 and state.libvirt is not None and state.probes
    assert state.route_rules and any(c.family == 6 for c in state.chains)


def test_every_mapping_the_loader_reads_is_checked_against_a_schema_table(recorder: Recorder) -> None:
    load_everything()
    assert recorder.allowed
    not_tables = [a for a in recorder.allowed if not isinstance(a, schema.Table)]
    assert not not_tables, f"the loader checked keys against something else than a schema table: {not_tables}"


def test_every_key_of_every_table_is_read_by_the_loader(recorder: Recorder) -> None:
    """A key in the reference that the loader never looks at would be a key the
    reference promises and the loader ignores."""
    load_everything()
    for table in schema.tables():
        for f in table.fields:
            assert (table.name, f.key) in recorder.read, f"{table.name}.{f.key} is never read by the loader"


def test_explicit_choices_and_ranges_agree_with_the_schema(recorder: Recorder) -> None:
    """A parse function may narrow a range (an IPv4 prefix length is 0-32 of the
    table's 0-128); it may not widen it, nor allow other values."""
    load_everything()
    for table_name, key, given in recorder.explicit:
        table = next(t for t in schema.tables() if t.name == table_name)
        f = table.field(key)
        if given[0] == "choice":
            assert tuple(given[1]) == f.values, f"{table_name}.{key}: the loader allows {given[1]}, the schema {f.values}"
        else:
            assert f.range is not None and f.range[0] <= given[1] and given[2] <= f.range[1], (table_name, key, given)


def test_the_desired_modules_keep_no_key_tuples_of_their_own() -> None:
    """No tuple of keys or choices written in a parse function (the schema has them)."""
    offenders = []
    for path in sorted((ROOT / "vnetd" / "desired").glob("*.py")):
        if path.name == "schema.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
                args = list(node.args)
                literal = [a for a in args if isinstance(a, ast.Tuple)
                           and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in a.elts)]
                if name in ("as_map", "MapView", "mapping", "choice") and literal:
                    offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"keys or choices written outside vnetd/desired/schema.py: {offenders}"


def test_table_keys_are_unique_and_described() -> None:
    for table in schema.tables():
        keys = [f.key for f in table.fields]
        assert len(keys) == len(set(keys)), table.name
        assert table.description and table.title
        for f in table.fields:
            assert f.description.endswith("."), f"{table.name}.{f.key}: a sentence, please"
            assert f.origin in (schema.NMSTATE, schema.VNETD)
            assert (f.kind is schema.Kind.CHOICE) == bool(f.values), f"{table.name}.{f.key}"


# --------------------------------------------------------------------------- did you mean


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_sources([SourceFile("/virtual/10-a.yaml", textwrap.dedent(text))])
    return [str(i) for i in info.value.issues]


@pytest.mark.parametrize(("text", "says"), [
    ("interfaces:\n- {name: eth1, type: ethernet, mtux: 9000}\n", "; did you mean mtu?"),
    ("interfaces:\n- {name: eth1, type: ethernet, MTU: 9000}\n", "; did you mean mtu?"),
    ("interfaces:\n- {name: eth1, type: ethernet, mac: 52:54:00:12:34:56}\n", "; did you mean mac-address?"),
    ("interface:\n- {name: eth1, type: ethernet}\n", "; did you mean interfaces?"),
    ("routes:\n  config:\n  - {destination: 0.0.0.0/0, next-hop: 192.0.2.1}\n",
     "did you mean next-hop-address or next-hop-interface?"),
    ("firewall:\n  filter:\n    INPUT:\n      rule: [-j ACCEPT]\n", "; did you mean rules?"),
    ("firewall:\n  filtre:\n    INPUT: {}\n", "; did you mean filter?"),
    ("interfaces:\n- name: br0\n  type: linux-bridge\n  bridge: {options: {stp: {forward_delay: 0}}}\n",
     "did you mean forward-delay?"),
    ("interfaces:\n- {name: br0, type: linux-brige}\n",
     "'linux-brige' is not valid; expected one of: ethernet, linux-bridge, veth, vlan, bond, vxlan, dummy, loopback, "
     "tun, unknown; did you mean linux-bridge?"),
    ("firewall:\n  filter:\n    INPUT: {policy: accept}\n",
     "'accept' is not valid; expected one of: ACCEPT, DROP; did you mean ACCEPT?"),
    ("firewall:\n  filter:\n    INPUT: {mode: exclusiv}\n", "did you mean exclusive?"),
    ("libvirt:\n  networks:\n  - {name: default, state: activ}\n", "did you mean active?"),
])
def test_did_you_mean(text: str, says: str) -> None:
    found = problems(text)
    assert any(says in p for p in found), found


def test_nothing_close_suggests_nothing() -> None:
    found = problems("interfaces:\n- {name: eth1, type: bond, zzzz: 1}\n")
    assert found and not any("did you mean" in p for p in found), found


def test_close_matches() -> None:
    assert close_matches("mtux", ["name", "mtu", "mac-address"]) == ["mtu"]
    assert close_matches("ACCEPT", ["ACCEPT", "DROP"]) == []  # never the word itself
    assert close_matches("accept", ["DROP", "ACCEPT"]) == ["ACCEPT"]
    assert did_you_mean("xyz", ["name", "mtu"]) == ""
    assert did_you_mean("--dprot", ["--dport", "--sport", "--destination-port"]) == "did you mean --dport?"


def test_schema_file_is_what_the_loader_module_says() -> None:
    """The loader's top-level sections are the schema's."""
    from vnetd.desired.loader import SECTIONS

    assert schema.TOP.keys == SECTIONS
    assert Path(schema.__file__).name == "schema.py"
