# SPDX-License-Identifier: MIT
"""The seam between the engine and a netfilter dataplane.

Every firewall backend -- the legacy iptables tables (``backends/iptables.py``),
the nf_tables tables iptables-nft uses (``backends/nftables.py``) -- takes the
same declared chains (iptables-save rule syntax, compiled by
``backends/xtables.py``) and keeps the same contract: vnetd's rules are tagged,
kept first and in order in ``merge`` chains, alone in ``exclusive`` chains,
pruned when no longer declared; foreign rules, chains and tables are never
touched; every read-modify-write is atomic per table and safe against other
writers. The planner (``plan/firewall.py``) only sees ``ObservedTable`` values
and fingerprints, so it is the same for every backend.

A fingerprint is backend-specific (a masked ``ipt_entry`` for legacy, the
expressions of an nf_tables rule for iptables-nft) but always compares a
declared rule's expected kernel form with the kernel's copy of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from vnetd.errors import BackendError
from vnetd.model.firewall import ChainSpec, ObservedTable, RuleId, RuleKey, ShownTable
from vnetd.plan.actions import Action


class FirewallBackend(Protocol):
    """What the engine and the daemon need of a netfilter dataplane."""

    #: the name administrators use (``firewall.backend``): "iptables-legacy", "iptables-nft"
    name: str
    #: seconds spent waiting for locks held by other tools (a metric)
    lock_waits: float

    def observe(self, chains: Iterable[ChainSpec]) -> dict[str, ObservedTable]:
        """Every table the declared chains use, plus every table holding vnetd's rules."""

    def rule_ids(self, chains: Iterable[ChainSpec]) -> Mapping[RuleKey, RuleId]:
        """Each declared rule's tag and the fingerprints of its kernel entries (the owner
        mark under plan.firewall.OWNER_KEY); the same mapping while the rules are the same."""

    def tables_to_read(self, chains: Iterable[ChainSpec]) -> list[str]:
        """The tables ``observe`` reads (what ``changed`` watches)."""

    def has_vnetd_rules(self) -> bool:
        """Whether any table holds a vnetd tag (work to prune with no chain declared)."""

    def changed(self, tables: Iterable[str]) -> list[str]:
        """Tables whose rules changed since the last ``observe`` (counters ignored); cheap."""

    def apply(self, actions: Sequence[Action]) -> list[tuple[Action, BackendError | None]]:
        """Carry out SyncChain/SetPolicy/PruneChain actions: one atomic commit per table."""

    def event_fileno(self) -> int | None:
        """A file descriptor that becomes readable when the ruleset may have changed
        (nf_tables notifications), or None when the backend can only be polled."""

    def drain_events(self) -> bool:
        """Read what the event descriptor holds; True if the ruleset may have changed."""

    def show(self, chains: Iterable[ChainSpec]) -> tuple[ShownTable, ...]:
        """The whole ruleset, vnetd's rules (declared texts where known) and everyone else's."""

    def close(self) -> None: ...
