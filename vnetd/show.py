# SPDX-License-Identifier: MIT
"""``vnetd show``: the current state as a valid state file.

Fed back unchanged, it plans nothing: every value written here is the value the
kernel has. Addresses and routes that belong to someone else (DHCP/SLAAC leases,
routes the kernel made for an address) are left out, so that feeding the output
back never turns a lease into a static address. Firewall rules, chains and tables
of other tools are not vnetd's to declare, but the administrator must see them:
they are comments (``# foreign rule (not managed): -A FORWARD ...``), as
iptables-save would print them. A bond is shown with its mode and ports
(not its options: the kernel reports every option, and some are refused in the
bond's own mode); the kernel's own routing rules are not shown.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from vnetd.model.bond import MODE_NAMES
from vnetd.model.interfaces import Link
from vnetd.model.netstate import NetState
from vnetd.model.route_rules import ACTION_NAMES, FR_ACT_TO_TBL, RouteRule
from vnetd.model.routes import KERNEL_ROUTE_PROTOCOL, MAIN_TABLE, Route

if TYPE_CHECKING:
    from vnetd.model.firewall import ShownChain, ShownTable

_LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")
#: rtm_protocol values of routes some other daemon owns (dhcp, ra, redirect)
_FOREIGN_PROTOCOLS = {KERNEL_ROUTE_PROTOCOL, 1, 9, 16}
_KIND_TYPES = {"bridge": "linux-bridge", "veth": "veth", "vlan": "vlan", "bond": "bond", "vxlan": "vxlan",
               "dummy": "dummy", "tun": "tun"}


def link_type(link: Link) -> str:
    if link.name == "lo" and link.kind is None:
        return "loopback"
    if link.kind is None:
        return "ethernet"
    return _KIND_TYPES.get(link.kind, "unknown")


def interfaces_section(net: NetState) -> list[dict[str, Any]]:
    out = []
    for link in sorted(net.links.values(), key=lambda lk: lk.index):
        entry: dict[str, Any] = {"name": link.name, "type": link_type(link), "state": "up" if link.up else "down"}
        if 68 <= link.mtu <= 65535:  # loopback's 65536 is outside what a state file may set
            entry["mtu"] = link.mtu

        if link.mac and entry["type"] != "loopback":
            entry["mac-address"] = link.mac.upper()
        if link.kind == "veth" and link.link_netnsid is None and link.link in net.links:
            entry["veth"] = {"peer": net.links[link.link].name}
        if link.kind == "vlan" and link.link in net.links and link.vlan_id is not None:
            entry["vlan"] = {"base-iface": net.links[link.link].name, "id": link.vlan_id}
            if link.vlan is not None:
                entry["vlan"]["protocol"] = "802.1ad" if link.vlan.protocol == 0x88A8 else "802.1q"
        if link.kind == "vxlan" and link.vxlan is not None:
            entry["vxlan"] = _vxlan_entry(link, net)
        if link.kind == "bond" and link.bond is not None:
            entry["link-aggregation"] = {"mode": MODE_NAMES.get(link.bond.mode, "balance-rr"),
                                         "port": sorted(p.name for p in net.ports_of(link.index))}
        if link.kind == "bridge" and link.bridge is not None:
            b = link.bridge
            stp: dict[str, Any] = {"enabled": b.stp_state != 0, "forward-delay": round(b.forward_delay / 100),
                                   "hello-time": round(b.hello_time / 100), "max-age": round(b.max_age / 100),
                                   "priority": b.priority}
            entry["bridge"] = {"options": {"stp": stp},
                               "port": [{"name": p.name} for p in sorted(net.ports_of(link.index),
                                                                         key=lambda p: p.name)]}
        for version in (4, 6):
            addrs = sorted((a for a in net.addresses_of(link.index)
                            if a.ip.version == version and a.permanent
                            and not (version == 6 and a.ip.ip in _LINK_LOCAL_V6)), key=lambda a: str(a.ip))
            if addrs:
                entry[f"ipv{version}"] = {"enabled": True, "address": [
                    {"ip": str(a.ip.ip), "prefix-length": a.ip.network.prefixlen} for a in addrs]}
        out.append(entry)
    return out


def _vxlan_entry(link: Link, net: NetState) -> dict[str, Any]:
    assert link.vxlan is not None
    v = link.vxlan
    entry: dict[str, Any] = {"id": v.id}
    if v.remote is not None:
        entry["remote"] = str(v.remote)
    if v.local is not None:
        entry["local"] = str(v.local)
    base = net.name_of(v.link)
    if base is not None:
        entry["base-iface"] = base
    entry["destination-port"] = v.port
    entry["learning"] = v.learning
    return entry


def routes_section(net: NetState) -> list[dict[str, Any]]:
    out = []
    for route in sorted(net.routes, key=_route_key):
        if route.protocol in _FOREIGN_PROTOCOLS:
            continue
        if route.destination.version == 6 and route.destination.subnet_of(_LINK_LOCAL_V6):  # type: ignore[arg-type]
            continue
        if route.gateway is None and route.oif is None:
            continue
        entry: dict[str, Any] = {"destination": str(route.destination)}
        if route.gateway is not None:
            entry["next-hop-address"] = str(route.gateway)
        dev = net.name_of(route.oif)
        if dev is not None:
            entry["next-hop-interface"] = dev
        entry["metric"] = route.priority
        if route.table != MAIN_TABLE:
            entry["table-id"] = route.table
        out.append(entry)
    return out


def route_rules_section(net: NetState) -> list[dict[str, Any]]:
    """The rules a state file can declare; not the kernel's own three (local, main,
    default) and not rules with selectors vnetd does not manage (oif, tos, not...)."""
    out = []
    for rule in sorted(net.rules, key=lambda r: (r.family, r.priority, r.describe())):
        if rule.kernel_default or rule.other or (rule.action != FR_ACT_TO_TBL and rule.action not in ACTION_NAMES):
            continue
        out.append(_rule_entry(rule))
    return out


def _rule_entry(rule: RouteRule) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if rule.source is not None:
        entry["ip-from"] = str(rule.source)
    if rule.destination is not None:
        entry["ip-to"] = str(rule.destination)
    if rule.source is None and rule.destination is None:
        entry["family"] = f"ipv{rule.family}"
    entry["priority"] = rule.priority
    if rule.iif is not None:
        entry["iif"] = rule.iif
    if rule.fwmark or rule.fwmask:
        entry["fwmark"] = f"{rule.fwmark:#x}"
        entry["fwmask"] = f"{rule.fwmask:#x}"
    action = ACTION_NAMES.get(rule.action)
    if action is not None:
        entry["action"] = action.value
    else:
        entry["route-table"] = rule.table
    return entry


def _route_key(route: Route) -> tuple[int, int, str, int]:
    return (route.destination.version, route.table, str(route.destination), route.priority)


def _yaml(data: Any) -> str:
    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=False, width=1000))


def _key(name: str) -> str:
    """A mapping key as YAML would write it (a chain named 1 or true must stay a string)."""
    return _yaml({name: 0}).rsplit(": 0", 1)[0]


def _item(text: str) -> str:
    """A sequence item as YAML would write it (quoted where a rule needs it)."""
    return _yaml([text]).rstrip("\n")


def _unmanaged_chain(chain: ShownChain) -> list[tuple[str, str]]:
    """A chain vnetd has nothing in, as (what, iptables -S command) pairs: only what
    differs from an empty built-in chain (a policy other than ACCEPT, any rule, a
    user chain)."""
    lines = []
    if not chain.builtin:
        lines.append(("foreign chain", f"-N {chain.name}"))
    elif chain.policy not in (None, "ACCEPT"):
        lines.append(("policy", f"-P {chain.name} {chain.policy}"))
    lines += [("foreign rule", f"-A {chain.name} {r.text}") for r in chain.rules]
    return lines


def chain_matches(table: str, chain: str, names: Collection[str]) -> bool:
    """A chain named on the command line: ``FORWARD`` (in any table) or ``nat/POSTROUTING``."""
    return chain in names or f"{table}/{chain}" in names


def firewall_text(tables: Sequence[ShownTable], declared: set[tuple[str, str]], nft_tables: Sequence[str],
                  names: Collection[str] = (), section: str = "firewall", variant: str = "legacy") -> str:
    """The firewall: (or firewall6:) section: the chains vnetd manages (or the files declare) as YAML,
    with each foreign rule as a comment where it sits; chains and whole tables vnetd
    has nothing in as comments; other firewalls (nf_tables) named at the end.
    ``variant``: the iptables variant whose tables these are ("legacy", "nft"). Fed
    back to vnetd, the comments change nothing: foreign rules are never touched.
    ``names``: only the chains named so (CHAIN or TABLE/CHAIN), nothing else."""
    lines: list[str] = []
    if names:
        from vnetd.model.firewall import ShownTable

        narrowed = (ShownTable(t.name, tuple(c for c in t.chains if chain_matches(t.name, c.name, names)))
                    for t in tables)
        tables = [t for t in narrowed if t.chains]
        nft_tables = ()
    for table in tables:
        shown = [c for c in table.chains if c.managed or (table.name, c.name) in declared]
        if not shown:
            # as iptables -S orders them: policies, new chains, then the rules
            rest = sorted((command for c in table.chains for _what, command in _unmanaged_chain(c)),
                          key=lambda command: "-P -N -A".index(command[:2]))
            if rest:
                lines.append(f"  # foreign table (not managed): {table.name}")
                lines += [f"  #   {command}" for command in rest]
            continue
        lines.append(f"  {_key(table.name)}:")
        for chain in table.chains:
            if chain not in shown:
                lines += [f"    # {what} (not managed): {command}" for what, command in _unmanaged_chain(chain)]
                continue
            lines.append(f"    {_key(chain.name)}:")
            if chain.builtin and chain.policy is not None:
                lines.append(f"      policy: {chain.policy}")
            lines.append("      rules:" if any(r.managed for r in chain.rules) else "      rules: []")
            for rule in chain.rules:
                lines.append(f"      {_item(rule.text)}" if rule.managed
                             else f"      # foreign rule (not managed): -A {chain.name} {rule.text}")
    text = ""
    if any(not line.lstrip().startswith("#") for line in lines):
        text = f"{section}:\n" + "".join(f"{line}\n" for line in lines)
    elif lines:
        tool = "ip6tables" if section == "firewall6" else "iptables"
        text = f"# {section}: nothing of vnetd's in the {tool}-{variant} tables\n" + "".join(
            f"#{line[3:]}\n" for line in lines)
    return text + nft_comment(nft_tables)


def nft_comment(nft_tables: Sequence[str]) -> str:
    """nf_tables tables named as comments: not vnetd's, but packets pass them too."""
    text = ""
    for name in nft_tables:
        family, _, table_name = name.partition(" ")
        text += (f"# nf_tables table (not managed; packets pass it too, `nft list table {family} {table_name}` "
                 f"shows it): {name}\n")
    return text


def net_sections(net: NetState) -> str:
    """interfaces:, routes: and route-rules: as YAML."""
    sections: dict[str, Any] = {"interfaces": interfaces_section(net)}
    routes = routes_section(net)
    if routes:
        sections["routes"] = {"config": routes}
    rules = route_rules_section(net)
    if rules:
        sections["route-rules"] = {"config": rules}
    return _yaml(sections)


def sysctl_section(values: dict[str, str | None]) -> str:
    """sysctl: with the keys read (a key the kernel does not have is left out)."""
    return _yaml({"sysctl": {k: _sysctl_scalar(v) for k, v in values.items() if v is not None}})


def libvirt_section(networks: Any) -> str:
    return _yaml({"libvirt": networks})


#: the sections ``vnetd show`` writes, in order (``--section`` picks among them)
SECTIONS = ("interfaces", "routes", "route-rules", "sysctl", "firewall", "firewall6", "libvirt")


def show_state(state_dir: str, netns: str | None, sections: Collection[str] | None = None,
               names: Collection[str] = ()) -> str:
    """The whole current state; declared sysctl keys and libvirt networks when known,
    the firewall with every foreign rule, chain and table as a comment.

    ``sections``: only those; ``names``: only the interfaces (and the routes through
    them or to them), chains, sysctl keys and libvirt networks named so. A name that
    matches nothing is an error (VnetdError), with the names that come close."""
    from datetime import UTC, datetime

    def wanted(section: str) -> bool:
        return sections is None or section in sections

    found: set[str] = set()
    candidates: set[str] = set()
    out: dict[str, Any] = {}
    if wanted("interfaces") or wanted("routes") or wanted("route-rules"):
        from vnetd.backends.netlink import NetlinkBackend

        backend = NetlinkBackend()
        try:
            net = backend.observe()
        finally:
            backend.close()
        interfaces = interfaces_section(net)
        candidates |= {i["name"] for i in interfaces}
        if names:
            interfaces = [i for i in interfaces if i["name"] in names]
            found |= {i["name"] for i in interfaces}
        if wanted("interfaces") and (interfaces or not names):
            out["interfaces"] = interfaces
        routes = routes_section(net)
        if names:
            routes = [r for r in routes if r.get("next-hop-interface") in names or r["destination"] in names]
            found |= {r["destination"] for r in routes if r["destination"] in names}
        if wanted("routes") and routes:
            out["routes"] = {"config": routes}
        rules = route_rules_section(net)
        if names:
            rules = [r for r in rules if r.get("iif") in names]
        if wanted("route-rules") and rules:
            out["route-rules"] = {"config": rules}
    desired = _declared(state_dir)
    if wanted("sysctl"):
        keys = [s.key for s in desired.sysctls] if desired is not None else []
        candidates |= set(keys)
        if names:
            from vnetd.desired.sysctl import canonical_key, key_problem

            keys = [k for k in keys if k in names] + [canonical_key(n) for n in names
                                                      if key_problem(n) is None and canonical_key(n) not in keys]
        if keys:
            from vnetd.backends.sysctl import SysctlBackend

            values = SysctlBackend().read(keys)
            shown = {k: _sysctl_scalar(v) for k, v in values.items() if v is not None}
            found |= {n for n in names if n in shown or (("." in n or "/" in n) and _canonical(n) in shown)}
            if shown:
                out["sysctl"] = shown
    firewall = ""
    if wanted("firewall") or wanted("firewall6"):
        from vnetd.managers.firewall import FirewallManager, ShowNames

        manager = FirewallManager(None)
        seen = ShowNames()
        try:
            firewall = manager.show(desired, names=names, sections=sections, seen=seen)
        finally:
            manager.close()
        candidates |= seen.candidates
        found |= seen.found
    libvirt = ""
    if wanted("libvirt") and desired is not None and desired.libvirt is not None:
        from vnetd.backends.libvirt import show_libvirt

        networks = show_libvirt(desired.libvirt.uri)
        if networks is not None:
            candidates |= {n["name"] for n in networks["networks"]}
            if names:
                networks["networks"] = [n for n in networks["networks"] if n["name"] in names]
                found |= {n["name"] for n in networks["networks"]}
            if networks["networks"] or not names:
                libvirt = _yaml({"libvirt": networks})
    missing = [n for n in names if n not in found]
    if missing:
        from vnetd.desired.suggest import did_you_mean
        from vnetd.errors import VnetdError

        named = []
        for name in missing:
            hint = did_you_mean(name, candidates)
            named.append(f"{name}" + (f" ({hint})" if hint else ""))
        raise VnetdError(f"show: nothing is named {', '.join(named)} among the "
                         f"{', '.join(s for s in SECTIONS if wanted(s))} here")
    where = f"network namespace {netns}" if netns else "this host"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    narrowed = ""
    if names or sections is not None:
        narrowed = "# Only " + "; ".join(p for p in (
            f"the sections {', '.join(s for s in SECTIONS if wanted(s))}" if sections is not None else "",
            f"what is named {', '.join(names)}" if names else "") if p) + \
            ": fed back as a state file, this declares only that.\n"
    header = (f"# vnetd show: current state of {where}, {stamp}\n"
              "# What vnetd does not manage (other tools' rules, chains and tables) is shown as comments.\n"
              + narrowed)
    return header + (_yaml(out) if out else "") + firewall + libvirt


def _canonical(key: str) -> str:
    from vnetd.desired.sysctl import canonical_key

    return canonical_key(key)


def _declared(state_dir: str) -> Any:
    from vnetd.desired.loader import load_state_dir
    from vnetd.errors import ConfigError

    try:
        return load_state_dir(state_dir)
    except ConfigError:
        return None


def _sysctl_scalar(value: str) -> int | str:
    return int(value) if value.lstrip("-").isdigit() else value
