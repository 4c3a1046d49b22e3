# SPDX-License-Identifier: MIT
"""Drop-in directory -> ``DesiredState``; every problem of every file in one ConfigError.

Order of work: refuse an insecure directory or file (whoever can write it owns the
host's firewall), read the ``*.yaml``/``*.yml`` files in lexical order (editor and
package-manager leftovers are skipped), parse each into model values with FILE:LINE
issues, then merge: the same interface, chain, sysctl key, route or libvirt network
defined twice is an error naming both places.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import yaml

from vnetd.desired.firewall import merge_chains, parse_firewall
from vnetd.desired.health import parse_health
from vnetd.desired.interfaces import cross_check, parse_interfaces
from vnetd.desired.libvirt import parse_libvirt
from vnetd.desired.nodes import MAX_ISSUES_PER_FILE, FileContext, MapView, as_map
from vnetd.desired.routes import parse_routes
from vnetd.desired.schema import TOP
from vnetd.desired.sysctl import parse_sysctl
from vnetd.desired.yamlerrors import syntax_error
from vnetd.errors import ConfigError, ConfigIssue
from vnetd.model.common import Origin
from vnetd.model.firewall import ChainSpec
from vnetd.model.health import ProbeSpec
from vnetd.model.interfaces import AdminState, Interface
from vnetd.model.libvirt import LibvirtSpec, NetworkSpec
from vnetd.model.routes import RouteSpec
from vnetd.model.state import DesiredState
from vnetd.model.sysctl import SysctlSpec

DEFAULT_STATE_DIR = "/etc/vnetd.d"
STATE_SUFFIXES = (".yaml", ".yml")
#: Leftovers of editors and package managers; never read even if they end in .yaml.
IGNORED_SUFFIXES = ("~", ".swp", ".swo", ".tmp", ".rpmnew", ".rpmsave", ".rpmorig", ".bak", ".orig")
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_FILES = 1000

SECTIONS = TOP.keys

try:  # libyaml: 20x faster, and it limits nesting depth itself
    _Base: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Base = yaml.SafeLoader

_SCALAR_TAGS: dict[tuple[str, bool, bool], str] = {}


class _Loader(_Base):  # type: ignore[misc]
    """libyaml's parser with a memo on PyYAML's (Python) tag resolver: state files
    repeat the same scalars thousands of times ("up", "linux-bridge", "9000"), and
    resolving a plain scalar's implicit tag is a loop of regular expressions."""

    def resolve(self, kind: type, value: str, implicit: tuple[bool, bool]) -> str:
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


def is_state_file(name: str) -> bool:
    """Drop-in rule: *.yaml / *.yml, not hidden, not a leftover (*~, *.swp, #*#, *.dpkg-*)."""
    if name.startswith((".", "#")) or name.endswith(("#",) + IGNORED_SUFFIXES):
        return False
    if ".dpkg-" in name or ".ucf-" in name:
        return False
    return name.endswith(STATE_SUFFIXES)


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


def parse_file(source: SourceFile) -> tuple[_Parsed, list[ConfigIssue]]:
    ctx = FileContext(source.name)
    parsed = _Parsed([], [], [], [], [])
    try:
        root = yaml.compose(source.text, Loader=_Loader)
    except yaml.reader.ReaderError as exc:  # a control character: no mark, a position instead
        return parsed, [ConfigIssue(source.name, _reader_line(source.text, exc.position), "",
                                    f"YAML syntax error: character {_codepoint(exc.character)} "
                                    f"is not allowed in YAML text")]
    except yaml.MarkedYAMLError as exc:
        line, message = syntax_error(source.text, exc)
        return parsed, [ConfigIssue(source.name, line, "", message)]
    except yaml.YAMLError as exc:
        return parsed, [ConfigIssue(source.name, 0, "", f"YAML error: {exc}")]
    except RecursionError:
        return parsed, [ConfigIssue(source.name, 0, "", "YAML is nested too deeply")]
    tagged = _explicit_tags(source) if "!" in source.text else []
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == "tag:yaml.org,2002:null"):
        return parsed, tagged  # an empty file (only comments, a bare '---' or '~') declares nothing
    top = as_map(root, "", ctx, TOP, "a state file (top level)")
    if top is not None:
        _dispatch(top, ctx, parsed)
    return parsed, tagged + ctx.finish()


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
        elif key == "sysctl":
            parsed.sysctls += parse_sysctl(node, ctx)
        elif key == "firewall":
            parsed.chains += parse_firewall(node, ctx)
        elif key == "health":
            parsed.probes += parse_health(node, ctx)
        elif key == "libvirt":
            spec, has_uri = parse_libvirt(node, ctx)
            if spec is not None:
                parsed.libvirt.append((spec, has_uri))


def load_sources(sources: Sequence[SourceFile], issues: Iterable[ConfigIssue] = ()) -> DesiredState:
    """Parse and merge already-read files; raises ConfigError with every issue."""
    desired, all_issues = load_partial(sources, issues)
    if all_issues:
        raise ConfigError(all_issues)
    return desired


def load_partial(sources: Sequence[SourceFile], issues: Iterable[ConfigIssue] = ()
                 ) -> tuple[DesiredState, list[ConfigIssue]]:
    """Parse and merge what is valid, and every issue found: the state holds what parsed
    cleanly (a chain with an error is left out), so that later checks (the rules'
    compilation) can report their issues in the same round."""
    all_issues = list(issues)
    merged = _Parsed([], [], [], [], [])
    for source in sources:
        parsed, file_issues = parse_file(source)
        all_issues += file_issues
        merged.interfaces += parsed.interfaces
        merged.routes += parsed.routes
        merged.sysctls += parsed.sysctls
        merged.chains += parsed.chains
        merged.libvirt += parsed.libvirt
        merged.probes += parsed.probes
    all_issues += _duplicates("interface", ((i.name, i.origin) for i in merged.interfaces))
    merged.chains, chain_issues = merge_chains(merged.chains)
    all_issues += chain_issues
    all_issues += _duplicates("sysctl key", ((s.key, s.origin) for s in merged.sysctls))
    all_issues += _duplicates("route", ((_route_key(r), r.origin) for r in merged.routes))
    all_issues += _absent_routes_declared(merged.routes)
    all_issues += _routes_through_unusable_links(merged.routes, merged.interfaces)
    networks: list[NetworkSpec] = [n for spec, _ in merged.libvirt for n in spec.networks]
    all_issues += _duplicates("libvirt network", ((n.name, n.origin) for n in networks))
    all_issues += _duplicates("libvirt uri", (("uri", s.origin) for s, has_uri in merged.libvirt if has_uri))
    all_issues += _duplicates("libvirt guests", (("guests", s.origin) for s, _ in merged.libvirt if s.reattach))
    all_issues += cross_check(merged.interfaces)
    all_issues += _duplicates("probe", ((p.name, p.origin) for p in merged.probes))
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
    ), all_issues


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


def _issue_at(origin: Origin | None, message: str) -> ConfigIssue:
    """An issue of the merged state, reported where its item was written."""
    here = origin or Origin("?", 0)
    return ConfigIssue(here.file, here.line, "", message)


def _duplicates(what: str, items: Iterable[tuple[str, Origin | None]]) -> list[ConfigIssue]:
    first: dict[str, Origin | None] = {}
    issues = []
    for key, origin in items:
        if key in first:
            prev = first[key]
            here = origin or Origin("?", 0)
            issues.append(ConfigIssue(here.file, here.line, "",
                                      f"{what} {key!r} is defined twice: at {prev} and at {here}"))
        else:
            first[key] = origin
    return issues


def load_state_dir(path: str = DEFAULT_STATE_DIR, *, require_root: bool = True) -> DesiredState:
    """Read, check and merge a state directory. Raises ConfigError listing every problem."""
    sources, issues = read_state_dir(path, require_root=require_root)
    return load_sources(sources, issues)


def load_state_dir_partial(path: str = DEFAULT_STATE_DIR, *, require_root: bool = True
                           ) -> tuple[DesiredState, list[ConfigIssue]]:
    """Read and merge a state directory without raising (see load_partial)."""
    sources, issues = read_state_dir(path, require_root=require_root)
    return load_partial(sources, issues)
