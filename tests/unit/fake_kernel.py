# SPDX-License-Identifier: MIT
"""An in-memory kernel for planner tests: links, addresses and routes as rtnetlink
leaves them after each op of a plan, with no root and no namespace.

Only what the planner's decisions depend on is modelled, each with the kernel's own
rule (the function of net/ or drivers/net/ it stands for is named where it matters):

* new links get the kernel's defaults and a new ifindex: a bridge is down, MTU 1500,
  STP off, forward delay 15 s, hello 2 s, max age 20 s, priority 32768 (``br_dev_setup``);
  a veth makes both ends (``veth_newlink``); a VLAN takes its parent's MTU;
* a bridge whose MTU was never set explicitly follows the smallest MTU of its ports
  when a port joins or leaves, or a port's MTU changes (``br_mtu_auto_adjust``);
  setting a link's MTU to the value it has is a no-op that does not mark the bridge
  MTU as set by the user (``dev_set_mtu``'s early return);
* bridge options: the attributes of one request are applied in the kernel's fixed
  order (forward delay, hello, max age, STP state, priority; ``br_changelink``), a
  forward delay outside 2-30 s is refused while STP is on (``br_set_forward_delay``),
  and turning STP on clamps the forward delay into 2-30 s (``br_stp_start``);
* addresses: an IPv4 address whose subnet already has one is a secondary; deleting
  the primary deletes the secondaries too unless ``promote_secondaries``
  (``__inet_del_ifa``); deleting the last IPv4 address flushes the link's IPv4 routes
  (``fib_disable_ip``); a link going down loses its routes and, unless
  ``keep_addr_on_down``, its IPv6 addresses (``addrconf_ifdown``); going up, a link
  gets an IPv6 link-local address; IPv6 is off on links with an MTU below 1280;
* routes: addresses bring their prefix routes (protocol kernel; metric 0 for IPv4,
  256 for IPv6); a route without ``metric`` gets 0 (IPv4) or 1024 (IPv6) in table 254;
  a route needs an up device (ENETDOWN) and a gateway on a connected subnet
  (ENETUNREACH); adding a route whose (destination, table, metric) exists is EEXIST
  unless it replaces (NLM_F_EXCL / NLM_F_REPLACE, as the netlink backend sends them);
* sysctls: a per-interface key exists while its interface does.

``run(actions)`` applies ops as ``NetlinkBackend.execute_batch`` does, tolerating the
errno values it tolerates ("already so") and returning every other failure. The
NetState is changed only through its update methods (as notifications change the
daemon's), so ``state`` can be handed to a ``PlanMemo`` between passes.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import replace

from vnetd.model.interfaces import Address, BridgeInfo, IpInterface, Link, StpOptions
from vnetd.model.netstate import NetState
from vnetd.model.routes import KERNEL_ROUTE_PROTOCOL, MAIN_TABLE, Route
from vnetd.model.sysctl import normalize_value
from vnetd.plan.actions import (
    Action,
    AddAddress,
    AddRoute,
    CreateLink,
    DeleteLink,
    Op,
    RemoveAddress,
    RemoveRoute,
    SetBridgeOptions,
    SetLinkUp,
    SetMac,
    SetMaster,
    SetMtu,
    SetSysctl,
)

BRIDGE_DEFAULTS = BridgeInfo(stp_state=0, forward_delay=1500, hello_time=200, max_age=2000, priority=32768)
DEFAULT_MTU = 1500
IPV6_MIN_MTU = 1280
STATIC_PROTOCOL = 4  # RTPROT_STATIC, what the netlink backend writes
SCOPE_UNIVERSE, SCOPE_LINK, SCOPE_HOST = 0, 253, 254

#: per-interface keys that appear with each link (a few, enough for the planner tests)
PER_LINK_SYSCTLS = {
    "net.ipv4.conf.{}.forwarding": "0",
    "net.ipv4.conf.{}.rp_filter": "0",
    "net.ipv6.conf.{}.forwarding": "0",
    "net.ipv6.conf.{}.disable_ipv6": "0",
    "net.ipv4.neigh.{}.gc_stale_time": "60",
}
GLOBAL_SYSCTLS = {"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0"}

#: errno the netlink backend treats as "already so", per op (see NetlinkBackend._queue)
TOLERATED: dict[type, frozenset[int]] = {
    CreateLink: frozenset({errno.EEXIST}),
    DeleteLink: frozenset({errno.ENODEV}),
    AddAddress: frozenset({errno.EEXIST}),
    RemoveAddress: frozenset({errno.EADDRNOTAVAIL}),
    RemoveRoute: frozenset({errno.ESRCH}),
}


class KernelError(Exception):
    """What the kernel would answer (an errno) to one request."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{errno.errorcode.get(code, code)}: {message}")
        self.errno = code


def make_link(index: int, name: str, kind: str | None = None, *, up: bool = True, mtu: int = DEFAULT_MTU,
              mac: str | None = None, master: int | None = None, peer: int | None = None,
              bridge: BridgeInfo | None = None) -> Link:
    """A Link as a dump shows it; bridges get the kernel defaults unless ``bridge`` is given."""
    if kind == "bridge" and bridge is None:
        bridge = BRIDGE_DEFAULTS
    return Link(index=index, name=name, kind=kind, up=up, mtu=mtu, mac=mac or mac_of(index), master=master,
                link=peer, bridge=bridge)


def mac_of(index: int) -> str:
    return f"02:00:5e:{(index >> 16) & 255:02x}:{(index >> 8) & 255:02x}:{index & 255:02x}"


def link_local(index: int) -> ipaddress.IPv6Interface:
    return ipaddress.IPv6Interface(f"fe80::ff:fe00:{index:x}/64")


def prefix_route(index: int, ip: IpInterface) -> Route | None:
    """The route the kernel adds for an address (none for /32 and /128)."""
    if ip.network.prefixlen == ip.max_prefixlen:
        return None
    if ip.version == 4:
        return Route(ip.network, MAIN_TABLE, index, None, 0, KERNEL_ROUTE_PROTOCOL, SCOPE_LINK)
    return Route(ip.network, MAIN_TABLE, index, None, 256, KERNEL_ROUTE_PROTOCOL, SCOPE_UNIVERSE)


def copy_state(state: NetState) -> NetState:
    return NetState.build(state.links.values(), (a for addrs in state.addresses.values() for a in addrs),
                          state.routes)


class FakeKernel:
    """One network namespace's links, addresses, routes and net sysctls."""

    def __init__(self, state: NetState | None = None, *, mtu_set_by_user: Iterable[str] = (),
                 promote_secondaries: bool = False, keep_addr_on_down: bool = False,
                 sysctls: dict[str, str] | None = None) -> None:
        self.state = copy_state(state) if state is not None else NetState()
        self.promote_secondaries = promote_secondaries
        self.keep_addr_on_down = keep_addr_on_down
        #: bridges whose MTU was set explicitly (BROPT_MTU_SET_BY_USER)
        self._user_mtu = {self.state.names[n] for n in mtu_set_by_user if n in self.state.names}
        #: IPv4 addresses per link in the order they were added: a subnet's first is its primary
        self._v4: dict[int, list[ipaddress.IPv4Interface]] = {}
        for index, addrs in self.state.addresses.items():
            self._v4[index] = sorted((a.ip for a in addrs if isinstance(a.ip, ipaddress.IPv4Interface)),
                                     key=lambda ip: (int(ip.ip), ip.network.prefixlen))
        self.sysctls = dict(GLOBAL_SYSCTLS)
        for link in self.state.links.values():
            self._add_link_sysctls(link.name)
        self.sysctls.update(sysctls or {})
        self.applied: list[Op] = []
        self._last_index = 0

    # -- reading --------------------------------------------------------------------

    def observe(self) -> NetState:
        """A full dump: a new NetState equal in content to the kernel's."""
        return copy_state(self.state)

    def link(self, name: str) -> Link | None:
        return self.state.link(name)

    def addresses(self, name: str) -> set[IpInterface]:
        link = self.state.link(name)
        return {a.ip for a in self.state.addresses_of(link.index)} if link is not None else set()

    def master_of(self, name: str) -> str | None:
        link = self.state.link(name)
        return self.state.name_of(link.master) if link is not None else None

    def mtu_set_by_user(self, name: str) -> bool:
        link = self.state.link(name)
        return link is not None and link.index in self._user_mtu

    # -- devices that appear by themselves (hotplug, libvirt's taps) ------------------

    def add_device(self, name: str, kind: str | None = None, *, mtu: int = DEFAULT_MTU, up: bool = False,
                   mac: str | None = None) -> Link:
        """A NIC (kind None) or a tap ("tun") that something other than vnetd made."""
        if self.state.link(name) is not None:
            raise KernelError(errno.EEXIST, f"{name} exists")
        link = make_link(self._new_index(), name, kind, up=False, mtu=mtu, mac=mac)
        self._put(link)
        self._add_link_sysctls(name)
        if up:
            self._set_up(link, True)
        return self._get(name)

    # -- applying a plan --------------------------------------------------------------

    def run(self, actions: Sequence[Action]) -> list[tuple[Action, KernelError]]:
        """Apply each action's op in order; failures the netlink backend would report."""
        failures: list[tuple[Action, KernelError]] = []
        for action in actions:
            try:
                self.apply(action.op)
            except KernelError as exc:
                if exc.errno not in TOLERATED.get(type(action.op), frozenset()):
                    failures.append((action, exc))
        return failures

    def apply(self, op: Op) -> None:
        """One request; raises KernelError with the errno the kernel would return."""
        self.applied.append(op)
        match op:
            case CreateLink():
                self._create(op)
            case DeleteLink(name=name):
                self._delete(self._get(name))
            case SetMtu(name=name, mtu=mtu):
                self._set_mtu(self._get(name), mtu)
            case SetMac(name=name, mac=mac):
                self._put(replace(self._get(name), mac=mac.lower()))
            case SetLinkUp(name=name, up=up):
                self._set_up(self._get(name), up)
            case SetBridgeOptions(name=name, stp=stp):
                link = self._get(name)
                if link.kind != "bridge":
                    raise KernelError(errno.EOPNOTSUPP, f"{name} is not a bridge")
                self._changelink(link, stp)
            case SetMaster(name=name, master=master):
                self._set_master(self._get(name), self._get(master))
            case AddAddress(name=name, ip=ip):
                self._add_address(self._get(name), ip)
            case RemoveAddress(name=name, ip=ip):
                self._remove_address(self._get(name), ip)
            case AddRoute():
                self._add_route(op)
            case RemoveRoute():
                self._remove_route(op)
            case SetSysctl(key=key, value=value):
                if key not in self.sysctls:
                    raise KernelError(errno.ENOENT, f"/proc/sys/{key.replace('.', '/')}")
                self.sysctls[key] = normalize_value(value)
            case _:
                raise TypeError(f"not a kernel op: {op!r}")

    # -- links ------------------------------------------------------------------------

    def _new_index(self) -> int:
        """ifindexes are not reused (dev_index_reserve allocates cyclically)."""
        self._last_index = max(self._last_index, max(self.state.links, default=0)) + 1
        return self._last_index

    def _get(self, name: str) -> Link:
        link = self.state.link(name)
        if link is None:
            raise KernelError(errno.ENODEV, f"{name}: no such device")
        return link

    def _put(self, link: Link) -> None:
        self.state.put_link(link)

    def _add_link_sysctls(self, name: str) -> None:
        for template, value in PER_LINK_SYSCTLS.items():
            self.sysctls.setdefault(template.format(name), value)

    def _create(self, op: CreateLink) -> None:
        names = [op.name] + ([op.veth_peer] if op.kind == "veth" and op.veth_peer else [])
        for name in names:
            if self.state.link(name) is not None:
                raise KernelError(errno.EEXIST, f"{name} exists")
        index = self._new_index()
        mac = op.mac.lower() if op.mac else None
        if op.kind == "bridge":
            link = make_link(index, op.name, "bridge", up=False, mac=mac)
            self._put(link)
            try:
                self._changelink(link, op.stp or StpOptions())
            except KernelError:
                self._delete(self._get(op.name))  # br_dev_newlink unregisters the new bridge
                raise
        elif op.kind == "veth":
            peer_name = op.veth_peer or self._free_name("veth")
            peer = self._new_index()
            self._put(make_link(index, op.name, "veth", up=False, mac=mac, peer=peer))
            self._put(make_link(peer, peer_name, "veth", up=False, peer=index))
            self._add_link_sysctls(peer_name)
        elif op.kind == "vlan":
            if op.vlan_base is None or op.vlan_id is None:
                raise KernelError(errno.EINVAL, "a VLAN needs a parent and an id")
            base = self._get(op.vlan_base)
            self._put(replace(make_link(index, op.name, "vlan", up=False, mtu=base.mtu, mac=mac or base.mac),
                              link=base.index, vlan_id=op.vlan_id))
        elif op.kind == "dummy":
            self._put(make_link(index, op.name, "dummy", up=False, mac=mac))
        else:
            raise KernelError(errno.EOPNOTSUPP, f"unknown link kind {op.kind}")
        self._add_link_sysctls(op.name)

    def _free_name(self, prefix: str) -> str:
        n = 0
        while self.state.link(f"{prefix}{n}") is not None:
            n += 1
        return f"{prefix}{n}"

    def _delete(self, link: Link) -> None:
        if link.kind in (None, "tun"):
            raise KernelError(errno.EOPNOTSUPP, f"{link.name}: NICs and taps are not deleted through rtnetlink")
        doomed = [link]
        if link.kind == "veth" and link.link in self.state.links:
            doomed.append(self.state.links[link.link])
        doomed += [lk for lk in self.state.links.values()
                   if lk.kind == "vlan" and lk.link in {d.index for d in doomed}]
        for dead in doomed:
            if dead.index not in self.state.links:
                continue
            dead = self.state.links[dead.index]
            for port in list(self.state.ports_of(dead.index)):
                self._put(replace(port, master=None))
            master = dead.master
            self.state.drop_link(dead.index)  # with its addresses and the routes through it
            self._v4.pop(dead.index, None)
            self._user_mtu.discard(dead.index)
            for template in PER_LINK_SYSCTLS:
                self.sysctls.pop(template.format(dead.name), None)
            if master is not None:
                self._auto_adjust(master)

    def _set_mtu(self, link: Link, mtu: int, by_user: bool = True) -> None:
        if not 68 <= mtu <= 65535:
            raise KernelError(errno.EINVAL, f"{link.name}: MTU {mtu} out of range")
        if link.kind == "vlan" and link.link in self.state.links and mtu > self.state.links[link.link].mtu:
            raise KernelError(errno.ERANGE, f"{link.name}: MTU above its parent's")
        if mtu == link.mtu:
            return  # dev_set_mtu: nothing changes, and nothing is remembered
        old = link.mtu
        self._put(replace(link, mtu=mtu))
        if link.kind == "bridge":
            if by_user:
                self._user_mtu.add(link.index)
            else:
                self._user_mtu.discard(link.index)
        if mtu < IPV6_MIN_MTU <= old:
            self._ipv6_off(link.index)
        elif old < IPV6_MIN_MTU <= mtu and link.up:
            self._ipv6_on(link.index)
        for upper in [lk for lk in self.state.links.values() if lk.kind == "vlan" and lk.link == link.index]:
            if upper.mtu > mtu:
                self._set_mtu(upper, mtu, by_user=False)
        if link.master is not None:
            self._auto_adjust(link.master)

    def _auto_adjust(self, bridge_index: int) -> None:
        """br_mtu_auto_adjust: a bridge whose MTU nobody set follows its smallest port."""
        bridge = self.state.links.get(bridge_index)
        if bridge is None or bridge.kind != "bridge" or bridge_index in self._user_mtu:
            return
        ports = [p.mtu for p in self.state.ports_of(bridge_index)]
        self._set_mtu(bridge, min(ports) if ports else DEFAULT_MTU, by_user=False)

    def _set_master(self, port: Link, master: Link) -> None:
        if master.kind != "bridge":
            raise KernelError(errno.EOPNOTSUPP, f"{master.name} is not a bridge")
        if port.kind == "bridge" or port.index == master.index:
            raise KernelError(errno.ELOOP, f"{port.name} cannot be a port of {master.name}")
        if port.master == master.index:
            return
        old = port.master
        self._put(replace(port, master=master.index))
        if old is not None:
            self._auto_adjust(old)
        self._auto_adjust(master.index)

    def _changelink(self, link: Link, stp: StpOptions) -> None:
        """br_changelink: attributes in the kernel's order, whatever order they were sent in;
        what was applied before a refused attribute stays applied."""
        info = link.bridge or BRIDGE_DEFAULTS

        def commit(new: BridgeInfo) -> BridgeInfo:
            self._put(replace(self._get(link.name), bridge=new))
            return new

        if stp.forward_delay is not None:
            if info.stp_state != 0 and not 2 <= stp.forward_delay <= 30:
                raise KernelError(errno.ERANGE, f"{link.name}: forward delay {stp.forward_delay} with STP on")
            info = commit(replace(info, forward_delay=stp.forward_delay * 100))
        if stp.hello_time is not None:
            if not 1 <= stp.hello_time <= 10:
                raise KernelError(errno.ERANGE, f"{link.name}: hello time {stp.hello_time}")
            info = commit(replace(info, hello_time=stp.hello_time * 100))
        if stp.max_age is not None:
            if not 6 <= stp.max_age <= 40:
                raise KernelError(errno.ERANGE, f"{link.name}: max age {stp.max_age}")
            info = commit(replace(info, max_age=stp.max_age * 100))
        if stp.enabled is not None:
            if stp.enabled and info.stp_state == 0:
                delay = min(max(info.forward_delay, 200), 3000)  # br_stp_start clamps it
                info = commit(replace(info, stp_state=1, forward_delay=delay))
            elif not stp.enabled and info.stp_state != 0:
                info = commit(replace(info, stp_state=0))
        if stp.priority is not None:
            info = commit(replace(info, priority=stp.priority & 0xFFFF))

    def _set_up(self, link: Link, up: bool) -> None:
        if link.up == up:
            return
        self._put(replace(link, up=up))
        if up:
            for ip in self._primaries(link.index):
                self._put_prefix_route(link.index, ip)
            for addr in list(self.state.addresses_of(link.index)):
                if addr.ip.version == 6:
                    self._put_prefix_route(link.index, addr.ip)
            if link.mtu >= IPV6_MIN_MTU:
                self._ipv6_on(link.index)
        else:
            for route in [r for r in self.state.routes if r.oif == link.index]:
                self.state.drop_route(route)
            if not self.keep_addr_on_down:
                self._drop_addresses(link.index, 6)

    def _ipv6_on(self, index: int) -> None:
        addrs = self.state.addresses_of(index)
        if not any(a.ip.version == 6 and a.ip.is_link_local for a in addrs):
            self.state.put_address(Address(index, link_local(index), scope=SCOPE_LINK))
            self._put_prefix_route(index, link_local(index))

    def _ipv6_off(self, index: int) -> None:
        self._drop_addresses(index, 6)
        for route in [r for r in self.state.routes if r.oif == index and r.family == 6]:
            self.state.drop_route(route)

    def _drop_addresses(self, index: int, version: int) -> None:
        for addr in [a for a in self.state.addresses_of(index) if a.ip.version == version]:
            self.state.drop_address(addr)
            route = prefix_route(index, addr.ip)
            if route is not None:
                self.state.drop_route(route)

    # -- addresses --------------------------------------------------------------------

    def _primaries(self, index: int) -> list[ipaddress.IPv4Interface]:
        seen: set[ipaddress.IPv4Network] = set()
        out = []
        for ip in self._v4.get(index, []):
            if ip.network not in seen:
                seen.add(ip.network)
                out.append(ip)
        return out

    def _put_prefix_route(self, index: int, ip: IpInterface) -> None:
        route = prefix_route(index, ip)
        if route is not None:
            self.state.put_route(route)

    def _add_address(self, link: Link, ip: IpInterface) -> None:
        current = {a.ip for a in self.state.addresses_of(link.index)}
        if ip.version == 6:
            if link.mtu < IPV6_MIN_MTU:
                raise KernelError(errno.EINVAL, f"{link.name}: IPv6 is off below MTU 1280")
            if any(have.ip == ip.ip for have in current):
                raise KernelError(errno.EEXIST, f"{ip.ip} exists on {link.name}")
            self.state.put_address(Address(link.index, ip, scope=SCOPE_LINK if ip.is_link_local else 0))
            if link.up:
                self._put_prefix_route(link.index, ip)
            return
        assert isinstance(ip, ipaddress.IPv4Interface)
        if ip in current:
            raise KernelError(errno.EEXIST, f"{ip} exists on {link.name}")
        primary = ip.network not in {p.network for p in self._primaries(link.index)}
        self._v4.setdefault(link.index, []).append(ip)
        self.state.put_address(Address(link.index, ip))
        if primary and link.up:
            self._put_prefix_route(link.index, ip)

    def _remove_address(self, link: Link, ip: IpInterface) -> None:
        if Address(link.index, ip) not in self.state.addresses_of(link.index):
            raise KernelError(errno.EADDRNOTAVAIL, f"{ip} is not on {link.name}")
        self.state.drop_address(Address(link.index, ip))
        if ip.version == 6:
            others = {a.ip.network for a in self.state.addresses_of(link.index)}
            route = prefix_route(link.index, ip)
            if route is not None and ip.network not in others:
                self.state.drop_route(route)
            return
        assert isinstance(ip, ipaddress.IPv4Interface)
        was_primary = ip in self._primaries(link.index)
        self._v4[link.index].remove(ip)
        if was_primary:
            secondaries = [s for s in self._v4[link.index] if s.network == ip.network]
            if secondaries and self.promote_secondaries:
                pass  # the next one becomes the primary; the prefix route stays
            else:
                for s in secondaries:  # __inet_del_ifa: they go with their primary
                    self._v4[link.index].remove(s)
                    self.state.drop_address(Address(link.index, s))
                route = prefix_route(link.index, ip)
                if route is not None:
                    self.state.drop_route(route)
        if not self._v4[link.index]:  # the last IPv4 address: fib_disable_ip
            for route in [r for r in self.state.routes if r.oif == link.index and r.family == 4]:
                self.state.drop_route(route)

    # -- routes -----------------------------------------------------------------------

    def _add_route(self, op: AddRoute) -> None:
        family = op.destination.version
        metric = op.metric if op.metric is not None else (0 if family == 4 else 1024)
        oif: int | None = None
        if op.device is not None:
            device = self._get(op.device)
            if not device.up:
                raise KernelError(errno.ENETDOWN, f"{device.name} is down")
            if family == 6 and device.mtu < IPV6_MIN_MTU:
                raise KernelError(errno.ENETDOWN, f"{device.name} has IPv6 off")
            oif = device.index
        if op.gateway is not None:
            if op.gateway.version != family:
                raise KernelError(errno.EINVAL, "gateway of another family")
            if any(a.ip.ip == op.gateway for addrs in self.state.addresses.values() for a in addrs):
                raise KernelError(errno.EINVAL, f"gateway {op.gateway} is a local address")
            oif = self._connected(op.gateway, oif)
            if oif is None:
                raise KernelError(errno.ENETUNREACH, f"gateway {op.gateway} is not on a connected subnet")
        elif oif is None:
            raise KernelError(errno.EINVAL, "a route needs a gateway or a device")
        scope = SCOPE_UNIVERSE if op.gateway is not None or family == 6 else SCOPE_LINK
        new = Route(op.destination, op.table, oif, op.gateway, metric, STATIC_PROTOCOL, scope)
        same_key = sorted((r for r in self.state.routes
                           if r.destination == op.destination and r.table == op.table and r.priority == metric),
                          key=_route_order)
        if same_key:
            if not op.replace:
                raise KernelError(errno.EEXIST, f"a route to {op.destination} metric {metric} exists")
            self.state.drop_route(same_key[0])
        self.state.put_route(new)

    def _connected(self, gateway: ipaddress.IPv4Address | ipaddress.IPv6Address, oif: int | None) -> int | None:
        """The device of the longest direct route that covers ``gateway`` (on ``oif`` if given)."""
        best: Route | None = None
        for route in self.state.routes:
            if route.gateway is not None or route.oif is None or gateway not in route.destination:
                continue
            if route.table not in (MAIN_TABLE,) or (oif is not None and route.oif != oif):
                continue
            if best is None or route.destination.prefixlen > best.destination.prefixlen:
                best = route
        return best.oif if best is not None else None

    def _remove_route(self, op: RemoveRoute) -> None:
        """Given fields must match; metric 0 matches any (fib_nh_match, ip6_route_del)."""
        for route in sorted(self.state.routes, key=_route_order):
            if route.destination != op.destination or route.table != op.table:
                continue
            if op.gateway is not None and route.gateway != op.gateway:
                continue
            if op.oif is not None and route.oif != op.oif:
                continue
            if op.metric and route.priority != op.metric:
                continue
            self.state.drop_route(route)
            return
        raise KernelError(errno.ESRCH, f"no route to {op.destination} in table {op.table}")


def _route_order(route: Route) -> tuple[int, int, str, int]:
    return (route.priority, route.oif or 0, str(route.gateway), route.protocol)
