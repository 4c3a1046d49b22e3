# SPDX-License-Identifier: MIT
"""Issue 5 against a real libvirtd, started by the tests inside a test namespace.

The libvirtd runs with private state (see tests/libvirtd_support.py): its NAT
network — virbr0, dnsmasq, iptables-nft rules — exists only in the test namespace,
and vnetd talks to it at ``qemu:///system?socket=...``. Covered: an undefined
network defined from ``xml:`` and started; a destroyed network started again;
autostart turned back on; virbr0 deleted under the active network -> the network
restarted; libvirtd stopped and started -> vnetd reconnects and repairs resume
(the daemon, and the backend in-process); the nft rules libvirtd writes reported
as a backend mismatch instead of fought.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_support import DaemonProcess
from tests.libvirtd_support import DEFAULT_XML, Libvirtd, sandboxed_libvirtd
from tests.support import StateDir, sh, vnetd

pytestmark = [pytest.mark.kernel, pytest.mark.libvirtd]


def network_yaml(uri: str, state: str = "active", autostart: bool | None = True, xml: bool = True) -> str:
    lines = ["libvirt:", f"  uri: {uri}", "  networks:", "  - name: default", f"    state: {state}"]
    if autostart is not None:
        lines.append(f"    autostart: {'true' if autostart else 'false'}")
    if xml:
        lines.append("    xml: |")
        lines += [f"      {line}" for line in DEFAULT_XML.splitlines()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def libvirtd_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Libvirtd]:
    with sandboxed_libvirtd(tmp_path_factory.mktemp("libvirtd")) as daemon:
        yield daemon


@pytest.fixture
def lv(libvirtd_sandbox: Libvirtd) -> Libvirtd:
    """The module's libvirtd, running and without networks, for each test."""
    if not libvirtd_sandbox.running:
        libvirtd_sandbox.start()
    libvirtd_sandbox.remove_networks()
    # destroying a network SIGTERMs its dnsmasq without waiting for it: the network's
    # next start must not find the old dnsmasq still bound to 192.168.122.1
    assert poll(lambda: not dnsmasq_running(libvirtd_sandbox)), "a dnsmasq outlived its network"
    return libvirtd_sandbox


def apply(lv: Libvirtd, state_dir: StateDir) -> str:
    result = vnetd("apply", netns=lv.ns, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr + lv.log_tail()
    return result.stdout


def changes(lv: Libvirtd, state_dir: StateDir) -> set[tuple[str, str, object, object]]:
    result = vnetd("plan", "--format", "json", netns=lv.ns, state_dir=state_dir)
    assert result.returncode in (0, 2), result.stdout + result.stderr
    return {(c["resource"], c["field"], c["want"], c["have"]) for c in json.loads(result.stdout)["changes"]}


def virbr0(lv: Libvirtd) -> list[str]:
    """virbr0's IPv4 addresses in the test namespace (AssertionError if it is gone)."""
    link = lv.ns.link("virbr0")
    assert link is not None, "virbr0 is missing"
    return [f"{a['local']}/{a['prefixlen']}" for a in lv.ns.json("addr", "show", "dev", "virbr0")[0]["addr_info"]
            if a["family"] == "inet"]


def dnsmasq_running(lv: Libvirtd) -> bool:
    def comm(pid: str) -> str:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except FileNotFoundError:
            return ""  # exited since it was listed

    return any(comm(pid) == "dnsmasq" for pid in sh("ip", "netns", "pids", lv.ns.name).stdout.split())


@pytest.fixture
def nat(lv: Libvirtd, state_dir: StateDir) -> Libvirtd:
    """The article's set-up 1 built by vnetd: default defined, active, autostarted."""
    state_dir.write("30-libvirt.yaml", network_yaml(lv.uri))
    apply(lv, state_dir)
    return lv


def test_undefined_network_is_defined_from_xml_and_started(lv: Libvirtd, state_dir: StateDir) -> None:
    state_dir.write("30-libvirt.yaml", network_yaml(lv.uri))
    assert lv.network() is None
    assert changes(lv, state_dir) == {("libvirt/network/default", "exists", True, False),
                                      ("libvirt/network/default", "state", "active", "absent"),
                                      ("libvirt/network/default", "autostart", True, False)}
    out = apply(lv, state_dir)
    assert "converged: 3 changes" in out
    assert lv.network() == (True, True, True)
    assert virbr0(lv) == ["192.168.122.1/24"] and dnsmasq_running(lv)
    assert sh("ip", "link", "show", "virbr0", check=False).returncode != 0  # only in the test namespace
    assert "converged: nothing to do" in apply(lv, state_dir)


def test_destroyed_network_is_started_again(nat: Libvirtd, state_dir: StateDir) -> None:
    conn = nat.connect()
    conn.networkLookupByName("default").destroy()
    conn.close()
    assert nat.ns.link("virbr0") is None
    assert changes(nat, state_dir) == {("libvirt/network/default", "state", "active", "inactive")}
    apply(nat, state_dir)
    assert nat.network() == (True, True, True)
    assert virbr0(nat) == ["192.168.122.1/24"]


def test_show_lists_networks_as_a_state_file_that_plans_nothing(nat: Libvirtd, state_dir: StateDir) -> None:
    import yaml

    from vnetd.backends.libvirt import show_libvirt

    section = show_libvirt(nat.uri)
    assert section == {"uri": nat.uri, "networks": [{"name": "default", "state": "active", "autostart": True}]}
    state_dir.write("30-libvirt.yaml", yaml.safe_dump({"libvirt": section}))
    assert changes(nat, state_dir) == set()


def test_autostart_turned_off_is_turned_on(nat: Libvirtd, state_dir: StateDir) -> None:
    conn = nat.connect()
    conn.networkLookupByName("default").setAutostart(0)
    conn.close()
    assert changes(nat, state_dir) == {("libvirt/network/default", "autostart", True, False)}
    apply(nat, state_dir)
    assert nat.network() == (True, True, True)


def test_bridge_deleted_under_active_network_restarts_it(nat: Libvirtd, state_dir: StateDir) -> None:
    nat.ns.ip("link", "del", "virbr0")
    assert nat.network() == (True, True, True)  # libvirt does not notice
    assert changes(nat, state_dir) == {("libvirt/network/default", "bridge", "virbr0", None)}
    apply(nat, state_dir)
    assert virbr0(nat) == ["192.168.122.1/24"] and dnsmasq_running(nat)
    assert "MASQUERADE" in nat.ns.exec("iptables", "-t", "nat", "-S").stdout
    assert changes(nat, state_dir) == set()


def test_inactive_then_absent(nat: Libvirtd, state_dir: StateDir) -> None:
    state_dir.write("30-libvirt.yaml", network_yaml(nat.uri, state="inactive", autostart=False, xml=False))
    apply(nat, state_dir)
    assert nat.network() == (False, False, True)
    assert nat.ns.link("virbr0") is None
    state_dir.write("30-libvirt.yaml", network_yaml(nat.uri, state="absent", autostart=None, xml=False))
    apply(nat, state_dir)
    assert nat.network() is None


def test_missing_network_without_xml_is_reported(lv: Libvirtd, state_dir: StateDir) -> None:
    state_dir.write("30-libvirt.yaml", network_yaml(lv.uri, xml=False))
    result = vnetd("apply", netns=lv.ns, state_dir=state_dir)
    assert result.returncode == 1
    assert "problem: libvirt/network/default: libvirt has no network 'default'" in result.stdout


FIREWALL = """
firewall:
  filter:
    FORWARD:
      rules:
      - -m physdev --physdev-is-bridged -j ACCEPT
"""


def test_libvirts_nft_rules_are_reported_not_fought(nat: Libvirtd, state_dir: StateDir) -> None:
    """libvirtd writes its NAT rules with the host's iptables, the nft variant on Debian;
    vnetd (legacy tables) says so and leaves them alone."""
    state_dir.write("20-firewall.yaml", FIREWALL)
    libvirt_rules = nat.ns.exec("iptables-nft-save").stdout
    assert "LIBVIRT_PRT" in libvirt_rules and "MASQUERADE" in libvirt_rules
    check = vnetd("check", netns=nat.ns, state_dir=state_dir)
    assert check.returncode == 0, check.stderr
    assert "firewall.backend_mismatch: nf_tables has " in check.stderr and "ip nat" in check.stderr
    result = vnetd("apply", netns=nat.ns, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "firewall.backend_mismatch" in result.stderr
    assert "--physdev-is-bridged" in nat.ns.iptables_save("filter")  # vnetd's rule, in the legacy tables
    assert nat.ns.exec("iptables-nft-save").stdout.count("LIBVIRT") == libvirt_rules.count("LIBVIRT")


# --------------------------------------------------------------------------- connection loss


class Wakes:
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, reason: str) -> None:
        with self.lock:
            self.reasons.append(reason)


def poll(check, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def test_backend_notices_the_loss_and_reconnects(nat: Libvirtd) -> None:
    from vnetd.backends.libvirt import LibvirtBackend
    from vnetd.errors import BackendError

    backend = LibvirtBackend(nat.uri)
    wakes = Wakes()
    try:
        backend.start_events(wakes)
        assert backend.connect()
        assert backend.observe()[0]["default"].bridge == "virbr0"
        nat.stop()
        assert poll(lambda: not backend.connected)  # the close callback, from the event thread
        assert "libvirt" in wakes.reasons
        assert backend.last_error and "closed" in backend.last_error
        with pytest.raises(BackendError):
            backend.observe()
        assert not backend.maybe_reconnect()  # libvirtd is down: no exception, just False
        nat.start()
        assert poll(backend.maybe_reconnect)  # what the daemon's timer calls
        assert backend.connected and backend.observe()[0]["default"].active
    finally:
        backend.close()


HOST_BRIDGE = """
interfaces:
- name: brtest
  type: linux-bridge
  state: up
libvirt:
  networks:
  - name: hostbr
    state: active
    xml: |
      <network>
        <name>hostbr</name>
        <forward mode='bridge'/>
        <bridge name='brtest'/>
      </network>
"""


def test_daemon_follows_events_survives_libvirtd_restart_and_resumes(nat: Libvirtd, state_dir: StateDir) -> None:
    """``hostbr`` uses a host bridge: starting or stopping it changes nothing in the
    kernel, so only libvirt's network event can wake the daemon for it (the periodic
    resync is a minute away)."""
    state_dir.write("10-hostbr.yaml", HOST_BRIDGE)
    daemon = DaemonProcess(nat.ns, state_dir)

    def destroy(name: str) -> None:
        conn = nat.connect()
        conn.networkLookupByName(name).destroy()
        conn.close()

    def event_repairs(name: str) -> None:
        mark = daemon.mark()
        destroy(name)
        drift = daemon.wait_for("drift.detected", since=mark, resource=f"libvirt/network/{name}")
        assert "libvirt" in drift["source"].split(","), drift
        daemon.wait_for("action.applied", since=mark, resource=f"libvirt/network/{name}")
        assert poll(lambda: bool(nat.network(name)[0]))

    try:
        daemon.wait_ready()
        daemon.wait_for("libvirt.connected", uri=nat.uri)
        assert poll(lambda: nat.network("hostbr") == (True, False, True))
        event_repairs("hostbr")
        mark = daemon.mark()
        destroy("default")  # virbr0 goes too: netlink or libvirt's event, whichever comes first
        daemon.wait_for("action.applied", since=mark, resource="libvirt/network/default")
        assert poll(lambda: nat.network() == (True, True, True))

        # libvirtd goes away: logged, and everything else is still managed
        mark = daemon.mark()
        nat.stop()
        lost = daemon.wait_for("libvirt.disconnected", since=mark, uri=nat.uri)
        assert lost["error"]
        nat.ns.ip("link", "del", "brtest")
        daemon.wait_for("action.applied", since=mark, resource="interface/brtest")

        # libvirtd is back: vnetd reconnects by itself, events and repairs resume
        mark = daemon.mark()
        nat.start()
        daemon.wait_for("libvirt.connected", since=mark, timeout=15, uri=nat.uri)
        event_repairs("hostbr")
        nat.ns.ip("link", "del", "virbr0")
        daemon.wait_for("action.applied", since=mark, resource="libvirt/network/default", field="bridge")
        assert poll(lambda: nat.ns.link("virbr0") is not None)
        assert virbr0(nat) == ["192.168.122.1/24"]
    finally:
        code = daemon.stop()
    assert code == 0, "\n".join(daemon.lines[-30:])
    assert not daemon.bad_lines, f"lines that are not JSON (libvirt printing?): {daemon.bad_lines[:5]}"
