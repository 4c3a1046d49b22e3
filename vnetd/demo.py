# SPDX-License-Identifier: MIT
"""``vnetd demo``: the daemon on the bundled host examples, in a throw-away namespace.

Nothing on the host changes: the demo creates the network namespace ``vnetd-demo``
(and ``vnetd-demo-switch`` for the far end of the uplink), with veth pairs standing
in for the NIC ``eth1``, runs ``vnetd run`` inside it on the
article's host set-ups 2 and 3 (br0 over eth1 with MTU 9000, brdmz with the physdev
rule), prints the daemon's log and the commands that break something, and removes
both namespaces when it stops (Ctrl-C, or ``--duration``). The libvirt example is
left out: it would talk to this host's libvirtd.

Namespaces and links are made with pyroute2 (netlink), like everything vnetd does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

NS = "vnetd-demo"
SWITCH = "vnetd-demo-switch"
EXAMPLES = ("10-uplink-br0.yaml", "20-dmz-brdmz.yaml")
#: where a wheel puts the host examples, under the environment's data directory
INSTALLED_EXAMPLES = Path("share", "vnetd", "examples", "host")


def examples_dir() -> Path:
    """The bundled host examples: the source tree's etc/vnetd.d, or the copy a wheel
    installs in the environment's data directory (``sys.prefix``/share/vnetd/examples/host
    in a venv, ~/.local/share/... for ``pip install --user``)."""
    data_dirs = dict.fromkeys([sysconfig.get_path("data"), sys.prefix,
                               sysconfig.get_path("data", f"{os.name}_user")])
    candidates = [Path(__file__).resolve().parents[1] / "etc" / "vnetd.d",
                  *(Path(d) / INSTALLED_EXAMPLES for d in data_dirs if d)]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in EXAMPLES):
            return candidate
    raise SystemExit("vnetd demo: the bundled examples are not installed (looked in "
                     + ", ".join(str(c) for c in candidates) + ")")


def build_topology() -> None:
    from pyroute2 import IPRoute, netns

    for name in (NS, SWITCH):
        if name in netns.listnetns():
            netns.remove(name)  # left over by a demo that was killed: ours by name
        netns.create(name)
    with IPRoute(netns=NS, flags=0) as ipr, IPRoute(netns=SWITCH, flags=0) as sw:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        # eth1, the stand-in NIC, its far end in the "switch" namespace
        ipr.link("add", ifname="eth1", kind="veth", peer={"ifname": "uplink", "net_ns_fd": SWITCH})
        sw.link("set", index=sw.link_lookup(ifname="uplink")[0], state="up")


def remove_topology() -> None:
    from pyroute2 import netns

    for name in (NS, SWITCH):
        if name in netns.listnetns():
            netns.remove(name)


def state_files(directory: Path) -> None:
    os.chmod(directory, 0o755)  # noqa: S103 - vnetd requires exactly this: root's, not group/world-writable
    source = examples_dir()
    for name in EXAMPLES:
        shutil.copyfile(source / name, directory / name)
        os.chmod(directory / name, 0o644)


INSTRUCTIONS = """
vnetd demo: the daemon keeps namespace "{ns}" as {state} declares (the article's
host: br0 over eth1 with MTU 9000 and 192.168.10.212/24, the internal bridge brdmz,
the physdev FORWARD rule). Break something from another terminal and watch the
repair in the log below:

    ip -n {ns} link set eth1 nomaster              # release the uplink from br0
    ip -n {ns} link set br0 mtu 1500               # reset the MTU
    ip -n {ns} link del brdmz                      # a "service network restart"
    ip -n {ns} addr flush dev br0                  # lose the host address
    ip netns exec {ns} iptables-legacy -F FORWARD  # flush the firewall
    ip netns exec {ns} sysctl -w net.bridge.bridge-nf-call-iptables=0
    vnetd status --socket {sock}                   # what vnetd manages

Ctrl-C stops the demo and removes the namespaces.
"""


def run_demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("vnetd demo needs root (it creates a network namespace)", file=sys.stderr)
        return 1
    state = Path(tempfile.mkdtemp(prefix="vnetd-demo-"))
    sock = f"/run/vnetd/demo-{os.getpid()}.sock"
    build_topology()
    try:
        state_files(state)
        print(INSTRUCTIONS.format(ns=NS, state=state, sock=sock), flush=True)
        child = os.fork()
        if child == 0:  # the daemon, in its own process so that only it enters the namespace
            from vnetd.cli import main

            argv = ["--netns", NS, "--state-dir", str(state)]
            if args.log_format:
                argv += ["--log-format", args.log_format]
            argv += ["run", "--socket", sock]
            os._exit(main(argv))
        deadline = time.monotonic() + args.duration if args.duration else None
        previous = signal.signal(signal.SIGINT, lambda *_: None)  # the child stops itself on Ctrl-C
        try:
            while True:
                pid, status = os.waitpid(child, os.WNOHANG)
                if pid:
                    return os.waitstatus_to_exitcode(status)
                if deadline is not None and time.monotonic() >= deadline:
                    os.kill(child, signal.SIGTERM)
                    _pid, status = os.waitpid(child, 0)
                    return os.waitstatus_to_exitcode(status)
                time.sleep(0.1)
        finally:
            signal.signal(signal.SIGINT, previous)
    finally:
        remove_topology()
        shutil.rmtree(state, ignore_errors=True)
        print(f"vnetd demo: removed namespaces {NS} and {SWITCH}", flush=True)
