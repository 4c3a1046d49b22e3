# SPDX-License-Identifier: MIT
"""A realistic 2,000-rule ruleset for the whole-table test of issue 10, built
deterministically from the real-tool rulesets (tests/data/iptables/rulesets), the
corpus rules iptables accepts, and more of what those tools write on a busy host
(fail2ban bans, Docker published ports, libvirt networks), rendered both as an
``iptables-restore`` file and as one vnetd state file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.iptables_oracle import BUILTIN_CHAINS, STANDARD_TARGETS, TABLES, jump_chains, restore_split

#: Extensions whose kernel objects are shared by name across rules (a second rule with
#: the same label and other parameters is refused): the per-rule corpus covers them.
SHARED_BY_NAME = ("IDLETIMER", "RATEEST")
#: Command options iptables takes in a rule but iptables-restore refuses (-w) or that do
#: not belong to a rule in a table (-4, -c, -t): left to the per-rule corpus.
COMMAND_OPTIONS = ("-w", "--wait", "-4", "--ipv4", "-c", "--set-counters", "-t", "--table")


@dataclass
class Chain:
    policy: str | None = None
    rules: list[str] = field(default_factory=list)
    canonical: set[str] = field(default_factory=set)

    def add(self, rule: str, canonical: str) -> bool:
        """A rule, unless one with the same meaning (iptables-save line) is already there:
        iptables keeps both, vnetd refuses a rule listed twice in a chain."""
        if canonical in self.canonical:
            return False
        self.canonical.add(canonical)
        self.rules.append(rule)
        return True


@dataclass
class Ruleset:
    tables: dict[str, dict[str, Chain]] = field(default_factory=dict)

    def chain(self, table: str, name: str) -> Chain:
        chains = self.tables.setdefault(table, {c: Chain() for c in BUILTIN_CHAINS[table]})
        return chains.setdefault(name, Chain())

    def add(self, table: str, chain: str, rule: str, canonical: str | None = None) -> bool:
        for target in jump_chains(restore_split(rule)):
            self.chain(table, target)
        return self.chain(table, chain).add(rule, canonical or rule)

    @property
    def size(self) -> int:
        return sum(len(c.rules) for chains in self.tables.values() for c in chains.values())

    def restore_text(self) -> str:
        out = []
        for table in TABLES:
            if table not in self.tables:
                continue
            out.append(f"*{table}")
            for name, chain in self.tables[table].items():
                builtin = name in BUILTIN_CHAINS[table]
                out.append(f":{name} {(chain.policy or 'ACCEPT') if builtin else '-'} [0:0]")
            for name, chain in self.tables[table].items():
                out += [f"-A {name} {rule}" for rule in chain.rules]
            out.append("COMMIT")
        return "\n".join(out) + "\n"

    def state_text(self) -> str:
        """One state file: every chain exclusive (the ruleset owns the tables), policies as declared."""
        out = ["firewall:"]
        for table in TABLES:
            if table not in self.tables:
                continue
            out.append(f"  {table}:")
            for name, chain in self.tables[table].items():
                out.append(f"    {json.dumps(name)}:")
                if name in BUILTIN_CHAINS[table]:
                    out.append(f"      policy: {chain.policy or 'ACCEPT'}")
                out.append("      mode: exclusive")
                if chain.rules:
                    out.append("      rules:")
                    out += [f"      - {json.dumps(rule)}" for rule in chain.rules]
                else:
                    out.append("      rules: []")
        return "\n".join(out) + "\n"


def rules_of(text: str) -> list[tuple[str, str, str]]:
    """(table, chain, rule) of each ``-A`` line of an iptables-save text, in order."""
    table, out = "", []
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("-A "):
            _, name, rule = line.split(None, 2)
            out.append((table, name, rule))
    return out


def pair_canonical(written: str, saved: str) -> dict[tuple[str, str, str], str]:
    """Each rule of an iptables-restore input -> the line iptables-save prints for it
    (restore keeps the order of each chain, and every rule here is one kernel rule)."""
    by_chain: dict[tuple[str, str], list[str]] = {}
    for table, chain, rule in rules_of(saved):
        by_chain.setdefault((table, chain), []).append(rule)
    pairs = {}
    seen: dict[tuple[str, str], int] = {}
    for table, chain, rule in rules_of(written):
        k = seen.get((table, chain), 0)
        seen[(table, chain)] = k + 1
        pairs[(table, chain, rule)] = by_chain[(table, chain)][k]
    return pairs


def read_save(ruleset: Ruleset, text: str, canonical: dict[tuple[str, str, str], str] | None = None) -> None:
    """Add an iptables-save file's chains, policies and rules (a DROP policy wins over ACCEPT)."""
    canonical = canonical or {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            chain = ruleset.chain(table, name)
            if policy != "-" and chain.policy != "DROP":
                chain.policy = policy
        elif line.startswith("-A "):
            _, name, rule = line.split(None, 2)
            ruleset.add(table, name, rule, canonical.get((table, name, rule)))


def fail2ban_bans(count: int) -> Iterable[tuple[str, str, str]]:
    jails = ("f2b-sshd", "f2b-nginx-http-auth", "f2b-recidive")
    nets = ("203.0.113", "198.51.100", "192.0.2")
    n = 0
    for host in range(1, 255):
        for net in nets:
            if n >= count:
                return
            yield "filter", jails[n % len(jails)], f"-s {net}.{host}/32 -j REJECT --reject-with icmp-port-unreachable"
            n += 1


def docker_ports(count: int) -> Iterable[tuple[str, str, str]]:
    """What Docker writes for each published port of a container on docker0."""
    for k in range(count):
        ip, port, published = f"172.17.{1 + k // 200}.{2 + k % 200}", 8000 + k, 30000 + k
        yield "nat", "DOCKER", f"! -i docker0 -p tcp -m tcp --dport {published} -j DNAT --to-destination {ip}:{port}"
        yield "filter", "DOCKER", f"-d {ip}/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport {port} -j ACCEPT"
        yield "nat", "POSTROUTING", f"-s {ip}/32 -d {ip}/32 -p tcp -m tcp --dport {port} -j MASQUERADE"


def libvirt_networks(first: int, count: int) -> Iterable[tuple[str, str, str]]:
    """What libvirt writes for each further NAT network virbrN (192.168.N.0/24)."""
    for n in range(first, first + count):
        br, net = f"virbr{n}", f"192.168.{n}.0/24"
        for proto in ("udp", "tcp"):
            for port, chain in ((53, "LIBVIRT_INP"), (67, "LIBVIRT_INP"), (53, "LIBVIRT_OUT"), (68, "LIBVIRT_OUT")):
                flag = "-i" if chain == "LIBVIRT_INP" else "-o"
                yield "filter", chain, f"{flag} {br} -p {proto} -m {proto} --dport {port} -j ACCEPT"
        yield "filter", "LIBVIRT_FWO", f"-s {net} -i {br} -j ACCEPT"
        yield "filter", "LIBVIRT_FWO", f"-i {br} -j REJECT --reject-with icmp-port-unreachable"
        yield "filter", "LIBVIRT_FWI", f"-d {net} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        yield "filter", "LIBVIRT_FWI", f"-o {br} -j REJECT --reject-with icmp-port-unreachable"
        yield "filter", "LIBVIRT_FWX", f"-i {br} -o {br} -j ACCEPT"
        yield "nat", "LIBVIRT_PRT", f"-s {net} -d 224.0.0.0/24 -j RETURN"
        yield "nat", "LIBVIRT_PRT", f"-s {net} -d 255.255.255.255/32 -j RETURN"
        for proto in ("tcp", "udp"):
            yield "nat", "LIBVIRT_PRT", f"-s {net} ! -d {net} -p {proto} -j MASQUERADE --to-ports 1024-65535"
        yield "nat", "LIBVIRT_PRT", f"-s {net} ! -d {net} -j MASQUERADE"
        yield "mangle", "LIBVIRT_PRT", f"-o {br} -p udp -m udp --dport 68 -j CHECKSUM --checksum-fill"


def build(rulesets: Iterable[tuple[str, dict[tuple[str, str, str], str]]],
          corpus_rules: Iterable[tuple[str, str, str, str]], size: int = 2000) -> Ruleset:
    """The rulesets (each an iptables-save text and the line iptables-save prints for
    each of its rules), then the corpus rules (table, chain, rule, its line), then
    tool-written rules until ``size`` rules. Rules that mean the same are kept once."""
    ruleset = Ruleset()
    for text, canonical in rulesets:
        read_save(ruleset, text, canonical)
    for table, chain, rule, canonical in corpus_rules:
        words = restore_split(rule)
        if any(re.search(rf"-j {name}\b", rule) for name in SHARED_BY_NAME):
            continue
        if set(words) & set(COMMAND_OPTIONS):
            continue
        if any(t.upper() in STANDARD_TARGETS for t in jump_chains(words)):
            continue  # a user chain called "accept": legal, but nothing a real ruleset holds
        ruleset.add(table, chain, rule, canonical)
    fillers = [docker_ports(150), libvirt_networks(10, 20), fail2ban_bans(750)]
    for filler in fillers:
        for table, chain, rule in filler:
            if ruleset.size >= size:
                return ruleset
            ruleset.add(table, chain, rule)
    return ruleset
