# SPDX-License-Identifier: MIT
"""A real libvirtd for tests: inside a test network namespace, with private state.

``sandboxed_libvirtd(root)`` is a context manager that

* takes a machine-wide lock (``/run/lock/vnetd-tests-libvirtd.lock``): one test
  libvirtd at a time, whichever pytest session starts it;
* creates a network namespace (named like every test namespace, so the session
  guard sees it go) and starts ``ip netns exec NS libvirtd`` through
  ``tests/libvirtd_sandbox.py``: libvirt's system paths are bound to
  sub-directories of ``root`` in a private mount namespace, so its sockets,
  network definitions and dnsmasq files never touch the host's paths, and its NAT
  network (virbr0, dnsmasq, iptables-nft rules) exists only in the namespace;
* yields a ``Libvirtd`` (``uri``, ``ns``, ``stop()``, ``start()``, ``connect()``);
* on exit destroys and undefines every network, stops libvirtd by its pid, checks
  that no process is left in the namespace, deletes the namespace and removes the
  empty mount points it had to create — and fails if anything is left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.libvirtd_sandbox import PATHS, private_dir
from tests.support import PREFIX, PY, ROOT, Netns, _counter, delete_netns, sh

LOCK = "/run/lock/vnetd-tests-libvirtd.lock"
SANDBOX = ROOT / "tests" / "libvirtd_sandbox.py"
CONFIG = """\
# a test libvirtd: local root clients only, no polkit (no D-Bus in the sandbox)
auth_unix_rw = "none"
auth_unix_ro = "none"
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
unix_sock_admin_perms = "0700"
log_outputs = "3:stderr"
"""

#: The article's NAT network (set-up 1): what libvirt's default.xml defines.
DEFAULT_XML = """\
<network>
  <name>default</name>
  <forward mode='nat'/>
  <bridge name='virbr0' stp='on' delay='0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.100' end='192.168.122.254'/>
    </dhcp>
  </ip>
</network>
"""


def _libvirt() -> Any:
    import libvirt

    import vnetd.backends.libvirt  # noqa: F401 - installs the silent error handler

    return libvirt


class Libvirtd:
    def __init__(self, ns: Netns, root: Path) -> None:
        self.ns = ns
        self.root = root
        self.socket = Path(private_dir(str(root), "/run/libvirt")) / "libvirt-sock"
        self.uri = f"qemu:///system?socket={self.socket}"
        self.log = root / "libvirtd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        assert not self.running, "one libvirtd at a time"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns.name, PY, str(SANDBOX), str(self.root)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.starts += 1
        deadline = time.monotonic() + timeout
        libvirt = _libvirt()
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"libvirtd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists():
                try:
                    libvirt.open(self.uri).close()
                    return
                except libvirt.libvirtError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"libvirtd did not answer on {self.socket}:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM by pid (the pid is libvirtd's: ip and the sandbox exec it)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def connect(self) -> Any:
        return _libvirt().open(self.uri)

    def network(self, name: str = "default") -> Any:
        """(active, autostart, persistent) of a network, or None if libvirt has none."""
        libvirt = _libvirt()
        conn = self.connect()
        try:
            net = conn.networkLookupByName(name)
            return bool(net.isActive()), bool(net.autostart()), bool(net.isPersistent())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return None
            raise
        finally:
            conn.close()

    def remove_networks(self) -> None:
        conn = self.connect()
        try:
            for net in conn.listAllNetworks():
                if net.isActive():
                    net.destroy()
                if net.isPersistent():
                    net.undefine()
        finally:
            conn.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@contextlib.contextmanager
def _machine_lock(timeout: float = 900.0) -> Iterator[None]:
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"another test libvirtd holds {LOCK}") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def sandboxed_libvirtd(root: Path, ns: Netns | None = None) -> Iterator[Libvirtd]:
    """``ns``: run it in this (the caller's) namespace instead of one of its own."""
    with _machine_lock():
        created: list[str] = []
        own = ns is None
        if ns is None:
            name = f"{PREFIX}-{next(_counter)}-libvirtd"
            sh("ip", "netns", "add", name)
            ns = Netns(name)
            ns.ip("link", "set", "lo", "up")
        name = ns.name
        daemon = Libvirtd(ns, root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / "libvirtd.conf").write_text(CONFIG)
            for path in PATHS:
                if not os.path.isdir(path):
                    os.makedirs(path)  # an empty mount point, removed below
                    created.append(path)
            daemon.start()
            yield daemon
        finally:
            problems = []
            try:
                if not daemon.running and daemon.starts:
                    daemon.start()  # a test left it stopped: start it to remove its networks
                if daemon.running:
                    daemon.remove_networks()
            finally:
                daemon.stop()
            if own:
                leftover = sh("ip", "netns", "pids", name, check=False).stdout.split()
                if leftover:
                    cmds = [sh("ps", "-o", "pid=,args=", "-p", pid, check=False).stdout.strip() for pid in leftover]
                    problems.append(f"processes left in {name} after libvirtd stopped: {cmds}")
                delete_netns(name)
            for path in reversed(created):
                with contextlib.suppress(OSError):
                    os.rmdir(path)
                if os.path.exists(path):
                    problems.append(f"{path} left behind")
            with open("/proc/self/mountinfo") as mounts:
                leaked = [line for line in mounts if str(root) in line or "libvirt" in line]
            if leaked:
                problems.append(f"mounts leaked into the host's namespace: {leaked}")
            if problems and not _exc_pending():
                raise AssertionError("; ".join(problems))


def _exc_pending() -> bool:
    import sys

    return sys.exc_info()[0] is not None
