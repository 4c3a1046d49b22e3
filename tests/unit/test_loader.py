# SPDX-License-Identifier: MIT
"""The loader (SPEC sections 2 and 5): drop-in directory -> DesiredState, or every
problem of every file with FILE:LINE, the field path and what would be valid.

Pure: no namespace, no kernel; state directories are made under pytest's tmp_path
(root-owned, 0755, files 0644, as vnetd requires). ``BROKEN`` is the catalogue of
broken interface/route files (issue 2); ``tests/integration/test_bad_input.py`` runs
it through ``vnetd check/plan/apply`` against a real namespace.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT, StateDir
from vnetd.desired.loader import SourceFile, is_state_file, load_sources, load_state_dir
from vnetd.desired.nodes import MAX_ISSUES_PER_FILE
from vnetd.errors import ConfigError, ConfigIssue
from vnetd.model.interfaces import AdminState, IfType

EXAMPLES = ROOT / "etc"


def issues_of(state: StateDir | Path | str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_state_dir(str(state))
    assert info.value.issues, "a ConfigError must carry its issues"
    return list(info.value.issues)


def shown(issues: list[ConfigIssue]) -> str:
    return "\n".join(str(i) for i in issues)


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Broken:
    """One broken state directory and the error it must produce.

    ``file`` is where the error is reported ("" for the directory itself), ``line``
    its line (0: the whole file), ``path`` the field path; every string of ``says``
    must be in the message (``{dir}`` stands for the state directory).
    """

    id: str
    files: tuple[tuple[str, str], ...]
    file: str
    line: int
    path: str
    says: tuple[str, ...]
    file_mode: int = 0o644
    dir_mode: int = 0o755
    count: int = 1  # how many issues the directory yields in all

    def write(self, state: StateDir) -> None:
        for name, text in self.files:
            state.write(name, text, mode=self.file_mode if name == self.file else 0o644)
        os.chmod(state.path, self.dir_mode)

    def where(self, state: StateDir) -> str:
        place = str(state.path / self.file) if self.file else str(state.path)
        return f"{place}:{self.line}" if self.line else place

    def expected(self, state: StateDir) -> tuple[str, ...]:
        """What `vnetd check` prints on stderr: the located line, then each fragment."""
        field = f" {self.path}:" if self.path else ""
        return (f"error: {self.where(state)}:{field} ",
                *(s.replace("{dir}", str(state.path)) for s in self.says))

    def matches(self, issue: ConfigIssue, state: StateDir) -> bool:
        text = str(issue)
        return (text.startswith(f"{self.where(state)}:") and issue.path == self.path
                and all(s.replace("{dir}", str(state.path)) in issue.message for s in self.says))


def bad(id: str, text: str, line: int, path: str, *says: str, **kw: object) -> Broken:
    """A one-file case (10-bad.yaml)."""
    return Broken(id, (("10-bad.yaml", text),), "10-bad.yaml", line, path, says, **kw)  # type: ignore[arg-type]


ETH1 = """\
    interfaces:
    - name: eth1
      type: ethernet
    """

BROKEN: list[Broken] = [
    bad("yaml-syntax-error", """\
        interfaces:
        - name: eth1
          type: [ethernet
        """, 4, "", "YAML syntax error", "did not find expected ',' or ']'"),
    bad("yaml-tab-indent", "interfaces:\n\t- name: eth1\n", 2, "", "YAML syntax error",
        "found character that cannot start any token"),
    bad("unknown-top-level-key", """\
        interface:
        - name: eth1
          type: ethernet
        """, 1, "interface", "unknown key", "valid keys: interfaces, routes, route-rules, sysctl, firewall, firewall6, libvirt, health, daemon"),
    bad("unknown-interface-key", """\
        interfaces:
        - name: eth1
          type: ethernet
          mtux: 9000
        """, 4, "interfaces[0].mtux", "unknown key in an interface", "valid keys: name, type, state, mtu"),
    bad("mtu-as-string", """\
        interfaces:
        - name: eth1
          type: ethernet
          mtu: "9000"
        """, 4, "interfaces[0].mtu", "expected an integer 68-65535, got a string ('9000')"),
    bad("mtu-as-list", """\
        interfaces:
        - name: eth1
          type: ethernet
          mtu: [1]
        """, 4, "interfaces[0].mtu", "expected an integer 68-65535, got a list"),
    bad("mtu-50", """\
        interfaces:
        - name: eth1
          type: ethernet
          mtu: 50
        """, 4, "interfaces[0].mtu", "50 is out of range", "68-65535"),
    bad("mtu-70000", """\
        interfaces:
        - name: eth1
          type: ethernet
          state: up
          mtu: 70000
        """, 5, "interfaces[0].mtu", "70000 is out of range", "68-65535"),
    bad("bad-cidr", """\
        interfaces:
        - name: eth1
          type: ethernet
          ipv4:
            enabled: true
            address: [192.0.2.300/24]
        """, 6, "interfaces[0].ipv4.address[0]", "'192.0.2.300/24' is not a valid address/prefix"),
    bad("address-without-prefix", """\
        interfaces:
        - name: eth1
          type: ethernet
          ipv4:
            address:
            - 192.0.2.10
        """, 6, "interfaces[0].ipv4.address[0]", "has no prefix length",
        "expected ADDRESS/PREFIX like 192.168.10.212/24"),
    bad("ipv6-address-under-ipv4", """\
        interfaces:
        - name: eth1
          type: ethernet
          ipv4:
            address:
            - ip: 2001:db8::1
              prefix-length: 24
        """, 6, "interfaces[0].ipv4.address[0]", "2001:db8::1/24 is not an IPv4 address",
        "listed under ipv4"),
    bad("ipv6-scope-id", """\
        interfaces:
        - name: eth1
          type: ethernet
          ipv6:
            address: ['fe80::1%eth1/64']
        """, 5, "interfaces[0].ipv6.address[0]", "carries a scope id", "write the plain address"),
    bad("name-16-chars", """\
        interfaces:
        - name: abcdefghijklmnop
          type: dummy
        """, 2, "interfaces[0].name", "is 16 bytes long; the kernel allows 1-15"),
    bad("name-with-slash", """\
        interfaces:
        - name: eth1/0
          type: ethernet
        """, 2, "interfaces[0].name", "contains ['/']", "'/', ':', whitespace and non-ASCII are not allowed"),
    bad("name-with-colon", """\
        interfaces:
        - name: "eth1:0"
          type: ethernet
        """, 2, "interfaces[0].name", "contains [':']", "are not allowed"),
    bad("name-with-space", """\
        interfaces:
        - name: "eth 1"
          type: ethernet
        """, 2, "interfaces[0].name", "contains [' ']", "are not allowed"),
    bad("empty-name", """\
        interfaces:
        - name: ""
          type: dummy
        """, 2, "interfaces[0].name", "must not be empty (1-15 characters)"),
    bad("name-missing", """\
        interfaces:
        - type: dummy
          mtu: 1500
        """, 2, "interfaces[0].name", "required: the interface name (1-15 characters)"),
    bad("unknown-type", """\
        interfaces:
        - name: team0
          type: team
        """, 3, "interfaces[0].type", "'team' is not valid",
        "expected one of: ethernet, linux-bridge, veth, vlan, bond, vxlan"),
    bad("port-is-its-own-bridge", """\
        interfaces:
        - name: br0
          type: linux-bridge
          bridge:
            port:
            - name: br0
        """, 6, "interfaces[0].bridge.port[0]", "'br0' cannot be a port of itself"),
    bad("port-listed-twice", """\
        interfaces:
        - name: br0
          type: linux-bridge
          bridge:
            port:
            - name: eth1
            - name: eth1
        """, 7, "interfaces[0].bridge.port[1]", "port 'eth1' is listed twice"),
    Broken("port-in-two-bridges", (
        ("10-a.yaml", """\
            interfaces:
            - name: br0
              type: linux-bridge
              bridge:
                port: [{name: eth1}]
            """),
        ("20-b.yaml", """\
            # the same uplink, written again for a second bridge
            interfaces:
            - name: br1
              type: linux-bridge
              bridge:
                port:
                - name: eth1
            """)),
        "20-b.yaml", 3, "interfaces[br1].bridge.port",
        ("'eth1' is already a port of bridge 'br0' ({dir}/10-a.yaml:2)", "enslaved to one bridge or bond only")),
    bad("bridge-as-port", """\
        interfaces:
        - name: br0
          type: linux-bridge
          bridge:
            port: [{name: br1}]
        - name: br1
          type: linux-bridge
        """, 2, "interfaces[br0].bridge.port", "'br1' is a bridge; a bridge cannot be a port of another bridge"),
    Broken("interface-in-two-files", (
        ("10-a.yaml", ETH1),
        ("20-b.yaml", """\
            # eth1 again, with an MTU
            interfaces:
            - name: eth1
              type: ethernet
              mtu: 9000
            """)),
        "20-b.yaml", 3, "",
        ("interface 'eth1' is defined twice: at {dir}/10-a.yaml:2 and at {dir}/20-b.yaml:3",)),
    Broken("world-writable-file", (("10-bad.yaml", ETH1),), "10-bad.yaml", 0, "",
           ("refusing an insecure state file: writable by others (mode 0646)",
            "fix with: chown root:root {dir}/10-bad.yaml && chmod go-w {dir}/10-bad.yaml"), file_mode=0o646),
    Broken("group-writable-dir", (("10-a.yaml", ETH1),), "", 0, "",
           ("refusing an insecure state directory: writable by group (mode 0775)",
            "fix with: chown root:root {dir} && chmod go-w {dir}"), dir_mode=0o775),
    bad("bad-mac", """\
        interfaces:
        - name: eth1
          type: ethernet
          mac-address: 52:54:00:0a:fa
        """, 4, "interfaces[0].mac-address", "is not a MAC address",
        "expected six hex pairs like 52:54:00:0a:fa:3e"),
    bad("multicast-mac", """\
        interfaces:
        - name: eth1
          type: ethernet
          mac-address: 01:00:5e:00:00:fb
        """, 4, "interfaces[0].mac-address", "is a multicast address; a device needs a unicast MAC"),
    bad("absent-ethernet", """\
        interfaces:
        - name: eth1
          type: ethernet
          state: absent
        """, 4, "interfaces[0].state", "'absent' deletes virtual interfaces only",
        "cannot be deleted, use state: down"),
    bad("bridge-section-on-veth", """\
        interfaces:
        - name: veth0
          type: veth
          veth: {peer: veth1}
          bridge:
            options: {stp: {enabled: false}}
        """, 5, "interfaces[0].bridge", "'bridge' is only valid with type: linux-bridge"),
    bad("vlan-without-id", """\
        interfaces:
        - name: eth1.10
          type: vlan
          vlan:
            base-iface: eth1
        """, 5, "interfaces[0].vlan.id", "required: the VLAN id (1-4094)"),
    bad("vlan-id-5000", """\
        interfaces:
        - name: eth1.5000
          type: vlan
          vlan:
            base-iface: eth1
            id: 5000
        """, 6, "interfaces[0].vlan.id", "5000 is out of range", "1-4094"),
    bad("vlan-section-missing", """\
        interfaces:
        - name: eth1.10
          type: vlan
        """, 2, "interfaces[0].vlan", "required for type: vlan: {base-iface: NAME, id: 1-4094}"),
    bad("forward-delay-1-with-stp", """\
        interfaces:
        - name: br0
          type: linux-bridge
          bridge:
            options:
              stp:
                enabled: true
                forward-delay: 1
        """, 8, "interfaces[0].bridge.options.stp.forward-delay",
        "with STP enabled the kernel needs a forward delay of 2-30 seconds"),
    bad("route-host-bits-set", """\
        routes:
          config:
          - destination: 198.51.100.7/24
            next-hop-address: 192.0.2.1
        """, 3, "routes.config[0].destination", "has host bits set; did you mean 198.51.100.0/24?"),
    bad("route-without-next-hop", """\
        routes:
          config:
          - destination: 198.51.100.0/24
            metric: 100
        """, 3, "routes.config[0]", "a route needs next-hop-address, next-hop-interface or both"),
    bad("route-next-hop-family-mismatch", """\
        routes:
          config:
          - destination: 198.51.100.0/24
            next-hop-address: 2001:db8::1
        """, 4, "routes.config[0].next-hop-address",
        "2001:db8::1 is IPv6 but the destination 198.51.100.0/24 is IPv4"),
    bad("route-table-255", """\
        routes:
          config:
          - destination: 198.51.100.0/24
            next-hop-interface: eth1
            table-id: 255
        """, 5, "routes.config[0].table-id", "table 255 is the kernel's (local)",
        "use the main table (254) or your own"),
    bad("routes-written-as-list", """\
        routes:
        - destination: 198.51.100.0/24
          next-hop-address: 192.0.2.1
        """, 2, "routes", "expected a mapping with the keys config, got a list"),
    Broken("route-twice-with-other-next-hop", (
        ("10-a.yaml", """\
            routes:
              config:
              - destination: 198.51.100.0/24
                next-hop-address: 192.0.2.1
            """),
        ("20-b.yaml", """\
            routes:
              config:
              - destination: 198.51.100.0/24
                next-hop-address: 192.0.2.2
            """)),
        "20-b.yaml", 3, "",
        ("route '198.51.100.0/24 table 254 metric 0' is defined twice: at {dir}/10-a.yaml:3 "
         "and at {dir}/20-b.yaml:3",)),
    bad("route-absent-and-declared", """\
        routes:
          config:
          - destination: 198.51.100.0/24
            next-hop-address: 192.0.2.1
          - destination: 198.51.100.0/24
            state: absent
        """, 5, "", "route/198.51.100.0/24 is declared absent but route/198.51.100.0/24 via 192.0.2.1 "
        "is declared at {dir}/10-bad.yaml:3"),
    bad("route-through-a-link-declared-down", """\
        interfaces:
        - name: eth1
          type: ethernet
          state: down
        routes:
          config:
          - destination: 198.51.100.0/24
            next-hop-interface: eth1
        """, 7, "", "goes through 'eth1', which is declared down",
        "the kernel refuses a route through a link that is not up"),
    bad("ipv6-address-with-two-prefixes", """\
        interfaces:
        - name: eth1
          type: ethernet
          ipv6:
            address: [2001:db8::1/64, 2001:db8::1/80]
        """, 5, "interfaces[0].ipv6.address[1]", "2001:db8::1 is listed with two prefix lengths"),
    bad("ipv6-addresses-below-mtu-1280", """\
        interfaces:
        - name: eth1
          type: ethernet
          mtu: 1200
          ipv6:
            address: [2001:db8::1/64]
        """, 4, "interfaces[0].mtu", "IPv6 needs an MTU of at least 1280"),
    bad("dhcp-true-but-disabled", """\
        interfaces:
        - name: eth1
          type: ethernet
          ipv4:
            enabled: false
            dhcp: true
        """, 6, "interfaces[0].ipv4.dhcp", "ipv4 is disabled (enabled: false) but dhcp is true"),
    bad("key-is-a-list", """\
        interfaces:
        - name: eth1
          type: ethernet
          [mtu]: 9000
        """, 4, "interfaces[0]", "keys must be plain strings, got a list"),
    bad("key-is-null", """\
        interfaces:
        - name: eth1
          type: ethernet
          ~: 9000
        """, 4, "interfaces[0]", "keys must be plain strings, got nothing (null)"),
    bad("key-is-a-boolean", """\
        interfaces:
        - name: eth1
          type: ethernet
          yes: 9000
        """, 4, "interfaces[0]", "keys must be plain strings, got a boolean ('yes')"),
    bad("duplicate-key", """\
        interfaces:
        - name: eth1
          type: ethernet
          mtu: 1500
          mtu: 9000
        """, 5, "interfaces[0].mtu", "duplicate key (first written at line 4)"),
    bad("top-level-list", """\
        - name: eth1
          type: ethernet
        """, 1, "", "expected a mapping with the keys interfaces, routes, route-rules, sysctl, firewall, firewall6, libvirt, health, daemon, got a list"),
    bad("interfaces-as-mapping", """\
        interfaces:
          eth1: {type: ethernet}
        """, 2, "interfaces", "expected a list, got a mapping"),
    bad("multiple-documents", """\
        interfaces:
        - name: eth1
          type: ethernet
        ---
        interfaces:
        - name: eth2
          type: ethernet
        """, 4, "", "YAML syntax error", "expected a single document in the stream but found another document"),
    bad("deep-flow-nesting", "interfaces: " + "[" * 5000 + "]" * 5000 + "\n", 1, "",
        "YAML syntax error", "exceeded maximum nesting depth"),
    bad("deep-block-nesting", "interfaces:\n" + "".join("  " * i + "-\n" for i in range(1, 1200)), 1000, "",
        "YAML syntax error", "exceeded maximum nesting depth"),
    # ---- route-rules (policy routing, nmstate route-rules.config)
    bad("rule-without-family", """\
        route-rules:
          config:
          - priority: 100
            route-table: 100
        """, 3, "route-rules.config[0]", "a route rule needs ip-from, ip-to or family (ipv4 or ipv6)"),
    bad("rule-family-mismatch", """\
        route-rules:
          config:
          - family: ipv6
            ip-from: 192.0.2.0/24
            route-table: 100
        """, 4, "route-rules.config[0].ip-from", "192.0.2.0/24 is IPv4 but family is ipv6"),
    bad("rule-from-host-bits", """\
        route-rules:
          config:
          - ip-from: 192.0.2.7/24
            route-table: 100
        """, 3, "route-rules.config[0].ip-from", "has host bits set; did you mean 192.0.2.0/24?"),
    bad("rule-action-and-table", """\
        route-rules:
          config:
          - ip-to: 198.51.100.0/24
            route-table: 100
            action: blackhole
        """, 5, "route-rules.config[0].action", "a rule either looks up route-table or is blackhole"),
    bad("rule-unknown-action", """\
        route-rules:
          config:
          - ip-to: 198.51.100.0/24
            action: drop
        """, 4, "route-rules.config[0].action", "'drop' is not valid; expected one of: blackhole, unreachable, "
        "prohibit"),
    bad("rule-fwmask-without-fwmark", """\
        route-rules:
          config:
          - family: ipv4
            fwmask: 0xff
            route-table: 100
        """, 4, "route-rules.config[0].fwmask", "fwmask needs fwmark"),
    bad("rule-fwmark-octal", """\
        route-rules:
          config:
          - family: ipv4
            fwmark: 010
            route-table: 100
        """, 4, "route-rules.config[0].fwmark", "write '010' in decimal or as 0x hex: YAML 1.1 reads it as 8"),
    bad("rule-table-zero", """\
        route-rules:
          config:
          - ip-from: 192.0.2.0/24
            route-table: 0
        """, 4, "route-rules.config[0].route-table", "table 0 is no table; write 254 (main)"),
    bad("rule-unknown-key", """\
        route-rules:
          config:
          - ip-from: 192.0.2.0/24
            table: 100
        """, 4, "route-rules.config[0].table", "unknown key in a route rule",
        "valid keys: ip-from, ip-to, priority, route-table, fwmark, fwmask, iif, action, family, state"),
    bad("rule-bad-iif", """\
        route-rules:
          config:
          - ip-from: 192.0.2.0/24
            iif: "eth 1"
            route-table: 100
        """, 4, "route-rules.config[0].iif", "contains [' ']"),
    bad("rule-absent-and-declared", """\
        route-rules:
          config:
          - ip-from: 192.0.2.0/24
            route-table: 100
            priority: 1000
          - route-table: 100
            family: ipv4
            state: absent
        """, 6, "", "is declared absent but route-rule/priority 1000 from 192.0.2.0/24 lookup 100 is declared "
        "at {dir}/10-bad.yaml:3"),
    Broken("rule-twice", (
        ("10-a.yaml", "route-rules:\n  config:\n  - {ip-from: 192.0.2.0/24, route-table: 100}\n"),
        ("20-b.yaml", "route-rules:\n  config:\n  - ip-from: 192.0.2.0/24\n    route-table: 100\n")),
        "20-b.yaml", 3, "", ("route rule 'from 192.0.2.0/24 lookup 100' is defined twice: at {dir}/10-a.yaml:3 "
                             "and at {dir}/20-b.yaml:3",)),
    # ---- NICs by MAC (identifier: mac-address, profile-name)
    bad("identifier-without-mac", """\
        interfaces:
        - name: eth1
          type: ethernet
          identifier: mac-address
        """, 2, "interfaces[0].mac-address", "required with identifier: mac-address"),
    bad("identifier-on-a-bridge", """\
        interfaces:
        - name: br0
          type: linux-bridge
          identifier: mac-address
          mac-address: 52:54:00:aa:bb:01
        """, 4, "interfaces[0].identifier", "only NICs (type: ethernet) are found by their MAC"),
    bad("identifier-unknown", """\
        interfaces:
        - name: eth1
          type: ethernet
          identifier: pci-address
        """, 4, "interfaces[0].identifier", "'pci-address' is not valid; expected one of: name, mac-address"),
    bad("profile-name-without-identifier", """\
        interfaces:
        - name: eth1
          type: ethernet
          profile-name: wan0
        """, 4, "interfaces[0].profile-name", "profile-name names a NIC found by its MAC"),
    bad("identifier-mac-twice", """\
        interfaces:
        - name: eth1
          type: ethernet
          identifier: mac-address
          mac-address: 52:54:00:aa:bb:01
        - name: eth2
          type: ethernet
          identifier: mac-address
          mac-address: 52:54:00:AA:BB:01
        """, 6, "interfaces[eth2].mac-address", "52:54:00:aa:bb:01 identifies 'eth1' too"),
    bad("identifier-bad-profile-name", """\
        interfaces:
        - name: eth1
          type: ethernet
          identifier: mac-address
          mac-address: 52:54:00:aa:bb:01
          profile-name: uplink/0
        """, 6, "interfaces[0].profile-name", "contains ['/']"),
    # ---- DHCP-owned addresses (ipv4.dhcp, ipv6.autoconf)
    bad("autoconf-on-ipv4", """\
        interfaces:
        - name: eth0
          type: ethernet
          ipv4:
            autoconf: true
        """, 5, "interfaces[0].ipv4.autoconf", "autoconf exists for ipv6 only"),
    bad("autoconf-but-disabled", """\
        interfaces:
        - name: eth0
          type: ethernet
          ipv6:
            enabled: false
            autoconf: true
        """, 6, "interfaces[0].ipv6.autoconf", "ipv6 is disabled (enabled: false) but autoconf is true"),
    bad("dhcp-as-string", """\
        interfaces:
        - name: eth0
          type: ethernet
          ipv4:
            dhcp: "yes"
        """, 5, "interfaces[0].ipv4.dhcp", "expected true or false, got a string ('yes')"),
    bad("dhcp-client-settings", """\
        interfaces:
        - name: eth0
          type: ethernet
          ipv4:
            dhcp: true
            auto-dns: false
        """, 6, "interfaces[0].ipv4.auto-dns", "configures nmstate's own DHCP client; vnetd runs none"),
    bad("default-route-of-a-dhcp-link", """\
        interfaces:
        - name: eth0
          type: ethernet
          ipv4: {dhcp: true}
        routes:
          config:
          - destination: 0.0.0.0/0
            next-hop-address: 192.0.2.1
            next-hop-interface: eth0
        """, 7, "", "the default route through 'eth0' belongs to its DHCP client (ipv4.dhcp: true)"),
    # ---- VXLAN
    bad("vxlan-without-id", """\
        interfaces:
        - name: vx100
          type: vxlan
          vxlan:
            remote: 198.51.100.2
        """, 5, "interfaces[0].vxlan.id", "required: the VXLAN network identifier (VNI, 0-16777215)"),
    bad("vxlan-id-too-large", """\
        interfaces:
        - name: vx100
          type: vxlan
          vxlan:
            id: 16777216
        """, 5, "interfaces[0].vxlan.id", "16777216 is out of range", "0-16777215"),
    bad("vxlan-section-missing", """\
        interfaces:
        - name: vx100
          type: vxlan
        """, 2, "interfaces[0].vxlan", "required for type: vxlan"),
    bad("vxlan-multicast-without-base", """\
        interfaces:
        - name: vx100
          type: vxlan
          vxlan:
            id: 100
            remote: 239.1.1.1
        """, 6, "interfaces[0].vxlan.remote", "is a multicast group: the kernel needs base-iface"),
    bad("vxlan-families-differ", """\
        interfaces:
        - name: vx100
          type: vxlan
          vxlan:
            id: 100
            remote: 2001:db8::2
            local: 198.51.100.1
        """, 7, "interfaces[0].vxlan.local", "198.51.100.1 is IPv4 but remote 2001:db8::2 is IPv6"),
    bad("vxlan-port-zero", """\
        interfaces:
        - name: vx100
          type: vxlan
          vxlan:
            id: 100
            destination-port: 0
        """, 6, "interfaces[0].vxlan.destination-port", "0 is out of range", "1-65535"),
    bad("vxlan-section-on-bridge", """\
        interfaces:
        - name: br0
          type: linux-bridge
          vxlan:
            id: 100
        """, 4, "interfaces[0].vxlan", "'vxlan' is only valid with type: vxlan"),
    # ---- bonds (link-aggregation)
    bad("bond-unknown-mode", """\
        interfaces:
        - name: bond0
          type: bond
          link-aggregation:
            mode: lacp
        """, 5, "interfaces[0].link-aggregation.mode", "is not a bond mode",
        "balance-rr (0), active-backup (1), balance-xor (2), broadcast (3), 802.3ad (4)"),
    bad("bond-unknown-option", """\
        interfaces:
        - name: bond0
          type: bond
          link-aggregation:
            mode: 802.3ad
            options:
              mimon: 100
        """, 7, "interfaces[0].link-aggregation.options.mimon", "unknown key in bond options",
        "valid keys: miimon, updelay"),
    bad("bond-option-of-another-mode", """\
        interfaces:
        - name: bond0
          type: bond
          link-aggregation:
            mode: active-backup
            options:
              lacp_rate: fast
        """, 7, "interfaces[0].link-aggregation.options.lacp_rate",
        "the kernel refuses lacp_rate in mode active-backup; it is an option of the modes 802.3ad"),
    bad("bond-bad-enum", """\
        interfaces:
        - name: bond0
          type: bond
          link-aggregation:
            mode: active-backup
            options:
              arp_validate: sometimes
        """, 7, "interfaces[0].link-aggregation.options.arp_validate", "is not valid; expected one of: none (0)"),
    bad("bond-miimon-and-arp", """\
        interfaces:
        - name: bond0
          type: bond
          link-aggregation:
            mode: active-backup
            options:
              miimon: 100
              arp_interval: 100
              arp_ip_target: 192.0.2.1
        """, 8, "interfaces[0].link-aggregation.options.arp_interval",
        "MII monitoring (miimon) and ARP monitoring (arp_interval) exclude each other"),
    bad("bond-arp-target-not-ipv4", """\
        interfaces:
        - name: bond0
          type: bond
          link-aggregation:
            mode: active-backup
            options:
              arp_ip_target: 192.0.2.1,2001:db8::1
        """, 7, "interfaces[0].link-aggregation.options.arp_ip_target", "'2001:db8::1' is not an IPv4 address"),
    bad("bond-section-on-ethernet", """\
        interfaces:
        - name: eth1
          type: ethernet
          link-aggregation:
            mode: active-backup
        """, 4, "interfaces[0].link-aggregation", "'link-aggregation' is only valid with type: bond"),
    bad("bond-port-in-bridge-too", """\
        interfaces:
        - name: bond0
          type: bond
          link-aggregation:
            mode: active-backup
            port: [eth1, eth2]
        - name: br0
          type: linux-bridge
          bridge:
            port: [{name: eth2}]
        """, 7, "interfaces[br0].bridge.port", "'eth2' is already a port of bond 'bond0'"),
    bad("bond-port-mtu-differs", """\
        interfaces:
        - name: eth1
          type: ethernet
          mtu: 1500
        - name: bond0
          type: bond
          mtu: 9000
          link-aggregation:
            mode: active-backup
            port: [eth1]
        """, 5, "interfaces[bond0].link-aggregation.port", "'eth1' is declared with mtu 1500",
        "the kernel gives a bond's ports the bond's MTU"),
    bad("bond-primary-not-a-port", """\
        interfaces:
        - name: bond0
          type: bond
          link-aggregation:
            mode: active-backup
            port: [eth1]
            options:
              primary: eth2
        """, 2, "interfaces[bond0].link-aggregation.options.primary", "primary 'eth2' is not one of the bond's ports"),
    # ---- VLANs as nmstate writes them
    bad("vlan-unknown-protocol", """\
        interfaces:
        - name: eth1.10
          type: vlan
          vlan:
            base-iface: eth1
            id: 10
            protocol: 802.1x
        """, 7, "interfaces[0].vlan.protocol", "'802.1x' is not valid; expected one of: 802.1q, 802.1ad"),
    bad("vlan-on-a-bond-port", """\
        interfaces:
        - name: bond0
          type: bond
          link-aggregation:
            mode: active-backup
            port: [eth1]
        - name: eth1.10
          type: vlan
          vlan:
            base-iface: eth1
            id: 10
        """, 7, "interfaces[eth1.10].vlan.base-iface", "'eth1' is a port of bond 'bond0'; put the VLAN on the bond"),
    bad("vlan-registration-protocol", """\
        interfaces:
        - name: eth1.10
          type: vlan
          vlan:
            base-iface: eth1
            id: 10
            registration-protocol: stp
        """, 7, "interfaces[0].vlan.registration-protocol", "expected one of: gvrp, mvrp, none"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c.id for c in BROKEN])
def test_broken_interfaces_and_routes(case: Broken, state_dir: StateDir) -> None:
    case.write(state_dir)
    issues = issues_of(state_dir)
    assert any(case.matches(i, state_dir) for i in issues), shown(issues)
    assert len(issues) == case.count, shown(issues)
    assert all(i.message for i in issues)


def test_catalogue_is_large_and_distinct() -> None:
    assert len(BROKEN) >= 30
    assert len({c.id for c in BROKEN}) == len(BROKEN)
    assert len({c.files for c in BROKEN}) == len(BROKEN)


# --------------------------------------------------------------------------- alias bombs


def _bomb(prefix: str, indent: str, key: str) -> str:
    """Nine references per level, 20 levels: 9**20 leaves if anything expanded it."""
    lines = [prefix, f"{indent}{key.format(0)} &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for n in range(1, 20):
        lines.append(f"{indent}{key.format(n)} &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", [
    _bomb("interfaces:", "", "-"),
    _bomb("sysctl:", "  ", "net.k{}:"),
    _bomb("firewall:\n  filter:\n    FORWARD:\n      rules:", "      ", "-"),
], ids=["interfaces", "sysctl", "rules"])
def test_alias_bomb_is_rejected_without_expanding(state_dir: StateDir, text: str) -> None:
    state_dir.write("10-bomb.yaml", text)
    issues = issues_of(state_dir)
    assert len(issues) == 1, shown(issues)
    assert issues[0].line > 1 and "aliases expand this to more than 500,000 nodes" in issues[0].message


def _alias_flood(n: int) -> str:
    """Issue 11: one interface, then n aliases of it (each one would be "defined twice")."""
    return "interfaces:\n- &a {name: br0, type: linux-bridge, state: up}\n" + "- *a\n" * n


@pytest.mark.timeout(60)
@pytest.mark.parametrize("n", [200_000, 1_000_000])
def test_a_flood_of_aliases_of_one_interface_is_refused_at_once_with_one_line(state_dir: StateDir, n: int) -> None:
    state_dir.write("10-flood.yaml", _alias_flood(n))
    issues = issues_of(state_dir)
    assert len(issues) == 1, shown(issues)[:2000]
    if n == 200_000:  # composed (cheap: references), then refused for what they expand to
        assert issues[0].line == 2 and "the node at line 2 is referenced" in issues[0].message
    else:  # more aliases than a document may have nodes: refused before composing
        assert issues[0].line == 500_002 and "aliases and tags counted" in issues[0].message
    assert len(str(issues[0])) < 500


def test_a_recursive_alias_is_refused(state_dir: StateDir) -> None:
    state_dir.write("10-loop.yaml", "interfaces: &a\n- *a\n")
    issues = issues_of(state_dir)
    assert len(issues) == 1 and "recursive" in issues[0].message, shown(issues)


@pytest.mark.timeout(60)
def test_a_document_over_the_node_budget_is_refused_where_it_runs_out(state_dir: StateDir) -> None:
    # 8 MiB of one-word list items: 2 million nodes, no aliases at all
    state_dir.write("10-big.yaml", "interfaces:\n" + "- a\n" * (2 * 1024 * 1024 - 4))
    issues = issues_of(state_dir)
    assert len(issues) == 1, shown(issues)[:2000]
    assert "more than 500,000 YAML nodes" in issues[0].message
    assert 499_990 < issues[0].line < 500_010  # one node per item, plus the mapping and its key


def test_explicit_tags_are_charged_to_the_budget(state_dir: StateDir) -> None:
    state_dir.write("10-tags.yaml", "interfaces:\n" + "- !!str a\n" * 500_001)
    issues = issues_of(state_dir)
    assert len(issues) == 1 and "YAML nodes" in issues[0].message, shown(issues)[:2000]


def test_issues_are_capped_per_check_and_per_run(make_state_dir: Callable[[], StateDir]) -> None:
    dup = "interfaces:\n" + "".join(f"- {{name: br{i % 10}, type: linux-bridge}}\n" for i in range(2_000))
    bad = "interfaces:\n" + "".join(f"- {{name: bx{i}, type: linux-bridge, mtu: 1}}\n" for i in range(2_000))
    only_dup = make_state_dir()
    only_dup.write("10-dup.yaml", dup)
    issues = issues_of(only_dup)
    assert len(issues) == 51, len(issues)  # MAX_ISSUES_PER_CHECK, then how many more
    assert "... and 1,940 more interfaces defined twice (only the first 50 are listed)" in issues[-1].message
    many = make_state_dir()
    many.write("10-dup.yaml", dup)
    many.write("20-bad.yaml", bad)
    many.write("30-bad.yaml", bad.replace("bx", "by"))
    issues = issues_of(many)
    assert len(issues) == 301, len(issues)  # MAX_ISSUES_PER_RUN, then how many more
    assert "more issues in the state files (only the first 300 are listed)" in issues[-1].message


@pytest.mark.timeout(60)
def test_aliases_of_valid_values_are_fine(state_dir: StateDir) -> None:
    state_dir.write("10-a.yaml", """\
        interfaces:
        - {name: eth1, type: ethernet, mtu: &jumbo 9000}
        - {name: br0, type: linux-bridge, mtu: *jumbo}
        """)
    state = load_state_dir(str(state_dir))
    assert [i.mtu for i in state.interfaces] == [9000, 9000]


# --------------------------------------------------------------------------- examples, order, merging


@pytest.mark.parametrize("directory", ["vnetd.d", "examples/gateway", "examples/dmz-guest", "examples/modern-host"])
def test_bundled_examples_load(directory: str, state_dir: StateDir) -> None:
    state_dir.copy_from(EXAMPLES / directory)
    state = load_state_dir(str(state_dir))
    assert state.files == tuple(str(state_dir.path / f.name) for f in sorted((EXAMPLES / directory).glob("*.yaml")))
    if directory == "vnetd.d":
        assert [i.name for i in state.interfaces] == ["eth1", "br0", "brdmz"]
        br0 = state.interfaces[1]
        assert br0.type is IfType.BRIDGE and br0.mtu == 9000 and br0.bridge is not None
        assert br0.bridge.ports == ("eth1",) and br0.bridge.stp.forward_delay == 0
        assert [str(a) for a in br0.ipv4.addresses] == ["192.168.10.212/24"]  # type: ignore[union-attr]
        assert [(s.key, s.value) for s in state.sysctls] == [("net.bridge.bridge-nf-call-iptables", "1")]
        assert [(c.table, c.name, [r.text for r in c.rules]) for c in state.chains] == [
            ("filter", "FORWARD", ["-m physdev --physdev-is-bridged -j ACCEPT"])]
        assert state.libvirt is not None and state.libvirt.reattach
        assert [n.name for n in state.libvirt.networks] == ["default"]
    elif directory == "examples/gateway":
        assert [i.name for i in state.interfaces] == ["eth0", "eth1"]
        assert state.interfaces[0].ipv4 is not None and state.interfaces[0].ipv4.dhcp  # the DHCP client's
        assert {(c.table, c.name) for c in state.chains} == {("nat", "POSTROUTING"), ("filter", "INPUT"),
                                                              ("filter", "FORWARD")}
        assert [(s.key, s.value) for s in state.sysctls] == [("net.ipv4.ip_forward", "1")]
    elif directory == "examples/dmz-guest":
        assert [str(r.destination) for r in state.routes] == ["0.0.0.0/0"]
        assert str(state.routes[0].next_hop_address) == "10.0.0.10"
    else:  # bond0 over two NICs found by MAC, VLAN 100 and 200 bridges, IPv6 on br100, a second table
        by_name = {i.name: i for i in state.interfaces}
        assert [n for n, i in by_name.items() if i.match_mac] == ["eno1", "eno2"]
        bond0 = by_name["bond0"]
        assert bond0.type is IfType.BOND and bond0.bond is not None and bond0.bond.ports == ("eno1", "eno2")
        assert (by_name["bond0.100"].vlan_base, by_name["bond0.200"].vlan_id) == ("bond0", 200)
        br100 = by_name["br100"]
        assert br100.ipv6 is not None and [str(a) for a in br100.ipv6.addresses or ()] == ["2001:db8:100::10/64"]
        assert {(r.family, r.table_id) for r in state.route_rules} == {(4, 100), (6, 100)}
        assert {(str(r.destination), r.table_id) for r in state.routes} == {("0.0.0.0/0", 254), ("0.0.0.0/0", 100),
                                                                            ("::/0", 100)}


def test_drop_ins_are_read_in_lexical_order(state_dir: StateDir) -> None:
    for name, iface in (("20-b.yaml", "dummy20"), ("9-c.yaml", "dummy9"), ("10-a.yaml", "dummy10"),
                        ("10-a.yml", "dummy10y"), ("A.yaml", "dummyA")):
        state_dir.write(name, f"interfaces:\n- {{name: {iface}, type: dummy}}\n")
    state = load_state_dir(str(state_dir))
    assert [Path(f).name for f in state.files] == ["10-a.yaml", "10-a.yml", "20-b.yaml", "9-c.yaml", "A.yaml"]
    assert [i.name for i in state.interfaces] == ["dummy10", "dummy10y", "dummy20", "dummy9", "dummyA"]


LEFTOVERS = ["10-a.yaml~", "10-a.yaml.swp", ".10-a.yaml.swp", "10-a.yaml.tmp", "10-a.yaml.rpmnew",
             "10-a.yaml.rpmsave", "10-a.yaml.dpkg-old", "10-a.yaml.dpkg-new", "10-a.yaml.dpkg-dist",
             "10-a.dpkg-new.yaml", "#10-a.yaml#", ".#10-a.yaml", ".hidden.yaml", "10-a.yaml.bak",
             "10-a.yaml.orig", "x.tmp", "x~"]
NOT_YAML = ["README", "10-a.json", "10-a.conf", "10-a.yaml.txt", "yaml", "10-a.YAML.disabled"]


@pytest.mark.parametrize("name", LEFTOVERS + NOT_YAML)
def test_is_state_file_skips_leftovers_and_other_files(name: str) -> None:
    assert not is_state_file(name)


@pytest.mark.parametrize("name", ["10-a.yaml", "10-a.yml", "a.b.yaml", "x~y.yaml"])
def test_is_state_file_takes_yaml_drop_ins(name: str) -> None:
    assert is_state_file(name)


def test_leftovers_hidden_and_other_files_are_not_read(state_dir: StateDir) -> None:
    state_dir.write("10-a.yaml", ETH1)
    for name in LEFTOVERS + NOT_YAML:
        state_dir.write(name, "interfaces: [ this is not even YAML\n", mode=0o666)  # insecure too: never opened
    state = load_state_dir(str(state_dir))
    assert state.files == (str(state_dir.path / "10-a.yaml"),)
    assert [i.name for i in state.interfaces] == ["eth1"]


def test_files_are_merged(state_dir: StateDir) -> None:
    state_dir.write("10-links.yaml", """\
        interfaces:
        - name: eth1
          type: ethernet
          mtu: 9000
        """)
    state_dir.write("20-bridge.yaml", """\
        interfaces:
        - name: br0
          type: linux-bridge
          bridge:
            port: [{name: eth1}]
        routes:
          config:
          - destination: 198.51.100.0/24
            next-hop-address: 192.0.2.1
        """)
    state_dir.write("30-sysctl.yaml", "sysctl:\n  net.ipv4.ip_forward: 1\n")
    state_dir.write("40-firewall.yaml", """\
        firewall:
          filter:
            FORWARD:
              rules: [-i br0 -j ACCEPT]
          nat:
            POSTROUTING:
              rules: [-o eth1 -j MASQUERADE]
        """)
    state_dir.write("50-libvirt.yaml", "libvirt:\n  networks:\n  - name: default\n")
    state_dir.write("60-more-routes.yaml", """\
        routes:
          config:
          - destination: 203.0.113.0/24
            next-hop-interface: br0
        """)
    state = load_state_dir(str(state_dir))
    assert [i.name for i in state.interfaces] == ["eth1", "br0"]
    assert [str(r.destination) for r in state.routes] == ["198.51.100.0/24", "203.0.113.0/24"]
    assert [s.key for s in state.sysctls] == ["net.ipv4.ip_forward"]
    assert [(c.table, c.name) for c in state.chains] == [("filter", "FORWARD"), ("nat", "POSTROUTING")]
    assert state.libvirt is not None and [n.name for n in state.libvirt.networks] == ["default"]
    origins = {i.name: i.origin for i in state.interfaces}
    assert str(origins["br0"]) == f"{state_dir.path / '20-bridge.yaml'}:2"


# --------------------------------------------------------------------------- duplicates across files


DUPLICATES = {
    # kind: (first file, second file, first line, second line, message start)
    "interface": (ETH1, "\n" + ETH1, 2, 3, "interface 'eth1' is defined twice"),
    "sysctl key": ("sysctl:\n  net.ipv4.ip_forward: 1\n", "sysctl:\n  net.ipv4.conf.all.rp_filter: 1\n"
                   "  net/ipv4/ip_forward: 0\n", 2, 3, "sysctl key 'net.ipv4.ip_forward' is defined twice"),
    "libvirt network": ("libvirt:\n  networks:\n  - name: default\n",
                        "libvirt:\n  networks:\n  - name: isolated\n  - name: default\n    state: inactive\n",
                        3, 4, "libvirt network 'default' is defined twice"),
    "route": ("routes:\n  config:\n  - destination: 198.51.100.0/24\n    next-hop-address: 192.0.2.1\n",
              "# again\nroutes:\n  config:\n  - destination: 198.51.100.0/24\n    next-hop-address: 192.0.2.1\n",
              3, 4, "route '198.51.100.0/24 table 254 metric 0' is defined twice"),
}


@pytest.mark.parametrize("kind", list(DUPLICATES))
def test_duplicate_across_files_names_both_places(kind: str, state_dir: StateDir) -> None:
    first, second, line1, line2, says = DUPLICATES[kind]
    state_dir.write("10-a.yaml", first)
    state_dir.write("20-b.yaml", second)
    issues = issues_of(state_dir)
    assert len(issues) == 1, shown(issues)
    a, b = state_dir.path / "10-a.yaml", state_dir.path / "20-b.yaml"
    assert str(issues[0]) == f"{b}:{line2}: {says}: at {a}:{line1} and at {b}:{line2}"


# --------------------------------------------------------------------------- every error of a run


def test_every_error_of_every_file_is_reported(state_dir: StateDir) -> None:
    state_dir.write("10-three.yaml", """\
        interfaces:
        - name: eth1
          type: ethernet
          mtu: 50
          mac-address: zz:zz
        - name: abcdefghijklmnopq
          type: dummy
        """)
    state_dir.write("20-two.yaml", """\
        sysctl:
          kernel.panic: 1
        routes:
          config:
          - destination: 198.51.100.1/24
            next-hop-address: 192.0.2.1
        """)
    state_dir.write("30-fine.yaml", "interfaces:\n- {name: eth2, type: ethernet}\n")
    state_dir.write("40-insecure.yaml", ETH1, mode=0o664)
    issues = issues_of(state_dir)
    three, two, insecure = (str(state_dir.path / n) for n in ("10-three.yaml", "20-two.yaml", "40-insecure.yaml"))
    assert [(i.file, i.line, i.path) for i in issues] == [
        (insecure, 0, ""),  # read problems come first, then each file in order
        (three, 4, "interfaces[0].mtu"),
        (three, 5, "interfaces[0].mac-address"),
        (three, 6, "interfaces[1].name"),
        (two, 2, "sysctl[kernel.panic]"),
        (two, 5, "routes.config[0].destination"),
    ], shown(issues)


def test_a_file_with_three_problems_yields_three_issues(state_dir: StateDir) -> None:
    state_dir.write("10-a.yaml", """\
        interfaces:
        - name: br0
          type: linux-bridge
          mtu: 50
          state: sideways
          bridge:
            options:
              stp: {enabled: true, forward-delay: 1}
        """)
    issues = issues_of(state_dir)
    assert [(i.line, i.path) for i in issues] == [
        (5, "interfaces[0].state"), (4, "interfaces[0].mtu"), (8, "interfaces[0].bridge.options.stp.forward-delay"),
    ], shown(issues)


def test_issues_per_file_are_capped_with_a_summary(state_dir: StateDir) -> None:
    bad_names = "".join(f"- {{name: 'bad name {n}', type: dummy}}\n" for n in range(MAX_ISSUES_PER_FILE + 50))
    state_dir.write("10-a.yaml", "interfaces:\n" + bad_names)
    issues = issues_of(state_dir)
    assert len(issues) == MAX_ISSUES_PER_FILE + 1
    assert issues[-1].message == "... and 50 more issues"


def test_the_error_names_file_line_path_and_what_is_valid(state_dir: StateDir) -> None:
    state_dir.write("10-a.yaml", "interfaces:\n- name: eth1\n  type: ethernet\n- name: br0\n"
                                 "  type: linux-bridge\n  mtu: 50\n")
    (issue,) = issues_of(state_dir)
    assert str(issue) == (f"{state_dir.path / '10-a.yaml'}:6: interfaces[1].mtu: "
                          "50 is out of range; expected an integer 68-65535")


# --------------------------------------------------------------------------- security of the directory


#: a state directory of someone else's: only root can make one (chown)
OTHER_OWNER = pytest.mark.root("chowns a state file to another user")


@pytest.mark.parametrize(("mode", "owner", "problem"), [
    (0o775, None, "writable by group (mode 0775)"),
    (0o757, None, "writable by others (mode 0757)"),
    (0o777, None, "writable by group and others (mode 0777)"),
    pytest.param(0o755, 65534, "owned by uid 65534, not root", marks=OTHER_OWNER),
], ids=["group-writable", "world-writable", "both", "other-owner"])
def test_insecure_directory_is_refused(state_dir: StateDir, mode: int, owner: int | None, problem: str) -> None:
    state_dir.write("10-a.yaml", ETH1)
    os.chmod(state_dir.path, mode)
    if owner is not None:
        os.chown(state_dir.path, owner, -1)
    (issue,) = issues_of(state_dir)
    d = state_dir.path
    assert str(issue) == (f"{d}: refusing an insecure state directory: {problem}; "
                          f"fix with: chown root:root {d} && chmod go-w {d}")


@pytest.mark.parametrize(("mode", "owner", "problem"), [
    (0o664, None, "writable by group (mode 0664)"),
    (0o646, None, "writable by others (mode 0646)"),
    pytest.param(0o644, 65534, "owned by uid 65534, not root", marks=OTHER_OWNER),
], ids=["group-writable", "world-writable", "other-owner"])
def test_insecure_file_is_refused(state_dir: StateDir, mode: int, owner: int | None, problem: str) -> None:
    state_dir.write("10-a.yaml", ETH1)
    path = state_dir.write("20-b.yaml", "interfaces:\n- {name: eth2, type: ethernet}\n", mode=mode)
    if owner is not None:
        os.chown(path, owner, -1)
    (issue,) = issues_of(state_dir)
    assert str(issue) == (f"{path}: refusing an insecure state file: {problem}; "
                          f"fix with: chown root:root {path} && chmod go-w {path}")


def test_checks_can_be_disabled_for_tools(state_dir: StateDir) -> None:
    state_dir.write("10-a.yaml", ETH1, mode=0o666)
    os.chmod(state_dir.path, 0o777)
    state = load_state_dir(str(state_dir), require_root=False)
    assert [i.name for i in state.interfaces] == ["eth1"]


def test_symlink_out_of_the_directory_is_refused(state_dir: StateDir, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(ETH1)
    os.chmod(outside, 0o644)
    (state_dir.path / "10-a.yaml").symlink_to(outside)
    (state_dir.path / "20-b.yaml").symlink_to("../elsewhere.yaml")
    (state_dir.path / "30-c.yaml").symlink_to("/etc/passwd")
    issues = issues_of(state_dir)
    refused = "outside the state directory; refusing to follow it"
    assert [str(i) for i in issues] == [
        f"{state_dir.path / '10-a.yaml'}: is a symlink to {outside}, {refused}",
        f"{state_dir.path / '20-b.yaml'}: is a symlink to {outside}, {refused}",
        f"{state_dir.path / '30-c.yaml'}: is a symlink to /etc/passwd, {refused}",
    ]


def test_symlink_inside_the_directory_is_followed(state_dir: StateDir) -> None:
    state_dir.write(".eth1.real", ETH1)
    state_dir.write(".eth2.real", "interfaces:\n- {name: eth2, type: ethernet}\n")
    (state_dir.path / "10-a.yaml").symlink_to(".eth1.real")  # relative
    (state_dir.path / "20-b.yaml").symlink_to(state_dir.path / ".eth2.real")  # absolute
    state = load_state_dir(str(state_dir))
    assert [i.name for i in state.interfaces] == ["eth1", "eth2"]
    assert state.files == (str(state_dir.path / "10-a.yaml"), str(state_dir.path / "20-b.yaml"))


def test_symlink_to_an_insecure_file_is_refused(state_dir: StateDir) -> None:
    state_dir.write(".real", ETH1, mode=0o666)
    (state_dir.path / "10-a.yaml").symlink_to(".real")
    (issue,) = issues_of(state_dir)
    assert "refusing an insecure state file: writable by group and others (mode 0666)" in issue.message


def test_dangling_symlink_is_an_error(state_dir: StateDir) -> None:
    (state_dir.path / "10-a.yaml").symlink_to("gone.yaml")
    (issue,) = issues_of(state_dir)
    assert str(issue) == f"{state_dir.path / '10-a.yaml'}: is a symlink to {state_dir.path / 'gone.yaml'}, " \
                         "which does not exist"


def test_missing_directory_and_plain_file(tmp_path: Path) -> None:
    (issue,) = issues_of(tmp_path / "nowhere")
    assert str(issue) == f"{tmp_path / 'nowhere'}: state directory does not exist"
    plain = tmp_path / "plain"
    plain.write_text("")
    (issue,) = issues_of(plain)
    assert str(issue) == f"{plain}: is not a directory"


@pytest.mark.timeout(60)
def test_directory_and_fifo_named_yaml_are_not_read(state_dir: StateDir) -> None:
    (state_dir.path / "10-dir.yaml").mkdir()
    os.mkfifo(state_dir.path / "20-fifo.yaml")  # must not block the reader
    issues = issues_of(state_dir)
    assert [str(i) for i in issues] == [f"{state_dir.path / '10-dir.yaml'}: is not a regular file",
                                       f"{state_dir.path / '20-fifo.yaml'}: is not a regular file"]


# --------------------------------------------------------------------------- contents that are not YAML text


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n# nothing yet\n", "~\n",
                                  "interfaces:\nroutes:\n", "interfaces: []\nfirewall: {}\nsysctl: {}\n"],
                         ids=["empty", "blank", "comment", "document-marker", "null", "null-sections",
                              "empty-sections"])
def test_empty_files_declare_nothing(state_dir: StateDir, text: str) -> None:
    state_dir.write("10-a.yaml", text)
    state = load_state_dir(str(state_dir))
    assert state.files == (str(state_dir.path / "10-a.yaml"),)
    assert not (state.interfaces or state.routes or state.sysctls or state.chains or state.libvirt)


def write_bytes(state: StateDir, name: str, data: bytes) -> Path:
    path = state.path / name
    path.write_bytes(data)
    os.chmod(path, 0o644)
    return path


@pytest.mark.parametrize("data", [
    b"interfaces:\n- name: eth1\0\n",
    bytes(range(256)) * 4,
    b"\x7fELF\x02\x01\x01\x00" + bytes(64),
    "interfaces:\n".encode("utf-16"),
], ids=["nul-byte", "all-bytes", "elf", "utf-16"])
def test_binary_files_are_refused(state_dir: StateDir, data: bytes) -> None:
    path = write_bytes(state_dir, "10-a.yaml", data)
    (issue,) = issues_of(state_dir)
    assert str(issue) == f"{path}: is binary (contains NUL bytes), not a YAML text file"


def test_non_utf8_text_is_refused_with_its_line(state_dir: StateDir) -> None:
    path = write_bytes(state_dir, "10-a.yaml", "interfaces:\n- name: eth1\n  description: caf\u00e9\n"
                       .encode("latin-1"))
    (issue,) = issues_of(state_dir)
    assert str(issue) == f"{path}:3: is not UTF-8 text (byte 43)"


def test_control_characters_are_a_yaml_error(state_dir: StateDir) -> None:
    path = write_bytes(state_dir, "10-a.yaml", b"interfaces:\n- name: \x01\x02\x1b[31m\n")
    (issue,) = issues_of(state_dir)
    assert str(issue) == f"{path}:2: YAML syntax error: character U+0001 is not allowed in YAML text"


def test_utf8_bom_and_crlf_are_accepted(state_dir: StateDir) -> None:
    write_bytes(state_dir, "10-a.yaml", "\ufeffinterfaces:\r\n- name: eth1\r\n  type: ethernet\r\n".encode())
    state = load_state_dir(str(state_dir))
    assert [i.name for i in state.interfaces] == ["eth1"]


def test_unicode_in_a_name_is_refused(state_dir: StateDir) -> None:
    state_dir.write("10-a.yaml", "interfaces:\n- name: \u00e9th1\n  type: ethernet\n")
    (issue,) = issues_of(state_dir)
    assert issue.path == "interfaces[0].name" and "non-ASCII are not allowed" in issue.message


def test_python_tags_construct_nothing(state_dir: StateDir, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state_dir.write("10-a.yaml", f"""\
        interfaces: !!python/object/apply:os.system ['touch {marker}']
        sysctl: !!python/object/apply:os.system ['touch {marker}']
        """)
    issues = issues_of(state_dir)
    assert not marker.exists()
    assert [(i.line, i.path) for i in issues] == [(1, ""), (2, ""), (1, "interfaces[0]"), (2, "sysctl")], shown(issues)
    assert "explicit YAML tags (tag:yaml.org,2002:python/object/apply:os.system) are not allowed" in issues[0].message


def test_load_sources_takes_already_read_files() -> None:
    sources = [SourceFile("/virtual/10-a.yaml", textwrap.dedent(ETH1)),
               SourceFile("/virtual/20-b.yaml", "interfaces:\n- {name: eth1, type: ethernet, state: down}\n")]
    with pytest.raises(ConfigError) as info:
        load_sources(sources)
    assert str(info.value) == ("/virtual/20-b.yaml:2: interface 'eth1' is defined twice: "
                               "at /virtual/10-a.yaml:2 and at /virtual/20-b.yaml:2")
    state = load_sources(sources[1:])
    assert state.interfaces[0].state is AdminState.DOWN


def test_huge_numbers_in_the_new_sections_are_errors_not_crashes(state_dir: StateDir) -> None:
    digits = "9" * 5000
    state_dir.write("10-a.yaml", f"""\
        route-rules:
          config:
          - {{family: ipv4, fwmark: {digits}, route-table: 100}}
          - {{family: ipv4, fwmark: "0x{'f' * 5000}", route-table: 100}}
        interfaces:
        - name: bond0
          type: bond
          link-aggregation:
            mode: {digits}
            options: {{miimon: {digits}, arp_validate: {digits}}}
        """)
    issues = issues_of(state_dir)
    assert [i.path for i in issues] == ["route-rules.config[0].fwmark", "route-rules.config[1].fwmark",
                                        "interfaces[0].link-aggregation.mode",
                                        "interfaces[0].link-aggregation.options.miimon",
                                        "interfaces[0].link-aggregation.options.arp_validate"], shown(issues)


@OTHER_OWNER
def test_a_parent_directory_of_someone_else_is_refused(tmp_path: Path) -> None:
    """StrictModes on the ancestors: a directory above the state directory owned by
    another user (who could swap the state directory for one of theirs) is refused."""
    parent = tmp_path / "theirs"
    parent.mkdir(mode=0o755)
    state_dir = StateDir(parent / "vnetd.d")
    state_dir.write("10-a.yaml", ETH1)
    os.chown(parent, 65534, -1)
    (issue,) = issues_of(state_dir)
    assert f"{parent} is owned by uid 65534, not root;" in issue.message


def test_parents_owned_by_the_user_running_vnetd_are_accepted(state_dir: StateDir) -> None:
    """As sshd's StrictModes, the user's own directories are trusted: as root that
    means root's (the daemon), as an unprivileged user checking a copy of their
    files their own (the whole unit suite runs as nobody, see tests/e2e)."""
    state_dir.write("10-a.yaml", ETH1)
    assert [i.name for i in load_state_dir(str(state_dir)).interfaces] == ["eth1"]


@pytest.mark.parametrize(("text", "says"), [
    ('firewall:\n  filter:\n    "VNETX\\n":\n      rules: [-j ACCEPT]\n', "is not a valid chain name"),
    ('sysctl:\n  "net.ipv4.conf.lo\\n.rp_filter": 1\n', "has an invalid component"),
    ('interfaces:\n- name: br0\n  type: linux-bridge\n  mac-address: "52:54:00:12:34:56\\n"\n', "52:54:00:12:34:56"),
    ('libvirt:\n  networks:\n  - name: "default\\n"\n', "default"),
], ids=["chain", "sysctl-key", "mac", "libvirt-network"])
def test_a_trailing_newline_does_not_pass_a_name_check(state_dir: StateDir, text: str, says: str) -> None:
    """Python's ``$`` also matches before a final newline: every validating pattern
    anchors with ``\\Z``, so ``"INPUT\\n"`` is not a chain name and so on."""
    state_dir.write("10-a.yaml", text)
    issues = issues_of(state_dir)
    assert any(says in i.message for i in issues), shown(issues)


def test_no_validating_pattern_ends_in_a_dollar() -> None:
    """The habit behind the test above, for patterns written later."""
    import re as _re
    offenders = []
    for path in (ROOT / "vnetd").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _re.search(r"re\.(compile|match|fullmatch|search)\(r?[\"'].*\$[\"']", line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == [], "anchor with \\Z, not $ (which matches before a trailing newline):\n" + "\n".join(offenders)


def test_a_key_with_a_newline_is_shown_escaped_on_one_line(state_dir: StateDir) -> None:
    """An error names the key as written, escaped: it cannot fake a second error line."""
    state_dir.write("10-a.yaml", 'firewall:\n  filter:\n    "VNETX\\nerror: forged":\n      rules: [-j ACCEPT]\n')
    (issue,) = issues_of(state_dir)
    assert "\n" not in str(issue) and "firewall.filter[VNETX\\nerror: forged]" in str(issue), str(issue)
