# SPDX-License-Identifier: MIT
"""libvirt: networks kept defined/active/autostarted, and guests' taps kept on bridges."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from vnetd.model.common import Origin

DEFAULT_URI = "qemu:///system"


class NetworkState(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    name: str
    state: NetworkState = NetworkState.ACTIVE
    autostart: bool | None = None
    xml: str | None = None
    origin: Origin | None = field(default=None, compare=False)

    @property
    def resource(self) -> str:
        return f"libvirt/network/{self.name}"


@dataclass(frozen=True, slots=True)
class LibvirtSpec:
    uri: str = DEFAULT_URI
    networks: tuple[NetworkSpec, ...] = ()
    reattach: bool = False
    origin: Origin | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ObservedNetwork:
    name: str
    active: bool
    autostart: bool
    bridge: str | None
    persistent: bool = True


@dataclass(frozen=True, slots=True)
class GuestTap:
    """One running guest interface: tap ``tap`` must be a port of ``bridge``."""

    domain: str
    tap: str
    bridge: str

    @property
    def resource(self) -> str:
        return f"guest/{self.domain}/{self.tap}"
