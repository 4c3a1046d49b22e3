# SPDX-License-Identifier: MIT
"""Issue 11 and issue 12 item 4: how the daemon reads its state directory.

* loading never delays a repair of the last good state (it runs off the repair path);
* a file is read once its writer closed it (or renamed it into place), never half-written;
* a state directory renamed away and re-created is watched again, one made insecure
  (chmod) is refused at once;
* a watch thread that dies is logged once, and the directory read and watched again;
  without any watch, the directory is listed (and that said once);
* files that are not loaded are named once;
* a file that disappears or is emptied is not a decision: what it declared stays
  enforced until ``vnetd reload`` (or SIGHUP, or ``vnetd apply``) confirms it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon_support import BRIDGE, GATEWAY, DaemonProcess
from tests.support import Netns, StateDir, vnetd

pytestmark = pytest.mark.kernel


def enslaved(ns: Netns) -> bool:
    return (ns.link("eth1") or {}).get("master") == "br0"


@pytest.fixture
def host(make_netns: Callable[..., Netns]) -> Netns:
    ns = make_netns("files")
    ns.veth("eth1", "uplink")
    ns.veth("eth0", "wan")
    return ns


@pytest.fixture
def daemon(host: Netns, state_dir: StateDir) -> Iterator[DaemonProcess]:
    state_dir.write("10-bridge.yaml", BRIDGE)
    proc = DaemonProcess(host, state_dir)
    try:
        proc.wait_ready()
        assert proc.wait_until(lambda: enslaved(host))
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, "\n".join(proc.lines[-30:])
        assert not proc.bad_lines, proc.bad_lines[:5]
        assert not proc.find("pass.crashed"), proc.find("pass.crashed")


def index_of(daemon: DaemonProcess, event: dict[str, object]) -> int:
    return next(i for i, e in enumerate(daemon.events) if e is event)


# --------------------------------------------------------------------------- bounded, off the repair path


def test_a_drift_is_repaired_while_a_big_file_is_still_being_loaded(host: Netns, state_dir: StateDir,
                                                                    daemon: DaemonProcess) -> None:
    # ~80,000 interfaces (400,000 YAML nodes, under the per-file bound), invalid only at the
    # very end: the whole file is parsed before config.invalid
    big = "interfaces:\n" + "".join(f"- {{name: bx{i}, type: linux-bridge}}\n" for i in range(79_990))
    big += "- {name: bxlast, type: linux-bridge, mtu: 1}\n"
    mark = daemon.mark()
    state_dir.write("50-big.yaml", big)
    daemon.wait_for("config.loading", since=mark, source="files")
    host.ip("link", "set", "eth1", "nomaster")
    repaired = daemon.wait_for("action.applied", since=mark, resource="interface/eth1", timeout=30)
    invalid = daemon.wait_for("config.invalid", since=mark, timeout=120)
    assert index_of(daemon, repaired) < index_of(daemon, invalid)  # repaired before the load finished
    assert "50-big.yaml" in invalid["errors"][0] and invalid["error_count"] == 1
    assert enslaved(host) and host.link("bx0") is None


def test_an_alias_flood_is_refused_at_once_with_one_short_error(host: Netns, state_dir: StateDir,
                                                                 daemon: DaemonProcess) -> None:
    mark = daemon.mark()
    state_dir.write("50-flood.yaml", "interfaces:\n- &a {name: br9, type: linux-bridge, state: up}\n"
                    + "- *a\n" * 200_000)
    invalid = daemon.wait_for("config.invalid", since=mark, timeout=60)
    assert invalid["error_count"] == 1 and "referenced 200,001 times" in invalid["errors"][0]
    assert sum(len(line) for line in daemon.lines[-20:]) < 20_000  # no 41 MB log line
    assert host.link("br9") is None
    host.ip("link", "set", "eth1", "nomaster")  # and the last good state is still enforced
    assert daemon.wait_until(lambda: enslaved(host))


# --------------------------------------------------------------------------- when a file is read


def test_a_file_rewritten_in_place_is_read_only_once_its_writer_closed_it(host: Netns, state_dir: StateDir,
                                                                          daemon: DaemonProcess) -> None:
    def chain(ports: range) -> str:
        rules = "".join(f"      - -p tcp -m tcp --dport {p} -j DROP\n" for p in ports)
        return f"firewall:\n  filter:\n    VNETD-DROPS:\n      mode: exclusive\n      rules:\n{rules}"

    def drops() -> int:
        return sum(1 for line in host.exec("iptables-legacy", "-S", "VNETD-DROPS", check=False).stdout.splitlines()
                   if line.endswith("-j DROP"))

    mark = daemon.mark()
    state_dir.write("30-drops.yaml", chain(range(1000, 1010)))
    daemon.wait_for("config.loaded", since=mark)
    assert daemon.wait_until(lambda: drops() == 10)
    mark = daemon.mark()
    text = chain(range(2000, 2010))
    half = text.index("      - -p tcp -m tcp --dport 2005")
    seen = []
    with open(state_dir.path / "30-drops.yaml", "w") as f:  # truncated, then written in two steps
        f.write(text[:half])
        f.flush()
        deadline = time.monotonic() + 1.5  # an editor (or a slow copy) between its two writes
        while time.monotonic() < deadline:
            seen.append(drops())
        f.write(text[half:])
    assert not daemon.find("config.loaded", since=mark) and not daemon.find("config.loading", since=mark)
    assert min(seen) == 10, seen  # the old rules stayed, whole
    daemon.wait_for("config.loaded", since=mark)
    assert daemon.wait_until(lambda: "--dport 2009" in host.exec("iptables-legacy", "-S", "VNETD-DROPS").stdout)
    assert drops() == 10


def test_a_state_directory_renamed_away_and_recreated_is_watched_again(host: Netns, state_dir: StateDir,
                                                                       daemon: DaemonProcess) -> None:
    mark = daemon.mark()
    os.rename(state_dir.path, str(state_dir.path) + ".old")
    daemon.wait_for("config.invalid", since=mark)  # gone: the last valid state stays enforced
    fresh = StateDir(state_dir.path)
    fresh.write("20-dmz.yaml", "interfaces:\n- {name: brdmz, type: linux-bridge, state: up}\n")
    daemon.wait_for("config.loaded", since=mark, timeout=20)
    assert daemon.wait_until(lambda: host.link("brdmz") is not None)
    daemon.wait_for("config.file_removed", since=mark)  # 10-bridge.yaml is not in the new directory: held
    host.ip("link", "set", "eth1", "nomaster")
    assert daemon.wait_until(lambda: enslaved(host))
    mark = daemon.mark()
    fresh.write("30-more.yaml", "interfaces:\n- {name: brmore, type: linux-bridge, state: up}\n")
    assert daemon.wait_until(lambda: host.link("brmore") is not None)


def test_a_state_directory_made_writable_by_others_is_refused_at_once(host: Netns, state_dir: StateDir,
                                                                     daemon: DaemonProcess) -> None:
    mark = daemon.mark()
    os.chmod(state_dir.path, 0o777)  # no file changed: the directory's own IN_ATTRIB
    try:
        invalid = daemon.wait_for("config.invalid", since=mark)
        assert "insecure state directory" in invalid["errors"][0]
        host.ip("link", "set", "eth1", "nomaster")  # the last valid state stays enforced
        assert daemon.wait_until(lambda: enslaved(host))
    finally:
        os.chmod(state_dir.path, 0o755)
    daemon.wait_for("config.loaded", since=mark)  # and made safe again, loaded again


# the inotify reader thread of watchdog's observer dies on the first event it handles
BROKEN_READER = """
import sys
from vnetd.daemon import files

real = files._InotifyFD.handle_event
broken = [True]

def handle_event(self, event):
    if broken:
        broken.pop()
        raise RuntimeError("the inotify reader broke")
    real(self, event)

files._InotifyFD.handle_event = handle_event
from vnetd.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_dead_watch_thread_is_logged_once_and_the_daemon_reads_and_watches_again(host: Netns,
                                                                                  state_dir: StateDir) -> None:
    state_dir.write("10-bridge.yaml", BRIDGE)
    proc = DaemonProcess(host, state_dir, script=BROKEN_READER)
    try:
        proc.wait_ready()
        mark = proc.mark()
        state_dir.write("20-dmz.yaml", "interfaces:\n- {name: brdmz, type: linux-bridge, state: up}\n")
        failed = proc.wait_for("files.watch_failed", since=mark)
        assert "RuntimeError: the inotify reader broke" in failed["error"] and failed["thread"] == "vnetd-inotify"
        proc.wait_for("files.watch_restarted", since=mark)
        assert proc.wait_until(lambda: host.link("brdmz") is not None)  # its event died with the thread
        state_dir.write("30-more.yaml", "interfaces:\n- {name: brmore, type: linux-bridge, state: up}\n")
        assert proc.wait_until(lambda: host.link("brmore") is not None)  # watched again
        host.ip("link", "set", "eth1", "nomaster")
        assert proc.wait_until(lambda: enslaved(host))
        assert len(proc.find("files.watch_failed")) == 1 and not proc.find("pass.crashed")
    finally:
        code = proc.stop()
    assert code == 0, "\n".join(proc.lines[-30:])
    assert not proc.bad_lines, proc.bad_lines[:5]


# no inotify instance can be had (as when the user's limit is reached): every start is refused
NO_INOTIFY = """
import errno, sys
from vnetd.daemon import files

def refuse(self, *args, **kwargs):
    raise OSError(errno.EMFILE, "inotify instance limit reached")

files._Observer.__init__ = refuse
from vnetd.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_a_watch_the_daemon_lists_the_directory_and_says_so_once(host: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-bridge.yaml", BRIDGE)
    proc = DaemonProcess(host, state_dir, script=NO_INOTIFY)
    try:
        proc.wait_ready()
        failed = proc.wait_for("files.watch_failed")
        assert "inotify instance limit reached" in failed["error"]
        assert proc.wait_until(lambda: enslaved(host))
        mark = proc.mark()
        state_dir.write("20-dmz.yaml", "interfaces:\n- {name: brdmz, type: linux-bridge, state: up}\n")
        proc.wait_for("config.loaded", since=mark, source="files")  # found by the listing
        assert proc.wait_until(lambda: host.link("brdmz") is not None)
        mark = proc.mark()
        state_dir.remove("20-dmz.yaml")
        proc.wait_for("config.file_removed", since=mark)
        assert len(proc.find("files.watch_failed")) == 1 and not proc.find("files.watch_restarted")
        assert not proc.find("pass.crashed")
    finally:
        code = proc.stop()
    assert code == 0, "\n".join(proc.lines[-30:])
    assert not proc.bad_lines, proc.bad_lines[:5]


def test_files_that_are_not_loaded_get_one_warning_each(host: Netns, state_dir: StateDir,
                                                       daemon: DaemonProcess) -> None:
    mark = daemon.mark()
    state_dir.write("10-br9.conf", "interfaces:\n- {name: br9, type: linux-bridge}\n")
    state_dir.write("10-br8.YAML", "interfaces:\n- {name: br8, type: linux-bridge}\n")
    state_dir.write(".10-br7.yaml.swp", "garbage")
    state_dir.write("10-br6.yaml~", "garbage")
    state_dir.write("20-dmz.yaml", "interfaces:\n- {name: brdmz, type: linux-bridge, state: up}\n")
    daemon.wait_for("config.loaded", since=mark)
    assert daemon.wait_until(lambda: len(daemon.find("config.file_ignored", since=mark)) == 2)
    state_dir.write("30-more.yaml", "interfaces:\n- {name: brmore, type: linux-bridge, state: up}\n")
    assert daemon.wait_until(lambda: host.link("brmore") is not None)  # loaded again: no second warning
    ignored = daemon.find("config.file_ignored", since=mark)
    assert sorted(Path(e["file"]).name for e in ignored) == ["10-br8.YAML", "10-br9.conf"]  # once each
    assert "lower case" in next(e for e in ignored if e["file"].endswith(".YAML"))["message"]
    check = vnetd("check", state_dir=state_dir)
    assert check.returncode == 0 and "10-br9.conf is not loaded" in check.stderr and "swp" not in check.stderr


# --------------------------------------------------------------------------- a file that disappears


def gateway_rules(ns: Netns) -> bool:
    filt, nat = ns.iptables_save("filter"), ns.iptables_save("nat")
    return (":FORWARD DROP" in filt and ":INPUT DROP" in filt and "--dport 22" in filt
            and "RELATED,ESTABLISHED" in filt and "MASQUERADE" in nat)


@pytest.fixture
def gateway(host: Netns, state_dir: StateDir, daemon: DaemonProcess) -> DaemonProcess:
    mark = daemon.mark()
    state_dir.write("20-gateway.yaml", GATEWAY)
    daemon.wait_for("config.loaded", since=mark)
    assert daemon.wait_until(lambda: gateway_rules(host))
    return daemon


def test_a_state_file_moved_away_keeps_its_rules_until_reload(host: Netns, state_dir: StateDir,
                                                              gateway: DaemonProcess, tmp_path: Path) -> None:
    mark = gateway.mark()
    os.rename(state_dir.path / "20-gateway.yaml", tmp_path / "20-gateway.yaml")  # a mistyped mv
    removed = gateway.wait_for("config.file_removed", since=mark)
    assert removed["kept"] is True and removed["file"].endswith("20-gateway.yaml")
    assert sorted(removed["would_prune"]) == ["firewall/filter/FORWARD", "firewall/filter/INPUT",
                                              "firewall/nat/POSTROUTING"]
    assert removed["would_release"] == ["sysctl/net.ipv4.ip_forward"]
    gateway.wait_for("config.loaded", since=mark)
    assert gateway_rules(host)  # not opened
    host.exec("iptables-legacy", "-F", "INPUT")  # and still enforced
    assert gateway.wait_until(lambda: gateway_rules(host))
    status = vnetd("status", "--socket", gateway.socket)
    assert "file removed, still enforced until `vnetd reload`" in status.stdout
    assert not gateway.find("resource.pruned", since=mark)
    reload = vnetd("reload", "--socket", gateway.socket)
    assert reload.returncode == 0, reload.stderr
    gateway.wait_for("resource.pruned", since=mark, resource="firewall/filter/FORWARD")
    assert gateway.wait_until(lambda: "MASQUERADE" not in host.iptables_save("nat")
                              and "--dport 22" not in host.iptables_save("filter"))


def test_a_state_file_truncated_to_nothing_is_held_too(host: Netns, state_dir: StateDir,
                                                       gateway: DaemonProcess) -> None:
    mark = gateway.mark()
    open(state_dir.path / "20-gateway.yaml", "w").close()
    gateway.wait_for("config.file_removed", since=mark)
    gateway.wait_for("config.loaded", since=mark)
    assert gateway_rules(host)
    gateway.signal(signal.SIGHUP)  # SIGHUP confirms as `vnetd reload` does
    gateway.wait_for("resource.pruned", since=mark, resource="firewall/nat/POSTROUTING")
    assert gateway.wait_until(lambda: "MASQUERADE" not in host.iptables_save("nat"))


def test_removing_part_of_a_file_is_an_ordinary_change(host: Netns, state_dir: StateDir,
                                                       gateway: DaemonProcess) -> None:
    mark = gateway.mark()
    state_dir.write("20-gateway.yaml", GATEWAY[:GATEWAY.index("    INPUT:")] + GATEWAY[GATEWAY.index("  nat:"):])
    gateway.wait_for("resource.pruned", since=mark, resource="firewall/filter/INPUT")
    assert gateway.wait_until(lambda: "--dport 22" not in host.iptables_save("filter"))
    assert "MASQUERADE" in host.iptables_save("nat")
    assert not gateway.find("config.file_removed", since=mark)


def test_vnetd_apply_confirms_a_removal(host: Netns, state_dir: StateDir, gateway: DaemonProcess) -> None:
    mark = gateway.mark()
    state_dir.remove("20-gateway.yaml")
    gateway.wait_for("config.file_removed", since=mark)
    gateway.wait_for("config.loaded", since=mark)
    applied = vnetd("apply", netns=host, state_dir=state_dir)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "removal of" in applied.stderr and "20-gateway.yaml confirmed" in applied.stderr
    gateway.wait_for("resource.pruned", since=mark, resource="firewall/filter/FORWARD")
    assert gateway.wait_until(lambda: "MASQUERADE" not in host.iptables_save("nat"))
    after = gateway.mark()
    host.ip("link", "set", "eth1", "nomaster")  # the daemon goes on, without the gateway's rules
    assert gateway.wait_until(lambda: enslaved(host))
    assert "MASQUERADE" not in host.iptables_save("nat")
    assert not gateway.find("config.file_removed", since=after)
