# SPDX-License-Identifier: MIT
"""``vnetd run`` as a subprocess inside a test namespace, with its JSON log collected."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import PY, ROOT, Netns, StateDir

#: state files the daemon tests share: eth1 enslaved to br0 ...
BRIDGE = """
interfaces:
- {name: eth1, type: ethernet, state: up}
- name: br0
  type: linux-bridge
  state: up
  bridge:
    options: {stp: {enabled: false, forward-delay: 0}}
    port: [{name: eth1}]
"""
#: ... and a gateway (forwarding, a stateful FORWARD and INPUT, MASQUERADE out of eth0)
GATEWAY = """
sysctl:
  net.ipv4.ip_forward: 1
firewall:
  filter:
    FORWARD:
      mode: exclusive
      policy: DROP
      rules:
      - -i eth1 -o eth0 -j ACCEPT
      - -i eth0 -o eth1 -m state --state RELATED,ESTABLISHED -j ACCEPT
    INPUT:
      mode: exclusive
      policy: DROP
      rules:
      - -i lo -j ACCEPT
      - -p tcp -m tcp --dport 22 -j ACCEPT
  nat:
    POSTROUTING:
      rules:
      - -o eth0 -j MASQUERADE
"""


class DaemonProcess:
    def __init__(self, ns: Netns, state_dir: StateDir, *run_args: str, env: dict[str, str] | None = None,
                 socket_path: str | None = None, check_interval: float = 0.2, script: str | None = None) -> None:
        """``script``: run instead of ``python -m vnetd`` (it patches something, then calls
        ``vnetd.cli.main(sys.argv[1:])``)."""
        self.socket = socket_path or f"/run/vnetd/test-{os.getpid()}-{ns.name}.sock"
        program = ["-c", script] if script is not None else ["-m", "vnetd"]
        cmd = [PY, *program, "--netns", ns.name, "--state-dir", str(state_dir), "--log-format", "json",
               "run", "--socket", self.socket, "--check-interval", str(check_interval), *run_args]
        full_env = dict(os.environ, PYTHONPATH=str(ROOT))
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.bad_lines: list[str] = []
        self._lock = threading.Lock()
        self._readers = [threading.Thread(target=self._read, args=(stream,), daemon=True)
                         for stream in (self.proc.stdout, self.proc.stderr)]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            line = line.rstrip("\n")
            with self._lock:
                self.lines.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    self.bad_lines.append(line)
                    continue
                if isinstance(event, dict):
                    self.events.append(event)
                else:
                    self.bad_lines.append(line)

    def find(self, event: str, since: int = 0, **fields: object) -> list[dict[str, Any]]:
        with self._lock:
            found = self.events[since:]
        return [e for e in found if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())]

    def mark(self) -> int:
        with self._lock:
            return len(self.events)

    def wait_for(self, event: str, since: int = 0, timeout: float = 15.0, **fields: object) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(event, since, **fields)
            if found:
                return found[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no {event} {fields} in the daemon's log:\n" + "\n".join(self.lines[-40:]))

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.wait_for("daemon.ready", timeout=timeout)

    def wait_until(self, check: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.02)
        return check()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
