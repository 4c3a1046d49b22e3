# SPDX-License-Identifier: MIT
"""``vnetd run``: start-up checks, detaching, then the event loop (daemon/loop.py).

Start-up order matters:

1. signal handlers first (SIGTERM/SIGINT stop, SIGHUP reloads), before any slow
   import or read: a signal during start-up is handled, never the default
   action that kills the process silently; once the pidfile names the daemon,
   ``kill -HUP`` and ``kill -TERM`` are safe;
2. everything that can refuse the start does so on the terminal, before
   detaching, with a clear message and exit status 1: option values, the state
   directory's security (and its parents'), the pidfile and log paths (no
   symlink, a directory only root can write), ``--netns``, the one-vnetd-per-
   namespace lock (naming the pid that holds it), the control socket path (only a
   stale socket is replaced), the metrics listener's address;
3. detach (``--daemon``) keeping exactly the descriptors opened above, write the
   pidfile, record the daemon in the namespace lock;
4. the loop: the first load runs in a worker thread while the loop already
   serves signals and the control socket.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import os
from typing import Any

from vnetd import log as vlog
from vnetd.errors import StartupError

INSECURE_MARKERS = ("refusing an insecure", "does not exist", "is not a directory", "cannot open state directory")


class PidFile:
    """A locked pidfile, opened without following a symlink, in a directory only root can write."""

    def __init__(self, path: str) -> None:
        from vnetd.safefiles import open_private

        self.path = path
        self.fd = open_private(path, "pidfile", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise StartupError(f"another vnetd holds the pidfile {path}") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def remove(self) -> None:
        """Remove the pidfile if the path still names the file this daemon wrote."""
        try:
            if os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)


def _refuse_insecure(state_dir: str) -> None:
    """Refuse an insecure or missing state directory now, on the terminal (no parsing)."""
    from vnetd.desired.loader import read_state_dir

    _sources, issues = read_state_dir(state_dir)
    fatal = [i for i in issues if any(m in i.message for m in INSECURE_MARKERS)]
    if fatal:
        raise StartupError("\n".join(str(i) for i in fatal))


def metrics_address(value: str) -> tuple[str, int]:
    """``--metrics-listen``: a loopback ADDRESS:PORT (``localhost`` means 127.0.0.1)."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port:
        raise StartupError(f"--metrics-listen wants ADDRESS:PORT (e.g. 127.0.0.1:9714), got {value!r}")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise StartupError(f"--metrics-listen: {host!r} is not an IP address; use 127.0.0.1, ::1 or "
                           "localhost") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise StartupError(f"--metrics-listen: the port must be a number from 1 to 65535, got {port!r}")
    if not address.is_loopback:
        raise StartupError(f"--metrics-listen must be a loopback address (127.0.0.1, ::1, localhost), not {host}")
    return str(address), int(port)


def metrics_server(host: str, port: int, registry: Any) -> Any:
    """Bind the metrics listener now (a busy port is a start-up error); served by the loop."""
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Requests are not logged (the daemon's log is for the network)."""

    try:
        return make_server(host, port, make_wsgi_app(registry), Server, handler_class=QuietHandler)
    except OSError as exc:
        raise StartupError(f"--metrics-listen {host}:{port}: cannot listen: {exc.strerror}") from None


def run_daemon(args: argparse.Namespace) -> int:
    from vnetd.daemon.wake import SignalRelay, Wakeup

    wake = Wakeup()
    signals = SignalRelay(wake)  # first: see the module docstring
    if args.check_interval <= 0 or args.resync_interval <= 0:
        raise StartupError("intervals must be positive")
    metrics_addr = metrics_address(args.metrics_listen) if args.metrics_listen else None
    _refuse_insecure(args.state_dir)
    from vnetd.safefiles import check_file

    if args.pidfile:
        check_file(args.pidfile, "pidfile")
    log_out = vlog.open_log_file(args.log_file) if args.log_file else None
    vlog.configure(args.log_format, args.log_level or "info", stream=log_out)
    if args.netns:
        from vnetd import netns

        netns.enter(args.netns)
    from vnetd.daemon.instance import InstanceLock
    from vnetd.daemon.status import ControlServer, Metrics

    instance = InstanceLock.take(args.netns)
    control: Any = None
    server: Any = None
    pidfile: PidFile | None = None
    try:
        control = ControlServer(args.socket)
        metrics = Metrics()
        server = metrics_server(*metrics_addr, metrics.registry) if metrics_addr else None
        if args.daemon:
            import daemon  # python-daemon: double fork, setsid, umask, chdir, stdio to /dev/null

            keep = [*wake.fds(), instance.fd, control.fileno()]
            if server is not None:
                keep.append(server.fileno())
            if log_out is not None:
                keep.append(log_out.fileno())
            context = daemon.DaemonContext(working_directory="/", umask=0o022, detach_process=True,
                                           signal_map={}, prevent_core=True, files_preserve=keep)
            context.open()
        pidfile = PidFile(args.pidfile) if args.pidfile else None
        instance.describe(pid=os.getpid(), socket=os.path.abspath(args.socket),
                          state_dir=os.path.abspath(args.state_dir))
        if signals.stop_requested:
            return 0
        from vnetd.daemon.loop import Daemon

        loop = Daemon(args, wake, signals, control, metrics, server)
        profile = os.environ.get("VNETD_PROFILE")  # developers: where the daemon's CPU goes
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            try:
                return int(profiler.runcall(loop.run))
            finally:
                profiler.dump_stats(profile)
        return loop.run()
    except StartupError as exc:
        if args.daemon:  # detached: the terminal is gone, the log file is what is left
            vlog.get_logger().error("daemon.refused", error=str(exc))
        raise
    finally:
        if pidfile is not None:
            pidfile.remove()
        if control is not None:
            control.stop()  # idempotent; removes only the socket this daemon created
        instance.release()
