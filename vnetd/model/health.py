# SPDX-License-Identifier: MIT
"""Health probes: what must keep working after a configuration change (``health:``).

A change the daemon makes because the *files* changed, and a trial of ``vnetd
apply --confirm``, are kept only if every probe that passed before the change
still passes after it; otherwise the change is rolled back (SPEC section 2,
Safety). Drift repairs never run probes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from vnetd.model.common import Origin

DEFAULT_TIMEOUT = 2.0
MAX_TIMEOUT = 30.0


class ProbeKind(StrEnum):
    ICMP = "icmp"  # an echo reply from an address
    TCP = "tcp"  # a TCP connection to address:port completes
    ADDRESS = "address"  # an address is present on a link


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    name: str
    kind: ProbeKind
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    port: int | None = None
    interface: str | None = None
    #: for ADDRESS: the interface address that must be present
    interface_address: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None = None
    timeout: float = DEFAULT_TIMEOUT
    origin: Origin | None = field(default=None, compare=False)

    @property
    def resource(self) -> str:
        return f"probe/{self.name}"

    def describe(self) -> str:
        if self.kind is ProbeKind.ICMP:
            return f"ping {self.address}"
        if self.kind is ProbeKind.TCP:
            host = f"[{self.address}]" if self.address is not None and self.address.version == 6 else self.address
            return f"tcp connect {host}:{self.port}"
        return f"address {self.interface_address} on {self.interface}"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    probe: ProbeSpec
    ok: bool
    detail: str
    duration_ms: float
