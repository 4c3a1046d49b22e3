# SPDX-License-Identifier: MIT
"""A checkpoint: what a change is about to touch, recorded well enough to put it back.

Taken before a change is applied (``vnetd apply --confirm``, and by the daemon
before applying edited files when probes are declared), for exactly the
resources the change's plan touches: the links it names (existence, type, MTU,
admin state, master, MAC, bridge options) with all their addresses and the
routes through them, every policy routing rule of a family whose rules it
changes, the sysctl keys it writes, the *whole* content of every
netfilter chain it changes (foreign rules and the policy included, as the
backend's raw entries) and the state of the libvirt networks it acts on.
Restoring is itself a plan (``vnetd.plan.restore``), applied and verified like
any other.

Checkpoints are JSON files under the run directory (``/run/vnetd``), root-only,
so that a trial outlives the process that started it: a daemon that starts
while an expired trial is on disk restores it.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from vnetd.model.firewall import section_of, table_key

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """One link as it was; ``exists`` False: the change created it."""

    name: str
    exists: bool
    kind: str | None = None
    up: bool = False
    mtu: int = 0
    mac: str | None = None
    master: str | None = None
    #: bridge options in the kernel's units (centiseconds): stp_state, forward_delay, hello_time, max_age, priority
    bridge: tuple[int, int, int, int, int] | None = None
    veth_peer: str | None = None
    #: what a change may set on a live VLAN, VXLAN or bond (SetLinkOptions): VLAN flags,
    #: VXLAN remote and learning, bond options (``primary`` as a link name)
    vlan_flags: int | None = None
    vxlan_remote: str | None = None
    vxlan_learning: bool | None = None
    bond_options: tuple[tuple[str, int | str | tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class RouteRecord:
    """A route through a recorded link, as the kernel had it (protocol and scope included,
    so that ``ip route`` shows it exactly as before once restored)."""

    destination: str
    table: int
    device: str | None
    gateway: str | None
    priority: int
    protocol: int
    scope: int
    type: int = 1

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.destination, self.table, self.priority)


@dataclass(frozen=True, slots=True)
class RuleRecord:
    """A policy routing rule as the kernel had it (its protocol included)."""

    family: int
    priority: int
    table: int
    action: int
    source: str | None
    destination: str | None
    iif: str | None
    fwmark: int
    fwmask: int
    protocol: int


@dataclass(frozen=True, slots=True)
class ChainRecord:
    """A netfilter chain as it was: the backend's raw entries, in order, with the
    meaning of each standard target (a chain name, ACCEPT...; None: an extension).
    ``family``: 4 (iptables) or 6 (ip6tables); checkpoints written before IPv6 have none: 4."""

    backend: str
    table: str
    chain: str
    exists: bool
    builtin: bool
    policy: str | None = None
    entries: tuple[tuple[bytes, str | None], ...] = ()
    family: int = 4

    @property
    def table_key(self) -> str:
        return table_key(self.table, self.family)

    @property
    def resource(self) -> str:
        return f"{section_of(self.family)}/{self.table}/{self.chain}"


@dataclass(frozen=True, slots=True)
class NetworkRecord:
    name: str
    exists: bool
    active: bool = False
    autostart: bool = False


@dataclass(frozen=True, slots=True)
class Checkpoint:
    taken: float
    netns: str  # "dev:inode" of the network namespace it was taken in
    links: tuple[LinkRecord, ...] = ()
    #: every permanent address of the recorded links that exist, "ip/prefix"
    addresses: tuple[tuple[str, tuple[str, ...]], ...] = ()
    routes: tuple[RouteRecord, ...] = ()
    sysctls: tuple[tuple[str, str | None], ...] = ()
    chains: tuple[ChainRecord, ...] = ()
    networks: tuple[NetworkRecord, ...] = ()
    #: what the change did, as the plan described it (for the log of a rollback)
    changes: tuple[str, ...] = field(default=(), compare=False)
    #: families (4, 6) whose rules were all recorded in ``rules``
    rule_families: tuple[int, ...] = ()
    rules: tuple[RuleRecord, ...] = ()

    @property
    def link_names(self) -> frozenset[str]:
        return frozenset(link.name for link in self.links)

    def resources(self) -> list[str]:
        out = [f"interface/{link.name}" for link in self.links]
        out += [f"sysctl/{key}" for key, _ in self.sysctls]
        out += [c.resource for c in self.chains]
        out += [f"libvirt/network/{n.name}" for n in self.networks]
        out += [f"route-rules/ipv{family}" for family in self.rule_families]
        return out

    # -- file format ------------------------------------------------------------

    def to_json(self) -> str:
        data = asdict(self)
        data["format"] = FORMAT_VERSION
        for chain in data["chains"]:
            chain["entries"] = [[entry.hex(), meaning] for entry, meaning in chain["entries"]]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        """Parse a checkpoint file; ValueError when it is not one (a file under /run
        that vnetd wrote, but read defensively all the same)."""
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT_VERSION:
                raise ValueError(f"unknown checkpoint format {data.get('format')!r}")
            return cls(
                taken=float(data["taken"]),
                netns=str(data["netns"]),
                links=tuple(_link(d) for d in data["links"]),
                addresses=tuple((str(n), tuple(str(a) for a in addrs)) for n, addrs in data["addresses"]),
                routes=tuple(RouteRecord(**_fields(d, RouteRecord)) for d in data["routes"]),
                sysctls=tuple((str(k), None if v is None else str(v)) for k, v in data["sysctls"]),
                chains=tuple(_chain(d) for d in data["chains"]),
                networks=tuple(NetworkRecord(**_fields(d, NetworkRecord)) for d in data["networks"]),
                changes=tuple(str(c) for c in data.get("changes", ())),
                rule_families=tuple(int(f) for f in data.get("rule_families", ())),
                rules=tuple(RuleRecord(**_fields(d, RuleRecord)) for d in data.get("rules", ())),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a vnetd checkpoint: {exc}") from exc


def _fields(data: dict[str, Any], cls: type) -> dict[str, Any]:
    names = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    return {k: v for k, v in data.items() if k in names}


def _link(data: dict[str, Any]) -> LinkRecord:
    fields = _fields(data, LinkRecord)
    if fields.get("bridge") is not None:
        fields["bridge"] = tuple(int(x) for x in fields["bridge"])
    fields["bond_options"] = tuple((str(k), tuple(v) if isinstance(v, list) else v)
                                   for k, v in fields.get("bond_options", ()))
    return LinkRecord(**fields)


def _chain(data: dict[str, Any]) -> ChainRecord:
    fields = _fields(data, ChainRecord)
    fields["entries"] = tuple((bytes.fromhex(e), m) for e, m in fields.get("entries", ()))
    if fields.get("family", 4) not in (4, 6):
        raise ValueError(f"not a vnetd checkpoint: family {fields['family']!r}")
    return ChainRecord(**fields)


def interface_text(ip: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> str:
    return str(ip)
