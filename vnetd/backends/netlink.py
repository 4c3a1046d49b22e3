# SPDX-License-Identifier: MIT
"""Links, addresses and routes through rtnetlink: observe, apply, and notifications.

Appliers tolerate the errno that means "already so" (EEXIST on add, EADDRNOTAVAIL /
ESRCH on delete) so that every op is idempotent; any other errno becomes a
``BackendError`` for that one action, and the other actions go on.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

from vnetd.backends import rtnl
from vnetd.errors import BackendError
from vnetd.model.interfaces import Address, Link, StpOptions
from vnetd.model.netstate import NetState
from vnetd.model.routes import Route
from vnetd.plan.actions import (
    AddAddress,
    AddRoute,
    AttachTap,
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
)

#: Requests after which the request socket is replaced (pyroute2-style sockets grew
#: without bound in long runs here; a plain socket does not, but recycling is cheap).
RECYCLE_AFTER = 20_000


def bridge_data(stp: StpOptions | None) -> list[tuple[str, int]]:
    """IFLA_BR_* attributes for the options that are set (seconds -> centiseconds).

    STP goes first when it is being turned off and last when turned on: the kernel
    validates timers against the STP state at the moment it reads them.
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
    if stp.enabled is None:
        return timers
    state = [("IFLA_BR_STP_STATE", 1 if stp.enabled else 0)]
    return timers + state if stp.enabled else state + timers


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

    def observe(self) -> NetState:
        """A full read: every link, address and route of the namespace."""
        return NetState.build(self.dump_links(), self.dump_addresses(), self.dump_routes())

    def get_link(self, name: str) -> Link | None:
        reply = self._socket().get(rtnl.link_get(name))
        return rtnl.decode_link(*reply) if reply is not None else None

    # -- apply ----------------------------------------------------------------------

    def execute(self, op: Op, state: NetState, resource: str) -> None:
        """Carry out one link/address/route op; ``state`` is updated for new links."""
        sock = self._socket()
        match op:
            case CreateLink():
                self._create(op, state, resource)
            case DeleteLink(name=name):
                link = state.link(name)
                if link is not None:
                    self._check(sock.request(rtnl.link_delete(link.index)), resource, "delete link",
                                ok=(errno.ENODEV,))
                    state.drop_link(link.index)
            case SetLinkUp(name=name, up=up):
                self._check(sock.request(rtnl.link_set(self._index(name, state, resource), up=up)),
                            resource, "set admin state")
            case SetMtu(name=name, mtu=mtu):
                self._check(sock.request(rtnl.link_set(self._index(name, state, resource), mtu=mtu)),
                            resource, f"set mtu {mtu}")
            case SetMac(name=name, mac=mac):
                self._check(sock.request(rtnl.link_set(self._index(name, state, resource), mac=mac)),
                            resource, f"set MAC {mac}")
            case SetBridgeOptions(name=name, stp=stp):
                msg = rtnl.link_set(self._index(name, state, resource), bridge_data=bridge_data(stp))
                self._check(sock.request(msg), resource, "set bridge options")
            case SetMaster(name=name, master=master):
                master_index = self._index(master, state, f"interface/{master}")
                msg = rtnl.link_set(self._index(name, state, resource), master=master_index)
                self._check(sock.request(msg), resource, f"attach to {master}")
            case AddAddress(name=name, ip=ip):
                msg = rtnl.address(True, self._index(name, state, resource), ip)
                self._check(sock.request(msg), resource, f"add address {ip}", ok=(errno.EEXIST,))
            case RemoveAddress(name=name, ip=ip):
                msg = rtnl.address(False, self._index(name, state, resource), ip)
                self._check(sock.request(msg), resource, f"remove address {ip}", ok=(errno.EADDRNOTAVAIL,))
            case AddRoute():
                oif = self._index(op.device, state, resource) if op.device else None
                msg = rtnl.route(True, op.destination, table=op.table, gateway=op.gateway, oif=oif,
                                 priority=op.metric, replace=op.replace)
                self._check(sock.request(msg), resource, "add route")
            case AttachTap(tap=tap, bridge=bridge, mtu=mtu):
                index = self._index(tap, state, resource)
                if mtu is not None:
                    self._check(sock.request(rtnl.link_set(index, mtu=mtu)), resource, f"set mtu {mtu}")
                master = self._index(bridge, state, f"interface/{bridge}")
                self._check(sock.request(rtnl.link_set(index, master=master)), resource, f"attach to {bridge}")
            case RemoveRoute():
                msg = rtnl.route(False, op.destination, table=op.table, gateway=op.gateway, oif=op.oif,
                                 priority=op.metric)
                self._check(sock.request(msg), resource, "remove route", ok=(errno.ESRCH,))
            case _:
                raise TypeError(f"not a netlink op: {op!r}")

    def _create(self, op: CreateLink, state: NetState, resource: str) -> None:
        vlan_base = self._index(op.vlan_base, state, resource) if op.vlan_base else None
        msg = rtnl.link_create(op.name, op.kind, mac=op.mac, bridge_data=bridge_data(op.stp),
                               veth_peer=op.veth_peer, vlan_base=vlan_base, vlan_id=op.vlan_id)
        code = self._socket().request(msg)
        if code == errno.EOPNOTSUPP:
            raise BackendError("netlink", resource, f"the kernel does not support links of type {op.kind} "
                               "(module not available?)", code)
        self._check(code, resource, f"create {op.kind}", ok=(errno.EEXIST,))
        for name in filter(None, (op.name, op.veth_peer)):
            link = self.get_link(name)
            if link is not None:
                state.put_link(link)

    def refresh(self, state: NetState, names: Iterable[str]) -> None:
        """Re-read just these links into ``state`` (after creating them, for instance)."""
        for name in names:
            link = self.get_link(name)
            if link is not None:
                state.put_link(link)

    @staticmethod
    def _index(name: str, state: NetState, resource: str) -> int:
        link = state.link(name)
        if link is None:
            raise BackendError("netlink", resource, f"{name}: no such device", errno.ENODEV)
        return link.index

    @staticmethod
    def _check(code: int, resource: str, what: str, ok: tuple[int, ...] = ()) -> None:
        if code == 0 or code in ok:
            return
        raise BackendError("netlink", resource, f"{what} failed: {os.strerror(code)}", code)
