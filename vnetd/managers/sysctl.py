# SPDX-License-Identifier: MIT
"""Network sysctls: a few small files under /proc/sys/net, read every pass (they send
no events; the daemon's periodic check compares them with the last pass's values)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vnetd.errors import BackendError
from vnetd.managers.base import BaseManager, Results
from vnetd.model.state import DesiredState
from vnetd.plan.actions import Action, Op, SetSysctl
from vnetd.plan.identifiers import ResolutionMemo
from vnetd.plan.planner import Observed

if TYPE_CHECKING:
    from vnetd.backends.sysctl import SysctlBackend


class SysctlManager(BaseManager):
    """``sysctl/`` resources."""

    name = "sysctl"
    event_source = "sysctl"
    prefixes = ("sysctl/",)

    def __init__(self) -> None:
        self._backend: SysctlBackend | None = None
        self._identifiers = ResolutionMemo()
        #: the values the last cached observation read (what ``changed`` compares with)
        self.last: dict[str, str | None] = {}

    @property
    def backend(self) -> SysctlBackend:
        if self._backend is None:
            from vnetd.backends.sysctl import SysctlBackend

            self._backend = SysctlBackend()
        return self._backend

    def handles(self, op: Op) -> bool:
        return isinstance(op, SetSysctl)

    def resources(self, desired: DesiredState) -> list[str]:
        return [s.resource for s in desired.sysctls]

    def read(self, keys: Sequence[str]) -> dict[str, str | None]:
        """The current values of ``keys`` (None: no such key)."""
        return self.backend.read(keys)

    def observe(self, desired: DesiredState, observed: Observed) -> None:
        if desired.sysctls:
            observed.sysctls = self.backend.read(s.key for s in desired.sysctls)
            self._read_resolved(desired, observed)

    def observe_cached(self, desired: DesiredState, observed: Observed) -> None:
        if desired.sysctls:
            observed.sysctls = self.backend.read(s.key for s in desired.sysctls)
            self._read_resolved(desired, observed)
            # the resolved per-device keys too, so that ``changed`` sees their drift
            self.last = dict(observed.sysctls)

    def _read_resolved(self, desired: DesiredState, observed: Observed) -> None:
        """Per-device keys that name a NIC found by its MAC are read where that NIC is
        (net.ipv4.conf.eth1.x may be net.ipv4.conf.enp3s0.x here: plan.identifiers)."""
        if observed.sysctls is None or not self._identifiers.finds_by_mac(desired):
            return
        from vnetd.plan.identifiers import sysctl_keys

        missing = [k for k in sysctl_keys(desired, observed.net) if k not in observed.sysctls]
        if missing:
            observed.sysctls.update(self.backend.read(missing))

    def changed(self, desired: DesiredState) -> bool:
        if not desired.sysctls:
            return False
        return self.backend.read(list(self.last) or [s.key for s in desired.sysctls]) != self.last

    def apply(self, actions: Sequence[Action], observed: Observed) -> Results:
        results: Results = []
        for action in actions:
            op = action.op
            assert isinstance(op, SetSysctl)
            try:
                self.backend.write(op.key, op.value, action.resource)
            except BackendError as exc:
                results.append((action, exc))
            else:
                results.append((action, None))
        return results

    def show(self, desired: DesiredState | None) -> str:
        if desired is None or not desired.sysctls:
            return ""
        from vnetd.show import sysctl_section

        return sysctl_section(self.backend.read(s.key for s in desired.sysctls))
