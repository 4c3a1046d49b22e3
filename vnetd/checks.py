# SPDX-License-Identifier: MIT
"""Checks of a loaded state against this machine (beyond what the loader can know).

``check`` must refuse every rule ``apply`` would fail on, in the same round as the
files' schema errors (one run of ``vnetd check`` lists every problem):

* every firewall rule is compiled as the iptables command compiles it (libxtables:
  mandatory and exclusive options, aliases, revisions; ``vnetd.backends.xtables``);
* a jump to a chain that is neither declared nor present in the kernel's table;
* what only the kernel checks (hooks, tables, protocols of a match), asked of the
  kernel in a throw-away namespace (``vnetd.backends.kernelcheck``; root only);
* environment warnings: the host's iptables is the nft variant, nft holds rules in
  this namespace (a split firewall); the kernel cannot create the bonds, VLANs or
  VXLANs declared (its module is missing: ``vnetd.backends.linkcheck``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vnetd.errors import ConfigError, ConfigIssue
from vnetd.model.interfaces import KERNEL_KIND, AdminState, IfType
from vnetd.model.state import DesiredState

if TYPE_CHECKING:
    from vnetd.backends.xtables import RuleCheck


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


def check_state(desired: DesiredState, *, kernel: bool = True) -> tuple[list[ConfigIssue], list[str]]:
    """Issues (rules iptables or the kernel would refuse) and warnings of a loaded state."""
    issues: list[ConfigIssue] = []
    warnings: list[str] = []
    if desired.chains:
        from vnetd.backends.nftdetect import backend_warnings
        from vnetd.backends.xtables import validate_rules

        checked = validate_rules(desired.chains, existing_chains)
        issues += checked.issues
        warnings += checked.warnings
        if kernel and checked.compiled:
            issues += _kernel_issues(desired, checked, warnings)
        warnings += backend_warnings()
    if kernel:
        warnings += link_kind_warnings(desired)
    return issues, warnings


def link_kind_warnings(desired: DesiredState) -> list[str]:
    """A warning for each declared kind of link this kernel cannot create (root only)."""
    wanted: dict[str, list[str]] = {}
    for iface in desired.interfaces:
        if iface.type in (IfType.BOND, IfType.VLAN, IfType.VXLAN) and iface.state is not AdminState.ABSENT:
            wanted.setdefault(KERNEL_KIND[iface.type], []).append(iface.name)
    if not wanted:
        return []
    from vnetd.backends.linkcheck import MODULES, missing_kinds

    missing = missing_kinds(wanted)
    if isinstance(missing, str):
        return [f"link.kinds_unchecked: {missing}"]
    return [f"link.kind_missing: this kernel cannot create {kind} links (module {MODULES[kind]} not available): "
            f"{', '.join(wanted[kind])} will fail to apply until it is" for kind in sorted(missing)]


def _kernel_issues(desired: DesiredState, checked: RuleCheck, warnings: list[str]) -> list[ConfigIssue]:
    from vnetd.backends.kernelcheck import kernel_refusals
    from vnetd.backends.xtables import rule_issue

    refusals = kernel_refusals(desired.chains, checked.compiled, checked.foreign_chains)
    if isinstance(refusals, str):
        warnings.append(refusals)
        return []
    chains = {(c.table, c.name): c for c in desired.chains}
    out = []
    for refusal in refusals:
        chain = chains[(refusal.table, refusal.chain)]
        out.append(rule_issue(chain, refusal.index, chain.all_rules[refusal.index], refusal.reason))
    return out


def finish(desired: DesiredState, issues: list[ConfigIssue], *, kernel: bool = True) -> list[str]:
    """Run the machine checks on a partially loaded state and raise one ConfigError with
    the loader's issues and the checks' together; returns the warnings."""
    more, warnings = check_state(desired, kernel=kernel)
    everything = issues + more
    if everything:
        raise ConfigError(sorted(everything, key=lambda i: (i.file, i.line)))
    return warnings


def load_checked(state_dir: str, *, kernel: bool = True) -> tuple[DesiredState, list[str]]:
    """Load a state directory and check it against this machine: the state and its
    warnings, or one ConfigError listing every problem of both."""
    from vnetd.desired.loader import load_state_dir_partial

    desired, issues = load_state_dir_partial(state_dir)
    return desired, finish(desired, issues, kernel=kernel)
