#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Issue 3 benchmark: 10,000 rules in one owned chain of the filter table.

* apply from empty: `vnetd apply` as a whole process, and the apply step inside
  the process (compile, libiptc edit + commit, read back and verify), against
  `iptables-legacy-restore` of the same rules (tagged the same way), in one run;
* one "changed?" check with 10,000 rules in the table (the daemon's poll);
* a no-op reconcile pass with 10,000 managed rules (the daemon, in-process);
* for scale: python-iptables reading the 10,000 rules back (Chain.rules).

Rules: `-s 198.51.x.y/32 -i brdmz -p tcp -m tcp --dport {22,80,443,8080,3306} -j ACCEPT`
(10,000 sources, five services: the compiled `-m tcp` segments repeat, as in real
rule sets). Usage (root): bench/firewall.py [--rules 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PY, Namespace, ms, sh, state_dir, stats, table, timed, vnetd

PORTS = (22, 80, 443, 8080, 3306)


def rule(i: int) -> str:
    return f"-s 198.51.{100 + i // 250}.{i % 250}/32 -i brdmz -p tcp -m tcp --dport {PORTS[i % 5]} -j ACCEPT"


def state_yaml(n: int) -> str:
    return "firewall:\n  filter:\n    VNETD-BENCH:\n      mode: exclusive\n      rules:\n" + "".join(
        f"      - {rule(i)}\n" for i in range(n))


INNER = r"""
import json, subprocess, sys, time
from vnetd import netns, log
netns.enter(sys.argv[1])
log.configure("json", "warning")
from vnetd.desired.loader import load_state_dir
from vnetd.engine import Engine
from vnetd.daemon.reconciler import Reconciler
repeat = int(sys.argv[3])
desired = load_state_dir(sys.argv[2])
apply_times, check_times = [], []
for _ in range(repeat):
    subprocess.run(["iptables-legacy", "-F"], check=True)
    subprocess.run(["iptables-legacy", "-X"], check=True)
    # cold caches each time: the apply compiles every rule, as a first start would
    import vnetd.backends.xtables as xt
    xt._shared_compiler = None
    engine = Engine()

    t0 = time.perf_counter(); result = engine.converge(desired); apply_times.append(time.perf_counter() - t0)
    assert result.converged
fw = engine.managers.firewall.backend
fw.observe(desired.chains)
for _ in range(200):
    t0 = time.perf_counter(); changed = fw.changed(["filter"]); check_times.append(time.perf_counter() - t0)
    assert not changed
rec = Reconciler(sys.argv[2], log.get_logger())
rec.reload("startup"); rec.resync(); rec.run_pass({"startup"})
passes = []
for _ in range(50):
    t0 = time.perf_counter(); s = rec.run_pass({"timer"}); passes.append(time.perf_counter() - t0)
    assert not s.result.applied
iptc = __import__("vnetd.backends.xtables", fromlist=["x"]).iptc_module()
t0 = time.perf_counter()
rules = iptc.Chain(iptc.Table("filter"), "VNETD-BENCH").rules
pyiptc_read = time.perf_counter() - t0
print(json.dumps({"apply": apply_times, "check": check_times, "passes": passes, "pyiptc_read": pyiptc_read,
                  "pyiptc_rules": len(rules)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.rules
    state = state_dir({"10-bench.yaml": state_yaml(n)})
    # the same rules for iptables-legacy-restore, with a tag comment like vnetd's
    restore = "*filter\n:VNETD-BENCH - [0:0]\n" + "".join(
        f'-A VNETD-BENCH {rule(i)[:-len("-j ACCEPT")]}-m comment --comment "vnetd:{i:016x}" -j ACCEPT\n'
        for i in range(n)) + "COMMIT\n"
    native, whole = [], []
    with Namespace("fw") as ns:
        for _ in range(args.repeat):
            sh("ip", "netns", "exec", ns.name, "iptables-legacy", "-F")
            sh("ip", "netns", "exec", ns.name, "iptables-legacy", "-X")
            native.append(timed(lambda: sh("ip", "netns", "exec", ns.name, "iptables-legacy-restore", input=restore)))
        for _ in range(args.repeat):
            sh("ip", "netns", "exec", ns.name, "iptables-legacy", "-F")
            sh("ip", "netns", "exec", ns.name, "iptables-legacy", "-X")
            out: list[object] = []
            whole.append(timed(lambda: out.append(vnetd("apply", netns=ns.name, state=state))))
            assert out[0].returncode == 0, out[0].stdout[-2000:] + out[0].stderr[-2000:]  # type: ignore[attr-defined]
        # `ip netns exec` costs a few ms itself: measure it so the native figure can be read without it
        exec_overhead = [timed(lambda: sh("ip", "netns", "exec", ns.name, "true")) for _ in range(args.repeat)]
        inner = json.loads(sh(PY, "-c", INNER, ns.name, state, str(args.repeat)).stdout)
    r, w, a = stats(native), stats(whole), stats(inner["apply"])
    c, p, e = stats(inner["check"]), stats(inner["passes"]), stats(exec_overhead)
    print(f"## Firewall: {n} rules in one owned chain (filter)\n")
    print(table(["measurement", "min", "median", "max", "target"], [
        ["`iptables-legacy-restore` of the same rules (native limit)", ms(r[0]), ms(r[1]), ms(r[2]), ""],
        ["`vnetd apply` from empty, whole process", ms(w[0]), ms(w[1]), ms(w[2]),
         f"{w[1] / r[1]:.1f}x restore"],
        ["apply from empty inside the process (compile, commit, verify)", ms(a[0]), ms(a[1]), ms(a[2]),
         f"<= 3x restore: {a[1] / r[1]:.2f}x"],
        ['one "changed?" check of the table', ms(c[0]), ms(c[1]), ms(c[2]), "<= 5 ms"],
        ["daemon pass with nothing to do, in-process", ms(p[0]), ms(p[1]), ms(p[2]), "<= 50 ms"],
        ["python-iptables reads the chain back (for scale)", ms(inner["pyiptc_read"]), "", "", ""],
        ["`ip netns exec true` (included in the restore figure)", ms(e[0]), ms(e[1]), ms(e[2]), ""],
    ]))
    print(f"\nRuns: {args.repeat} applies each way, 200 checks, 50 passes. "
          f"Reproduce: `sudo .venv/bin/python bench/firewall.py --rules {n} --repeat {args.repeat}`\n")
    sh("rm", "-rf", state)


if __name__ == "__main__":
    main()
