# SPDX-License-Identifier: MIT
"""``/etc/sysconfig/network-scripts`` (initscripts' ifcfg-* files) -> interfaces and routes.

Parsing: an ifcfg file is a shell fragment that initscripts *sources*; here it is
only read. Each line is ``KEY=value`` (``export`` allowed) with the value in shell
quoting: bare (backslash escapes), ``'single'`` or ``"double"``; ``#`` starts a
comment at the start of a line or after blanks. ``$``/backtick expansions and
command substitutions such as ``$(reboot)`` are kept as literal text (nothing is
ever run), which makes them invalid values that end up in comments. A line that
is not an assignment is shown in a comment. When a key is assigned twice the last
assignment counts, as in the shell.

Translation, and why (what an administrator migrating a CentOS host expects):

* ``DEVICE`` is the interface name (the file name's suffix when it is missing, as
  initscripts does); ``NAME`` is NetworkManager's connection name and becomes the
  nmstate ``description`` (kept, not managed).
* ``TYPE=Bridge`` -> ``linux-bridge``; ``TYPE=Ethernet``, a file with ``HWADDR`` or
  no ``TYPE`` at all (initscripts' default) -> ``ethernet``; ``VLAN=yes`` ->
  ``vlan`` (parent and id from ``PHYSDEV``/``VLAN_ID`` or the ``eth0.10`` name;
  ``REORDER_HDR``, ``GVRP``, ``MVRP`` as nmstate's vlan options); ``TYPE=Bond`` or
  ``BONDING_MASTER=yes`` -> ``bond``, ``BONDING_OPTS`` -> ``link-aggregation``
  (``mode`` and the options nmstate knows). Other types (teams, OVS, tunnels) are
  not translated.
* ``BRIDGE=br0`` makes the device a port of ``br0`` (listed under the bridge),
  ``MASTER=bond0`` (with ``SLAVE=yes``) a port of ``bond0``; addresses on a port are
  not translated (initscripts ignores them too).
* ``MTU``; ``ONBOOT=no`` -> ``state: down`` (vnetd keeps it down; there is no
  "leave it alone at boot"), otherwise ``state: up``.
* ``IPADDR``/``PREFIX`` or ``NETMASK``, also numbered (``IPADDR0``, ``PREFIX0``, ...):
  static addresses; without a prefix or netmask the classful default is used, as
  ipcalc and NetworkManager do (with a comment). ``BOOTPROTO=dhcp``/``bootp``:
  ``ipv4: {dhcp: true}``: the address and default route belong to the DHCP client
  that initscripts runs (vnetd leaves them alone). ``IPV6INIT=yes`` with
  ``IPV6ADDR``/``IPV6ADDR_SECONDARIES``: static IPv6; with ``IPV6_AUTOCONF`` (yes
  unless written no, as initscripts assumes) ``autoconf: true``, with ``DHCPV6C=yes``
  ``dhcp: true``.
* ``GATEWAY`` -> a default route via that address on the device (not with
  ``DEFROUTE=no`` or DHCP); ``IPV6_DEFAULTGW`` likewise. The kernel holds one
  default route per metric: a second one is a comment.
* Bridges: ``STP=on|off`` -> ``stp.enabled`` (written ``false`` when absent: the
  kernel's and initscripts' default), ``DELAY`` -> ``forward-delay`` in seconds.
* ``HWADDR`` is *not* a MAC to set: in ifcfg it names the NIC the file belongs
  to (initscripts checks it, udev renames by it). It becomes nmstate's
  ``identifier: mac-address`` with that ``mac-address``: the file's name (eth1)
  stands for the NIC with that MAC, whatever the kernel calls it. ``MACADDR`` sets
  a MAC and becomes ``mac-address`` (not together with ``HWADDR``, which then
  identifies the NIC).
* Alias files (``ifcfg-eth0:1``) add their address to the parent device.
* ``route-DEV``/``route6-DEV`` files (both the ``ADDRESS0=``/``NETMASK0=``/
  ``GATEWAY0=`` form and ``ip route`` argument lines) become routes;
  ``rule-DEV``/``rule6-DEV`` files (``ip rule`` argument lines) become
  ``route-rules`` (``vnetd.importer.route_rules``).
* Everything else (``NM_CONTROLLED``, ``UUID``, ``DNS1``, ``DOMAIN``, ``PEERDNS``,
  ``IPV6INIT=no``, ``DEFROUTE``, ...) is listed, with its value, in one comment
  per file. ``ifcfg-lo`` and initscripts' backup files (``*.bak``, ``*.orig``,
  ``*.rpmsave``, ``*~``, ...) are not translated (said in a comment); the scripts
  that live in the same directory are ignored.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field

from vnetd.desired import validate
from vnetd.importer.emit import Comment, Item, Mapping, Sequence
from vnetd.importer.route_rules import RuleDraft, translate_rule_file
from vnetd.importer.sources import ImportProblem, read_text, shown_value, split_lines
from vnetd.model.bond import MODE_NAMES, MODES, OPTIONS

MAX_FILES = 4096
#: initscripts' list of files it ignores (network-functions: __sed_discard_ignored_files)
_IGNORED = re.compile(r"(~|\.bak|\.old|\.orig|\.rpmnew|\.rpmorig|\.rpmsave|\.dpkg-[a-z]+|\.swp)\Z")
_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z")
_ADDRESS_KEY = re.compile(r"^(IPADDR|PREFIX|NETMASK)([0-9]*)\Z")
_TRUE = ("yes", "true", "y", "1", "on")
_FALSE = ("no", "false", "n", "0", "off")
_UNSUPPORTED_TYPES = {
    "team": "teams", "teamport": "team ports", "ovsbridge": "Open vSwitch bridges",
    "ovsport": "Open vSwitch ports", "ovsintport": "Open vSwitch ports", "infiniband": "InfiniBand",
    "wireless": "wireless devices", "xdsl": "DSL links", "ipip": "tunnels", "gre": "tunnels",
    "sit": "tunnels", "tap": "tap devices (libvirt makes guests' taps)", "modem": "modems",
}
_ORDER = {"ethernet": 0, "bond": 1, "vlan": 2, "linux-bridge": 3}


# --------------------------------------------------------------------------- parsing


@dataclass
class Assignment:
    key: str
    value: str
    line: int
    expansion: bool = False  # the value held $... or `...` (kept literally, never expanded)
    written: str | None = None  # the value as the file writes it (quotes and all)

    def shown(self) -> str:
        return f"{self.key}={self.written if self.written is not None else shown_value(self.value)}"


@dataclass
class IfcfgFile:
    path: str
    name: str
    values: dict[str, Assignment] = field(default_factory=dict)
    junk: list[tuple[int, str, str]] = field(default_factory=list)  # line, text, why
    comments: list[str] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        a = self.values.get(key)
        return a.value if a is not None else None


def lex_value(text: str) -> tuple[str, bool, str | None]:
    """A shell word -> (literal value, held an expansion, problem or None); never expands."""
    value, expansion, problem, _end = lex_word(text)
    return value, expansion, problem


def lex_word(text: str) -> tuple[str, bool, str | None, int]:
    """``lex_value`` plus where the word ends in ``text``."""
    buf: list[str] = []
    expansion = False
    i, n = 0, len(text)

    def take_until(close: str, start: int) -> int:
        depth = 0
        j = start
        while j < n:
            if close == ")" and text[j] == "(":
                depth += 1
            elif text[j] == close:
                if depth <= 1 or close != ")":
                    return j
                depth -= 1
            j += 1
        return -1

    while i < n:
        c = text[i]
        if c in " \t":
            break
        if c == "'":
            j = text.find("'", i + 1)
            if j < 0:
                return "".join(buf), expansion, "unbalanced ' quote", n
            buf.append(text[i + 1 : j])
            i = j + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    return "".join(buf), expansion, 'unbalanced " quote', n
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and text[i + 1] in '$`"\\':
                    buf.append(text[i + 1])
                    i += 2
                    continue
                if c in "$`":
                    expansion = True
                buf.append(c)
                i += 1
        elif c == "\\":
            if i + 1 >= n:
                return "".join(buf), expansion, "continues on the next line (trailing backslash)", n
            buf.append(text[i + 1])
            i += 2
        elif c == "$" and i + 1 < n and text[i + 1] in "({":
            j = take_until(")" if text[i + 1] == "(" else "}", i + 1)
            if j < 0:
                return "".join(buf), True, "unbalanced $( or ${", n
            buf.append(text[i : j + 1])
            expansion = True
            i = j + 1
        elif c == "`":
            j = text.find("`", i + 1)
            if j < 0:
                return "".join(buf), True, "unbalanced ` quote", n
            buf.append(text[i : j + 1])
            expansion = True
            i = j + 1
        elif c in ";&|<>()":
            return "".join(buf), expansion, f"the shell operator {c!r} follows the value", i
        else:
            if c == "$":
                expansion = True
            buf.append(c)
            i += 1
    rest = text[i:].strip()
    if rest and not rest.startswith("#"):
        return "".join(buf), expansion, f"more text follows the value ({rest!r}); in a shell that runs a command", i
    return "".join(buf), expansion, None, i


def parse_ifcfg(text: str, path: str) -> IfcfgFile:
    parsed = IfcfgFile(path, os.path.basename(path))
    for number, raw in enumerate(split_lines(text), start=1):
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            parsed.comments.append(stripped[1:].strip())
            continue
        m = _ASSIGNMENT.match(raw)
        if m is None:
            parsed.junk.append((number, stripped, "not a KEY=value assignment"))
            continue
        value, expansion, problem, end = lex_word(m.group(2))
        if problem is not None:
            parsed.junk.append((number, stripped, problem))
            continue
        parsed.values[m.group(1)] = Assignment(m.group(1), value, number, expansion, m.group(2)[:end])
    return parsed


def _number(text: str) -> int | None:
    """A plain decimal of at most 10 digits (a 32-bit value), else None: longer digit
    strings are no value initscripts takes, and int() of thousands of digits raises."""
    return int(text) if text.isdigit() and len(text) <= 10 and text.isascii() else None


def is_true(value: str | None) -> bool | None:
    """initscripts' is_true/is_false; None when it is neither."""
    if value is None:
        return None
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


# --------------------------------------------------------------------------- drafts


@dataclass
class InterfaceDraft:
    """One interface of the output; ``untranslated`` turns it into a comment."""

    name: str
    type: str
    source: str
    order: int
    comments: list[Comment] = field(default_factory=list)
    state: str | None = None
    mtu: int | None = None
    mac: str | None = None
    description: str | None = None
    ipv4: list[ipaddress.IPv4Interface] = field(default_factory=list)
    ipv6: list[ipaddress.IPv6Interface] = field(default_factory=list)
    stp_enabled: bool | None = None
    forward_delay: int | None = None
    ports: list[str] = field(default_factory=list)
    vlan_base: str | None = None
    vlan_id: int | None = None
    vlan_options: list[tuple[str, object]] = field(default_factory=list)
    untranslated: str | None = None
    match_mac: str | None = None  # HWADDR: identifier: mac-address
    dhcp4: bool = False
    autoconf6: bool = False
    dhcp6: bool = False
    bond_mode: str | None = None
    bond_options: list[tuple[str, object]] = field(default_factory=list)

    def note(self, text: str, wrap: bool = True) -> None:
        self.comments.append(Comment(text, wrap))

    def build(self, seq: Sequence) -> None:
        if self.untranslated is not None:
            for c in self.comments:
                seq.items.append(c)
            seq.note(f"not translated: interface {self.name} from {self.source}: {self.untranslated}")
            return
        m = Mapping()
        m.entries.extend(self.comments)
        m.add("name", self.name)
        m.add("type", self.type)
        if self.state is not None:
            m.add("state", self.state)
        if self.match_mac is not None:
            m.add("identifier", "mac-address")
            m.add("mac-address", self.match_mac)
        if self.mtu is not None:
            m.add("mtu", self.mtu)
        if self.mac is not None:
            m.add("mac-address", self.mac)
        if self.description is not None:
            m.add("description", self.description)
        for version, addresses, dhcp, autoconf in ((4, self.ipv4, self.dhcp4, False),
                                                   (6, self.ipv6, self.dhcp6, self.autoconf6)):
            if addresses or dhcp or autoconf:
                ip = Mapping()
                ip.add("enabled", True)
                if dhcp:
                    ip.add("dhcp", True)
                if autoconf:
                    ip.add("autoconf", True)
                if addresses:
                    items = Sequence()
                    for addr in addresses:
                        a = Mapping()
                        a.add("ip", str(addr.ip))
                        a.add("prefix-length", addr.network.prefixlen)
                        items.add(a)
                    ip.add("address", items)
                m.add(f"ipv{version}", ip)
        if self.type == "linux-bridge":
            bridge = Mapping()
            stp = Mapping(flow=True)
            if self.stp_enabled is not None:
                stp.add("enabled", self.stp_enabled)
            if self.forward_delay is not None:
                stp.add("forward-delay", self.forward_delay)
            if stp.entries:
                options = Mapping()
                options.add("stp", stp)
                bridge.add("options", options)
            if self.ports:
                ports = Sequence()
                for port in self.ports:
                    p = Mapping(flow=True)
                    p.add("name", port)
                    ports.add(p)
                bridge.add("port", ports)
            if bridge.entries:
                m.add("bridge", bridge)
        if self.type == "vlan" and self.vlan_base is not None and self.vlan_id is not None:
            vlan = Mapping(flow=True)
            vlan.add("base-iface", self.vlan_base)
            vlan.add("id", self.vlan_id)
            for key, value in self.vlan_options:
                vlan.add(key, value)  # type: ignore[arg-type]
            m.add("vlan", vlan)
        if self.type == "bond":
            la = Mapping()
            if self.bond_mode is not None:
                la.add("mode", self.bond_mode)
            if self.ports:
                ports = Sequence()
                for port in self.ports:
                    ports.add(port)
                la.add("port", ports)
            if self.bond_options:
                options = Mapping()
                for key, value in self.bond_options:
                    options.add(key, value)  # type: ignore[arg-type]
                la.add("options", options)
            if la.entries:
                m.add("link-aggregation", la)
        seq.items.append(Item(m, ref=self))


@dataclass
class RouteDraft:
    destination: str
    gateway: str | None
    device: str | None
    metric: int | None
    source: str
    comments: list[Comment] = field(default_factory=list)
    table: int | None = None
    untranslated: str | None = None

    def key(self) -> tuple[str, int, int]:
        family = ipaddress.ip_network(self.destination).version
        metric = self.metric if self.metric is not None else (0 if family == 4 else 1024)
        return (self.destination, self.table or 254, metric)

    def describe(self) -> str:
        via = f" via {self.gateway}" if self.gateway else ""
        dev = f" dev {self.device}" if self.device else ""
        metric = f" metric {self.metric}" if self.metric is not None else ""
        return f"{self.destination}{via}{dev}{metric}"

    def build(self, seq: Sequence) -> None:
        seq.items.extend(self.comments)
        if self.untranslated is not None:
            seq.note(f"not translated: route {self.describe()} from {self.source}: {self.untranslated}")
            return
        m = Mapping()
        m.add("destination", self.destination)
        if self.gateway is not None:
            m.add("next-hop-address", self.gateway)
        if self.device is not None:
            m.add("next-hop-interface", self.device)
        if self.metric is not None:
            m.add("metric", self.metric)
        if self.table is not None:
            m.add("table-id", self.table)
        seq.items.append(Item(m, ref=self))


@dataclass
class IfcfgImport:
    directory: str
    files: list[str] = field(default_factory=list)  # the files that were read
    interfaces: list[InterfaceDraft] = field(default_factory=list)
    routes: list[RouteDraft] = field(default_factory=list)
    notes: list[Comment] = field(default_factory=list)  # at the top of interfaces:
    route_notes: list[Comment] = field(default_factory=list)  # at the top of routes:
    rules: list[RuleDraft] = field(default_factory=list)

    def build_interfaces(self) -> Sequence:
        seq = Sequence()
        seq.items.extend(self.notes)
        for draft in sorted(self.interfaces, key=lambda d: (_ORDER.get(d.type, 9), d.order)):
            draft.build(seq)
        return seq

    def build_routes(self) -> Mapping | None:
        if not self.routes and not self.route_notes:
            return None
        seq = Sequence()
        seq.items.extend(self.route_notes)
        for route in self.routes:
            route.build(seq)
        routes = Mapping()
        routes.add("config", seq)
        return routes

    def build_rules(self) -> Mapping | None:
        if not self.rules:
            return None
        seq = Sequence()
        for rule in self.rules:
            rule.build(seq)
        rules = Mapping()
        rules.add("config", seq)
        return rules


# --------------------------------------------------------------------------- translation


def list_directory(directory: str) -> list[str]:
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        raise ImportProblem(directory, 0, "does not exist") from None
    except OSError as exc:
        raise ImportProblem(directory, 0, f"cannot read: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ImportProblem(directory, 0, "is not a directory (expected a network-scripts directory "
                            "with ifcfg-* files)")
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise ImportProblem(directory, 0, f"cannot list: {exc.strerror}") from None
    return names


def translate_directory(directory: str) -> IfcfgImport:
    """Read every ifcfg-*/route-* file of ``directory``; ImportProblem when none can be read."""
    result = IfcfgImport(directory)
    names = list_directory(directory)
    relevant = [n for n in names if n.startswith(("ifcfg-", "route-", "route6-", "rule-", "rule6-"))]
    if len(relevant) > MAX_FILES:
        raise ImportProblem(directory, 0, f"{len(relevant)} ifcfg/route files; at most {MAX_FILES} are read")
    ignored = [n for n in relevant if _IGNORED.search(n)]
    if ignored:
        result.notes.append(Comment("not translated: " + ", ".join(ignored) + ": backup or package "
                                    "leftovers, which initscripts ignores too"))
    relevant = [n for n in relevant if n not in ignored]
    if not any(n.startswith("ifcfg-") for n in relevant):
        raise ImportProblem(directory, 0, "has no ifcfg-* files; give the network-scripts directory "
                            "(e.g. /etc/sysconfig/network-scripts)")
    ifcfgs: list[IfcfgFile] = []
    for name in relevant:
        path = os.path.join(directory, name)
        text = read_text(path, "an ifcfg file" if name.startswith("ifcfg-") else
                         "a rule file" if name.startswith("rule") else "a route file")
        result.files.append(name)
        if name.startswith("ifcfg-"):
            ifcfgs.append(parse_ifcfg(text, path))
        elif name.startswith(("rule-", "rule6-")):
            result.rules += translate_rule_file(text, name)
    by_name: dict[str, InterfaceDraft] = {}
    aliases: list[tuple[IfcfgFile, str]] = []
    for order, f in enumerate(ifcfgs):
        draft = _translate_file(f, order, result, by_name, aliases)
        if draft is not None:
            by_name[draft.name] = draft
            result.interfaces.append(draft)
    _attach_ports(ifcfgs, by_name)
    _bridge_mtu_notes(by_name)
    _drop_clashing_rules(result.rules)
    for f, name in aliases:
        _translate_alias(f, name, by_name, result)
    for name in relevant:
        if name.startswith(("route-", "route6-")):
            path = os.path.join(directory, name)
            _translate_route_file(read_text(path, "a route file"), name, result)
    _drop_clashing_routes(result.routes)
    return result


def _file_name_device(f: IfcfgFile) -> str:
    return f.name.removeprefix("ifcfg-")


def _untranslated_file(f: IfcfgFile, why: str) -> Comment:
    lines = [f"not translated: {f.name}: {why}"]
    lines += [f"  {c}" for c in f.comments]
    lines += [f"  {a.shown()}" for a in sorted(f.values.values(), key=lambda a: a.line)]
    lines += [f"  line {n}: {text}" for n, text, _ in f.junk]
    return Comment("\n".join(lines), wrap=False)


def _translate_file(
    f: IfcfgFile, order: int, result: IfcfgImport, by_name: dict[str, InterfaceDraft],
    aliases: list[tuple[IfcfgFile, str]],
) -> InterfaceDraft | None:
    used: set[str] = set()

    def take(key: str) -> str | None:
        if key in f.values:
            used.add(key)
        return f.get(key)

    device = take("DEVICE")
    from_name = device is None
    name = device if device is not None else _file_name_device(f)
    if "-range" in f.name and device is None:
        result.notes.append(_untranslated_file(f, "address ranges (IPADDR_START/IPADDR_END) are not supported"))
        return None
    if name == "lo":
        result.notes.append(_untranslated_file(f, "the loopback device is set up by the kernel"))
        return None
    if ":" in name:
        aliases.append((f, name))
        return None
    problem = validate.link_name(name)
    if problem is not None:
        where = "DEVICE" if device is not None else "the file name"
        result.notes.append(_untranslated_file(f, f"{where}: {problem}"))
        return None
    if name in by_name:
        result.notes.append(_untranslated_file(f, f"{by_name[name].source} already declares {name}"))
        return None
    raw_type = take("TYPE")
    iftype, why = _device_type(f, name, raw_type)
    if iftype is None:
        result.notes.append(_untranslated_file(f, why or "unknown type"))
        return None
    draft = InterfaceDraft(name, iftype, f.name, order)
    draft.note(f"from {f.name}")
    for text in f.comments:
        draft.note(text, wrap=False)
    if from_name:
        draft.note(f"no DEVICE=: the name {name} comes from the file name, as initscripts does")
    elif device != _file_name_device(f):
        draft.note(f"DEVICE={shown_value(name)} differs from the file name {f.name}; DEVICE counts")
    if why:
        draft.note(why)
    if iftype == "vlan":
        used.update(k for k in ("VLAN", "PHYSDEV", "VLAN_ID") if k in f.values)
        _vlan(f, draft)
    description = take("NAME")
    if description is not None:
        draft.description = description
    onboot = take("ONBOOT")
    state = is_true(onboot)
    if onboot is not None and state is None:
        draft.note(f"not translated: ONBOOT={shown_value(onboot)}: neither yes nor no; state up assumed")
    draft.state = "down" if state is False else "up"
    if state is False:
        draft.note("ONBOOT=no: vnetd keeps the device down (it has no 'up, but not at boot')")
    _mtu(f, take("MTU"), draft)
    _mac(f, used, draft)
    if iftype == "linux-bridge":
        _bridge_options(f, used, draft)
    else:
        for key in ("STP", "DELAY"):
            if key in f.values:
                used.add(key)
                draft.note(f"not translated: {f.values[key].shown()}: only bridges have {key}")
    if iftype == "bond":
        _bond_options(f, used, draft)
    elif iftype == "vlan":
        _vlan_options(f, used, draft)
    master = take("MASTER")
    if master is not None and f.get("SLAVE") is not None:
        used.add("SLAVE")
    if take("BRIDGE") is not None or master is not None:
        _port_addresses(f, used, draft)
    else:
        _addresses(f, used, draft, result)
    rest = [a for a in sorted(f.values.values(), key=lambda a: a.line) if a.key not in used]
    if rest:
        draft.note("not translated: " + " ".join(a.shown() for a in rest))
    for number, text, problem in f.junk:
        draft.note(f"not translated: line {number}: {text}", wrap=False)
        draft.note(f"  ({problem})")
    return draft


def _device_type(f: IfcfgFile, name: str, raw_type: str | None) -> tuple[str | None, str | None]:
    lowered = (raw_type or "").lower()
    if is_true(f.get("VLAN")) or lowered == "vlan":
        return "vlan", None
    if lowered == "bridge":
        return "linux-bridge", None
    if lowered == "bond" or is_true(f.get("BONDING_MASTER")):
        return "bond", None
    if lowered == "ethernet":
        return "ethernet", None
    if lowered in _UNSUPPORTED_TYPES:
        return None, f"TYPE={raw_type}: vnetd does not manage {_UNSUPPORTED_TYPES[lowered]}"
    if raw_type:
        return None, f"TYPE={shown_value(raw_type)}: not a type vnetd knows (Ethernet, Bridge, Bond, Vlan)"
    if "MASTER" in f.values or "TEAM_MASTER" in f.values:
        return "ethernet", None  # a bond's slave is a NIC; MASTER stays in the untranslated list
    if "HWADDR" in f.values:
        return "ethernet", None
    return "ethernet", "no TYPE=: an ethernet device, as initscripts assumes"


def _vlan(f: IfcfgFile, draft: InterfaceDraft) -> None:
    base = f.get("PHYSDEV")
    vid_text = f.get("VLAN_ID")
    m = re.match(r"^(.+)\.([0-9]+)\Z", draft.name)
    if base is None and m:
        base = m.group(1)
    if vid_text is None and m:
        vid_text = m.group(2)
    if vid_text is None and (m2 := re.match(r"^vlan([0-9]+)\Z", draft.name)):
        vid_text = m2.group(1)
    problem = None
    if base is None or validate.link_name(base) is not None:
        problem = "no valid parent device (PHYSDEV= or the name eth0.10)"
    elif vid_text is None or not 1 <= (_number(vid_text) or 0) <= 4094:
        problem = "no VLAN id 1-4094 (VLAN_ID= or the name eth0.10)"
    if problem is not None:
        draft.untranslated = f"VLAN=yes but {problem}"
        return
    assert base is not None and vid_text is not None
    draft.vlan_base, draft.vlan_id = base, int(vid_text)


def _mtu(f: IfcfgFile, value: str | None, draft: InterfaceDraft) -> None:
    if value is None:
        return
    if 68 <= (_number(value) or 0) <= 65535:
        draft.mtu = int(value)
    else:
        draft.note(f"not translated: {f.values['MTU'].shown()}: not an MTU (68-65535)")


def _mac(f: IfcfgFile, used: set[str], draft: InterfaceDraft) -> None:
    hw = f.values.get("HWADDR")
    if hw is not None:
        used.add("HWADDR")
        problem = validate.mac_address(hw.value)
        if draft.type != "ethernet":
            draft.note(f"not translated: {hw.shown()}: only a NIC (type ethernet) is found by its MAC")
        elif problem is not None:
            draft.note(f"not translated: {hw.shown()}: {problem}")
        else:
            draft.match_mac = hw.value.replace("-", ":").upper()
            draft.note(f"{hw.shown()} says which NIC this file is for: identifier: mac-address, so {draft.name} "
                       "stands for the NIC with this MAC whatever the kernel calls it")
    mac = f.values.get("MACADDR")
    if mac is not None:
        used.add("MACADDR")
        problem = validate.mac_address(mac.value)
        if draft.match_mac is not None:
            draft.note(f"not translated: {mac.shown()}: with HWADDR the NIC is found by its MAC, and "
                       "mac-address names it; vnetd does not also set another MAC")
        elif problem is None:
            draft.mac = mac.value.replace("-", ":").upper()
        else:
            draft.note(f"not translated: {mac.shown()}: {problem}")


def _bridge_options(f: IfcfgFile, used: set[str], draft: InterfaceDraft) -> None:
    used.update(k for k in ("STP", "DELAY") if k in f.values)
    stp = f.get("STP")
    if stp is None:
        draft.stp_enabled = False
    elif (enabled := is_true(stp)) is not None:
        draft.stp_enabled = enabled
    else:
        draft.note(f"not translated: {f.values['STP'].shown()}: neither on nor off")
    delay = f.get("DELAY")
    if delay is None:
        return
    try:
        seconds = float(delay)
    except ValueError:
        seconds = -1.0
    if seconds != int(seconds) or not 0 <= seconds <= 30:
        draft.note(f"not translated: {f.values['DELAY'].shown()}: vnetd takes a forward delay of 0-30 "
                   "whole seconds")
        return
    if draft.stp_enabled and seconds < 2:
        draft.note(f"not translated: {f.values['DELAY'].shown()}: with STP on the kernel needs a "
                   "forward delay of 2-30 seconds")
        return
    draft.forward_delay = int(seconds)


def _classful_prefix(addr: ipaddress.IPv4Address) -> int:
    first = int(addr) >> 24
    if first < 128:
        return 8
    if first < 192:
        return 16
    return 24


def _port_addresses(f: IfcfgFile, used: set[str], draft: InterfaceDraft) -> None:
    """A bridge or bond port gets no address from initscripts (ifup-eth enslaves it and stops)."""
    what = "a bridge port (BRIDGE=)" if f.get("BRIDGE") is not None else "a bond port (MASTER=)"
    bootproto = f.get("BOOTPROTO")
    if bootproto is not None and bootproto.lower() in ("none", "static", ""):
        used.add("BOOTPROTO")
    keys = [k for k in f.values if _ADDRESS_KEY.match(k) or k in ("GATEWAY", "BOOTPROTO")]
    for key in sorted(keys, key=lambda k: f.values[k].line):
        if key not in used:
            used.add(key)
            draft.note(f"not translated: {f.values[key].shown()}: {draft.name} is {what}, which initscripts gives "
                       "no address")


def _addresses(f: IfcfgFile, used: set[str], draft: InterfaceDraft, result: IfcfgImport) -> None:
    bootproto = f.get("BOOTPROTO")
    dynamic = bootproto is not None and bootproto.lower() in ("dhcp", "bootp")
    if bootproto is not None:
        used.add("BOOTPROTO")
        if dynamic:
            draft.dhcp4 = True
            draft.note(f"BOOTPROTO={shown_value(bootproto)}: dhcp: true, the address and default route belong to "
                       "the DHCP client (vnetd leaves them alone; keep the client running)")
        elif bootproto.lower() not in ("none", "static", ""):
            draft.note(f"not translated: BOOTPROTO={shown_value(bootproto)}: vnetd manages static "
                       "addresses only")
    suffixes = sorted({m.group(2) for k in f.values if (m := _ADDRESS_KEY.match(k))},
                      key=lambda s: (len(s), s))  # numeric order without int() of a huge suffix
    for suffix in suffixes:
        keys = [k + suffix for k in ("IPADDR", "PREFIX", "NETMASK")]
        used.update(k for k in keys if k in f.values)
        ip_a = f.values.get(keys[0])
        if ip_a is None:
            shown = " ".join(f.values[k].shown() for k in keys if k in f.values)
            draft.note(f"not translated: {shown}: no IPADDR{suffix}= to go with it")
            continue
        if dynamic:
            draft.note(f"not translated: {ip_a.shown()}: ignored with BOOTPROTO={bootproto}")
            continue
        addr = _address(f, suffix, ip_a, draft)
        if addr is not None:
            if addr in draft.ipv4:
                draft.note(f"not translated: {ip_a.shown()}: the same address is listed already")
            else:
                draft.ipv4.append(addr)
    _ipv6(f, used, draft)
    _gateway(f, used, draft, result, dynamic)


def _address(f: IfcfgFile, suffix: str, ip_a: Assignment, draft: InterfaceDraft) -> ipaddress.IPv4Interface | None:
    literal = " (taken literally: vnetd import never runs shell code)" if ip_a.expansion else ""
    try:
        ip = ipaddress.IPv4Address(ip_a.value)
    except ValueError:
        draft.note(f"not translated: {ip_a.shown()}: not an IPv4 address{literal}")
        return None
    prefix_a = f.values.get("PREFIX" + suffix)
    mask_a = f.values.get("NETMASK" + suffix)
    prefix: int | None = None
    if prefix_a is not None:
        if _number(prefix_a.value) is not None and 0 <= int(prefix_a.value) <= 32:
            prefix = int(prefix_a.value)
            if mask_a is not None:
                draft.note(f"{mask_a.shown()} is ignored: {prefix_a.shown()} counts, as in initscripts")
        else:
            draft.note(f"not translated: {ip_a.shown()} {prefix_a.shown()}: not a prefix length (0-32)")
            return None
    elif mask_a is not None:
        try:
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask_a.value}").prefixlen
        except ValueError:
            draft.note(f"not translated: {ip_a.shown()} {mask_a.shown()}: not a netmask")
            return None
    else:
        prefix = _classful_prefix(ip)
        draft.note(f"{ip_a.shown()} has no PREFIX{suffix}= or NETMASK{suffix}=: /{prefix}, the classful "
                   "default that ipcalc and NetworkManager use")
    iface = ipaddress.IPv4Interface(f"{ip}/{prefix}")
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
        draft.note(f"not translated: {ip_a.shown()}: cannot be assigned to {draft.name}")
        return None
    return iface


def _ipv6(f: IfcfgFile, used: set[str], draft: InterfaceDraft) -> None:
    init = is_true(f.get("IPV6INIT"))
    keys = [k for k in ("IPV6ADDR", "IPV6ADDR_SECONDARIES") if k in f.values]
    if not init:
        return  # IPV6INIT=no (or unset): IPv6 stays unmanaged
    used.add("IPV6INIT")
    autoconf = f.get("IPV6_AUTOCONF")
    if autoconf is not None:
        used.add("IPV6_AUTOCONF")
    draft.autoconf6 = is_true(autoconf) is not False
    if draft.autoconf6:
        why = "IPV6_AUTOCONF=yes" if autoconf is not None else "IPV6INIT=yes without IPV6_AUTOCONF=no"
        draft.note(f"{why}: autoconf: true, router advertisements configure addresses too (initscripts' "
                   "default); vnetd leaves those alone")
    if "DHCPV6C" in f.values:
        used.add("DHCPV6C")
        draft.dhcp6 = is_true(f.get("DHCPV6C")) is True
    for key in keys:
        used.add(key)
        for word in f.values[key].value.split():
            try:
                addr = ipaddress.IPv6Interface(word if "/" in word else f"{word}/64")
            except ValueError:
                draft.note(f"not translated: {key}={shown_value(word)}: not an IPv6 address/prefix")
                continue
            if "/" not in word:
                draft.note(f"{key}={shown_value(word)} has no prefix length: /64, as initscripts assumes")
            if addr.ip.is_link_local or addr.ip.is_multicast or addr.ip.is_unspecified:
                draft.note(f"not translated: {key}={shown_value(word)}: not a static global address")
            elif addr not in draft.ipv6:
                draft.ipv6.append(addr)


def _gateway(f: IfcfgFile, used: set[str], draft: InterfaceDraft, result: IfcfgImport, dynamic: bool) -> None:
    defroute = is_true(f.get("DEFROUTE"))
    for key, family in (("GATEWAY", 4), ("IPV6_DEFAULTGW", 6)):
        a = f.values.get(key)
        if a is None or (family == 6 and not is_true(f.get("IPV6INIT"))):
            continue
        used.add(key)
        value = a.value.split("%", 1)[0] if family == 6 else a.value  # fe80::1%eth0: the device is ours
        if dynamic and family == 4:
            draft.note(f"not translated: {a.shown()}: ignored with BOOTPROTO=dhcp (DHCP gives the route)")
            continue
        if defroute is False:
            used.add("DEFROUTE")
            draft.note(f"not translated: {a.shown()}: DEFROUTE=no, so it is no default route")
            continue
        try:
            gw = ipaddress.ip_address(value)
        except ValueError:
            literal = " (taken literally: vnetd import never runs shell code)" if a.expansion else ""
            draft.note(f"not translated: {a.shown()}: not an IPv{family} address{literal}")
            continue
        if gw.version != family or gw.is_multicast or gw.is_unspecified:
            draft.note(f"not translated: {a.shown()}: not a usable IPv{family} next hop")
            continue
        destination = "0.0.0.0/0" if family == 4 else "::/0"
        route = RouteDraft(destination, str(gw), draft.name, None, f.name)
        route.comments.append(Comment(f"from {f.name}: {a.shown()}"))
        result.routes.append(route)


def _attach_ports(ifcfgs: list[IfcfgFile], by_name: dict[str, InterfaceDraft]) -> None:
    for f in ifcfgs:
        master = f.get("MASTER")
        if master is not None:
            _attach_bond_port(f, master, by_name)
        bridge = f.get("BRIDGE")
        if bridge is None:
            continue
        port = next((d for d in by_name.values() if d.source == f.name), None)
        if port is None:
            continue
        owner = by_name.get(bridge)
        if owner is None or owner.type != "linux-bridge":
            why = "there is no ifcfg file for it" if owner is None else f"{bridge} is not a bridge"
            port.note(f"not translated: {f.values['BRIDGE'].shown()}: {why} (TYPE=Bridge)")
        elif port.type == "linux-bridge":
            port.note(f"not translated: {f.values['BRIDGE'].shown()}: a bridge cannot be a port of another")
        elif bridge == port.name:
            port.note(f"not translated: {f.values['BRIDGE'].shown()}: a device cannot be its own port")
        else:
            owner.ports.append(port.name)
            port.note(f"a port of {bridge} (BRIDGE={shown_value(bridge)}): listed under {bridge}'s bridge.port")


def _attach_bond_port(f: IfcfgFile, master: str, by_name: dict[str, InterfaceDraft]) -> None:
    """``MASTER=bond0`` (with ``SLAVE=yes``, as initscripts wants it): a port of the bond."""
    port = next((d for d in by_name.values() if d.source == f.name), None)
    if port is None:
        return
    owner = by_name.get(master)
    shown = f.values["MASTER"].shown()
    if not is_true(f.get("SLAVE")):
        port.note(f"not translated: {shown}: without SLAVE=yes initscripts does not enslave it")
    elif owner is None or owner.type != "bond":
        why = "there is no ifcfg file for it" if owner is None else f"{master} is not a bond"
        port.note(f"not translated: {shown}: {why} (TYPE=Bond)")
    elif port.type != "ethernet":
        port.note(f"not translated: {shown}: a bond's ports are NICs")
    else:
        owner.ports.append(port.name)
        port.note(f"a port of {master} ({shown} SLAVE=yes): listed under {master}'s link-aggregation.port")


def _bond_options(f: IfcfgFile, used: set[str], draft: InterfaceDraft) -> None:
    """``BONDING_OPTS="mode=802.3ad miimon=100 ..."`` -> link-aggregation mode and options."""
    used.update(k for k in ("BONDING_OPTS", "BONDING_MASTER") if k in f.values)
    text = f.get("BONDING_OPTS")
    if text is None:
        return
    options: list[tuple[str, str]] = []
    for word in text.split():
        key, eq, value = word.partition("=")
        if not eq or not value:
            draft.note(f"not translated: BONDING_OPTS word {word!r}: expected option=value")
            continue
        if key == "mode":
            number = _number(value)
            mode = MODE_NAMES.get(number) if number is not None else value if value in MODES else None
            if mode is None:
                draft.note(f"not translated: BONDING_OPTS mode={value}: not a bond mode")
            else:
                draft.bond_mode = mode
            continue
        options.append((key, value))
    for key, value in options:
        converted = _bond_value(key, value, draft.bond_mode)
        if isinstance(converted, str) and converted.startswith("!"):
            draft.note(f"not translated: BONDING_OPTS {key}={value}: {converted[1:]}")
        elif key == "arp_ip_target" and any(k == key for k, _v in draft.bond_options):
            # sysfs style, one target per word (arp_ip_target=+a arp_ip_target=+b): one list
            draft.bond_options = [(k, f"{v},{converted}" if k == key else v) for k, v in draft.bond_options]
        else:
            draft.bond_options = [(k, v) for k, v in draft.bond_options if k != key] + [(key, converted)]


def _bond_value(key: str, value: str, mode: str | None) -> object:
    """A BONDING_OPTS value as the state file writes it; a string starting with '!' says why not."""
    option = OPTIONS.get(key)
    if option is None:
        return f"!not an option vnetd manages (nmstate's: {', '.join(sorted(OPTIONS))})"
    if option.modes is not None and (mode or "balance-rr") not in option.modes:
        return f"!the kernel takes it in the modes {', '.join(sorted(option.modes))} only"
    if option.kind == "int":
        number = _number(value)
        if number is None:
            return "!not a number"
        return number if option.lo <= number <= option.hi else f"!out of range ({option.lo}-{option.hi})"
    if option.kind == "bool":
        return {"0": False, "1": True}.get(value, "!not 0 or 1")
    if option.kind == "enum":
        index = _number(value)
        if index is not None and index < len(option.choices):
            return option.choices[index]
        return value if value in option.choices else f"!not one of {', '.join(option.choices)}"
    if option.kind == "ip-list":
        targets = [t.lstrip("+") for t in value.split(",") if t and not t.startswith("-")]
        return ",".join(targets) if targets else "!no target"
    return value


def _vlan_options(f: IfcfgFile, used: set[str], draft: InterfaceDraft) -> None:
    """initscripts' REORDER_HDR, GVRP and MVRP -> nmstate's vlan options."""
    reorder = f.get("REORDER_HDR")
    if reorder is not None and is_true(reorder) is not None:
        used.add("REORDER_HDR")
        draft.vlan_options.append(("reorder-headers", bool(is_true(reorder))))
    registration = [k.lower() for k in ("GVRP", "MVRP") if is_true(f.get(k))]
    used.update(k for k in ("GVRP", "MVRP") if is_true(f.get(k)) is not None)
    if len(registration) == 1:
        draft.vlan_options.append(("registration-protocol", registration[0]))
    elif registration:
        draft.note("not translated: GVRP=yes MVRP=yes: a VLAN registers with one protocol")


def _bridge_mtu_notes(by_name: dict[str, InterfaceDraft]) -> None:
    for bridge in by_name.values():
        if bridge.type != "linux-bridge" or bridge.mtu is not None:
            continue
        mtus = sorted({mtu for p in bridge.ports if (mtu := by_name[p].mtu) is not None})
        then = f" ({mtus[0]} with the ports listed here)" if mtus else ""
        bridge.note(f"no MTU=: not managed; the kernel gives a bridge the smallest MTU of its ports{then}")


def _translate_alias(f: IfcfgFile, name: str, by_name: dict[str, InterfaceDraft], result: IfcfgImport) -> None:
    parent_name = name.split(":", 1)[0]
    parent = by_name.get(parent_name)
    if parent is None or parent.untranslated is not None:
        result.notes.append(_untranslated_file(f, f"an alias of {parent_name}, which is not declared"))
        return
    alias = InterfaceDraft(parent_name, parent.type, f.name, parent.order)  # collects the notes
    used = {"DEVICE"}
    _addresses(f, used, alias, result)
    for addr in alias.ipv4:
        if addr not in parent.ipv4:
            parent.ipv4.append(addr)
            parent.note(f"{addr} from {f.name} (an IP alias: vnetd adds it as a second address)")
    for c in alias.comments:
        parent.note(f"{f.name}: {c.text}", c.wrap)
    rest = [a for a in sorted(f.values.values(), key=lambda a: a.line) if a.key not in used]
    if rest:
        parent.note(f"not translated: {f.name}: " + " ".join(a.shown() for a in rest))


def _translate_route_file(text: str, name: str, result: IfcfgImport) -> None:
    device = name.split("-", 1)[1]
    family = 6 if name.startswith("route6-") else 4
    lines = split_lines(text)
    if family == 4 and any(re.match(r"^\s*ADDRESS[0-9]+=", line) for line in lines):
        _route_assignments(parse_ifcfg(text, name), device, name, result)
        return
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        route, problem = _ip_route_args(line.split(), device, family, f"{name}:{number}")
        if route is None:
            result.route_notes.append(Comment(f"not translated: {name}:{number}: {line}\n  ({problem})", wrap=False))
        else:
            route.comments.append(Comment(f"from {name}:{number}: {line}", wrap=False))
            result.routes.append(route)


def _ip_route_args(words: list[str], device: str, family: int, source: str) -> tuple[RouteDraft | None, str]:
    if not words:
        return None, "empty"
    dest = words[0]
    if dest == "default":
        dest = "0.0.0.0/0" if family == 4 else "::/0"
    elif "/" not in dest:
        dest += "/32" if family == 4 else "/128"
    problem = validate.ip_network(dest)
    if problem is not None:
        return None, problem
    gateway: str | None = None
    dev: str | None = device
    metric: int | None = None
    table: int | None = None
    i = 1
    while i < len(words):
        word = words[i]
        arg = words[i + 1] if i + 1 < len(words) else None
        if arg is None:
            return None, f"{word!r} needs a value"
        if word == "via":
            if (problem := validate.ip_address(arg)) is not None:
                return None, problem
            gateway = arg
        elif word == "dev":
            if (problem := validate.link_name(arg)) is not None:
                return None, problem
            dev = arg
        elif word in ("metric", "preference", "priority"):
            if _number(arg) is None:
                return None, f"{word} {arg!r} is not a number"
            metric = int(arg)
        elif word == "table":
            if _number(arg) is None or int(arg) in (0, 253, 255):
                return None, f"table {arg!r}: vnetd takes numbered tables (1-252, 254, 256-...)"
            table = None if int(arg) == 254 else int(arg)
        elif word == "proto" and arg in ("static", "boot"):
            pass
        else:
            return None, f"'{word} {arg}' is not translated (vnetd routes have via, dev, metric, table)"
        i += 2
    if ipaddress.ip_network(dest).version != family:
        return None, f"not an IPv{family} route"
    return RouteDraft(dest, gateway, dev, metric, source, table=table), ""


def _route_assignments(f: IfcfgFile, device: str, name: str, result: IfcfgImport) -> None:
    indexes = sorted({int(m.group(1)) for k in f.values if (m := re.match(r"^ADDRESS([0-9]{1,9})\Z", k))})
    used: set[str] = set()
    for i in indexes:
        keys = {k: f.get(f"{k}{i}") for k in ("ADDRESS", "NETMASK", "GATEWAY", "METRIC")}
        used.update(f"{k}{i}" for k, v in keys.items() if v is not None)
        words = [f"{keys['ADDRESS']}/{keys['NETMASK'] or '255.255.255.255'}"]
        try:
            words[0] = str(ipaddress.IPv4Network(words[0], strict=True))
        except ValueError as exc:
            result.route_notes.append(Comment(f"not translated: {name}: ADDRESS{i}={keys['ADDRESS']} "
                                        f"NETMASK{i}={keys['NETMASK']}: {exc}"))
            continue
        if keys["GATEWAY"]:
            words += ["via", keys["GATEWAY"]]
        if keys["METRIC"]:
            words += ["metric", keys["METRIC"]]
        route, problem = _ip_route_args(words, device, 4, f"{name}")
        shown = " ".join(f"{k}{i}={shown_value(v)}" for k, v in keys.items() if v is not None)
        if route is None:
            result.route_notes.append(Comment(f"not translated: {name}: {shown} ({problem})"))
        else:
            route.comments.append(Comment(f"from {name}: {shown}"))
            result.routes.append(route)
    rest = [a.shown() for a in f.values.values() if a.key not in used]
    if rest or f.junk:
        result.route_notes.append(Comment(f"not translated: {name}: " + " ".join(rest + [t for _, t, _ in f.junk])))


def _drop_clashing_rules(rules: list[RuleDraft]) -> None:
    """The same rule in two files (initscripts would add it twice; the kernel keeps one)."""
    seen: dict[tuple[object, ...], RuleDraft] = {}
    for rule in rules:
        if rule.untranslated is not None:
            continue
        key = (rule.family, rule.ip_from, rule.ip_to, rule.priority, rule.table, rule.fwmark, rule.fwmask, rule.iif,
               rule.action)
        first = seen.setdefault(key, rule)
        if first is not rule:
            rule.untranslated = f"the same rule as {first.source}"


def _drop_clashing_routes(routes: list[RouteDraft]) -> None:
    """The kernel keys routes by destination, table and metric: a second one would replace the first."""
    seen: dict[tuple[str, int, int], RouteDraft] = {}
    for route in routes:
        key = route.key()
        first = seen.get(key)
        if first is None:
            seen[key] = route
            continue
        route.untranslated = (f"the kernel holds one route to {route.destination} per metric and table, "
                              f"and {first.source} already gives one ({first.describe()})")
