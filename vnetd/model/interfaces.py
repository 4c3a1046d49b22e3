# SPDX-License-Identifier: MIT
"""Interfaces: what the files declare (``Interface``) and what the kernel has (``Link``).

A field that is ``None`` in a desired value is not managed: vnetd neither checks
nor changes it ("desired is a subset of current", as nmstate matches).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from vnetd.model.common import Origin

IpInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class IfType(StrEnum):
    ETHERNET = "ethernet"
    BRIDGE = "linux-bridge"
    VETH = "veth"
    VLAN = "vlan"
    BOND = "bond"
    VXLAN = "vxlan"
    DUMMY = "dummy"
    LOOPBACK = "loopback"
    TUN = "tun"
    UNKNOWN = "unknown"


#: Types vnetd creates when missing and deletes on ``state: absent``.
VIRTUAL_TYPES = frozenset({IfType.BRIDGE, IfType.VETH, IfType.VLAN, IfType.BOND, IfType.VXLAN, IfType.DUMMY})

#: Kernel ``IFLA_INFO_KIND`` for each virtual type.
KERNEL_KIND = {IfType.BRIDGE: "bridge", IfType.VETH: "veth", IfType.VLAN: "vlan", IfType.BOND: "bond",
               IfType.VXLAN: "vxlan", IfType.DUMMY: "dummy"}

#: Kernel kinds that a declared ``ethernet`` may be: a NIC has no kind; veths are the
#: stand-in NICs of the tests and the demo (the kernel here has no dummy links).
NIC_KINDS: frozenset[str | None] = frozenset({None, "veth"})


class AdminState(StrEnum):
    UP = "up"
    DOWN = "down"
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class StpOptions:
    """nmstate ``bridge.options.stp``; times in seconds as nmstate writes them."""

    enabled: bool | None = None
    forward_delay: int | None = None
    hello_time: int | None = None
    max_age: int | None = None
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    stp: StpOptions = StpOptions()
    #: ports that must be attached; ``None`` when ``port`` is not written.
    ports: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class IpConfig:
    """``ipv4`` / ``ipv6``: when ``addresses`` is not None it is the exact static set.

    IPv6 link-local addresses (fe80::/10) are the kernel's and never managed. With
    ``dhcp`` (IPv4 or IPv6) or ``autoconf`` (IPv6 router advertisements) the link's
    addresses of that family and its default route belong to another program (a
    DHCP client, the kernel's SLAAC): vnetd removes none of them, replaces no such
    default route, and only adds the ``addresses`` listed (if any).
    """

    enabled: bool
    addresses: tuple[IpInterface, ...] | None
    dhcp: bool = False
    autoconf: bool = False

    @property
    def foreign(self) -> bool:
        """Whether another program owns this family's addresses and default route."""
        return self.enabled and (self.dhcp or self.autoconf)


class VlanProtocol(StrEnum):
    DOT1Q = "802.1q"
    DOT1AD = "802.1ad"


#: ``vlan.registration-protocol`` -> its VLAN flag (none clears both)
VLAN_REGISTRATION = ("gvrp", "mvrp", "none")


@dataclass(frozen=True, slots=True)
class VlanOptions:
    """nmstate ``vlan`` options besides ``base-iface`` and ``id``; None: not managed."""

    protocol: VlanProtocol | None = None
    reorder_headers: bool | None = None
    loose_binding: bool | None = None
    registration_protocol: str | None = None  # gvrp | mvrp | none


#: IANA's VXLAN port, which vnetd uses when ``destination-port`` is not written (the
#: kernel's own default, 8472, predates the IANA assignment; NetworkManager uses 4789)
VXLAN_PORT = 4789


@dataclass(frozen=True, slots=True)
class VxlanConfig:
    """nmstate ``vxlan``: ``remote`` is the peer (or a multicast group) that gets the
    frames whose destination the device has not learnt."""

    id: int
    remote: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    local: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    base_iface: str | None = None
    destination_port: int | None = None  # VXLAN_PORT when vnetd creates it
    learning: bool | None = None


@dataclass(frozen=True, slots=True)
class BondConfig:
    """nmstate ``link-aggregation``: mode, the ports that must be attached (None: not
    written) and the options written, as (sysfs name, value in the kernel's terms)."""

    mode: str | None = None
    ports: tuple[str, ...] | None = None
    options: tuple[tuple[str, int | str | tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class Interface:
    """One entry of ``interfaces:``."""

    name: str
    type: IfType | None
    state: AdminState = AdminState.UP
    mtu: int | None = None
    mac: str | None = None
    bridge: BridgeConfig | None = None
    ipv4: IpConfig | None = None
    ipv6: IpConfig | None = None
    veth_peer: str | None = None
    vlan_base: str | None = None
    vlan_id: int | None = None
    origin: Origin | None = field(default=None, compare=False)
    vlan: VlanOptions | None = None
    vxlan: VxlanConfig | None = None
    bond: BondConfig | None = None
    #: ``identifier: mac-address``: the NIC is the one with this (permanent) MAC,
    #: whatever the kernel named it; ``name`` is then the profile name
    match_mac: str | None = None
    #: set once a MAC-identified interface is found: the profile name it was written as
    profile: str | None = None

    @property
    def resource(self) -> str:
        return f"interface/{self.name}"

    @property
    def ports(self) -> tuple[str, ...]:
        """The ports this interface (a bridge or a bond) lists."""
        if self.bridge is not None and self.bridge.ports:
            return self.bridge.ports
        if self.bond is not None and self.bond.ports:
            return self.bond.ports
        return ()

    @property
    def base_iface(self) -> str | None:
        """The link this one sits on: a VLAN's parent, a VXLAN's underlay device."""
        if self.vlan_base is not None:
            return self.vlan_base
        return self.vxlan.base_iface if self.vxlan is not None else None


# --------------------------------------------------------------------------- observed


@dataclass(frozen=True, slots=True)
class BridgeInfo:
    """Bridge attributes as the kernel reports them (times in centiseconds)."""

    stp_state: int
    forward_delay: int
    hello_time: int
    max_age: int
    priority: int


@dataclass(frozen=True, slots=True)
class Link:
    """One kernel link (RTM_NEWLINK), reduced to the fields vnetd manages."""

    index: int
    name: str
    kind: str | None
    up: bool
    mtu: int
    mac: str | None
    master: int | None
    link: int | None = None
    link_netnsid: int | None = None
    vlan_id: int | None = None
    bridge: BridgeInfo | None = None
    #: the device's own MAC: IFLA_PERM_ADDRESS where the driver has one, else the one a
    #: bond remembers for its port (a bond port's current MAC is the bond's)
    perm_mac: str | None = None
    vlan: VlanInfo | None = None
    vxlan: VxlanInfo | None = None
    bond: BondInfo | None = None

    @property
    def hw_mac(self) -> str | None:
        """The MAC that identifies the device: the permanent one, else the current one."""
        return self.perm_mac or self.mac


@dataclass(frozen=True, slots=True)
class VlanInfo:
    protocol: int  # ethertype: 0x8100 802.1Q, 0x88a8 802.1ad
    flags: int  # VLAN_FLAG_*


@dataclass(frozen=True, slots=True)
class VxlanInfo:
    id: int
    remote: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    local: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    link: int | None  # ifindex of the underlay device
    port: int
    learning: bool


@dataclass(frozen=True, slots=True)
class BondInfo:
    """A bond's mode and options as the kernel reports them (names as in sysfs)."""

    mode: int
    options: tuple[tuple[str, int | str | tuple[str, ...]], ...]

    def option(self, name: str) -> int | str | tuple[str, ...] | None:
        for key, value in self.options:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """One kernel address (RTM_NEWADDR)."""

    index: int
    ip: IpInterface
    scope: int = field(default=0, compare=False)
    permanent: bool = field(default=True, compare=False)
