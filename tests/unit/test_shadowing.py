# SPDX-License-Identifier: MIT
"""Shadowing (issue 13 item 4), the pure decision: which base chains drop what vnetd's rules
accept, and how the last rule of a chain is read (nf_tables expressions, legacy entries).

The kernel side (the chains read from real tables, the warnings of check/plan/apply and
the daemon, traffic) is tests/integration/test_shadowing.py.
"""

from __future__ import annotations

import struct

from vnetd.backends import nfnl
from vnetd.backends import nftexpr as nx
from vnetd.backends.shadowing import _legacy_verdict, unconditional_verdict
from vnetd.backends.xtables import IPV4, IPV6, STANDARD_TARGET_SIZE, comment_match, encode_plain_entry, xt_header
from vnetd.desired.rules import parse_rule
from vnetd.model.firewall import ChainMode, ChainSpec, ShownChain, ShownRule, ShownTable
from vnetd.plan.shadowing import (
    IN_LEGACY,
    IN_NF_TABLES,
    LEGACY,
    NFT,
    SHOWN_SHADOWS,
    Acceptance,
    BaseChain,
    acceptances,
    as_declared,
    shadowed_note,
    shadows,
    terminal_verdict,
    unreached,
    warning_lines,
)

PHYSDEV = "-m physdev --physdev-is-bridged -j ACCEPT"
FORWARD, INPUT, OUTPUT = 2, 1, 3


def chain(table: str, name: str, *rules: str, policy: str | None = None, family: int = 4,
          mode: ChainMode = ChainMode.MERGE, tail: tuple[str, ...] = ()) -> ChainSpec:
    return ChainSpec(table, name, policy, mode, tuple(parse_rule(r) for r in rules), None,
                     tuple(parse_rule(r) for r in tail), family=family)


def nft(family: str, table: str, name: str, hook: int = FORWARD, priority: int = 0, drop: bool = True,
        final: str | None = None) -> BaseChain:
    return BaseChain(IN_NF_TABLES, family, table, name, hook, priority, drop, final)


def legacy(table: str, name: str, hook: int = FORWARD, priority: int = 0, drop: bool = True,
           family: str = "ip", final: str | None = None) -> BaseChain:
    return BaseChain(IN_LEGACY, family, table, name, hook, priority, drop, final)


ARTICLE = (chain("filter", "FORWARD", PHYSDEV),)
DOCKER = nft("ip", "filter", "FORWARD")


def decide(declared: tuple[ChainSpec, ...], found: list[BaseChain], backend: str = LEGACY) -> list[str]:
    return [s.message() for s in shadows(acceptances(declared), as_declared(found, declared, backend), backend)]


# --------------------------------------------------------------------------- what vnetd accepts


def test_the_articles_physdev_rule_accepts_bridged_traffic_on_the_forward_hook() -> None:
    (acc,) = acceptances(ARTICLE)
    assert acc == Acceptance(4, "FORWARD", (PHYSDEV,), False, PHYSDEV)
    assert acc.hook == FORWARD
    assert acc.describe() == f"filter FORWARD accepts bridged traffic ({PHYSDEV})"


def test_only_the_filter_tables_accepts_count() -> None:
    """ACCEPT in nat/mangle/raw ends only that table's processing: not a decision to let traffic through."""
    declared = (chain("nat", "POSTROUTING", "-o eth0 -j ACCEPT", "-o eth0 -j MASQUERADE"),
                chain("mangle", "FORWARD", "-j ACCEPT", policy="ACCEPT"),
                chain("raw", "PREROUTING", "-j ACCEPT"),
                chain("filter", "INPUT", "-j LOG", "-p tcp --dport 22 -j DROP"))
    assert acceptances(declared) == ()


def test_accepts_through_declared_chains_and_policies() -> None:
    declared = (chain("filter", "INPUT", "-j LOG", "-j GUESTS", "-j UNKNOWN", "-p tcp --dport 22 -j ACCEPT"),
                chain("filter", "GUESTS", "-j MORE"), chain("filter", "MORE", "-s 192.0.2.0/24 -j ACCEPT"),
                chain("filter", "OUTPUT", policy="ACCEPT"),
                chain("filter", "FORWARD", "-i br0 -j ACCEPT", PHYSDEV, policy="ACCEPT", family=6))
    got = {(a.family, a.chain): a for a in acceptances(declared)}
    assert got[(4, "INPUT")].rules == ("-j GUESTS", "-p tcp --dport 22 -j ACCEPT")
    assert got[(4, "INPUT")].describe() == "filter INPUT accepts (-j GUESTS and 1 more rule)"
    assert got[(4, "OUTPUT")].describe() == "filter OUTPUT accepts by its policy ACCEPT"
    six = got[(6, "FORWARD")]
    assert six.bridged == PHYSDEV
    assert six.describe() == f"ip6 filter FORWARD accepts bridged traffic ({PHYSDEV} and 1 more rule), and by " \
                             "its policy ACCEPT"


def test_a_loop_of_jumps_is_not_followed_for_ever() -> None:
    declared = (chain("filter", "FORWARD", "-j A"), chain("filter", "A", "-j B"), chain("filter", "B", "-j A"))
    assert acceptances(declared) == ()


def test_negated_physdev_is_not_bridged_traffic() -> None:
    (acc,) = acceptances((chain("filter", "FORWARD", "-m physdev ! --physdev-is-bridged -j ACCEPT"),))
    assert acc.bridged is None


# --------------------------------------------------------------------------- the decision


def test_a_docker_like_drop_policy_shadows_the_legacy_physdev_rule() -> None:
    """Case (a): vnetd writes the legacy tables, iptables-nft's FORWARD has policy drop."""
    assert decide(ARTICLE, [DOCKER]) == [
        "filter FORWARD accepts bridged traffic (-m physdev --physdev-is-bridged -j ACCEPT), but nf_tables "
        "`table ip filter` chain FORWARD (hook forward, priority 0, policy drop) drops what it does not accept "
        "itself: packets must pass both (see docs/OPERATIONS.md)"]


def test_a_final_unconditional_reject_shadows_like_a_drop_policy() -> None:
    """firewalld's filter_FORWARD: policy accept, ends in ``reject with icmpx admin-prohibited``."""
    firewalld = nft("inet", "firewalld", "filter_FORWARD", priority=10, drop=False, final="reject")
    (message,) = decide(ARTICLE, [firewalld])
    assert "nf_tables `table inet firewalld` chain filter_FORWARD (hook forward, priority 10, policy accept, " \
           "ends in an unconditional reject) rejects what it does not accept itself" in message


def test_chains_that_cannot_drop_everything_are_not_reported() -> None:
    quiet = [nft("ip", "filter", "FORWARD", drop=False), nft("inet", "fw", "gate", drop=False, final=None)]
    assert decide(ARTICLE, quiet) == []


def test_other_hooks_and_families_are_not_compared() -> None:
    found = [nft("ip", "filter", "INPUT", hook=INPUT), nft("ip6", "six", "forward"), nft("netdev", "n", "in"),
             legacy("filter", "FORWARD", family="ip6"), nft("bridge", "b", "forward", hook=INPUT)]
    assert decide(ARTICLE, found) == []
    # inet serves both families
    v6 = (chain("filter", "FORWARD", "-j ACCEPT", family=6),)
    (message,) = decide(v6, [nft("inet", "fw", "gate"), nft("ip", "filter", "FORWARD")])
    assert message.startswith("ip6 filter FORWARD accepts (-j ACCEPT), but nf_tables `table inet fw` chain gate")


def test_the_chain_holding_vnetds_rules_is_never_its_own_shadow() -> None:
    # legacy backend: the legacy filter FORWARD is vnetd's (its DROP policy comes after vnetd's accepts)
    assert decide(ARTICLE, [legacy("filter", "FORWARD")]) == []
    # iptables-nft backend: table ip filter's FORWARD is vnetd's, Docker's DROP policy is no shadow there
    assert decide(ARTICLE, [DOCKER], backend=NFT) == []


def test_a_legacy_drop_policy_shadows_the_iptables_nft_backend() -> None:
    """Case (b): vnetd writes iptables-nft, the legacy filter FORWARD has policy DROP."""
    (message,) = decide(ARTICLE, [DOCKER, legacy("filter", "FORWARD")], backend=NFT)
    assert ", but legacy iptables table `filter` chain FORWARD (hook forward, priority 0, policy DROP) drops " \
           "what it does not accept itself" in message


def test_another_table_of_the_same_backend_on_the_same_hook() -> None:
    """Case (c): a mangle/raw chain, or a native chain with a lower priority number, in the backend vnetd writes."""
    assert len(decide(ARTICLE, [legacy("mangle", "FORWARD", priority=-150)])) == 1
    native = nft("inet", "early", "fwd", priority=-10)
    got = decide(ARTICLE, [nft("ip", "mangle", "FORWARD", priority=-150), native, DOCKER], backend=NFT)
    assert [m.split(", but ")[1].split(" (")[0] for m in got] == [
        "nf_tables `table ip mangle` chain FORWARD", "nf_tables `table inet early` chain fwd"]


def test_bridge_family_chains_shadow_only_bridged_accepts() -> None:
    bridge = nft("bridge", "filter", "FORWARD", priority=-200)
    assert len(decide(ARTICLE, [bridge])) == 1
    routed = (chain("filter", "FORWARD", "-i br0 -o eth0 -j ACCEPT"),)
    assert decide(routed, [bridge]) == []


def test_shadows_come_in_priority_order_one_per_chain_and_acceptance() -> None:
    declared = (*ARTICLE, chain("filter", "INPUT", "-i lo -j ACCEPT"))
    found = [DOCKER, nft("inet", "fw", "in", hook=INPUT), legacy("raw", "FORWARD", priority=-300)]
    got = decide(declared, found)
    assert [m.split(" accepts")[0] for m in got] == ["filter INPUT", "filter FORWARD", "filter FORWARD"]
    assert "table `raw`" in got[1] and "table ip filter" in got[2]


def test_what_vnetd_declares_in_its_own_backend_counts_as_it_will_be() -> None:
    """check and plan (before apply) and the daemon (after) say the same: a policy vnetd
    declares replaces the kernel's, a chain it will create with DROP is there already."""
    kernel_drop = legacy("mangle", "FORWARD", priority=-150)
    opened = (*ARTICLE, chain("mangle", "FORWARD", policy="ACCEPT"))
    assert decide(opened, [kernel_drop]) == []
    closed = (*ARTICLE, chain("mangle", "FORWARD", "-j MARK --set-mark 1", policy="DROP"))
    (message,) = decide(closed, [])
    assert "legacy iptables table `mangle` chain FORWARD (hook forward, priority -150, policy DROP)" in message
    # an exclusive chain ends in what vnetd declares last; so does a chain with rules kept at the bottom
    exclusive = (*ARTICLE, chain("mangle", "FORWARD", "-j MARK --set-mark 1", "-j DROP", mode=ChainMode.EXCLUSIVE))
    assert "ends in an unconditional drop" in decide(exclusive, [legacy("mangle", "FORWARD", drop=False)])[0]
    appended = (*ARTICLE, chain("mangle", "FORWARD", tail=("-j REJECT --reject-with icmp-host-prohibited",)))
    assert "rejects what it does not accept" in decide(appended, [legacy("mangle", "FORWARD", drop=False)])[0]
    emptied = (*ARTICLE, chain("mangle", "FORWARD", mode=ChainMode.EXCLUSIVE))
    assert decide(emptied, [legacy("mangle", "FORWARD", drop=False, final="drop")]) == []
    # declarations for the other backend change nothing of what this one has
    assert len(decide(opened, [nft("ip", "mangle", "FORWARD", priority=-150)])) == 1


def test_many_shadows_are_listed_up_to_a_bound() -> None:
    found = [nft("inet", f"t{i}", "c") for i in range(SHOWN_SHADOWS + 5)]
    lines = warning_lines(shadows(acceptances(ARTICLE), found, LEGACY))
    assert len(lines) == SHOWN_SHADOWS + 1
    assert lines[-1] == "firewall.shadowed: and 5 more chains that drop what vnetd's rules accept"


# --------------------------------------------------------------------------- reading a chain's last rule


def test_nf_tables_last_rules_that_drop_everything() -> None:
    comment = nx.xt("match", "comment", 0, bytes(256))
    assert unconditional_verdict(nx.counter() + nx.verdict(nfnl.NF_DROP)) == "drop"  # iptables-nft -j DROP
    assert unconditional_verdict(nx.counter() + nx.xt("target", "REJECT", 0, bytes(4))) == "reject"
    assert unconditional_verdict(nx.counter() + nx.expr("reject", nfnl.be32(1, 2))) == "reject"  # nft reject
    assert unconditional_verdict(comment + nx.log_group(0, "x", None, 0) + nx.verdict(nfnl.NF_DROP)) == "drop"


def test_nf_tables_last_rules_that_do_not() -> None:
    tcp = nx.meta_load(nx.NFT_META_L4PROTO) + nx.cmp(nx.NFT_CMP_EQ, b"\x06")
    assert unconditional_verdict(tcp + nx.verdict(nfnl.NF_DROP)) is None  # a condition
    assert unconditional_verdict(nx.limit(1, 1, 5) + nx.verdict(nfnl.NF_DROP)) is None  # a rate is a condition
    assert unconditional_verdict(nx.counter() + nx.verdict(nfnl.NF_ACCEPT)) is None
    assert unconditional_verdict(nx.verdict(nx.NFT_JUMP, "DOCKER")) is None  # a jump is not followed
    assert unconditional_verdict(nx.immediate_value(1, b"\x00\x00\x00\x00")) is None  # loads a value
    assert unconditional_verdict(nx.xt("target", "LOG", 0, bytes(4))) is None
    assert unconditional_verdict(b"") is None


def _kernel_target(verdict: int) -> bytes:
    """A standard target as the kernel keeps it: no name, the verdict as a number."""
    return xt_header(STANDARD_TARGET_SIZE, "") + struct.pack("=i", verdict) + bytes(4)


def test_legacy_last_entries_that_drop_everything() -> None:
    for layout in (IPV4, IPV6):
        drop = encode_plain_entry(b"", _kernel_target(-1), layout)
        assert _legacy_verdict(memoryview(drop), 0, layout) == "drop"
        commented = encode_plain_entry(comment_match("docker"), _kernel_target(-1), layout)
        assert _legacy_verdict(memoryview(commented), 0, layout) == "drop"
        reject = encode_plain_entry(b"", xt_header(40, "REJECT") + bytes(8), layout)
        assert _legacy_verdict(memoryview(reject), 0, layout) == "reject"


def test_legacy_last_entries_that_do_not() -> None:
    layout = IPV4
    accept = encode_plain_entry(b"", _kernel_target(-2), layout)
    assert _legacy_verdict(memoryview(accept), 0, layout) is None
    matched = encode_plain_entry(xt_header(40, "conntrack") + bytes(8), _kernel_target(-1), layout)
    assert _legacy_verdict(memoryview(matched), 0, layout) is None
    from_net = bytearray(encode_plain_entry(b"", _kernel_target(-1), layout))
    from_net[0:4] = bytes([192, 0, 2, 0])  # -s 192.0.2.0/24
    from_net[8:12] = bytes([255, 255, 255, 0])
    assert _legacy_verdict(memoryview(bytes(from_net)), 0, layout) is None
    jump = encode_plain_entry(b"", _kernel_target(1234), layout)  # a jump: an offset
    assert _legacy_verdict(memoryview(jump), 0, layout) is None


# --------------------------------------------------------------------------- what is said


def test_plan_never_says_nothing_to_do_alone_over_dropped_traffic() -> None:
    from vnetd.plan.actions import Plan
    from vnetd.plan.render import plan_text

    assert plan_text(Plan()) == "nothing to do: the system matches the state files\n"
    assert plan_text(Plan(), shadowed=1) == (
        "nothing to do: the system matches the state files; but a firewall chain or rule of another tool "
        "overrides vnetd's rules (see the firewall.shadowed warning)\n")
    assert shadowed_note(3) == "but 3 firewall chains or rules of other tools override vnetd's rules (see the " \
                               "firewall.shadowed warnings)"


def test_a_shadowed_daemon_is_degraded_and_says_why() -> None:
    from vnetd.daemon.status import degraded, render_status

    message = decide(ARTICLE, [DOCKER])[0]
    answer = {"passes": 3, "last_source": "timer", "state_dir": "/etc/vnetd.d", "files": [], "last_load_errors": [],
              "counts": {"converged": 2}, "resources": [], "shadowed": [message]}
    assert degraded(answer) == ["1 firewall chain or rule of other tools overrides vnetd's rules (firewall.shadowed)"]
    assert f"firewall shadowed: {message}\n" in render_status(answer)
    assert degraded({**answer, "shadowed": []}) == []


# --------------------------------------------------------------------------- inside vnetd's chains


def shown(*rules: tuple[str, bool], chain_name: str = "INPUT", table: str = "filter", family: int = 4) -> ShownTable:
    return ShownTable(table, (ShownChain(chain_name, True, "ACCEPT", False,
                                         tuple(ShownRule(text, managed) for text, managed in rules)),), family)


REJECT_LAST = chain("filter", "INPUT", "-p tcp --dport 22 -j ACCEPT",
                    tail=("-j REJECT --reject-with icmp-host-prohibited",))


def test_rules_that_decide_every_packet() -> None:
    for text, verdict in (("-j ACCEPT", "ACCEPT"), ("-j DROP", "DROP"), ("-j RETURN", "RETURN"),
                          ("-j REJECT --reject-with icmp-port-unreachable", "REJECT"), ("-j REJECT", "REJECT"),
                          ('-m comment --comment "libvirt: allow all" -j ACCEPT', "ACCEPT")):
        assert terminal_verdict(text) == verdict, text
    for text in ("-i lo -j ACCEPT", "-m conntrack --ctstate INVALID -j DROP", "-j LIBVIRT_INP", "-j LOG",
                 "-j MARK --set-mark 1", "-m limit --limit 1/s -j DROP", '-j ACCEPT "', "", "-j"):
        assert terminal_verdict(text) is None, text


def test_a_foreign_rule_that_decides_everything_above_vnetds_bottom_rules() -> None:
    table = shown(("-p tcp --dport 22 -j ACCEPT", True), ("-i lo -j ACCEPT", False), ("-j ACCEPT", False),
                  ("-j DROP", False), ("-j REJECT --reject-with icmp-host-prohibited", True))
    (found,) = unreached((REJECT_LAST,), (table,))
    assert (found.foreign, found.position) == ("-j ACCEPT", 2)
    assert found.message() == (
        "filter INPUT: vnetd's rules kept at the bottom (position: append: -j REJECT --reject-with "
        "icmp-host-prohibited) are never reached: the rule of another tool before them (`-j ACCEPT`, its #2 in "
        "the chain) ends every packet's path there (see docs/OPERATIONS.md)")
    assert found.fields()["where"] == "in_chain" and found.fields()["vnetd_chain"] == "filter INPUT"
    assert warning_lines([found]) == [f"firewall.shadowed: {found.message()}"]


def test_nothing_above_vnetds_bottom_rules_that_decides_everything() -> None:
    quiet = shown(("-i lo -j ACCEPT", False), ("-j LIBVIRT_INP", False), ("-j ACCEPT", True))
    assert unreached((REJECT_LAST,), (quiet,)) == ()
    # vnetd's own rules on top are the administrator's; no bottom rules, nothing compared
    assert unreached((chain("filter", "INPUT", "-j ACCEPT"),), (shown(("-j DROP", False)),)) == ()
    # another family's table, another chain, an exclusive chain: not compared
    drop = shown(("-j DROP", False))
    assert unreached((chain("filter", "INPUT", tail=("-j ACCEPT",), family=6),), (drop,)) == ()
    assert unreached((chain("filter", "FORWARD", tail=("-j ACCEPT",)),), (drop,)) == ()
    assert unreached((chain("filter", "INPUT", "-j ACCEPT", mode=ChainMode.EXCLUSIVE),), (drop,)) == ()
    assert len(unreached((chain("filter", "INPUT", tail=("-j ACCEPT",), family=6),),
                         (shown(("-j DROP", False), family=6),))) == 1


def test_a_chain_that_accepts_every_one_of_vnetds_rules_itself_is_no_shadow() -> None:
    """Docker's FORWARD with the same rule in DOCKER-USER (the reader finds it: ``accepts``)."""
    fixed = BaseChain(IN_NF_TABLES, "ip", "filter", "FORWARD", FORWARD, 0, True, None, frozenset({PHYSDEV}))
    assert decide(ARTICLE, [fixed]) == []
    two = (chain("filter", "FORWARD", PHYSDEV, "-i br0 -j ACCEPT"),)
    assert len(decide(two, [fixed])) == 1  # one of vnetd's accepting rules is still dropped there
