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

from vnetd.model.firewall import POLICIES, TABLES, ChainMode
from vnetd.model.health import DEFAULT_TIMEOUT, MAX_TIMEOUT
from vnetd.model.interfaces import AdminState, IfType
from vnetd.model.libvirt import DEFAULT_URI, NetworkState


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
            lo, hi = (f"{v:g}" for v in self.range)
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
        Field("dhcp", Kind.BOOLEAN, "Only false is accepted: vnetd manages static addresses only (leave the "
              "section out to leave a DHCP client's addresses alone).", default="false"),
        Field("autoconf", Kind.BOOLEAN, "IPv6 only; only false is accepted.", default="false"),
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
        Field("protocol", Kind.CHOICE, "The VLAN protocol.", values=("802.1q",), default="802.1q"),
    ),
)

INTERFACE = Table(
    "interface", "interfaces[]", "an interface",
    "One link. vnetd creates and deletes virtual interfaces (linux-bridge, veth, vlan, dummy); "
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
        Field("mac-address", Kind.STRING, "The MAC address (quoted: YAML reads some unquoted MACs as numbers).",
              example='"52:54:00:12:34:56"'),
        Field("description", Kind.STRING, "Free text; accepted for nmstate compatibility, not applied."),
        Field("ipv4", Kind.MAPPING, "IPv4 addresses.", table=IP),
        Field("ipv6", Kind.MAPPING, "IPv6 addresses.", table=IP),
        Field("bridge", Kind.MAPPING, "Bridge settings (type: linux-bridge only).", table=BRIDGE),
        Field("veth", Kind.MAPPING, "Veth settings (type: veth only).", table=VETH),
        Field("vlan", Kind.MAPPING, "VLAN settings (type: vlan only).", table=VLAN),
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
    "chain", "firewall.TABLE.CHAIN", "a chain",
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
    "firewall-table", "firewall.TABLE", "a table",
    "The chains of one table: built-in chains by their name (INPUT, FORWARD...), user chains by a name "
    "of 1-28 letters, digits, '-', '_' or '.'.",
    free=FreeKey("CHAIN", "A chain of the table.", table=CHAIN),
)

FIREWALL = Table(
    "firewall", "firewall", "firewall (tables)",
    "iptables rules (the legacy tables, or iptables-nft's where that is what the host uses), by table "
    "and chain.",
    tuple(Field(t, Kind.MAPPING, f"The {t} table.", origin=VNETD, table=FIREWALL_TABLE) for t in TABLES),
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

# --------------------------------------------------------------------------- top level

TOP = Table(
    "top", "", "a state file (top level)",
    "A state file is a YAML mapping of these sections; each is optional, and every file of the state "
    "directory adds to them.",
    (
        Field("interfaces", Kind.LIST, "Links, bridges, veths, VLANs and their addresses.", table=INTERFACE),
        Field("routes", Kind.MAPPING, "Static routes.", table=ROUTES),
        Field("sysctl", Kind.MAPPING, "Network sysctls.", origin=VNETD, table=SYSCTL),
        Field("firewall", Kind.MAPPING, "iptables rules.", origin=VNETD, table=FIREWALL),
        Field("libvirt", Kind.MAPPING, "libvirt networks and guests.", origin=VNETD, table=LIBVIRT),
        Field("health", Kind.MAPPING, "Health probes.", origin=VNETD, table=HEALTH),
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
