# SPDX-License-Identifier: MIT
"""The differential test of issue 10: vnetd against iptables-legacy, rule by rule (and
``firewall6:`` against ip6tables-legacy: a ``Lab`` serves one family, its ``Suite``
holds that family's corpus and deliberate refusals, and each family writes its own
part of docs/CONFORMANCE.md).

A *lab* is namespaces prepared alike: the iptables oracle (``tests.iptables_oracle``)
works in one, vnetd worker processes (``tests.conformance_worker``) in the others. ``Lab.judge`` puts one rule through
both and classifies the outcome:

* ``agree``: both refuse it, or both accept it and vnetd installs the very line
  iptables installs (tag aside), converges, and a second plan is empty;
* ``different-meaning``: vnetd installed something other than iptables would;
* ``installed-although-refused``: iptables refuses the rule, vnetd installed it;
* ``check-passes-apply-fails``: ``check`` accepted it but ``apply`` failed or did
  not converge, or the second ``plan`` is not empty;
* ``refused-although-accepted``: iptables accepts it, ``check`` refuses it;
* ``crashed``: the vnetd process died on the rule (SIGSEGV, a stack-smashing
  abort, ``exit()`` inside libxtables), in ``check`` or ``apply``;
* ``deliberate-refusal``: the last case, listed with its reason in
  ``tests/data/iptables/deliberate-refusals.txt``.
"""

from __future__ import annotations

import json
import os
import queue
import select
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.iptables_oracle import (
    TOOLS,
    IptablesOracle,
    Namespace,
    TableKeeper,
    Verdict,
    iptables_version,
    kernel_release,
    prepare_namespace,
    restore_split,
    target_extensions,
)
from tests.support import ROOT, NetnsFactory

DATA = ROOT / "tests" / "data" / "iptables"
CORPUS = DATA / "corpus.txt"
DELIBERATE = DATA / "deliberate-refusals.txt"
RULESETS = DATA / "rulesets"
CONFORMANCE_DOC = ROOT / "docs" / "CONFORMANCE.md"


@dataclass(frozen=True, slots=True)
class Suite:
    """One family's conformance data (tests/data/iptables, tests/data/ip6tables)."""

    family: int
    data: Path

    @property
    def corpus(self) -> Path:
        return self.data / "corpus.txt"

    @property
    def deliberate(self) -> Path:
        return self.data / "deliberate-refusals.txt"

    @property
    def rulesets(self) -> Path:
        return self.data / "rulesets"


SUITES = {4: Suite(4, DATA), 6: Suite(6, ROOT / "tests" / "data" / "ip6tables")}

AGREE = "agree"
DIFFERENT = "different-meaning"
INSTALLED_REFUSED = "installed-although-refused"
APPLY_FAILS = "check-passes-apply-fails"
REFUSED_ACCEPTED = "refused-although-accepted"
CRASHED = "crashed"
DELIBERATE_REFUSAL = "deliberate-refusal"
DISAGREEMENTS = (DIFFERENT, INSTALLED_REFUSED, APPLY_FAILS, REFUSED_ACCEPTED, CRASHED)
CLASS_TITLES = {
    DIFFERENT: "installed with a different meaning",
    INSTALLED_REFUSED: "installed although iptables refuses it",
    APPLY_FAILS: "passes check but fails apply / does not converge",
    REFUSED_ACCEPTED: "refused although iptables accepts it",
    CRASHED: "vnetd's process died (a signal or exit() in libxtables)",
}


@dataclass(frozen=True, slots=True)
class CorpusRule:
    table: str
    chain: str
    rule: str
    line: int = 0
    section: str = ""  # the last '# ' comment above it

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.table, self.chain, self.rule)

    def __str__(self) -> str:
        return f"{self.table} {self.chain} {self.rule}"


def parse_rule_line(text: str, line: int = 0, section: str = "") -> CorpusRule:
    """``TABLE CHAIN RULE-ARGS`` (the rule keeps its spacing and quotes)."""
    table, chain, rule = text.strip().split(None, 2)
    return CorpusRule(table, chain, rule.strip(), line, section)


def load_corpus(path: Path = CORPUS) -> list[CorpusRule]:
    rules = []
    section = ""
    for n, text in enumerate(path.read_text().splitlines(), 1):
        stripped = text.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            section = stripped.lstrip("# ").strip() or section
            continue
        rules.append(parse_rule_line(stripped, n, section))
    return rules


def load_deliberate(path: Path = DELIBERATE) -> dict[tuple[str, str, str], str]:
    """Rule line -> reason. An entry is a rule line; the indented line(s) below it give the reason."""
    entries: dict[tuple[str, str, str], str] = {}
    current: tuple[str, str, str] | None = None
    for text in path.read_text().splitlines():
        if not text.strip() or text.startswith("#"):
            continue
        if text[0].isspace():
            assert current is not None, f"reason without a rule: {text!r}"
            entries[current] = (entries[current] + " " + text.strip()).strip()
        else:
            current = parse_rule_line(text).key
            entries[current] = ""
    return entries


# --------------------------------------------------------------------------- vnetd side


@dataclass(frozen=True, slots=True)
class Outcome:
    """What vnetd made of one rule (``check``, ``apply``, the installed lines, a second ``plan``)."""

    check_ok: bool
    check: str
    apply_ok: bool | None = None
    apply: str = ""
    lines: tuple[str, ...] = ()
    plan_empty: bool | None = None
    plan: str = ""
    crash: str = ""  # why the process died, and in which command

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        return cls(data["check_ok"], data["check"], data["apply_ok"], data["apply"], tuple(data["lines"]),
                   data["plan_empty"], data["plan"], data.get("crash", ""))

    def message(self) -> str:
        """The most telling part of vnetd's output for a report."""
        if self.crash:
            return _short(self.crash)
        if not self.check_ok:
            return _short(self.check)
        if not self.apply_ok:
            return _short(_apply_summary(self.apply))
        if not self.plan_empty:
            return _short("second plan: " + _plan_summary(self.plan))
        return ""


def _json_with(text: str, key: str) -> dict[str, Any] | None:
    """The JSON object with ``key`` in a command's output (log lines and warnings around it)."""
    decoder = json.JSONDecoder()
    for start in (i for i, c in enumerate(text) if c == "{" and (i == 0 or text[i - 1] == "\n")):
        try:
            data, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and key in data:
            return data
    return None


def _apply_summary(text: str) -> str:
    data = _json_with(text, "converged")
    if data is None:
        return text
    parts = [f"failed: {f.get('error')}" for f in data.get("failed", [])]
    parts += [f"still drifted: {r.get('resource')} {r.get('field')}" for r in data.get("remaining", [])]
    parts += [f"problem: {p.get('message')}" for p in data.get("problems", [])]
    return "; ".join(parts) or text


def _plan_summary(text: str) -> str:
    data = _json_with(text, "changes")
    if data is None:
        return text
    parts = [f"{c.get('resource')} {c.get('field')}: want {c.get('want')}, have {c.get('have')}"
             for c in data.get("changes", [])]
    parts += [f"problem: {p.get('message')}" for p in data.get("problems", [])]
    return "; ".join(parts) or text


def _short(text: str, limit: int = 300) -> str:
    lines = [line for line in text.strip().splitlines()
             if line.strip() and "state files" not in line and not line.startswith("warning: firewall.backend")
             and not line.startswith("firewall backend: ")]
    joined = " | ".join(lines)
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


class VnetdWorker:
    """The client of ``tests.conformance_worker``: one request, one JSON answer.

    The worker runs each vnetd command in a forked process and reports one that
    dies; should the worker itself die or hang, it is replaced, the tables are put
    back, and the rule is reported with what the worker left on stderr.
    """

    def __init__(self, netns: str, tables: TableKeeper, timeout: float = 30.0, family: int = 4) -> None:
        self.netns = netns
        self.family = family
        self.tables = tables
        self.timeout = timeout
        self.restarts = 0
        self._log = tempfile.TemporaryFile(mode="w+")
        self.state_dir = Path(tempfile.mkdtemp(prefix="vnetd-conformance-"))
        os.chmod(self.state_dir, 0o755)
        self._start()

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.conformance_worker", self.netns,
                                      str(self.state_dir), str(self.family)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, cwd=ROOT, env=env)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def request(self, payload: dict[str, Any], timeout: float | None = None) -> dict[str, Any] | str:
        """The worker's answer, or the reason there is none (a string)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        log_start = self._log.tell()
        try:
            self.proc.stdin.write(json.dumps(payload) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout or self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line:
            return json.loads(line)  # type: ignore[no-any-return]
        why = "hung" if not ready else f"died (status {self.proc.wait()})"
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.seek(log_start)
        tail = self._log.read()[-800:]
        self._log.seek(0, os.SEEK_END)
        for table in ("filter", "nat", "mangle", "raw"):
            self.tables.reset(table)
        self.restarts += 1
        self._start()
        return f"the vnetd worker {why}: {tail.strip()}"

    def rule(self, table: str, chain: str, rule: str) -> Outcome:
        reply = self.request({"op": "rule", "table": table, "chain": chain, "rule": rule})
        if isinstance(reply, str):
            return Outcome(False, "", crash=reply)
        return Outcome.from_json(reply)

    def state(self, text: str, timeout: float = 120.0) -> dict[str, Any]:
        reply = self.request({"op": "state", "text": text}, timeout)
        if isinstance(reply, str):
            return {"check_ok": False, "check": reply, "apply_ok": None, "apply": ""}
        return reply


# --------------------------------------------------------------------------- judging


@dataclass(frozen=True, slots=True)
class Judgement:
    rule: CorpusRule
    iptables: Verdict
    vnetd: Outcome
    verdict: str
    reason: str = ""  # for a deliberate refusal

    def describe(self) -> str:
        head = f"{self.rule}"
        if self.verdict == DIFFERENT:
            return (f"{head}\n    iptables: {' / '.join(self.iptables.lines)}\n"
                    f"    vnetd:    {' / '.join(self.vnetd.lines) or '(nothing)'}")
        if self.verdict == INSTALLED_REFUSED:
            return (f"{head}\n    iptables: {_short(self.iptables.error)}\n"
                    f"    vnetd:    {' / '.join(self.vnetd.lines) or '(nothing)'}")
        if self.verdict == APPLY_FAILS:
            said = "accepts" if self.iptables.accepted else f"refuses: {_short(self.iptables.error)}"
            return f"{head}\n    iptables {said}\n    vnetd:    {self.vnetd.message()}"
        if self.verdict == CRASHED:
            said = "accepts" if self.iptables.accepted else f"refuses: {_short(self.iptables.error)}"
            return f"{head}\n    iptables {said}\n    vnetd:    {self.vnetd.message()}"
        if self.verdict in (REFUSED_ACCEPTED, DELIBERATE_REFUSAL):
            return (f"{head}\n    iptables: {' / '.join(self.iptables.lines)}\n"
                    f"    vnetd:    {self.vnetd.message()}")
        return head


def classify(iptables: Verdict, vnetd: Outcome, deliberate: bool = False) -> str:
    if vnetd.crash:
        return CRASHED
    if not iptables.accepted:
        if not vnetd.check_ok:
            return AGREE
        return INSTALLED_REFUSED if vnetd.lines else APPLY_FAILS
    if not vnetd.check_ok:
        return DELIBERATE_REFUSAL if deliberate else REFUSED_ACCEPTED
    if vnetd.lines and vnetd.lines != iptables.lines:
        return DIFFERENT
    if not vnetd.apply_ok or not vnetd.plan_empty or vnetd.lines != iptables.lines:
        return APPLY_FAILS
    return AGREE


#: vnetd workers judging the corpus side by side (each in a namespace of its own).
WORKERS = max(1, min(2, os.cpu_count() or 1))


class Lab:
    """Namespaces prepared alike: iptables-legacy (ip6tables-legacy for family 6) judges
    rules in one, vnetd workers in the others, so that the oracle runs ahead while vnetd
    works, on several rules at once."""

    def __init__(self, factory: NetnsFactory, workers: int = WORKERS, family: int = 4) -> None:
        self.family = family
        self.suite = SUITES[family]
        label = "xt" if family == 4 else "xt6"
        self.references = [factory(f"{label}ref{i}") for i in range(workers)]
        self.reference = self.references[0]
        self.targets = [factory(f"{label}vnetd{i}") for i in range(workers)]
        for ns in (*self.references, *self.targets):
            prepare_namespace(ns.name, family)
        self.oracles = [IptablesOracle(ns.name, family) for ns in self.references]
        self.oracle = self.oracles[0]
        self.workers = [VnetdWorker(ns.name, TableKeeper(Namespace(ns.name), family), family=family)
                        for ns in self.targets]
        self.worker = self.workers[0]
        self.deliberate = load_deliberate(self.suite.deliberate)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()

    def _judgement(self, rule: CorpusRule, iptables: Verdict, vnetd: Outcome) -> Judgement:
        reason = self.deliberate.get(rule.key, "")
        verdict = classify(iptables, vnetd, rule.key in self.deliberate)
        return Judgement(rule, iptables, vnetd, verdict, reason if verdict == DELIBERATE_REFUSAL else "")

    def judge(self, rule: CorpusRule) -> Judgement:
        iptables = self.oracle.verdict(rule.table, rule.chain, rule.rule)
        return self._judgement(rule, iptables, self.worker.rule(rule.table, rule.chain, rule.rule))

    def judge_all(self, rules: Iterable[CorpusRule]) -> list[Judgement]:
        """Every rule judged: iptables' verdicts by every oracle (a namespace each) taking
        the next rule, vnetd's by every worker taking the next rule, both at once (each
        rule is judged alone, so the order does not matter)."""
        rules = list(rules)
        oracle_todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        vnetd_todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(len(rules)):
            oracle_todo.put(i)
            vnetd_todo.put(i)
        verdicts: list[Verdict | None] = [None] * len(rules)
        outcomes: list[Outcome | None] = [None] * len(rules)

        def drive_oracle(oracle: IptablesOracle) -> None:
            while True:
                try:
                    i = oracle_todo.get_nowait()
                except queue.Empty:
                    return
                verdicts[i] = oracle.verdict(rules[i].table, rules[i].chain, rules[i].rule)

        def drive(worker: VnetdWorker) -> None:
            while True:
                try:
                    i = vnetd_todo.get_nowait()
                except queue.Empty:
                    return
                outcomes[i] = worker.rule(rules[i].table, rules[i].chain, rules[i].rule)

        with ThreadPoolExecutor(max_workers=len(self.oracles) + len(self.workers)) as pool:
            running = [pool.submit(drive_oracle, o) for o in self.oracles]
            running += [pool.submit(drive, w) for w in self.workers]
            for done in running:
                done.result()
        return [self._judgement(rule, verdict, outcome)
                for rule, verdict, outcome in zip(rules, verdicts, outcomes, strict=True)
                if verdict is not None and outcome is not None]


# --------------------------------------------------------------------------- extensions and the report

IMPLICIT_OPTIONS = {
    "tcp": {"--sport", "--dport", "--source-port", "--destination-port", "--syn", "--tcp-flags", "--tcp-option"},
    "icmp6": {"--icmpv6-type"},
    "mh": {"--mh-type"},
    "udp": {"--sport", "--dport", "--source-port", "--destination-port"},
    "icmp": {"--icmp-type"},
    "sctp": {"--sport", "--dport", "--source-port", "--destination-port", "--chunk-types"},
    "dccp": {"--sport", "--dport", "--source-port", "--destination-port", "--dccp-types", "--dccp-option"},
    "esp": {"--espspi"},
    "ah": {"--ahspi"},
    "ipcomp": {"--ipcompspi", "--compres"},
}


#: -p names whose implicit match has another name (libxtables' aliases)
PROTOCOL_MATCHES = {"icmpv6": "icmp6", "ipv6-icmp": "icmp6", "58": "icmp6", "ipv6-mh": "mh",
                    "mobility-header": "mh", "135": "mh"}


def extensions_of(rule: str, family: int = 4) -> list[str]:
    """Match and target extensions a rule uses (implicit protocol matches included;
    ACCEPT/DROP/RETURN/QUEUE and jumps to chains count as ``standard``)."""
    words = restore_split(rule)
    targets = target_extensions(family)
    names: list[str] = []
    proto = None
    for i, word in enumerate(words):
        value = words[i + 1] if i + 1 < len(words) else ""
        if word in ("-m", "--match"):
            names.append(value)
        elif word in ("-j", "--jump"):
            names.append(value if value in targets else "standard")
        elif word in ("-g", "--goto"):
            names.append("standard")
        elif word in ("-p", "--protocol"):
            proto = PROTOCOL_MATCHES.get(value.lower(), value.lower())
    if proto in IMPLICIT_OPTIONS and proto not in names and IMPLICIT_OPTIONS[proto] & set(words):
        names.append(proto)
    if not any(w in ("-j", "--jump", "-g", "--goto") for w in words):
        names.append("(no target)")
    return list(dict.fromkeys(names))


#: where the IPv6 part of docs/CONFORMANCE.md starts: each family's run rewrites its own part
IPV6_PART = "<!-- IPv6 (firewall6:, ip6tables-legacy): written by the IPv6 conformance run -->"


def write_report(judgements: list[Judgement], deliberate: dict[tuple[str, str, str], str],
                 path: Path = CONFORMANCE_DOC, family: int = 4) -> str:
    """Write this family's part of the report (the other family's part is kept); its text."""
    text = report(judgements, deliberate, family)
    old = path.read_text() if path.exists() else ""
    ipv4, _, ipv6 = old.partition(IPV6_PART)
    if family == 4:
        doc = text + (f"\n{IPV6_PART}\n{ipv6.lstrip()}" if ipv6.strip() else "")
    else:
        doc = (ipv4.rstrip() + "\n" if ipv4.strip() else "# Conformance with iptables-legacy\n\n(not run yet)\n")
        doc += f"\n{IPV6_PART}\n\n{text}"
    path.write_text(doc)
    return text


def report(judgements: list[Judgement], deliberate: dict[tuple[str, str, str], str], family: int = 4) -> str:
    """One family's part of docs/CONFORMANCE.md."""
    tool = TOOLS[family].command
    suite = SUITES[family]
    data = suite.data.relative_to(ROOT)
    h2 = "## IPv6: " if family == 6 else "## "
    counts = Counter(j.verdict for j in judgements)
    accepted = sum(1 for j in judgements if j.iptables.accepted)
    per_ext: dict[str, Counter[str]] = {}
    for j in judgements:
        for name in extensions_of(j.rule.rule, family):
            c = per_ext.setdefault(name, Counter())
            c["lines"] += 1
            c["accepted"] += j.iptables.accepted
            c["agree"] += j.verdict in (AGREE, DELIBERATE_REFUSAL)
    disagreements = sum(counts[c] for c in DISAGREEMENTS)
    if family == 4:
        out = [
            "# Conformance with iptables-legacy",
            "",
            "Generated by `tests/integration/test_iptables_conformance.py` on every run (do not edit by hand):",
            f"every rule of `{data}/corpus.txt` is given to `{tool} -A` and to",
            "`vnetd check` / `apply` / `plan`, each in a network namespace prepared the same way; the",
            "two must agree (issue 10). See `tests/conformance.py` for what each class means.",
        ]
    else:
        out = [
            "# Conformance with ip6tables-legacy (firewall6:)",
            "",
            "Generated by the IPv6 run of `tests/integration/test_iptables_conformance.py` (do not edit by",
            f"hand): every rule of `{data}/corpus.txt` is given to `{tool} -A` and, in a",
            "`firewall6:` section, to `vnetd check` / `apply` / `plan`, each in a network namespace prepared",
            "the same way; the two must agree (issue 14). The classes are those of the IPv4 part above.",
        ]
    out += [
        "",
        f"* {tool.split('-')[0]}: {iptables_version(family)}",
        f"* kernel: {kernel_release()}",
        f"* corpus: {len(judgements)} rules, {accepted} accepted and {len(judgements) - accepted} refused by "
        f"{tool.split('-')[0]}",
        f"* agreement: {counts[AGREE]} rules; deliberate refusals: {counts[DELIBERATE_REFUSAL]}; "
        f"disagreements: {disagreements}",
        "",
        "| class | rules |",
        "|---|---|",
    ]
    for name in DISAGREEMENTS:
        out.append(f"| {CLASS_TITLES[name]} | {counts[name]} |")
    out += ["", f"{h2}Per extension", "",
            "A rule counts for every extension it uses; *agree* includes deliberate refusals.", "",
            f"| extension | rules | accepted by {tool.split('-')[0]} | agree |", "|---|---|---|---|"]
    for name in sorted(per_ext, key=lambda n: (n.startswith("("), n.lower())):
        c = per_ext[name]
        out.append(f"| {name} | {c['lines']} | {c['accepted']} | {c['agree']} |")
    out += ["", f"{h2}Deliberate refusals", "",
            f"Rules {tool.split('-')[0]} accepts that vnetd refuses on purpose "
            f"(`{data}/deliberate-refusals.txt`):", ""]
    for (table, chain, rule), reason in deliberate.items():
        out.append(f"* `{table} {chain} {rule}`: {reason}")
    if not deliberate:
        out.append("* none")
    for name in DISAGREEMENTS:
        examples = [j for j in judgements if j.verdict == name]
        if not examples:
            continue
        title = CLASS_TITLES[name]
        out += ["", f"{h2}{title[0].upper()}{title[1:]} ({len(examples)})", "", "```"]
        for j in examples:
            out.append(j.describe())
        out.append("```")
    return "\n".join(out) + "\n"


def summary(judgements: list[Judgement], limit: int = 8) -> str:
    """Counts per class and the first examples of each, for an assertion message."""
    counts = Counter(j.verdict for j in judgements)
    parts = [", ".join(f"{CLASS_TITLES[c]}: {counts[c]}" for c in DISAGREEMENTS)]
    for name in DISAGREEMENTS:
        examples = [j for j in judgements if j.verdict == name][:limit]
        if examples:
            parts.append(f"--- {CLASS_TITLES[name]} (first {len(examples)} of {counts[name]}):")
            parts += [j.describe() for j in examples]
    return "\n".join(parts)


