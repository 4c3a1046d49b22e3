# SPDX-License-Identifier: MIT
"""Issue 4: ``vnetd run`` as a subprocess in test namespaces repairs drift by itself,
follows the state directory, survives SIGKILL mid-apply, backs off from a process
that fights it, and behaves as a service (signals, sd_notify, init script, logs,
a root-only status socket)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest

from tests.daemon_support import DaemonProcess
from tests.support import PY, ROOT, Netns, StateDir, sh, vnetd

pytestmark = pytest.mark.kernel

HOST = (ROOT / "etc" / "vnetd.d" / "10-uplink-br0.yaml").read_text()
DMZ = (ROOT / "etc" / "vnetd.d" / "20-dmz-brdmz.yaml").read_text()
ROUTE = """
routes:
  config:
  - destination: 198.51.100.0/24
    next-hop-address: 192.168.10.1
    next-hop-interface: br0
"""
GATEWAY = """
sysctl:
  net.ipv4.ip_forward: 1
firewall:
  nat:
    POSTROUTING:
      rules:
      - -o eth1 -j MASQUERADE
"""


@pytest.fixture
def running(make_netns: Callable[..., Netns], state_dir: StateDir) -> Iterator[tuple[Netns, StateDir, DaemonProcess]]:
    ns = make_netns("d")
    upstream = make_netns("sw")
    ns.veth("eth1", "uplink", upstream)
    upstream.ip("link", "set", "uplink", "up")
    state_dir.write("10-uplink-br0.yaml", HOST)
    state_dir.write("20-dmz-brdmz.yaml", DMZ)
    state_dir.write("30-route.yaml", ROUTE)
    state_dir.write("40-gateway.yaml", GATEWAY)
    daemon = DaemonProcess(ns, state_dir)
    try:
        daemon.wait_ready()
        yield ns, state_dir, daemon
    finally:
        code = daemon.stop()
        assert code == 0, "\n".join(daemon.lines[-30:])
        assert not daemon.bad_lines, f"log lines that are not JSON: {daemon.bad_lines[:5]}"


def converged(ns: Netns) -> bool:
    br0, eth1, brdmz = ns.link("br0"), ns.link("eth1"), ns.link("brdmz")
    if not (br0 and eth1 and brdmz):
        return False
    addrs = ns.ip("addr", "show", "dev", "br0")
    rules = ns.iptables_save()
    return (eth1.get("master") == "br0" and br0["mtu"] == 9000 and eth1["mtu"] == 9000
            and "192.168.10.212/24" in addrs and "UP" in brdmz["flags"]
            and "198.51.100.0/24" in ns.ip("route")
            and "physdev" in rules and "MASQUERADE" in rules
            and ns.sysctl("net.ipv4.ip_forward") == "1")


DRIFTS: list[tuple[str, Callable[[Netns], object], str]] = [
    ("port released", lambda ns: ns.ip("link", "set", "eth1", "nomaster"), "interface/eth1"),
    ("bridge deleted", lambda ns: ns.ip("link", "del", "br0"), "interface/br0"),
    ("mtu reset", lambda ns: ns.ip("link", "set", "br0", "mtu", "1500"), "interface/br0"),
    ("address deleted", lambda ns: ns.ip("addr", "flush", "dev", "br0"), "interface/br0"),
    ("route deleted", lambda ns: ns.ip("route", "del", "198.51.100.0/24"), "route/198.51.100.0/24 via 192.168.10.1 dev br0"),
    ("physdev rule deleted", lambda ns: ns.exec("iptables-legacy", "-D", "FORWARD", "1"), "firewall/filter/FORWARD"),
    ("MASQUERADE deleted", lambda ns: ns.exec("iptables-legacy", "-t", "nat", "-F", "POSTROUTING"),
     "firewall/nat/POSTROUTING"),
    ("ip_forward reset", lambda ns: ns.exec("sysctl", "-w", "net.ipv4.ip_forward=0"), "sysctl/net.ipv4.ip_forward"),
]


@pytest.mark.parametrize(("breaker", "resource"), [d[1:] for d in DRIFTS], ids=[d[0] for d in DRIFTS])
def test_drift_repaired_without_any_command(running: tuple[Netns, StateDir, DaemonProcess],
                                            breaker: Callable[[Netns], object], resource: str) -> None:
    ns, _state, daemon = running
    assert daemon.wait_until(lambda: converged(ns))
    mark = daemon.mark()
    breaker(ns)
    detected = daemon.wait_for("drift.detected", since=mark, resource=resource)
    assert detected["source"] in ("netlink", "netfilter", "sysctl")
    daemon.wait_for("action.applied", since=mark, resource=resource)
    done = daemon.wait_for("reconcile.done", since=mark)
    assert isinstance(done["duration_ms"], float)
    assert daemon.wait_until(lambda: converged(ns))


NFT_DRIFTS: list[tuple[str, Callable[[Netns], object], str]] = [
    ("physdev rule deleted with iptables-nft -D",
     lambda ns: ns.exec("iptables-nft", "-D", "FORWARD", "1"), "firewall/filter/FORWARD"),
    ("MASQUERADE flushed", lambda ns: ns.exec("iptables-nft", "-t", "nat", "-F", "POSTROUTING"),
     "firewall/nat/POSTROUTING"),
    ("foreign rule inserted above vnetd's",
     lambda ns: ns.exec("iptables-nft", "-I", "FORWARD", "-j", "DROP"), "firewall/filter/FORWARD"),
    ("rule deleted with nft", lambda ns: ns.exec("nft", "flush", "chain", "ip", "filter", "FORWARD"),
     "firewall/filter/FORWARD"),
]


@pytest.mark.parametrize(("breaker", "resource"), [d[1:] for d in NFT_DRIFTS], ids=[d[0] for d in NFT_DRIFTS])
def test_nft_drift_repaired_from_events_with_the_periodic_check_off(
        make_netns: Callable[..., Netns], state_dir: StateDir, breaker: Callable[[Netns], object],
        resource: str) -> None:
    """Issue 13 item 3: on the iptables-nft backend a change of vnetd's rules is seen from the
    nf_tables notifications (pass source ``nftables``), not from polling: the periodic
    check runs once an hour here, so only the event can wake the repair."""
    ns = make_netns("nft")
    upstream = make_netns("sw")
    ns.veth("eth1", "uplink", upstream)
    upstream.ip("link", "set", "uplink", "up")
    state_dir.pin("iptables-nft")
    for name, text in (("10-uplink-br0.yaml", HOST), ("20-dmz-brdmz.yaml", DMZ), ("40-gateway.yaml", GATEWAY)):
        state_dir.write(name, text)
    daemon = DaemonProcess(ns, state_dir, check_interval=3600)
    try:
        daemon.wait_ready()
        assert daemon.wait_until(lambda: "physdev" in ns.iptables_save("filter", variant="nft")
                                 and "MASQUERADE" in ns.iptables_save("nat", variant="nft"))
        assert "vnetd:" not in ns.iptables_save(), "nothing may be written to the legacy tables"
        mark = daemon.mark()
        breaker(ns)
        detected = daemon.wait_for("drift.detected", since=mark, resource=resource)
        assert detected["source"] == "nftables"
        daemon.wait_for("action.applied", since=mark, resource=resource)
        assert daemon.wait_until(lambda: ns.exec("iptables-nft", "-S", "FORWARD").stdout.splitlines()[1:2] != []
                                 and "physdev" in ns.exec("iptables-nft", "-S", "FORWARD").stdout.splitlines()[1]
                                 and "MASQUERADE" in ns.iptables_save("nat", variant="nft"))
    finally:
        code = daemon.stop()
        assert code == 0, "\n".join(daemon.lines[-30:])
        assert not daemon.bad_lines, f"log lines that are not JSON: {daemon.bad_lines[:5]}"


def test_deleted_bridge_comes_back_with_its_ports(running: tuple[Netns, StateDir, DaemonProcess]) -> None:
    ns, _state, daemon = running
    assert daemon.wait_until(lambda: converged(ns))
    ns.ip("link", "del", "br0")
    assert daemon.wait_until(lambda: converged(ns))
    assert ns.link("eth1")["master"] == "br0"  # type: ignore[index]


def test_state_directory_changes(running: tuple[Netns, StateDir, DaemonProcess]) -> None:
    ns, state, daemon = running
    assert daemon.wait_until(lambda: converged(ns))
    # a new file is applied
    mark = daemon.mark()
    state.write("50-extra.yaml", "interfaces:\n- {name: brx, type: linux-bridge, state: up, mtu: 4000}\n")
    daemon.wait_for("config.loaded", since=mark, source="files")
    assert daemon.wait_until(lambda: (ns.link("brx") or {}).get("mtu") == 4000)
    # an invalid file is logged with every error and changes nothing
    before = ns.settled_snapshot()
    rules_before = ns.iptables_save()
    mark = daemon.mark()
    state.write("50-extra.yaml", "interfaces:\n- {name: brx, type: linux-bridge, mtu: 50, colour: blue}\n")
    invalid = daemon.wait_for("config.invalid", since=mark)
    assert invalid["error_count"] == 2 and any("mtu" in e for e in invalid["errors"])
    time.sleep(1.0)
    assert ns.settled_snapshot() == before and ns.iptables_save() == rules_before
    # the last valid state keeps being enforced
    ns.ip("link", "set", "brx", "mtu", "1500")
    assert daemon.wait_until(lambda: (ns.link("brx") or {}).get("mtu") == 4000)
    # fixing it applies it
    mark = daemon.mark()
    state.write("50-extra.yaml", "interfaces:\n- {name: brx, type: linux-bridge, state: up, mtu: 5000}\n")
    daemon.wait_for("config.loaded", since=mark)
    assert daemon.wait_until(lambda: (ns.link("brx") or {}).get("mtu") == 5000)
    # deleting a file is held until a reload confirms it; then its tagged rules are
    # pruned and the rest released (logged)
    mark = daemon.mark()
    state.remove("40-gateway.yaml")
    daemon.wait_for("config.file_removed", since=mark, would_prune=["firewall/nat/POSTROUTING"])
    assert "MASQUERADE" in ns.iptables_save("nat")
    reload = vnetd("reload", "--socket", daemon.socket)
    assert reload.returncode == 0, reload.stderr
    daemon.wait_for("resource.pruned", since=mark, resource="firewall/nat/POSTROUTING")
    daemon.wait_for("resource.released", since=mark, resource="sysctl/net.ipv4.ip_forward")
    assert daemon.wait_until(lambda: "MASQUERADE" not in ns.iptables_save("nat"))
    assert ns.sysctl("net.ipv4.ip_forward") == "1"  # released, not reset


def test_editor_rename_and_half_written_file_cause_no_error(running: tuple[Netns, StateDir, DaemonProcess]) -> None:
    ns, state, daemon = running
    mark = daemon.mark()
    # vim-style: write a swap file and a temp file, then rename over the target
    (state.path / ".50-x.yaml.swp").write_bytes(b"\0garbage")
    tmp = state.path / "50-x.yaml.tmp"
    tmp.write_text("interfaces:\n- {name: bry, type: linux-bridge, state: up}\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, state.path / "50-x.yaml")
    # a file written in two chunks, the first one invalid on its own
    with open(state.path / "60-y.yaml", "w") as f:
        os.fchmod(f.fileno(), 0o644)
        f.write("interfaces:\n- name: brz\n  type: linux-br")
        f.flush()
        time.sleep(0.05)
        f.write("idge\n  state: up\n")
    assert daemon.wait_until(lambda: ns.link("bry") is not None and ns.link("brz") is not None)
    assert not daemon.find("config.invalid", since=mark)


def test_sighup_reloads_and_sigterm_exits_zero(running: tuple[Netns, StateDir, DaemonProcess]) -> None:
    ns, state, daemon = running
    mark = daemon.mark()
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("config.loaded", since=mark, source="reload")
    assert daemon.stop() == 0
    daemon.wait_for("daemon.stopping", since=mark)


def test_status_socket_answers_root_and_refuses_others(running: tuple[Netns, StateDir, DaemonProcess]) -> None:
    ns, _state, daemon = running
    assert daemon.wait_until(lambda: converged(ns))
    out = vnetd("status", "--json", "--socket", daemon.socket)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    states = {r["resource"]: r["state"] for r in status["resources"]}
    assert states["interface/br0"] == "converged" and states["firewall/filter/FORWARD"] == "converged"
    assert status["config_valid"] and len(status["files"]) == 5  # the 4 files and the backend pin (tests.support)
    text = vnetd("status", "--socket", daemon.socket)
    assert "interface/br0" in text.stdout and "converged" in text.stdout
    prom = vnetd("status", "--prometheus", "--socket", daemon.socket)
    assert "vnetd_pass_duration_seconds_bucket" in prom.stdout and 'vnetd_resources{state="converged"}' in prom.stdout
    mode = os.stat(daemon.socket).st_mode & 0o777
    assert mode == 0o600 and (os.stat(os.path.dirname(daemon.socket)).st_mode & 0o777) == 0o700
    # a non-root process is refused, even if the socket were reachable
    probe = ("import socket,sys,os; os.setgid(65534); os.setuid(65534); s=socket.socket(socket.AF_UNIX);"
             "\ntry:\n s.connect(sys.argv[1]); s.sendall(b'status\\n'); print(s.recv(200).decode())"
             "\nexcept PermissionError: print('EACCES')")
    out = subprocess.run([PY, "-c", probe, daemon.socket], capture_output=True, text=True)
    assert "EACCES" in out.stdout or "permission denied" in out.stdout
    assert vnetd("status", "--socket", daemon.socket + ".nope").returncode == 3


def test_every_log_line_is_json_with_documented_fields(running: tuple[Netns, StateDir, DaemonProcess]) -> None:
    ns, _state, daemon = running
    ns.ip("link", "set", "eth1", "nomaster")
    daemon.wait_for("action.applied", resource="interface/eth1")
    for event in daemon.events:
        assert {"event", "level", "ts"} <= event.keys()
        if event["event"] in ("drift.detected", "action.applied"):
            assert {"resource", "field", "want", "have", "source"} <= event.keys()
        if event["event"] == "reconcile.done":
            assert {"duration_ms", "source", "changes"} <= event.keys()


# --------------------------------------------------------------------------- crash safety

LARGE = "".join(f"- -s 198.51.{100 + i // 250}.{i % 250}/32 -p tcp -m tcp --dport {1000 + i % 7} -j ACCEPT\n"
                for i in range(1500))


def test_sigkill_during_a_large_apply_then_restart_converges(make_netns: Callable[..., Netns],
                                                           state_dir: StateDir) -> None:
    """20 times: kill -9 at a random moment of a big apply; the next start converges cleanly."""
    ns = make_netns("kill")
    bridges = "".join(f"- {{name: bk{i}, type: linux-bridge, state: up, mtu: 3000, "
                      f"ipv4: {{enabled: true, address: [10.{i // 250}.{i % 250}.1/24]}}}}\n" for i in range(60))
    state_dir.write("10-big.yaml", "interfaces:\n" + bridges
                    + "firewall:\n  filter:\n    VNETD-BIG:\n      rules:\n" + "".join("      " + r for r in LARGE.splitlines(True))
                    + "    FORWARD:\n      rules:\n      - -j VNETD-BIG\n")
    rng = random.Random(20261124)
    for _round in range(20):
        daemon = DaemonProcess(ns, state_dir)
        time.sleep(rng.uniform(0.0, 1.0))
        daemon.kill()
        if rng.random() < 0.5:  # sometimes break things between runs, too
            ns.exec("iptables-legacy", "-F", "FORWARD", check=False)
    result = vnetd("apply", netns=ns, state_dir=state_dir, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rules = ns.exec("iptables-legacy", "-S").stdout.splitlines()
    big = [r for r in rules if r.startswith("-A VNETD-BIG")]
    assert len(big) == 1501  # 1500 rules and the owner mark: no duplicates, nothing missing
    assert len(set(big)) == len(big)
    assert [r for r in rules if r.startswith("-A FORWARD")] == [
        next(r for r in rules if r.startswith("-A FORWARD"))]
    assert [r for r in rules if r.startswith("-N")] == ["-N VNETD-BIG"]  # no leftover chains
    links = [link["ifname"] for link in ns.json("link")]
    assert sorted(n for n in links if n.startswith("bk")) == sorted(f"bk{i}" for i in range(60))
    assert vnetd("plan", netns=ns, state_dir=state_dir).returncode == 0


# --------------------------------------------------------------------------- a fight


def test_a_process_that_keeps_undoing_a_change_is_backed_off(running: tuple[Netns, StateDir, DaemonProcess]) -> None:
    ns, _state, daemon = running
    assert daemon.wait_until(lambda: converged(ns))
    fighter = ns.popen("sh", "-c", "while true; do ip link set br0 mtu 1500; sleep 0.05; done",
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conflict = daemon.wait_for("conflict.suspected", resource="interface/br0", timeout=30)
        assert conflict["backoff_s"] >= 30
        cpu_start = daemon.cpu_seconds()
        wall_start = time.monotonic()
        time.sleep(10)
        cpu = daemon.cpu_seconds() - cpu_start
        wall = time.monotonic() - wall_start
        assert cpu / wall < 0.10, f"the daemon used {cpu:.2f} s of CPU in {wall:.1f} s while backed off"
        status = json.loads(vnetd("status", "--json", "--socket", daemon.socket).stdout)
        states = {r["resource"]: r["state"] for r in status["resources"]}
        assert states["interface/br0"] == "backed-off"
        assert states["interface/eth1"] == "converged"  # the others go on being managed
        assert len(daemon.find("conflict.suspected", resource="interface/br0")) == 1  # once per step
    finally:
        fighter.kill()
        fighter.wait()


# --------------------------------------------------------------------------- service integration


def test_sd_notify_ready_and_status(make_netns: Callable[..., Netns], state_dir: StateDir) -> None:
    ns = make_netns("notify")
    ns.veth("eth1", "uplink")
    state_dir.write("10-uplink-br0.yaml", HOST)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "notify.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(path)
        server.settimeout(30)
        daemon = DaemonProcess(ns, state_dir, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        try:
            messages = []
            while not any("READY=1" in m for m in messages):
                messages.append(server.recv(4096).decode())
            ready = next(m for m in messages if "READY=1" in m)
            assert "STATUS=" in ready and "converged" in ready
            watchdog = server.recv(4096).decode()
            while "WATCHDOG=1" not in watchdog:
                watchdog = server.recv(4096).decode()
            assert daemon.stop() == 0
            rest = []
            server.settimeout(2)
            try:
                while True:
                    rest.append(server.recv(4096).decode())
            except TimeoutError:
                pass
            assert any("STOPPING=1" in m for m in rest)
        finally:
            daemon.stop()
            server.close()


def test_init_script_start_status_stop(make_netns: Callable[..., Netns], state_dir: StateDir,
                                       tmp_path: os.PathLike[str]) -> None:
    ns = make_netns("init")
    ns.veth("eth1", "uplink")
    state_dir.write("10-uplink-br0.yaml", HOST)
    env = dict(os.environ, PYTHONPATH=str(ROOT),
               VNETD_INIT_VNETD=f"{PY} -m vnetd", VNETD_INIT_PIDFILE=f"{tmp_path}/vnetd.pid",
               VNETD_INIT_LOGFILE=f"{tmp_path}/vnetd.log", VNETD_INIT_SOCKET=f"/run/vnetd/init-{ns.name}.sock",
               VNETD_INIT_OPTS=f"--netns {ns.name} --state-dir {state_dir}")
    script = str(ROOT / "contrib" / "init.d" / "vnetd")

    def init(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", script, action], env=env, capture_output=True, text=True, timeout=60)

    assert init("status").returncode == 3
    started = init("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert init("start").returncode == 0  # already running is success (LSB)
    deadline = time.monotonic() + 15
    while ns.link("br0") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (ns.link("br0") or {}).get("mtu") == 9000
    status = init("status")
    assert status.returncode == 0 and "running" in status.stdout
    assert init("reload").returncode == 0
    stopped = init("stop")
    assert stopped.returncode == 0
    assert init("status").returncode == 3
    assert init("stop").returncode == 0  # stopping a stopped service is success (LSB)
    assert init("reload").returncode == 7
    log_lines = open(f"{tmp_path}/vnetd.log").read().splitlines()
    assert all(json.loads(line)["event"] for line in log_lines)
    assert any(json.loads(line)["event"] == "daemon.stopping" for line in log_lines)


def test_log_file_is_reopened_after_logrotate(make_netns: Callable[..., Netns], state_dir: StateDir,
                                             tmp_path: os.PathLike[str]) -> None:
    ns = make_netns("rot")
    ns.veth("eth1", "uplink")
    state_dir.write("10-uplink-br0.yaml", HOST)
    log = f"{tmp_path}/vnetd.log"
    daemon = DaemonProcess(ns, state_dir, "--log-file", log)
    try:
        deadline = time.monotonic() + 20
        while "daemon.ready" not in (open(log).read() if os.path.exists(log) else "") and time.monotonic() < deadline:
            time.sleep(0.05)
        os.rename(log, log + ".1")  # what logrotate's default `create` does
        ns.ip("link", "set", "eth1", "nomaster")
        deadline = time.monotonic() + 10
        while not (os.path.exists(log) and "action.applied" in open(log).read()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "action.applied" in open(log).read()
        assert "daemon.ready" in open(log + ".1").read()
    finally:
        assert daemon.stop() == 0


def test_insecure_state_directory_refuses_to_start(netns: Netns, state_dir: StateDir) -> None:
    os.chmod(state_dir.path, 0o777)
    result = subprocess.run([PY, "-m", "vnetd", "--netns", netns.name, "--state-dir", str(state_dir), "run",
                             "--socket", f"/run/vnetd/insecure-{netns.name}.sock"],
                            capture_output=True, text=True, timeout=30, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 1
    assert "insecure state directory" in result.stderr
    os.chmod(state_dir.path, 0o755)
    sh("true")


def test_opt_in_metrics_listener_on_loopback(make_netns: Callable[..., Netns], state_dir: StateDir) -> None:
    ns = make_netns("metrics")
    ns.veth("eth1", "uplink")
    state_dir.write("10-uplink-br0.yaml", HOST)
    daemon = DaemonProcess(ns, state_dir, "--metrics-listen", "127.0.0.1:9714")
    try:
        daemon.wait_ready()
        fetch = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9714/metrics').read().decode())"
        out = ns.exec(PY, "-c", fetch).stdout
        assert "vnetd_repairs_total" in out and "vnetd_pass_duration_seconds_count" in out
    finally:
        assert daemon.stop() == 0
    refused = subprocess.run([PY, "-m", "vnetd", "--netns", ns.name, "--state-dir", str(state_dir), "run",
                              "--metrics-listen", "0.0.0.0:9714"], capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert refused.returncode != 0 and "loopback" in refused.stderr
