# SPDX-License-Identifier: MIT
"""``firewall.backend`` against the real kernel (issue 13): switching backends moves
vnetd's rules (written in the new one, pruned from the old one, nothing else touched),
and ``auto`` refuses a host where vnetd's rules are in the other backend than the
host's ``iptables`` -- loudly, at the line, writing nothing."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.support import Netns, StateDir, vnetd
from vnetd.backends.nftdetect import iptables_variant

pytestmark = pytest.mark.kernel

RULES = """
firewall:
  filter:
    FORWARD:
      rules:
      - -m physdev --physdev-is-bridged -j ACCEPT
    GUESTS:
      rules:
      - -s 198.51.100.0/24 -j ACCEPT
  nat:
    POSTROUTING:
      rules:
      - -o eth1 -j MASQUERADE
"""


def test_switching_backend_moves_vnetds_rules_and_leaves_the_rest(netns: Netns, state_dir: StateDir) -> None:
    netns.exec("iptables-legacy", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "DROP")  # foreign: stays
    state_dir.write("10-fw.yaml", RULES)
    state_dir.pin("iptables-legacy")
    first = vnetd("apply", netns=netns, state_dir=state_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "firewall backend: iptables-legacy (firewall.backend at" in first.stderr
    assert netns.iptables_save().count("vnetd:") >= 3 and "vnetd:" not in netns.iptables_save(variant="nft")
    state_dir.pin("iptables-nft")
    plan = vnetd("plan", netns=netns, state_dir=state_dir)
    assert plan.returncode == 2 and "firewall/filter/FORWARD in iptables-legacy" in plan.stdout, plan.stdout
    moved = vnetd("apply", netns=netns, state_dir=state_dir)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    legacy, nft = netns.iptables_save(), netns.iptables_save(variant="nft")
    assert "vnetd:" not in legacy and ":GUESTS" not in legacy
    assert "-A FORWARD -s 192.0.2.0/24 -j DROP" in legacy  # what vnetd did not write stays
    assert "physdev" in nft and "MASQUERADE" in nft and ":GUESTS" in nft
    assert vnetd("plan", netns=netns, state_dir=state_dir).returncode == 0


@pytest.mark.skipif(iptables_variant() != "nft", reason="needs a host whose iptables is the nft variant")
def test_auto_keeps_vnetds_rules_in_the_other_backend_than_the_hosts_iptables(netns: Netns,
                                                                            state_dir: StateDir) -> None:
    """An upgrade on a host whose vnetd wrote the legacy tables (auto, the default, where
    the host's iptables may be the nft variant): the rules stay enforced where they are,
    and every command says how to move them."""
    state_dir.write("10-fw.yaml", RULES)
    state_dir.pin("iptables-legacy")
    assert vnetd("apply", netns=netns, state_dir=state_dir).returncode == 0
    before = netns.iptables_save(), netns.iptables_save(variant="nft")
    state_dir.pin(None)
    host = iptables_variant()
    for command in ("check", "plan", "apply"):
        result = vnetd(command, netns=netns, state_dir=state_dir)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "firewall backend: iptables-legacy (auto: " in result.stderr, result.stderr
        if host == "nft":
            assert "vnetd's rules are in iptables-legacy and stay there" in result.stderr, result.stderr
    assert (netns.iptables_save(), netns.iptables_save(variant="nft")) == before  # nothing moved


def test_auto_refuses_vnetds_rules_in_both_backends(netns: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-fw.yaml", RULES)
    state_dir.pin("iptables-legacy")
    assert vnetd("apply", netns=netns, state_dir=state_dir).returncode == 0
    # vnetd's tagged rules copied into the nft tables too: auto has no one answer
    netns.exec("iptables-nft-restore", "--noflush", input=netns.exec("iptables-legacy-save", "-t", "filter").stdout)
    before = netns.iptables_save(), netns.iptables_save(variant="nft")
    state_dir.pin(None)
    for command in ("check", "plan", "apply"):
        result = vnetd(command, netns=netns, state_dir=state_dir)
        assert result.returncode != 0, result.stdout
        assert "10-fw.yaml:4: firewall.backend: auto: vnetd's rules are in iptables-legacy and iptables-nft" \
            in result.stderr, result.stderr
    assert (netns.iptables_save(), netns.iptables_save(variant="nft")) == before  # nothing written


@pytest.mark.skipif(iptables_variant() != "nft", reason="needs a host whose iptables is the nft variant")
def test_auto_on_an_nft_host_writes_the_iptables_nft_tables(netns: Netns, state_dir: StateDir) -> None:
    state_dir.pin(None)
    state_dir.write("10-fw.yaml", RULES)
    result = vnetd("apply", netns=netns, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "firewall backend: iptables-nft (auto: the host's iptables is iptables-nft)" in result.stderr
    assert "physdev" in netns.exec("iptables-nft", "-S", "FORWARD").stdout
    assert "vnetd:" not in netns.iptables_save()


@pytest.mark.skipif(iptables_variant() != "nft", reason="needs a host whose iptables is the nft variant")
def test_the_daemon_refuses_an_ambiguous_host_loudly_and_keeps_the_rest(netns: Netns, state_dir: StateDir) -> None:
    from tests.daemon_support import DaemonProcess

    state_dir.write("10-fw.yaml", RULES)
    state_dir.pin("iptables-legacy")
    assert vnetd("apply", netns=netns, state_dir=state_dir).returncode == 0
    # vnetd's tagged rules copied into the nft tables too: auto has no one answer
    saved = netns.exec("iptables-legacy-save", "-t", "filter").stdout
    netns.exec("iptables-nft-restore", "--noflush", input=saved)
    state_dir.pin(None)
    state_dir.write("20-br.yaml", "interfaces:\n- {name: br7, type: linux-bridge, state: up}\n")
    before = netns.iptables_save(), netns.iptables_save(variant="nft")
    daemon = DaemonProcess(netns, state_dir)
    try:
        daemon.wait_ready()
        refused = daemon.wait_for("firewall.backend_refused")
        assert "vnetd's rules are in iptables-legacy and iptables-nft" in refused["message"]
        assert daemon.wait_until(lambda: netns.link("br7") is not None)  # the other kinds go on
        problem = daemon.wait_for("resource.problem", resource="firewall/filter/FORWARD")
        assert problem["message"].startswith("firewall.backend: auto:")
        status = json.loads(vnetd("status", "--json", "--socket", daemon.socket).stdout)
        states = {r["resource"]: (r["state"], r["error"] or "") for r in status["resources"]}
        assert states["firewall/filter/FORWARD"][0] == "failing", states  # never "converged"
        assert "firewall.backend: auto:" in states["firewall/filter/FORWARD"][1]
        assert states["interface/br7"][0] == "converged"
        assert (netns.iptables_save(), netns.iptables_save(variant="nft")) == before  # nothing touched
    finally:
        assert daemon.stop() == 0, "\n".join(daemon.lines[-30:])


def test_show_on_iptables_nft_fed_back_plans_nothing(netns: Netns, state_dir: StateDir,
                                                      make_state_dir: Callable[[], StateDir]) -> None:
    netns.exec("iptables-nft", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "DROP")  # foreign: a comment
    state_dir.pin("iptables-nft")
    state_dir.write("10-fw.yaml", RULES)
    assert vnetd("apply", netns=netns, state_dir=state_dir).returncode == 0
    shown = vnetd("show", netns=netns, state_dir=state_dir)
    assert shown.returncode == 0, shown.stderr
    assert "firewall:\n  backend: iptables-nft\n" in shown.stdout
    assert "# foreign rule (not managed): -A FORWARD -s 192.0.2.0/24 -j DROP" in shown.stdout, shown.stdout
    fed_back = make_state_dir()
    fed_back.pin(None)  # the shown state only
    fed_back.write("00-show.yaml", shown.stdout)
    plan = vnetd("plan", netns=netns, state_dir=fed_back)
    assert plan.returncode == 0, plan.stdout + plan.stderr


QUEUE = """
firewall:
  filter:
    FORWARD:
      rules:
      - -p tcp -j QUEUE
"""


def test_check_refuses_what_the_backend_in_use_cannot_write(netns: Netns, state_dir: StateDir) -> None:
    """-j QUEUE compiles (the legacy tables take it) but iptables-nft cannot write it into
    nf_tables: pinned to iptables-nft, check refuses it at its line, as apply would fail."""
    state_dir.write("10-queue.yaml", QUEUE)
    state_dir.pin("iptables-nft")
    check = vnetd("check", netns=netns, state_dir=state_dir)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "10-queue.yaml:6: firewall.filter.FORWARD.rules[0]: the iptables-nft backend cannot write it: " \
           "-j QUEUE cannot be written into nf_tables by iptables-nft (use -j NFQUEUE)" in check.stderr
    assert vnetd("apply", netns=netns, state_dir=state_dir).returncode == 1
    assert "QUEUE" not in netns.iptables_save(variant="nft")
    state_dir.pin("iptables-legacy")
    assert vnetd("check", netns=netns, state_dir=state_dir).returncode == 0
    applied = vnetd("apply", netns=netns, state_dir=state_dir)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "-A FORWARD -p tcp -m comment" in netns.iptables_save() and "-j QUEUE" in netns.iptables_save()
