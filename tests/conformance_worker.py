# SPDX-License-Identifier: MIT
"""The vnetd side of the differential test, as one long-lived process in the namespace.

``python -m tests.conformance_worker NETNS STATE_DIR [FAMILY]`` enters NETNS
(``vnetd.netns.enter``, before any thread), imports and warms up vnetd once, then answers one JSON request per line on
stdin with one JSON line on stdout. FAMILY is 4 (``firewall:`` and iptables-legacy,
the default) or 6 (``firewall6:`` and ip6tables-legacy).

* ``{"op": "rule", "table": T, "chain": C, "rule": R}``: a state file holding
  ``firewall: {T: {C: {rules: [R]}}}`` (``firewall6:``) goes through ``vnetd check``,
  and when that accepts it ``vnetd apply --format json``, the rule's lines from
  ``iptables-legacy-save`` (``ip6tables-legacy-save``; vnetd's tag comment and owner
  mark removed), and a second ``vnetd plan --format json``. Then the table is put
  back as it was.
* ``{"op": "state", "text": YAML}``: ``check`` then ``apply`` of a whole state file,
  left in place (the whole-table test reads the result).

Each command runs in-process through ``vnetd.cli.main`` (loader -> checks ->
Engine, exactly what the CLI does), in a child forked for the request from the
warmed-up worker: a command that kills its process (SIGSEGV, a stack-smashing
abort, an ``exit()`` inside libxtables) costs one fork, and its request is
answered with how it died and in which command.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import io
import json
import os
import re
import select
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from tests.iptables_oracle import (
    BUILTIN_CHAINS,
    TOOLS,
    Namespace,
    TableKeeper,
    jump_chains,
    restore_split,
    save_lines,
    touched_tables,
)

TAG = re.compile(r"(?:^| )-m comment --comment \"?vnetd:[0-9a-f]+\"?(?= |$)")
OWNER_MARK = "vnetd:owned-chain"
STATE_FILE = "rule.yaml"
RULE_LINE = 5  # the line of the rule in the state file written by state_file()
REQUEST_TIMEOUT = 120.0
STAGE_MARK = "conformance-worker: vnetd "


def state_file(table: str, chain: str, rule: str, section: str = "firewall") -> str:
    """The one-rule state file; the rule is a double-quoted YAML scalar (JSON escapes are valid
    YAML), so vnetd receives exactly these characters."""
    return (f"{section}:\n  {json.dumps(table)}:\n    {json.dumps(chain)}:\n      rules:\n"
            f"      - {json.dumps(rule)}\n")


def strip_tags(lines: tuple[str, ...]) -> tuple[str, ...]:
    """vnetd's rules as iptables would print them: tag comment and owner-mark rule removed."""
    return tuple(TAG.sub("", line).strip() for line in lines if OWNER_MARK not in line)


def death(status: int) -> str:
    """What ``os.waitpid``'s status says about a process that did not report back."""
    if os.WIFSIGNALED(status):
        try:
            return f"died of {signal.Signals(os.WTERMSIG(status)).name}"
        except ValueError:
            return f"died of signal {os.WTERMSIG(status)}"
    return f"exited with status {os.WEXITSTATUS(status)}"


#: Warms the process up before it forks: vnetd's modules, python-iptables, libxtables and
#: pyroute2 are imported and initialised once instead of in every command.
WARM_UP_RULE = "-p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT"
WARM_UP_STATE = state_file("filter", "INPUT", WARM_UP_RULE)


class Worker:
    def __init__(self, state_dir: Path, family: int = 4) -> None:
        self.ns = Namespace(None)  # this process already is in the namespace
        self.family = family
        self.tools = TOOLS[family]
        self.tables = TableKeeper(self.ns, family)
        self.dir = state_dir
        from vnetd import cli

        # argparse costs more than a small command: build the parser once, before forking
        cli.build_parser = functools.lru_cache(maxsize=1)(cli.build_parser)  # type: ignore[method-assign]
        self.cli_main = cli.main
        # the conformance is the legacy tables' (iptables-legacy, ip6tables-legacy): pinned,
        # as ``auto`` follows the test machine's iptables command (tests.support.StateDir)
        from tests.support import BACKEND_FILE

        (self.dir / BACKEND_FILE).write_text("firewall:\n  backend: iptables-legacy\n")
        os.chmod(self.dir / BACKEND_FILE, 0o644)
        self.write_state(state_file("filter", "INPUT", WARM_UP_RULE, self.tools.section))
        for command in ("check", "apply", "plan"):
            self._run_cli((command,))
        (self.dir / STATE_FILE).unlink()
        self.tables.reset("filter")
        gc.freeze()  # the children need not scan (and so copy) the warm-up's objects

    def _run_cli(self, args: tuple[str, ...]) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                code = self.cli_main(["--state-dir", str(self.dir), "--log-format", "json", *args])
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:
                code = -1
                print("crash: " + traceback.format_exc(), file=out)
        # the temporary directory changes from run to run; reports show a stable name
        return code, out.getvalue().replace(str(self.dir), "<state-dir>")

    def cli(self, *args: str) -> tuple[int, str]:
        """``vnetd --state-dir DIR ARGS`` in this process: exit status and what it printed."""
        os.write(2, f"{STAGE_MARK}{args[0]}\n".encode())  # names the command if the process dies in it
        return self._run_cli(args)

    def write_state(self, text: str) -> None:
        path = self.dir / STATE_FILE
        tmp = self.dir / ".rule.tmp"
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def rule(self, table: str, chain: str, rule: str) -> dict[str, Any]:
        result: dict[str, Any] = {"check_ok": False, "check": "", "apply_ok": None, "apply": "",
                                  "lines": [], "plan_empty": None, "plan": "", "crash": ""}
        words = restore_split(rule)
        try:
            for target in jump_chains(words, self.family):
                if target != chain and target not in BUILTIN_CHAINS.get(table, ()):
                    self.ns.run(self.tools.command, "-w", "-t", table, "-N", target)
            self.write_state(state_file(table, chain, rule, self.tools.section))
            code, text = self.cli("check")
            result["check_ok"], result["check"] = code == 0, text
            if code != 0:
                return result
            code, text = self.cli("apply", "--format", "json")
            result["apply_ok"], result["apply"] = code == 0, text
            result["lines"] = list(strip_tags(save_lines(self.ns.save(table, self.family), chain)))
            code, text = self.cli("plan", "--format", "json")
            result["plan_empty"], result["plan"] = code == 0, text
            return result
        finally:
            (self.dir / STATE_FILE).unlink(missing_ok=True)
            for touched in touched_tables(table, words):
                self.tables.reset(touched)

    def serve(self, request: dict[str, Any]) -> dict[str, Any]:
        if request["op"] == "rule":
            return self.rule(request["table"], request["chain"], request["rule"])
        if request["op"] == "state":
            return self.state(request["text"])
        return {"pong": True}

    def state(self, text: str) -> dict[str, Any]:
        self.write_state(text)
        code, check = self.cli("check")
        if code != 0:
            return {"check_ok": False, "check": check, "apply_ok": None, "apply": "", "crash": ""}
        code, applied = self.cli("apply", "--format", "json")
        return {"check_ok": True, "check": check, "apply_ok": code == 0, "apply": applied, "crash": ""}


class ForkServer:
    """Serves each request in a child forked from the warm worker: every rule meets the same
    process state whatever was judged before it (a rule that corrupts libxtables' memory
    cannot make a later one crash), a child that dies (or hangs) costs one fork, not a
    Python start-up, and its request is answered with how it died and in which command."""

    def __init__(self, worker: Worker, per_child: int = 1) -> None:
        self.worker = worker
        self.per_child = per_child
        self.pid = 0
        self.served = 0

    def _spawn(self) -> None:
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        self.log = tempfile.TemporaryFile()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(self.req_w)
                os.close(self.rep_r)
                os.dup2(self.log.fileno(), 1)  # what C code prints: libxtables, glibc's aborts
                os.dup2(self.log.fileno(), 2)
                with os.fdopen(req_r, "r", encoding="utf-8") as requests, \
                        os.fdopen(rep_w, "w", encoding="utf-8") as replies:
                    for line in requests:
                        replies.write(json.dumps(self.worker.serve(json.loads(line))) + "\n")
                        replies.flush()
            except BaseException:
                traceback.print_exc()  # into the log: the parent reports it with the request
            finally:
                os._exit(0)
        os.close(req_r)
        os.close(rep_w)
        self.pid = pid
        self.served = 0
        self.pending = b""

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        if not self.pid:
            self._spawn()
        mark = os.fstat(self.log.fileno()).st_size
        os.write(self.req_w, (json.dumps(request) + "\n").encode())
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while b"\n" not in self.pending:
            ready, _, _ = select.select([self.rep_r], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.rep_r, 1 << 16) if ready else b""
            if not chunk:
                return self._died(mark, hung=not ready)
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        self.served += 1
        if self.served >= self.per_child:
            self.close()
        return json.loads(line)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.pid:
            os.close(self.req_w)  # the child's request loop ends
            os.waitpid(self.pid, 0)
            os.close(self.rep_r)
            self.log.close()
            self.pid = 0

    def _died(self, mark: int, hung: bool) -> dict[str, Any]:
        if hung:
            os.kill(self.pid, signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        os.close(self.req_w)
        os.close(self.rep_r)
        self.log.seek(mark)
        printed = self.log.read().decode(errors="replace")
        self.log.close()
        stage = "?"
        if STAGE_MARK in printed:
            stage, _, printed = printed.rsplit(STAGE_MARK, 1)[1].partition("\n")
        for table in ("filter", "nat", "mangle", "raw"):
            self.worker.tables.reset(table)
        how = "hung" if hung else death(status)
        crash = f"vnetd {stage} {how}" + (f": {printed.strip()[-800:]}" if printed.strip() else "")
        return {"check_ok": False, "check": "", "apply_ok": None, "apply": "", "lines": [],
                "plan_empty": None, "plan": "", "crash": crash}


def main(argv: list[str]) -> int:
    """``NETNS STATE_DIR [FAMILY]``: the namespace to enter, an empty directory for the state
    file, and the family (4 or 6)."""
    from vnetd import netns

    family = int(argv[2]) if len(argv) > 2 else 4
    netns.enter(argv[0])
    # python-iptables points file descriptor 1 elsewhere while it checks an extension:
    # answers go to a copy of the original stdout, fd 1 goes to stderr
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    server = ForkServer(Worker(Path(argv[1]), family))
    try:
        for line in sys.stdin:
            answers.write(json.dumps(server.handle(json.loads(line))) + "\n")
            answers.flush()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
