# SPDX-License-Identifier: MIT
"""A worker process that drives vnetd's iptables-nft backend inside a test namespace.

The tests talk to the backend's API directly (observe, fingerprints, plan, apply,
changed, events) without starting the CLI for every step: the worker enters the
namespace once, keeps one backend (its mirror, its event socket) and answers
JSON commands on stdin, one per line. The oracles (iptables-nft, nft) run from
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
from vnetd.backends.nftables import NftFirewallBackend
from vnetd.desired.rules import parse_rule
from vnetd.model.firewall import ChainMode, ChainSpec
from vnetd.plan.firewall import plan_firewall

backend = NftFirewallBackend()
chains = ()

def declare(spec):
    global chains
    chains = tuple(ChainSpec(c["table"], c["chain"], c.get("policy"), ChainMode(c.get("mode", "merge")),
                             tuple(parse_rule(r) for r in c.get("rules", ())), None,
                             tuple(parse_rule(r) for r in c.get("tail", ()))) for c in spec)
    return len(chains)

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
    # the backend's mirror (kept by notifications) against a fresh read of the kernel
    def view(mirror):
        return {t: {c: [c_.policy, [(r.handle, r.tag, r.fingerprint.hex()) for r in c_.rules]]
                    for c, c_ in table.chains.items()} for t, table in mirror.tables.items()}
    backend._mirror.sync()
    fresh = NftFirewallBackend()
    fresh._fp = backend._fp
    fresh._mirror.fp = backend._fp
    fresh._mirror.sync()
    ours, theirs = view(backend._mirror), view(fresh._mirror)
    fresh.close()
    return {"equal": ours == theirs, "ours": ours if ours != theirs else None,
            "theirs": theirs if ours != theirs else None}

def shrink_event_buffer():
    import socket
    backend._events.sock.setsockopt(socket.SOL_SOCKET, 33, 4096)  # SO_RCVBUFFORCE: overflows soon
    return True

COMMANDS = {
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
    "show": lambda: {t.name: {c.name: {"policy": c.policy, "owned": c.owned,
                                        "rules": [r.text for r in c.rules if r.managed],
                                        "foreign": [r.text for r in c.foreign]}
                              for c in t.chains if c.managed}
                     for t in backend.show(chains) if t.managed},
    "has_vnetd_rules": lambda: backend.has_vnetd_rules(),
    "reloads": lambda: backend._mirror.reloads,
    "restarts": lambda: backend.restarts,
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
          tail: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"table": table, "chain": name, "policy": policy, "mode": mode, "rules": list(rules), "tail": list(tail)}


def nft_save(ns: Netns, table: str | None = None) -> list[str]:
    """``iptables-nft-save`` lines (rules and chain headers), counters and comments left out."""
    args = ["iptables-nft-save"] + (["-t", table] if table else [])
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
