# SPDX-License-Identifier: MIT
"""Real packets between test namespaces: a one-shot TCP server and client, and ping,
over IPv4 or IPv6 (an address with a ':' is IPv6).

Traffic only ever goes to addresses of namespaces the test made.

A packet sent the moment a change is made can be lost for reasons that are not the
change's fault: a port that is not forwarding yet, a neighbour still being resolved,
a machine so loaded that a 1 s reply window passes. So a test first waits for the
conditions traffic needs (``wait_bridged``: the ports on their bridge and
forwarding, the bridge up with carrier), and then asserts that traffic flows
*within a deadline* (``reachable``, ``eventually``), never on one packet. Negative
checks (something must be blocked) may stay single-shot: a slow machine cannot make
them pass wrongly for long, and the positive checks around them are waited for.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

from tests.support import Netns, StateDir, vnetd

_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("ready", flush=True)
s.settimeout(float(sys.argv[3]))
while True:
    try:
        c, peer = s.accept()
    except TimeoutError:
        break
    c.sendall(peer[0].encode())
    c.close()
    print(peer[0], flush=True)
"""

_CLIENT = r"""
import errno, socket, sys
c = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_STREAM)
c.settimeout(float(sys.argv[3]))
try:
    c.connect((sys.argv[1], int(sys.argv[2])))
    print("ok " + c.recv(64).decode())
except TimeoutError:
    print("timeout")
except OSError as exc:
    print({errno.ECONNREFUSED: "refused", errno.EHOSTUNREACH: "unreachable",
           errno.ENETUNREACH: "unreachable", errno.EACCES: "prohibited"}.get(exc.errno, "error %s" % exc.errno))
"""


class TcpServer:
    """Accepts connections (until ``lifetime`` seconds of silence) and answers the peer's address."""

    def __init__(self, ns: Netns, address: str, port: int, lifetime: float = 30.0) -> None:
        self.proc = ns.popen(sys.executable, "-c", _SERVER, address, str(port), str(lifetime),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == "ready", (line, self.proc.stderr.read() if self.proc.stderr else "")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> TcpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tcp_connect(ns: Netns, address: str, port: int, timeout: float = 2.0) -> str:
    """'ok <peer address the server saw>', 'refused', 'unreachable', 'prohibited' (ICMPv6
    administratively prohibited), 'timeout' or 'error N'."""
    return ns.exec(sys.executable, "-c", _CLIENT, address, str(port), str(timeout)).stdout.strip()


def ping(ns: Netns, address: str, count: int = 1, wait: float = 1.0) -> bool:
    result = ns.exec("ping", "-n", "-q", "-c", str(count), "-W", str(wait), address, check=False)
    return result.returncode == 0


def reachable(ns: Netns, address: str, timeout: float = 10.0) -> bool:
    """Ping answered within ``timeout`` (each try waits 1 s for its reply)."""
    return eventually(lambda: ping(ns, address), timeout=timeout)


def _port_view(ns: Netns, port: str) -> tuple[str | None, str | None, bool]:
    """(master, bridge-port STP state, oper up) of a link as the kernel reports them."""
    out = ns.exec("ip", "-d", "-j", "link", "show", "dev", port, check=False).stdout
    if not out.strip():
        return None, None, False
    link = json.loads(out)[0]
    slave = (link.get("linkinfo") or {}).get("info_slave_data") or {}
    return link.get("master"), slave.get("state"), "LOWER_UP" in link.get("flags", [])


def bridged(ns: Netns, bridge: str, ports: Iterable[str]) -> bool:
    """Every port on ``bridge``, up and forwarding, and the bridge up with carrier."""
    for port in ports:
        master, state, up = _port_view(ns, port)
        if master != bridge or state != "forwarding" or not up:
            return False
    _master, _state, bridge_up = _port_view(ns, bridge)
    return bridge_up


def wait_bridged(ns: Netns, bridge: str, ports: Iterable[str], timeout: float = 10.0) -> None:
    """Wait until ``bridged`` holds; fail saying what each port looked like otherwise."""
    ports = tuple(ports)
    if eventually(lambda: bridged(ns, bridge, ports), timeout=timeout):
        return
    seen = {name: _port_view(ns, name) for name in (*ports, bridge)}
    raise AssertionError(f"{bridge} never forwarded for {ports} within {timeout} s: "
                         f"(master, port state, carrier) = {seen}")


def eventually(check: Callable[[], object], timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll ``check()`` until it is true (functional waiting, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


class Gateway:
    """A firewall between two hosts, each in its namespace: ``untrusted`` (an address
    ``untrusted_address``) -- ``gw`` (eth0 outside, eth1 inside, vnetd's state) --
    ``dmz`` (``dmz_address``); either address family."""

    def __init__(self, untrusted: Netns, gw: Netns, dmz: Netns, state: StateDir, untrusted_address: str,
                 dmz_address: str) -> None:
        self.untrusted, self.gw, self.dmz, self.state = untrusted, gw, dmz, state
        self.untrusted_address, self.dmz_address = untrusted_address, dmz_address

    def apply(self) -> subprocess.CompletedProcess[str]:
        result = vnetd("apply", netns=self.gw, state_dir=self.state)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def plan(self) -> tuple[int, dict]:  # type: ignore[type-arg]
        result = vnetd("plan", "--format", "json", netns=self.gw, state_dir=self.state)
        assert result.returncode in (0, 2), result.stderr
        return result.returncode, json.loads(result.stdout)

    def dmz_to_untrusted(self) -> str:
        with TcpServer(self.untrusted, self.untrusted_address, 8080):
            return tcp_connect(self.dmz, self.untrusted_address, 8080)

    def untrusted_to_dmz(self) -> str:
        with TcpServer(self.dmz, self.dmz_address, 2222):
            return tcp_connect(self.untrusted, self.dmz_address, 2222)
