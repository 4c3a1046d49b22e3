# SPDX-License-Identifier: MIT
"""Plan values: what to change (an *op*) and why (resource, field, want, have).

Ops name links by interface name, never by ifindex: a plan is computed before the
bridges it creates exist, and the applier resolves names when it runs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import IntEnum

from vnetd.model.checkpoint import ChainRecord
from vnetd.model.firewall import ChainMode, Rule
from vnetd.model.interfaces import BondConfig, IpInterface, StpOptions, VlanOptions, VxlanConfig
from vnetd.model.route_rules import RouteRule, RouteRuleSpec
from vnetd.model.routes import IpAddr, IpNetwork


class Phase(IntEnum):
    """Execution order. Within a phase, actions keep the order the planner gave."""

    DELETE_LINKS = 0
    CREATE_LINKS = 10
    CREATE_STACKED = 11  # VLANs, after the links they sit on
    LINK_PROPERTIES = 20  # MAC, bridge options
    MTU_UP = 30  # raising: lower devices first (ports before their bridge)
    PORT_DOWN = 35  # a bond takes only ports that are down (it brings them up itself)
    ENSLAVE = 40
    MTU_DOWN = 50  # lowering: upper devices first
    ADMIN_STATE = 60
    REMOVE_ADDRESSES = 70
    ADD_ADDRESSES = 71
    REMOVE_ROUTE_RULES = 79  # before the routes they send traffic to go
    REMOVE_ROUTES = 80
    ADD_ROUTES = 81
    ADD_ROUTE_RULES = 82  # once the tables they look up are filled
    SYSCTL = 90
    FIREWALL = 100
    LIBVIRT_NETWORKS = 110
    GUEST_TAPS = 120


# --------------------------------------------------------------------------- ops: links


@dataclass(frozen=True, slots=True)
class CreateLink:
    name: str
    kind: str  # bridge | veth | vlan | bond | vxlan | dummy
    mac: str | None = None
    stp: StpOptions | None = None
    veth_peer: str | None = None
    vlan_base: str | None = None
    vlan_id: int | None = None
    vlan: VlanOptions | None = None
    vxlan: VxlanConfig | None = None
    bond: BondConfig | None = None  # mode and options (ports are enslaved by SetMaster)


@dataclass(frozen=True, slots=True)
class DeleteLink:
    name: str


@dataclass(frozen=True, slots=True)
class SetLinkUp:
    name: str
    up: bool


@dataclass(frozen=True, slots=True)
class SetMtu:
    name: str
    mtu: int


@dataclass(frozen=True, slots=True)
class SetMac:
    name: str
    mac: str


@dataclass(frozen=True, slots=True)
class SetBridgeOptions:
    name: str
    stp: StpOptions  # only the fields to change are set


@dataclass(frozen=True, slots=True)
class SetLinkOptions:
    """Change a VLAN's flags, a VXLAN's remote or learning, or a bond's options: only
    the fields that are set (the kernel changes these on a live link)."""

    name: str
    kind: str  # vlan | vxlan | bond
    vlan: VlanOptions | None = None
    vxlan_remote: IpAddr | None = None
    vxlan_learning: bool | None = None
    bond_options: tuple[tuple[str, int | str | tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class SetMaster:
    name: str
    master: str | None  # None: release the port (nomaster)


@dataclass(frozen=True, slots=True)
class AddAddress:
    name: str
    ip: IpInterface


@dataclass(frozen=True, slots=True)
class RemoveAddress:
    name: str
    ip: IpInterface


@dataclass(frozen=True, slots=True)
class AddRoute:
    destination: IpNetwork
    table: int
    gateway: IpAddr | None
    device: str | None
    metric: int | None
    replace: bool = False
    #: as recorded by a checkpoint (None: vnetd's own routes, static, scope by gateway)
    protocol: int | None = None
    scope: int | None = None


@dataclass(frozen=True, slots=True)
class RemoveRoute:
    destination: IpNetwork
    table: int
    gateway: IpAddr | None
    oif: int | None
    metric: int


@dataclass(frozen=True, slots=True)
class AddRouteRule:
    rule: RouteRuleSpec
    protocol: int | None = None  # as a checkpoint recorded it (None: vnetd's own, static)


@dataclass(frozen=True, slots=True)
class RemoveRouteRule:
    rule: RouteRule  # as the kernel has it: a delete names every field


# --------------------------------------------------------------------------- ops: others


@dataclass(frozen=True, slots=True)
class SetSysctl:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class SyncChain:
    """Make one chain hold the declared rules (merge: on top; exclusive: only them).

    ``family`` (here and in the other firewall ops): 4, the iptables tables, or 6,
    the ip6tables tables."""

    table: str
    chain: str
    mode: ChainMode
    rules: tuple[Rule, ...]
    builtin: bool
    tail: tuple[Rule, ...] = ()  # kept at the bottom (merge, position: append)
    family: int = 4


@dataclass(frozen=True, slots=True)
class SetPolicy:
    table: str
    chain: str
    policy: str
    family: int = 4


@dataclass(frozen=True, slots=True)
class PruneChain:
    """Remove vnetd's tagged rules from a chain no longer declared (and the chain if owned)."""

    table: str
    chain: str
    delete_chain: bool
    family: int = 4
    #: "" the backend in use; else a backend no longer used that still holds vnetd's rules
    #: (``firewall.backend`` changed: they are pruned there, plan.firewall.plan_retired)
    backend: str = ""


@dataclass(frozen=True, slots=True)
class RestoreChain:
    """Put a chain back as a checkpoint recorded it: exactly its entries (foreign rules
    included) and policy; a chain that did not exist is deleted."""

    table: str
    chain: str
    record: ChainRecord

    @property
    def family(self) -> int:
        return self.record.family


@dataclass(frozen=True, slots=True)
class EnsureNetwork:
    """libvirt network: define (from xml) / start / stop / autostart / restart / undefine."""

    name: str
    operation: str  # define | start | stop | restart | autostart-on | autostart-off | undefine
    xml: str | None = None


@dataclass(frozen=True, slots=True)
class AttachTap:
    domain: str
    tap: str
    bridge: str
    mtu: int | None


Op = (CreateLink | DeleteLink | SetLinkUp | SetMtu | SetMac | SetBridgeOptions | SetLinkOptions | SetMaster
      | AddAddress | RemoveAddress | AddRoute | RemoveRoute | AddRouteRule | RemoveRouteRule | SetSysctl
      | SyncChain | SetPolicy | PruneChain | RestoreChain | EnsureNetwork | AttachTap)

#: ops the firewall backend carries out
FIREWALL_OPS = (SyncChain, SetPolicy, PruneChain, RestoreChain)


def jsonable(value: object) -> object:
    """A want/have value as JSON can carry it (addresses and networks as text)."""
    if value is None or isinstance(value, bool | int | str | float):
        return value
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


@dataclass(frozen=True, slots=True)
class Action:
    """One step of a plan: the op and why it is needed."""

    op: Op
    phase: Phase
    resource: str
    field: str
    want: object
    have: object
    order: int = dataclasses.field(default=0, compare=False)  # tie-break inside a phase (MTU depth)

    def describe(self) -> str:
        return f"{self.resource}: {self.field} want {_fmt(self.want)}, have {_fmt(self.have)}"

    def as_dict(self) -> dict[str, object]:
        return {
            "resource": self.resource,
            "field": self.field,
            "want": jsonable(self.want),
            "have": jsonable(self.have),
            "action": type(self.op).__name__,
        }


def _fmt(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value) if isinstance(value, bool) else str(value)


@dataclass(frozen=True, slots=True)
class Problem:
    """Something vnetd cannot fix by itself (a missing NIC, a type clash)."""

    resource: str
    message: str

    def describe(self) -> str:
        return f"{self.resource}: {self.message}"


@dataclass(frozen=True, slots=True)
class Note:
    """Something the plan leaves alone on purpose and says so (not a change, not a
    problem): a DHCP client's addresses, a NIC found by its MAC under another name."""

    resource: str
    message: str

    def describe(self) -> str:
        return f"{self.resource}: {self.message}"


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...] = ()
    problems: tuple[Problem, ...] = ()
    notes: tuple[Note, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.actions

    def resources(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for a in self.actions:
            seen.setdefault(a.resource)
        return tuple(seen)


def ordered(actions: list[Action]) -> tuple[Action, ...]:
    """Stable sort by phase, then by the in-phase order key."""
    return tuple(sorted(actions, key=lambda a: (a.phase, a.order)))
