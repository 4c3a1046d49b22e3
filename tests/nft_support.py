# SPDX-License-Identifier: MIT
"""A worker process that drives vnetd's iptables-nft backend inside a test namespace.

The tests talk to the backend's API directly (observe, fingerprints, plan, apply,
changed, events, checkpoints) without starting the CLI for every step: the worker
enters the namespace once, keeps the backends of both families behind
``FirewallFamilies`` (as the engine does; one shared session: mirror, event socket)
and answers JSON commands on stdin, one per line. A declared chain is IPv4 unless
it says ``"family": 6``. The oracles (iptables-nft, ip6tables-nft, nft) run from
the test itself, in the same namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.support import PY, ROOT, Netns

WORKER = r"""
import json, select, sys, time
from vnetd import netns
netns.enter(sys.argv[1])
from vnetd.backends.firewall import FirewallFamilies
from vnetd.backends.nftables import NftFirewallBackend, NftSession
from vnetd.desired.rules import parse_rule
from vnetd.model.checkpoint import Checkpoint
from vnetd.model.firewall import ChainMode, ChainSpec, table_key
from vnetd.model.netstate import NetState
from vnetd.plan.firewall import plan_firewall
from vnetd.plan.restore import restore_plan

backend = FirewallFamilies(NftFirewallBackend)
chains = ()
checkpoint = None

def declare(spec):
    global chains
    chains = tuple(ChainSpec(c["table"], c["chain"], c.get("policy"), ChainMode(c.get("mode", "merge")),
                             tuple(parse_rule(r) for r in c.get("rules", ())), None,
                             tuple(parse_rule(r) for r in c.get("tail", ())), family=c.get("family", 4))
                   for c in spec)
    return len(chains)

def tags(spec):
    # each declared rule's tag, or the compiler's refusal, in the order given
    from vnetd.backends.xtables import RuleCompileError, shared_compiler
    out = []
    for c in spec:
        chain = ChainSpec(c["table"], c["chain"], None, ChainMode.MERGE, (), None, family=c.get("family", 4))
        for text in c["rules"]:
            try:
                out.append(shared_compiler().compile(chain, parse_rule(text), set(c.get("chains", ()))).tag)
            except (RuleCompileError, ValueError) as exc:
                out.append("error: " + str(exc))
    return out

def take_checkpoint(keys):
    # what apply --confirm records before a change: the chains, whole, as they are now
    global checkpoint
    records = backend.record_chains([tuple(k) for k in keys])
    checkpoint = Checkpoint(time.time(), "test", chains=tuple(records[k] for k in sorted(records)))
    checkpoint = Checkpoint.from_json(checkpoint.to_json())  # as the trial keeps it: a file
    return len(records)

def rollback():
    # what a trial that is not confirmed does: restore plans, applied until nothing is left
    done = []
    for _ in range(4):
        keys = [(c.table_key, c.chain) for c in checkpoint.chains]
        plan = restore_plan(checkpoint, NetState(), {}, backend.record_chains(keys), None)
        if plan.empty:
            return {"restored": True, "applied": done}
        for action, error in backend.apply(list(plan.actions)):
            done.append({"action": action.describe(), "error": str(error) if error else None})
    return {"restored": False, "applied": done}

def plan():
    observed = backend.observe(chains)
    actions, problems = plan_firewall(chains, observed, backend.rule_ids(chains))
    return actions, problems

def converge(rounds=3):
    done = []
    for _ in range(rounds):
        actions, problems = plan()
        if problems:
            return {"problems": [str(p) for p in problems], "applied": done}
        if not actions:
            return {"converged": True, "applied": done}
        for action, error in backend.apply(actions):
            done.append({"action": action.describe(), "error": str(error) if error else None})
    actions, problems = plan()
    return {"converged": not actions and not problems, "applied": done,
            "left": [a.describe() for a in actions]}

def observe():
    out = {}
    for table, t in backend.observe(chains).items():
        out[table] = {name: {"builtin": c.builtin, "policy": c.policy, "owned": c.owned,
                             "rules": [[r.tag, r.fingerprint.hex(), r.text] for r in c.rules]}
                      for name, c in t.chains.items()}
    return out

def fingerprints():
    return {rid.tag: [f.hex() for f in rid.fingerprints] for rid in backend.rule_ids(chains).values()}

def wait_event(timeout):
    start = time.monotonic()
    ready, _w, _x = select.select([backend.event_fileno()], [], [], timeout)
    return {"readable": bool(ready), "after": time.monotonic() - start}

def mirror_matches_kernel():
    # the backends' mirror (kept by notifications) against a fresh read of the kernel
    def view(mirror):
        return {t: {c: [c_.policy, [(r.handle, r.tag, r.fingerprint.hex()) for r in c_.rules]]
                    for c, c_ in table.chains.items()} for t, table in mirror.tables.items()}
    mirror = backend.member(4)._mirror
    mirror.sync()
    fresh = NftSession()
    fresh.mirror.fps = dict(mirror.fps)  # what the backends learned of the extensions' usersizes
    fresh.mirror.fp_versions = {f: -1 for f in mirror.fps}
    fresh.mirror.sync()
    ours, theirs = view(mirror), view(fresh.mirror)
    fresh.close()
    return {"equal": ours == theirs, "ours": ours if ours != theirs else None,
            "theirs": theirs if ours != theirs else None}

def shrink_event_buffer():
    import socket
    backend.member(4)._events.sock.setsockopt(socket.SOL_SOCKET, 33, 4096)  # SO_RCVBUFFORCE: overflows soon
    return True

def caches_hold_for_a_list():
    # the engine passes the desired state's list: a new tuple per call must keep the
    # compiled rules and the planner's inputs (the same objects, nothing compiled again)
    ids = backend.rule_ids(list(chains))
    observed = backend.observe(list(chains))
    declared = {f: backend.member(f)._declared for f in backend.families}
    return {"ids": backend.rule_ids(list(chains)) is ids,
            "declared": all(backend.member(f).compile_all(list(chains)) is declared[f] for f in backend.families),
            "observed": all(backend.observe(list(chains))[k].chains[c] is t.chains[c]
                            for k, t in observed.items() for c in t.chains if t.chains[c].rules)}

def views_match_rebuild():
    # each chain view made again from the last one (where only the changed rules are
    # looked at) against one made from scratch
    out = []
    for f in backend.families:
        member = backend.member(f)
        member.observe(chains)
        for (table, name), (_version, render, view, shown) in member._views.items():
            chain = member._mirror.tables[table].chains[name]
            rules, total = member._rule_views(chain.rules, render, 200)
            out.append([table, name, list(view.rules) == rules and view.keys == chain.keys() and shown == total])
    return out

COMMANDS = {
    "views_match_rebuild": views_match_rebuild,
    "caches_hold_for_a_list": caches_hold_for_a_list,
    "mirror_matches_kernel": mirror_matches_kernel,
    "shrink_event_buffer": shrink_event_buffer,
    "declare": declare,
    "plan": lambda: [a.describe() for a in plan()[0]],
    "converge": converge,
    "apply_once": lambda: [[a.describe(), str(e) if e else None] for a, e in backend.apply(plan()[0])],
    "observe": observe,
    "fingerprints": fingerprints,
    "changed": lambda tables: backend.changed(tables),
    "drain": lambda: backend.drain_events(),
    "wait_event": wait_event,
    "show": lambda: {table_key(t.name, t.family): {c.name: {"policy": c.policy, "owned": c.owned,
                                        "rules": [r.text for r in c.rules if r.managed],
                                        "foreign": [r.text for r in c.foreign]}
                              for c in t.chains if c.managed}
                     for t in backend.show(chains) if t.managed},
    "show_all": lambda: {table_key(t.name, t.family): {c.name: [r.text for r in c.rules] for c in t.chains}
                         for t in backend.show(chains)},
    "has_vnetd_rules": lambda: backend.has_vnetd_rules(),
    "reloads": lambda: backend.member(4)._mirror.reloads,
    "restarts": lambda: sum(backend.member(f).restarts for f in backend.families),
    "tags": tags,
    "checkpoint": take_checkpoint,
    "rollback": rollback,
}

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    try:
        result = COMMANDS[request["cmd"]](*request.get("args", ()))
        print(json.dumps({"ok": result}), flush=True)
    except Exception as exc:  # reported to the test, which fails with it
        import traceback
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}), flush=True)
"""


class NftWorker:
    """vnetd's NftFirewallBackend in a process inside ``ns``; ``call`` runs one command."""

    def __init__(self, ns: Netns) -> None:
        self.ns = ns
        self.proc = subprocess.Popen([PY, "-c", WORKER, ns.name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={"PYTHONPATH": str(ROOT)})
        assert self._read() == {"ready": True}

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            assert self.proc.stderr is not None
            raise AssertionError(f"worker died: {self.proc.stderr.read()}")
        return json.loads(line)

    def call(self, cmd: str, *args: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, "args": list(args)}) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise AssertionError(f"{cmd}: {answer['error']}\n{answer['trace']}")
        return answer["ok"]

    def declare(self, *chains: dict[str, Any]) -> None:
        self.call("declare", list(chains))

    def converge(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("converge")
        assert result.get("converged"), result
        assert all(a["error"] is None for a in result["applied"]), result
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> NftWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chain(table: str, name: str, *rules: str, policy: str | None = None, mode: str = "merge",
          tail: tuple[str, ...] = (), family: int = 4) -> dict[str, Any]:
    return {"table": table, "chain": name, "policy": policy, "mode": mode, "rules": list(rules), "tail": list(tail),
            "family": family}


def nft_save(ns: Netns, table: str | None = None, family: int = 4) -> list[str]:
    """``iptables-nft-save`` (``family`` 6: ``ip6tables-nft-save``) lines (rules and chain
    headers), counters and comments left out."""
    args = ["ip6tables-nft-save" if family == 6 else "iptables-nft-save"] + (["-t", table] if table else [])
    out = ns.exec(*args).stdout.splitlines()
    lines = []
    for line in out:
        if line.startswith("#"):
            continue
        if line.startswith(":"):
            line = line.rsplit(" ", 1)[0]  # ":CHAIN POLICY [p:b]" -> counters left out
        lines.append(line)
    return lines


assert sys  # the worker runs with the test's interpreter (tests.support.PY)
