# SPDX-License-Identifier: MIT
"""The control socket (root only), ``vnetd status``, and Prometheus metrics.

The socket lives in a 0700 directory, is itself 0600, and every connection's peer
credentials (SO_PEERCRED) are checked: only uid 0 gets an answer. The protocol is
one request line (``status`` or ``metrics``) and one answer (JSON or Prometheus
text), then the daemon closes the connection.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any

DEFAULT_SOCKET = "/run/vnetd/vnetd.sock"


class Metrics:
    """Counters and gauges in their own registry (no process/platform collectors mixed in)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.repairs = Counter("vnetd_repairs", "Changes applied to repair drift or apply new state, by kind",
                               ["kind"], registry=self.registry)
        self.pass_duration = Histogram("vnetd_pass_duration_seconds", "Duration of reconcile passes",
                                       buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                                       registry=self.registry)
        self.resources = Gauge("vnetd_resources", "Managed resources by state", ["state"], registry=self.registry)
        self.config_errors = Counter("vnetd_config_load_errors", "State-directory loads that failed",
                                     registry=self.registry)
        self.passes = Counter("vnetd_passes", "Reconcile passes, by what woke them", ["source"],
                              registry=self.registry)

    def render(self, counts: dict[str, int]) -> bytes:
        from prometheus_client import generate_latest

        for state, n in counts.items():
            self.resources.labels(state=state).set(n)
        return bytes(generate_latest(self.registry))


class ControlServer:
    """Answers status/metrics requests from root on a UNIX socket, in its own thread."""

    def __init__(self, path: str, status: Callable[[], dict[str, Any]], metrics: Callable[[], bytes]) -> None:
        self.path = path
        self._status = status
        self._metrics = metrics
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            raise OSError(f"{directory} is not a root-owned directory; refusing to put the control socket there")
        os.chmod(directory, 0o700)
        if os.path.lexists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.sock.listen(8)
        self._thread = threading.Thread(target=self._serve, name="vnetd-control", daemon=True)
        self._stopping = False

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self._handle(conn)
                except OSError:
                    continue

    def _handle(self, conn: socket.socket) -> None:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != 0:
            conn.sendall(b'{"error": "permission denied: vnetd status is for root"}\n')
            return
        conn.settimeout(2.0)
        request = conn.recv(256).decode("ascii", "replace").strip()
        if request == "metrics":
            conn.sendall(self._metrics())
        else:
            conn.sendall(json.dumps(self._status()).encode() + b"\n")

    def stop(self) -> None:
        self._stopping = True
        try:
            self.sock.close()
        finally:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def query(path: str, request: str, timeout: float = 5.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(request.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


#: ``vnetd status`` exit codes (LSB: 0 running, 3 not running, 4 unknown)
STATUS_OK, STATUS_DEGRADED, STATUS_NOT_RUNNING, STATUS_UNKNOWN = 0, 1, 3, 4


def degraded(s: dict[str, Any]) -> list[str]:
    """Why a running daemon is not doing all it should (empty: it is)."""
    reasons = []
    if s.get("last_load_errors"):
        reasons.append("the last load of the state files failed")
    counts = s.get("counts", {})
    for state in ("failing", "backed-off"):
        if counts.get(state):
            n = counts[state]
            reasons.append(f"{n} resource{'s' if n != 1 else ''} {state}")
    return reasons


def status_command(args: argparse.Namespace) -> int:
    """``vnetd status``: 0 ok, 1 running but degraded (last load failed, resources
    failing or backed off), 3 not running, 4 status unknown (no permission)."""
    try:
        if args.prometheus:
            sys.stdout.write(query(args.socket, "metrics").decode())
            return STATUS_OK
        answer = json.loads(query(args.socket, "status"))
    except (FileNotFoundError, ConnectionRefusedError):
        print(f"vnetd is not running (no daemon at {args.socket})", file=sys.stderr)
        return STATUS_NOT_RUNNING
    except PermissionError:
        print(f"permission denied on {args.socket}: vnetd status is for root", file=sys.stderr)
        return STATUS_UNKNOWN
    if "error" in answer:
        print(f"vnetd: {answer['error']}", file=sys.stderr)
        return STATUS_UNKNOWN
    reasons = degraded(answer)
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(render_status(answer), end="")
    if reasons:
        print("vnetd is degraded: " + "; ".join(reasons), file=sys.stderr)
        return STATUS_DEGRADED
    return STATUS_OK


def render_status(s: dict[str, Any]) -> str:
    lines = [f"vnetd is running: {s['passes']} passes, last woken by {s['last_source'] or '-'}"
             + (f" {s['last_pass_age_s']} s ago" if s.get("last_pass_age_s") is not None else "")]
    lines.append(f"state files ({s['state_dir']}): " + (", ".join(os.path.basename(f) for f in s["files"]) or "none"))
    if s["last_load_errors"]:
        lines.append("last load FAILED (the last valid state is still enforced):")
        lines += [f"  {e}" for e in s["last_load_errors"]]
    counts = ", ".join(f"{n} {k}" for k, n in s["counts"].items() if n) or "nothing managed"
    lines.append(f"resources: {counts}")
    import time

    for r in s["resources"]:
        repaired = ""
        if r["last_repair"]:
            repaired = " (last repair " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["last_repair"])) + ")"
        error = f" error: {r['error']}" if r["error"] else ""
        lines.append(f"  {r['state']:<11} {r['resource']}{repaired}{error}")
    return "\n".join(lines) + "\n"
