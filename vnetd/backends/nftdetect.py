# SPDX-License-Identifier: MIT
"""Which firewall backend the host uses, so vnetd never splits a firewall silently.

vnetd writes one backend's tables (``firewall.backend``: the legacy tables through
libiptc, or the nf_tables tables iptables-nft uses). Two things make a split
firewall, and both are reported by ``check``, ``plan`` and ``apply`` (one line,
once per command) and in the daemon's log (``firewall.backend_mismatch``, once per
change; docs/OPERATIONS.md has the detail):

* the host's ``iptables`` command is another variant than the backend's (the nft
  variant is the Debian/Ubuntu default since Buster/20.04): ``iptables -S`` then
  shows other tables than vnetd's rules (the same for ``ip6tables`` and the
  ``firewall6:`` chains); when vnetd writes nf_tables itself there is no such
  mismatch;
* nf_tables holds tables in this namespace, of any family (firewalld's ``inet
  firewalld``, a distribution's ``inet filter``, libvirt's and docker's ``ip``
  tables, ``ip6``, ``bridge``, ``netdev``, ``arp``) other than those vnetd writes
  (``own_nft_tables``): packets traverse both, and a drop in either wins.

The tables are listed with one ``NFT_MSG_GETTABLE`` dump for every family
(``NFPROTO_UNSPEC``) on a netlink socket of the current network namespace: a few
tens of microseconds, so the daemon repeats it on its periodic check and notices a
firewall started under it without a reload. Listing needs CAP_NET_ADMIN; without it
(``check`` as a user) nothing is reported.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vnetd.model.firewall import FIREWALL_BACKENDS

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE = 0, 1
NFTA_TABLE_NAME = 1
NFPROTO_UNSPEC = 0
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
NLMSG_ERROR, NLMSG_DONE = 2, 3
FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("=BBH")
_NLATTR = struct.Struct("=HH")
#: how many table names the one-line warning shows before "and N more"
SHOWN_TABLES = 6
DOCS = "docs/OPERATIONS.md"


LEGACY_BACKEND = "iptables-legacy"
#: the nf_tables tables the iptables-nft (ip6tables-nft) commands use, per address family
IPTABLES_NFT_TABLES = {4: tuple(f"ip {t}" for t in ("filter", "nat", "mangle", "raw", "security")),
                       6: tuple(f"ip6 {t}" for t in ("filter", "nat", "mangle", "raw", "security"))}


def own_nft_tables(backend: str) -> frozenset[str]:
    """The nf_tables tables (as "family name") the backend ``backend`` writes into:
    not another firewall, though other tools' rules may share them."""
    entry = FIREWALL_BACKENDS.get(backend)
    if entry is None or entry.variant != "nft":
        return frozenset()
    return frozenset(t for family in entry.families for t in IPTABLES_NFT_TABLES[family])


@dataclass(frozen=True, slots=True)
class BackendReport:
    iptables_variant: str | None  # "nft", "legacy" or None (no iptables command)
    nft_tables: tuple[str, ...]  # "family name" of every nf_tables table here but those the backend writes
    ip6tables_variant: str | None = None  # the same for ip6tables
    backend: str = LEGACY_BACKEND  # the backend vnetd writes (model.firewall.FIREWALL_BACKENDS)

    def mismatch(self, families: Iterable[int] = (4,)) -> bool:
        """Another firewall beside vnetd's tables of ``families`` (4: firewall:, 6: firewall6:)."""
        return bool(self.nft_tables) or bool(self.other_commands(families))

    def other_commands(self, families: Iterable[int] = (4,)) -> list[tuple[str, str]]:
        """(command, its variant) of the host's iptables commands, of the families declared,
        that show other tables than the backend's."""
        entry = FIREWALL_BACKENDS.get(self.backend)
        mine = entry.variant if entry is not None else "legacy"
        variants = {4: ("iptables", self.iptables_variant), 6: ("ip6tables", self.ip6tables_variant)}
        return [(variants[f][0], str(variants[f][1])) for f in sorted(set(families))
                if variants[f][1] is not None and variants[f][1] != mine]

    def nft_commands(self, families: Iterable[int] = (4,)) -> list[str]:
        """The host's iptables commands that are the nft variant while vnetd writes another."""
        return [command for command, variant in self.other_commands(families) if variant == "nft"]


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


def _parse_tables(data: bytes, seq: int, found: list[str]) -> bool | None:
    """Add the tables of one read; True at the end of the dump, None if it was interrupted."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, mtype, flags, msg_seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return True  # malformed: stop rather than loop
        body = offset + _NLMSGHDR.size
        end = offset + length
        offset += (length + 3) & ~3
        if msg_seq != seq:
            continue
        if flags & NLM_F_DUMP_INTR:
            return None
        if mtype == NLMSG_DONE:
            return True
        if mtype == NLMSG_ERROR:
            code = -struct.unpack_from("=i", data, body)[0]
            raise OSError(code, os.strerror(code))
        if mtype != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE:
            continue
        family = _NFGENMSG.unpack_from(data, body)[0]
        attr = body + _NFGENMSG.size
        while attr + _NLATTR.size <= end:
            alen, atype = _NLATTR.unpack_from(data, attr)
            if alen < _NLATTR.size:
                break
            if atype & 0x3FFF == NFTA_TABLE_NAME:
                name = data[attr + _NLATTR.size : attr + alen].split(b"\0", 1)[0].decode("utf-8", "replace")
                found.append(f"{FAMILIES.get(family, str(family))} {name}")
            attr += (alen + 3) & ~3
    return False


def nft_tables() -> tuple[str, ...] | None:
    """Every nf_tables table of this network namespace, as "family name", sorted;
    None when they cannot be listed (no CAP_NET_ADMIN, no nf_tables)."""
    for seq in range(1, 4):  # a dump interrupted by a concurrent change is redone
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        except OSError:
            return None
        try:
            sock.settimeout(2.0)
            request = _NFGENMSG.pack(NFPROTO_UNSPEC, 0, 0)
            header = _NLMSGHDR.pack(_NLMSGHDR.size + len(request), (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
                                    NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
            sock.send(header + request)
            found: list[str] = []
            while True:
                done = _parse_tables(sock.recv(1 << 16), seq, found)
                if done is None:
                    break
                if done:
                    return tuple(sorted(found))
        except OSError:  # EPERM without CAP_NET_ADMIN, no nf_tables, a timeout: not known
            return None
        finally:
            sock.close()
    return None


def report(backend: str = LEGACY_BACKEND) -> BackendReport:
    """What is beside the tables ``backend`` writes."""
    own = own_nft_tables(backend)
    tables = tuple(t for t in nft_tables() or () if t not in own)
    return BackendReport(iptables_variant(), tables, iptables_variant("ip6tables"), backend)


def _written(backend: str) -> str:
    """What vnetd writes, in a few words."""
    entry = FIREWALL_BACKENDS.get(backend)
    return "the iptables-nft tables" if entry is not None and entry.variant == "nft" else "the legacy tables"


def mismatch_line(rep: BackendReport, families: Iterable[int] = (4,)) -> str | None:
    """The warning, in one short line; None when vnetd's tables (of ``families``) are
    the only firewall."""
    if not rep.mismatch(families):
        return None
    parts = []
    if rep.nft_tables:
        shown = ", ".join(rep.nft_tables[:SHOWN_TABLES])
        more = len(rep.nft_tables) - SHOWN_TABLES
        parts.append(f"nf_tables has {shown}{f' and {more} more' if more > 0 else ''} here")
    for command, variant in rep.other_commands(families):
        parts.append(f"`{command}` is {command}-{variant}")
    return f"{' and '.join(parts)}; vnetd writes {_written(rep.backend)} and packets pass both (see {DOCS})"


def backend_warnings(rep: BackendReport | None = None, families: Iterable[int] = (4,),
                     backend: str = LEGACY_BACKEND) -> list[str]:
    """``families``: those the state declares chains of (4: firewall:, 6: firewall6:);
    ``backend``: the one vnetd writes."""
    line = mismatch_line(rep or report(backend), families)
    return [] if line is None else [f"firewall.backend_mismatch: {line}"]


class BackendWatch:
    """The daemon's periodic look at the other firewalls of its namespace: logs
    ``firewall.backend_mismatch`` once per change (a table added or removed, the
    iptables command switched) and ``firewall.backend_clear`` when none is left.
    Nothing is logged while the state declares no firewall (vnetd then writes none)."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.last: BackendReport | None = None

    def check(self, families: Iterable[int], backend: str = LEGACY_BACKEND) -> BackendReport | None:
        """Look again (``families``: those the state declares chains of; none, no look;
        ``backend``: the one vnetd writes); returns the report when it changed (and was logged)."""
        families = frozenset(families)
        if not families:
            self.last = None
            return None
        rep = report(backend)
        previous, self.last = self.last, rep
        if rep == previous or (previous is None and not rep.mismatch(families)):
            return None
        before = set(previous.nft_tables) if previous else set()
        fields: dict[str, object] = {
            "nft_tables": list(rep.nft_tables), "iptables_variant": rep.iptables_variant,
            "ip6tables_variant": rep.ip6tables_variant,
            "added": sorted(set(rep.nft_tables) - before), "removed": sorted(before - set(rep.nft_tables)),
        }
        line = mismatch_line(rep, families)
        if line is None:
            self.log.info("firewall.backend_clear", message=f"vnetd's tables ({_written(backend)}) are the only "
                          "firewall here again", **fields)
        else:
            self.log.warning("firewall.backend_mismatch", message=line, **fields)
        return rep
