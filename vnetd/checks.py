# SPDX-License-Identifier: MIT
"""Checks of a loaded state against this machine (beyond what the loader can know).

``check`` must refuse every rule ``apply`` would fail on, in the same round as the
files' schema errors (one run of ``vnetd check`` lists every problem):

* every firewall rule is compiled as the iptables command (ip6tables for
  ``firewall6:``) compiles it (libxtables: mandatory and exclusive options,
  aliases, revisions; ``vnetd.backends.xtables``);
* a jump to a chain that is neither declared nor present in the kernel's table;
* what only the kernel checks (hooks, tables, protocols of a match), asked of the
  kernel in a throw-away namespace (``vnetd.backends.kernelcheck``; root only);
* sysctl keys against /proc/sys of this namespace: a write-only key (``net.ipv4.route.flush``:
  an action, not a state) or a directory is a ConfigError; a key that does not exist
  here (``net.ipv4.ip_fowrard``) is a warning, except under the per-interface
  directories of links the state creates, which exist only once they do (the same
  key under ``default`` is checked instead). Needs no root: only stat() and listdir().
* the firewall backend (``firewall.backend``) writes every family declared
  (``firewall6:`` needs a backend that writes IPv6), and ``auto`` has one answer
  here (``vnetd.firewall_checks``);
* environment warnings: the host's iptables is another variant than the backend
  vnetd writes, nf_tables holds other tables in this namespace (a split firewall);
  another base chain on a hook where vnetd's rules accept drops what they let
  through (``firewall.shadowed``: ``vnetd.backends.shadowing``); the kernel cannot
  create the bonds, VLANs or VXLANs declared (its module is missing:
  ``vnetd.backends.linkcheck``); a health probe whose target the shipped systemd
  unit blocks (``IPAddressDeny=any``) and no ``IPAddressAllow=`` of an installed
  vnetd.service or drop-in allows.

Warnings are ``"EVENT: message"`` strings: ``vnetd check/plan/apply`` print them on
stderr, the daemon logs them (``config.warning``, or the ``firewall.*`` event).
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import os
import stat
from typing import TYPE_CHECKING

from vnetd.errors import ConfigError, ConfigIssue
from vnetd.model.health import ProbeKind
from vnetd.model.interfaces import KERNEL_KIND, AdminState, IfType
from vnetd.model.state import DesiredState
from vnetd.model.sysctl import SysctlSpec

if TYPE_CHECKING:
    from vnetd.backends.xtables import RuleCheck

#: sysctl directories with one sub-directory per link (plus "all" and "default")
PER_LINK_DIRS = {("ipv4", "conf"), ("ipv6", "conf"), ("ipv4", "neigh"), ("ipv6", "neigh")}

def existing_chains(table: str, family: int = 4) -> set[str] | None:
    """The chains of a table (of ``family``: 4 iptables, 6 ip6tables) as the kernel has
    them; None when they cannot be read."""
    from vnetd.backends.iptables import LEGACY, RawTables, loaded_tables, walk_table
    from vnetd.errors import BackendError

    try:
        if table not in loaded_tables(family):
            return set()  # not instantiated: only its built-in chains would exist
    except PermissionError:
        return None  # not root: /proc/net/ip_tables_names is root's
    try:
        raw = RawTables(family)
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
    return {entry.chain for entry in walk_table(*got, LEGACY[family].layout)}


def links_created(desired: DesiredState) -> set[str]:
    """Links the state may create (their sysctl directories appear with them)."""
    names = {i.name for i in desired.interfaces if i.state is not AdminState.ABSENT}
    names |= {i.veth_peer for i in desired.interfaces if i.veth_peer and i.state is not AdminState.ABSENT}
    return names


def _as_template(key: str, created: set[str]) -> str | None:
    """``net.ipv4.conf.br9.forwarding`` -> the same key of a link directory that exists
    (``default``; ``lo`` where a namespace has no ``default``, as ipv4/neigh outside the
    initial one) when br9 is a link the state creates; None for any other key."""
    from vnetd.desired.sysctl import canonical_key, split_key

    parts = split_key(key) or []
    if not (len(parts) >= 5 and (parts[1], parts[2]) in PER_LINK_DIRS and parts[3] in created):
        return None
    for template in ("default", "lo"):
        if os.path.isdir(os.path.join("/proc/sys", *parts[:3], template)):
            return canonical_key("/".join([*parts[:3], template, *parts[4:]]))
    return None


def _did_you_mean(path: str, link: str | None) -> str:
    """A sibling of a missing key that is spelled alike (``ip_fowrard``: ``ip_forward``)."""
    from vnetd.desired.sysctl import canonical_key

    parent, leaf = os.path.split(path)
    try:
        siblings = os.listdir(parent)
    except OSError:
        return ""
    close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.75)
    if not close:
        return ""
    parts = os.path.relpath(os.path.join(parent, close[0]), "/proc/sys").split("/")
    if link is not None:
        parts[3] = link  # the key was probed under "default" or "lo" for a link not created yet
    return f"did you mean {canonical_key('/'.join(parts))}?"


def check_sysctls(sysctls: tuple[SysctlSpec, ...], created: set[str]) -> tuple[list[ConfigIssue], list[str]]:
    """Issues for keys that cannot hold a value; warnings for keys missing on this host."""
    from vnetd.backends.sysctl import key_path
    from vnetd.desired.sysctl import split_key
    from vnetd.model.sysctl import missing_hint

    issues: list[ConfigIssue] = []
    warnings: list[str] = []
    for spec in sysctls:
        file, line = (spec.origin.file, spec.origin.line) if spec.origin else ("?", 0)
        field = f"sysctl[{spec.key}]"
        path = key_path(spec.key)
        probe = None if os.path.lexists(path) else _as_template(spec.key, created)
        if probe is not None:
            path = key_path(probe)
        try:
            st = os.stat(path)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                link = (split_key(spec.key) or [""] * 4)[3] if probe else None
                suggestion = _did_you_mean(path, link)
                why = f"{path} does not exist; {suggestion}" if suggestion else f"{path} {missing_hint(spec.key)}"
            else:
                why = f"cannot look at {path}: {exc.strerror}"
            warnings.append(f"sysctl.unknown_key: {file}:{line}: {field}: no such key on this host: {why}")
            continue
        if stat.S_ISDIR(st.st_mode):
            issues.append(ConfigIssue(file, line, field, f"{spec.key} is a directory of settings, not a setting "
                                      "(valid: one of the keys `sysctl -a` lists)"))
        elif not st.st_mode & (stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH):
            issues.append(ConfigIssue(file, line, field,
                                      f"{spec.key} is write-only (mode {stat.S_IMODE(st.st_mode):04o}): writing it "
                                      "is an action (a flush), not a state vnetd can read back and keep; remove "
                                      "it (valid: keys the kernel lets you read, as `sysctl -a` lists them)"))
    return issues, warnings


def check_state(desired: DesiredState, *, kernel: bool = True, environment: bool = True
                ) -> tuple[list[ConfigIssue], list[str]]:
    """Issues (rules iptables or the kernel would refuse, sysctls that cannot hold a value)
    and warnings of a loaded state. ``environment``: include the firewall-backend warnings
    (the daemon reports those itself, once per change)."""
    issues: list[ConfigIssue] = []
    warnings: list[str] = []
    if desired.sysctls:
        sysctl_issues, sysctl_warnings = check_sysctls(desired.sysctls, links_created(desired))
        issues += sysctl_issues
        warnings += sysctl_warnings
    if desired.chains:
        from vnetd.backends.nftdetect import backend_warnings
        from vnetd.backends.shadowing import shadow_warnings
        from vnetd.backends.xtables import validate_rules
        from vnetd.firewall_checks import backend_checked

        backend_issues, selection, reader = backend_checked(desired, environment, existing_chains)
        issues += backend_issues
        checked = validate_rules(desired.chains, reader)
        issues += checked.issues
        warnings += checked.warnings
        refused = _kernel_issues(desired, checked, warnings) if kernel and checked.compiled else []
        issues += refused
        if selection is not None:
            # what the kernel refused is said once, in the kernel's words
            said = {(i.file, i.line, i.path) for i in refused}
            issues += [i for i in _unwritable(desired, checked, selection.name)
                       if (i.file, i.line, i.path) not in said]
        if selection is not None and not issues:
            warnings += backend_warnings(families={c.family for c in desired.chains}, backend=selection.name)
            warnings += shadow_warnings(desired, selection.name)  # others' chains that drop what vnetd accepts
    if kernel:
        warnings += link_kind_warnings(desired)
    warnings += probe_unit_warnings(desired)
    return issues, warnings


#: where systemd looks for an administrator's vnetd.service and its drop-ins
SYSTEMD_DIRS = tuple(os.environ.get("VNETD_SYSTEMD_UNIT_DIRS", "/etc/systemd/system:/run/systemd/system").split(":"))
_NAMED_ADDRESSES = {
    "any": ("0.0.0.0/0", "::/0"),
    "localhost": ("127.0.0.0/8", "::1/128"),
    "link-local": ("169.254.0.0/16", "fe80::/64"),
    "multicast": ("224.0.0.0/4", "ff00::/8"),
}


def unit_allowed_addresses(dirs: tuple[str, ...] = SYSTEMD_DIRS) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``IPAddressAllow=`` of the shipped unit (localhost) plus what the administrator's
    vnetd.service and its drop-ins (``systemctl edit vnetd``) add; an empty assignment resets."""
    allowed = [ipaddress.ip_network(n) for n in _NAMED_ADDRESSES["localhost"]]
    files = []
    for directory in dirs:
        files.append(os.path.join(directory, "vnetd.service"))
        dropins = os.path.join(directory, "vnetd.service.d")
        with contextlib.suppress(OSError):
            files += [os.path.join(dropins, n) for n in sorted(os.listdir(dropins)) if n.endswith(".conf")]
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read(1 << 20).splitlines()
        except OSError:
            continue
        for line in lines:
            key, sep, value = line.strip().partition("=")
            if not sep or key.strip() != "IPAddressAllow":
                continue
            if not value.strip():
                allowed = []
            for token in value.split():
                for name in _NAMED_ADDRESSES.get(token, (token,)):
                    with contextlib.suppress(ValueError):
                        allowed.append(ipaddress.ip_network(name, strict=False))
    return allowed


def probe_unit_warnings(desired: DesiredState, dirs: tuple[str, ...] = SYSTEMD_DIRS) -> list[str]:
    """A warning for each ICMP/TCP probe that the systemd unit as shipped blocks
    (``IPAddressDeny=any``, loopback allowed) unless a drop-in allows its target."""
    targets = [p for p in desired.probes if p.kind in (ProbeKind.ICMP, ProbeKind.TCP) and p.address is not None]
    if not targets:
        return []
    allowed = unit_allowed_addresses(dirs)
    out = []
    for probe in targets:
        address = probe.address
        assert address is not None
        if any(address.version == net.version and address in net for net in allowed):
            continue
        out.append(f"probe.blocked_by_unit: probe {probe.name} ({probe.describe()}) cannot work under the shipped "
                   f"systemd unit, which allows IP traffic to loopback only (IPAddressDeny=any): allow its target "
                   f"in a drop-in (`systemctl edit vnetd`: [Service] IPAddressAllow={address}); blocked, it fails "
                   "before and after every change and protects nothing")
    return out


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


def _unwritable(desired: DesiredState, checked: RuleCheck, backend: str) -> list[ConfigIssue]:
    """Rules that compile but that the backend in use cannot write (``apply`` would fail)."""
    from vnetd.backends.firewall import write_check
    from vnetd.backends.xtables import rule_issue

    cannot_write = write_check(backend)
    if cannot_write is None:
        return []
    chains = {(c.table_key, c.name): c for c in desired.chains}
    out = []
    for (table, name, index), compiled in checked.compiled.items():
        reason = cannot_write(compiled)
        if reason is not None:
            chain = chains[(table, name)]
            out.append(rule_issue(chain, index, chain.all_rules[index], f"the {backend} backend cannot write it: "
                                  f"{reason}"))
    return out


def _kernel_issues(desired: DesiredState, checked: RuleCheck, warnings: list[str]) -> list[ConfigIssue]:
    from vnetd.backends.kernelcheck import kernel_refusals, namespace_refusals, namespace_unasked
    from vnetd.backends.xtables import rule_issue

    refusals = kernel_refusals(desired.chains, checked.compiled, checked.foreign_chains)
    if isinstance(refusals, str):
        warnings.append(refusals)
        refusals = []
    unasked = namespace_unasked(checked.compiled)
    if unasked:
        warnings.append(f"firewall6: {len(unasked)} rule(s) naming ipsets, nfacct objects or rate estimators "
                        "are checked by the kernel when written, not before")
    here = namespace_refusals(desired.chains, checked.compiled)
    if isinstance(here, str):
        warnings.append(here)
    else:
        seen = {(r.table, r.chain, r.index) for r in refusals}
        refusals += [r for r in here if (r.table, r.chain, r.index) not in seen]
    chains = {(c.table_key, c.name): c for c in desired.chains}
    out = []
    for refusal in refusals:
        chain = chains[(refusal.table, refusal.chain)]
        out.append(rule_issue(chain, refusal.index, chain.all_rules[refusal.index], refusal.reason))
    return out


def finish(desired: DesiredState, issues: list[ConfigIssue], *, kernel: bool = True,
           environment: bool = True) -> list[str]:
    """Run the machine checks on a partially loaded state and raise one ConfigError with
    the loader's issues and the checks' together; returns the warnings."""
    more, warnings = check_state(desired, kernel=kernel, environment=environment)
    everything = issues + more
    if everything:
        raise ConfigError(sorted(everything, key=lambda i: (i.file, i.line)))
    return warnings


def load_checked(state_dir: str, *, kernel: bool = True, environment: bool = True
                 ) -> tuple[DesiredState, list[str]]:
    """Load a state directory and check it against this machine: the state and its
    warnings, or one ConfigError listing every problem of both."""
    from vnetd.desired.loader import load_state_dir_partial

    desired, issues = load_state_dir_partial(state_dir)
    return desired, finish(desired, issues, kernel=kernel, environment=environment)
