# SPDX-License-Identifier: MIT
"""Links, addresses, routes and policy routing rules through rtnetlink: observe and apply.

Appliers tolerate the errno that means "already so" (EEXIST on add, EADDRNOTAVAIL /
ESRCH on delete) so that every op is idempotent; any other errno becomes a
``BackendError`` for that one action, and the other actions go on.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from vnetd.backends import rtnl
from vnetd.errors import BackendError
from vnetd.model.bond import MODES
from vnetd.model.interfaces import (
    VLAN_REGISTRATION,
    VXLAN_PORT,
    Address,
    Link,
    StpOptions,
    VlanOptions,
    VlanProtocol,
    VxlanConfig,
)
from vnetd.model.netstate import NetState
from vnetd.model.route_rules import RouteRule
from vnetd.model.routes import Route
from vnetd.plan.actions import (
    Action,
    AddAddress,
    AddRoute,
    AddRouteRule,
    AttachTap,
    CreateLink,
    DeleteLink,
    RemoveAddress,
    RemoveRoute,
    RemoveRouteRule,
    SetBridgeOptions,
    SetLinkOptions,
    SetLinkUp,
    SetMac,
    SetMaster,
    SetMtu,
)

#: Requests after which the request socket is replaced (pyroute2-style sockets grew
#: without bound in long runs here; a plain socket does not, but recycling is cheap).
RECYCLE_AFTER = 20_000


def bridge_data(stp: StpOptions | None) -> list[tuple[str, int]]:
    """IFLA_BR_* attributes for the options that are set (seconds -> centiseconds).

    Their order does not matter: the kernel applies timers before the STP state
    whatever the order in the message (br_changelink), checking them against the
    STP state the bridge had before the request. That is why the planner turns STP
    off in an action of its own before timers change (plan.interfaces._stp_changes).
    """
    if stp is None:
        return []
    timers: list[tuple[str, int]] = []
    if stp.forward_delay is not None:
        timers.append(("IFLA_BR_FORWARD_DELAY", stp.forward_delay * 100))
    if stp.hello_time is not None:
        timers.append(("IFLA_BR_HELLO_TIME", stp.hello_time * 100))
    if stp.max_age is not None:
        timers.append(("IFLA_BR_MAX_AGE", stp.max_age * 100))
    if stp.priority is not None:
        timers.append(("IFLA_BR_PRIORITY", stp.priority))
    if stp.enabled is not None:
        timers.append(("IFLA_BR_STP_STATE", 1 if stp.enabled else 0))
    return timers


def vlan_flags(options: VlanOptions | None) -> tuple[int, int] | None:
    """(flags, mask) of the VLAN flags that are written; None when none is."""
    if options is None:
        return None
    flags = mask = 0
    for value, bit in ((options.reorder_headers, rtnl.VLAN_FLAG_REORDER_HDR),
                       (options.loose_binding, rtnl.VLAN_FLAG_LOOSE_BINDING)):
        if value is not None:
            mask |= bit
            flags |= bit if value else 0
    if options.registration_protocol is not None:
        assert options.registration_protocol in VLAN_REGISTRATION
        mask |= rtnl.VLAN_FLAG_GVRP | rtnl.VLAN_FLAG_MVRP
        flags |= {"gvrp": rtnl.VLAN_FLAG_GVRP, "mvrp": rtnl.VLAN_FLAG_MVRP}.get(options.registration_protocol, 0)
    return (flags, mask) if mask else None


def vlan_ethertype(protocol: VlanProtocol | None) -> int | None:
    if protocol is None:
        return None
    return rtnl.ETH_P_8021AD if protocol is VlanProtocol.DOT1AD else rtnl.ETH_P_8021Q


class NetlinkBackend:
    """One request socket in the current network namespace."""

    def __init__(self) -> None:
        self._sock = rtnl.RtnlSocket()

    def close(self) -> None:
        self._sock.close()

    def _socket(self) -> rtnl.RtnlSocket:
        if self._sock.requests > RECYCLE_AFTER:
            self._sock.close()
            self._sock = rtnl.RtnlSocket()
        return self._sock

    # -- observe --------------------------------------------------------------------

    def dump_links(self) -> list[Link]:
        return [rtnl.decode_link(buf, off, ln) for buf, mtype, off, ln in self._socket().dump(rtnl.link_dump())
                if mtype == rtnl.RTM_NEWLINK]

    def dump_addresses(self) -> list[Address]:
        out = []
        for buf, mtype, off, ln in self._socket().dump(rtnl.addr_dump()):
            if mtype == rtnl.RTM_NEWADDR and (addr := rtnl.decode_address(buf, off, ln)) is not None:
                out.append(addr)
        return out

    def dump_routes(self) -> list[Route]:
        out = []
        for buf, mtype, off, ln in self._socket().dump(rtnl.route_dump()):
            if mtype == rtnl.RTM_NEWROUTE and (route := rtnl.decode_route(buf, off, ln)) is not None:
                out.append(route)
        return out

    def dump_rules(self) -> list[RouteRule]:
        out = []
        for buf, mtype, off, ln in self._socket().dump(rtnl.rule_dump()):
            if mtype == rtnl.RTM_NEWRULE and (rule := rtnl.decode_rule(buf, off, ln)) is not None:
                out.append(rule)
        return out

    def observe(self) -> NetState:
        """A full read: every link, address, route and rule of the namespace."""
        return NetState.build(self.dump_links(), self.dump_addresses(), self.dump_routes(), self.dump_rules())

    def get_link(self, name: str) -> Link | None:
        reply = self._socket().get(rtnl.link_get(name))
        return rtnl.decode_link(*reply) if reply is not None else None

    # -- apply ----------------------------------------------------------------------

    def execute_batch(self, actions: Sequence[Action], state: NetState) -> list[tuple[Action, BackendError | None]]:
        """Carry out link/address/route ops in order, pipelined; one result per action.

        Requests are queued and sent together; the queue is flushed early when an op
        names a link that a queued request is creating (its ifindex is needed), and
        ``state`` learns each created link. Once an action of a resource fails, the
        later failures of the same resource in the batch are not reported again.
        """
        sock = self._socket()
        results: list[tuple[Action, BackendError | None]] = []
        queue: list[_Queued] = []
        creating: set[str] = set()
        failed: set[str] = set()

        def flush() -> None:
            codes = sock.request_many([r for q in queue for r in q.requests])
            i = 0
            for q in queue:
                mine = codes[i : i + len(q.requests)]
                i += len(q.requests)
                bad = next((c for c in mine if c and c not in q.ok), 0)
                if not bad:
                    if q.on_success is not None:
                        q.on_success()
                    results.append((q.action, None))
                    continue
                if q.action.resource in failed:
                    continue
                failed.add(q.action.resource)
                results.append((q.action, _error(bad, q.action.resource, q.what, q.kind)))
            queue.clear()
            for name in creating:
                link = self.get_link(name)
                if link is not None:
                    state.put_link(link)
            creating.clear()

        for action in actions:
            try:
                try:
                    queued = self._queue(action, state, creating)
                except _NeedIndex:
                    flush()
                    queued = self._queue(action, state, creating)
            except BackendError as exc:
                if action.resource not in failed:
                    failed.add(action.resource)
                    results.append((action, exc))
                continue
            queue.append(queued)
            if isinstance(action.op, CreateLink):
                creating.update(filter(None, (action.op.name, action.op.veth_peer)))
        if queue:
            flush()
        return results

    def _queue(self, action: Action, state: NetState, creating: set[str]) -> _Queued:
        op = action.op
        res = action.resource

        def index(name: str, resource: str = res) -> int:
            link = state.link(name)
            if link is not None:
                return link.index
            if name in creating:
                raise _NeedIndex(name)
            raise BackendError("netlink", resource, f"{name}: no such device", errno.ENODEV)

        match op:
            case CreateLink():
                vlan_base = index(op.vlan_base) if op.vlan_base else None
                req = rtnl.link_create(op.name, op.kind, mac=op.mac, bridge_data=bridge_data(op.stp),
                                       veth_peer=op.veth_peer, vlan_base=vlan_base, vlan_id=op.vlan_id,
                                       data=self._kind_data(op, index))
                return _Queued(action, [req], f"create {op.kind}", (errno.EEXIST,), kind=op.kind)
            case SetLinkOptions():
                data: list[bytes] = []
                if op.kind == "vlan":
                    data = rtnl.vlan_data(flags=vlan_flags(op.vlan))
                elif op.kind == "vxlan":
                    data = rtnl.vxlan_data(remote=op.vxlan_remote, learning=op.vxlan_learning)
                elif op.kind == "bond":
                    data = rtnl.bond_data(None, _bond_options(op.bond_options, index))
                return _Queued(action, [rtnl.link_set(index(op.name), kind=op.kind, data=data)],
                               f"set {op.kind} options")
            case DeleteLink(name=name):
                link = state.link(name)
                if link is None:
                    return _Queued(action, [], "delete link")
                return _Queued(action, [rtnl.link_delete(link.index)], "delete link", (errno.ENODEV,),
                               on_success=lambda: state.drop_link(link.index))
            case SetLinkUp(name=name, up=up):
                return _Queued(action, [rtnl.link_set(index(name), up=up)], "set admin state")
            case SetMtu(name=name, mtu=mtu):
                return _Queued(action, [rtnl.link_set(index(name), mtu=mtu)], f"set mtu {mtu}")
            case SetMac(name=name, mac=mac):
                return _Queued(action, [rtnl.link_set(index(name), mac=mac)], f"set MAC {mac}")
            case SetBridgeOptions(name=name, stp=stp):
                return _Queued(action, [rtnl.link_set(index(name), bridge_data=bridge_data(stp))],
                               "set bridge options")
            case SetMaster(name=name, master=None):
                return _Queued(action, [rtnl.link_set(index(name), master=0)], "release from its master")
            case SetMaster(name=name, master=str(master)):
                master_index = index(master, f"interface/{master}")
                return _Queued(action, [rtnl.link_set(index(name), master=master_index)], f"attach to {master}")
            case AttachTap(tap=tap, bridge=bridge, mtu=mtu):
                tap_index = index(tap)
                bridge_index = index(bridge, f"interface/{bridge}")
                reqs = ([rtnl.link_set(tap_index, mtu=mtu)] if mtu is not None else [])
                return _Queued(action, reqs + [rtnl.link_set(tap_index, master=bridge_index)], f"attach to {bridge}")
            case AddAddress(name=name, ip=ip):
                return _Queued(action, [rtnl.address(True, index(name), ip)], f"add address {ip}", (errno.EEXIST,))
            case RemoveAddress(name=name, ip=ip):
                return _Queued(action, [rtnl.address(False, index(name), ip)], f"remove address {ip}",
                               (errno.EADDRNOTAVAIL,))
            case AddRoute():
                oif = index(op.device) if op.device else None
                req = rtnl.route(True, op.destination, table=op.table, gateway=op.gateway, oif=oif,
                                 priority=op.metric, replace=op.replace, protocol=op.protocol, scope=op.scope)
                # EEXIST: a route under the same key appeared since the plan; the next
                # pass sees it and replaces it if it is not the declared one
                return _Queued(action, [req], "add route", (errno.EEXIST,))
            case RemoveRoute():
                req = rtnl.route(False, op.destination, table=op.table, gateway=op.gateway, oif=op.oif,
                                 priority=op.metric)
                return _Queued(action, [req], "remove route", (errno.ESRCH,))
            case AddRouteRule(rule=spec):
                protocol = rtnl.RTPROT_STATIC if op.protocol is None else op.protocol
                req = rtnl.rule(True, spec.family, priority=spec.priority, table=spec.table_id,
                                action=spec.action_code, source=spec.source, destination=spec.destination,
                                iif=spec.iif, fwmark=spec.fwmark, fwmask=spec.fwmask, protocol=protocol)
                # EEXIST: the same rule appeared since the plan (the kernel keeps it once)
                return _Queued(action, [req], "add rule", (errno.EEXIST,))
            case RemoveRouteRule(rule=rule):
                req = rtnl.rule(False, rule.family, priority=rule.priority, table=rule.table, action=rule.action,
                                source=rule.source, destination=rule.destination, iif=rule.iif,
                                fwmark=rule.fwmark or None, fwmask=rule.fwmask or None,
                                protocol=rule.protocol or None)
                return _Queued(action, [req], "remove rule", (errno.ENOENT,))
            case _:
                raise TypeError(f"not a netlink op: {op!r}")

    @staticmethod
    def _kind_data(op: CreateLink, index: Callable[[str], int]) -> list[bytes]:
        """IFLA_INFO_DATA of a new VLAN (besides its id), VXLAN or bond."""
        if op.kind == "vlan" and op.vlan is not None:
            return rtnl.vlan_data(protocol=vlan_ethertype(op.vlan.protocol), flags=vlan_flags(op.vlan))
        if op.kind == "vxlan" and op.vxlan is not None:
            return _vxlan_create(op.vxlan, index)
        if op.kind == "bond" and op.bond is not None:
            mode = MODES[op.bond.mode] if op.bond.mode is not None else None
            return rtnl.bond_data(mode, _bond_options(op.bond.options, index))
        return []


def _vxlan_create(config: VxlanConfig, index: Callable[[str], int]) -> list[bytes]:
    link = index(config.base_iface) if config.base_iface else None
    return rtnl.vxlan_data(config.id, remote=config.remote, local=config.local, link=link,
                           port=config.destination_port or VXLAN_PORT, learning=config.learning)


def _bond_options(options: Iterable[tuple[str, int | str | tuple[str, ...]]], index: Callable[[str], int]
                  ) -> list[tuple[str, int | str | tuple[str, ...]]]:
    """Bond options in the codec's terms: ``primary`` names a link, the kernel takes its ifindex."""
    return [(name, index(str(value)) if name == "primary" else value) for name, value in options]


class _NeedIndex(Exception):
    """An op names a link that a queued request is creating: flush the queue first."""


@dataclass
class _Queued:
    action: Action
    requests: list[rtnl.Request]
    what: str
    ok: tuple[int, ...] = ()
    on_success: Callable[[], None] | None = None
    kind: str | None = None


def _error(code: int, resource: str, what: str, kind: str | None) -> BackendError:
    if kind is not None and code == errno.EOPNOTSUPP:
        return BackendError("netlink", resource, f"the kernel does not support links of type {kind} "
                            "(module not available?)", code)
    return BackendError("netlink", resource, f"{what} failed: {os.strerror(code)}", code)
