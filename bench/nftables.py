#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Issue 13 benchmark: the iptables-nft backend with 10,000 rules in one owned chain.

Side by side, in one run, in namespaces made here:

* 10,000 rules applied from empty: `iptables-nft-restore` of the same rules (tagged
  the same way) against vnetd's backend, as a whole process (a fresh interpreter
  that loads the state directory and converges the firewall through the backend,
  without the rest of `vnetd apply`) and in-process (the converging part of the
  same fresh processes: compile, one nf_tables transaction, read back, plan again:
  nothing left; cold, as on a first start); restore and vnetd run alternately;
* "changed?" with 10,000 rules (one generation-id request) and a full observe
  (the mirror read again from the kernel: one rule dump per chain);
* drift repair from the event: another writer deletes one of vnetd's rules; the
  time from its delete being committed to vnetd's repair committed (event socket
  readable, notifications applied, plan, one transaction), p50/p99;
* the repair loop's CPU with one such drift a second (the drifts made by another
  process: the kernel's commit of a delete is the deleting process's CPU);
* the whole daemon (`vnetd run`) over the same rules with one drift a second for
  the idle run's length: its CPU share and RSS (from /proc), and each drift's
  repair as another process sees it (from sending its delete, so including that
  commit, to the daemon's new rule announced);
* for the codec decision: pyroute2's nf_tables message classes against vnetd's
  decoder and packer on the same rules.

Rules: `-s 198.51.x.y/32 -i brdmz -p tcp -m tcp --dport {22,80,443,8080,3306} -j ACCEPT`
(as bench/firewall.py). Usage (root): bench/nftables.py [--rules 10000] [--repeat 5]
[--drifts 200] [--idle-seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PY, Namespace, cpu_split, ms, percentile, rss_kb, sh, state_dir, stats, table, timed
from bench.daemon import start_daemon, wait_converged

PORTS = (22, 80, 443, 8080, 3306)
CHAIN = "VNETD-BENCH"


def rule(i: int) -> str:
    return f"-s 198.51.{100 + i // 250}.{i % 250}/32 -i brdmz -p tcp -m tcp --dport {PORTS[i % 5]} -j ACCEPT"


def state_yaml(n: int) -> str:
    return f"firewall:\n  filter:\n    {CHAIN}:\n      mode: exclusive\n      rules:\n" + "".join(
        f"      - {rule(i)}\n" for i in range(n))


#: a fresh process: what `vnetd apply` of the firewall costs with this backend, start-up
#: included; it prints the time of the apply itself (compile, one transaction, verify),
#: the in-process figure, which is therefore cold every time (no cache of an earlier run)
WHOLE = r"""
import sys, time
from vnetd import netns
netns.enter(sys.argv[1])
from vnetd.desired.loader import load_state_dir
from vnetd.backends.nftables import NftFirewallBackend
from vnetd.plan.firewall import plan_firewall
desired = load_state_dir(sys.argv[2])
t0 = time.perf_counter()
fw = NftFirewallBackend()
for _ in range(3):
    actions, problems = plan_firewall(desired.chains, fw.observe(desired.chains), fw.rule_ids(desired.chains))
    assert not problems, problems
    if not actions:
        break
    assert all(e is None for _a, e in fw.apply(actions))
else:
    raise SystemExit("not converged")
print(time.perf_counter() - t0)
"""

#: another writer, in its own process: deletes the rule handles it reads, one a line
DRIFTER = r"""
import sys
from vnetd import netns
netns.enter(sys.argv[1])
from vnetd.backends import nfnl
sock = nfnl.NftSocket()
for line in sys.stdin:
    sock.batch([nfnl.del_rule("filter", "VNETD-BENCH", int(line))], None)
"""

#: another writer next to a running daemon: once a second, deletes one of vnetd's rules
#: (never the owner mark, the chain's first rule) and times until the daemon's repair
#: (a NEWRULE from another socket) is announced
DAEMON_DRIFTER = r"""
import json, sys, time
from vnetd import netns
netns.enter(sys.argv[1])
from vnetd.backends import nfnl
count = int(sys.argv[2])
sock, events = nfnl.NftSocket(), nfnl.NftEvents()
def rules():
    replies, _interrupted = sock.dump(nfnl.dump_rules("filter"))
    found = (nfnl.decode_rule(d, o, n) for d, k, o, n in replies if k == nfnl.NFT_MSG_NEWRULE)
    return [r for r in found if r.chain == "VNETD-BENCH"]
latencies = []
next_at = time.monotonic()
for k in range(count):
    time.sleep(max(0.0, next_at - time.monotonic()))
    next_at += 1.0
    chain = rules()
    victim = chain[1 + (k * 7919) % (len(chain) - 1)]
    events.read()
    t0 = time.perf_counter()  # before the delete is sent: the daemon may repair before the ack is read here
    result = sock.batch([nfnl.del_rule("filter", "VNETD-BENCH", victim.handle)], None)
    assert not result.errors, result.errors
    repaired = False
    while not repaired:  # the same rule (its tag, in the user data) back in the chain
        if not events.wait(max(0.0, 10 - (time.perf_counter() - t0))):
            raise SystemExit("the daemon did not repair the rule within 10 s")
        for e in nfnl.parse_events(events.read()):
            if e.kind == nfnl.NFT_MSG_NEWRULE and nfnl.decode_rule(e.data, e.off, e.length).udata == victim.udata:
                repaired = True
    latencies.append(time.perf_counter() - t0)
print(json.dumps(latencies))
"""

INNER = r"""
import json, os, resource, select, subprocess, sys, time
from vnetd import netns
netns.enter(sys.argv[1])
DRIFTER = sys.argv[6]
from vnetd.desired.loader import load_state_dir
from vnetd.backends import nfnl
from vnetd.backends.nftables import NftFirewallBackend
from vnetd.plan.firewall import plan_firewall
repeat, drifts, idle = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
desired = load_state_dir(sys.argv[2])
chains = desired.chains

def converge(fw):
    for _ in range(3):
        actions, problems = plan_firewall(chains, fw.observe(chains), fw.rule_ids(chains))
        assert not problems, problems
        if not actions:
            return
        assert all(e is None for _a, e in fw.apply(actions))
    raise SystemExit("not converged")

def flush():
    subprocess.run(["nft", "flush", "ruleset"], check=True)

flush()
fw = NftFirewallBackend()
converge(fw)
check_times = []
for _ in range(200):
    t0 = time.perf_counter(); changed = fw.changed(["filter"]); check_times.append(time.perf_counter() - t0)
    assert not changed
observe_cached, observe_full = [], []
for _ in range(repeat):
    t0 = time.perf_counter(); fw.observe(chains); observe_cached.append(time.perf_counter() - t0)
    fw._mirror.valid = False  # forget the mirror: read every table again
    t0 = time.perf_counter(); fw.observe(chains); observe_full.append(time.perf_counter() - t0)

# drift: another writer (its own socket) deletes one of vnetd's rules; vnetd repairs it
writer = nfnl.NftSocket()
def victim(k):
    rules = fw._mirror.tables["filter"].chains["VNETD-BENCH"].rules
    return rules[1 + (k * 7919) % (len(rules) - 1)].handle  # never the owner mark

def repair():
    # what the daemon does when the event socket is readable
    ready, _w, _x = select.select([fw.event_fileno()], [], [], 5)
    assert ready, "no notification"
    assert fw.drain_events()
    assert fw.changed(["filter"]) == ["filter"]
    actions, problems = plan_firewall(chains, fw.observe(chains), fw.rule_ids(chains))
    assert actions and not problems
    assert all(e is None for _a, e in fw.apply(actions))

latencies = []
for k in range(drifts):
    handle = victim(k)
    result = writer.batch([nfnl.del_rule("filter", "VNETD-BENCH", handle)], None)
    t0 = time.perf_counter()  # the drift is committed (and announced): from here on it is vnetd's time
    assert not result.errors, result.errors
    repair()
    latencies.append(time.perf_counter() - t0)
actions, _p = plan_firewall(chains, fw.observe(chains), fw.rule_ids(chains))
assert not actions

# one drift a second: the repair loop's CPU (what the daemon adds for the firewall). The
# drifts are another process's deletes (the kernel's commit of a delete runs in the
# deleting process, and is that writer's CPU, not vnetd's)
drifter = subprocess.Popen([sys.executable, "-c", DRIFTER, sys.argv[1]], stdin=subprocess.PIPE, text=True)
usage0 = resource.getrusage(resource.RUSAGE_SELF); wall0 = time.monotonic(); k = 0
while time.monotonic() - wall0 < idle:
    next_at = wall0 + k + 1
    ready, _w, _x = select.select([fw.event_fileno()], [], [], max(0.0, next_at - time.monotonic()))
    if ready:
        repair()
        continue
    if time.monotonic() >= next_at:
        drifter.stdin.write(f"{victim(k)}\n"); drifter.stdin.flush()
        k += 1
usage1 = resource.getrusage(resource.RUSAGE_SELF); wall = time.monotonic() - wall0
drifter.stdin.close(); drifter.wait()
cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)

# the codec decision: pyroute2's message classes against vnetd's, on the same dump
replies, _i = fw._sock.dump(nfnl.dump_rules("filter"))
sample = replies[:1000]
t0 = time.perf_counter()
for data, _k, off, length in sample:
    nfnl.decode_rule(data, off, length)
ours_decode = (time.perf_counter() - t0) / len(sample)
from pyroute2.netlink.nfnetlink.nftsocket import nft_rule_msg
t0 = time.perf_counter()
for data, _k, off, length in sample:
    m = nft_rule_msg(data[off:off + length]); m.decode()
theirs_decode = (time.perf_counter() - t0) / len(sample)
# encoding: the same 4-expression rule (l4proto, a compat match, counter) both ways
from vnetd.backends import nftexpr as nx
def pyroute2_rule():
    m = nft_rule_msg(); m["nfgen_family"] = 2
    m["attrs"] = [("NFTA_RULE_TABLE", "filter"), ("NFTA_RULE_CHAIN", "VNETD-BENCH"), ("NFTA_RULE_EXPRESSIONS", [
        {"attrs": [("NFTA_EXPR_NAME", "meta"), ("NFTA_EXPR_DATA", {"attrs": [("NFTA_META_KEY", 16), ("NFTA_META_DREG", 1)]})]},
        {"attrs": [("NFTA_EXPR_NAME", "cmp"), ("NFTA_EXPR_DATA", {"attrs": [("NFTA_CMP_SREG", 1), ("NFTA_CMP_OP", 0),
                                                                          ("NFTA_CMP_DATA", {"attrs": [("NFTA_DATA_VALUE", b"\x06")]})]})]},
        {"attrs": [("NFTA_EXPR_NAME", "match"), ("NFTA_EXPR_DATA", {"attrs": [("NFTA_MATCH_NAME", "conntrack"), ("NFTA_MATCH_REV", 3),
                                                                            ("NFTA_MATCH_INFO", "00" * 160)]})]},
        {"attrs": [("NFTA_EXPR_NAME", "counter"), ("NFTA_EXPR_DATA", {"attrs": [("NFTA_COUNTER_BYTES", 0), ("NFTA_COUNTER_PACKETS", 0)]})]},
    ])]
    return m.encode()
def vnetd_rule():
    exprs = nx.meta_load(nx.NFT_META_L4PROTO) + nx.cmp(nx.NFT_CMP_EQ, b"\x06") + nx.xt("match", "conntrack", 3, bytes(160)) + nx.counter()
    return nfnl.new_rule("filter", "VNETD-BENCH", exprs, (6, False), None).encode(1)
t0 = time.perf_counter()
for _ in range(200):
    pyroute2_rule()
theirs_encode = (time.perf_counter() - t0) / 200
t0 = time.perf_counter()
for _ in range(200):
    vnetd_rule()
ours_encode = (time.perf_counter() - t0) / 200
print(json.dumps({"check": check_times, "observe_cached": observe_cached,
                  "observe_full": observe_full, "latencies": latencies, "idle_cpu": cpu, "idle_wall": wall,
                  "idle_drifts": k, "restarts": fw.restarts, "reloads": fw._mirror.reloads,
                  "codec": [ours_decode, theirs_decode, ours_encode, theirs_encode]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--drifts", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    n = args.rules
    state = state_dir({"10-bench.yaml": state_yaml(n)}, backend="iptables-nft")
    # the same rules for iptables-nft-restore, with a tag comment like vnetd's
    restore = f"*filter\n:{CHAIN} - [0:0]\n" + "".join(
        f'-A {CHAIN} {rule(i)[:-len("-j ACCEPT")]}-m comment --comment "vnetd:{i:016x}" -j ACCEPT\n'
        for i in range(n)) + "COMMIT\n"
    native, whole = [], []
    with Namespace("nft") as ns:
        def flush() -> None:
            sh("ip", "netns", "exec", ns.name, "nft", "flush", "ruleset")

        inside = []
        for _ in range(args.repeat):  # alternately, so that a busy moment of the machine falls on both
            flush()
            native.append(timed(lambda: sh("ip", "netns", "exec", ns.name, "iptables-nft-restore", input=restore)))
            flush()
            t0 = time.perf_counter()
            out = sh(PY, "-c", WHOLE, ns.name, state).stdout
            whole.append(time.perf_counter() - t0)
            inside.append(float(out.split()[-1]))
        exec_overhead = [timed(lambda: sh("ip", "netns", "exec", ns.name, "true")) for _ in range(args.repeat)]
        inner = json.loads(sh(PY, "-c", INNER, ns.name, state, str(args.repeat), str(args.drifts),
                              str(args.idle_seconds), DRIFTER).stdout)
        # the same repair by hand: iptables-nft inserting one such rule into the chain (CPU of
        # the command alone, its whole-ruleset read included)
        native_insert = []
        for i in range(args.repeat):
            before = os.times()
            sh("ip", "netns", "exec", ns.name, "iptables-nft", "-I", CHAIN, "2", *rule(10_000 + i).split())
            after = os.times()
            native_insert.append(after.children_user - before.children_user
                                 + after.children_system - before.children_system)
            sh("ip", "netns", "exec", ns.name, "iptables-nft", "-D", CHAIN, "2")
        # the whole daemon (`vnetd run`) over the same rules, one drift a second
        daemon = start_daemon(ns.name, state)
        try:
            wait_converged(ns.name, state)
            (user0, sys0), wall0 = cpu_split(daemon.pid), time.monotonic()
            daemon_lat = json.loads(sh(PY, "-c", DAEMON_DRIFTER, ns.name, str(int(args.idle_seconds))).stdout)
            (user1, sys1), wall = cpu_split(daemon.pid), time.monotonic() - wall0
            daemon_user, daemon_sys = (user1 - user0) / wall * 100, (sys1 - sys0) / wall * 100
            daemon_rss = rss_kb(daemon.pid) / 1024
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait()
    r, w, a = stats(native), stats(whole), stats(inside)
    c, e = stats(inner["check"]), stats(exec_overhead)
    oc, of = stats(inner["observe_cached"]), stats(inner["observe_full"])
    lat = inner["latencies"]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    idle_share = inner["idle_cpu"] / inner["idle_wall"] * 100
    ours_decode, theirs_decode, ours_encode, theirs_encode = inner["codec"]
    print(f"## Firewall on iptables-nft: {n} rules in one owned chain (table ip filter)\n")
    print(table(["measurement", "min", "median", "max", "target"], [
        ["`iptables-nft-restore` of the same rules (native limit)", ms(r[0]), ms(r[1]), ms(r[2]), ""],
        ["vnetd from empty, whole process (start-up, load, compile, one transaction, verify)",
         ms(w[0]), ms(w[1]), ms(w[2]), f"<= 3x restore: {w[1] / r[1]:.2f}x"],
        ["vnetd from empty inside the process (compile, one transaction, verify; of the same fresh processes)",
         ms(a[0]), ms(a[1]), ms(a[2]),
         f"<= 3x restore: {a[1] / r[1]:.2f}x"],
        ['"changed?" (one generation-id request)', ms(c[0]), ms(c[1]), ms(c[2]), ""],
        ["observe, mirror current (nothing changed)", ms(oc[0]), ms(oc[1]), ms(oc[2]), ""],
        ["full observe (every table dumped and parsed again)", ms(of[0]), ms(of[1]), ms(of[2]), ""],
        [f"drift repaired from the event, p50 / p99 ({len(lat)} drifts)", ms(min(lat)), f"{ms(p50)} / {ms(p99)}",
         ms(max(lat)), "p50 <= 10 ms, p99 <= 50 ms"],
        [f"repair loop CPU, one drift a second ({inner['idle_drifts']} drifts in {inner['idle_wall']:.0f} s)",
         "", f"{idle_share:.2f} % of a core", "", ""],
        [f"whole daemon (`vnetd run`), one drift a second: drift repaired, p50 / p99 ({len(daemon_lat)} drifts)",
         ms(min(daemon_lat)), f"{ms(percentile(daemon_lat, 50))} / {ms(percentile(daemon_lat, 99))}",
         ms(max(daemon_lat)), "p50 <= 10 ms, p99 <= 50 ms"],
        ["whole daemon (`vnetd run`), one drift a second: CPU", "",
         f"{daemon_user + daemon_sys:.2f} % of a core (user {daemon_user:.2f} %, kernel {daemon_sys:.2f} %)", "",
         "<= 0.5 %"],
        ["`iptables-nft -I` of one rule into the chain (the same repair by hand), CPU of the command",
         ms(min(native_insert)), ms(statistics.median(native_insert)), ms(max(native_insert)), ""],
        ["whole daemon (`vnetd run`): RSS at the end", "", f"{daemon_rss:.0f} MB", "", ""],
        ["`ip netns exec true` (included in the restore figure)", ms(e[0]), ms(e[1]), ms(e[2]), ""],
    ]))
    print("\nCodec (per rule, same dump): vnetd decodes in "
          f"{ours_decode * 1e6:.1f} us, pyroute2 0.9.7's nft_rule_msg in {theirs_decode * 1e6:.1f} us; "
          f"building a 4-expression NEWRULE (l4proto, a compat match, a counter) takes vnetd {ours_encode * 1e6:.1f} us, "
          f"pyroute2 {theirs_encode * 1e6:.1f} us.")
    print(f"\nRuns: {args.repeat} applies each way, 200 checks, {args.drifts} drifts; transactions refused for a "
          f"concurrent change and rebuilt: {inner['restarts']}; full re-reads of the mirror: {inner['reloads']} "
          f"(1 + one per forced full observe). Reproduce: `sudo .venv/bin/python bench/nftables.py --rules {n} "
          f"--repeat {args.repeat}`\n")
    sh("rm", "-rf", state)


if __name__ == "__main__":
    main()
