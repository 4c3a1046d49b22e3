# SPDX-License-Identifier: MIT
"""Checkpoints of the iptables-nft backend against the real kernel (what ``apply
--confirm`` and ``vnetd rollback`` use): ``record_chains`` before a change, the change
(vnetd's and another tool's), then the restore plan applied (``RestoreChain``:
``_Batch._restore`` and ``create_restored_chains``) until it is empty, and the
family's save tool prints exactly what it printed before, foreign rules, comments,
vnetd's tags, policies and user chains included; ``nft -j list ruleset`` likewise
(handles and counters aside).

The backend runs in a worker process inside each namespace (tests/nft_support.py);
the checkpoint goes through its JSON form, as a trial keeps it in a file.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.nft_support import NftWorker, chain
from tests.support import Netns

pytestmark = pytest.mark.kernel

TOOLS = {4: "iptables-nft", 6: "ip6tables-nft"}
NETS = {4: ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.7"), 6: ("2001:db8:1::/64", "2001:db8:2::/64",
                                                                   "2001:db8:3::7")}


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def family(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def _key(table: str, family: int) -> str:
    return f"ip6 {table}" if family == 6 else table


def _tool(ns: Netns, family: int, *args: str) -> None:
    ns.exec(TOOLS[family], *args)


def _snapshot(ns: Netns, family: int) -> tuple[list[str], list[Any]]:
    """The family's save output (comments of the save tool and counters aside) and
    ``nft -j list ruleset`` of its tables (handles and counter values aside)."""
    saved = []
    for line in ns.exec(f"{TOOLS[family]}-save").stdout.splitlines():
        if line.startswith("#"):
            continue
        saved.append(line.rsplit(" ", 1)[0] if line.startswith(":") else line)
    family_name = "ip6" if family == 6 else "ip"
    listed = []
    for item in json.loads(ns.exec("nft", "-j", "list", "ruleset").stdout)["nftables"]:
        (kind, body), = item.items()
        if kind == "metainfo" or body.get("family") != family_name:
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        if kind == "rule":
            body["expr"] = [{"counter": None} if "counter" in e else e for e in body["expr"]]
        listed.append({kind: body})
    # each chain's rules in order; tables and chains as a set (a chain made again is listed last)
    rules = sorted((item for item in listed if "rule" in item), key=lambda r: (r["rule"]["table"], r["rule"]["chain"]))
    others = sorted(json.dumps(item, sort_keys=True) for item in listed if "rule" not in item)
    return saved, [others, rules]


def _differ(a: list[Any], b: list[Any]) -> str:
    return "\n".join(f"{x}\n  !=\n{y}" for x, y in zip(a[1], b[1], strict=False) if x != y) or f"{a} != {b}"


def _before(ns: Netns, family: int, worker: NftWorker) -> None:
    """A host as a trial finds it: vnetd's rules, an owned chain jumped to, a policy,
    and another tool's rules (with comments) around them."""
    a, b, host = NETS[family]
    _tool(ns, family, "-A", "FORWARD", "-s", a, "-m", "comment", "--comment", "libvirt: guests out", "-j", "ACCEPT")
    _tool(ns, family, "-A", "FORWARD", "-p", "tcp", "--dport", "53", "-j", "ACCEPT")
    _tool(ns, family, "-N", "DOCKER-LIKE")
    _tool(ns, family, "-A", "DOCKER-LIKE", "-d", b, "-j", "RETURN")
    _tool(ns, family, "-A", "FORWARD", "-j", "DOCKER-LIKE")
    worker.declare(
        chain("filter", "INPUT", "-i lo -j ACCEPT", f"-s {a} -p tcp -m tcp --dport 22 -j ACCEPT",
              tail=("-j DROP",), family=family),
        chain("filter", "FORWARD", "-i vnet+ -j GUESTS", policy="DROP", family=family),
        chain("filter", "GUESTS", f"-d {host} -p udp -m udp --dport 53 -j ACCEPT", "-j RETURN", family=family),
    )
    worker.converge()


def _change(ns: Netns, family: int, worker: NftWorker) -> None:
    """The change a trial makes (a new declaration: rules rewritten, a chain dropped, one
    made, a policy changed, a new table), and another tool writing meanwhile."""
    a, b, _host = NETS[family]
    worker.declare(
        chain("filter", "INPUT", "-p tcp -m tcp --dport 443 -j ACCEPT", mode="exclusive", family=family),
        chain("filter", "FORWARD", "-o vnet+ -j NEWCHAIN", policy="ACCEPT", family=family),
        chain("filter", "NEWCHAIN", f"-s {b} -j DROP", family=family),
        chain("nat", "POSTROUTING", f"-s {a} -j MASQUERADE", family=family),
        chain("filter", "OUTPUT", "-j ACCEPT", family=family),
    )
    worker.converge()
    _tool(ns, family, "-D", "FORWARD", "-p", "tcp", "--dport", "53", "-j", "ACCEPT")
    _tool(ns, family, "-A", "DOCKER-LIKE", "-j", "DROP")


CHAINS = [("filter", "INPUT"), ("filter", "FORWARD"), ("filter", "GUESTS"), ("filter", "NEWCHAIN"),
          ("filter", "OUTPUT"), ("filter", "DOCKER-LIKE"), ("nat", "POSTROUTING")]


def test_restore_puts_every_recorded_chain_back_exactly(netns: Netns, family: int) -> None:
    with NftWorker(netns) as worker:
        _before(netns, family, worker)
        before = _snapshot(netns, family)
        assert worker.call("checkpoint", [[_key(t, family), c] for t, c in CHAINS]) == len(CHAINS)
        _change(netns, family, worker)
        changed = _snapshot(netns, family)
        assert changed != before
        result = worker.call("rollback")
        assert result["restored"], result
        assert all(a["error"] is None for a in result["applied"]), result
        after = _snapshot(netns, family)
    assert after[0] == before[0], "\n".join(after[0] + ["----"] + before[0])
    assert after[1] == before[1], _differ(after[1], before[1])


def test_restore_is_a_no_op_when_nothing_changed(netns: Netns, family: int) -> None:
    """Recorded, not changed: the restore plan is empty and nothing is written."""
    with NftWorker(netns) as worker:
        _before(netns, family, worker)
        before = _snapshot(netns, family)
        worker.call("checkpoint", [[_key(t, family), c] for t, c in CHAINS])
        result = worker.call("rollback")
    assert result == {"restored": True, "applied": []}
    assert _snapshot(netns, family) == before


def test_restore_refills_a_deleted_user_chain_that_restored_rules_jump_to(netns: Netns, family: int) -> None:
    """An owned user chain and the chain jumping to it both deleted by another tool: the
    chain is made again before the rule that jumps to it (``create_restored_chains``)."""
    with NftWorker(netns) as worker:
        _before(netns, family, worker)
        before = _snapshot(netns, family)
        worker.call("checkpoint", [[_key(t, family), c] for t, c in CHAINS])
        _tool(netns, family, "-F", "FORWARD")
        _tool(netns, family, "-F", "GUESTS")
        _tool(netns, family, "-X", "GUESTS")
        result = worker.call("rollback")
        assert result["restored"], result
        assert all(a["error"] is None for a in result["applied"]), result
    assert _snapshot(netns, family) == before


def test_one_checkpoint_restores_each_family_in_its_own_tables(netns: Netns) -> None:
    """A checkpoint holding chains of both families: each is put back by its family's
    backend, in its own tables (an IPv6 chain that did not exist is gone again)."""
    with NftWorker(netns) as worker:
        worker.declare(chain("filter", "INPUT", "-j ACCEPT"))
        worker.converge()
        before4 = _snapshot(netns, 4)
        worker.call("checkpoint", [["filter", "INPUT"], ["ip6 filter", "INPUT"]])
        netns.exec("iptables-nft", "-F", "INPUT")
        netns.exec("ip6tables-nft", "-A", "INPUT", "-j", "DROP")
        result = worker.call("rollback")
        assert result["restored"], result
    assert _snapshot(netns, 4) == before4
    assert not [line for line in netns.exec("ip6tables-nft-save").stdout.splitlines() if line.startswith("-A")]
