# SPDX-License-Identifier: MIT
"""The iptables-nft backend against the real kernel and the tools administrators trust.

* differential: a corpus of rules written by vnetd and by ``iptables-nft -A`` in two
  namespaces prints identically in ``iptables-nft-save`` (vnetd's tag aside), and
  vnetd reads equal fingerprints from both;
* the firewall contract: converge, merge (foreign rules below, untouched),
  exclusive, prune, policies, owned chains; a second plan is empty;
* concurrency: 1,000 rules appended by ``iptables-nft`` to the chain vnetd keeps
  rewriting are all there afterwards; a native ``inet firewalld`` table is never
  touched;
* events: deleting a vnetd rule with ``iptables-nft -D`` wakes the event socket,
  and vnetd repairs it without polling;
* traffic: on a Docker-like host (``FORWARD`` policy DROP in nf_tables,
  br_netfilter on) the article's physdev rule written by vnetd lets bridged
  traffic between two guests pass.

The backend runs in a worker process inside each namespace (tests/nft_support.py).
"""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.daemon_support import DaemonProcess
from tests.nft_support import NftWorker, chain, nft_save
from tests.support import PY, ROOT, Netns, StateDir, vnetd
from tests.traffic import eventually, ping

pytestmark = pytest.mark.kernel

#: (table, chain, rule): every header option form, negations, -s a,b, the article's
#: rules and the extensions hosts use, with targets of every kind
CORPUS: list[tuple[str, str, str]] = [
    # the article
    ("filter", "FORWARD", "-m physdev --physdev-is-bridged -j ACCEPT"),
    ("filter", "INPUT", "-m state --state ESTABLISHED,RELATED -j ACCEPT"),
    ("filter", "INPUT", "-p icmp -j ACCEPT"),
    ("filter", "INPUT", "-i lo -j ACCEPT"),
    ("filter", "INPUT", "-m state --state NEW -m tcp -p tcp --dport 22 -j ACCEPT"),
    ("filter", "FORWARD", "-i eth0 -o eth1 -m state --state RELATED,ESTABLISHED -j ACCEPT"),
    ("filter", "FORWARD", "-i eth1 -o eth0 -j ACCEPT"),
    ("filter", "INPUT", "-j REJECT --reject-with icmp-host-prohibited"),
    ("nat", "POSTROUTING", "-o eth0 -j MASQUERADE"),
    # header fields and their negations
    ("filter", "INPUT", "! -i eth0 -j DROP"),
    ("filter", "INPUT", "-i vnet+ -j ACCEPT"),
    ("filter", "INPUT", "! -i vnet+ -j ACCEPT"),
    ("filter", "INPUT", "-i + -j ACCEPT"),
    ("filter", "OUTPUT", "! -o + -j DROP"),
    ("filter", "FORWARD", "-o br0 ! -i br0 -j ACCEPT"),
    ("filter", "INPUT", "-p 47 -j ACCEPT"),
    ("filter", "INPUT", "! -p udp -j ACCEPT"),
    ("filter", "INPUT", "-s 10.0.0.0/8 -j ACCEPT"),
    ("filter", "INPUT", "-s 10.0.0.0/25 -j ACCEPT"),
    ("filter", "INPUT", "! -s 192.0.2.7 -d 198.51.100.0/24 -j ACCEPT"),
    ("filter", "INPUT", "-d 10.0.0.0/255.0.255.0 -j ACCEPT"),
    ("filter", "INPUT", "! -d 203.0.113.0/31 -j ACCEPT"),
    ("filter", "INPUT", "-s 192.0.2.1,192.0.2.2 -d 198.51.100.0/24,203.0.113.0/24 -j DROP"),
    ("filter", "INPUT", "-f -j DROP"),
    ("filter", "INPUT", "! -f -s 192.0.2.0/24 -j ACCEPT"),
    ("filter", "FORWARD", "! -s 10.0.0.0/24 -d 192.0.2.7/32 -i vnet+ ! -o br0 -p udp -m udp --sport 53 -j DROP"),
    # tcp and udp, native and compat
    ("filter", "INPUT", "-p tcp --dport 80 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp ! --dport 80 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp --sport 1024:65535 --dport 443 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp --sport 5 --dport 6 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp ! --sport 5 ! --dport 6 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp --sport 5 ! --dport 6 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp --dport 0:1023 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp ! --dport 0:1023 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp --dport 1:65535 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp --syn -j ACCEPT"),
    ("filter", "INPUT", "-p tcp ! --syn -m state --state NEW -j DROP"),
    ("filter", "INPUT", "-p tcp --tcp-flags SYN,RST,ACK,FIN SYN --dport 22 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp --tcp-option 5 -j DROP"),
    ("filter", "INPUT", "-p tcp -m tcp -j ACCEPT"),
    ("filter", "INPUT", "-p udp --dport 53 -j ACCEPT"),
    ("filter", "INPUT", "-p udp ! --sport 67:68 -j ACCEPT"),
    ("filter", "INPUT", "-p udp -m udp -j ACCEPT"),
    ("filter", "INPUT", "-p icmp --icmp-type echo-request -j ACCEPT"),
    ("filter", "INPUT", "-p icmp ! --icmp-type 3/4 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp -m multiport --dports 80,443,8000:8080 -j ACCEPT"),
    ("filter", "INPUT", "-p udp -m multiport ! --sports 53,123 -j ACCEPT"),
    # matches
    ("filter", "FORWARD", "-m conntrack --ctstate INVALID -j DROP"),
    ("filter", "FORWARD", "-m conntrack --ctstate RELATED,ESTABLISHED --ctdir ORIGINAL -j ACCEPT"),
    ("filter", "FORWARD", "-m limit --limit 5/sec -j ACCEPT"),
    ("filter", "FORWARD", "-m limit --limit 3/hour --limit-burst 7 -j ACCEPT"),
    ("filter", "FORWARD", "-m limit --limit 100/min -j ACCEPT"),
    ("filter", "FORWARD", "-m limit --limit 2/day -j ACCEPT"),
    ("filter", "FORWARD", "-m mark --mark 0x1 -j ACCEPT"),
    ("filter", "FORWARD", "-m mark --mark 0x10/0xf0 -j ACCEPT"),
    ("filter", "FORWARD", "-m mark ! --mark 0x2 -j DROP"),
    ("filter", "FORWARD", "-m physdev --physdev-in vnet1 --physdev-out vnet2 -j ACCEPT"),
    ("filter", "FORWARD", "-m physdev ! --physdev-is-bridged -j ACCEPT"),
    ("filter", "FORWARD", "-p tcp -m multiport --dports 80,443 -m comment --comment \"web servers\" -j ACCEPT"),
    ("filter", "INPUT", "-p tcp --dport 22 -m hashlimit --hashlimit-upto 10/min --hashlimit-mode srcip "
                        "--hashlimit-name ssh -j ACCEPT"),
    ("filter", "INPUT", "-p tcp --dport 22 -m recent --set --name SSH --rsource"),
    ("filter", "INPUT", "-p tcp --dport 22 -m recent --update --seconds 60 --hitcount 4 --name SSH --rsource "
                        "-j DROP"),
    ("filter", "INPUT", "-m addrtype --dst-type LOCAL -j ACCEPT"),
    ("filter", "INPUT", "-m iprange --src-range 192.0.2.10-192.0.2.20 -j ACCEPT"),
    ("filter", "INPUT", "-m pkttype --pkt-type broadcast -j DROP"),
    ("filter", "INPUT", "-m length --length 1000:1500 -j DROP"),
    ("filter", "INPUT", "-m ttl --ttl-lt 5 -j DROP"),
    ("filter", "OUTPUT", "-m owner --uid-owner 0 -j ACCEPT"),
    ("filter", "INPUT", "-m comment --comment \"just counting\""),
    # targets
    ("filter", "INPUT", "-p tcp -m tcp --tcp-flags SYN,RST,ACK,FIN SYN -m limit --limit 5/sec "
                        "-j LOG --log-prefix \"syn: \""),
    ("filter", "INPUT", "-j LOG --log-level 4 --log-tcp-options"),
    ("filter", "INPUT", "-p tcp -j REJECT --reject-with tcp-reset"),
    ("filter", "INPUT", "-j NFLOG --nflog-group 3 --nflog-prefix dropped --nflog-size 128"),
    ("filter", "INPUT", "-j NFLOG"),
    ("filter", "FORWARD", "-j RETURN"),
    ("filter", "FORWARD", "-i vnet+ -j GUESTS"),
    ("filter", "FORWARD", "-o vnet+ -g GUESTS"),
    ("filter", "GUESTS", "-s 198.51.100.0/24 -j ACCEPT"),
    ("filter", "GUESTS", "-j RETURN"),
    ("nat", "POSTROUTING", "-s 10.0.0.0/24 ! -d 10.0.0.0/24 -p tcp -j MASQUERADE --to-ports 1024-65535"),
    ("nat", "PREROUTING", "-d 203.0.113.5/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 192.0.2.10:8080"),
    ("nat", "POSTROUTING", "-o eth0 -j SNAT --to-source 203.0.113.1"),
    ("raw", "PREROUTING", "-p udp --dport 53 -j NOTRACK"),
    ("raw", "PREROUTING", "-p tcp --dport 21 -j CT --helper ftp"),
    ("raw", "OUTPUT", "-j CT --zone 7"),
    ("raw", "PREROUTING", "-p tcp --dport 25 -j TRACE"),
    ("mangle", "FORWARD", "-p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu"),
    ("mangle", "PREROUTING", "-i vnet+ -j MARK --set-xmark 0x1/0xff"),
    ("mangle", "PREROUTING", "-j CONNMARK --restore-mark"),
    ("mangle", "POSTROUTING", "-p udp --dport 68 -j CHECKSUM --checksum-fill"),
]
USER_CHAINS = {("filter", "GUESTS")}
_TAG = re.compile(r' -m comment --comment "?vnetd:[0-9a-z-]+"?')


def _declared() -> list[dict[str, object]]:
    chains: dict[tuple[str, str], list[str]] = {}
    for table, name, text in CORPUS:
        chains.setdefault((table, name), []).append(text)
    return [chain(table, name, *rules) for (table, name), rules in chains.items()]


def _written_by_iptables_nft(ns: Netns) -> None:
    for table, name in sorted(USER_CHAINS):
        ns.exec("iptables-nft", "-t", table, "-N", name)
    script = "\n".join(f"iptables-nft -t {table} -A {name} {text}" for table, name, text in CORPUS)
    result = ns.exec("sh", "-ec", script, check=False)
    assert result.returncode == 0, result.stderr


def _saved(ns: Netns) -> dict[str, list[str]]:
    out = {}
    for table in ("filter", "nat", "raw", "mangle"):
        lines = [line for line in nft_save(ns, table) if "vnetd:owned-chain" not in line]
        out[table] = [_TAG.sub("", line) for line in lines]
    return out


def test_rules_print_as_iptables_nft_writes_them(make_netns: Callable[..., Netns]) -> None:
    """The differential: for every rule of the corpus, vnetd's kernel rule and
    ``iptables-nft -A`` of the same words print the same ``iptables-nft-save`` line,
    and vnetd reads the same fingerprint from both."""
    ours, theirs = make_netns("nft-vnetd"), make_netns("nft-iptables")
    _written_by_iptables_nft(theirs)
    with NftWorker(ours) as worker:
        worker.declare(*_declared())
        worker.converge()
        ours_saved = _saved(ours)
        mine = worker.call("observe")
    theirs_saved = _saved(theirs)
    for table in ours_saved:
        assert ours_saved[table] == theirs_saved[table], table
    # every vnetd rule is tagged, in the user data where iptables-nft keeps comments
    tagged = [line for line in nft_save(ours) if line.startswith("-A")]
    assert tagged and all('--comment "vnetd:' in line for line in tagged)
    with NftWorker(theirs) as worker:
        worker.declare(*_declared())
        foreign = worker.call("observe")
    for (table, name), _rules in {(t, c): None for t, c, _r in CORPUS}.items():
        vnetd_fps = [r[1] for r in mine[table][name]["rules"] if r[0] != "vnetd:owned-chain"]
        iptables_fps = [r[1] for r in foreign[table][name]["rules"]]
        assert vnetd_fps == iptables_fps, (table, name)
        assert all(r[0] is None for r in foreign[table][name]["rules"])


def test_fingerprints_of_declared_rules_match_the_kernel_copy(netns: Netns) -> None:
    """What vnetd computes from the words equals what it reads back from the kernel,
    rule by rule (so a converged state plans nothing, and any change is seen)."""
    with NftWorker(netns) as worker:
        worker.declare(*_declared())
        worker.converge()
        declared = worker.call("fingerprints")
        observed = worker.call("observe")
        assert worker.call("plan") == []
    for table, chains in observed.items():
        for name, c in chains.items():
            for tag, fp, _text in c["rules"]:
                if tag is not None:
                    assert fp in declared[tag], (table, name, tag)


def test_desired_state_caches_hold_when_the_chains_come_as_a_list(netns: Netns) -> None:
    """The same chains in another container (a list, made a tuple per call by
    ``FirewallFamilies``; or the family's own filtered tuple, which ``observe`` hands on
    to ``compile_all``) keep the compiled rules, the rule ids and the chain views the
    same objects. Before, the one-entry identity cache of ``mine`` alternated between the
    two tuples and every observe compiled and encoded all declared rules again (a drift
    in a 10,000-rule chain: ~300 ms)."""
    with NftWorker(netns) as worker:
        worker.declare(*_declared(), chain("filter", "INPUT", "-s 2001:db8::1 -j ACCEPT", family=6))
        worker.converge()
        assert worker.call("caches_hold_for_a_list") == {"ids": True, "declared": True, "observed": True}


def test_chain_views_made_from_the_last_one_equal_views_made_from_scratch(netns: Netns) -> None:
    """A chain's view after a change is made from its last view and the rules that
    changed: after foreign rules inserted, deleted and appended, vnetd's rules deleted
    and repaired, it equals the view made from every rule."""
    rules = [f"-s 192.0.2.{i}/32 -j ACCEPT" for i in range(1, 40)]
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "FORWARD", *rules), chain("filter", "GUESTS", *rules[:5], mode="exclusive"))
        worker.converge()
        for step in (["-I", "FORWARD", "3", "-j", "LOG"], ["-A", "FORWARD", "-p", "udp", "-j", "DROP"],
                     ["-D", "FORWARD", "10"], ["-I", "FORWARD", "20", "-d", "198.51.100.1", "-j", "DROP"],
                     ["-D", "FORWARD", "1"], ["-A", "GUESTS", "-j", "RETURN"], ["-D", "GUESTS", "2"]):
            netns.exec("iptables-nft", *step)
            assert all(ok for _t, _c, ok in worker.call("views_match_rebuild")), step
        worker.converge()
        assert all(ok for _t, _c, ok in worker.call("views_match_rebuild"))


def test_rule_iptables_nft_cannot_write_is_refused_with_a_reason(netns: Netns) -> None:
    """-j QUEUE has no iptables-nft spelling (iptables-nft 1.8.9 fails on it too)."""
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "INPUT", "-j QUEUE"))
        with pytest.raises(AssertionError, match=r"QUEUE.*NFQUEUE"):
            worker.call("plan")
    assert netns.exec("iptables-nft", "-A", "INPUT", "-j", "QUEUE", check=False).returncode != 0


def test_a_rule_the_kernel_refuses_fails_alone(netns: Netns) -> None:
    """The kernel refuses ``-m owner`` in INPUT (as it refuses iptables-nft's): that
    action fails with the kernel's reason; the others of the same transaction are
    committed without it."""
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "INPUT", "-m owner --uid-owner 0 -j ACCEPT"),
                       chain("filter", "FORWARD", "-j ACCEPT"), chain("nat", "POSTROUTING", "-j MASQUERADE"))
        results = dict(worker.call("apply_once"))
    errors = {action.split(":")[0]: error for action, error in results.items()}
    assert "EINVAL" in errors["firewall/filter/INPUT"] and "refused" in errors["firewall/filter/INPUT"]
    assert errors["firewall/filter/FORWARD"] is None and errors["firewall/nat/POSTROUTING"] is None
    assert _rules(netns, "FORWARD") == ["-j ACCEPT"] and _rules(netns, "POSTROUTING", "nat") == ["-j MASQUERADE"]
    assert _rules(netns, "INPUT") == []
    assert netns.exec("iptables-nft", "-A", "INPUT", "-m", "owner", "--uid-owner", "0", "-j", "ACCEPT",
                      check=False).returncode != 0


# --------------------------------------------------------------------------- the contract


def _rules(ns: Netns, name: str, table: str = "filter") -> list[str]:
    return [_TAG.sub("", line)[len(f"-A {name} "):] for line in nft_save(ns, table)
            if line.startswith(f"-A {name} ")]


def test_merge_keeps_foreign_rules_below_and_untouched(netns: Netns) -> None:
    netns.exec("iptables-nft", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "DROP")
    netns.exec("iptables-nft", "-A", "FORWARD", "-p", "udp", "--dport", "53", "-j", "ACCEPT")
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "FORWARD", "-m physdev --physdev-is-bridged -j ACCEPT", "-j LOG"))
        worker.converge()
        assert _rules(netns, "FORWARD") == ["-m physdev --physdev-is-bridged -j ACCEPT", "-j LOG",
                                            "-s 192.0.2.0/24 -j DROP", "-p udp -m udp --dport 53 -j ACCEPT"]
        assert worker.call("plan") == []
        # a changed declaration rewrites vnetd's rules only
        worker.declare(chain("filter", "FORWARD", "-j LOG", "-m physdev --physdev-is-bridged -j ACCEPT"))
        worker.converge()
        assert _rules(netns, "FORWARD") == ["-j LOG", "-m physdev --physdev-is-bridged -j ACCEPT",
                                            "-s 192.0.2.0/24 -j DROP", "-p udp -m udp --dport 53 -j ACCEPT"]
        # a vnetd rule moved below a foreign one is put back on top
        netns.exec("iptables-nft", "-D", "FORWARD", "1")
        netns.exec("sh", "-c", "iptables-nft -A FORWARD -m comment --comment moved -j LOG")
        worker.declare(chain("filter", "FORWARD", "-j LOG", "-m physdev --physdev-is-bridged -j ACCEPT"))
        assert worker.call("plan") != []
        worker.converge()
        assert _rules(netns, "FORWARD")[:4] == ["-j LOG", "-m physdev --physdev-is-bridged -j ACCEPT",
                                                "-s 192.0.2.0/24 -j DROP", "-p udp -m udp --dport 53 -j ACCEPT"]


def test_appended_rules_stay_below_foreign_rules(netns: Netns) -> None:
    """position: append (issue 14): the catch-all below libvirt's rules, moved back down when
    another tool appends below it."""
    netns.exec("iptables-nft", "-I", "INPUT", "-i", "virbr0", "-p", "udp", "--dport", "67", "-j", "ACCEPT")
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "INPUT", "-p tcp --dport 22 -j ACCEPT",
                             tail=("-j REJECT --reject-with icmp-host-prohibited",)))
        worker.converge()
        assert _rules(netns, "INPUT") == ["-p tcp -m tcp --dport 22 -j ACCEPT",
                                          "-i virbr0 -p udp -m udp --dport 67 -j ACCEPT",
                                          "-j REJECT --reject-with icmp-host-prohibited"]
        assert worker.call("plan") == []
        netns.exec("iptables-nft", "-A", "INPUT", "-i", "virbr0", "-p", "udp", "--dport", "53", "-j", "ACCEPT")
        assert worker.call("plan") != []
        worker.converge()
        assert _rules(netns, "INPUT") == ["-p tcp -m tcp --dport 22 -j ACCEPT",
                                          "-i virbr0 -p udp -m udp --dport 67 -j ACCEPT",
                                          "-i virbr0 -p udp -m udp --dport 53 -j ACCEPT",
                                          "-j REJECT --reject-with icmp-host-prohibited"]
        assert worker.call("plan") == []


def test_identical_foreign_rules_are_adopted_not_doubled(netns: Netns) -> None:
    netns.exec("iptables-nft", "-A", "FORWARD", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
    netns.exec("iptables-nft", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "DROP")
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "FORWARD", "-p tcp -m tcp --dport 22 -j ACCEPT", "-s 192.0.2.0/24 -j DROP"))
        worker.converge()
        lines = [line for line in nft_save(netns, "filter") if line.startswith("-A FORWARD ")]
        assert len(lines) == 2 and all("vnetd:" in line for line in lines), lines
        assert _rules(netns, "FORWARD") == ["-p tcp -m tcp --dport 22 -j ACCEPT", "-s 192.0.2.0/24 -j DROP"]
        assert worker.call("plan") == []


def test_exclusive_removes_foreign_rules(netns: Netns) -> None:
    netns.exec("iptables-nft", "-A", "INPUT", "-s", "192.0.2.0/24", "-j", "DROP")
    netns.exec("iptables-nft", "-A", "OUTPUT", "-j", "ACCEPT")
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "INPUT", "-i lo -j ACCEPT", mode="exclusive"))
        worker.converge()
        assert _rules(netns, "INPUT") == ["-i lo -j ACCEPT"]
        assert _rules(netns, "OUTPUT") == ["-j ACCEPT"]  # not declared: untouched
        assert worker.call("plan") == []


def test_policies_are_set_and_kept(netns: Netns) -> None:
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "FORWARD", policy="DROP"), chain("filter", "INPUT", "-j ACCEPT",
                                                                       policy="ACCEPT"))
        worker.converge()
        saved = nft_save(netns, "filter")
        assert ":FORWARD DROP" in saved and ":INPUT ACCEPT" in saved
        netns.exec("iptables-nft", "-P", "FORWARD", "ACCEPT")
        assert worker.call("plan") == ["firewall/filter/FORWARD: policy want DROP, have ACCEPT"]
        worker.converge()
        assert ":FORWARD DROP" in nft_save(netns, "filter")


def test_tables_and_chains_are_created_as_iptables_nft_creates_them(make_netns: Callable[..., Netns]) -> None:
    """Hook, priority, type and policy of the base chains vnetd creates are those of
    the chains iptables-nft creates for the same rules (``nft list`` of both)."""
    ours, theirs = make_netns("nft-hooks-v"), make_netns("nft-hooks-i")
    rules = [("nat", "PREROUTING", "-j ACCEPT"), ("nat", "POSTROUTING", "-j ACCEPT"), ("nat", "OUTPUT", "-j ACCEPT"),
             ("nat", "INPUT", "-j ACCEPT"), ("mangle", "OUTPUT", "-j ACCEPT"), ("mangle", "POSTROUTING", "-j ACCEPT"),
             ("raw", "PREROUTING", "-j ACCEPT"), ("filter", "FORWARD", "-j ACCEPT")]
    for table, name, text in rules:
        theirs.exec("iptables-nft", "-t", table, "-A", name, *shlex.split(text))
    with NftWorker(ours) as worker:
        worker.declare(*[chain(t, c, r) for t, c, r in rules])
        worker.converge()

    def chains(ns: Netns) -> list[str]:
        listing = ns.exec("nft", "list", "ruleset").stdout.splitlines()
        return sorted(line.strip() for line in listing if "hook" in line or line.startswith("table"))

    assert chains(ours) == chains(theirs)


def test_prune_removes_only_vnetds_rules_and_owned_chains(netns: Netns) -> None:
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "GUESTS", "-s 198.51.100.0/24 -j ACCEPT", "-j RETURN"),
                       chain("filter", "FORWARD", "-i vnet+ -j GUESTS"),
                       chain("filter", "INPUT", "-i lo -j ACCEPT"))
        worker.converge()
        saved = nft_save(netns, "filter")
        assert ":GUESTS -" in saved
        assert next(line for line in saved if line.startswith("-A GUESTS")).endswith('"vnetd:owned-chain"')
        netns.exec("iptables-nft", "-A", "INPUT", "-s", "192.0.2.0/24", "-j", "ACCEPT")
        netns.exec("iptables-nft", "-N", "ADMIN")
        netns.exec("iptables-nft", "-A", "ADMIN", "-j", "RETURN")
        worker.declare(chain("filter", "FORWARD", "-j ACCEPT"))
        worker.converge()
        saved = nft_save(netns, "filter")
        assert not any(line.startswith(":GUESTS") for line in saved)  # owned and undeclared: deleted
        assert _rules(netns, "INPUT") == ["-s 192.0.2.0/24 -j ACCEPT"]
        assert _rules(netns, "ADMIN") == ["-j RETURN"]
        assert _rules(netns, "FORWARD") == ["-j ACCEPT"]
        worker.declare()
        assert worker.call("has_vnetd_rules")
        worker.converge()
        assert not worker.call("has_vnetd_rules")
        assert "vnetd:" not in "\n".join(nft_save(netns))
        assert _rules(netns, "INPUT") == ["-s 192.0.2.0/24 -j ACCEPT"]


def test_owned_chain_still_jumped_to_by_a_foreign_rule_is_kept(netns: Netns) -> None:
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "GUESTS", "-j RETURN"))
        worker.converge()
        netns.exec("iptables-nft", "-A", "INPUT", "-j", "GUESTS")
        worker.declare()
        worker.call("converge")
        saved = nft_save(netns, "filter")
        assert ":GUESTS -" in saved and "-A INPUT -j GUESTS" in saved
        assert not [line for line in saved if "vnetd:" in line]


def test_show_lists_vnetds_chains(netns: Netns) -> None:
    netns.exec("iptables-nft", "-A", "FORWARD", "-j", "DROP")
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "FORWARD", "-p tcp --dport 22 -j ACCEPT", policy="ACCEPT"),
                       chain("filter", "GUESTS", "-s 192.0.2.1,192.0.2.2 -j RETURN"))
        worker.converge()
        assert worker.call("show") == {"filter": {
            "FORWARD": {"policy": "ACCEPT", "owned": False, "rules": ["-p tcp --dport 22 -j ACCEPT"],
                        "foreign": ["-j DROP"]},
            "GUESTS": {"policy": None, "owned": True, "rules": ["-s 192.0.2.1,192.0.2.2 -j RETURN"],
                       "foreign": []}}}
        worker.declare()  # undeclared: shown as the kernel has them
        assert worker.call("show") == {"filter": {
            "FORWARD": {"policy": "ACCEPT", "owned": False, "rules": ["-p tcp -m tcp --dport 22 -j ACCEPT"],
                        "foreign": ["-j DROP"]},
            "GUESTS": {"policy": None, "owned": True, "rules": ["-s 192.0.2.1/32 -j RETURN",
                                                              "-s 192.0.2.2/32 -j RETURN"], "foreign": []}}}


def test_foreign_rules_are_described_in_the_plan(netns: Netns) -> None:
    netns.exec("iptables-nft", "-A", "FORWARD", "-p", "tcp", "--dport", "80", "-j", "DROP")
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "FORWARD", "-j ACCEPT", mode="exclusive"))
        assert worker.call("plan") == [
            "firewall/filter/FORWARD: rules want [-j ACCEPT], have [(foreign) -p tcp -m tcp --dport 80 -j DROP]"]


# --------------------------------------------------------------------------- others' writes


FIREWALLD = """
table inet firewalld {
    chain filter_INPUT {
        type filter hook input priority filter + 10; policy accept;
        ct state established,related accept
        iifname "lo" accept
        tcp dport 22 accept
    }
    chain filter_FORWARD {
        type filter hook forward priority filter + 10; policy accept;
        ct state invalid drop
    }
}
"""


def test_concurrent_iptables_nft_writer_loses_nothing(netns: Netns) -> None:
    """vnetd rewrites FORWARD again and again while ``iptables-nft`` appends 1,000 rules
    to the same chain: every one of them is there afterwards, below vnetd's rules; a
    native ``inet firewalld`` table is never touched. vnetd starts reading while the
    writer commits all the time, and its mirror, kept by notifications through all of
    it, equals a fresh read at the end."""
    netns.exec("nft", "-f", "-", input=FIREWALLD)
    firewalld_before = netns.exec("nft", "list", "table", "inet", "firewalld").stdout
    script = ("for i in $(seq 1 1000); do iptables-nft -A FORWARD -s 203.0.113.$((i % 250))/32 "
              "-p tcp --dport $((i + 10000)) -j ACCEPT || exit 1; done")
    writer = netns.popen("sh", "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    declarations = [
        chain("filter", "FORWARD", "-m physdev --physdev-is-bridged -j ACCEPT", "-j LOG --log-prefix a"),
        chain("filter", "FORWARD", "-j LOG --log-prefix b", "-m physdev --physdev-is-bridged -j ACCEPT",
              "-m conntrack --ctstate INVALID -j DROP"),
    ]
    commits = 0
    with NftWorker(netns) as worker:
        while writer.poll() is None:
            worker.declare(declarations[commits % 2])
            worker.converge()
            commits += 1
        _out, err = writer.communicate()
        assert writer.returncode == 0, err
        worker.declare(declarations[0])
        worker.converge()
        mirror = worker.call("mirror_matches_kernel")
        assert mirror["equal"], mirror
    assert commits >= 3
    forward = _rules(netns, "FORWARD")
    assert forward[:2] == ["-m physdev --physdev-is-bridged -j ACCEPT", "-j LOG --log-prefix a"]
    ports = {line.split("--dport ")[1].split()[0] for line in forward[2:]}
    assert len(ports) == 1000 and len(forward) == 1002
    assert netns.exec("nft", "list", "table", "inet", "firewalld").stdout == firewalld_before


#: commits to ``table ip filter`` in a tight loop until its stdin closes: one transaction
#: creates chain CHURN with a rule, the next flushes and deletes it; says "committing"
#: once it has committed, and at the end how many transactions it made
CHURNER = r"""
import select, sys
from vnetd.backends import nfnl
from vnetd.backends.nftexpr import counter
sock = nfnl.NftSocket()
flush = nfnl.Message(nfnl.NFT_MSG_DELRULE, 0, nfnl.NFPROTO_IPV4,
                     nfnl.strz(nfnl.NFTA_RULE_TABLE, "filter") + nfnl.strz(nfnl.NFTA_RULE_CHAIN, "CHURN"))
create = [nfnl.new_user_chain("filter", "CHURN"), nfnl.new_rule("filter", "CHURN", counter(), None, None)]
delete = [flush, nfnl.del_chain("filter", "CHURN")]
commits = 0
while True:
    for batch in (create, delete):
        result = sock.batch(batch, None)
        if result.errors:
            sys.exit(f"refused: {result.errors}")
        commits += 1
    if commits == 2:
        print("committing", flush=True)
    if select.select([sys.stdin], [], [], 0)[0]:
        break
print(commits, flush=True)
"""


@contextlib.contextmanager
def _busy_filter_table(ns: Netns) -> Iterator[tuple[list[str], subprocess.Popen[str]]]:
    """A foreign chain BULK of 3,000 rules in ``table ip filter`` (its dump spans many
    netlink messages, so any commit in the namespace interrupts it), and CHURNER
    committing to the table in a tight loop from before the block starts until it ends;
    yields BULK's rules and the writer."""
    bulk = "*filter\n:BULK - [0:0]\n" + "".join(
        f"-A BULK -s 198.51.100.{i % 250}/32 -p tcp --dport {i + 1} -j ACCEPT\n" for i in range(3000)) + "COMMIT\n"
    ns.exec("iptables-nft-restore", "--noflush", input=bulk)
    bulk_rules = _rules(ns, "BULK")
    assert len(bulk_rules) == 3000
    writer = ns.popen(PY, "-c", CHURNER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      env={"PYTHONPATH": str(ROOT)})
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "committing\n", writer.stderr.read() if writer.stderr else ""
        yield bulk_rules, writer
        assert writer.poll() is None  # still committing: it stops only when told
        out, err = writer.communicate(timeout=60)  # closes its stdin: it stops
        assert writer.returncode == 0, err
        assert int(out.split()[-1]) > 2
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


def test_a_writer_committing_faster_than_a_table_dump_does_not_starve_vnetd(netns: Netns) -> None:
    """Another writer commits to ``table ip filter`` all the time (a container engine
    starting) beside a foreign chain of 3,000 rules whose dump any commit interrupts:
    vnetd still reads the tables, plans and applies its chain and FORWARD's rule while
    the writer goes on, whatever the writer's rate; nothing of the foreign chain is
    touched, and once the writer stops ``show`` lists the big chain whole and the
    mirror equals a fresh read."""
    with NftWorker(netns) as worker:
        with _busy_filter_table(netns) as (bulk_before, _writer):
            worker.declare(chain("filter", "GUESTS", "-s 192.0.2.0/24 -j ACCEPT"),
                           chain("filter", "FORWARD", "-j GUESTS"))
            worker.converge()  # read, planned and applied while the writer commits
            assert worker.call("plan") == []
        assert _rules(netns, "FORWARD") == ["-j GUESTS"]
        assert _rules(netns, "GUESTS") == ["", "-s 192.0.2.0/24 -j ACCEPT"]  # the owner mark, the rule
        assert _rules(netns, "BULK") == bulk_before
        assert worker.call("plan") == []
        shown = worker.call("show_all")
        assert len(shown["filter"]["BULK"]) == 3000
        assert worker.call("mirror_matches_kernel")["equal"]


#: what the CLI and daemon tests beside the busy writer declare
BESIDE_THE_WRITER = """\
firewall:
  filter:
    GUESTS:
      rules:
        - -s 192.0.2.0/24 -j ACCEPT
    FORWARD:
      rules:
        - -j GUESTS
"""


def test_vnetd_apply_and_plan_work_beside_a_busy_writer(netns: Netns, state_dir: StateDir) -> None:
    """The same through the CLI: ``vnetd apply`` converges and ``vnetd plan`` finds
    nothing to do while the writer goes on (before, both failed with "the ruleset kept
    changing while being read")."""
    state_dir.pin("iptables-nft")
    state_dir.write("10-fw.yaml", BESIDE_THE_WRITER)
    with _busy_filter_table(netns) as (bulk_before, _writer):
        applied = vnetd("apply", netns=netns, state_dir=state_dir)
        assert applied.returncode == 0, applied.stderr
        planned = vnetd("plan", netns=netns, state_dir=state_dir)
        assert planned.returncode == 0, planned.stdout + planned.stderr
    assert _rules(netns, "FORWARD") == ["-j GUESTS"]
    assert _rules(netns, "BULK") == bulk_before


#: deletes the first rule of ``ip filter FORWARD`` (iptables-nft and nft, which read the
#: whole cache and start again whenever the generation moved, starve beside CHURNER)
DELETE_FIRST = r"""
from vnetd.backends import nfnl
sock = nfnl.NftSocket()
while True:
    replies, interrupted = sock.dump(nfnl.dump_rules("filter", nfnl.NFPROTO_IPV4, "FORWARD"))
    if not interrupted:
        break
first = next(nfnl.decode_rule(d, o, n) for d, kind, o, n in replies if kind == nfnl.NFT_MSG_NEWRULE)
assert not sock.batch([nfnl.del_rule("filter", "FORWARD", first.handle)], None).errors
"""


def test_the_daemon_converges_and_repairs_beside_a_busy_writer(netns: Netns, state_dir: StateDir) -> None:
    """The daemon started while the writer commits converges, and repairs vnetd's rule
    deleted while the writer still goes on (before, every read failed and the daemon
    backed off for as long as the writer kept going)."""
    state_dir.pin("iptables-nft")
    state_dir.write("10-fw.yaml", BESIDE_THE_WRITER)
    with _busy_filter_table(netns) as (bulk_before, _writer):
        daemon = DaemonProcess(netns, state_dir, check_interval=3600)
        try:
            daemon.wait_ready()
            daemon.wait_for("action.applied", resource="firewall/filter/FORWARD", timeout=60)
            mark = daemon.mark()
            deleter = netns.popen(PY, "-c", DELETE_FIRST, env={"PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE)
            assert deleter.wait(timeout=60) == 0, deleter.communicate()[1]
            detected = daemon.wait_for("drift.detected", since=mark, resource="firewall/filter/FORWARD", timeout=60)
            assert detected["source"] == "nftables"
            daemon.wait_for("action.applied", since=mark, resource="firewall/filter/FORWARD", timeout=60)
        finally:
            code = daemon.stop()
            assert code == 0, "\n".join(daemon.lines[-30:])
    assert _rules(netns, "FORWARD") == ["-j GUESTS"]
    assert _rules(netns, "BULK") == bulk_before


def test_foreign_tables_are_never_touched(netns: Netns) -> None:
    netns.exec("nft", "-f", "-", input=FIREWALLD)
    netns.exec("nft", "add", "table", "ip", "docker_like")
    netns.exec("nft", "add", "chain", "ip", "docker_like", "FORWARD", "{ type filter hook forward priority 5; }")
    netns.exec("nft", "add", "rule", "ip", "docker_like", "FORWARD", "counter", "drop")
    netns.exec("iptables-nft", "-t", "security", "-A", "INPUT", "-j", "ACCEPT")
    before = netns.exec("nft", "list", "ruleset").stdout
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "FORWARD", "-j ACCEPT", mode="exclusive"), chain("filter", "GUESTS", "-j RETURN"))
        worker.converge()
        worker.declare()
        worker.converge()
    after = netns.exec("nft", "list", "ruleset").stdout
    for table in ("table inet firewalld", "table ip docker_like", "table ip security"):
        block_before = before[before.index(table):].split("\n}\n", 1)[0]
        block_after = after[after.index(table):].split("\n}\n", 1)[0]
        assert block_after == block_before


# --------------------------------------------------------------------------- events


def test_deleted_rule_wakes_the_event_socket_and_is_repaired(netns: Netns) -> None:
    netns.exec("iptables-nft", "-A", "FORWARD", "-j", "DROP")
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "FORWARD", "-m physdev --physdev-is-bridged -j ACCEPT", "-j LOG"))
        worker.converge()
        worker.call("drain")
        assert worker.call("changed", ["filter", "nat"]) == []
        assert worker.call("wait_event", 0.0)["readable"] is False
        reloads = worker.call("reloads")
        netns.exec("sh", "-c", "iptables-nft -D FORWARD -m physdev --physdev-is-bridged "
                               "-m comment --comment $(iptables-nft-save | grep -o 'vnetd:[0-9a-f]*' | head -1) "
                               "-j ACCEPT")
        assert worker.call("wait_event", 10.0)["readable"] is True  # notified, not polled
        assert worker.call("drain") is True
        assert worker.call("changed", ["filter", "nat"]) == ["filter"]
        assert worker.call("plan") != []
        worker.converge()
        assert _rules(netns, "FORWARD") == ["-m physdev --physdev-is-bridged -j ACCEPT", "-j LOG", "-j DROP"]
        assert worker.call("reloads") == reloads  # followed from notifications, no re-read
        assert worker.call("mirror_matches_kernel")["equal"]
        # vnetd's own commit is not someone else's change
        worker.call("wait_event", 0.2)
        assert worker.call("drain") is False


def test_lost_notifications_are_a_change_and_the_mirror_reads_again(netns: Netns) -> None:
    """ENOBUFS (the event queue overflowed): drain_events says "changed", and the next
    read is a full one, equal to the kernel's tables."""
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "FORWARD", "-j ACCEPT"))
        worker.converge()
        worker.call("shrink_event_buffer")
        reloads = worker.call("reloads")
        restore = "*filter\n" + "".join(f"-A INPUT -s 192.0.2.{i % 250} -p tcp --dport {i + 1} -j ACCEPT\n"
                                        for i in range(2000)) + "COMMIT\n"
        netns.exec("iptables-nft-restore", "--noflush", input=restore)
        assert worker.call("wait_event", 10.0)["readable"] is True
        assert worker.call("drain") is True
        assert worker.call("changed", ["filter"]) == ["filter"]
        assert worker.call("plan") == []
        assert worker.call("reloads") == reloads + 1
        assert worker.call("mirror_matches_kernel")["equal"]


def test_events_of_other_tables_and_counters_are_not_changes(netns: Netns) -> None:
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "INPUT", "-j ACCEPT"))
        worker.converge()
        worker.call("drain")
        netns.exec("nft", "add", "table", "inet", "other")
        assert worker.call("wait_event", 10.0)["readable"] is True
        assert worker.call("drain") is False  # not an iptables table
        assert ping(netns, "127.0.0.1")  # moves INPUT's counters
        assert worker.call("changed", ["filter"]) == []


# --------------------------------------------------------------------------- traffic


@pytest.fixture
def docker_like_host(make_netns: Callable[..., Netns]) -> tuple[Netns, Netns, Netns]:
    """Two guests on brdmz, br_netfilter on, and Docker's ``iptables-nft -P FORWARD DROP``."""
    host, a, b = make_netns("nft-host"), make_netns("nft-guest-a"), make_netns("nft-guest-b")
    host.veth("vnet1", "eth0", a)
    host.veth("vnet2", "eth0", b)
    for ns, addr in ((a, "198.51.100.11"), (b, "198.51.100.12")):
        ns.ip("addr", "add", f"{addr}/24", "dev", "eth0")
        ns.ip("link", "set", "eth0", "up")
    host.ip("link", "add", "brdmz", "type", "bridge", "forward_delay", "0")
    for port in ("vnet1", "vnet2"):
        host.ip("link", "set", port, "master", "brdmz")
    for port in ("vnet1", "vnet2", "brdmz"):
        host.ip("link", "set", port, "up")
    host.exec("sysctl", "-w", "net.bridge.bridge-nf-call-iptables=1")
    host.exec("iptables-nft", "-P", "FORWARD", "DROP")
    return host, a, b


def test_physdev_rule_lets_bridged_traffic_pass_a_docker_like_drop(
        docker_like_host: tuple[Netns, Netns, Netns]) -> None:
    host, a, _b = docker_like_host
    assert eventually(lambda: not ping(a, "198.51.100.12"))  # dropped by the nf_tables FORWARD policy
    with NftWorker(host) as worker:
        worker.declare(chain("filter", "FORWARD", "-m physdev --physdev-is-bridged -j ACCEPT"))
        worker.converge()
    assert eventually(lambda: ping(a, "198.51.100.12"))
    assert ":FORWARD DROP" in nft_save(host, "filter")  # Docker's policy is not vnetd's to change
