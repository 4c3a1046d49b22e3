# SPDX-License-Identifier: MIT
"""Checks of a loaded state against this machine (beyond what the loader can know).

* Every firewall rule is compiled through libxtables (python-iptables): a match or
  option it does not know is a ConfigError naming file, line and rule; so is a jump
  to a chain that is neither declared nor present in the kernel's table.
* sysctl keys against /proc/sys of this namespace: a write-only key (``net.ipv4.route.flush``:
  an action, not a state) or a directory is a ConfigError; a key that does not exist
  here (``net.ipv4.ip_fowrard``) is a warning, except under the per-interface
  directories of links the state creates, which exist only once they do (the same
  key under ``default`` is checked instead). Needs no root: only stat() and listdir().
* Environment warnings: the host's iptables is the nft variant, nft holds tables in
  this namespace (a split firewall).

Warnings are ``"EVENT: message"`` strings: ``vnetd check/plan/apply`` print them on
stderr, the daemon logs them (``config.warning``, or the ``firewall.*`` event).
"""

from __future__ import annotations

import difflib
import os
import stat

from vnetd.errors import ConfigError, ConfigIssue
from vnetd.model.interfaces import AdminState
from vnetd.model.state import DesiredState
from vnetd.model.sysctl import SysctlSpec

#: sysctl directories with one sub-directory per link (plus "all" and "default")
PER_LINK_DIRS = {("ipv4", "conf"), ("ipv6", "conf"), ("ipv4", "neigh"), ("ipv6", "neigh")}


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


def check_state(desired: DesiredState, environment: bool = True) -> list[str]:
    """Raise ConfigError for what this host cannot do (rules the kernel tools cannot
    express, write-only sysctls), with every issue; return warnings. ``environment``:
    include the firewall-backend warnings (the daemon reports those itself, once per
    change)."""
    issues: list[ConfigIssue] = []
    warnings: list[str] = []
    if desired.sysctls:
        sysctl_issues, sysctl_warnings = check_sysctls(desired.sysctls, links_created(desired))
        issues += sysctl_issues
        warnings += sysctl_warnings
    if desired.chains:
        from vnetd.backends.nftdetect import backend_warnings
        from vnetd.backends.xtables import validate_rules

        try:
            warnings += validate_rules(desired.chains, existing_chains)
        except ConfigError as exc:
            issues += exc.issues
        if environment and not issues:
            warnings += backend_warnings()
    if issues:
        raise ConfigError(issues)
    return warnings
