# SPDX-License-Identifier: MIT
"""The state files' schema as data: every section, key, type, allowed value and range.

The loader reads its allowed keys, choices and ranges from these tables (a
``MapView`` built with a ``Table`` checks keys against it, and ``choice``/``integer``
without explicit values take them from it), and ``vnetd.reference`` writes
docs/SCHEMA.md and the vnetd.d(5) man page from the very same tables, so the
reference cannot say something the loader does not do. Keys are listed in the
order the loader's messages name them.

A field is ``nmstate`` when nmstate's schema has it with the same meaning (a
state file using only those is also an nmstate file), ``vnetd`` when it is
vnetd's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from vnetd.model.bond import MODES, OPTIONS, BondOption
from vnetd.model.firewall import BACKEND_CHOICES, POLICIES, TABLES, ChainMode
from vnetd.model.health import DEFAULT_TIMEOUT, MAX_TIMEOUT
from vnetd.model.interfaces import VLAN_REGISTRATION, AdminState, IfType, VlanProtocol
from vnetd.model.libvirt import DEFAULT_URI, NetworkState
from vnetd.model.route_rules import RuleAction


class Kind(StrEnum):
    """What a key's value is."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    CHOICE = "choice"
    LIST = "list"
    MAPPING = "mapping"


NMSTATE = "nmstate"
VNETD = "vnetd"


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a mapping."""

    key: str
    kind: Kind
    description: str
    origin: str = NMSTATE
    #: the allowed values of a CHOICE, in the order error messages list them
    values: tuple[str, ...] = ()
    #: inclusive bounds of an INTEGER (or NUMBER)
    range: tuple[float, float] | None = None
    #: appended to the range in messages (" seconds")
    unit: str = ""
    #: the mapping under this key (MAPPING), or the mapping each list item is (LIST)
    table: Table | None = None
    #: what a LIST's items are when they are not mappings, or may also be written as
    item: str = ""
    default: str = ""
    required: bool = False
    example: str = ""

    @property
    def type_text(self) -> str:
        """The type as the reference shows it."""
        if self.kind is Kind.CHOICE:
            return "one of: " + ", ".join(self.values)
        if self.kind in (Kind.INTEGER, Kind.NUMBER) and self.range is not None:
            lo, hi = (str(int(v)) if v == int(v) else f"{v:g}" for v in self.range)
            return f"{self.kind.value} {lo}-{hi}{self.unit}"
        if self.kind is Kind.LIST:
            parts = [f"{self.table.title}" if self.table is not None else "", self.item]
            return "list of " + " or ".join(p for p in parts if p)
        if self.kind is Kind.MAPPING and self.table is not None:
            return f"mapping ({self.table.title})"
        return self.kind.value


@dataclass(frozen=True, slots=True)
class FreeKey:
    """A mapping whose keys are names the file chooses (chains, sysctl keys)."""

    placeholder: str  # CHAIN, KEY
    description: str
    table: Table | None = None  # the mapping under each such key
    kind: Kind = Kind.MAPPING


@dataclass(frozen=True, slots=True)
class Table:
    """The keys one mapping of a state file may have."""

    name: str  # stable identifier (the reference's anchors)
    path: str  # where it sits in a file: interfaces[], routes.config[]
    title: str  # a short noun phrase: "an interface"
    description: str
    fields: tuple[Field, ...] = ()
    free: FreeKey | None = None

    @property
    def keys(self) -> tuple[str, ...] | None:
        """The allowed keys (None: any key, for a free-key mapping)."""
        if self.free is not None:
            return None
        return tuple(f.key for f in self.fields)

    def field(self, key: str) -> Field:
        for f in self.fields:
            if f.key == key:
                return f
        raise KeyError(f"{key!r} is not a key of {self.name}")

    def values(self, key: str) -> tuple[str, ...]:
        return self.field(key).values

    def int_range(self, key: str) -> tuple[int, int, str]:
        f = self.field(key)
        assert f.range is not None, f"{self.name}.{key} has no range"
        return int(f.range[0]), int(f.range[1]), f.unit


def _values(enum: type[StrEnum]) -> tuple[str, ...]:
    return tuple(str(member.value) for member in enum)


# --------------------------------------------------------------------------- interfaces

#: nmstate's settings of its DHCP client, refused (vnetd runs none; the host's client does)
DHCP_CLIENT_KEYS: tuple[tuple[str, Kind], ...] = (
    ("auto-dns", Kind.BOOLEAN), ("auto-gateway", Kind.BOOLEAN), ("auto-routes", Kind.BOOLEAN),
    ("auto-route-table-id", Kind.INTEGER), ("auto-route-metric", Kind.INTEGER), ("dhcp-client-id", Kind.STRING),
    ("dhcp-duid", Kind.STRING), ("dhcp-send-hostname", Kind.BOOLEAN), ("dhcp-custom-hostname", Kind.STRING),
)

ADDRESS = Table(
    "address", "interfaces[].ipv4.address[]", "an address",
    "One static address. The CIDR shorthand `192.0.2.1/24` (a string instead of the mapping) "
    "is accepted too.",
    (
        Field("ip", Kind.STRING, "The address, without prefix.", required=True, example="192.0.2.1"),
        Field("prefix-length", Kind.INTEGER, "The prefix length: 0-32 for IPv4, 0-128 for IPv6.",
              range=(0, 128), required=True, example="24"),
    ),
)

IP = Table(
    "ip", "interfaces[].ipv4, interfaces[].ipv6", "ipv4 / ipv6",
    "The interface's static addresses of one family. Leave the section out to leave the "
    "link's addresses alone.",
    (
        Field("enabled", Kind.BOOLEAN, "false: the family has no address on this link (listed addresses "
              "are an error).", default="true", example="true"),
        Field("address", Kind.LIST, "The static addresses; addresses on the link that are not listed are "
              "removed (IPv6 link-local ones excepted).", table=ADDRESS,
              item="CIDR string", example="[192.0.2.1/24]"),
        Field("dhcp", Kind.BOOLEAN, "true: the host's DHCP client (dhclient, NetworkManager...) owns the "
              "family's addresses and default route; vnetd leaves them alone and adds only the listed "
              "addresses (plan says so).", default="false", example="true"),
        Field("autoconf", Kind.BOOLEAN, "IPv6 only. true: addresses and the default route from router "
              "advertisements (SLAAC) are the kernel's; vnetd leaves them alone.", default="false",
              example="true"),
        *(Field(key, kind, "nmstate's setting of its own DHCP client; refused: vnetd runs no DHCP client (with "
                "dhcp: true the host's client owns the addresses and default route).")
          for key, kind in DHCP_CLIENT_KEYS),
    ),
)

STP = Table(
    "stp", "interfaces[].bridge.options.stp", "bridge.options.stp",
    "The bridge's spanning tree settings; a key left out is left as the kernel has it.",
    (
        Field("enabled", Kind.BOOLEAN, "Spanning tree on or off.", example="false"),
        Field("forward-delay", Kind.INTEGER, "Forward delay (2-30 with STP enabled).", range=(0, 30),
              unit=" seconds", example="0"),
        Field("hello-time", Kind.INTEGER, "Hello time.", range=(1, 10), unit=" seconds", example="2"),
        Field("max-age", Kind.INTEGER, "Maximum message age.", range=(6, 40), unit=" seconds", example="20"),
        Field("priority", Kind.INTEGER, "Bridge priority.", range=(0, 65535), example="32768"),
    ),
)

BRIDGE_OPTIONS = Table(
    "bridge-options", "interfaces[].bridge.options", "bridge.options", "Options of a linux-bridge.",
    (Field("stp", Kind.MAPPING, "Spanning tree settings.", table=STP),),
)

PORT = Table(
    "port", "interfaces[].bridge.port[]", "a bridge port",
    "A port of the bridge; the plain name (`- eth1`) is accepted too.",
    (Field("name", Kind.STRING, "The port's interface name.", required=True, example="eth1"),),
)

BRIDGE = Table(
    "bridge", "interfaces[].bridge", "bridge",
    "Settings of a `type: linux-bridge` interface.",
    (
        Field("options", Kind.MAPPING, "Bridge options.", table=BRIDGE_OPTIONS),
        Field("port", Kind.LIST, "The bridge's ports. Listed ports are kept on the bridge; ports that are "
              "not listed (guests' taps) are left alone.", table=PORT, item="interface name",
              example="[{name: eth1}]"),
    ),
)

VETH = Table(
    "veth", "interfaces[].veth", "veth", "Settings of a `type: veth` interface.",
    (Field("peer", Kind.STRING, "The other end's name; both ends are created together.", required=True,
           example="veth1"),),
)

VLAN = Table(
    "vlan", "interfaces[].vlan", "vlan", "Settings of a `type: vlan` interface (required for that type).",
    (
        Field("base-iface", Kind.STRING, "The parent interface.", required=True, example="eth1"),
        Field("id", Kind.INTEGER, "The VLAN id; it cannot change once the VLAN exists.", range=(1, 4094),
              required=True, example="100"),
        Field("protocol", Kind.CHOICE, "The VLAN protocol; it cannot change once the VLAN exists.",
              values=_values(VlanProtocol), default="802.1q"),
        Field("reorder-headers", Kind.BOOLEAN, "The VLAN flag reorder_hdr (the kernel's default: on).",
              example="true"),
        Field("loose-binding", Kind.BOOLEAN, "The VLAN flag loose_binding: the VLAN's state does not follow "
              "its parent's.", example="false"),
        Field("registration-protocol", Kind.CHOICE, "Register the VLAN with GVRP or MVRP, or neither.",
              values=VLAN_REGISTRATION, example="none"),
    ),
)

VXLAN = Table(
    "vxlan", "interfaces[].vxlan", "vxlan",
    "Settings of a `type: vxlan` interface (required for that type). remote and learning change on a "
    "live VXLAN; id, local, base-iface and destination-port are fixed once it exists (a difference is a "
    "problem plan reports).",
    (
        Field("id", Kind.INTEGER, "The VXLAN network identifier (VNI).", range=(0, 2**24 - 1), required=True,
              example="100"),
        Field("remote", Kind.STRING, "The peer's address (unicast), or a multicast group (needs base-iface).",
              example="192.0.2.12"),
        Field("local", Kind.STRING, "This host's tunnel address (unicast, same family as remote).",
              example="192.0.2.11"),
        Field("base-iface", Kind.STRING, "The underlay interface.", example="eth0"),
        Field("destination-port", Kind.INTEGER, "The UDP port of the peers (IANA's 4789 when left out; Linux's "
              "own default, 8472, only when written).", range=(1, 65535), default="4789", example="4789"),
        Field("learning", Kind.BOOLEAN, "Learn remote MAC addresses from the traffic.", example="true"),
    ),
)

BOND_PORT = Table(
    "bond-port", "interfaces[].link-aggregation.port[]", "a bond port",
    "A port of the bond; the plain name (`- eth1`) is accepted too.",
    (Field("name", Kind.STRING, "The port's interface name.", required=True, example="eth1"),),
)


def _bond_option(name: str, option: BondOption) -> Field:
    modes = f" Modes: {', '.join(sorted(option.modes))}." if option.modes is not None else ""
    if option.kind == "int":
        return Field(name, Kind.INTEGER, f"The bond option {name}.{modes}", range=(option.lo, option.hi))
    if option.kind == "bool":
        return Field(name, Kind.BOOLEAN, f"The bond option {name} (true/false or 1/0).{modes}")
    if option.kind == "enum":
        return Field(name, Kind.CHOICE, f"The bond option {name} (a name, or its number: the first is 0)."
                     f"{modes}", values=option.choices)
    if option.kind == "ip-list":
        return Field(name, Kind.LIST, f"The bond option {name}: up to 16 IPv4 addresses (a list, or "
                     f"\"a,b\").{modes}", item="IPv4 address")
    what = "a MAC address (quoted)" if option.kind == "mac" else "an interface name"
    return Field(name, Kind.STRING, f"The bond option {name}: {what}.{modes}")


BOND_OPTIONS = Table(
    "bond-options", "interfaces[].link-aggregation.options", "bond options",
    "Bond options by their sysfs names (as nmstate and BONDING_OPTS write them); an option the kernel "
    "refuses in the declared mode is an error naming the modes that take it.",
    tuple(_bond_option(name, option) for name, option in OPTIONS.items()),
)

BOND = Table(
    "link-aggregation", "interfaces[].link-aggregation", "link-aggregation",
    "Settings of a `type: bond` interface.",
    (
        Field("mode", Kind.CHOICE, "The bond mode, by name or number; the kernel changes it only on a bond "
              "that is down and has no ports (otherwise plan reports a problem).", values=tuple(MODES),
              default="balance-rr", example="active-backup"),
        Field("port", Kind.LIST, "The bond's ports (NICs): attached (a port that is up is taken down "
              "first, the bond brings it up); ports not listed are left alone.", table=BOND_PORT,
              item="interface name", example="[eth1, eth2]"),
        Field("ports", Kind.LIST, "The same as port (the name newer nmstate writes); write one of them.",
              table=BOND_PORT, item="interface name"),
        Field("options", Kind.MAPPING, "Bond options.", table=BOND_OPTIONS),
    ),
)

INTERFACE = Table(
    "interface", "interfaces[]", "an interface",
    "One link. vnetd creates and deletes virtual interfaces (linux-bridge, veth, vlan, bond, vxlan, dummy); "
    "NICs (ethernet) are configured, never created or deleted.",
    (
        Field("name", Kind.STRING, "The interface name: 1-15 characters, no '/', ':' or blanks.", required=True,
              example="br0"),
        Field("type", Kind.CHOICE, "The interface type (required unless state is absent).", values=_values(IfType),
              example="linux-bridge"),
        Field("state", Kind.CHOICE, "up, down, or absent (a virtual interface is deleted).",
              values=_values(AdminState), default="up", example="up"),
        Field("mtu", Kind.INTEGER, "The MTU (at least 1280 when IPv6 addresses are listed).", range=(68, 65535),
              example="9000"),
        Field("mac-address", Kind.STRING, "The MAC address (quoted: YAML reads some unquoted MACs as numbers); "
              "with identifier: mac-address, the MAC the NIC is found by.", example='"52:54:00:12:34:56"'),
        Field("identifier", Kind.CHOICE, "How a NIC is found: by its name, or by its MAC (mac-address), "
              "whatever the kernel named it.", values=("name", "mac-address"), default="name",
              example="mac-address"),
        Field("profile-name", Kind.STRING, "With identifier: mac-address, the name the files use for the "
              "NIC (in ports, base-iface, routes...); name is then only what it was called where the file "
              "was written.", example="uplink0"),
        Field("description", Kind.STRING, "Free text; accepted for nmstate compatibility, not applied."),
        Field("ipv4", Kind.MAPPING, "IPv4 addresses.", table=IP),
        Field("ipv6", Kind.MAPPING, "IPv6 addresses.", table=IP),
        Field("bridge", Kind.MAPPING, "Bridge settings (type: linux-bridge only).", table=BRIDGE),
        Field("link-aggregation", Kind.MAPPING, "Bond settings (type: bond only).", table=BOND),
        Field("veth", Kind.MAPPING, "Veth settings (type: veth only).", table=VETH),
        Field("vlan", Kind.MAPPING, "VLAN settings (type: vlan only).", table=VLAN),
        Field("vxlan", Kind.MAPPING, "VXLAN settings (type: vxlan only).", table=VXLAN),
    ),
)

# --------------------------------------------------------------------------- routes

ROUTE = Table(
    "route", "routes.config[]", "a route",
    "One static route (nmstate `routes.config`). Routes that are not declared are left alone; "
    "`state: absent` removes the routes it matches.",
    (
        Field("destination", Kind.STRING, "The destination network, without host bits.", required=True,
              example="0.0.0.0/0"),
        Field("next-hop-address", Kind.STRING, "The gateway (same family as the destination).",
              example="192.0.2.254"),
        Field("next-hop-interface", Kind.STRING, "The outgoing interface.", example="br0"),
        Field("metric", Kind.INTEGER, "The route's metric (priority).", range=(0, 2**32 - 1), example="100"),
        Field("table-id", Kind.INTEGER, "The routing table (254 is main; 253 and 255 are the kernel's).",
              range=(1, 2**32 - 1), default="254", example="100"),
        Field("state", Kind.CHOICE, "absent: remove the routes this entry matches.", values=("absent",)),
    ),
)

ROUTES = Table(
    "routes", "routes", "routes", "Static routes.",
    (Field("config", Kind.LIST, "The routes.", table=ROUTE),),
)

# --------------------------------------------------------------------------- route rules

ROUTE_RULE = Table(
    "route-rule", "route-rules.config[]", "a route rule",
    "One policy routing rule (nmstate `route-rules.config`). A rule names its family through an address "
    "or `family`. Rules that are not declared are left alone; `state: absent` removes the rules it matches "
    "(never the kernel's own three unless they are named).",
    (
        Field("ip-from", Kind.STRING, "The source address or network (an address means /32 or /128).",
              example="192.0.2.0/24"),
        Field("ip-to", Kind.STRING, "The destination address or network.", example="198.51.100.0/24"),
        Field("priority", Kind.INTEGER, "The rule's priority (-1: let the kernel choose).",
              range=(-1, 2**32 - 1), example="1000"),
        Field("route-table", Kind.INTEGER, "The routing table to look up (254 is main).", range=(0, 2**32 - 1),
              example="100"),
        Field("fwmark", Kind.INTEGER, "The firewall mark to match, decimal or 0x hex (a hex string too).",
              range=(0, 2**32 - 1), example="0x10"),
        Field("fwmask", Kind.INTEGER, "Which bits of the mark are compared (needs fwmark).",
              range=(0, 2**32 - 1), example="0xff"),
        Field("iif", Kind.STRING, "The incoming interface.", example="br-mgmt"),
        Field("action", Kind.CHOICE, "Instead of a table lookup: drop the packet (blackhole) or answer "
              "unreachable / prohibited.", values=_values(RuleAction)),
        Field("family", Kind.CHOICE, "The family, for a rule with neither ip-from nor ip-to.",
              values=("ipv4", "ipv6")),
        Field("state", Kind.CHOICE, "absent: remove the rules this entry matches.", values=("absent",)),
    ),
)

ROUTE_RULES = Table(
    "route-rules", "route-rules", "route-rules", "Policy routing rules.",
    (Field("config", Kind.LIST, "The rules.", table=ROUTE_RULE),),
)

# --------------------------------------------------------------------------- sysctl

SYSCTL = Table(
    "sysctl", "sysctl", "sysctl",
    "Network sysctls, as in sysctl.conf: keys under `net.` only ('.' or '/' separated), values a number "
    "or a string.",
    free=FreeKey("KEY", "A key under net., e.g. net.ipv4.ip_forward; the value as sysctl.conf writes it.",
                 kind=Kind.STRING),
)

# --------------------------------------------------------------------------- firewall

CHAIN = Table(
    "chain", "firewall.TABLE.CHAIN, firewall6.TABLE.CHAIN", "a chain",
    "One chain. A chain may be declared in several files (its rules are joined in file-name order); "
    "mode and policy are written in one file only.",
    (
        Field("policy", Kind.CHOICE, "The policy of a built-in chain.", origin=VNETD, values=POLICIES,
              example="DROP"),
        Field("mode", Kind.CHOICE, "merge: vnetd's rules first, other tools' rules kept below; exclusive: the "
              "chain holds exactly the declared rules.", origin=VNETD, values=_values(ChainMode), default="merge",
              example="exclusive"),
        Field("position", Kind.CHOICE, "top, or append: kept at the bottom of a merge chain, below other tools' "
              "rules (a trailing catch-all REJECT).", origin=VNETD, values=("top", "append"), default="top"),
        Field("rules", Kind.LIST, "Rules in iptables-save syntax without `-A CHAIN`, in order.", origin=VNETD,
              item="rule string", example="['-p tcp --dport 22 -j ACCEPT']"),
    ),
)

FIREWALL_TABLE = Table(
    "firewall-table", "firewall.TABLE, firewall6.TABLE", "a table",
    "The chains of one table: built-in chains by their name (INPUT, FORWARD...), user chains by a name "
    "of 1-28 letters, digits, '-', '_' or '.'.",
    free=FreeKey("CHAIN", "A chain of the table.", table=CHAIN),
)

FIREWALL = Table(
    "firewall", "firewall", "firewall (tables)",
    "iptables rules (the legacy tables, or iptables-nft's where that is what the host uses), by table "
    "and chain.",
    (*(Field(t, Kind.MAPPING, f"The {t} table.", origin=VNETD, table=FIREWALL_TABLE) for t in TABLES),
     Field("backend", Kind.CHOICE, "Where vnetd writes its rules, for firewall: and firewall6: alike: "
           "iptables-legacy (the legacy tables), iptables-nft (the nf_tables tables iptables-nft uses), or auto: "
           "what the host's iptables command is, refused when that has no one clear answer (docs/OPERATIONS.md). "
           "All files that give it must agree.", origin=VNETD, values=BACKEND_CHOICES, default="auto")),
)

FIREWALL6 = Table(
    "firewall6", "firewall6", "firewall6 (tables)",
    "ip6tables rules: the same shape as firewall:, written to the IPv6 tables of the same backend "
    "(ip6tables-legacy, or the ip6 tables iptables-nft uses), with the same ownership rules.",
    (*(Field(t, Kind.MAPPING, f"The IPv6 {t} table.", origin=VNETD, table=FIREWALL_TABLE) for t in TABLES),
     Field("backend", Kind.CHOICE, "Refused here: the backend is chosen under firewall: (firewall.backend) "
           "and applies to firewall6: too.", origin=VNETD, values=BACKEND_CHOICES)),
)

# --------------------------------------------------------------------------- libvirt

NETWORK = Table(
    "network", "libvirt.networks[]", "a libvirt network", "One libvirt network.",
    (
        Field("name", Kind.STRING, "The network's name: 1-64 letters, digits, '_', '.', '+', '-'.",
              origin=VNETD, required=True, example="default"),
        Field("state", Kind.CHOICE, "active (defined and running), inactive (defined, stopped), absent "
              "(undefined).", origin=VNETD, values=_values(NetworkState), default="active"),
        Field("autostart", Kind.BOOLEAN, "Started when libvirtd starts.", origin=VNETD, example="true"),
        Field("xml", Kind.STRING, "The network's libvirt XML (at most 256 KiB); needed to define a network "
              "that does not exist.", origin=VNETD),
    ),
)

GUESTS = Table(
    "guests", "libvirt.guests", "libvirt.guests", "Running guests.",
    (Field("reattach", Kind.BOOLEAN, "Put running guests' taps back on their bridge (libvirt does not after "
           "a bridge is re-created).", origin=VNETD, default="false", example="true"),),
)

LIBVIRT = Table(
    "libvirt", "libvirt", "libvirt", "libvirt networks and guests.",
    (
        Field("uri", Kind.STRING, "The libvirt connection URI.", origin=VNETD, default=DEFAULT_URI,
              example=DEFAULT_URI),
        Field("networks", Kind.LIST, "The networks.", origin=VNETD, table=NETWORK),
        Field("guests", Kind.MAPPING, "Running guests.", origin=VNETD, table=GUESTS),
    ),
)

# --------------------------------------------------------------------------- health

PROBE = Table(
    "probe", "health.probes[]", "a probe",
    "One health probe: exactly one of icmp, tcp, address.",
    (
        Field("name", Kind.STRING, "The probe's name (1-64 letters, digits, '-', '_', '.'); defaults to the "
              "target.", origin=VNETD, example="ssh-to-gateway"),
        Field("icmp", Kind.STRING, "An address that must answer a ping.", origin=VNETD, example="192.0.2.254"),
        Field("tcp", Kind.STRING, "ADDRESS:PORT a TCP connection must reach ([2001:db8::1]:22 for IPv6).",
              origin=VNETD, example="192.0.2.10:22"),
        Field("address", Kind.STRING, "An address with its prefix that must be on `interface`.", origin=VNETD,
              example="192.0.2.1/24"),
        Field("interface", Kind.STRING, "The link of an address probe.", origin=VNETD, example="br0"),
        Field("timeout", Kind.NUMBER, "Seconds to wait for an answer.", origin=VNETD,
              range=(0.1, MAX_TIMEOUT), default=f"{DEFAULT_TIMEOUT:g}"),
    ),
)

HEALTH = Table(
    "health", "health", "health",
    "Probes that must keep passing after a change the daemon makes because the files changed, and "
    "after `vnetd apply --confirm`; otherwise the change is rolled back.",
    (Field("probes", Kind.LIST, "The probes.", origin=VNETD, table=PROBE),),
)

DAEMON = Table(
    "daemon", "daemon", "daemon",
    "How the running daemon behaves; kept in force while the file that sets it is held "
    "after it vanished.",
    (Field("observe", Kind.BOOLEAN, "Only observe: load, watch, plan, log drift.detected and export metrics, "
           "change nothing (`vnetd run --observe`; `--no-observe` overrides it).", origin=VNETD,
           default="false"),),
)

# --------------------------------------------------------------------------- top level

TOP = Table(
    "top", "", "a state file (top level)",
    "A state file is a YAML mapping of these sections; each is optional, and every file of the state "
    "directory adds to them.",
    (
        Field("interfaces", Kind.LIST, "Links, bridges, bonds, veths, VLANs, VXLANs and their addresses.",
              table=INTERFACE),
        Field("routes", Kind.MAPPING, "Static routes.", table=ROUTES),
        Field("route-rules", Kind.MAPPING, "Policy routing rules.", table=ROUTE_RULES),
        Field("sysctl", Kind.MAPPING, "Network sysctls.", origin=VNETD, table=SYSCTL),
        Field("firewall", Kind.MAPPING, "iptables rules.", origin=VNETD, table=FIREWALL),
        Field("firewall6", Kind.MAPPING, "ip6tables rules.", origin=VNETD, table=FIREWALL6),
        Field("libvirt", Kind.MAPPING, "libvirt networks and guests.", origin=VNETD, table=LIBVIRT),
        Field("health", Kind.MAPPING, "Health probes.", origin=VNETD, table=HEALTH),
        Field("daemon", Kind.MAPPING, "Settings of the running daemon.", origin=VNETD, table=DAEMON),
    ),
)


def tables() -> list[Table]:
    """Every table, depth first from the top level, each once."""
    seen: dict[str, Table] = {}

    def visit(table: Table) -> None:
        if table.name in seen:
            return
        seen[table.name] = table
        for f in table.fields:
            if f.table is not None:
                visit(f.table)
        if table.free is not None and table.free.table is not None:
            visit(table.free.table)

    visit(TOP)
    return list(seen.values())
