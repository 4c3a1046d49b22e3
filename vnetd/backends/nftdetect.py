# SPDX-License-Identifier: MIT
"""Which firewall backend the host uses, so vnetd never splits a firewall silently.

python-iptables (libiptc) reads and writes the *legacy* iptables tables. Two things
make that a trap on modern hosts, and both are reported in ``check``, ``plan`` and
the daemon's log (``firewall.backend_mismatch``):

* the host's ``iptables`` command is the nft variant (Debian/Ubuntu default since
  Buster/20.04): ``iptables -S`` then shows nf_tables, not vnetd's rules (the same
  for ``ip6tables`` and the ``firewall6:`` chains);
* nf_tables already holds tables in this namespace (modern libvirt, firewalld,
  docker, nftables.service): packets traverse both, and a drop in either wins.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackendReport:
    iptables_variant: str | None  # "nft", "legacy" or None (no iptables command)
    nft_tables: tuple[str, ...]  # "family name" of nf_tables tables in this namespace
    ip6tables_variant: str | None = None  # the same for ip6tables


def iptables_variant(command: str = "iptables") -> str | None:
    path = shutil.which(command, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        return None
    target = os.path.basename(os.path.realpath(path))
    if "nft" in target:
        return "nft"
    if "legacy" in target:
        return "legacy"
    return None


def nft_tables() -> tuple[str, ...]:
    """nf_tables tables in the current network namespace (read over netlink)."""
    families = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
    try:
        from pyroute2.nftables.main import NFTables

        nft = NFTables()
        try:
            tables = list(nft.get_tables())
        finally:
            nft.close()
    except OSError:
        return ()
    out = []
    for t in tables:
        family = families.get(t.get("nfgen_family"), str(t.get("nfgen_family")))
        out.append(f"{family} {t.get('NFTA_TABLE_NAME')}")
    return tuple(sorted(out))


def report() -> BackendReport:
    return BackendReport(iptables_variant(), nft_tables(), iptables_variant("ip6tables"))


def backend_warnings(rep: BackendReport | None = None, families: Iterable[int] = (4,)) -> list[str]:
    """``families``: those the state declares chains of (4: firewall:, 6: firewall6:)."""
    rep = rep or report()
    warnings = []
    declared = set(families)
    if rep.iptables_variant == "nft" and 4 in declared:
        warnings.append(
            "firewall.backend_mismatch: this host's `iptables` is the nft variant; vnetd writes the legacy "
            "tables (python-iptables/libiptc), which `iptables -S` does not show. Read them with "
            "`iptables-legacy -S`, or make legacy the default: "
            "update-alternatives --set iptables /usr/sbin/iptables-legacy (see docs/OPERATIONS.md)")
    if rep.ip6tables_variant == "nft" and 6 in declared:
        warnings.append(
            "firewall.backend_mismatch: this host's `ip6tables` is the nft variant; vnetd writes the legacy "
            "IPv6 tables (libip6tc), which `ip6tables -S` does not show. Read them with "
            "`ip6tables-legacy -S`, or make legacy the default: "
            "update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy (see docs/OPERATIONS.md)")
    if rep.nft_tables:
        warnings.append(
            "firewall.backend_mismatch: nf_tables holds rules in this network namespace ("
            + ", ".join(rep.nft_tables) + "); packets traverse both nf_tables and vnetd's legacy tables, "
            "and a drop in either wins. Move those rules to vnetd's state files, or run their owner "
            "(libvirt, firewalld, docker) with its iptables-legacy backend (see docs/OPERATIONS.md)")
    return warnings
