# SPDX-License-Identifier: MIT
"""libvirt networks (defined, active, autostarted) and running guests' taps.

The daemon re-reads libvirt on its events (domain and network events post a
wake-up, seen here by ``on_wake``), after vnetd acted on libvirt or on a guest's
tap, on the slow timer, and when the periodic check finds a network's autostart
switched (libvirt sends no event for that). It connects only once the daemon is
READY (``start``: at boot libvirtd is ordered after the network, which waits for
vnetd) and reconnects with back-off from the periodic check. While libvirt is
unreachable nothing of it is planned (the planner reports it as a problem).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vnetd.errors import BackendError
from vnetd.managers.base import BaseManager, Post, Results
from vnetd.model.libvirt import GuestTap, ObservedNetwork
from vnetd.model.state import DesiredState
from vnetd.plan.actions import Action, AttachTap, EnsureNetwork, Op
from vnetd.plan.planner import Observed

if TYPE_CHECKING:
    from vnetd.backends.libvirt import LibvirtBackend


class LibvirtManager(BaseManager):
    """``libvirt/network/`` resources (guests' taps, ``guest/``, are put on their bridges by
    the netlink manager; their health is kept while the guest runs)."""

    name = "libvirt"
    event_source = "libvirt"
    prefixes = ("libvirt/", "guest/")

    def __init__(self, log: Any) -> None:
        self.log = log
        self._backend: LibvirtBackend | None = None
        self.networks: dict[str, ObservedNetwork] | None = None
        self.taps: tuple[GuestTap, ...] = ()
        self.dirty = True

    # -- the connection ----------------------------------------------------------------

    def backend(self, uri: str) -> LibvirtBackend:
        """The libvirt connection for ``uri`` (a new one if the URI changed)."""
        current = self._backend
        if current is not None and current.uri != uri:
            current.close()
            current = None
        if current is None:
            from vnetd.backends.libvirt import LibvirtBackend

            current = LibvirtBackend(uri)
            self._backend = current
        return current

    @property
    def current(self) -> LibvirtBackend | None:
        """The connection made last, if any."""
        return self._backend

    def start(self, desired: DesiredState, post: Post) -> bool:
        """Connect, with libvirt's events posting wake-ups; a pass reads libvirt then."""
        if desired.libvirt is None:
            return False
        backend = self.backend(desired.libvirt.uri)
        backend.start_events(post)
        if not backend.connected:
            backend.connect()
        return True

    # -- what it owns ------------------------------------------------------------------

    def handles(self, op: Op) -> bool:
        return isinstance(op, EnsureNetwork)

    def resources(self, desired: DesiredState) -> list[str]:
        return [n.resource for n in desired.libvirt.networks] if desired.libvirt is not None else []

    def transient_resources(self) -> frozenset[str]:
        return frozenset(t.resource for t in self.taps)

    def adopt(self, desired: DesiredState) -> None:
        self.dirty = True

    # -- observing ---------------------------------------------------------------------

    def observe(self, desired: DesiredState, observed: Observed) -> None:
        """Networks and running guests' taps; left None (not planned) while libvirt is unreachable."""
        if desired.libvirt is None:
            return
        libvirt = self.backend(desired.libvirt.uri)
        if not libvirt.connected and not libvirt.connect():
            return
        try:
            observed.networks, observed.guest_taps = libvirt.observe()
        except BackendError:
            observed.networks = None

    def observe_cached(self, desired: DesiredState, observed: Observed) -> None:
        if desired.libvirt is None:
            return
        libvirt = self.backend(desired.libvirt.uri)
        if not libvirt.connected:
            self.networks = None
            return
        if self.dirty or self.networks is None:
            try:
                self.networks, self.taps = libvirt.observe()
                self.dirty = False
            except BackendError as exc:
                self.log.warning("libvirt.observe_failed", error=str(exc))
                self.networks = None
                return
        observed.networks = self.networks
        observed.guest_taps = self.taps

    def changed(self, desired: DesiredState) -> bool:
        """A network's autostart switched (no event for it), or libvirt is back after the
        reconnection back-off: read it again."""
        if desired.libvirt is None:
            return False
        libvirt = self.backend(desired.libvirt.uri)
        if not libvirt.connected:
            return libvirt.maybe_reconnect()
        if libvirt.changed():
            self.dirty = True
            return True
        return False

    def on_wake(self, reasons: set[str]) -> None:
        if self.event_source in reasons:
            self.dirty = True

    def invalidate(self) -> None:
        self.dirty = True

    def resync(self) -> None:
        self.dirty = True

    # -- applying ----------------------------------------------------------------------

    def apply(self, actions: Sequence[Action], observed: Observed) -> Results:
        results: Results = []
        for action in actions:
            op = action.op
            assert isinstance(op, EnsureNetwork)
            try:
                libvirt = self._backend
                if libvirt is None:
                    raise BackendError("libvirt", action.resource, "libvirt is not connected")
                libvirt.execute(op, action.resource)
            except BackendError as exc:
                results.append((action, exc))
            else:
                results.append((action, None))
        return results

    def applied(self, results: Results) -> None:
        if any(isinstance(action.op, EnsureNetwork | AttachTap) for action, _error in results):
            self.dirty = True  # what libvirt reports (a network's state, a tap's bridge) changed

    # -- show --------------------------------------------------------------------------

    def show(self, desired: DesiredState | None) -> str:
        if desired is None or desired.libvirt is None:
            return ""
        from vnetd.backends.libvirt import show_libvirt
        from vnetd.show import libvirt_section

        networks = show_libvirt(desired.libvirt.uri)
        return libvirt_section(networks) if networks is not None else ""

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
