# SPDX-License-Identifier: MIT
"""Issue 5 with libvirt's own ``test:///`` driver: running guests' taps kept on their
bridges, and libvirt's events delivered to vnetd.

The driver reads a custom XML written here: guests with interfaces on ``br0`` and
``brdmz`` (directly, and through a libvirt network whose bridge is ``brdmz``), a
guest that is shut off, and one whose tap does not exist. Each tap is a veth in a
test namespace named as ``XMLDesc()`` reports it; its peer is the guest's NIC in a
namespace of its own, so traffic between guests proves the re-attachment.

Note: the driver keeps a ``<target dev>`` as written unless the name starts with
``vnet`` (libvirt's reserved prefix for generated names): such a name is replaced
by ``testnetN``, numbered per domain. The taps here are named ``vmNN-ethN``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon_support import DaemonProcess
from tests.support import Netns, StateDir, vnetd
from tests.traffic import reachable, wait_bridged

pytestmark = pytest.mark.kernel

GUESTS_XML = """\
<node>
  <network>
    <name>dmz</name>
    <bridge name='brdmz'/>
  </network>
  <domain type='test'>
    <name>vml000010</name>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices>
      <interface type='bridge'><source bridge='br0'/><target dev='vm10-eth0'/></interface>
      <interface type='bridge'><source bridge='brdmz'/><target dev='vm10-eth1'/></interface>
    </devices>
  </domain>
  <domain type='test'>
    <name>vml000020</name>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices>
      <interface type='network'><source network='dmz'/><target dev='vm20-eth0'/></interface>
    </devices>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>vml000030</name>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices>
      <interface type='bridge'><source bridge='br0'/><target dev='vm30-eth0'/></interface>
    </devices>
    <test:runstate>5</test:runstate>
  </domain>
  <domain type='test'>
    <name>vml000040</name>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices>
      <interface type='bridge'><source bridge='br0'/><target dev='vm40-eth0'/></interface>
    </devices>
  </domain>
</node>
"""

BRIDGES = """
interfaces:
- name: br0
  type: linux-bridge
  state: up
  mtu: 9000
  bridge:
    options:
      stp: {enabled: false, forward-delay: 0}
- name: brdmz
  type: linux-bridge
  state: up
  bridge:
    options:
      stp: {enabled: false, forward-delay: 0}
"""

LIBVIRT = """
libvirt:
  uri: {uri}
  guests:
    reattach: true
"""


class Host:
    def __init__(self, ns: Netns, gw: Netns, dmz: Netns, state_dir: StateDir, uri: str) -> None:
        self.ns, self.gw, self.dmz, self.state_dir, self.uri = ns, gw, dmz, state_dir, uri

    def master(self, tap: str) -> str | None:
        link = self.ns.link(tap)
        assert link is not None, f"{tap} is gone"
        return link.get("master")  # type: ignore[return-value]

    def dmz_reachable_from_gateway(self) -> bool:
        """vml000010's eth1 and vml000020's eth0 talk over brdmz: wait until their taps
        forward on it, then until a ping gets through (within a deadline, not one try)."""
        wait_bridged(self.ns, "brdmz", ("vm10-eth1", "vm20-eth0"))
        return reachable(self.gw, "10.0.0.20")

    def apply(self, *args: str) -> str:
        result = vnetd("apply", *args, netns=self.ns, state_dir=self.state_dir)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


@pytest.fixture
def guests_xml(tmp_path: Path) -> str:
    path = tmp_path / "guests.xml"
    path.write_text(GUESTS_XML)
    return f"test://{path}"


@pytest.fixture
def host(make_netns: Callable[..., Netns], state_dir: StateDir, guests_xml: str) -> Host:
    ns, gw, dmz = make_netns("lvhost"), make_netns("gw"), make_netns("dmz")
    ns.veth("vm10-eth0", "eth0", gw)
    ns.veth("vm10-eth1", "eth1", gw)
    ns.veth("vm20-eth0", "eth0", dmz)
    ns.veth("vm30-eth0", "vm30-peer")
    for tap in ("vm10-eth0", "vm10-eth1", "vm20-eth0", "vm30-eth0"):
        ns.ip("link", "set", tap, "up")
    gw.ip("addr", "add", "10.0.0.10/24", "dev", "eth1")
    dmz.ip("addr", "add", "10.0.0.20/24", "dev", "eth0")
    for guest, nic in ((gw, "eth0"), (gw, "eth1"), (dmz, "eth0")):
        guest.ip("link", "set", nic, "up")
    state_dir.write("10-bridges.yaml", BRIDGES)
    state_dir.write("30-libvirt.yaml", LIBVIRT.format(uri=guests_xml))
    return Host(ns, gw, dmz, state_dir, guests_xml)


def test_running_guests_taps_are_attached_with_the_bridge_mtu(host: Host) -> None:
    out = host.apply()
    assert "converged" in out
    assert "applied: guest/vml000010/vm10-eth0: controller want br0, have (none)" in out
    assert host.master("vm10-eth0") == "br0"
    assert host.master("vm10-eth1") == "brdmz"
    assert host.master("vm20-eth0") == "brdmz"  # through the libvirt network "dmz"
    assert host.ns.link("vm10-eth0")["mtu"] == 9000  # type: ignore[index]
    assert host.master("vm30-eth0") is None  # a guest that is shut off is ignored
    assert "vm40-eth0" not in out  # a running guest whose tap does not exist is no error
    assert host.dmz_reachable_from_gateway()

    before = host.ns.settled_snapshot()
    assert "converged: nothing to do" in host.apply()
    assert host.ns.snapshot() == before


def test_released_tap_is_planned_and_reattached(host: Host) -> None:
    host.apply()
    host.ns.ip("link", "set", "vm10-eth0", "nomaster")
    host.ns.ip("link", "set", "vm20-eth0", "master", "br0")  # on the wrong bridge
    result = vnetd("plan", "--format", "json", netns=host.ns, state_dir=host.state_dir)
    assert result.returncode == 2, result.stderr
    changes = {(c["resource"], c["field"], c["want"], c["have"]) for c in json.loads(result.stdout)["changes"]}
    assert changes == {("guest/vml000010/vm10-eth0", "controller", "br0", None),
                       ("guest/vml000020/vm20-eth0", "controller", "brdmz", "br0")}
    host.apply()
    assert host.master("vm10-eth0") == "br0" and host.master("vm20-eth0") == "brdmz"
    assert host.dmz_reachable_from_gateway()


def test_bridge_deleted_under_guests_is_recreated_with_their_taps_in_one_pass(host: Host) -> None:
    host.apply()
    host.ns.ip("link", "del", "brdmz")  # `service network restart`: the taps fall off
    host.ns.ip("link", "add", "brdmz", "type", "bridge")  # ...and the bridge comes back empty
    host.ns.ip("link", "set", "brdmz", "up")
    assert host.master("vm10-eth1") is None
    assert host.gw.exec("ping", "-c1", "-W1", "10.0.0.20", check=False).returncode != 0
    host.apply()
    assert host.master("vm10-eth1") == "brdmz" and host.master("vm20-eth0") == "brdmz"

    host.ns.ip("link", "del", "brdmz")  # now gone for good: vnetd re-creates it and re-attaches
    result = vnetd("apply", "--format", "json", netns=host.ns, state_dir=host.state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    applied = [(a["resource"], a["action"]) for a in report["applied"]]
    assert ("interface/brdmz", "CreateLink") in applied
    assert ("guest/vml000010/vm10-eth1", "AttachTap") in applied
    assert ("guest/vml000020/vm20-eth0", "AttachTap") in applied
    assert report["converged"] and report["remaining"] == []
    assert host.master("vm10-eth1") == "brdmz" and host.master("vm20-eth0") == "brdmz"
    assert host.dmz_reachable_from_gateway()


def test_reattach_off_leaves_taps_alone(host: Host) -> None:
    host.state_dir.write("30-libvirt.yaml", LIBVIRT.format(uri=host.uri).replace("true", "false"))
    host.apply()
    assert host.master("vm10-eth0") is None


def test_show_lists_libvirt_networks(guests_xml: str) -> None:
    from vnetd.backends.libvirt import show_libvirt

    assert show_libvirt(guests_xml) == {"uri": guests_xml,
                                        "networks": [{"name": "dmz", "state": "active", "autostart": False}]}
    assert show_libvirt("test:///nonexistent/file.xml") is None


# --------------------------------------------------------------------------- the backend in-process


class Wakes:
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.cond = threading.Condition()

    def __call__(self, reason: str) -> None:
        with self.cond:
            self.reasons.append(reason)
            self.cond.notify_all()

    def take(self, timeout: float = 10.0) -> list[str]:
        """Wait for at least one wake-up and return all of them so far."""
        with self.cond:
            self.cond.wait_for(lambda: self.reasons, timeout)
            out, self.reasons = self.reasons, []
        return out


@pytest.fixture
def backend(guests_xml: str) -> Iterator[object]:
    from vnetd.backends.libvirt import LibvirtBackend

    lv = LibvirtBackend(guests_xml)
    try:
        yield lv
    finally:
        lv.close()


def test_observe_reads_networks_and_running_guests_taps(backend) -> None:  # type: ignore[no-untyped-def]
    from vnetd.model.libvirt import GuestTap, ObservedNetwork

    assert not backend.connected
    assert backend.connect() and backend.connected
    networks, taps = backend.observe()
    assert networks == {"dmz": ObservedNetwork("dmz", True, False, "brdmz", True)}
    assert taps == (GuestTap("vml000010", "vm10-eth0", "br0"), GuestTap("vml000010", "vm10-eth1", "brdmz"),
                    GuestTap("vml000020", "vm20-eth0", "brdmz"), GuestTap("vml000040", "vm40-eth0", "br0"))


def test_network_operations_are_idempotent(backend) -> None:  # type: ignore[no-untyped-def]
    from vnetd.errors import BackendError
    from vnetd.plan.actions import EnsureNetwork

    assert backend.connect()
    res = "libvirt/network/dmz"

    def state() -> tuple[bool, bool] | None:
        net = backend.observe()[0].get("dmz")
        return None if net is None else (net.active, net.autostart)

    backend.execute(EnsureNetwork("dmz", "start"), res)  # already active: not an error
    backend.execute(EnsureNetwork("dmz", "autostart-on"), res)
    assert state() == (True, True)
    backend.execute(EnsureNetwork("dmz", "restart"), res)
    assert state() == (True, True)
    backend.execute(EnsureNetwork("dmz", "stop"), res)
    backend.execute(EnsureNetwork("dmz", "stop"), res)
    assert state() == (False, True)
    backend.execute(EnsureNetwork("dmz", "autostart-off"), res)
    backend.execute(EnsureNetwork("dmz", "undefine"), res)
    backend.execute(EnsureNetwork("dmz", "undefine"), res)
    assert state() is None
    with pytest.raises(BackendError) as err:
        backend.execute(EnsureNetwork("dmz", "start"), res)
    assert err.value.resource == res and err.value.kind == "libvirt"
    xml = "<network><name>dmz</name><bridge name='brdmz'/></network>"
    backend.execute(EnsureNetwork("dmz", "define", xml), res)
    backend.execute(EnsureNetwork("dmz", "start"), res)
    assert state() == (True, False)


def test_domain_and_network_events_wake_the_loop(backend) -> None:  # type: ignore[no-untyped-def]
    from vnetd.plan.actions import EnsureNetwork

    wakes = Wakes()
    assert backend.connect()  # opened before the event loop exists: start_events reopens it
    backend.start_events(wakes)
    backend.start_events(wakes)  # idempotent (the daemon calls it on every reload)
    assert backend.connected
    backend.observe()
    assert not backend.changed()

    dom = backend.conn.lookupByName("vml000020")
    dom.destroy()  # the guest shuts off
    assert set(wakes.take()) == {"libvirt"}
    assert all(t.domain != "vml000020" for t in backend.observe()[1])
    dom.create()  # and starts again
    assert "libvirt" in wakes.take()
    assert any(t.domain == "vml000020" for t in backend.observe()[1])

    backend.execute(EnsureNetwork("dmz", "stop"), "libvirt/network/dmz")
    assert "libvirt" in wakes.take()
    backend.execute(EnsureNetwork("dmz", "start"), "libvirt/network/dmz")
    assert "libvirt" in wakes.take()

    backend.observe()
    backend.conn.networkLookupByName("dmz").setAutostart(1)  # libvirt 9.0 sends no event for this
    assert backend.changed()


def test_event_callbacks_call_no_libvirt_api_from_the_event_thread(backend, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 11: a callback runs in libvirt's event thread, which must not call back into
    libvirt (the docstring's contract); only the owner thread reads domains and networks."""
    import libvirt

    calls: list[tuple[str, str]] = []
    for cls in (libvirt.virDomain, libvirt.virNetwork):
        for method in ("name", "XMLDesc", "isActive", "UUIDString"):
            original = getattr(cls, method)

            def spy(self, *args, _original=original, _what=f"{cls.__name__}.{method}"):  # type: ignore[no-untyped-def]
                calls.append((threading.current_thread().name, _what))
                return _original(self, *args)

            monkeypatch.setattr(cls, method, spy)
    wakes = Wakes()
    backend.start_events(wakes)
    assert backend.connect()
    dom = backend.conn.lookupByName("vml000020")
    dom.destroy()
    assert "libvirt" in wakes.take()
    dom.create()
    assert "libvirt" in wakes.take()
    net = backend.conn.networkLookupByName("dmz")
    net.destroy()
    assert "libvirt" in wakes.take()
    net.create()
    assert "libvirt" in wakes.take()
    from_events = [what for thread, what in calls if thread == "libvirt-events"]
    assert not from_events, from_events


def test_a_close_event_is_taken_by_the_owner_thread_under_the_lock(backend) -> None:  # type: ignore[no-untyped-def]
    """The close callback (event thread) only queues and wakes; the connection's state is
    written when the owner thread next asks, under the backend's lock."""
    import libvirt

    wakes = Wakes()
    backend.start_events(wakes)
    assert backend.connect()
    conn = backend.conn
    callback = threading.Thread(target=backend._on_close, args=(conn, libvirt.VIR_CONNECT_CLOSE_REASON_EOF, conn),
                                name="libvirt-events")
    with backend._lock:  # the owner thread is busy with the connection: the callback must not wait for it
        callback.start()
        callback.join(timeout=10)
        assert not callback.is_alive()
        assert backend._state == "connected" and not backend._lost  # nothing written by the event thread
    assert wakes.take() == ["libvirt"]
    assert not backend.connected  # the owner thread takes the close
    assert backend._state == "disconnected" and backend.last_error == "connection closed (eof)"
    assert backend.maybe_reconnect(now=float("inf"))  # and reconnects (test:/// is always there)
    assert backend.connected


# --------------------------------------------------------------------------- the daemon


def test_daemon_puts_taps_back_when_a_bridge_is_recreated(host: Host) -> None:
    daemon = DaemonProcess(host.ns, host.state_dir)
    try:
        daemon.wait_ready()
        assert daemon.wait_until(lambda: host.master("vm10-eth1") == "brdmz" and host.master("vm10-eth0") == "br0")
        daemon.wait_for("libvirt.connected", uri=host.uri)
        mark = daemon.mark()
        host.ns.ip("link", "del", "brdmz")
        daemon.wait_for("action.applied", since=mark, resource="guest/vml000020/vm20-eth0")
        assert daemon.wait_until(lambda: host.master("vm10-eth1") == "brdmz" and host.master("vm20-eth0") == "brdmz")
        assert host.dmz_reachable_from_gateway()
        assert host.master("vm30-eth0") is None
    finally:
        code = daemon.stop()
    assert code == 0, "\n".join(daemon.lines[-30:])
    assert not daemon.bad_lines, daemon.bad_lines[:5]
