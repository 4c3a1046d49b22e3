# SPDX-License-Identifier: MIT
"""``vnetd import``: legacy files in, one state file out, checked as ``vnetd check`` would.

Inputs: ``ifcfg-*`` files (``interfaces:``, ``routes:``), an iptables-save file
(``firewall:``), an ip6tables-save file (``firewall6:``), a sysctl.conf (``sysctl:``).

The translators (``ifcfg``, ``iptables_save``, ``sysctl_conf``) turn their files
into drafts; ``build_document`` turns the drafts into a document with comments;
``emit`` writes it. The text is then loaded with the loader ``vnetd check`` uses
(and its rules compiled through python-iptables when that is installed): anything
the loader still refuses is traced back, by line, to the draft that wrote it,
which becomes a comment carrying the loader's message, and the document is
written again. So the output always loads, and nothing is dropped silently.

Exit status: 0 when a state file was written (untranslated things are comments
in it, counted on standard error), 1 when an input cannot be read or is not what
it claims to be, or the output file exists (it is never overwritten).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import time
from dataclasses import dataclass

from vnetd.errors import ConfigError, ConfigIssue
from vnetd.importer.emit import Blank, Comment, Emitted, Mapping, Node, emit
from vnetd.importer.ifcfg import IfcfgImport, InterfaceDraft, RouteDraft, translate_directory
from vnetd.importer.iptables_save import ChainDraft, IptablesImport, RuleDraft, read_iptables_save
from vnetd.importer.route_rules import RuleDraft as RouteRuleDraft
from vnetd.importer.sources import ImportProblem
from vnetd.importer.sysctl_conf import SysctlDraft, SysctlImport, read_sysctl_conf
from vnetd.model.state import DesiredState

#: what the loader's complaints can be traced back to (each has ``untranslated``)
DRAFTS = (InterfaceDraft, RouteDraft, RouteRuleDraft, SysctlDraft, ChainDraft, RuleDraft)
Draft = InterfaceDraft | RouteDraft | RouteRuleDraft | SysctlDraft | ChainDraft | RuleDraft

EXIT_OK = 0
EXIT_ERROR = 1
MAX_PASSES = 50
NOT_TRANSLATED = "not translated:"


@dataclass
class Imported:
    """What was read, by kind (any of them may be missing)."""

    ifcfg: IfcfgImport | None = None
    iptables: IptablesImport | None = None
    sysctl: SysctlImport | None = None
    ip6tables: IptablesImport | None = None


def read_inputs(ifcfg_dir: str | None, iptables: str | None, sysctl: str | None,
                ip6tables: str | None = None) -> Imported:
    return Imported(
        ifcfg=translate_directory(ifcfg_dir) if ifcfg_dir else None,
        iptables=read_iptables_save(iptables) if iptables else None,
        sysctl=read_sysctl_conf(sysctl) if sysctl else None,
        ip6tables=read_iptables_save(ip6tables, family=6) if ip6tables else None,
    )


def header(imported: Imported, stamp: str) -> Comment:
    lines = [f"vnetd state file written by `vnetd import` on {stamp} from:"]
    if imported.ifcfg is not None:
        lines.append(f"  ifcfg files:   {imported.ifcfg.directory} ({', '.join(imported.ifcfg.files)})")
    if imported.iptables is not None:
        lines.append(f"  iptables-save: {imported.iptables.path}")
    if imported.ip6tables is not None:
        lines.append(f"  ip6tables-save: {imported.ip6tables.path}")
    if imported.sysctl is not None:
        lines.append(f"  sysctl.conf:   {imported.sysctl.path}")
    lines += [
        f"What could not be translated is a comment starting with '{NOT_TRANSLATED}'.",
        "Review it, install it as /etc/vnetd.d/NN-NAME.yaml (owned by root, mode 0644),",
        "then run `vnetd check` and `vnetd plan` before `vnetd apply`.",
    ]
    return Comment("\n".join(lines), wrap=False)


def build_document(imported: Imported) -> Mapping:
    doc = Mapping()

    def section(key: str, value: Node) -> None:
        if doc.entries:
            doc.entries.append(Blank())
        doc.add(key, value)

    if imported.ifcfg is not None:
        section("interfaces", imported.ifcfg.build_interfaces())
        routes = imported.ifcfg.build_routes()
        if routes is not None:
            section("routes", routes)
        rules = imported.ifcfg.build_rules()
        if rules is not None:
            section("route-rules", rules)
    if imported.sysctl is not None:
        section("sysctl", imported.sysctl.build())
    if imported.iptables is not None:
        section("firewall", imported.iptables.build())
    if imported.ip6tables is not None:
        section("firewall6", imported.ip6tables.build())
    return doc


def check(text: str, compile_rules: bool = True) -> tuple[DesiredState | None, list[ConfigIssue]]:
    """Load ``text`` as `vnetd check` does: the loader, then libxtables and (as root) the
    kernel's own checks for the rules, on this machine."""
    from vnetd.desired.loader import SourceFile, load_sources

    try:
        desired = load_sources([SourceFile("<import>", text)])
    except ConfigError as exc:
        return None, list(exc.issues)
    if compile_rules and desired.chains:
        try:
            from vnetd.checks import check_state

            issues, _warnings = check_state(desired, environment=False)  # the rules, not this host's backend
        except (ImportError, OSError):  # no libxtables here: `vnetd check` will compile them
            return desired, []
        if issues:
            return None, issues
    return desired, []


def translate(imported: Imported, stamp: str, compile_rules: bool = True) -> tuple[str, DesiredState]:
    """The state file's text; every item the loader refuses becomes a comment with its message."""
    top = header(imported, stamp)
    for _ in range(MAX_PASSES):
        emitted: Emitted = emit(build_document(imported), top)
        desired, issues = check(emitted.text, compile_rules)
        if desired is not None and not issues:
            return emitted.text, desired
        refused: dict[int, tuple[Draft, list[str]]] = {}
        for issue in issues:
            ref = emitted.ref_at(issue.line) if issue.line else None
            if not isinstance(ref, DRAFTS) or (ref.untranslated is not None and id(ref) not in refused):
                if issue.line == 0 and refused:
                    continue  # "... and N more issues": they come back in the next pass
                raise ImportProblem("<import>", issue.line, f"internal error: the translation does not load "
                                    f"({issue}); please report it with the input files")
            what = f"{issue.path}: " if issue.path else ""
            refused.setdefault(id(ref), (ref, []))[1].append(what + issue.message.split(" (rule: ")[0])
            ref.untranslated = ""
        for ref, messages in refused.values():
            ref.untranslated = "vnetd check refuses it: " + "; ".join(messages)
    raise ImportProblem("<import>", 0, "internal error: the translation does not converge")


def _stamp() -> str:
    """The date in the header; SOURCE_DATE_EPOCH makes it reproducible."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    seconds = int(epoch) if epoch and epoch.isdigit() else time.time()
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def write_new_file(path: str, text: str) -> None:
    """Create ``path`` (mode 0644) atomically; never replace an existing file.

    The text goes to a hidden temporary file in the same directory (the loader
    ignores hidden files, so a daemon watching the directory never reads half a
    file), which is then hard-linked to ``path``: the link fails if ``path``
    exists, however late it appeared. Where hard links are not supported the file
    is created in place with O_EXCL instead.
    """
    if os.path.lexists(path):
        raise ImportProblem(path, 0, "exists already; vnetd import never overwrites a file "
                            "(remove it or choose another name)")
    data = text.encode()
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        _write_exclusive(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ImportProblem(path, 0, "exists already; vnetd import never overwrites a file") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            _write_exclusive(path, data)  # a file system without hard links
    except FileExistsError:
        raise ImportProblem(path, 0, "exists already; vnetd import never overwrites a file") from None
    except OSError as exc:
        raise ImportProblem(path, 0, f"cannot write: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write_exclusive(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, 0o644)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def summary(text: str, desired: DesiredState) -> str:
    untranslated = sum(1 for line in text.splitlines() if line.lstrip().startswith(f"# {NOT_TRANSLATED}"))
    rules = sum(len(c.all_rules) for c in desired.chains)
    return (f"{len(desired.interfaces)} interfaces, {len(desired.routes)} routes, {len(desired.route_rules)} "
            f"route rules, {len(desired.sysctls)} sysctls, {len(desired.chains)} chains with {rules} rules; "
            f"{untranslated} {'comments mark' if untranslated != 1 else 'comment marks'} what was not translated "
            f"(grep '{NOT_TRANSLATED}')")


def import_command(args: argparse.Namespace) -> int:
    ifcfg_dir = getattr(args, "ifcfg_dir", None)
    iptables = getattr(args, "iptables", None)
    ip6tables = getattr(args, "ip6tables", None)
    sysctl = getattr(args, "sysctl", None)
    output = getattr(args, "output", None)
    if not (ifcfg_dir or iptables or ip6tables or sysctl):
        print("vnetd import: nothing to import; give --ifcfg-dir DIR, --iptables FILE, --ip6tables FILE "
              "and/or --sysctl FILE", file=sys.stderr)
        return EXIT_ERROR
    try:
        if output not in (None, "-") and os.path.lexists(output):
            raise ImportProblem(output, 0, "exists already; vnetd import never overwrites a file "
                                "(remove it or choose another name)")
        imported = read_inputs(ifcfg_dir, iptables, sysctl, ip6tables)
        text, desired = translate(imported, _stamp())
        if output in (None, "-"):
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            write_new_file(output, text)
    except ImportProblem as exc:
        print(f"vnetd import: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `vnetd import ... | head`
        return EXIT_ERROR
    where = "standard output" if output in (None, "-") else output
    print(f"vnetd import: wrote {where}: {summary(text, desired)}", file=sys.stderr)
    return EXIT_OK
