# SPDX-License-Identifier: MIT
"""Checks of a loaded state against this machine (beyond what the loader can know).

* Every firewall rule is compiled through libxtables (python-iptables): a match or
  option it does not know is a ConfigError naming file, line and rule.
* Environment warnings: the host's iptables is the nft variant, nft holds rules in
  this namespace (a split firewall), another network manager may fight vnetd.
"""

from __future__ import annotations

from vnetd.model.state import DesiredState


def check_state(desired: DesiredState) -> list[str]:
    """Raise ConfigError for rules the kernel tools cannot express; return warnings."""
    warnings: list[str] = []
    if desired.chains:
        from vnetd.backends.xtables import validate_rules

        validate_rules(desired.chains)
        from vnetd.backends.nftdetect import backend_warnings

        warnings += backend_warnings()
    return warnings
