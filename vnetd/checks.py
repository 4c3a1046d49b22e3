# SPDX-License-Identifier: MIT
"""Checks of a loaded state against this machine (beyond what the loader can know).

* Every firewall rule is compiled through libxtables (python-iptables): a match or
  option it does not know is a ConfigError naming file, line and rule; so is a jump
  to a chain that is neither declared nor present in the kernel's table.
* Environment warnings: the host's iptables is the nft variant, nft holds rules in
  this namespace (a split firewall).
"""

from __future__ import annotations

from vnetd.model.state import DesiredState


def existing_chains(table: str) -> set[str] | None:
    """The chains of a table as the kernel has them; None when they cannot be read."""
    from vnetd.backends.iptables import RawTables, loaded_tables, walk_table
    from vnetd.errors import BackendError

    if table not in loaded_tables():
        return set()  # not instantiated: only its built-in chains would exist
    try:
        raw = RawTables()
    except OSError:
        return None  # not root: the tables cannot be read
    try:
        got = raw.read(table)
    except BackendError:
        return None
    finally:
        raw.close()
    if got is None:
        return set()
    return {entry.chain for entry in walk_table(*got)}


def check_state(desired: DesiredState) -> list[str]:
    """Raise ConfigError for rules the kernel tools cannot express; return warnings."""
    warnings: list[str] = []
    if desired.chains:
        from vnetd.backends.nftdetect import backend_warnings
        from vnetd.backends.xtables import validate_rules

        warnings += validate_rules(desired.chains, existing_chains)
        warnings += backend_warnings()
    return warnings
