# SPDX-License-Identifier: MIT
"""sysctl keys under ``net.``: declared values and how the kernel prints them."""

from __future__ import annotations

from dataclasses import dataclass, field

from vnetd.model.common import Origin


@dataclass(frozen=True, slots=True)
class SysctlSpec:
    key: str  # dotted form, e.g. net.ipv4.ip_forward
    value: str  # as written in sysctl.conf
    origin: Origin | None = field(default=None, compare=False)

    @property
    def resource(self) -> str:
        return f"sysctl/{self.key}"


def normalize_value(value: str) -> str:
    """Compare values as the kernel prints them: fields separated by one space."""
    return " ".join(value.split())


def missing_hint(key: str) -> str:
    if key.startswith(("net.bridge.", "net/bridge/")):
        return ("does not exist: the bridge netfilter keys need the br_netfilter module "
                "(modprobe br_netfilter, and list it in /etc/modules-load.d/)")
    if ".conf." in key or "/conf/" in key or ".neigh." in key:
        return "does not exist (is the interface it names present?)"
    return "does not exist in this kernel"
