# SPDX-License-Identifier: MIT
"""Drop-in directory -> ``DesiredState``; every problem of every file in one ConfigError.

Order of work: refuse an insecure directory or file (whoever can write it owns the
host's firewall), read the ``*.yaml``/``*.yml`` files in lexical order (editor and
package-manager leftovers are skipped), parse each into model values with FILE:LINE
issues, then merge: the same interface, chain, sysctl key, route or libvirt network
defined twice is an error naming both places.

Work is bounded whatever the input (SPEC section 5): a file is at most
``MAX_FILE_BYTES``; a YAML document at most ``MAX_NODES`` nodes, aliases counted as
the nodes they stand for (an "alias bomb" of 200,000 references to one interface
is refused at once, with its line, instead of being parsed 200,000 times); all
files together at most ``MAX_NODES_PER_RUN``; and at most ``MAX_ISSUES_PER_RUN``
issues are listed (then one line says how many more there were).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import yaml

from vnetd.desired.firewall import merge_backend, merge_chains, parse_firewall
from vnetd.desired.health import parse_health
from vnetd.desired.interfaces import cross_check, parse_interfaces
from vnetd.desired.libvirt import parse_libvirt
from vnetd.desired.nodes import MAX_ISSUES_PER_FILE, FileContext, MapView, as_map
from vnetd.desired.route_rules import check_route_rules, parse_route_rules
from vnetd.desired.routes import parse_routes
from vnetd.desired.schema import TOP
from vnetd.desired.settings import parse_daemon
from vnetd.desired.sysctl import parse_sysctl
from vnetd.desired.yamlerrors import syntax_error
from vnetd.errors import ConfigError, ConfigIssue
from vnetd.model.common import Origin
from vnetd.model.firewall import ChainSpec
from vnetd.model.health import ProbeSpec
from vnetd.model.interfaces import AdminState, Interface
from vnetd.model.libvirt import LibvirtSpec, NetworkSpec
from vnetd.model.route_rules import RouteRuleSpec
from vnetd.model.routes import MAIN_TABLE, RouteSpec
from vnetd.model.settings import DaemonSettings
from vnetd.model.state import DesiredState
from vnetd.model.sysctl import SysctlSpec
from vnetd.safefiles import insecure_ancestor

DEFAULT_STATE_DIR = "/etc/vnetd.d"
STATE_SUFFIXES = (".yaml", ".yml")
#: Leftovers of editors and package managers; never read even if they end in .yaml.
IGNORED_SUFFIXES = ("~", ".swp", ".swo", ".tmp", ".rpmnew", ".rpmsave", ".rpmorig", ".bak", ".orig")
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_FILES = 1000
#: YAML nodes in one document, aliases expanded (2,500 bridged interfaces: ~230,000)
MAX_NODES = 500_000
#: YAML nodes in all files of one load
MAX_NODES_PER_RUN = 2_000_000
#: issues listed per load (check, plan, apply, the daemon's config.invalid), and per merged-state check
MAX_ISSUES_PER_RUN = 300
MAX_ISSUES_PER_CHECK = 50

SECTIONS = TOP.keys

try:  # libyaml: 20x faster, and it limits nesting depth itself
    _Base: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Base = yaml.SafeLoader

_SCALAR_TAGS: dict[tuple[str, bool, bool], str] = {}


class _TooManyNodes(Exception):
    """The node budget of a document ran out while composing it."""


class _Loader(_Base):  # type: ignore[misc]
    """libyaml's parser with a memo on PyYAML's (Python) tag resolver: state files
    repeat the same scalars thousands of times ("up", "linux-bridge", "9000"), and
    resolving a plain scalar's implicit tag is a loop of regular expressions.

    The resolver is also where nodes are counted: libyaml's composer calls it for
    every node without an explicit tag, so a document over its budget stops being
    composed (and using memory) at once. Explicitly tagged nodes are not resolved:
    each needs a ``!`` in the text, so every ``!`` is charged up front.
    """

    budget = MAX_NODES

    def resolve(self, kind: type, value: str, implicit: tuple[bool, bool]) -> str:
        self.budget -= 1
        if self.budget < 0:
            raise _TooManyNodes
        if kind is not yaml.ScalarNode or len(value) > 64:
            return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]
        key = (value, implicit[0], implicit[1])
        tag = _SCALAR_TAGS.get(key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(_SCALAR_TAGS) < 100_000:
                _SCALAR_TAGS[key] = tag
        return tag


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One state file's name (as shown in errors) and text."""

    name: str
    text: str


def is_leftover(name: str) -> bool:
    """Hidden files and editor/package-manager leftovers (*~, *.swp, #*#, *.dpkg-*): never read, never reported."""
    if name.startswith((".", "#")) or name.endswith(("#",) + IGNORED_SUFFIXES):
        return True
    return ".dpkg-" in name or ".ucf-" in name


def is_state_file(name: str) -> bool:
    """Drop-in rule: *.yaml / *.yml, not hidden, not a leftover (*~, *.swp, #*#, *.dpkg-*)."""
    return not is_leftover(name) and name.endswith(STATE_SUFFIXES)


def unloaded_files(path: str) -> list[str]:
    """Files in the state directory that are not read and are not leftovers either
    (``10-br9.conf``, ``10-br8.YAML``): probably meant to be loaded, so worth a warning."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return []
    names = []
    for entry in entries:
        name = entry.name
        if is_leftover(name) or is_state_file(name):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                continue
        except OSError:
            continue
        names.append(name)
    return sorted(names)[:MAX_FILES]


def unloaded_warning(path: str, name: str) -> str:
    """The warning for one file of ``unloaded_files``."""
    hint = "state files end in .yaml or .yml (lower case)"
    if name.lower().endswith(STATE_SUFFIXES):
        hint = "the suffix must be lower case: .yaml or .yml"
    return f"{os.path.join(path, name)} is not loaded: {hint}"


def insecure(st: os.stat_result) -> str | None:
    """Why a state file or directory must not be trusted, or None.

    Owned by root, or by the user running vnetd (as sshd's StrictModes): the daemon
    runs as root, so for it that is root; a user running ``vnetd check`` on a copy of
    their own can change nothing with it."""
    problems = []
    euid = os.geteuid()
    if st.st_uid not in (0, euid):
        problems.append(f"owned by uid {st.st_uid}, not root" + (f" or you (uid {euid})" if euid else ""))
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problems.append(f"writable by {'group' if st.st_mode & stat.S_IWGRP else ''}"
                        f"{' and ' if st.st_mode & stat.S_IWGRP and st.st_mode & stat.S_IWOTH else ''}"
                        f"{'others' if st.st_mode & stat.S_IWOTH else ''} (mode {stat.S_IMODE(st.st_mode):04o})")
    return "; ".join(problems) or None


def read_state_dir(path: str, *, require_root: bool = True) -> tuple[list[SourceFile], list[ConfigIssue]]:
    """Read the drop-ins of ``path`` after the ownership checks of SPEC section 5."""
    issues: list[ConfigIssue] = []
    try:
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return [], [ConfigIssue(path, 0, "", "state directory does not exist")]
    except NotADirectoryError:
        return [], [ConfigIssue(path, 0, "", "is not a directory")]
    except OSError as exc:
        return [], [ConfigIssue(path, 0, "", f"cannot open state directory: {exc.strerror}")]
    try:
        st = os.fstat(dir_fd)
        problem = insecure(st) if require_root else None
        if problem:
            return [], [ConfigIssue(path, 0, "", f"refusing an insecure state directory: {problem}; "
                                    f"fix with: chown root:root {path} && chmod go-w {path}")]
        ancestor = insecure_ancestor(path) if require_root else None
        if ancestor:
            return [], [ConfigIssue(path, 0, "", f"refusing an insecure state directory: {ancestor}; every "
                                    "directory above it must be owned by root and not writable by group or "
                                    "others (sticky directories such as /tmp excepted), as sshd's StrictModes "
                                    "requires")]
        real_dir = os.path.realpath(path)
        names = sorted(n for n in os.listdir(dir_fd) if is_state_file(n))
        if len(names) > MAX_FILES:
            return [], [ConfigIssue(path, 0, "", f"{len(names)} state files; at most {MAX_FILES} are read")]
        files = []
        for name in names:
            source, issue = _read_one(dir_fd, path, real_dir, name, require_root)
            if issue is not None:
                issues.append(issue)
            elif source is not None:
                files.append(source)
        return files, issues
    finally:
        os.close(dir_fd)


def _read_one(
    dir_fd: int, path: str, real_dir: str, name: str, require_root: bool
) -> tuple[SourceFile | None, ConfigIssue | None]:
    shown = os.path.join(path, name)
    try:
        target = name
        resolved: str | None = None
        lst = os.lstat(name, dir_fd=dir_fd)
        if stat.S_ISLNK(lst.st_mode):
            resolved = os.path.realpath(os.path.join(real_dir, name))
            if os.path.dirname(resolved) != real_dir:
                return None, ConfigIssue(shown, 0, "", f"is a symlink to {resolved}, outside the state "
                                         "directory; refusing to follow it")
            target = os.path.basename(resolved)
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        if resolved is not None:  # a dangling symlink would otherwise drop its declarations silently
            return None, ConfigIssue(shown, 0, "", f"is a symlink to {resolved}, which does not exist")
        return None, None  # removed while we were reading: not an error, the watcher will see it
    except OSError as exc:
        return None, ConfigIssue(shown, 0, "", f"cannot open: {exc.strerror}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, ConfigIssue(shown, 0, "", "is not a regular file")
        problem = insecure(st) if require_root else None
        if problem:
            return None, ConfigIssue(shown, 0, "", f"refusing an insecure state file: {problem}; "
                                     f"fix with: chown root:root {shown} && chmod go-w {shown}")
        if st.st_size > MAX_FILE_BYTES:
            return None, ConfigIssue(shown, 0, "", f"is {st.st_size} bytes; state files are limited "
                                     f"to {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        chunks = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                return None, ConfigIssue(shown, 0, "", "grew beyond the size limit while being read")
            chunks.append(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if b"\0" in data:
        return None, ConfigIssue(shown, 0, "", "is binary (contains NUL bytes), not a YAML text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, ConfigIssue(shown, line, "", f"is not UTF-8 text (byte {exc.start})")
    return SourceFile(shown, text), None


# --------------------------------------------------------------------------- parsing


@dataclass
class _Parsed:
    interfaces: list[Interface]
    routes: list[RouteSpec]
    sysctls: list[SysctlSpec]
    chains: list[ChainSpec]
    libvirt: list[tuple[LibvirtSpec, bool]]
    probes: list[ProbeSpec] = field(default_factory=list)
    route_rules: list[RouteRuleSpec] = field(default_factory=list)
    backends: list[tuple[str, Origin]] = field(default_factory=list)  # firewall.backend, where given
    daemon: list[DaemonSettings] = field(default_factory=list)


def parse_file(source: SourceFile, budget: int = MAX_NODES) -> tuple[_Parsed, list[ConfigIssue], int]:
    """Parse one file; returns its items, its issues and how many YAML nodes it used
    (at most ``budget``; a document over it is refused with the line where it ran out)."""
    ctx = FileContext(source.name)
    parsed = _Parsed([], [], [], [], [])
    too_many = f"more than {budget:,} YAML nodes (the limit is reached here, aliases and tags counted); a state " \
               f"file may hold at most {MAX_NODES:,}, all files together {MAX_NODES_PER_RUN:,}: split it, or " \
               "declare less"
    # Explicitly tagged nodes are not resolved, and aliases make no node but cost the
    # composer work: each needs a "!" or a "*" in the text, so each of those is charged.
    marks = source.text.count("!") + source.text.count("*")
    if marks > budget:
        return parsed, [ConfigIssue(source.name, _line_of_mark(source.text, budget), "", too_many)], budget
    loader = _Loader(source.text)
    loader.budget = budget - marks
    try:
        root = loader.get_single_node()
    except _TooManyNodes:
        return parsed, [ConfigIssue(source.name, _line_of_node(source.text, budget), "", too_many)], budget
    except yaml.reader.ReaderError as exc:  # a control character: no mark, a position instead
        return parsed, [ConfigIssue(source.name, _reader_line(source.text, exc.position), "",
                                    f"YAML syntax error: character {_codepoint(exc.character)} "
                                    f"is not allowed in YAML text")], 0
    except yaml.MarkedYAMLError as exc:
        line, message = syntax_error(source.text, exc)
        return parsed, [ConfigIssue(source.name, line, "", message)], 0
    except yaml.YAMLError as exc:
        return parsed, [ConfigIssue(source.name, 0, "", f"YAML error: {exc}")], 0
    except RecursionError:
        return parsed, [ConfigIssue(source.name, 0, "", "YAML is nested too deeply")], 0
    finally:
        loader.dispose()
    used = budget - max(loader.budget, 0)
    tagged = _explicit_tags(source) if "!" in source.text else []
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == "tag:yaml.org,2002:null"):
        return parsed, tagged, used  # an empty file (only comments, a bare '---' or '~') declares nothing
    if "&" in source.text and "*" in source.text:  # anchors and aliases: count what they expand to
        expanded, issue = _expanded_size(root, budget, source.name)
        if issue is not None:
            return parsed, [issue], budget
        used = max(used, expanded)
    top = as_map(root, "", ctx, TOP, "a state file (top level)")
    if top is not None:
        _dispatch(top, ctx, parsed)
        del top
    _dismantle(root)
    return parsed, tagged + ctx.finish(), used


def _dismantle(root: yaml.Node) -> None:
    """Free a node tree one node at a time. Dropping the root of a 400,000-node tree
    frees it in one C call that holds the GIL for ~100 ms; this loop lets the
    daemon's main thread run between nodes while a worker thread loads (daemon/loading.py)."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append(key)
                stack.append(value)
            node.value = []
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
            node.value = []


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_size(root: yaml.Node, budget: int, file: str) -> tuple[int, ConfigIssue | None]:
    """How many nodes the document has with every alias replaced by what it refers to.

    Composed aliases are shared references: a node referenced k times counts k
    times. Computed once per distinct node (bottom-up, iteratively), so a
    billion-laughs document costs as little as its text; it stops at ``budget``.
    """
    size: dict[int, int] = {}
    refs: dict[int, int] = {}
    nodes: dict[int, yaml.Node] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        nid = id(node)
        if finished:
            on_path.discard(nid)
            total = 1 + sum(size[id(child)] for child in _children(node))
            if total > budget:
                culprit = max(refs, key=lambda i: refs[i])
                anchor = nodes[culprit].start_mark.line + 1
                return total, ConfigIssue(file, node.start_mark.line + 1, "", f"YAML aliases expand this to more "
                                          f"than {budget:,} nodes (the node at line {anchor} is referenced "
                                          f"{refs[culprit]:,} times); a state file may hold at most {MAX_NODES:,} "
                                          "nodes, aliases counted as what they stand for")
            size[nid] = total
            continue
        if nid in size:
            continue
        on_path.add(nid)
        stack.append((node, True))
        for child in _children(node):
            cid = id(child)
            if cid in on_path:
                return budget, ConfigIssue(file, child.start_mark.line + 1, "", "a YAML alias refers to a node "
                                           "that contains it (a recursive structure); state files cannot use it")
            refs[cid] = refs.get(cid, 0) + 1
            nodes[cid] = child
            if cid not in size:
                stack.append((child, False))
    return size[id(root)], None


def _line_of_mark(text: str, count: int) -> int:
    """The line of the ``count``-th "!" or "*" of the text."""
    for seen, match in enumerate(re.finditer(r"[!*]", text), start=1):
        if seen >= count:
            return text.count("\n", 0, match.start()) + 1
    return 0


def _line_of_node(text: str, count: int) -> int:
    """The line of the ``count``-th node of a document (only read when a budget ran out)."""
    loader = _Base(text)
    seen = 0
    line = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.NodeEvent) and not isinstance(event, yaml.AliasEvent):
                seen += 1
                line = event.start_mark.line + 1 if event.start_mark is not None else line
                if seen >= count:
                    break
    except yaml.YAMLError:
        pass
    finally:
        loader.dispose()
    return line


def _explicit_tags(source: SourceFile) -> list[ConfigIssue]:
    """Values with an explicit YAML tag. ``- ! -s 192.0.2.0/24 -j DROP`` is the dangerous
    one: YAML reads the leading '!' as a tag and drops it, so the rule would be applied
    inverted. State files have no use for tags (``!!str``, ``!foo``): all are refused."""
    issues = []
    for event in yaml.parse(source.text, Loader=_Loader):
        tag = getattr(event, "tag", None)
        if tag is None or not isinstance(event, yaml.NodeEvent):
            continue
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if tag == "!":
            message = ("quote the rule: YAML reads a leading '!' as a tag and drops it "
                       "(write '- \"! -s 192.0.2.0/24 -j DROP\"')")
        else:
            message = f"explicit YAML tags ({tag}) are not allowed in state files; write the plain value, quoted"
        issues.append(ConfigIssue(source.name, line, "", message))
        if len(issues) >= MAX_ISSUES_PER_FILE:
            break
    return issues


def _reader_line(text: str, position: int) -> int:
    """libyaml counts the position in bytes of the UTF-8 text, PyYAML in characters."""
    if _Base is yaml.SafeLoader:
        return text[:position].count("\n") + 1
    return text.encode()[:position].count(b"\n") + 1


def _codepoint(character: object) -> str:
    return f"U+{character:04X}" if isinstance(character, int) else repr(character)


def _dispatch(top: MapView, ctx: FileContext, parsed: _Parsed) -> None:
    for key in top.keys():
        node = top.value_node(key)
        assert node is not None
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            continue  # "interfaces:" with nothing under it
        if key == "interfaces":
            parsed.interfaces += parse_interfaces(node, ctx)
        elif key == "routes":
            parsed.routes += parse_routes(node, ctx)
        elif key == "route-rules":
            parsed.route_rules += parse_route_rules(node, ctx)
        elif key == "sysctl":
            parsed.sysctls += parse_sysctl(node, ctx)
        elif key == "firewall":
            parsed.chains += parse_firewall(node, ctx, backends=parsed.backends)
        elif key == "firewall6":
            parsed.chains += parse_firewall(node, ctx, family=6)
        elif key == "health":
            parsed.probes += parse_health(node, ctx)
        elif key == "daemon":
            settings = parse_daemon(node, ctx)
            if settings is not None:
                parsed.daemon.append(settings)
        elif key == "libvirt":
            spec, has_uri = parse_libvirt(node, ctx)
            if spec is not None:
                parsed.libvirt.append((spec, has_uri))


def load_sources(sources: Sequence[SourceFile], issues: Iterable[ConfigIssue] = ()) -> DesiredState:
    """Parse and merge already-read files; raises ConfigError with every issue (at most
    ``MAX_ISSUES_PER_RUN`` of them listed, and ``MAX_ISSUES_PER_CHECK`` per merged-state check)."""
    desired, all_issues = load_partial(sources, issues)
    if all_issues:
        raise ConfigError(all_issues)
    return desired


def load_partial(sources: Sequence[SourceFile], issues: Iterable[ConfigIssue] = ()
                 ) -> tuple[DesiredState, list[ConfigIssue]]:
    """Parse and merge what is valid, and every issue found (capped as in
    ``load_sources``): the state holds what parsed cleanly (a chain with an error is
    left out), so that later checks (the rules' compilation) can report their issues
    in the same round."""
    all_issues = list(issues)
    merged = _Parsed([], [], [], [], [])
    remaining = MAX_NODES_PER_RUN
    for source in sources:
        if remaining <= 0:
            all_issues.append(ConfigIssue(source.name, 0, "", f"not read: the files before it hold "
                                          f"{MAX_NODES_PER_RUN:,} YAML nodes, the limit for all state files"))
            continue
        parsed, file_issues, used = parse_file(source, min(MAX_NODES, remaining))
        remaining -= used
        all_issues += file_issues
        merged.interfaces += parsed.interfaces
        merged.routes += parsed.routes
        merged.sysctls += parsed.sysctls
        merged.chains += parsed.chains
        merged.libvirt += parsed.libvirt
        merged.probes += parsed.probes
        merged.route_rules += parsed.route_rules
        merged.backends += parsed.backends
        merged.daemon += parsed.daemon
        for items in (parsed.interfaces, parsed.routes, parsed.sysctls, parsed.chains, parsed.libvirt, parsed.probes,
                      parsed.route_rules, parsed.daemon):
            items.clear()  # cheap (merged holds the items): nothing big is freed at once on the way out
    merged.chains, chain_issues = merge_chains(merged.chains)
    backend, backend_at, backend_issues = merge_backend(merged.backends)
    networks: list[NetworkSpec] = [n for spec, _ in merged.libvirt for n in spec.networks]
    checks: list[tuple[str, Iterable[ConfigIssue]]] = [
        ("interfaces defined twice", _duplicates("interface", ((i.name, i.origin) for i in merged.interfaces))),
        ("chains declared twice", chain_issues),
        ("firewall backends", backend_issues),
        ("sysctl keys defined twice", _duplicates("sysctl key", ((s.key, s.origin) for s in merged.sysctls))),
        ("routes defined twice", _duplicates("route", ((_route_key(r), r.origin) for r in merged.routes))),
        ("absent routes that are declared", _absent_routes_declared(merged.routes)),
        ("routes through unusable links", _routes_through_unusable_links(merged.routes, merged.interfaces)),
        ("default routes of DHCP links", _default_routes_of_dhcp_links(merged.routes, merged.interfaces)),
        ("route rules", check_route_rules(merged.route_rules)),
        ("libvirt networks defined twice", _duplicates("libvirt network", ((n.name, n.origin) for n in networks))),
        ("libvirt uris", _duplicates("libvirt uri", (("uri", s.origin) for s, has_uri in merged.libvirt
                                                     if has_uri))),
        ("libvirt guests sections", _duplicates("libvirt guests", (("guests", s.origin) for s, _ in merged.libvirt
                                                                   if s.reattach))),
        ("interface cross-checks", cross_check(merged.interfaces)),
        ("probes defined twice", _duplicates("probe", ((p.name, p.origin) for p in merged.probes))),
        ("daemon settings written twice",
         _duplicates("setting", (("daemon.observe", d.origin) for d in merged.daemon))),
    ]
    for what, found in checks:
        all_issues += _capped(found, MAX_ISSUES_PER_CHECK, what)
    all_issues = _capped(all_issues, MAX_ISSUES_PER_RUN, "issues in the state files")
    libvirt = None
    if merged.libvirt:
        uri = next((s.uri for s, has_uri in merged.libvirt if has_uri), merged.libvirt[0][0].uri)
        reattach = any(s.reattach for s, _ in merged.libvirt)
        libvirt = LibvirtSpec(uri, tuple(networks), reattach, merged.libvirt[0][0].origin)
    return DesiredState(
        interfaces=tuple(merged.interfaces),
        routes=tuple(merged.routes),
        sysctls=tuple(merged.sysctls),
        chains=tuple(merged.chains),
        libvirt=libvirt,
        files=tuple(s.name for s in sources),
        probes=tuple(merged.probes),
        route_rules=tuple(merged.route_rules),
        firewall_backend=backend,
        firewall_backend_at=backend_at,
        daemon=merged.daemon[0] if merged.daemon else DaemonSettings(),
    ), all_issues


def _capped(issues: Iterable[ConfigIssue], cap: int, what: str) -> list[ConfigIssue]:
    """The first ``cap`` issues, then one line saying how many more there were."""
    kept: list[ConfigIssue] = []
    more = 0
    first_dropped: ConfigIssue | None = None
    for issue in issues:
        if len(kept) < cap:
            kept.append(issue)
            continue
        more += 1
        first_dropped = first_dropped or issue
    if first_dropped is not None:
        kept.append(ConfigIssue(first_dropped.file, first_dropped.line, "",
                                f"... and {more:,} more {what} (only the first {cap} are listed)"))
    return kept


def _route_key(route: RouteSpec) -> str:
    """Present routes clash on the kernel's key (destination, table, metric) whatever their next
    hops: two of them would replace each other on every pass. Absent ones are filters."""
    if route.absent:
        return route.resource.removeprefix("route/") + " (absent)"
    return f"{route.destination} table {route.table_id} metric {_metric(route)}"


def _metric(route: RouteSpec) -> int:
    """The metric the kernel gives a route written without one."""
    return route.metric if route.metric is not None else (0 if route.family == 4 else 1024)


def _absent_routes_declared(routes: Sequence[RouteSpec]) -> list[ConfigIssue]:
    """An absent route that matches a declared one: each pass would delete and re-add it."""
    issues = []
    present: dict[tuple[object, int], list[RouteSpec]] = {}
    for route in routes:
        if not route.absent:
            present.setdefault((route.destination, route.table_id), []).append(route)
    for gone in (r for r in routes if r.absent):
        for want in present.get((gone.destination, gone.table_id), ()):
            if gone.next_hop_address in (None, want.next_hop_address) \
                    and gone.next_hop_interface in (None, want.next_hop_interface) \
                    and gone.metric in (None, _metric(want)):
                issues.append(_issue_at(gone.origin, f"{gone.resource} is declared absent "
                                        f"but {want.resource} is declared at {want.origin}"))
    return issues


def _routes_through_unusable_links(routes: Sequence[RouteSpec], interfaces: Sequence[Interface]) -> list[ConfigIssue]:
    """A route through an interface declared down or absent: the kernel refuses it
    ("Nexthop device is not up"), so it would fail on every pass."""
    state = {i.name: i.state for i in interfaces}
    issues = []
    for route in routes:
        declared = state.get(route.next_hop_interface or "")
        if route.absent or declared is None or declared is AdminState.UP:
            continue
        issues.append(_issue_at(route.origin, f"{route.resource} goes through {route.next_hop_interface!r}, "
                                f"which is declared {declared.value}; the kernel refuses a route through a link "
                                "that is not up"))
    return issues


def _default_routes_of_dhcp_links(routes: Sequence[RouteSpec], interfaces: Sequence[Interface]) -> list[ConfigIssue]:
    """A default route declared through a link whose default route a DHCP client (or
    SLAAC) owns: both would hold it, and each would replace the other's."""
    owned: dict[tuple[str, int], str] = {}
    for iface in interfaces:
        for version, config in ((4, iface.ipv4), (6, iface.ipv6)):
            if config is not None and config.foreign:
                key = "dhcp" if config.dhcp else "autoconf"
                owned[(iface.name, version)] = f"ipv{version}.{key}: true"
    issues = []
    for route in routes:
        why = owned.get((route.next_hop_interface or "", route.family))
        if route.absent or why is None or route.destination.prefixlen or route.table_id != MAIN_TABLE \
                or route.metric is not None:
            continue
        issues.append(_issue_at(route.origin, f"{route.resource}: the default route through "
                                f"{route.next_hop_interface!r} belongs to its DHCP client ({why}); leave it to "
                                "the client, or declare a second one with a metric"))
    return issues


def _issue_at(origin: Origin | None, message: str) -> ConfigIssue:
    """An issue of the merged state, reported where its item was written."""
    here = origin or Origin("?", 0)
    return ConfigIssue(here.file, here.line, "", message)


def _duplicates(what: str, items: Iterable[tuple[str, Origin | None]]) -> Iterator[ConfigIssue]:
    first: dict[str, Origin | None] = {}
    for key, origin in items:
        if key in first:
            prev = first[key]
            here = origin or Origin("?", 0)
            yield ConfigIssue(here.file, here.line, "", f"{what} {key!r} is defined twice: at {prev} and at {here}")
        else:
            first[key] = origin


@dataclass(frozen=True, slots=True)
class Held:
    """A state file that disappeared (or was emptied) while the daemon ran, and what it declared.

    ``kept``: its declarations stay enforced until the removal is confirmed (a
    reload); False when they cannot be kept (they now conflict with the other
    files), ``reason`` then says why.
    """

    file: str
    resources: tuple[str, ...]
    kept: bool = True
    reason: str = ""


def _origin_file(item: object) -> str | None:
    origin = getattr(item, "origin", None)
    return origin.file if origin is not None else None


def hold_vanished(new: DesiredState, enforced: DesiredState, vanished: Iterable[str]
                  ) -> tuple[DesiredState, tuple[Held, ...]]:
    """``new`` plus what ``enforced`` declared in the files of ``vanished`` and ``new``
    no longer declares anywhere (SPEC: a file that disappears is not a decision).

    Items still declared in another file (the file was renamed, or its content moved)
    are not held; what is held is what would otherwise be pruned or released. If
    the result would be inconsistent (a held port now listed on another bridge, a
    route through a link now declared down), nothing is held and ``Held.reason``
    says why.
    """
    gone = set(vanished)
    names = {i.name for i in new.interfaces}
    chains = {(c.table, c.name) for c in new.chains}
    keys = {s.key for s in new.sysctls}
    routes = {_route_key(r) for r in new.routes}
    networks = {n.name for n in new.libvirt.networks} if new.libvirt else set()
    interfaces = [i for i in enforced.interfaces if _origin_file(i) in gone and i.name not in names]
    kept_chains = [c for c in enforced.chains if _origin_file(c) in gone and (c.table, c.name) not in chains]
    sysctls = [s for s in enforced.sysctls if _origin_file(s) in gone and s.key not in keys]
    kept_routes = [r for r in enforced.routes if _origin_file(r) in gone and _route_key(r) not in routes]
    kept_networks = [n for n in enforced.libvirt.networks if _origin_file(n) in gone and n.name not in networks] \
        if enforced.libvirt else []
    # an observe setting in a file that vanished stays too: its removal would start repairs
    settings = enforced.daemon if _origin_file(enforced.daemon) in gone and new.daemon.observe is None \
        else new.daemon
    # so do its health probes: the change that removed them is still checked by them
    probe_names = {p.name for p in new.probes}
    kept_probes = [p for p in enforced.probes if _origin_file(p) in gone and p.name not in probe_names]
    items: list[Interface | ChainSpec | SysctlSpec | RouteSpec | NetworkSpec | DaemonSettings | ProbeSpec] = [
        *interfaces, *kept_chains, *sysctls, *kept_routes, *kept_networks, *kept_probes]
    if settings is not new.daemon:
        items.append(settings)
    by_file: dict[str, list[str]] = {}
    for item in items:
        by_file.setdefault(_origin_file(item) or "?", []).append(item.resource)
    if not by_file:
        return new, ()
    libvirt = new.libvirt
    if kept_networks and libvirt is not None:
        libvirt = LibvirtSpec(libvirt.uri, libvirt.networks + tuple(kept_networks), libvirt.reattach, libvirt.origin)
    elif kept_networks and enforced.libvirt is not None:
        old = enforced.libvirt
        libvirt = LibvirtSpec(old.uri, tuple(kept_networks), old.reattach, old.origin)
    # the firewall backend the held chains were written through stays, if only a vanished file named it
    backend, backend_at = new.firewall_backend, new.firewall_backend_at
    if backend_at is None and enforced.firewall_backend_at is not None and enforced.firewall_backend_at.file in gone:
        backend, backend_at = enforced.firewall_backend, enforced.firewall_backend_at
    merged = replace(  # everything else (route rules...) as the files have it now
        new,
        interfaces=new.interfaces + tuple(interfaces),
        routes=new.routes + tuple(kept_routes),
        sysctls=new.sysctls + tuple(sysctls),
        chains=new.chains + tuple(kept_chains),
        libvirt=libvirt,
        firewall_backend=backend,
        firewall_backend_at=backend_at,
        daemon=settings,
        probes=new.probes + tuple(kept_probes),
    )
    conflicts = [*cross_check(merged.interfaces), *_routes_through_unusable_links(merged.routes, merged.interfaces),
                 *_absent_routes_declared(merged.routes)]
    if conflicts:
        reason = f"its declarations conflict with the other files now: {conflicts[0]}"
        return new, tuple(Held(f, tuple(r), kept=False, reason=reason) for f, r in sorted(by_file.items()))
    return merged, tuple(Held(f, tuple(r)) for f, r in sorted(by_file.items()))


def load_state_dir(path: str = DEFAULT_STATE_DIR, *, require_root: bool = True) -> DesiredState:
    """Read, check and merge a state directory. Raises ConfigError listing every problem."""
    sources, issues = read_state_dir(path, require_root=require_root)
    return load_sources(sources, issues)


def load_state_dir_partial(path: str = DEFAULT_STATE_DIR, *, require_root: bool = True
                           ) -> tuple[DesiredState, list[ConfigIssue]]:
    """Read and merge a state directory without raising (see load_partial)."""
    sources, issues = read_state_dir(path, require_root=require_root)
    return load_partial(sources, issues)
