# SPDX-License-Identifier: MIT
"""The control socket (root only), ``vnetd status``, ``vnetd reload``, and Prometheus metrics.

The socket lives in a directory only root can change (``/run/vnetd`` is created
0700 when missing; an existing directory is used only if root owns it and nobody
else can write it, and is never chmod-ed), is itself 0600, and every connection's
peer credentials (SO_PEERCRED) are checked: only uid 0 gets an answer. An existing
path is replaced only when it is a stale socket (nobody accepts on it); a live
socket (another daemon's) or any other file is refused, and at exit the daemon
removes the socket only if the path still is the one it created.

The protocol is one request line (``status``, ``metrics`` or ``reload``) and one
answer (JSON or Prometheus text), then the daemon closes the connection.
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
#: how long ``vnetd reload`` waits for the daemon to finish loading
RELOAD_WAIT = 60.0
#: control-socket connections served at once
MAX_CLIENTS = 8


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
        self.rollbacks = Counter("vnetd_config_rollbacks", "Configuration changes rolled back, by why (probe: "
                                 "health probes failed after a change of the files; trial: an `apply --confirm` "
                                 "trial whose process was gone, restored by the daemon)", ["reason"],
                                 registry=self.registry)
        self.paused = Gauge("vnetd_paused", "1 while reconciling is paused for an `apply --confirm` trial",
                            registry=self.registry)
        self.observing = Gauge("vnetd_observe_only", "1 when the daemon only observes (changes nothing)",
                               registry=self.registry)
        self.shadowed = Gauge("vnetd_firewall_shadowed", "Firewall chains or rules of other tools that override "
                              "vnetd's rules (firewall.shadowed)", registry=self.registry)

    def render(self, counts: dict[str, int], shadowed: int = 0) -> bytes:
        from prometheus_client import generate_latest

        for state, n in counts.items():
            self.resources.labels(state=state).set(n)
        self.shadowed.set(shadowed)
        return bytes(generate_latest(self.registry))


class ControlServer:
    """Answers requests from root on a UNIX socket, in its own thread.

    Created (bound) before the daemon detaches, so that a path it must refuse is
    reported on the terminal; ``start`` begins serving once the daemon runs.
    """

    def __init__(self, path: str) -> None:
        from vnetd.safefiles import private_directory, remove_stale_socket

        self.path = path
        self._handlers: dict[str, Callable[[], bytes]] = {}
        private_directory(os.path.dirname(os.path.abspath(path)), "control socket directory")
        remove_stale_socket(path, "control socket")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)  # the socket is created 0600
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        st = os.lstat(path)
        self._identity = (st.st_dev, st.st_ino)
        self.sock.listen(8)
        self._thread = threading.Thread(target=self._serve, name="vnetd-control", daemon=True)
        self._clients = threading.BoundedSemaphore(MAX_CLIENTS)
        self._stopping = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def start(self, handlers: dict[str, Callable[[], bytes]]) -> None:
        """Serve ``handlers`` (request word -> answer); an unknown request gets ``status``."""
        self._handlers = handlers
        self._thread.start()

    def _serve(self) -> None:
        """Each connection in a thread of its own (at most ``MAX_CLIENTS`` at once): a
        `vnetd reload` waiting for a load must not hold up `vnetd status`."""
        while not self._stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._clients.acquire()
            threading.Thread(target=self._serve_one, args=(conn,), name="vnetd-control-client", daemon=True).start()

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._handle(conn)
        except OSError:
            pass
        finally:
            self._clients.release()

    def _handle(self, conn: socket.socket) -> None:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != 0:
            conn.sendall(b'{"error": "permission denied: vnetd status is for root"}\n')
            return
        conn.settimeout(2.0)
        request = conn.recv(256).decode("ascii", "replace").strip()
        handler = self._handlers.get(request) or self._handlers["status"]
        conn.settimeout(None)
        conn.sendall(handler())

    def stop(self) -> None:
        """Stop serving and remove the socket, if the path is still the one this daemon made."""
        self._stopping = True
        try:
            self.sock.close()
        finally:
            try:
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._identity and stat.S_ISSOCK(st.st_mode):
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
    shadowed = len(s.get("shadowed", []))
    if shadowed:  # vnetd's rules are in place, but other tools' decide first
        reasons.append(f"{shadowed} firewall chain{'s' if shadowed != 1 else ''} or rule{'s' if shadowed != 1 else ''}"
                       f" of other tools override{'s' if shadowed == 1 else ''} vnetd's rules (firewall.shadowed)")
    return reasons


def reload_command(args: argparse.Namespace) -> int:
    """``vnetd reload``: 0 reloaded, 1 the files are invalid (the last valid state stays), 3 not running."""
    try:
        answer = json.loads(query(args.socket, "reload", timeout=RELOAD_WAIT + 5))
    except (FileNotFoundError, ConnectionRefusedError):
        print(f"vnetd is not running (no daemon at {args.socket})", file=sys.stderr)
        return 3
    except PermissionError:
        print(f"permission denied on {args.socket}: vnetd reload is for root", file=sys.stderr)
        return 1
    if "error" in answer:
        print(f"vnetd: {answer['error']}", file=sys.stderr)
        return 1
    if answer.get("pending"):
        print("vnetd: the reload was requested; the daemon is still loading (see `vnetd status`)")
        return 0
    if not answer.get("config_valid", False):
        print("vnetd: the state files are invalid; the last valid state is still enforced:", file=sys.stderr)
        for error in answer.get("last_load_errors", []):
            print(f"error: {error}", file=sys.stderr)
        return 1
    files = answer.get("files", [])
    print(f"vnetd reloaded {answer.get('state_dir')}: {len(files)} file{'s' if len(files) != 1 else ''}")
    return 0


def status_command(args: argparse.Namespace) -> int:
    """``vnetd status``: 0 ok, 1 running but degraded (last load failed, resources
    failing or backed off, other tools' firewall rules override vnetd's), 3 not running,
    4 status unknown (no permission)."""
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


def _clock(when: Any) -> str:
    import time

    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(when)))
    except (TypeError, ValueError, OverflowError):
        return "?"


def render_trial(t: dict[str, Any]) -> list[str]:
    """A pending ``apply --confirm`` trial: who, since when, until when, what it changes."""
    who = f"pid {t.get('pid')}" + (f", user {t['user']}" if t.get("user") else "")
    left = t.get("deadline_in_s")
    lines = [f"TRIAL PENDING ({who}): since {_clock(t.get('since'))}, rolled back at {_clock(t.get('deadline'))}"
             + (f" (in {left:g} s)" if isinstance(left, int | float) and left >= 0 else "")
             + " unless `vnetd confirm`; reconciling is paused until it ends"]
    if t.get("command"):
        lines.append(f"  command: {t['command']}")
    if t.get("state_dir"):
        lines.append(f"  state files tried: {t['state_dir']}")
    if not t.get("owner_alive", True):
        lines.append("  its process is gone: the daemon restores the checkpoint")
    changes = list(t.get("changes") or [])
    lines += [f"  changes: {c}" for c in changes[:20]]
    if len(changes) > 20:
        lines.append(f"  ... and {len(changes) - 20} more changes")
    return lines


def render_status(s: dict[str, Any]) -> str:
    lines = [f"vnetd is running: {s['passes']} passes, last woken by {s['last_source'] or '-'}"
             + (f" {s['last_pass_age_s']} s ago" if s.get("last_pass_age_s") is not None else "")]
    lines.append(f"state files ({s['state_dir']}): " + (", ".join(os.path.basename(f) for f in s["files"]) or "none"))
    if s.get("observing"):
        lines.append("OBSERVING ONLY: drift is reported (drift.detected), nothing is changed")
    trial = s.get("trial")
    if trial:
        lines += render_trial(trial)
    rejected = s.get("rejected_files")
    if rejected:
        lines.append(f"state files ROLLED BACK at {_clock(rejected.get('at'))}: {rejected.get('reason')}; the previous "
                     "configuration is enforced until the files change again")
    if s["last_load_errors"]:
        lines.append("last load FAILED (the last valid state is still enforced):")
        lines += [f"  {e}" for e in s["last_load_errors"]]
    for held in s.get("held_files", []):
        lines.append(f"file removed, still enforced until `vnetd reload`: {held['file']} "
                     f"({', '.join(held['resources'])})")
    for name in s.get("unloaded_files", []):
        lines.append(f"not loaded (not *.yaml/*.yml): {name}")
    for message in s.get("shadowed", []):
        lines.append(f"firewall shadowed: {message}")
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
