#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Issue 2 benchmark: 500 bridges x 4 veth ports (2,000 ports), one address each.

(a) `vnetd apply` from empty, whole process, vs (c) `ip -batch` building the same
topology, each in a fresh namespace whose 2,000 veths exist beforehand (stand-in
NICs, peers in a second namespace); (b) a reconcile pass with nothing to do as the
daemon runs it (in-process, from its event-maintained cache), a cold in-process
observe+plan, and `vnetd plan` as a whole process.

Usage (root): bench/foundation.py [--bridges 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PY, Namespace, ms, quiet, sh, state_dir, stats, table, timed, vnetd


def ports_batch(bridges: int, peer: str) -> str:
    return "".join(f"link add p{i} type veth peer name q{i} netns {peer}\n" for i in range(bridges * 4))


def build_batch(bridges: int) -> str:
    lines = []
    for b in range(bridges):
        lines.append(f"link add br{b} type bridge stp_state 0 forward_delay 0")
        for j in range(4):
            lines.append(f"link set p{b * 4 + j} mtu 9000 master br{b} up")
        lines.append(f"link set br{b} mtu 9000 up")
        lines.append(f"addr add 10.{b // 250}.{b % 250}.1/24 dev br{b}")
    return "\n".join(lines) + "\n"


def state_yaml(bridges: int) -> str:
    out = ["interfaces:"]
    for b in range(bridges):
        ports = ", ".join(f"{{name: p{b * 4 + j}}}" for j in range(4))
        out.append(f"- {{name: br{b}, type: linux-bridge, state: up, mtu: 9000, "
                   f"bridge: {{options: {{stp: {{enabled: false, forward-delay: 0}}}}, port: [{ports}]}}, "
                   f"ipv4: {{enabled: true, address: [10.{b // 250}.{b % 250}.1/24]}}}}")
        for j in range(4):
            out.append(f"- {{name: p{b * 4 + j}, type: ethernet, state: up, mtu: 9000}}")
    return "\n".join(out) + "\n"


def fresh(bridges: int) -> tuple[Namespace, Namespace]:
    ns, peer = Namespace("host"), Namespace("peer")
    ns.batch(ports_batch(bridges, peer.name))
    return ns, peer


INNER = r"""
import json, sys, time
from vnetd import netns, log
netns.enter(sys.argv[1])
log.configure("json", "warning")
from vnetd.daemon.reconciler import Reconciler
from vnetd.engine import Engine
from vnetd.desired.loader import load_state_dir
engine = Engine()
desired = load_state_dir(sys.argv[2])
t0 = time.perf_counter(); plan, _ = engine.plan(desired); cold = time.perf_counter() - t0
rec = Reconciler(sys.argv[2], log.get_logger())
rec.reload("startup"); rec.resync()
first = rec.run_pass({"startup"})
times = []
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter(); s = rec.run_pass({"timer"}); times.append(time.perf_counter() - t0)
    assert not s.result.applied
import resource
print(json.dumps({"cold": cold, "cold_changes": len(plan.actions), "passes": times,
                  "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bridges", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.bridges
    state = state_dir({"10-bench.yaml": state_yaml(n)})
    batch = build_batch(n)
    native, ours = [], []
    # Namespaces are deleted at the end, all together: the kernel dismantles a deleted
    # namespace afterwards, in its own threads, holding the rtnl lock in turns for
    # seconds per 2,000 veth pairs, and every netlink change timed meanwhile would wait
    # for it (measured: `ip -batch` of 2,000 veths 0.4 s alone, 0.8 s beside a teardown)
    made: list[Namespace] = []
    try:
        for _ in range(args.repeat):
            ns, peer = fresh(n)
            made += [ns, peer]
            quiet()
            native.append(timed(lambda: sh("ip", "-n", ns.name, "-batch", "-", input=batch)))
            ns, peer = fresh(n)
            made += [ns, peer]
            result: list[object] = []
            quiet()
            ours.append(timed(lambda: result.append(vnetd("apply", netns=ns.name, state=state))))
            done = result[0]
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]  # type: ignore[attr-defined]
    finally:
        for each in made:
            each.delete()
        quiet()
    ns, peer = fresh(n)
    try:
        assert vnetd("apply", netns=ns.name, state=state).returncode == 0
        plans = []
        for _ in range(args.repeat):
            out: list[object] = []
            quiet()
            plans.append(timed(lambda: out.append(vnetd("plan", netns=ns.name, state=state))))
            assert out[0].returncode == 0, out[0].stdout[-2000:]  # type: ignore[attr-defined]
        inner = json.loads(sh(PY, "-c", INNER, ns.name, state, "20").stdout)
    finally:
        ns.delete()
        peer.delete()
        quiet()  # (for whatever is measured next)
    a, c = stats(ours), stats(native)
    p = stats(plans)
    passes = stats(inner["passes"])
    ratio = a[1] / c[1]
    print(f"## Foundation: {n} bridges, {n * 4} veth ports, {n} addresses\n")
    print(table(["measurement", "min", "median", "max", "target"], [
        ["(c) `ip -batch` builds the topology (native limit)", ms(c[0]), ms(c[1]), ms(c[2]), ""],
        ["(a) `vnetd apply` from empty, whole process", ms(a[0]), ms(a[1]), ms(a[2]),
         f"<= 2x (c): {ratio:.2f}x"],
        ["(b) daemon pass with nothing to do, in-process", ms(passes[0]), ms(passes[1]), ms(passes[2]), "<= 100 ms"],
        ["(b) `vnetd plan`, nothing to do, whole process", ms(p[0]), ms(p[1]), ms(p[2]), ""],
        ["cold in-process observe + plan (full dumps)", ms(inner["cold"]), "", "", ""],
    ]))
    print(f"\nRatio (a)/(c) of medians: {ratio:.2f}. Daemon RSS after the passes: "
          f"{inner['rss_kb'] / 1024:.0f} MB. Runs: {args.repeat} each (fresh namespaces), 20 daemon passes.")
    print(f"Reproduce: `sudo .venv/bin/python bench/foundation.py --bridges {n} --repeat {args.repeat}`\n")
    sh("rm", "-rf", state)


if __name__ == "__main__":
    main()
