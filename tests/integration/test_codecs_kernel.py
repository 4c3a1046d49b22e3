# SPDX-License-Identifier: MIT
"""vnetd's lean readers and writers against the libraries' full ones, on real data.

* netlink: a namespace with bridges, ports, veths and addresses is dumped once;
  vnetd's decoders and pyroute2's must agree on every field vnetd uses.
* iptables: the parts vnetd encodes itself (the ipt_entry header, the comment tag,
  standard targets) are byte-identical to what python-iptables builds; and a table
  written by iptables-legacy-restore, read by vnetd's blob walker, gives the chains,
  policies and tags iptables-legacy-save shows.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from tests.support import PY, ROOT, Netns

pytestmark = pytest.mark.kernel

NETLINK_CHECK = r"""
import json, sys
from vnetd import netns
netns.enter(sys.argv[1])
from pyroute2 import IPRoute
from vnetd.backends.netlink import NetlinkBackend
ours = NetlinkBackend()
links = {l.index: l for l in ours.dump_links()}
addrs = {(a.index, str(a.ip)) for a in ours.dump_addresses()}
routes = {(str(r.destination), r.table, r.oif, str(r.gateway) if r.gateway else None, r.priority)
          for r in ours.dump_routes()}
theirs_links, theirs_addrs, theirs_routes = {}, set(), set()
with IPRoute() as ipr:
    for m in ipr.get_links():
        info = m.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info else None
        br = None
        if kind == "bridge":
            d = info.get_attr("IFLA_INFO_DATA")
            br = [d.get_attr(k) for k in ("IFLA_BR_STP_STATE", "IFLA_BR_FORWARD_DELAY", "IFLA_BR_HELLO_TIME",
                                          "IFLA_BR_MAX_AGE", "IFLA_BR_PRIORITY")]
        theirs_links[m["index"]] = [m.get_attr("IFLA_IFNAME"), kind, bool(m["flags"] & 1), m.get_attr("IFLA_MTU"),
                                    m.get_attr("IFLA_ADDRESS"), m.get_attr("IFLA_MASTER") or None, br]
    for a in ipr.get_addr():
        ip = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
        theirs_addrs.add((a["index"], f"{ip}/{a['prefixlen']}"))
    for r in ipr.route("dump"):
        if r["type"] != 1 or (r.get_attr("RTA_TABLE") or r["table"]) == 255:
            continue
        dst = r.get_attr("RTA_DST") or ("0.0.0.0" if r["family"] == 2 else "::")
        theirs_routes.add((f"{dst}/{r['dst_len']}", r.get_attr("RTA_TABLE") or r["table"], r.get_attr("RTA_OIF"),
                           r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_PRIORITY") or 0))
mine = {i: [l.name, l.kind, l.up, l.mtu, l.mac, l.master,
            [l.bridge.stp_state, l.bridge.forward_delay, l.bridge.hello_time, l.bridge.max_age, l.bridge.priority]
            if l.bridge else None] for i, l in links.items()}
print(json.dumps({"links_equal": mine == {int(k): v for k, v in theirs_links.items()},
                  "mine": mine, "theirs": theirs_links,
                  "addrs_equal": addrs == theirs_addrs, "routes_equal": routes == theirs_routes,
                  "counts": [len(mine), len(addrs), len(routes)],
                  "routes_mine": sorted(map(str, routes)), "routes_theirs": sorted(map(str, theirs_routes))}))
"""


def test_netlink_decoders_agree_with_pyroute2(make_netns) -> None:  # type: ignore[no-untyped-def]
    ns, peer = make_netns("codec"), make_netns("peer")
    ns.ip("link", "add", "br0", "type", "bridge", "stp_state", "1", "forward_delay", "1000", "priority", "4096")
    ns.ip("link", "add", "br1", "type", "bridge")
    for i in range(4):
        ns.veth(f"p{i}", f"q{i}", peer)
        ns.ip("link", "set", f"p{i}", "master", "br0" if i < 2 else "br1", "mtu", str(1500 + i * 1000), "up")
    ns.veth("local0", "local1")  # both ends here
    ns.ip("link", "set", "br0", "up", "mtu", "1400")
    ns.ip("addr", "add", "192.0.2.1/24", "dev", "br0")
    ns.ip("addr", "add", "2001:db8::1/64", "dev", "br0")
    ns.ip("route", "add", "198.51.100.0/24", "via", "192.0.2.254", "metric", "7")
    ns.ip("route", "add", "203.0.113.0/24", "dev", "br0", "table", "1000")
    out = subprocess.run([PY, "-c", NETLINK_CHECK, ns.name], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    import json

    result = json.loads(out.stdout)
    assert result["links_equal"], (result["mine"], result["theirs"])
    assert result["addrs_equal"]
    assert result["routes_equal"], (result["routes_mine"], result["routes_theirs"])
    assert result["counts"][0] >= 9


SAME_AS_IPTABLES = r"""
import json, sys
from vnetd import netns
netns.enter(sys.argv[1])
from vnetd.backends.iptables import RawTables, parse_table
from vnetd.backends.xtables import RuleCompiler
from vnetd.desired.rules import parse_rule
from vnetd.model.firewall import ChainMode, ChainSpec
compiler = RuleCompiler()
result = {}
for table, chain_name, text in json.loads(sys.argv[2]):
    rule = parse_rule(text)
    chain = ChainSpec(table, chain_name, None, ChainMode.MERGE, (rule,))
    ours = compiler.compile(chain, rule)
    info, blob = RawTables().read(table)
    kernel = {r.tag: r.fingerprint for r in parse_table(table, info, blob).chains[chain_name].rules}
    result[text] = ours.fingerprints == (kernel.get(ours.tag),)
print(json.dumps(result))
"""


RULES = [
    ("filter", "FORWARD", "-m physdev --physdev-is-bridged -j ACCEPT"),
    ("nat", "POSTROUTING", "-o eth0 -j MASQUERADE"),
    ("filter", "FORWARD", "-m state --state ESTABLISHED,RELATED -j ACCEPT"),
    ("filter", "INPUT", "-p icmp -j ACCEPT"),
    ("filter", "INPUT", "-i lo -j ACCEPT"),
    ("filter", "FORWARD", "-i eth0 -o eth1 -m state --state RELATED,ESTABLISHED -j ACCEPT"),
    ("filter", "INPUT", "-m state --state NEW -m tcp -p tcp --dport 22 -j ACCEPT"),
    ("filter", "FORWARD", "-j REJECT --reject-with icmp-host-prohibited"),
    ("filter", "FORWARD", "! -s 10.0.0.0/24 -d 192.0.2.7/32 -i vnet+ ! -o br0 -p udp -m udp --sport 53 -j DROP"),
    ("filter", "OUTPUT", "-s 198.51.100.0/24 ! -p tcp -j RETURN"),
    ("filter", "FORWARD", "-f -j DROP"),
    ("filter", "FORWARD", "-p tcp -m multiport --dports 80,443 -m comment --comment \"web servers\" -j ACCEPT"),
    ("nat", "PREROUTING", "-d 203.0.113.5/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 192.0.2.10:8080"),
    ("filter", "INPUT", "-p tcp -m tcp --tcp-flags SYN,RST,ACK,FIN SYN -m limit --limit 5/sec -j LOG --log-prefix \"syn: \""),
    ("filter", "FORWARD", "-m conntrack --ctstate INVALID -j DROP"),
]


def test_vnetd_compiles_rules_exactly_as_iptables_writes_them(netns: Netns) -> None:
    """Each rule written by iptables-legacy itself (with vnetd's tag added the way vnetd
    adds it: a comment match right before the target) has the fingerprint vnetd computes
    from its own compilation: the header, the tag and standard targets that vnetd
    encodes natively, and every extension python-iptables compiles."""
    import json

    from vnetd.backends.xtables import shared_compiler
    from vnetd.desired.rules import parse_rule
    from vnetd.model.firewall import ChainMode, ChainSpec

    for table, chain, text in RULES:
        rule = parse_rule(text)
        canonical = rule.text
        cut = canonical.rfind(" -j ") if " -j " in canonical else canonical.rfind(" -g ")
        head, tail = (canonical[:cut], canonical[cut:]) if cut >= 0 else (canonical, "")
        tag = shared_compiler().compile(ChainSpec(table, chain, None, ChainMode.MERGE, (rule,)), rule).tag
        netns.exec("sh", "-c", f"iptables-legacy -t {table} -A {chain} {head} -m comment --comment {tag}{tail}")
    out = subprocess.run([PY, "-c", SAME_AS_IPTABLES, netns.name, json.dumps(RULES)], capture_output=True,
                         text=True, env={"PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    same = json.loads(out.stdout)
    assert len(same) == len(RULES) and all(same.values()), same


def test_table_walk_matches_iptables_legacy_save(netns: Netns) -> None:
    restore = """*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:GUESTS - [0:0]
:EMPTY - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -j GUESTS
-A FORWARD -m comment --comment "vnetd:0123456789abcdef" -j ACCEPT
-A FORWARD -g GUESTS
-A FORWARD -m comment --comment "just counting"
-A GUESTS -s 192.0.2.0/24 -j RETURN
-A GUESTS -m comment --comment "vnetd:owned-chain"
COMMIT
"""
    netns.exec("iptables-legacy-restore", input=restore)
    script = r"""
import json, sys
from vnetd import netns
netns.enter(sys.argv[1])
from vnetd.backends.iptables import RawTables, parse_table
info, blob = RawTables().read("filter")
table = parse_table("filter", info, blob)
print(json.dumps({name: {"policy": c.policy, "builtin": c.builtin, "tags": [r.tag for r in c.rules],
                         "owned": c.owned} for name, c in table.chains.items()}))
"""
    out = subprocess.run([PY, "-c", script, netns.name], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    import json

    chains = json.loads(out.stdout)
    assert set(chains) == {"INPUT", "FORWARD", "OUTPUT", "GUESTS", "EMPTY"}
    assert chains["INPUT"] == {"policy": "DROP", "builtin": True, "tags": [None, None], "owned": False}
    assert chains["FORWARD"]["tags"] == ["vnetd:0123456789abcdef", None, None]
    assert chains["GUESTS"] == {"policy": None, "builtin": False, "tags": [None, "vnetd:owned-chain"], "owned": False}
    assert chains["EMPTY"]["tags"] == []


def test_jump_and_goto_targets_are_read_as_chain_names(netns: Netns) -> None:
    """A jump is an offset in the kernel's table; the walk turns it back into a name."""
    netns.exec("iptables-legacy", "-N", "TARGETCHAIN")
    netns.exec("iptables-legacy", "-A", "FORWARD", "-j", "TARGETCHAIN")
    netns.exec("iptables-legacy", "-A", "FORWARD", "-g", "TARGETCHAIN")
    script = r"""
import sys
from vnetd import netns
netns.enter(sys.argv[1])
from vnetd.backends.iptables import RawTables, walk_table
info, blob = RawTables().read("filter")
print([(e.chain, e.meaning) for e in walk_table(info, blob) if e.chain == "FORWARD" and not e.policy])
"""
    out = subprocess.run([PY, "-c", script, netns.name], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[('FORWARD', 'TARGETCHAIN'), ('FORWARD', 'TARGETCHAIN')]", out.stderr
    assert ctypes and sys


RULES_CHECK = r"""
import json, sys
from vnetd import netns
netns.enter(sys.argv[1])
from pyroute2 import IPRoute
from vnetd.backends.netlink import NetlinkBackend
ours = sorted([r.family, r.priority, r.table, r.action, str(r.source) if r.source else None,
               str(r.destination) if r.destination else None, r.iif, r.fwmark, r.fwmask, r.protocol, list(r.other)]
              for r in NetlinkBackend().dump_rules())
theirs = []
with IPRoute() as ipr:
    for family in (2, 10):
        for m in ipr.get_rules(family=family):
            src, dst = m.get_attr("FRA_SRC"), m.get_attr("FRA_DST")
            other = []
            if m["flags"] & 2:
                other.append("not")
            if m.get_attr("FRA_OIFNAME"):
                other.append("oif " + m.get_attr("FRA_OIFNAME"))
            theirs.append([4 if family == 2 else 6, m.get_attr("FRA_PRIORITY") or 0, m.get_attr("FRA_TABLE"),
                           m["action"], f"{src}/{m['src_len']}" if src else None,
                           f"{dst}/{m['dst_len']}" if dst else None, m.get_attr("FRA_IIFNAME"),
                           m.get_attr("FRA_FWMARK") or 0, m.get_attr("FRA_FWMASK") or 0,
                           m.get_attr("FRA_PROTOCOL"), other])
print(json.dumps({"ours": ours, "theirs": sorted(theirs)}))
"""


def test_rule_decoder_agrees_with_pyroute2_and_ip_rule(netns: Netns) -> None:
    """Rules made by `ip rule` (the oracle) read by vnetd's decoder and by pyroute2's."""
    for args in (("from", "192.0.2.0/24", "lookup", "100", "pref", "1000"),
                 ("to", "198.51.100.0/24", "iif", "lo", "fwmark", "0x10/0xff", "blackhole", "pref", "1001"),
                 ("not", "from", "203.0.113.0/24", "lookup", "200", "pref", "1002"),
                 ("oif", "lo", "lookup", "300", "pref", "1003", "proto", "static"),
                 ("fwmark", "7", "unreachable", "pref", "1004")):
        netns.ip("rule", "add", *args)
    netns.ip("-6", "rule", "add", "from", "2001:db8::/32", "lookup", "1000", "pref", "500")
    out = subprocess.run([PY, "-c", RULES_CHECK, netns.name], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    import json

    result = json.loads(out.stdout)
    assert result["ours"] == result["theirs"]
    by_priority = {(r[0], r[1]): r for r in result["ours"]}
    oracle = json.loads(netns.ip("-j", "rule"))
    assert sorted(r["priority"] for r in oracle) == sorted(p for f, p in by_priority if f == 4)
    assert by_priority[(4, 1001)][3] == 6 and by_priority[(4, 1001)][7:9] == [16, 255]
    assert by_priority[(4, 1002)][10] == ["not"] and by_priority[(4, 1003)][10] == ["oif lo"]
    assert by_priority[(4, 1004)][7:9] == [7, 0xFFFFFFFF]  # a mark without mask: all bits, as the kernel says
    assert by_priority[(6, 500)][4] == "2001:db8::/32"


VXLAN_CHECK = r"""
import json, sys
from vnetd import netns
netns.enter(sys.argv[1])
from pyroute2 import IPRoute
from vnetd.backends.netlink import NetlinkBackend
ours = {l.name: [l.vxlan.id, str(l.vxlan.remote) if l.vxlan.remote else None,
                 str(l.vxlan.local) if l.vxlan.local else None, l.vxlan.link, l.vxlan.port, l.vxlan.learning]
        for l in NetlinkBackend().dump_links() if l.vxlan is not None}
theirs = {}
with IPRoute() as ipr:
    for m in ipr.get_links():
        info = m.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
            continue
        d = info.get_attr("IFLA_INFO_DATA")
        remote = d.get_attr("IFLA_VXLAN_GROUP") or d.get_attr("IFLA_VXLAN_GROUP6")
        local = d.get_attr("IFLA_VXLAN_LOCAL") or d.get_attr("IFLA_VXLAN_LOCAL6")
        theirs[m.get_attr("IFLA_IFNAME")] = [d.get_attr("IFLA_VXLAN_ID"), remote, local,
                                             d.get_attr("IFLA_VXLAN_LINK") or None, d.get_attr("IFLA_VXLAN_PORT"),
                                             bool(d.get_attr("IFLA_VXLAN_LEARNING"))]
print(json.dumps({"ours": ours, "theirs": theirs}))
"""


def test_vxlan_decoder_agrees_with_pyroute2(netns: Netns) -> None:
    netns.veth("under0", "under1")
    netns.ip("link", "add", "vx42", "type", "vxlan", "id", "42", "remote", "198.51.100.2", "local", "198.51.100.1",
             "dev", "under0", "dstport", "4789", "nolearning")
    netns.ip("link", "add", "vx7", "type", "vxlan", "id", "7", "remote", "2001:db8::2", "dstport", "8472")
    out = subprocess.run([PY, "-c", VXLAN_CHECK, netns.name], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    import json

    result = json.loads(out.stdout)
    assert result["ours"] == result["theirs"]
    assert result["ours"]["vx42"][:2] == [42, "198.51.100.2"] and result["ours"]["vx42"][4:] == [4789, False]
    assert result["ours"]["vx7"][1] == "2001:db8::2" and result["ours"]["vx7"][4] == 8472
