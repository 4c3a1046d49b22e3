# SPDX-License-Identifier: MIT
"""rtnetlink wire format: requests encoded with pyroute2, replies decoded lean.

Why two halves (measured here, see docs/ARCHITECTURE.md):

* Encoding goes through pyroute2's message classes (``ifinfmsg``, ``ifaddrmsg``,
  ``rtmsg``): nested link info (bridge options, veth peers, VLANs) is where
  hand-written netlink goes wrong, and ~50 us a request is cheap next to the kernel.
* Decoding does not: pyroute2 decodes every attribute of every message (~0.3 ms a
  link, 0.76 s for a 2,500-link dump); vnetd needs a dozen fields, so the decoders
  below walk the attributes once with ``struct`` (~7 us a link). Tests decode the
  same kernel bytes with pyroute2 and compare field by field.

The socket is a plain blocking ``AF_NETLINK`` socket in the caller's network
namespace (pyroute2's own sockets are asyncio-driven, which a blocking request
loop and a reader thread do not need).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from vnetd.model.interfaces import Address, BridgeInfo, Link
from vnetd.model.routes import Route

# netlink header
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26

# multicast groups (bit masks for bind)
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
EVENT_GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE

IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_EXT_MASK, IFLA_LINK_NETNSID = 18, 29, 37
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_BR_FORWARD_DELAY, IFLA_BR_HELLO_TIME, IFLA_BR_MAX_AGE = 1, 2, 3
IFLA_BR_STP_STATE, IFLA_BR_PRIORITY = 5, 6
IFLA_VLAN_ID = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3

IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_PERMANENT = 0x80

RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
RTN_UNICAST = 1
RTPROT_KERNEL, RTPROT_STATIC = 2, 4
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE = 0, 253, 255
RT_TABLE_UNSPEC, RT_TABLE_LOCAL = 0, 255

_HDR = struct.Struct("=IHHII")
_IFI = struct.Struct("=BxHiII")
_IFA = struct.Struct("=BBBBI")
_RTM = struct.Struct("=BBBBBBBBI")
_NLA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")
_I32 = struct.Struct("=i")


# --------------------------------------------------------------------------- decoding


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield (type, flags, seq, offset, length) for each netlink message in a buffer."""
    off, end = 0, len(data)
    unpack = _HDR.unpack_from
    while off + 16 <= end:
        length, mtype, flags, seq, _pid = unpack(data, off)
        if length < 16 or off + length > end:
            break
        yield mtype, flags, seq, off, length
        off += (length + 3) & ~3


def _attrs(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Yield (type, payload offset, payload length) of the attributes in [start, end)."""
    unpack = _NLA.unpack_from
    while start + 4 <= end:
        alen, atype = unpack(data, start)
        if alen < 4:
            return
        yield atype & 0x3FFF, start + 4, alen - 4
        start += (alen + 3) & ~3


def _cstr(data: bytes, off: int, length: int) -> str:
    return data[off : off + length].split(b"\0", 1)[0].decode("utf-8", "replace")


def decode_link(data: bytes, off: int, length: int) -> Link:
    """RTM_NEWLINK/RTM_DELLINK -> Link (only what vnetd compares or shows)."""
    _family, _type, index, flags, _change = _IFI.unpack_from(data, off + 16)
    name = ""
    mtu = 0
    mac = master = link = netnsid = vlan_id = None
    kind: str | None = None
    bridge: BridgeInfo | None = None
    u32 = _U32.unpack_from
    for atype, aoff, alen in _attrs(data, off + 32, off + length):
        if atype == IFLA_IFNAME:
            name = _cstr(data, aoff, alen)
        elif atype == IFLA_MTU:
            mtu = u32(data, aoff)[0]
        elif atype == IFLA_ADDRESS:
            if alen == 6:
                mac = data[aoff : aoff + 6].hex(":")
        elif atype == IFLA_MASTER:
            master = u32(data, aoff)[0] or None
        elif atype == IFLA_LINK:
            link = u32(data, aoff)[0]
        elif atype == IFLA_LINK_NETNSID:
            netnsid = _I32.unpack_from(data, aoff)[0]
        elif atype == IFLA_LINKINFO:
            kind, bridge, vlan_id = _decode_linkinfo(data, aoff, aoff + alen)
    return Link(index, name, kind, bool(flags & IFF_UP), mtu, mac, master, link, netnsid, vlan_id, bridge)


def _decode_linkinfo(data: bytes, start: int, end: int) -> tuple[str | None, BridgeInfo | None, int | None]:
    kind = None
    info: tuple[int, int] | None = None
    for atype, aoff, alen in _attrs(data, start, end):
        if atype == IFLA_INFO_KIND:
            kind = _cstr(data, aoff, alen)
        elif atype == IFLA_INFO_DATA:
            info = (aoff, aoff + alen)
    if info is None or kind not in ("bridge", "vlan"):
        return kind, None, None
    if kind == "vlan":
        for atype, aoff, _alen in _attrs(data, *info):
            if atype == IFLA_VLAN_ID:
                return kind, None, _U16.unpack_from(data, aoff)[0]
        return kind, None, None
    values = {IFLA_BR_STP_STATE: 0, IFLA_BR_FORWARD_DELAY: 0, IFLA_BR_HELLO_TIME: 0,
              IFLA_BR_MAX_AGE: 0, IFLA_BR_PRIORITY: 0}
    for atype, aoff, _alen in _attrs(data, *info):
        if atype == IFLA_BR_PRIORITY:
            values[atype] = _U16.unpack_from(data, aoff)[0]
        elif atype in values:
            values[atype] = _U32.unpack_from(data, aoff)[0]
    bridge = BridgeInfo(
        stp_state=values[IFLA_BR_STP_STATE], forward_delay=values[IFLA_BR_FORWARD_DELAY],
        hello_time=values[IFLA_BR_HELLO_TIME], max_age=values[IFLA_BR_MAX_AGE],
        priority=values[IFLA_BR_PRIORITY],
    )
    return kind, bridge, None


def decode_address(data: bytes, off: int, length: int) -> Address | None:
    """RTM_NEWADDR/RTM_DELADDR -> Address (None for families vnetd ignores)."""
    family, prefixlen, flags, scope, index = _IFA.unpack_from(data, off + 16)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    local = address = None
    for atype, aoff, alen in _attrs(data, off + 24, off + length):
        if atype == IFA_LOCAL:
            local = data[aoff : aoff + alen]
        elif atype == IFA_ADDRESS:
            address = data[aoff : aoff + alen]
        elif atype == IFA_FLAGS:
            flags = _U32.unpack_from(data, aoff)[0]
    raw = local if local is not None else address
    if raw is None:
        return None
    ip = ipaddress.ip_interface((ipaddress.ip_address(raw), prefixlen))
    return Address(index, ip, scope, bool(flags & IFA_F_PERMANENT))


def decode_route(data: bytes, off: int, length: int) -> Route | None:
    """RTM_NEWROUTE/RTM_DELROUTE -> Route (unicast routes outside table local only)."""
    family, dst_len, _src_len, _tos, table, proto, scope, rtype, _flags = _RTM.unpack_from(data, off + 16)
    if family not in (socket.AF_INET, socket.AF_INET6) or rtype != RTN_UNICAST:
        return None
    dst = gateway = None
    oif = None
    priority = 0
    for atype, aoff, alen in _attrs(data, off + 28, off + length):
        if atype == RTA_TABLE:
            table = _U32.unpack_from(data, aoff)[0]
        elif atype == RTA_DST:
            dst = data[aoff : aoff + alen]
        elif atype == RTA_GATEWAY:
            gateway = ipaddress.ip_address(data[aoff : aoff + alen])
        elif atype == RTA_OIF:
            oif = _U32.unpack_from(data, aoff)[0]
        elif atype == RTA_PRIORITY:
            priority = _U32.unpack_from(data, aoff)[0]
    if table == RT_TABLE_LOCAL:
        return None
    if dst is None:
        dst = bytes(4 if family == socket.AF_INET else 16)
    network = ipaddress.ip_network((ipaddress.ip_address(dst), dst_len))
    return Route(network, table, oif, gateway, priority, proto, scope, rtype)


def nlmsg_error(data: bytes, off: int) -> int:
    """The (positive) errno of an NLMSG_ERROR message; 0 is an ACK."""
    return -_I32.unpack_from(data, off + 16)[0]


# --------------------------------------------------------------------------- encoding


def _finish(msg: Any, mtype: int, flags: int) -> Any:
    msg["header"]["type"] = mtype
    msg["header"]["flags"] = flags
    return msg


def link_dump() -> Any:
    msg = ifinfmsg()
    msg["attrs"] = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
    return _finish(msg, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP)


def link_get(name: str) -> Any:
    msg = ifinfmsg()
    msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
    return _finish(msg, RTM_GETLINK, NLM_F_REQUEST)


def addr_dump() -> Any:
    return _finish(ifaddrmsg(), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP)


def route_dump() -> Any:
    return _finish(rtmsg(), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP)


def link_create(
    name: str,
    kind: str,
    *,
    up: bool = False,
    mac: str | None = None,
    bridge_data: list[tuple[str, int]] | None = None,
    veth_peer: str | None = None,
    vlan_base: int | None = None,
    vlan_id: int | None = None,
) -> Any:
    """RTM_NEWLINK with NLM_F_CREATE|NLM_F_EXCL: a new bridge, veth pair, VLAN or dummy."""
    msg = ifinfmsg()
    if up:
        msg["flags"] = msg["change"] = IFF_UP
    attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", name)]
    if mac:
        attrs.append(("IFLA_ADDRESS", mac))
    info: list[tuple[str, Any]] = [("IFLA_INFO_KIND", kind)]
    if kind == "bridge" and bridge_data:
        info.append(("IFLA_INFO_DATA", {"attrs": bridge_data}))
    elif kind == "veth" and veth_peer:
        info.append(("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": [("IFLA_IFNAME", veth_peer)]})]}))
    elif kind == "vlan":
        attrs.append(("IFLA_LINK", vlan_base))
        info.append(("IFLA_INFO_DATA", {"attrs": [("IFLA_VLAN_ID", vlan_id)]}))
    attrs.append(("IFLA_LINKINFO", {"attrs": info}))
    msg["attrs"] = attrs
    return _finish(msg, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)


def link_set(
    index: int,
    *,
    up: bool | None = None,
    mtu: int | None = None,
    master: int | None = None,
    mac: str | None = None,
    bridge_data: list[tuple[str, int]] | None = None,
) -> Any:
    """RTM_NEWLINK on an existing index: admin state, MTU, controller, MAC, bridge options."""
    msg = ifinfmsg()
    msg["index"] = index
    if up is not None:
        msg["change"] = IFF_UP
        msg["flags"] = IFF_UP if up else 0
    attrs: list[tuple[str, Any]] = []
    if mtu is not None:
        attrs.append(("IFLA_MTU", mtu))
    if master is not None:
        attrs.append(("IFLA_MASTER", master))
    if mac is not None:
        attrs.append(("IFLA_ADDRESS", mac))
    if bridge_data:
        attrs.append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge"),
                                                  ("IFLA_INFO_DATA", {"attrs": bridge_data})]}))
    msg["attrs"] = attrs
    return _finish(msg, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)


def link_delete(index: int) -> Any:
    msg = ifinfmsg()
    msg["index"] = index
    return _finish(msg, RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK)


def address(add: bool, index: int, ip: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> Any:
    msg = ifaddrmsg()
    msg["family"] = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    msg["prefixlen"] = ip.network.prefixlen
    msg["index"] = index
    msg["attrs"] = [("IFA_LOCAL", str(ip.ip)), ("IFA_ADDRESS", str(ip.ip))]
    if add:
        return _finish(msg, RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
    return _finish(msg, RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK)


def route(
    add: bool,
    destination: ipaddress.IPv4Network | ipaddress.IPv6Network,
    *,
    table: int,
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    oif: int | None,
    priority: int | None,
    replace: bool = False,
) -> Any:
    msg = rtmsg()
    msg["family"] = socket.AF_INET if destination.version == 4 else socket.AF_INET6
    msg["dst_len"] = destination.prefixlen
    msg["table"] = table if table < 256 else RT_TABLE_UNSPEC
    msg["proto"] = RTPROT_STATIC
    msg["type"] = RTN_UNICAST
    msg["scope"] = RT_SCOPE_UNIVERSE if gateway is not None else RT_SCOPE_LINK
    attrs: list[tuple[str, Any]] = [("RTA_TABLE", table)]
    if destination.prefixlen:
        attrs.append(("RTA_DST", str(destination.network_address)))
    if gateway is not None:
        attrs.append(("RTA_GATEWAY", str(gateway)))
    if oif is not None:
        attrs.append(("RTA_OIF", oif))
    if priority is not None:
        attrs.append(("RTA_PRIORITY", priority))
    msg["attrs"] = attrs
    if not add:
        # as iproute2 does: protocol, type and scope left open (RT_SCOPE_NOWHERE matches any)
        msg["proto"] = msg["type"] = 0
        msg["scope"] = RT_SCOPE_NOWHERE
        return _finish(msg, RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK)
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
    return _finish(msg, RTM_NEWROUTE, flags)


# --------------------------------------------------------------------------- transport


class NetlinkOverrun(OSError):
    """The kernel dropped messages (ENOBUFS): whatever was cached must be re-read."""


class RtnlSocket:
    """A blocking NETLINK_ROUTE socket in the calling thread's network namespace.

    Not thread-safe: one socket per thread (requests in the reconciler, events in the
    event reader). ``groups`` subscribes to multicast notifications.
    """

    def __init__(self, groups: int = 0, rcvbuf: int = 1 << 20) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            # SO_RCVBUFFORCE (root) lifts the rmem_max cap; fall back silently otherwise
            self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        self.sock.bind((0, groups))
        self._seq = 0
        self._lock = threading.Lock()
        self.requests = 0

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _send(self, msg: Any) -> int:
        seq = self._next_seq()
        msg["header"]["sequence_number"] = seq
        msg.encode()
        self.sock.send(msg.data)
        self.requests += 1
        return seq

    def request(self, msg: Any) -> int:
        """Send one request with NLM_F_ACK; return 0 or the (positive) errno of the reply."""
        with self._lock:
            seq = self._send(msg)
            while True:
                data = self.sock.recv(65536)
                for mtype, _flags, mseq, off, _length in iter_messages(data):
                    if mseq != seq:
                        continue
                    if mtype == NLMSG_ERROR:
                        return nlmsg_error(data, off)
                    if mtype == NLMSG_DONE:
                        return 0

    def get(self, msg: Any) -> tuple[bytes, int, int] | None:
        """Send a GET (no dump); return the reply message (buffer, offset, length) or None."""
        with self._lock:
            seq = self._send(msg)
            while True:
                data = self.sock.recv(65536)
                for mtype, _flags, mseq, off, length in iter_messages(data):
                    if mseq != seq:
                        continue
                    if mtype == NLMSG_ERROR:
                        code = nlmsg_error(data, off)
                        if code in (errno.ENODEV, errno.ENOENT, 0):
                            return None
                        raise OSError(code, f"netlink get failed: {errno.errorcode.get(code, code)}")
                    return data, off, length

    def dump(self, msg: Any) -> list[tuple[bytes, int, int, int]]:
        """Run a dump; return (buffer, type, offset, length) per message. Retries if interrupted."""
        for _attempt in range(5):
            with self._lock:
                seq = self._send(msg)
                out: list[tuple[bytes, int, int, int]] = []
                interrupted = False
                done = False
                while not done:
                    data = self.sock.recv(1 << 20)
                    for mtype, flags, mseq, off, length in iter_messages(data):
                        if mseq != seq:
                            continue
                        if flags & NLM_F_DUMP_INTR:
                            interrupted = True
                        if mtype == NLMSG_DONE:
                            done = True
                            break
                        if mtype == NLMSG_ERROR:
                            code = nlmsg_error(data, off)
                            if code:
                                raise OSError(code, "netlink dump failed")
                            done = True
                            break
                        out.append((data, mtype, off, length))
            if not interrupted:
                return out
        raise OSError(errno.EINTR, "netlink dump kept being interrupted by concurrent changes")

    def read_events(self, timeout: float | None) -> list[tuple[bytes, int, int, int]] | None:
        """Block up to ``timeout`` for notifications; None on timeout. Raises NetlinkOverrun."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return None
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                raise NetlinkOverrun(errno.ENOBUFS, "netlink event queue overrun") from exc
            raise
        finally:
            self.sock.settimeout(None)
        return [(data, mtype, off, length) for mtype, _f, _s, off, length in iter_messages(data)]
