# SPDX-License-Identifier: MIT
"""``firewall.backend`` (issue 13): the setting in state files, validated with FILE:LINE,
and the choice ``auto`` makes on a host -- one clear answer or a loud refusal, never a
guess (``vnetd.backends.firewall.choose``, pure; the host's facts are its arguments)."""

from __future__ import annotations

import pytest

from tests.support import StateDir
from tests.unit.test_loader import issues_of
from vnetd.backends.firewall import BackendRefused, FamilyChains, choose
from vnetd.desired.loader import load_state_dir
from vnetd.managers import Managers
from vnetd.model.firewall import FIREWALL_BACKENDS, BackendEntry, ChainMode, ChainSpec

NFT = {4: "nft", 6: "nft"}
LEGACY = {4: "legacy", 6: "legacy"}
V4 = frozenset({4})
BOTH = frozenset({4, 6})


# --------------------------------------------------------------------------- the setting


def test_backend_is_read_with_where_it_is_written(state_dir: StateDir) -> None:
    state_dir.write("10-fw.yaml", "firewall:\n  backend: iptables-nft\n  filter:\n    INPUT:\n      rules: ['-j ACCEPT']\n")
    desired = load_state_dir(str(state_dir))
    assert desired.firewall_backend == "iptables-nft"
    assert desired.firewall_backend_at is not None and desired.firewall_backend_at.line == 2


def test_no_backend_is_auto(state_dir: StateDir) -> None:
    state_dir.write("10-fw.yaml", "firewall:\n  filter:\n    INPUT:\n      rules: ['-j ACCEPT']\n")
    assert load_state_dir(str(state_dir)).firewall_backend == "auto"


def test_unknown_backend_is_refused_at_its_line(state_dir: StateDir) -> None:
    state_dir.write("10-fw.yaml", "firewall:\n  filter: {}\n  backend: nftables\n")
    issues = issues_of(state_dir)
    assert len(issues) == 1
    assert issues[0].line == 3 and issues[0].path == "firewall.backend"
    assert "auto, iptables-legacy, iptables-nft" in issues[0].message


def test_backend_under_firewall6_is_refused_with_where_it_belongs(state_dir: StateDir) -> None:
    state_dir.write("10-fw.yaml", "firewall6:\n  backend: iptables-legacy\n")
    issues = issues_of(state_dir)
    assert len(issues) == 1 and issues[0].line == 2
    assert "firewall.backend" in issues[0].message and "firewall6" in issues[0].message


def test_files_that_disagree_are_refused_naming_both(state_dir: StateDir) -> None:
    state_dir.write("10-a.yaml", "firewall:\n  backend: iptables-legacy\n")
    state_dir.write("20-b.yaml", "\nfirewall:\n  backend: iptables-nft\n")
    issues = issues_of(state_dir)
    assert len(issues) == 1
    assert issues[0].file.endswith("20-b.yaml") and issues[0].line == 3
    assert "10-a.yaml:2" in issues[0].message


def test_files_that_agree_are_one_setting(state_dir: StateDir) -> None:
    state_dir.write("10-a.yaml", "firewall:\n  backend: iptables-nft\n")
    state_dir.write("20-b.yaml", "firewall:\n  backend: iptables-nft\n")
    assert load_state_dir(str(state_dir)).firewall_backend == "iptables-nft"


def ipv4_only_nft(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry where iptables-nft writes IPv4 only (as before it served IPv6)."""
    entry = FIREWALL_BACKENDS["iptables-nft"]
    monkeypatch.setitem(FIREWALL_BACKENDS, "iptables-nft", BackendEntry(entry.path, (4,), entry.variant))


def test_a_backend_that_cannot_write_a_declared_family_is_refused(state_dir: StateDir,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from vnetd.firewall_checks import backend_issues

    ipv4_only_nft(monkeypatch)
    state_dir.write("10-a.yaml", "firewall:\n  backend: iptables-nft\n")
    state_dir.write("20-b.yaml", "firewall6:\n  filter:\n    INPUT:\n      rules: ['-j ACCEPT']\n")
    issues = backend_issues(load_state_dir(str(state_dir)))
    assert len(issues) == 1 and issues[0].line == 2 and issues[0].file.endswith("10-a.yaml")
    assert "firewall6:" in issues[0].message and "iptables-legacy" in issues[0].message


# --------------------------------------------------------------------------- auto


def test_named_backend_is_used_whatever_the_host() -> None:
    chosen = choose("iptables-legacy", V4, ["iptables-nft"], NFT, "10-fw.yaml:2")
    assert chosen.name == "iptables-legacy" and "10-fw.yaml:2" in chosen.reason


def test_auto_on_an_nft_host_writes_both_families_through_iptables_nft() -> None:
    assert choose("auto", BOTH, [], NFT).name == "iptables-nft"


@pytest.mark.parametrize(("variants", "name"), [(NFT, "iptables-nft"), (LEGACY, "iptables-legacy")])
def test_auto_follows_the_hosts_iptables(variants: dict[int, str], name: str) -> None:
    chosen = choose("auto", V4, [], variants)
    assert chosen.name == name and f"iptables is iptables-{variants[4]}" in chosen.reason


def test_auto_keeps_the_backend_holding_vnetds_rules_when_it_is_the_hosts() -> None:
    assert choose("auto", V4, ["iptables-nft"], NFT).name == "iptables-nft"


def test_auto_keeps_vnetds_rules_in_the_other_backend_and_says_how_to_move_them() -> None:
    """An upgrade on an nft host whose vnetd wrote the legacy tables: the rules stay
    enforced where they are (nothing moves that nobody asked to move)."""
    chosen = choose("auto", V4, ["iptables-legacy"], NFT)
    assert chosen.name == "iptables-legacy"
    assert "the host's iptables is iptables-nft (firewall.backend: iptables-nft moves them)" in chosen.reason


@pytest.mark.parametrize(("families", "holding", "variants", "says"), [
    (V4, ["iptables-legacy", "iptables-nft"], NFT, "vnetd's rules are in iptables-legacy and iptables-nft"),
    (BOTH, [], {4: "nft", 6: "legacy"}, "`iptables` is iptables-nft but `ip6tables` is ip6tables-legacy"),
    (V4, [], {4: None, 6: None}, "no iptables command here"),
], ids=["rules in both backends", "mixed commands", "no command"])
def test_auto_refuses_an_ambiguous_host(families: frozenset[int], holding: list[str],
                                        variants: dict[int, str | None], says: str) -> None:
    with pytest.raises(BackendRefused) as refused:
        choose("auto", families, holding, variants)
    assert says in refused.value.message and "firewall.backend" in refused.value.message


def test_auto_refuses_when_no_backend_of_the_hosts_variant_writes_every_family(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ipv4_only_nft(monkeypatch)
    with pytest.raises(BackendRefused) as refused:
        choose("auto", BOTH, [], NFT)
    assert "firewall6:" in refused.value.message


def test_auto_without_chains_never_refuses_it_only_prunes() -> None:
    chosen = choose("auto", frozenset(), ["iptables-legacy", "iptables-nft"], {4: "nft", 6: "legacy"})
    assert chosen.holding == ("iptables-legacy", "iptables-nft")


def test_no_command_but_vnetds_rules_in_one_backend_keeps_it() -> None:
    assert choose("auto", V4, ["iptables-nft"], {4: None, 6: None}).name == "iptables-nft"


# --------------------------------------------------------------------------- the seam


def test_every_backend_is_registered_by_one_line_and_conforms() -> None:
    """A backend is a module and one line in model.firewall.FIREWALL_BACKENDS."""
    from vnetd.backends.firewall import backend_class

    for name, entry in FIREWALL_BACKENDS.items():
        cls = backend_class(name)
        for method in ("observe", "rule_ids", "apply", "changed", "tables_to_read", "has_vnetd_rules",
                       "event_fileno", "drain_events", "record_chains", "show", "close"):
            assert callable(getattr(cls, method, None)), (name, method)
        assert entry.variant in ("legacy", "nft")


def test_every_op_has_exactly_one_manager() -> None:
    from vnetd.plan import actions

    managers = Managers()
    ops = [c for c in vars(actions).values() if isinstance(c, type) and c.__module__ == actions.__name__
           and c.__name__ not in ("Action", "Plan", "Problem", "Note") and hasattr(c, "__dataclass_fields__")]
    for op in ops:
        handling = [m.name for m in managers.all if m.handles(op.__new__(op))]
        assert len(handling) <= 1, (op.__name__, handling)


def test_a_vanished_file_holds_its_chains_with_the_backend_it_named() -> None:
    """A file moved away by mistake keeps its chains enforced (loader.hold_vanished) through
    the backend it named, and the other files' route rules and probes stay."""
    from vnetd.desired.loader import SourceFile, hold_vanished, load_sources

    fw = SourceFile("20-fw.yaml", "firewall:\n  backend: iptables-nft\n  filter:\n    INPUT:\n"
                                  "      rules: ['-j ACCEPT']\n")
    rules = SourceFile("10-rules.yaml", "route-rules:\n  config:\n  - {priority: 100, route-table: 100, "
                                        "ip-from: 192.0.2.0/24}\n")
    enforced = load_sources([rules, fw])
    new = load_sources([rules])
    held, holds = hold_vanished(new, enforced, ["20-fw.yaml"])
    assert holds and held.chains == enforced.chains
    assert held.firewall_backend == "iptables-nft" and held.route_rules == new.route_rules


def test_a_backends_chains_stay_one_tuple_while_the_desired_state_is_the_same() -> None:
    """The backends' caches are keyed on this tuple by identity: the legacy backend made a
    new one when observe handed its own tuple on, and recompiled every rule twice a pass."""
    chains = [ChainSpec("filter", name, None, ChainMode.MERGE, (), family=family)
              for name, family in (("A", 4), ("B", 6), ("C", 4))]
    mine = FamilyChains(4)
    first = mine(tuple(chains))
    assert [c.name for c in first] == ["A", "C"]
    assert mine(first) is first  # this family's tuple handed back
    assert mine(list(chains)) is first  # the same chains in a new container
    assert mine(tuple(chains[:1])) is not first  # other chains: another tuple
