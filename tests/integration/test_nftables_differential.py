# SPDX-License-Identifier: MIT
"""The iptables-nft backend against the oracle, both ways, for both families (issue 13,
issue 14 item 2).

For a corpus of rules per family (``firewall:`` chains: IPv4, ``table ip ...``;
``firewall6:`` chains: IPv6, ``table ip6 ...``), in two namespaces:

* written by vnetd's backend in one, by ``iptables-nft-restore`` /
  ``ip6tables-nft-restore`` of the same words in the other: ``iptables-nft-save``
  (``ip6tables-nft-save``) prints the same lines, and ``nft -j list ruleset`` the same
  tables, chains and expressions (vnetd's tag, its owned-chain mark, handles and
  counters aside);
* read back: vnetd reads from the restored rules the fingerprints it declares for
  those words (so it sees them as its own rules, untagged), and renders each foreign
  rule as the save tool prints it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.test_nftables import CORPUS as CORPUS4
from tests.integration.test_nftables import USER_CHAINS as USER_CHAINS4
from tests.nft_support import NftWorker, chain, nft_save
from tests.support import Netns

pytestmark = pytest.mark.kernel

#: (table, chain, rule) for firewall6: header options of ip6tables (no -f), negations,
#: the extensions IPv6 hosts use (libvirt, Docker, ufw, fail2ban, RHEL's default rules)
CORPUS6: list[tuple[str, str, str]] = [
    ("filter", "INPUT", "-m state --state RELATED,ESTABLISHED -j ACCEPT"),
    ("filter", "INPUT", "-p ipv6-icmp -j ACCEPT"),
    ("filter", "INPUT", "-i lo -j ACCEPT"),
    ("filter", "INPUT", "-p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT"),
    ("filter", "INPUT", "-d fe80::/64 -p udp -m udp --dport 546 -m state --state NEW -j ACCEPT"),
    ("filter", "INPUT", "-j REJECT --reject-with icmp6-adm-prohibited"),
    ("filter", "FORWARD", "-m physdev --physdev-is-bridged -j ACCEPT"),
    ("filter", "FORWARD", "-i eth1 -o eth0 -j ACCEPT"),
    ("filter", "FORWARD", "-j REJECT --reject-with icmp6-port-unreachable"),
    # header fields and their negations
    ("filter", "INPUT", "! -i eth0 -j DROP"),
    ("filter", "INPUT", "-i vnet+ -j ACCEPT"),
    ("filter", "INPUT", "! -i vnet+ -j ACCEPT"),
    ("filter", "OUTPUT", "! -o + -j DROP"),
    ("filter", "FORWARD", "-o br0 ! -i br0 -j ACCEPT"),
    ("filter", "INPUT", "-p 47 -j ACCEPT"),
    ("filter", "INPUT", "! -p udp -j ACCEPT"),
    ("filter", "INPUT", "-s 2001:db8::/32 -j ACCEPT"),
    ("filter", "INPUT", "-s 2001:db8::1 -j ACCEPT"),
    ("filter", "INPUT", "-s 2001:db8:1::/48 -d 2001:db8:2::/64 -j ACCEPT"),
    ("filter", "INPUT", "! -s 2001:db8::7 -d 2001:db8:2::/64 -j ACCEPT"),
    ("filter", "INPUT", "! -d 2001:db8:3::/127 -j ACCEPT"),
    ("filter", "INPUT", "-s 2001:db8::/ffff:ffff:0:ffff:: -j ACCEPT"),
    ("filter", "INPUT", "-s 2001:db8::1,2001:db8::2 -d 2001:db8:2::/64,2001:db8:3::/64 -j DROP"),
    ("filter", "FORWARD", "! -s 2001:db8:1::/64 -d 2001:db8:2::7/128 -i vnet+ ! -o br0 -p udp -m udp --sport 53 "
                          "-j DROP"),
    # tcp, udp, icmpv6
    ("filter", "INPUT", "-p tcp --dport 80 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp ! --dport 80 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp --sport 1024:65535 --dport 443 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp ! --sport 5 ! --dport 6 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp --syn -j ACCEPT"),
    ("filter", "INPUT", "-p tcp --tcp-flags SYN,RST,ACK,FIN SYN --dport 22 -j ACCEPT"),
    ("filter", "INPUT", "-p udp --dport 53 -j ACCEPT"),
    ("filter", "INPUT", "-p udp ! --sport 67:68 -j ACCEPT"),
    ("filter", "INPUT", "-p ipv6-icmp --icmpv6-type echo-request -j ACCEPT"),
    ("filter", "INPUT", "-p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT"),
    ("filter", "INPUT", "-p ipv6-icmp ! --icmpv6-type 1/3 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp -m multiport --dports 80,443,8000:8080 -j ACCEPT"),
    ("filter", "INPUT", "-p udp -m multiport ! --sports 53,123 -j ACCEPT"),
    # matches
    ("filter", "FORWARD", "-m conntrack --ctstate INVALID -j DROP"),
    ("filter", "FORWARD", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
    ("filter", "FORWARD", "-m limit --limit 5/sec -j ACCEPT"),
    ("filter", "FORWARD", "-m limit --limit 3/hour --limit-burst 7 -j ACCEPT"),
    ("filter", "FORWARD", "-m mark --mark 0x10/0xf0 -j ACCEPT"),
    ("filter", "FORWARD", "-m physdev --physdev-in vnet1 --physdev-out vnet2 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp --dport 22 -m hashlimit --hashlimit-upto 10/min --hashlimit-mode srcip "
                        "--hashlimit-name ssh6 -j ACCEPT"),
    ("filter", "INPUT", "-p tcp --dport 22 -m recent --set --name SSH6 --rsource"),
    ("filter", "INPUT", "-m addrtype --dst-type LOCAL -j ACCEPT"),
    ("filter", "INPUT", "-m iprange --src-range 2001:db8::10-2001:db8::20 -j ACCEPT"),
    ("filter", "INPUT", "-m pkttype --pkt-type multicast -j ACCEPT"),
    ("filter", "INPUT", "-m length --length 1000:1500 -j DROP"),
    ("filter", "INPUT", "-m hl --hl-eq 255 -j ACCEPT"),
    ("filter", "INPUT", "-m ipv6header --header frag --soft -j DROP"),
    ("filter", "INPUT", "-m frag --fragid 100:200 --fraglast -j DROP"),
    ("filter", "INPUT", "-m rt --rt-type 0 -j DROP"),
    ("filter", "OUTPUT", "-m owner --uid-owner 0 -j ACCEPT"),
    ("filter", "INPUT", "-m comment --comment \"just counting\""),
    # targets, user chains, goto
    ("filter", "INPUT", "-p tcp -m limit --limit 5/sec -j LOG --log-prefix \"in6: \""),
    ("filter", "INPUT", "-p tcp -j REJECT --reject-with tcp-reset"),
    ("filter", "INPUT", "-j NFLOG --nflog-group 3 --nflog-prefix dropped6"),
    ("filter", "FORWARD", "-i vnet+ -j GUESTS"),
    ("filter", "FORWARD", "-o vnet+ -g GUESTS"),
    ("filter", "GUESTS", "-s 2001:db8:5::/64 -j ACCEPT"),
    ("filter", "GUESTS", "-j RETURN"),
    ("nat", "POSTROUTING", "-o eth0 -j MASQUERADE"),
    ("nat", "POSTROUTING", "-s 2001:db8:1::/64 ! -d 2001:db8:1::/64 -p tcp -j MASQUERADE --to-ports 1024-65535"),
    ("nat", "PREROUTING", "-d 2001:db8::5/128 -p tcp -m tcp --dport 80 -j DNAT --to-destination [2001:db8::10]:8080"),
    ("nat", "POSTROUTING", "-o eth0 -j SNAT --to-source 2001:db8::1"),
    ("raw", "PREROUTING", "-p udp --dport 53 -j NOTRACK"),
    ("raw", "PREROUTING", "-p tcp --dport 21 -j CT --helper ftp"),
    ("mangle", "FORWARD", "-p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu"),
    ("mangle", "PREROUTING", "-i vnet+ -j MARK --set-xmark 0x1/0xff"),
    ("mangle", "PREROUTING", "-j CONNMARK --restore-mark"),
    ("mangle", "POSTROUTING", "-p udp --dport 546 -j CHECKSUM --checksum-fill"),
    ("mangle", "PREROUTING", "-j HL --hl-set 64"),
]
USER_CHAINS6 = {("filter", "GUESTS")}
TABLES = ("filter", "nat", "raw", "mangle")
_TAG = re.compile(r' -m comment --comment "?vnetd:[0-9a-z-]+"?')
TOOLS = {4: "iptables-nft", 6: "ip6tables-nft"}


def _corpus(family: int) -> tuple[list[tuple[str, str, str]], set[tuple[str, str]]]:
    return (CORPUS6, USER_CHAINS6) if family == 6 else (CORPUS4, USER_CHAINS4)


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def family(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def _declared(family: int) -> list[dict[str, object]]:
    corpus, _user = _corpus(family)
    chains: dict[tuple[str, str], list[str]] = {}
    for table, name, text in corpus:
        chains.setdefault((table, name), []).append(text)
    return [chain(table, name, *rules, family=family) for (table, name), rules in chains.items()]


def _restore(ns: Netns, family: int) -> None:
    """The corpus as ``iptables-nft-restore --noflush`` takes it: one COMMIT per table."""
    corpus, user = _corpus(family)
    script = []
    for table in TABLES:
        lines = [f"-A {name} {text}" for t, name, text in corpus if t == table]
        if not lines:
            continue
        script += [f"*{table}"] + [f":{name} - [0:0]" for t, name in sorted(user) if t == table] + lines + ["COMMIT"]
    result = ns.exec(f"{TOOLS[family]}-restore", "--noflush", input="\n".join(script) + "\n", check=False)
    assert result.returncode == 0, result.stderr


def _saved(ns: Netns, family: int) -> dict[str, list[str]]:
    return {table: [_TAG.sub("", line) for line in nft_save(ns, table, family) if "vnetd:owned-chain" not in line]
            for table in TABLES}


def _nft_json(ns: Netns, family: int) -> list[Any]:
    """``nft -j list ruleset`` of the family's tables: handles, counters, vnetd's tag
    and vnetd's owned-chain mark left out."""
    family_name = "ip6" if family == 6 else "ip"
    out = []
    for item in json.loads(ns.exec("nft", "-j", "list", "ruleset").stdout)["nftables"]:
        (kind, body), = item.items()
        if kind == "metainfo" or body.get("family") != family_name:
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        if kind == "rule":
            comment = body.pop("comment", None)
            if comment == "vnetd:owned-chain":
                continue
            if comment is not None and not comment.startswith("vnetd:"):
                body["comment"] = comment
            body["expr"] = [{"counter": None} if "counter" in e else e for e in body["expr"]]
        out.append({kind: body})
    return out


def _vnetd_and_restore(make_netns: Callable[..., Netns], family: int) -> tuple[Netns, Netns, NftWorker]:
    ours, theirs = make_netns(f"nftd{family}-vnetd"), make_netns(f"nftd{family}-restore")
    _restore(theirs, family)
    worker = NftWorker(ours)
    worker.declare(*_declared(family))
    worker.converge()
    return ours, theirs, worker


def test_save_prints_vnetds_rules_as_restore_writes_them(make_netns: Callable[..., Netns], family: int) -> None:
    """The save tool of the family prints vnetd's rules, chain by chain, exactly as it
    prints what the restore tool made of the same words (vnetd's tag aside)."""
    ours, theirs, worker = _vnetd_and_restore(make_netns, family)
    with worker:
        assert worker.call("plan") == []
    ours_saved, theirs_saved = _saved(ours, family), _saved(theirs, family)
    corpus, _user = _corpus(family)
    assert sum(len([x for x in v if x.startswith("-A ")]) for v in theirs_saved.values()) >= len(corpus)
    for table in TABLES:
        assert ours_saved[table] == theirs_saved[table], table
    # every vnetd rule carries its tag where the save tool prints comments
    tagged = [line for line in nft_save(ours, None, family) if line.startswith("-A")]
    assert tagged and all('--comment "vnetd:' in line for line in tagged)


def test_nft_lists_vnetds_rules_as_restore_writes_them(make_netns: Callable[..., Netns], family: int) -> None:
    """``nft -j list ruleset`` shows the same tables, chains (hook, priority, type,
    policy) and rule expressions (payload, meta, cmp, the xt match and target
    expressions) for vnetd's rules as for the restore tool's."""
    ours, theirs, worker = _vnetd_and_restore(make_netns, family)
    worker.close()
    ours_json, theirs_json = _nft_json(ours, family), _nft_json(theirs, family)
    assert len(theirs_json) > len(_corpus(family)[0])
    assert ours_json == theirs_json


def test_vnetd_reads_restored_rules_as_its_own_words(make_netns: Callable[..., Netns], family: int) -> None:
    """Read back: the rules the restore tool wrote carry, in vnetd's eyes, the
    fingerprints vnetd declares for the same words, untagged, and each is rendered
    as the save tool prints it."""
    ours, theirs, worker = _vnetd_and_restore(make_netns, family)
    with worker:
        mine = worker.call("observe")
        declared = worker.call("fingerprints")
    saved = {table: [line for line in lines if line.startswith("-A ")] for table, lines in _saved(theirs, family).items()}
    key = (lambda t: f"ip6 {t}") if family == 6 else (lambda t: t)
    with NftWorker(theirs) as reader:
        reader.declare(*_declared(family))
        theirs_view = reader.call("observe")
        assert reader.call("fingerprints") == declared
    corpus, _user = _corpus(family)
    differ: list[tuple[str, str]] = []  # vnetd's rendering, the save tool's line
    for table, name in {(t, c): None for t, c, _r in corpus}:
        ours_rules = [r for r in mine[key(table)][name]["rules"] if r[0] != "vnetd:owned-chain"]
        theirs_rules = theirs_view[key(table)][name]["rules"]
        assert [r[1] for r in ours_rules] == [r[1] for r in theirs_rules], (table, name)
        assert all(r[0] is None for r in theirs_rules), (table, name)
        assert all(r[1] in declared[tag] for (tag, _f, _t), r in zip(ours_rules, theirs_rules, strict=True))
        rendered = [f"-A {name} {r[2]}" for r in theirs_rules]
        expected = [line for line in saved[table] if line.startswith(f"-A {name} ")]
        assert len(rendered) == len(expected), (table, name)
        differ += [(a, b) for a, b in zip(rendered, expected, strict=True) if a != b]
    assert differ == []
