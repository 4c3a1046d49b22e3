# SPDX-License-Identifier: MIT
"""nf_tables netlink: the few messages vnetd sends, their decoders, one transport.

vnetd speaks nf_tables itself, as it speaks rtnetlink (``rtnl.py``): requests are
packed with ``struct``, replies and notifications are read for the attributes
vnetd uses. pyroute2 0.9.7's ``nftsocket`` message classes decode every attribute
into Python objects (compat blobs into hex strings) and build a message through
its generic NLA machinery: measured on the same rules (bench/nftables.py), an
order of magnitude slower to decode and two to build, for a table read and
commits of tens of thousands of rules; and its decoded expressions cannot be
encoded again as they are. So pyroute2 is not used on this path.

What is here:

* builders for tables, chains, rules (expressions, compat info, user data,
  position by handle), rule and chain deletion, the generation id, dumps;
* ``NftSocket``: requests, dumps (saying whether ``NLM_F_DUMP_INTR`` marked one:
  a writer changed the ruleset meanwhile), and *batches*: one nf_tables transaction,
  guarded by the generation id the caller's view was read at (the kernel refuses
  a batch whose ``NFTA_GEN_ID`` is stale with ERESTART, before changing anything);
* ``NftEvents``: a socket bound to ``NFNLGRP_NFTABLES``, where the kernel announces
  every committed change (the changed objects, then ``NFT_MSG_NEWGEN``).

All nf_tables attributes are big-endian; registers and verdicts are ``be32``.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from vnetd.backends.rtnl import attrs as attrs  # netlink's attribute layout is rtnetlink's (re-exported)
from vnetd.backends.rtnl import cstr as cstr

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 16, 17
NFNLGRP_NFTABLES = 7
NFNETLINK_V0 = 0
NFPROTO_UNSPEC, NFPROTO_IPV4, NFPROTO_IPV6 = 0, 2, 10
#: vnetd's address families (4: iptables, 6: ip6tables) -> their nf_tables family
NFPROTO = {4: NFPROTO_IPV4, 6: NFPROTO_IPV6}
#: and back
FAMILY_OF = {NFPROTO_IPV4: 4, NFPROTO_IPV6: 6}

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 1, 10, 11
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33

# enum nf_tables_msg_types
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFT_MSG_DELTABLE = 0, 1, 2
NFT_MSG_NEWCHAIN, NFT_MSG_GETCHAIN, NFT_MSG_DELCHAIN = 3, 4, 5
NFT_MSG_NEWRULE, NFT_MSG_GETRULE, NFT_MSG_DELRULE = 6, 7, 8
NFT_MSG_NEWGEN, NFT_MSG_GETGEN = 15, 16

NFTA_TABLE_NAME, NFTA_TABLE_FLAGS, NFTA_TABLE_USE = 1, 2, 3
NFTA_CHAIN_TABLE, NFTA_CHAIN_HANDLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK = 1, 2, 3, 4
NFTA_CHAIN_POLICY, NFTA_CHAIN_USE, NFTA_CHAIN_TYPE = 5, 6, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_EXPRESSIONS = 1, 2, 3, 4
NFTA_RULE_COMPAT, NFTA_RULE_POSITION, NFTA_RULE_USERDATA = 5, 6, 7
NFTA_RULE_COMPAT_PROTO, NFTA_RULE_COMPAT_FLAGS = 1, 2
NFT_RULE_COMPAT_F_INV = 1 << 1
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_GEN_ID = 1

NF_DROP, NF_ACCEPT = 0, 1

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")
_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE32S = struct.Struct(">i")
_BE64 = struct.Struct(">Q")
_I32 = struct.Struct("=i")


class NftError(OSError):
    """A request the kernel refused (``errno``), with its extended-ack message if any."""


class BatchRestart(Exception):
    """The ruleset changed since the caller read it: the batch was refused whole."""


class EventOverrun(Exception):
    """Notifications were lost (ENOBUFS): whatever was built from them is stale."""


# --------------------------------------------------------------------------- packing


def nla(atype: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return _NLA.pack(length, atype) + payload + b"\0" * (-length & 3)


def nest(atype: int, *parts: bytes) -> bytes:
    return nla(atype | NLA_F_NESTED, b"".join(parts))


def strz(atype: int, text: str) -> bytes:
    return nla(atype, text.encode() + b"\0")


def be16(atype: int, value: int) -> bytes:
    return nla(atype, _BE16.pack(value))


def be32(atype: int, value: int) -> bytes:
    return nla(atype, _BE32S.pack(value) if value < 0 else _BE32.pack(value))


def be64(atype: int, value: int) -> bytes:
    return nla(atype, _BE64.pack(value))


def expr(name: str, *attrs: bytes) -> bytes:
    """One element of NFTA_RULE_EXPRESSIONS."""
    return nest(NFTA_LIST_ELEM, strz(NFTA_EXPR_NAME, name), nest(NFTA_EXPR_DATA, *attrs))


@dataclass(frozen=True, slots=True)
class Message:
    """One nf_tables request, sequence number assigned when it is sent."""

    mtype: int  # NFT_MSG_*
    flags: int  # NLM_F_* besides NLM_F_REQUEST
    family: int
    payload: bytes

    def encode(self, seq: int) -> bytes:
        body = _NFGENMSG.pack(self.family, NFNETLINK_V0, 0) + self.payload
        head = _NLMSGHDR.pack(16 + len(body), (NFNL_SUBSYS_NFTABLES << 8) | self.mtype,
                              NLM_F_REQUEST | self.flags, seq, 0)
        return head + body + b"\0" * (-len(body) & 3)


def new_table(name: str, family: int = NFPROTO_IPV4) -> Message:
    """Create the table if it is missing (NLM_F_CREATE without EXCL: no error if it exists)."""
    return Message(NFT_MSG_NEWTABLE, NLM_F_CREATE, family, strz(NFTA_TABLE_NAME, name))


def new_base_chain(table: str, name: str, hooknum: int, priority: int, chain_type: str, policy: int,
                   family: int = NFPROTO_IPV4) -> Message:
    """A base chain (hooked), as iptables-nft creates a built-in chain it needs."""
    hook = nest(NFTA_CHAIN_HOOK, be32(NFTA_HOOK_HOOKNUM, hooknum), be32(NFTA_HOOK_PRIORITY, priority))
    payload = (strz(NFTA_CHAIN_TABLE, table) + strz(NFTA_CHAIN_NAME, name) + hook
               + be32(NFTA_CHAIN_POLICY, policy) + strz(NFTA_CHAIN_TYPE, chain_type))
    return Message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, family, payload)


def set_policy(table: str, name: str, policy: int, family: int = NFPROTO_IPV4) -> Message:
    """Update an existing base chain's policy (nothing else of the chain changes)."""
    payload = strz(NFTA_CHAIN_TABLE, table) + strz(NFTA_CHAIN_NAME, name) + be32(NFTA_CHAIN_POLICY, policy)
    return Message(NFT_MSG_NEWCHAIN, 0, family, payload)


def new_user_chain(table: str, name: str, family: int = NFPROTO_IPV4) -> Message:
    return Message(NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_EXCL, family,
                   strz(NFTA_CHAIN_TABLE, table) + strz(NFTA_CHAIN_NAME, name))


def del_chain(table: str, name: str, family: int = NFPROTO_IPV4) -> Message:
    return Message(NFT_MSG_DELCHAIN, 0, family, strz(NFTA_CHAIN_TABLE, table) + strz(NFTA_CHAIN_NAME, name))


def rule_place(table: str, chain: str) -> bytes:
    """The first attributes of a rule message: where it goes."""
    return strz(NFTA_RULE_TABLE, table) + strz(NFTA_RULE_CHAIN, chain)


def rule_body(exprs: bytes, compat: tuple[int, bool] | None, udata: bytes | None) -> bytes:
    """The attributes of a rule message that say what it is (packed once per declared rule)."""
    parts = [nla(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, exprs)]
    if compat is not None:
        parts.append(_compat(*compat))
    if udata:
        parts.append(nla(NFTA_RULE_USERDATA, udata))
    return b"".join(parts)


@functools.lru_cache(maxsize=512)
def _compat(proto: int, inverted: bool) -> bytes:
    return nest(NFTA_RULE_COMPAT, be32(NFTA_RULE_COMPAT_PROTO, proto),
                be32(NFTA_RULE_COMPAT_FLAGS, NFT_RULE_COMPAT_F_INV if inverted else 0))


def add_rule(place: bytes, body: bytes, *, after: int | None = None, before: int | None = None,
             family: int = NFPROTO_IPV4) -> Message:
    """NFT_MSG_NEWRULE. Position by handle: ``after`` a rule (NLM_F_APPEND + position),
    ``before`` a rule (position alone), or appended to the chain (neither)."""
    if before is not None:
        return Message(NFT_MSG_NEWRULE, NLM_F_CREATE, family, place + be64(NFTA_RULE_POSITION, before) + body)
    if after is not None:
        return Message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, family,
                       place + be64(NFTA_RULE_POSITION, after) + body)
    return Message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, family, place + body)


def new_rule(table: str, chain: str, exprs: bytes, compat: tuple[int, bool] | None, udata: bytes | None,
             *, after: int | None = None, before: int | None = None, family: int = NFPROTO_IPV4) -> Message:
    """NFT_MSG_NEWRULE from its parts (see add_rule)."""
    return add_rule(rule_place(table, chain), rule_body(exprs, compat, udata), after=after, before=before,
                    family=family)


def replace_rule(place: bytes, body: bytes, handle: int, family: int = NFPROTO_IPV4) -> Message:
    """NFT_MSG_NEWRULE with NLM_F_REPLACE: the rule ``handle`` becomes ``body``, where it stands."""
    return Message(NFT_MSG_NEWRULE, NLM_F_REPLACE, family, place + be64(NFTA_RULE_HANDLE, handle) + body)


def del_rule(table: str, chain: str, handle: int, family: int = NFPROTO_IPV4) -> Message:
    return Message(NFT_MSG_DELRULE, 0, family, strz(NFTA_RULE_TABLE, table) + strz(NFTA_RULE_CHAIN, chain)
                   + be64(NFTA_RULE_HANDLE, handle))


def del_table(name: str, family: int = NFPROTO_IPV4) -> Message:
    return Message(NFT_MSG_DELTABLE, 0, family, strz(NFTA_TABLE_NAME, name))


def table_uses(data: bytes, off: int, length: int) -> tuple[str, int]:
    """A table message's name and use count: how many chains, sets, stateful objects
    and flowtables it holds (the kernel's ``table->use``)."""
    name, use = "", 0
    for atype, aoff, alen in attrs(data, off + 20, off + length):
        if atype == NFTA_TABLE_NAME:
            name = cstr(data, aoff, alen)
        elif atype == NFTA_TABLE_USE and alen >= 4:
            use = struct.unpack_from(">I", data, aoff)[0]
    return name, use


def dump_tables(family: int = NFPROTO_IPV4) -> Message:
    return Message(NFT_MSG_GETTABLE, NLM_F_DUMP, family, b"")


def dump_chains(family: int = NFPROTO_IPV4) -> Message:
    return Message(NFT_MSG_GETCHAIN, NLM_F_DUMP, family, b"")


def dump_rules(table: str, family: int = NFPROTO_IPV4, chain: str | None = None) -> Message:
    """Every rule of one table, or of one of its chains (the kernel filters by
    NFTA_RULE_TABLE and NFTA_RULE_CHAIN, as for ``nft list chain``)."""
    payload = strz(NFTA_RULE_TABLE, table)
    if chain is not None:
        payload += strz(NFTA_RULE_CHAIN, chain)
    return Message(NFT_MSG_GETRULE, NLM_F_DUMP, family, payload)


def get_gen() -> Message:
    return Message(NFT_MSG_GETGEN, 0, NFPROTO_UNSPEC, b"")


UDATA_COMMENT = 0  # NFTNL_UDATA_RULE_COMMENT: where nft and iptables-nft keep a rule's comment


def udata_comment(text: str) -> bytes:
    """User data holding a comment (type, length, NUL-terminated text), as libnftnl writes it."""
    raw = text.encode() + b"\0"
    if len(raw) > 255:
        raise ValueError("comment longer than 254 bytes")
    return bytes((UDATA_COMMENT, len(raw))) + raw


def udata_get_comment(udata: bytes | None) -> str | None:
    if not udata:
        return None
    pos, end = 0, len(udata)
    while pos + 2 <= end:
        utype, ulen = udata[pos], udata[pos + 1]
        if pos + 2 + ulen > end:
            return None
        if utype == UDATA_COMMENT and ulen and udata[pos + 1 + ulen] == 0:
            return udata[pos + 2 : pos + 1 + ulen].decode("utf-8", "replace")
        pos += 2 + ulen
    return None


# --------------------------------------------------------------------------- decoding


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int, int, int, int]]:
    """(type, flags, seq, portid, offset, length) of each netlink message in a buffer."""
    off, end = 0, len(data)
    unpack = _NLMSGHDR.unpack_from
    while off + 16 <= end:
        length, mtype, flags, seq, pid = unpack(data, off)
        if length < 16 or off + length > end:
            break
        yield mtype, flags, seq, pid, off, length
        off += (length + 3) & ~3


@dataclass(frozen=True, slots=True)
class TableMsg:
    family: int
    name: str


@dataclass(frozen=True, slots=True)
class ChainMsg:
    family: int
    table: str
    name: str
    handle: int
    hooknum: int | None  # None: a regular (user) chain
    priority: int | None
    policy: int | None
    chain_type: str | None


class RuleMsg(NamedTuple):
    """A rule (a tuple: tens of thousands are made per table read, and a frozen
    dataclass costs ~2 us more each)."""

    family: int
    table: str
    chain: str
    handle: int
    position: int | None  # in a notification: the handle of the rule right before it
    exprs: bytes  # NFTA_RULE_EXPRESSIONS payload, as the kernel sent it
    udata: bytes | None


def family_of(data: bytes, off: int) -> int:
    return data[off + 16]


def decode_table(data: bytes, off: int, length: int) -> TableMsg:
    name = ""
    for atype, aoff, alen in attrs(data, off + 20, off + length):
        if atype == NFTA_TABLE_NAME:
            name = cstr(data, aoff, alen)
    return TableMsg(data[off + 16], name)


def decode_chain(data: bytes, off: int, length: int) -> ChainMsg:
    table = name = ""
    handle = 0
    hooknum = priority = policy = None
    chain_type = None
    for atype, aoff, alen in attrs(data, off + 20, off + length):
        if atype == NFTA_CHAIN_TABLE:
            table = cstr(data, aoff, alen)
        elif atype == NFTA_CHAIN_NAME:
            name = cstr(data, aoff, alen)
        elif atype == NFTA_CHAIN_HANDLE:
            handle = _BE64.unpack_from(data, aoff)[0]
        elif atype == NFTA_CHAIN_HOOK:
            for htype, hoff, _hlen in attrs(data, aoff, aoff + alen):
                if htype == NFTA_HOOK_HOOKNUM:
                    hooknum = _BE32.unpack_from(data, hoff)[0]
                elif htype == NFTA_HOOK_PRIORITY:
                    priority = _BE32S.unpack_from(data, hoff)[0]
        elif atype == NFTA_CHAIN_POLICY:
            policy = _BE32.unpack_from(data, aoff)[0]
        elif atype == NFTA_CHAIN_TYPE:
            chain_type = cstr(data, aoff, alen)
    return ChainMsg(data[off + 16], table, name, handle, hooknum, priority, policy, chain_type)


_NAMES: dict[bytes, str] = {}


def _name(raw: bytes) -> str:
    """Table and chain names, decoded once (every rule of a dump repeats them)."""
    name = _NAMES.get(raw)
    if name is None:
        name = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        if len(_NAMES) < 4096:
            _NAMES[raw] = name
    return name


def decode_rule(data: bytes, off: int, length: int) -> RuleMsg:
    """The attributes of a rule vnetd uses (the hot loop of a table read: written out inline)."""
    table = chain = ""
    handle = 0
    position = None
    exprs = b""
    udata = None
    unpack = _NLA.unpack_from
    pos, end = off + 20, off + length
    while pos + 4 <= end:
        alen, atype = unpack(data, pos)
        if alen < 4:
            break
        atype &= 0x3FFF
        if atype == NFTA_RULE_EXPRESSIONS:
            exprs = data[pos + 4 : pos + alen]
        elif atype == NFTA_RULE_HANDLE:
            handle = _BE64.unpack_from(data, pos + 4)[0]
        elif atype == NFTA_RULE_CHAIN:
            chain = _name(data[pos + 4 : pos + alen])
        elif atype == NFTA_RULE_TABLE:
            table = _name(data[pos + 4 : pos + alen])
        elif atype == NFTA_RULE_USERDATA:
            udata = data[pos + 4 : pos + alen]
        elif atype == NFTA_RULE_POSITION:
            position = _BE64.unpack_from(data, pos + 4)[0]
        pos += (alen + 3) & ~3
    return RuleMsg(data[off + 16], table, chain, handle, position, exprs, udata)


def decode_gen(data: bytes, off: int, length: int) -> int:
    for atype, aoff, _alen in attrs(data, off + 20, off + length):
        if atype == NFTA_GEN_ID:
            return int(_BE32.unpack_from(data, aoff)[0])
    raise NftError(errno.EPROTO, "generation message without NFTA_GEN_ID")


def nlmsg_error(data: bytes, off: int, length: int) -> tuple[int, str | None]:
    """(positive errno or 0, the kernel's extended-ack message) of an NLMSG_ERROR."""
    code = -_I32.unpack_from(data, off + 16)[0]
    flags = _NLMSGHDR.unpack_from(data, off)[2]
    message = None
    if flags & NLM_F_ACK_TLVS:
        # with NETLINK_CAP_ACK the request is not echoed: only its 16-byte header
        for atype, aoff, alen in attrs(data, off + 36, off + length):
            if atype == NLMSGERR_ATTR_MSG:
                message = cstr(data, aoff, alen)
    return code, message


def dump_generation(replies: Sequence[tuple[bytes, int, int, int]], base: int) -> int | None:
    """The generation a dump was read at: nf_tables puts its low 16 bits in every reply's
    ``res_id``; ``base`` is a generation read before the dump (the dump's is not older)."""
    for data, _kind, off, length in replies:
        if length >= 20:
            low = socket.ntohs(struct.unpack_from("=H", data, off + 18)[0])
            return (base + ((low - base) & 0xFFFF)) & 0xFFFFFFFF
    return None


def msg_type(mtype: int) -> int:
    """The NFT_MSG_* of a netlink type (-1 for messages of other subsystems)."""
    return mtype & 0xFF if mtype >> 8 == NFNL_SUBSYS_NFTABLES else -1


# --------------------------------------------------------------------------- transport


def _socket(groups: int, rcvbuf: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)  # root lifts rmem_max
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # errors do not echo the whole request
    sock.bind((0, 0))
    if groups:
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, groups)
    return sock


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What the kernel said about a batch: errors by message index, the generation after
    it, and the sequence number of its first message (the others follow in order)."""

    errors: dict[int, tuple[int, str | None]]
    genid: int
    first_seq: int


class NftSocket:
    """A blocking NETLINK_NETFILTER request socket in the caller's network namespace."""

    def __init__(self) -> None:
        self.sock = _socket(0, 4 << 20)
        self._seq = 0
        self._sndbuf = 0
        self.requests = 0
        #: this socket's netlink port id: notifications of its own changes carry it
        self.portid = int(self.sock.getsockname()[0])

    def close(self) -> None:
        self.sock.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
        return self._seq

    def _recv(self) -> bytes:
        return self.sock.recv(1 << 18)

    def getgen(self) -> int:
        """The ruleset's generation id: it changes with every committed transaction."""
        seq = self._next_seq()
        self.sock.send(get_gen().encode(seq))
        self.requests += 1
        while True:
            data = self._recv()
            for mtype, _flags, mseq, _pid, off, length in iter_messages(data):
                if mseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    code, message = nlmsg_error(data, off, length)
                    raise NftError(code, message or os.strerror(code))
                return decode_gen(data, off, length)

    def dump(self, request: Message) -> tuple[list[tuple[bytes, int, int, int]], bool]:
        """Run one dump: ((buffer, NFT_MSG type, offset, length) per message, interrupted).

        ``interrupted``: NLM_F_DUMP_INTR, a commit happened during the dump; the
        caller reads again. Each message of a dump carries the low 16 bits of the
        generation it was read at (``dump_generation``).
        """
        seq = self._next_seq()
        self.sock.send(request.encode(seq))
        self.requests += 1
        out: list[tuple[bytes, int, int, int]] = []
        interrupted = False
        while True:
            data = self._recv()
            for mtype, flags, mseq, _pid, off, length in iter_messages(data):
                if mseq != seq:
                    continue
                if flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if mtype == NLMSG_DONE:
                    return out, interrupted
                if mtype == NLMSG_ERROR:
                    code, message = nlmsg_error(data, off, length)
                    if code == errno.ENOENT:  # the table does not exist (any more)
                        return [], interrupted
                    if code:
                        raise NftError(code, message or os.strerror(code))
                    return out, interrupted
                out.append((data, msg_type(mtype), off, length))

    def batch(self, messages: Sequence[Message], genid: int | None, *, commit: bool = True) -> BatchResult:
        """Send ``messages`` as one nf_tables transaction; all or nothing.

        ``commit=False``: the batch has no end, so the kernel checks every message (and
        validates the ruleset as a commit would) and then aborts it: nothing changes,
        and the errors say what a commit would have refused (``nft --check``).

        ``genid``: the generation the caller's view of the ruleset was read at;
        the kernel refuses the batch (``BatchRestart``) if anything was committed
        since. Errors come back per message (the kernel goes on checking the rest
        of the batch, so every refused message is reported, then applies nothing).
        Messages carry no NLM_F_ACK: a GETGEN sent right after the batch is answered
        after every error of the batch, and tells the generation it left.
        """
        begin_seq = self._next_seq()
        begin_payload = nla(NFTA_GEN_ID, _BE32.pack(genid)) if genid is not None else b""
        parts = [_batch_marker(NFNL_MSG_BATCH_BEGIN, begin_seq, begin_payload)]
        first = self._seq + 1
        for request in messages:
            parts.append(request.encode(self._next_seq()))
        if commit:
            parts.append(_batch_marker(NFNL_MSG_BATCH_END, self._next_seq(), b""))
        blob = b"".join(parts)
        if len(blob) + 65536 > self._sndbuf:
            self._sndbuf = max(len(blob) * 2, 1 << 20)
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, self._sndbuf)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._sndbuf)
        self.sock.send(blob)
        self.requests += 1
        gen_seq = self._next_seq()
        self.sock.send(get_gen().encode(gen_seq))
        errors: dict[int, tuple[int, str | None]] = {}
        restart = False
        while True:
            data = self._recv()
            for mtype, _flags, mseq, _pid, off, length in iter_messages(data):
                if mtype == NLMSG_ERROR:
                    code, text = nlmsg_error(data, off, length)
                    if not code:
                        continue
                    if mseq == begin_seq:
                        if code == errno.ERESTART:
                            restart = True
                        else:  # the commit itself failed (no message to blame)
                            errors[-1] = (code, text)
                    elif first <= mseq < first + len(messages):
                        errors[mseq - first] = (code, text)
                    elif mseq == gen_seq:
                        raise NftError(code, text or os.strerror(code))
                elif mseq == gen_seq and msg_type(mtype) == NFT_MSG_NEWGEN:
                    if restart:
                        raise BatchRestart()
                    return BatchResult(errors, decode_gen(data, off, length), first)


def _batch_marker(mtype: int, seq: int, payload: bytes) -> bytes:
    body = _NFGENMSG.pack(NFPROTO_UNSPEC, NFNETLINK_V0, socket.htons(NFNL_SUBSYS_NFTABLES)) + payload
    return _NLMSGHDR.pack(16 + len(body), mtype, NLM_F_REQUEST, seq, 0) + body


class NftEvents:
    """Notifications of nf_tables changes (group NFNLGRP_NFTABLES), read without blocking.

    Each committed transaction arrives as the messages of the objects it changed
    (tables, chains, rules; ``nlmsg_pid`` is the writer's socket) followed by one
    ``NFT_MSG_NEWGEN`` carrying the new generation id. A full receive queue loses
    notifications: the next read raises ``EventOverrun``. Counters send nothing.
    """

    def __init__(self, rcvbuf: int = 16 << 20) -> None:
        self.sock = _socket(NFNLGRP_NFTABLES, rcvbuf)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def read(self, limit: int = 1 << 16) -> list[bytes]:
        """Every buffer waiting (up to ``limit`` buffers), in order; [] if none."""
        out: list[bytes] = []
        while len(out) < limit:
            try:
                out.append(self.sock.recv(1 << 18))
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise EventOverrun() from exc
                raise
        return out

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a notification; True if one is waiting."""
        import select

        ready, _w, _x = select.select([self.sock], [], [], timeout)
        return bool(ready)


class Event(NamedTuple):
    """One notification: what changed (NFT_MSG_*), by whom (the writer's socket and the
    sequence number of its request), and where the message is."""

    kind: int
    flags: int
    seq: int
    pid: int
    data: bytes
    off: int
    length: int


def parse_events(buffers: Iterable[bytes]) -> Iterator[Event]:
    for data in buffers:
        for mtype, flags, seq, pid, off, length in iter_messages(data):
            kind = msg_type(mtype)
            if kind >= 0:
                yield Event(kind, flags, seq, pid, data, off, length)
