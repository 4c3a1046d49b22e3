# SPDX-License-Identifier: MIT
"""libvirt: the only module that imports libvirt-python.

What it does: reads libvirt's networks and the running guests' interfaces
(``observe``), carries out ``EnsureNetwork`` ops (``execute``), and — in the daemon —
turns libvirt's domain and network events and the loss of the connection into
wake-ups of the reconcile loop (``start_events``), reconnecting with a capped
back-off (``maybe_reconnect``).

Concurrency contract:

* libvirt's default event implementation is registered once per process
  (``virEventRegisterDefaultImpl``) and run by one daemon thread
  (``libvirt-events``). It must exist *before* a connection is opened: a remote
  connection opened earlier has no watch on its socket, so its events (and its
  close notification) never arrive. ``start_events`` therefore reopens a
  connection that was opened before it.
* Event callbacks run in that thread. They take no lock, call no libvirt API
  (not even ``dom.name()``) and change no state of the backend: a domain or
  network event only calls ``wake("libvirt")``; the close callback puts the
  closed connection on a queue (``queue.SimpleQueue``, made for this) and wakes.
  The main thread does the work: the next time it asks whether the connection is
  alive (``connected``, ``connect``, ``maybe_reconnect``...), it takes the queued
  closes under ``_lock`` and marks the connection lost. So every field of the
  backend is written by the thread that owns it (the CLI's, or the daemon's main
  loop), under ``_lock``, which also serialises the connection swap against
  ``close``.
* Errors: ``libvirtError`` is mapped to ``BackendError(kind="libvirt")`` here and
  nowhere else. A call that fails because libvirtd went away marks the
  connection lost (as the close callback does when events run).

libvirt quirks handled here:

* libvirt prints every error to stderr by default ("libvirt: ... error : ...");
  a daemon logging JSON must not get those lines, so a silent handler is
  installed (the errors still arrive as exceptions).
* libvirt 9.0 sends no event when a network's autostart flag changes:
  ``changed()`` is the cheap poll for that.
* Guests' taps must go back on bridges that are re-created under them: libvirt
  itself never re-attaches a tap (and neither restarting a network nor
  re-creating a bridge does).
"""

from __future__ import annotations

import queue
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import libvirt

from vnetd.errors import BackendError
from vnetd.log import get_logger
from vnetd.model.libvirt import GuestTap, ObservedNetwork
from vnetd.plan.actions import EnsureNetwork

#: First and longest wait between reconnection attempts. With the daemon's timer
#: (``--check-interval``, 1 s by default) calling ``maybe_reconnect``, vnetd is
#: connected again at most RECONNECT_MAX + one timer period after libvirtd is back.
RECONNECT_FIRST = 0.25
RECONNECT_MAX = 2.0
#: libvirt keepalive for remote connections: a hung libvirtd is noticed after ~15 s.
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3

#: Forward modes in which libvirt creates (and deletes) the network's bridge itself;
#: a network of another mode (bridge, macvtap, hostdev...) names a host bridge, or
#: none, and restarting it never brings a missing bridge back.
_OWN_BRIDGE_MODES = frozenset({None, "nat", "route", "open"})
_CLOSE_REASONS = {0: "error", 1: "eof", 2: "keepalive timeout", 3: "closed by client"}


def _silence(_ctx: object, _err: object) -> None:
    """libvirt's error callback: errors are raised as exceptions, not printed."""


libvirt.registerErrorHandler(_silence, None)


class _EventLoop:
    """libvirt's default event implementation, registered once per process."""

    _lock = threading.Lock()
    started = False

    @classmethod
    def ensure(cls) -> None:
        with cls._lock:
            if cls.started:
                return
            libvirt.virEventRegisterDefaultImpl()
            thread = threading.Thread(target=cls._run, name="libvirt-events", daemon=True)
            thread.start()
            cls.started = True

    @staticmethod
    def _run() -> None:
        log = get_logger()
        while True:
            try:
                libvirt.virEventRunDefaultImpl()
            except libvirt.libvirtError as exc:  # should not happen; never spin on it
                log.error("libvirt.event_loop_failed", error=str(exc))
                time.sleep(1.0)


def parse_xml(text: str) -> ET.Element:
    """Parse libvirt's XML. It is trusted, but a DTD or an entity has no business
    in it: refuse them instead of letting expat expand anything."""
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ValueError("refusing XML with a DTD or entity declaration")
    return ET.fromstring(text)  # noqa: S314 - no DTD/entities (checked above), libvirt's own output


def network_bridge(root: ET.Element) -> tuple[str | None, bool]:
    """The bridge named in a <network> definition, and whether libvirt creates it itself."""
    bridge = root.find("bridge")
    name = bridge.get("name") if bridge is not None else None
    forward = root.find("forward")
    mode = None if forward is None else forward.get("mode", "nat")
    if root.find("virtualport[@type='openvswitch']") is not None:
        return None, False  # an Open vSwitch bridge: not a Linux bridge vnetd can attach to
    return name, mode in _OWN_BRIDGE_MODES


def domain_taps(domain: str, root: ET.Element, network_bridges: dict[str, str]) -> list[GuestTap]:
    """A running domain's (live XML) interfaces that sit on a Linux bridge."""
    taps = []
    for iface in root.findall("devices/interface"):
        kind = iface.get("type")
        target = iface.find("target")
        source = iface.find("source")
        tap = target.get("dev") if target is not None else None
        if not tap or source is None or kind not in ("bridge", "network"):
            continue
        virtualport = iface.find("virtualport")
        if virtualport is not None and virtualport.get("type") == "openvswitch":
            continue
        if kind == "bridge":
            bridge = source.get("bridge")
        else:  # the live XML names the network's bridge; older libvirt does not
            bridge = source.get("bridge") or network_bridges.get(source.get("network") or "")
        if bridge:
            taps.append(GuestTap(domain, tap, bridge))
    return taps


class LibvirtBackend:
    """One libvirt connection (``uri``), opened on demand and re-opened when lost."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.log = get_logger()
        self._lock = threading.RLock()
        self._conn: Any = None
        self._with_events = False  # the connection was opened after the event loop existed
        self._callbacks: list[tuple[str, int]] = []
        self._lost = False  # the connection died (a close event taken from the queue, or a failed call)
        #: connections the close callback (event thread) reported closed, with the reason
        self._closed: queue.SimpleQueue[tuple[object, int]] = queue.SimpleQueue()
        self._wake: Callable[[str], None] | None = None
        self._state = "new"  # new | connected | disconnected: log transitions only once
        self._delay = RECONNECT_FIRST
        self._next_attempt = 0.0
        self._down_since: float | None = None
        self._fingerprint: tuple[tuple[str, bool, bool, bool], ...] | None = None
        #: the last connection error (None while connected)
        self.last_error: str | None = None

    # -- connection -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._lock:
            self._take_closes()
            return self._conn is not None and not self._lost

    @property
    def conn(self) -> Any:
        """The live ``virConnect`` (for diagnostics and tests), or None."""
        return self._conn if self.connected else None

    def _take_closes(self) -> None:
        """Apply the close events the event thread queued (caller holds ``_lock``)."""
        while True:
            try:
                conn, reason = self._closed.get_nowait()
            except queue.Empty:
                return
            if conn is self._conn:
                self._mark_lost(f"connection closed ({_CLOSE_REASONS.get(reason, reason)})")

    def connect(self) -> bool:
        """Open the connection (closing a lost one first). Never raises; logs
        ``libvirt.connected`` / ``libvirt.disconnected`` on changes of state."""
        with self._lock:
            self._take_closes()
            if self._conn is not None and not self._lost:
                return True
            self._discard()
            now = time.monotonic()
            try:
                conn = libvirt.open(self.uri)
                if conn is None:  # very old bindings returned None instead of raising
                    raise libvirt.libvirtError(f"cannot connect to {self.uri}")
            except libvirt.libvirtError as exc:
                self._connect_failed(str(exc), now)
                return False
            self._conn = conn
            self._lost = False
            self._with_events = _EventLoop.started
            if self._with_events:
                self._register(conn)
            fields: dict[str, object] = {"uri": self.uri}
            if self._down_since is not None and self._state == "disconnected":
                fields["down_s"] = round(now - self._down_since, 2)
            self.log.info("libvirt.connected", **fields)
            self._state = "connected"
            self._down_since = None
            self._delay = RECONNECT_FIRST
            self._next_attempt = 0.0
            self.last_error = None
            return True

    def maybe_reconnect(self, now: float | None = None) -> bool:
        """Try to reconnect if the back-off allows it now; True when it reconnected.

        Call it from a timer (the daemon: every ``--check-interval``); attempts are
        RECONNECT_FIRST, doubling, at most RECONNECT_MAX apart.
        """
        if self.connected:
            return False
        if (time.monotonic() if now is None else now) < self._next_attempt:
            return False
        return self.connect()

    def close(self) -> None:
        with self._lock:
            self._discard(force=True)

    def _connect_failed(self, error: str, now: float) -> None:
        self.last_error = error
        retry = self._delay
        if self._state != "disconnected":
            self.log.warning("libvirt.disconnected", uri=self.uri, error=error, retry_in_s=retry)
            self._down_since = self._down_since or now
        else:
            self.log.debug("libvirt.connect_retry", uri=self.uri, error=error, retry_in_s=retry)
        self._state = "disconnected"
        self._next_attempt = now + retry
        self._delay = min(self._delay * 2, RECONNECT_MAX)

    def _mark_lost(self, error: str) -> None:
        """The connection is dead (a queued close event, or a call that found it so); owner thread, under _lock."""
        if self._lost:
            return
        self._lost = True
        self.last_error = error
        now = time.monotonic()
        if self._state != "disconnected":
            self.log.warning("libvirt.disconnected", uri=self.uri, error=error, retry_in_s=0)
        self._state = "disconnected"
        self._down_since = now
        self._delay = RECONNECT_FIRST
        self._next_attempt = now  # the first attempt at once, then back off
        wake = self._wake
        if wake is not None:
            wake("libvirt")

    def _discard(self, force: bool = False) -> None:
        """Close the current connection if it is lost (or always, with ``force``)."""
        conn = self._conn
        if conn is None or not (force or self._lost):
            return
        self._conn = None
        callbacks, self._callbacks = self._callbacks, []
        for kind, cb_id in callbacks:
            try:
                if kind == "network":
                    conn.networkEventDeregisterAny(cb_id)
                else:
                    conn.domainEventDeregisterAny(cb_id)
            except libvirt.libvirtError:
                pass  # a dead connection cannot deregister; closing frees them
        if self._with_events:
            try:
                conn.unregisterCloseCallback()
            except libvirt.libvirtError:
                pass  # likewise
        try:
            conn.close()
        except libvirt.libvirtError:
            pass  # closing a dead connection reports its death once more
        self._fingerprint = None

    # -- events -----------------------------------------------------------------------

    def start_events(self, wake: Callable[[str], None]) -> None:
        """Deliver libvirt events as ``wake("libvirt")``; idempotent (the daemon calls
        it at start and after every reload). Registers the process-wide event loop
        first, and reopens a connection that was opened before it existed."""
        self._wake = wake
        _EventLoop.ensure()
        with self._lock:
            if self._conn is not None and not self._with_events:
                self._discard(force=True)
                self._state = "new"  # a deliberate reopen, not a loss
                self.connect()

    def _register(self, conn: Any) -> None:
        registrations: list[tuple[str, int, Callable[..., None]]] = [
            ("domain", libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_domain),
            ("domain", libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, self._on_device),
            ("domain", libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._on_device),
            ("network", libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, self._on_network),
        ]
        for kind, event_id, callback in registrations:
            try:
                if kind == "network":
                    cb_id = conn.networkEventRegisterAny(None, event_id, callback, conn)
                else:
                    cb_id = conn.domainEventRegisterAny(None, event_id, callback, conn)
            except libvirt.libvirtError as exc:
                self.log.warning("libvirt.events_unavailable", uri=self.uri, kind=kind, error=str(exc))
                continue
            self._callbacks.append((kind, cb_id))
        try:
            conn.registerCloseCallback(self._on_close, conn)
        except libvirt.libvirtError as exc:
            self.log.debug("libvirt.close_callback_unavailable", uri=self.uri, error=str(exc))
        try:
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        except libvirt.libvirtError:
            pass  # local drivers (test:///) have no keepalive

    def _wake_loop(self) -> None:
        wake = self._wake
        if wake is not None:
            wake("libvirt")

    def _on_domain(self, _conn: Any, _dom: Any, _event: int, _detail: int, _opaque: Any) -> None:
        """Event thread: wake the loop, nothing else (the loop re-reads what it needs)."""
        self._wake_loop()

    def _on_device(self, _conn: Any, _dom: Any, _alias: str, _opaque: Any) -> None:
        self._wake_loop()

    def _on_network(self, _conn: Any, _net: Any, _event: int, _detail: int, _opaque: Any) -> None:
        self._wake_loop()

    def _on_close(self, _conn: Any, reason: int, opaque: Any) -> None:
        """Event thread: queue the close for the owner thread (see the module docstring)."""
        if reason == libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT:
            return
        self._closed.put((opaque, reason))
        self._wake_loop()

    # -- reading ----------------------------------------------------------------------

    def observe(self) -> tuple[dict[str, ObservedNetwork], tuple[GuestTap, ...]]:
        """Every network by name, and every running guest's taps that sit on a bridge.

        ``ObservedNetwork.bridge`` is the bridge libvirt itself creates for the
        network (None for networks that use a host bridge or none): only that one
        comes back when the network is restarted.
        """
        with self._lock:
            conn = self._require("libvirt")
            try:
                networks, bridges = self._networks(conn)
                taps = self._taps(conn, bridges)
            except libvirt.libvirtError as exc:
                raise self._error("libvirt", exc) from exc
            except (ValueError, ET.ParseError) as exc:
                raise BackendError("libvirt", "libvirt", f"unreadable XML from libvirt: {exc}") from exc
            self._fingerprint = _fingerprint(networks.values())
            return networks, taps

    def changed(self) -> bool:
        """True when a network appeared, disappeared or changed state or autostart
        since the last ``observe`` (libvirt 9.0 has no event for autostart).
        Costs one RPC plus three per network; False while disconnected."""
        with self._lock:
            conn = self.conn
            if conn is None or self._fingerprint is None:
                return conn is not None
            try:
                now = tuple(sorted((n.name(), bool(n.isActive()), bool(n.autostart()), bool(n.isPersistent()))
                                   for n in conn.listAllNetworks()))
            except libvirt.libvirtError as exc:
                self._error("libvirt", exc)
                return True
            return now != self._fingerprint

    def _networks(self, conn: Any) -> tuple[dict[str, ObservedNetwork], dict[str, str]]:
        networks: dict[str, ObservedNetwork] = {}
        bridges: dict[str, str] = {}  # every network with a Linux bridge, for guests' interfaces
        for net in conn.listAllNetworks():
            try:
                name = net.name()
                root = parse_xml(net.XMLDesc(0))
                bridge, own = network_bridge(root)
                networks[name] = ObservedNetwork(name, bool(net.isActive()), bool(net.autostart()),
                                                 bridge if own else None, bool(net.isPersistent()))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                    continue  # undefined while we looked
                raise
            if bridge:
                bridges[name] = bridge
        return networks, bridges

    def _taps(self, conn: Any, bridges: dict[str, str]) -> tuple[GuestTap, ...]:
        taps: list[GuestTap] = []
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                name = dom.name()
                root = parse_xml(dom.XMLDesc(0))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                    continue  # shut off or undefined while we looked
                raise
            taps += domain_taps(name, root, bridges)
        return tuple(sorted(taps, key=lambda t: (t.domain, t.tap)))

    # -- changing ---------------------------------------------------------------------

    def execute(self, op: EnsureNetwork, resource: str) -> None:
        """Carry out one network operation; already-done states are not errors."""
        with self._lock:
            conn = self._require(resource)
            try:
                self._execute(conn, op)
            except libvirt.libvirtError as exc:
                if _already_done(op.operation, exc.get_error_code()):
                    return
                raise self._error(resource, exc) from exc
            finally:
                self._fingerprint = None

    def _execute(self, conn: Any, op: EnsureNetwork) -> None:
        if op.operation == "define":
            if not op.xml:
                raise libvirt.libvirtError(f"network {op.name} has no xml: to define it from")
            conn.networkDefineXML(op.xml)
            return
        net = conn.networkLookupByName(op.name)
        if op.operation == "start":
            net.create()
        elif op.operation == "stop":
            net.destroy()
        elif op.operation == "restart":
            try:
                net.destroy()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # not active
                    raise
            net.create()
        elif op.operation in ("autostart-on", "autostart-off"):
            net.setAutostart(1 if op.operation == "autostart-on" else 0)
        elif op.operation == "undefine":
            net.undefine()
        else:
            raise ValueError(f"unknown network operation {op.operation!r}")

    # -- errors -----------------------------------------------------------------------

    def _require(self, resource: str) -> Any:
        if not self.connected:
            reason = self.last_error or "not connected"
            raise BackendError("libvirt", resource, f"not connected to {self.uri}: {reason}")
        return self._conn

    def _error(self, resource: str, exc: libvirt.libvirtError) -> BackendError:
        """Map a libvirtError; a call that failed because libvirtd is gone marks the
        connection lost (without events, this is how the CLI and a daemon whose
        close callback has not fired yet notice)."""
        message = exc.get_error_message() or str(exc)
        conn = self._conn
        alive = True
        if conn is not None:
            try:
                alive = bool(conn.isAlive())
            except libvirt.libvirtError:
                alive = False
        if not alive:
            self._mark_lost(message)
            return BackendError("libvirt", resource, f"connection to {self.uri} lost: {message}")
        return BackendError("libvirt", resource, message)


def _already_done(operation: str, code: int) -> bool:
    """libvirt's answer when the network already is as wanted (idempotent ops)."""
    if operation == "start":
        return bool(code == libvirt.VIR_ERR_OPERATION_INVALID)  # "network is already active"
    if operation == "stop":
        return code in (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_NO_NETWORK)  # not active / gone
    if operation == "undefine":
        return bool(code == libvirt.VIR_ERR_NO_NETWORK)
    return False


def _fingerprint(networks: Any) -> tuple[tuple[str, bool, bool, bool], ...]:
    return tuple(sorted((n.name, n.active, n.autostart, n.persistent) for n in networks))


def show_libvirt(uri: str) -> dict[str, Any] | None:
    """libvirt's networks as a ``libvirt:`` state-file section; None when unreachable.

    Fed back unchanged it plans nothing: ``autostart`` is written only for
    persistent networks (a transient one cannot have it).
    """
    backend = LibvirtBackend(uri)
    if not backend.connect():
        return None
    try:
        networks, _taps = backend.observe()
    except BackendError:
        return None
    finally:
        backend.close()
    out: list[dict[str, Any]] = []
    for name in sorted(networks):
        net = networks[name]
        entry: dict[str, Any] = {"name": name, "state": "active" if net.active else "inactive"}
        if net.persistent:
            entry["autostart"] = net.autostart
        out.append(entry)
    return {"uri": uri, "networks": out}
