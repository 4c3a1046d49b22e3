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
    DUMMY = "dummy"
    LOOPBACK = "loopback"
    TUN = "tun"
    UNKNOWN = "unknown"


#: Types vnetd creates when missing and deletes on ``state: absent``.
VIRTUAL_TYPES = frozenset({IfType.BRIDGE, IfType.VETH, IfType.VLAN, IfType.DUMMY})

#: Kernel ``IFLA_INFO_KIND`` for each virtual type.
KERNEL_KIND = {IfType.BRIDGE: "bridge", IfType.VETH: "veth", IfType.VLAN: "vlan", IfType.DUMMY: "dummy"}


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

    IPv6 link-local addresses (fe80::/10) are the kernel's and never managed.
    """

    enabled: bool
    addresses: tuple[IpInterface, ...] | None


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

    @property
    def resource(self) -> str:
        return f"interface/{self.name}"


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


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """One kernel address (RTM_NEWADDR)."""

    index: int
    ip: IpInterface
    scope: int = field(default=0, compare=False)
    permanent: bool = field(default=True, compare=False)
