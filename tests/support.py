# SPDX-License-Identifier: MIT
"""Test support: network namespaces, state directories, the vnetd CLI.

Every kernel test works inside namespaces it creates here and that are removed
after the test, even when it fails; vnetd is always started with ``--netns``. A
session guard compares the root namespace's links, addresses, routes and legacy
iptables and ip6tables before and after the whole run: a test that leaks into the host fails
the session.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ARTICLE = SHARED / "article"
PY = sys.executable
PREFIX = f"vt{os.getpid() % 100000}"
_counter = itertools.count()

#: what `ip -d -j` shows that the kernel changes by itself, whatever vnetd does:
#: bridge timers, carrier-driven operational state, IPv6 duplicate address detection
_VOLATILE = ("hello_timer", "tcn_timer", "topology_change_timer", "gc_timer", "operstate",
             "forward_delay_timer", "message_age_timer", "hold_timer",  # a port's STP timers run by themselves
             "state")  # "state" is a bridge port's STP state (forwarding, disabled: carrier-driven)
_CARRIER_FLAGS = ("NO-CARRIER", "LOWER_UP", "M-DOWN", "linkdown", "tentative")


def sh(*cmd: str, check: bool = True, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=check, text=True, capture_output=True, input=input, timeout=timeout)


def _scrub(value: object) -> object:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        # IPv6 link-local addresses and the link-local and multicast routes the kernel
        # adds per link appear when the link comes up (after carrier and DAD)
        return [_scrub(v) for v in value
                if v not in _CARRIER_FLAGS
                and not (isinstance(v, dict) and str(v.get("local", v.get("dst", ""))).startswith(("fe80", "ff00")))]

    return value



class Netns:
    """One network namespace made by a test."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name

    def ip(self, *args: str, check: bool = True) -> str:
        return sh("ip", "-n", self.name, *args, check=check).stdout

    def exec(self, *cmd: str, check: bool = True, input: str | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *cmd, check=check, input=input, timeout=timeout)

    def popen(self, *cmd: str, **kwargs: object) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], text=True, **kwargs)  # type: ignore[call-overload]

    def json(self, *args: str) -> object:
        out = self.ip("-j", *args)
        return json.loads(out) if out.strip() else []

    def link(self, name: str) -> dict[str, object] | None:
        out = sh("ip", "-n", self.name, "-d", "-j", "link", "show", "dev", name, check=False)
        if out.returncode != 0:
            return None
        return json.loads(out.stdout)[0]  # type: ignore[no-any-return]

    def snapshot(self) -> str:
        """`ip -d -j` link/addr/route/rule, without what the kernel changes by itself."""
        parts = {}
        for what in (("link",), ("addr",), ("route", "show", "table", "all"), ("-4", "rule"), ("-6", "rule")):
            items = _scrub(json.loads(self.ip("-d", "-j", *what) or "[]"))
            # the kernel lists routes in insertion order: a re-added route moves
            parts[" ".join(what)] = sorted(items, key=lambda i: json.dumps(i, sort_keys=True))  # type: ignore[arg-type]
        return json.dumps(parts, sort_keys=True, indent=1)


    def settled_snapshot(self, timeout: float = 3.0) -> str:
        """A snapshot once two in a row agree (carrier and DAD settle asynchronously)."""
        deadline = time.monotonic() + timeout
        last = self.snapshot()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.snapshot()
            if now == last:
                return now
            last = now
        return last


    def iptables_save(self, table: str | None = None, family: int = 4, variant: str = "legacy") -> str:
        """The legacy tables as iptables-legacy-save (ip6tables-legacy-save for ``family`` 6)
        prints them, without comments and counters (``variant`` "nft": the iptables-nft
        tables, as iptables-nft-save prints them)."""
        command = f"{'ip6tables' if family == 6 else 'iptables'}-{variant}-save"
        args = [command] + (["-t", table] if table else [])
        lines = self.exec(*args).stdout.splitlines()
        return "\n".join(re.sub(r"\[\d+:\d+\]$", "[0:0]", line) for line in lines if not line.startswith("#")) + "\n"

    def ip6tables_save(self, table: str | None = None) -> str:
        return self.iptables_save(table, family=6)

    def veth(self, name: str, peer: str, peer_ns: Netns | None = None) -> None:
        if peer_ns is None:
            self.ip("link", "add", name, "type", "veth", "peer", "name", peer)
        else:
            self.ip("link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_ns.name)

    def sysctl(self, key: str) -> str:
        return self.exec("sysctl", "-n", key).stdout.strip()


def delete_netns(name: str) -> None:
    pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    for _ in range(50):
        if sh("ip", "netns", "del", name, check=False).returncode == 0:
            return
        time.sleep(0.05)


class NetnsFactory:
    """Makes namespaces named for this test session and deletes them all afterwards."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def __call__(self, label: str = "") -> Netns:
        name = f"{PREFIX}-{next(_counter)}{('-' + label) if label else ''}"[:40]
        sh("ip", "netns", "add", name)
        self.made.append(name)
        ns = Netns(name)
        ns.ip("link", "set", "lo", "up")
        return ns

    def cleanup(self) -> None:
        for name in reversed(self.made):
            delete_netns(name)
        self.made.clear()


#: the file that pins the firewall backend of a kernel test's state directory
BACKEND_FILE = "00-firewall-backend.yaml"
#: the backend a kernel test's state directory pins (None: ``auto``). The tests of the
#: firewall behaviour run over both (``fw`` fixture); the others keep the legacy tables
#: their oracles read. tests/unit/conftest.py sets it to None: unit tests pin nothing.
DEFAULT_BACKEND: str | None = "iptables-legacy"


class StateDir:
    """A state directory as vnetd requires it: root-owned, not group/world-writable.

    ``backend`` (default ``DEFAULT_BACKEND``) is pinned with ``firewall: {backend: ...}``
    in ``BACKEND_FILE``: ``auto`` would follow the test machine's ``iptables`` command."""

    def __init__(self, path: Path, backend: str | None = "default") -> None:
        self.path = path
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(path, 0o755)
        self.backend = DEFAULT_BACKEND if backend == "default" else backend
        self.pin(self.backend)

    def pin(self, backend: str | None) -> None:
        """Pin ``backend`` (None: remove the pin, ``auto``)."""
        self.backend = backend
        if backend is None:
            (self.path / BACKEND_FILE).unlink(missing_ok=True)
        else:
            self.write(BACKEND_FILE, f"firewall:\n  backend: {backend}\n")

    def __str__(self) -> str:
        return str(self.path)

    def write(self, name: str, text: str, mode: int = 0o644) -> Path:
        target = self.path / name
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(textwrap.dedent(text))
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        return target

    def remove(self, name: str) -> None:
        (self.path / name).unlink()

    def copy_from(self, directory: Path) -> None:
        for f in sorted(directory.glob("*.yaml")):
            self.write(f.name, f.read_text())


def vnetd(*args: str, netns: Netns | str | None = None, state_dir: StateDir | Path | str | None = None,
          timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the vnetd CLI as a separate process (always inside a test namespace)."""
    cmd = [PY, "-m", "vnetd"]
    if netns is not None:
        cmd += ["--netns", str(netns)]
    if state_dir is not None:
        cmd += ["--state-dir", str(state_dir)]
    cmd += list(args)
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    full_env.update(env or {})
    return subprocess.run(cmd, text=True, capture_output=True, timeout=timeout, env=full_env)
