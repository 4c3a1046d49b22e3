# SPDX-License-Identifier: MIT
"""iptables rules in nf_tables, stored exactly as iptables-nft 1.8.9 stores them.

vnetd's compiler (``xtables.py``) turns a rule's words into ``ipt_entry`` blobs,
what the legacy tables take. iptables-nft starts from the same parsed rule and
writes it as nf_tables expressions; this module does the same with an entry, in
the same order and the same encodings, so that ``iptables-nft-save`` prints the
same line for vnetd's rule as for ``iptables-nft -A`` of the same words:

* the fixed header fields as native expressions: ``-i``/``-o`` as ``meta
  iifname/oifname`` + ``cmp`` (a ``+`` wildcard compares the prefix, ``! -i +``
  compares with the impossible name ``INVAL/D``), ``-p`` as ``meta l4proto`` +
  ``cmp``, ``-s``/``-d`` as a ``payload`` load of as many bytes as the prefix
  covers (a ``bitwise`` mask when it is not whole bytes) + ``cmp``, ``-f`` as the
  fragment offset masked and compared with zero; ``!`` turns ``eq`` into ``neq``;
* ``-m tcp``/``-m udp`` ports and tcp flags, ``-m mark`` (revision 1) and ``-m
  limit`` as native ``payload``/``cmp``/``range``/``bitwise``/``meta``/``limit``
  expressions (iptables-nft keeps the compat match when the match has nothing
  else to say, or says what the native form cannot: tcp options, other inverted
  flags); every other match as an nft_compat ``match`` carrying the xt blob;
* a ``counter`` before the verdict (iptables-nft adds one to every rule);
* ACCEPT/DROP/RETURN and jumps/gotos as ``immediate`` verdicts, ``NFLOG`` as a
  ``log`` expression, ``TRACE`` as ``meta nftrace set 1``, every other target
  as an nft_compat ``target``; ``-j QUEUE`` cannot be written (iptables-nft
  1.8.9 fails on it too);
* the rule's compat info (``NFTA_RULE_COMPAT``: the ``-p`` protocol and its
  ``!``), which nft_compat hands to the extensions' checks.

IPv6 (``ip6tables-nft``, ``table ip6 ...``; iptables 1.8.9's ``nft-ipv6.c``) is the
same with an ``ip6t_entry``: ``-s``/``-d`` load up to 16 bytes at ``ip6_src`` (8) and
``ip6_dst`` (24), with the same whole-byte/``bitwise`` rule for masks that are not
prefixes; ``-p`` is ``meta l4proto`` as well; there is no ``-f`` (``-m frag``,
``-m ipv6header`` and the other extension-header matches are compat matches); the
goto flag is ``IP6T_F_GOTO``. Extensions (``icmp6``, ``REJECT`` with its IPv6 reject
types...) are the family's own xt blobs, compiled by libxtables for IPv6.

The other direction (``to_entry``) reads such expressions back into an entry,
so that rules are printed by the extensions' own save functions (``show``, the
plan's view of foreign rules).

Known difference: ``--nflog-prefix`` longer than 63 characters. iptables-nft
logs the whole prefix (up to 127) from the parser's private copy; the xt blob
vnetd compiles keeps 63, and so does vnetd's rule.
"""

from __future__ import annotations

import functools
import socket
import struct
from dataclasses import dataclass

from vnetd.backends import nftexpr as nx
from vnetd.backends.xtables import (
    IPV4,
    IPV6,
    XT_ENTRY_HEADER,
    EntryLayout,
    encode_plain_entry,
    standard_target,
    xt_header,
)

IPT_F_FRAG = 0x01
# the inversion flags have the same values in ip6t_ip6 (IP6T_INV_*)
IPT_INV_VIA_IN, IPT_INV_VIA_OUT, IPT_INV_SRCIP, IPT_INV_DSTIP = 0x01, 0x02, 0x08, 0x10
IPT_INV_FRAG, IPT_INV_PROTO = 0x20, 0x40
XT_TCP_INV_SRCPT, XT_TCP_INV_DSTPT, XT_TCP_INV_FLAGS = 0x01, 0x02, 0x04
XT_UDP_INV_SRCPT, XT_UDP_INV_DSTPT, XT_UDP_INV_MASK = 0x01, 0x02, 0x03
XT_NFLOG_F_COPY_LEN = 0x1
XT_LIMIT_SCALE = 10000
#: the impossible interface name iptables-nft compares with for "! -i +"
INVALID_IFNAME = b"INVAL/D\0"

_TCP = struct.Struct("=HHHHBBBB")  # spts[2], dpts[2], option, flg_mask, flg_cmp, invflags
_UDP = struct.Struct("=HHHHBx")  # spts[2], dpts[2], invflags
_MARK1 = struct.Struct("=IIB3x")  # mark, mask, invert
_RATEINFO = struct.Struct("=II")  # avg, burst (then kernel state)
_NFLOG = struct.Struct("=IHHHH64s")  # len, group, threshold, flags, pad, prefix
_LIMIT_MULT = (XT_LIMIT_SCALE * 24 * 60 * 60, XT_LIMIT_SCALE * 60 * 60, XT_LIMIT_SCALE * 60, XT_LIMIT_SCALE)


@dataclass(frozen=True, slots=True)
class Header:
    """The fixed part of one family's entry (``struct ipt_ip`` / ``struct ip6t_ip6``), the
    part iptables-nft writes as native expressions, and where its addresses are in the
    network header (``struct iphdr`` saddr/daddr, ``struct ip6_hdr`` ip6_src/ip6_dst)."""

    family: int
    layout: EntryLayout
    fields: struct.Struct  # src, dst, smsk, dmsk, iniface, outiface, masks, proto, [tos,] flags, invflags
    addr_len: int
    src_offset: int
    dst_offset: int
    proto_offset: int  # of ``proto`` in the entry (``invflags`` follows flags)

    def unpack(self, entry: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, int, int, int]:
        """(src, dst, smsk, dmsk, iniface, outiface, imask, omask, proto, flags, invflags)."""
        values = self.fields.unpack_from(entry)
        if self.family == 6:
            values = values[:9] + values[10:]  # tos: not settable from ip6tables' command line
        return values

    def pack(self, src: bytes, dst: bytes, smsk: bytes, dmsk: bytes, iniface: bytes, outiface: bytes,
             imask: bytes, omask: bytes, proto: int, flags: int, invflags: int) -> bytes:
        if self.family == 6:
            return self.fields.pack(src, dst, smsk, dmsk, iniface, outiface, imask, omask, proto, 0, flags, invflags)
        return self.fields.pack(src, dst, smsk, dmsk, iniface, outiface, imask, omask, proto, flags, invflags)

    def proto_of(self, entry: bytes) -> tuple[int, bool]:
        """The entry's ``-p`` protocol and whether it is inverted (the rule's compat info)."""
        proto = struct.unpack_from("=H", entry, self.proto_offset)[0]
        invflags = entry[self.layout.flags + 1]
        return proto, bool(invflags & IPT_INV_PROTO)


HEADERS = {
    4: Header(4, IPV4, struct.Struct("=4s4s4s4s16s16s16s16sHBB"), 4, 12, 16, 80),
    6: Header(6, IPV6, struct.Struct("=16s16s16s16s16s16s16s16sHBBB"), 16, 8, 24, 128),
}


class CannotEncode(ValueError):
    """A rule iptables-nft cannot write either (its message)."""


@dataclass(frozen=True, slots=True)
class NftRule:
    """One kernel rule as vnetd writes it: expressions and compat info (proto, inverted).

    ``elements``: the expressions one by one (``exprs`` joined), so they are
    fingerprinted without being parsed again; ``segments``: (kind, name, revision,
    blob size) of every xt match and the target of the entry it was made from.
    """

    exprs: bytes
    proto: int
    proto_inverted: bool
    elements: tuple[bytes, ...] = ()
    segments: tuple[tuple[str, str, int, int], ...] = ()


def _ifname(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def _iface(key: int, name: bytes, op: int) -> list[bytes]:
    out = [nx.meta_load(key)]
    if name.endswith(b"+"):
        if len(name) > 1:
            out.append(nx.cmp(op, name[:-1]))
        elif op != nx.NFT_CMP_EQ:
            out.append(nx.cmp(nx.NFT_CMP_EQ, INVALID_IFNAME))
    else:
        out.append(nx.cmp(op, name + b"\0"))
    return out


def _addr(offset: int, addr: bytes, mask: bytes, op: int) -> list[bytes]:
    """Compare as many leading bytes as the mask covers whole; mask with bitwise otherwise
    (the whole address: a mask that is not a prefix, or ends inside a byte)."""
    size = len(mask)
    whole = 0
    while whole < size and mask[whole] == 0xFF:
        whole += 1
    partial = whole < size and any(mask[whole:])
    length = size if partial else whole
    out = [nx.payload(nx.NFT_PAYLOAD_NETWORK_HEADER, offset, length)]
    if partial:
        out.append(nx.bitwise(mask))
    out.append(nx.cmp(op, addr[:length]))
    return out


def _op(inverted: int) -> int:
    return nx.NFT_CMP_NEQ if inverted else nx.NFT_CMP_EQ


def _port_range(low: int, high: int, inverted: bool) -> bytes:
    if low == high:
        return nx.cmp(_op(inverted), struct.pack(">H", low))
    if low == 0 and high < 0xFFFF:
        return nx.cmp(nx.NFT_CMP_GT if inverted else nx.NFT_CMP_LTE, struct.pack(">H", high))
    return nx.range_(nx.NFT_RANGE_NEQ if inverted else nx.NFT_RANGE_EQ, struct.pack(">H", low),
                     struct.pack(">H", high))


def _ports(src: tuple[int, int], src_inv: bool, dst: tuple[int, int], dst_inv: bool) -> list[bytes]:
    if src[0] and src[0] == src[1] and dst[0] and dst[0] == dst[1] and src_inv == dst_inv:
        # both ports fixed: one 4-byte load of the source and destination port
        return [nx.payload(nx.NFT_PAYLOAD_TRANSPORT_HEADER, 0, 4),
                nx.cmp(_op(src_inv), struct.pack(">HH", src[0], dst[0]))]
    out = []
    if src[0] or src[1] < 0xFFFF:
        out += [nx.payload(nx.NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2), _port_range(src[0], src[1], src_inv)]
    if dst[0] or dst[1] < 0xFFFF:
        out += [nx.payload(nx.NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2), _port_range(dst[0], dst[1], dst_inv)]
    return out


_NO_PORTS = (0, 0xFFFF, 0, 0xFFFF)


def _tcp(data: bytes, proto: int) -> list[bytes] | None:
    spt0, spt1, dpt0, dpt1, option, flg_mask, flg_cmp, invflags = _TCP.unpack_from(data)
    nothing = (spt0, spt1, dpt0, dpt1) == _NO_PORTS and not (option or flg_mask or flg_cmp or invflags)
    if invflags & ~(XT_TCP_INV_SRCPT | XT_TCP_INV_DSTPT | XT_TCP_INV_FLAGS) or option or nothing:
        return None
    if proto != socket.IPPROTO_TCP:
        raise CannotEncode("TCP match requires '-p tcp'")
    out = []
    if flg_mask:
        out += [nx.payload(nx.NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1), nx.bitwise(bytes((flg_mask,))),
                nx.cmp(_op(invflags & XT_TCP_INV_FLAGS), bytes((flg_cmp,)))]
    return out + _ports((spt0, spt1), bool(invflags & XT_TCP_INV_SRCPT), (dpt0, dpt1),
                        bool(invflags & XT_TCP_INV_DSTPT))


def _udp(data: bytes, proto: int) -> list[bytes] | None:
    spt0, spt1, dpt0, dpt1, invflags = _UDP.unpack_from(data)
    if invflags > XT_UDP_INV_MASK or ((spt0, spt1, dpt0, dpt1) == _NO_PORTS and not invflags):
        return None
    if proto != socket.IPPROTO_UDP:
        raise CannotEncode("UDP match requires '-p udp'")
    return _ports((spt0, spt1), bool(invflags & XT_UDP_INV_SRCPT), (dpt0, dpt1), bool(invflags & XT_UDP_INV_DSTPT))


def _mark(data: bytes) -> list[bytes]:
    mark, mask, invert = _MARK1.unpack_from(data)
    out = [nx.meta_load(nx.NFT_META_MARK)]
    if mask != 0xFFFFFFFF:
        out.append(nx.bitwise(struct.pack("=I", mask)))
    return out + [nx.cmp(_op(invert), struct.pack("=I", mark))]


def _limit(data: bytes) -> bytes:
    """xt limit's average (in 1/10000 s per packet) as iptables-nft turns it into rate/unit:
    the largest unit whose rate stays a whole, exact-enough number."""
    avg, burst = _RATEINFO.unpack_from(data)
    i = 1
    while i < len(_LIMIT_MULT):
        m = _LIMIT_MULT[i]
        if avg > m or m // avg < m % avg:
            break
        i += 1
    unit = _LIMIT_MULT[i - 1]
    return nx.limit(unit // avg, unit // XT_LIMIT_SCALE, burst)


def _match(name: str, revision: int, data: bytes, proto: int) -> list[bytes]:
    native: list[bytes] | None = None
    if name == "tcp":
        native = _tcp(data, proto)
    elif name == "udp":
        native = _udp(data, proto)
    elif name == "mark" and revision == 1:
        native = _mark(data)
    elif name == "limit":
        native = [_limit(data)]
    return native if native is not None else [nx.xt("match", name, revision, data)]


def _segment(entry: bytes, off: int) -> tuple[int, str, int, bytes]:
    size = struct.unpack_from("=H", entry, off)[0]
    name = entry[off + 2 : off + 31].split(b"\0", 1)[0].decode("ascii", "replace")
    return size, name, entry[off + 31], entry[off + XT_ENTRY_HEADER : off + size]


@functools.lru_cache(maxsize=1024)
def _described(kind: str, head: bytes) -> tuple[str, str, int, int]:
    """(kind, name, revision, data size) of a match or target, from its header."""
    size, name, revision, _data = _segment(head, 0)
    return kind, name, revision, size - XT_ENTRY_HEADER


@functools.lru_cache(maxsize=4096)
def _interfaces_and_proto(iniface: bytes, outiface: bytes, proto: int, inv: int) -> tuple[bytes, ...]:
    """``-i``, ``-o`` and ``-p`` (what comes before the addresses), shared by many rules."""
    out: list[bytes] = []
    if iniface[0]:
        out += _iface(nx.NFT_META_IIFNAME, _ifname(iniface), _op(inv & IPT_INV_VIA_IN))
    if outiface[0]:
        out += _iface(nx.NFT_META_OIFNAME, _ifname(outiface), _op(inv & IPT_INV_VIA_OUT))
    if proto:
        out += [nx.meta_load(nx.NFT_META_L4PROTO), nx.cmp(_op(inv & IPT_INV_PROTO), bytes((proto & 0xFF,)))]
    return tuple(out)


def encode(entry: bytes, meaning: str | None, goto: bool, *, skip_matches: int = 0, family: int = 4) -> NftRule:
    """An ipt_entry (``family`` 6: an ip6t_entry) as iptables-nft writes it (see the module
    docstring); both families alike, but for the addresses' size and offsets in the network
    header and ``-f``, which only IPv4 has.

    ``meaning``: the standard target's meaning (ACCEPT, a chain, "" for none) or
    None for an extension target; ``skip_matches``: leave out the last matches
    (vnetd's tag comment, which goes into the rule's user data instead).

    The header fields (addresses are mostly unique) are encoded for every rule; the
    matches and the target, which thousands of rules share, once per distinct blob.
    """
    header = HEADERS[family]
    layout = header.layout
    src, dst, smsk, dmsk, iniface, outiface, _imask, _omask, proto, flags, inv = header.unpack(entry)
    out = list(_interfaces_and_proto(iniface, outiface, proto, inv))
    if any(src) or any(smsk) or inv & IPT_INV_SRCIP:
        out += _addr(header.src_offset, src, smsk, _op(inv & IPT_INV_SRCIP))
    if any(dst) or any(dmsk) or inv & IPT_INV_DSTIP:
        out += _addr(header.dst_offset, dst, dmsk, _op(inv & IPT_INV_DSTIP))
    if family == 4 and flags & IPT_F_FRAG:
        out += [nx.payload(nx.NFT_PAYLOAD_NETWORK_HEADER, 6, 2), nx.bitwise(struct.pack(">H", 0x1FFF)),
                nx.cmp(nx.NFT_CMP_EQ if inv & IPT_INV_FRAG else nx.NFT_CMP_NEQ, bytes(2))]
    target_offset, next_offset = _OFFSETS.unpack_from(entry, layout.target_offset)
    starts = _match_offsets(entry, layout.size, target_offset)
    kept = max(len(starts) - skip_matches, 0)
    kept_end = starts[kept] if kept < len(starts) else target_offset
    tail, segments = _tail(entry[layout.size : kept_end], entry[target_offset:next_offset], meaning, goto, proto)
    if kept < len(starts):  # the skipped matches still count in the blob sizes the kernel keeps
        skipped = tuple(_described("match", entry[off : off + XT_ENTRY_HEADER]) for off in starts[kept:])
        segments = segments[:-1] + skipped + segments[-1:]
    out += tail
    return NftRule(b"".join(out), proto, bool(inv & IPT_INV_PROTO), tuple(out), segments)


_OFFSETS = struct.Struct("=HH")


def _match_offsets(entry: bytes, start: int, target_offset: int) -> list[int]:
    """Where each match of an entry starts."""
    out = []
    off = start
    while off < target_offset:
        size = struct.unpack_from("=H", entry, off)[0]
        if size < XT_ENTRY_HEADER:
            break
        out.append(off)
        off += size
    return out


@functools.lru_cache(maxsize=4096)
def _tail(matches: bytes, target: bytes, meaning: str | None, goto: bool, proto: int
          ) -> tuple[tuple[bytes, ...], tuple[tuple[str, str, int, int], ...]]:
    """The expressions of the matches (their blobs back to back), the counter and the
    verdict; and (kind, name, revision, blob size) of each match and the target."""
    out: list[bytes] = []
    segments: list[tuple[str, str, int, int]] = []
    off = 0
    while off < len(matches):
        size, name, revision, data = _segment(matches, off)
        if size < XT_ENTRY_HEADER:
            break
        segments.append(("match", name, revision, size - XT_ENTRY_HEADER))
        out += _match(name, revision, data, proto)
        off += size
    out.append(nx.counter())
    out += _action(target, meaning, goto)
    segments.append(_described("target", target[:XT_ENTRY_HEADER]))
    return tuple(out), tuple(segments)


def _action(target: bytes, meaning: str | None, goto: bool) -> list[bytes]:
    """The verdict of a target segment (a standard one's ``meaning``, or None for an extension)."""
    if meaning is None:
        _size, name, revision, data = _segment(target, 0)
        if name == "NFLOG":
            length, group, threshold, nflags, _pad, prefix = _NFLOG.unpack_from(data)
            return [nx.log_group(group, prefix.split(b"\0", 1)[0].decode("utf-8", "replace"),
                                 length if nflags & XT_NFLOG_F_COPY_LEN else None, threshold)]
        if name == "TRACE":
            return [nx.immediate_value(nx.NFT_REG32_01, b"\x01"), nx.meta_set(nx.NFT_META_NFTRACE, nx.NFT_REG32_01)]
        return [nx.xt("target", name, revision, data)]
    if meaning == "":
        return []
    if meaning == "ACCEPT":
        return [nx.verdict(nx.NF_ACCEPT)]
    if meaning == "DROP":
        return [nx.verdict(nx.NF_DROP)]
    if meaning == "RETURN":
        return [nx.verdict(nx.NFT_RETURN)]
    if meaning == "QUEUE":
        raise CannotEncode("-j QUEUE cannot be written into nf_tables by iptables-nft (use -j NFQUEUE)")
    return [nx.verdict(nx.NFT_GOTO if goto else nx.NFT_JUMP, meaning)]


# --------------------------------------------------------------------------- back to an entry


@dataclass
class _Ports:
    """A native tcp/udp match being read back (iptables-nft writes it as several expressions)."""

    at: int  # its place among the matches
    spts: tuple[int, int] = (0, 0xFFFF)
    dpts: tuple[int, int] = (0, 0xFFFF)
    invflags: int = 0
    flg_mask: int = 0
    flg_cmp: int = 0


class _Reader:
    """Reads expressions the way iptables-nft does (the register holds what was loaded)."""

    def __init__(self, header: Header) -> None:
        self.header = header
        self.src = self.dst = self.smsk = self.dmsk = bytes(header.addr_len)
        self.iniface = self.outiface = self.imask = self.omask = bytes(16)
        self.proto = self.flags = self.inv = 0
        self.matches: list[bytes] = []
        self.target: bytes | None = None
        self.meaning: str | None = ""
        self.meta_key: int | None = None  # what the register holds: a meta key...
        self.payload: tuple[int, int, int] | None = None  # ... or a payload (base, offset, length)
        self.mask: bytes | None = None
        self.ports: _Ports | None = None
        self.trace = False

    def load_meta(self, key: int) -> None:
        self.meta_key, self.payload, self.mask = key, None, None

    def load_payload(self, base: int, offset: int, length: int) -> None:
        self.meta_key, self.payload, self.mask = None, (base, offset, length), None

    def iface(self, out: bool, data: bytes, op: int) -> None:
        inverted = op == nx.NFT_CMP_NEQ
        if data == INVALID_IFNAME:
            name, mask, inverted = b"+", b"\xff\xff", True
        elif data.endswith(b"\0"):
            name = data.rstrip(b"\0")
            mask = b"\xff" * (len(name) + 1)
        else:
            name, mask = data + b"+", b"\xff" * len(data)
        if out:
            self.outiface, self.omask = name.ljust(16, b"\0"), mask.ljust(16, b"\0")
            self.inv |= IPT_INV_VIA_OUT if inverted else 0
        else:
            self.iniface, self.imask = name.ljust(16, b"\0"), mask.ljust(16, b"\0")
            self.inv |= IPT_INV_VIA_IN if inverted else 0

    def port_match(self) -> _Ports:
        if self.ports is None:
            self.ports = _Ports(len(self.matches))
            self.matches.append(b"")  # placeholder: keeps the match order
        return self.ports

    def compare(self, op: int, data: bytes) -> bool:
        neq = op == nx.NFT_CMP_NEQ
        key = self.meta_key
        if key is not None:
            if key in (nx.NFT_META_IIFNAME, nx.NFT_META_OIFNAME) and op in (nx.NFT_CMP_EQ, nx.NFT_CMP_NEQ):
                self.iface(key == nx.NFT_META_OIFNAME, data, op)
            elif key == nx.NFT_META_L4PROTO and len(data) == 1:
                self.proto = data[0]
                self.inv |= IPT_INV_PROTO if neq else 0
            elif key == nx.NFT_META_MARK and len(data) == 4:
                mask = struct.unpack("=I", self.mask)[0] if self.mask and len(self.mask) == 4 else 0xFFFFFFFF
                info = _MARK1.pack(struct.unpack("=I", data)[0], mask, 1 if neq else 0).ljust(16, b"\0")
                self.matches.append(xt_header(XT_ENTRY_HEADER + len(info), "mark", 1) + info)
            else:
                return False
            return True
        if self.payload is None:
            return False
        base, offset, length = self.payload
        header = self.header
        size = header.addr_len
        if base == nx.NFT_PAYLOAD_NETWORK_HEADER and offset in (header.src_offset, header.dst_offset) \
                and length <= size:
            addr = data.ljust(size, b"\0")
            mask = self.mask if self.mask is not None else b"\xff" * length + bytes(size - length)
            if len(addr) != size or len(mask) != size:
                return False
            if offset == header.src_offset:
                self.src, self.smsk = addr, mask
                self.inv |= IPT_INV_SRCIP if neq else 0
            else:
                self.dst, self.dmsk = addr, mask
                self.inv |= IPT_INV_DSTIP if neq else 0
            return True
        if base == nx.NFT_PAYLOAD_NETWORK_HEADER and offset == 6 and self.mask is not None and header.family == 4:
            self.flags |= IPT_F_FRAG
            self.inv |= IPT_INV_FRAG if op == nx.NFT_CMP_EQ else 0
            return True
        if base != nx.NFT_PAYLOAD_TRANSPORT_HEADER:
            return False
        ports = self.port_match()
        if offset == 13 and length == 1 and self.mask is not None:
            ports.flg_mask, ports.flg_cmp = self.mask[0], data[0]
            ports.invflags |= XT_TCP_INV_FLAGS if neq else 0
        elif offset == 0 and length == 4:
            sport, dport = struct.unpack(">HH", data)
            ports.spts, ports.dpts = (sport, sport), (dport, dport)
            ports.invflags |= (XT_TCP_INV_SRCPT | XT_TCP_INV_DSTPT) if neq else 0
        elif offset in (0, 2) and length == 2 and len(data) == 2:
            port = struct.unpack(">H", data)[0]
            bit = XT_TCP_INV_SRCPT if offset == 0 else XT_TCP_INV_DSTPT
            low, high = ports.spts if offset == 0 else ports.dpts
            # as iptables-nft 1.8.9 reads it back (port_match_single_to_range): a bound
            # is a bound, never an inversion (``! --dport 0:1023``, written ``gt 1023``,
            # is printed ``--dport 1024:65535``)
            inverted = neq
            if op in (nx.NFT_CMP_EQ, nx.NFT_CMP_NEQ):
                span = (port, port)
            elif op == nx.NFT_CMP_LT:
                span = (low, max(port - 1, 1))
            elif op == nx.NFT_CMP_LTE:
                span = (low, port)
            elif op == nx.NFT_CMP_GT:
                span = (min(port + 1, 0xFFFF), high)
            elif op == nx.NFT_CMP_GTE:
                span = (port, high)
            else:
                return False
            if offset == 0:
                ports.spts = span
            else:
                ports.dpts = span
            ports.invflags |= bit if inverted else 0
        else:
            return False
        return True

    def port_range(self, op: int, low: bytes, high: bytes) -> bool:
        if self.payload is None or self.payload[0] != nx.NFT_PAYLOAD_TRANSPORT_HEADER:
            return False
        offset = self.payload[1]
        if offset not in (0, 2) or len(low) != 2 or len(high) != 2:
            return False
        ports = self.port_match()
        span = (struct.unpack(">H", low)[0], struct.unpack(">H", high)[0])
        if offset == 0:
            ports.spts = span
        else:
            ports.dpts = span
        ports.invflags |= (XT_TCP_INV_SRCPT if offset == 0 else XT_TCP_INV_DSTPT) if op == nx.NFT_RANGE_NEQ else 0
        return True

    def finish_ports(self) -> bool:
        p = self.ports
        if p is None:
            return True
        if self.proto == socket.IPPROTO_TCP:
            info = _TCP.pack(*p.spts, *p.dpts, 0, p.flg_mask, p.flg_cmp, p.invflags).ljust(16, b"\0")
            name = "tcp"
        elif self.proto == socket.IPPROTO_UDP and not p.flg_mask:
            info = _UDP.pack(*p.spts, *p.dpts, p.invflags).ljust(16, b"\0")
            name = "udp"
        else:
            return False
        self.matches[p.at] = xt_header(XT_ENTRY_HEADER + len(info), name) + info
        return True


def to_entry(exprs: bytes, family: int = 4) -> tuple[bytes, str | None] | None:
    """Expressions written as iptables-nft writes them -> (ipt_entry, standard meaning);
    ``family`` 6: (ip6t_entry, meaning), read as ip6tables-nft reads them.

    None when a rule uses expressions iptables-nft would not have written (a
    native nft rule in a shared chain): it has no iptables spelling.
    """
    header = HEADERS[family]
    r = _Reader(header)
    for name, data in nx.split(exprs):
        f = nx.fields(data)
        if name == "meta" and nx.NFTA_META_DREG in f:
            r.load_meta(nx.u32(f.get(nx.NFTA_META_KEY)))
        elif name == "meta" and nx.u32(f.get(nx.NFTA_META_KEY)) == nx.NFT_META_NFTRACE and r.trace:
            r.target = xt_header(XT_ENTRY_HEADER, "TRACE")
            r.meaning = None
        elif name == "payload" and nx.NFTA_PAYLOAD_DREG in f:
            r.load_payload(nx.u32(f.get(nx.NFTA_PAYLOAD_BASE)), nx.u32(f.get(nx.NFTA_PAYLOAD_OFFSET)),
                           nx.u32(f.get(nx.NFTA_PAYLOAD_LEN)))
        elif name == "bitwise":
            r.mask = nx.data_value(f.get(nx.NFTA_BITWISE_MASK))
        elif name == "cmp":
            value = nx.data_value(f.get(nx.NFTA_CMP_DATA))
            if value is None or not r.compare(nx.u32(f.get(nx.NFTA_CMP_OP)), value):
                return None
        elif name == "range":
            low = nx.data_value(f.get(nx.NFTA_RANGE_FROM_DATA)) or b""
            high = nx.data_value(f.get(nx.NFTA_RANGE_TO_DATA)) or b""
            if not r.port_range(nx.u32(f.get(nx.NFTA_RANGE_OP)), low, high):
                return None
        elif name in ("match", "target"):
            xt_name = f.get(nx.NFTA_XT_NAME, b"").split(b"\0", 1)[0].decode("ascii", "replace")
            info = f.get(nx.NFTA_XT_INFO, b"")
            blob = xt_header(XT_ENTRY_HEADER + len(info), xt_name, nx.u32(f.get(nx.NFTA_XT_REV))) + info
            if name == "match":
                r.matches.append(blob)
            else:
                r.target, r.meaning = blob, None
        elif name == "limit":
            rate, unit = (struct.unpack(">Q", f.get(t, bytes(8))[:8])[0] for t in (nx.NFTA_LIMIT_RATE,
                                                                                nx.NFTA_LIMIT_UNIT))
            avg = XT_LIMIT_SCALE * unit // rate if rate else 0
            info = _RATEINFO.pack(avg, nx.u32(f.get(nx.NFTA_LIMIT_BURST))).ljust(40, b"\0")
            r.matches.append(xt_header(XT_ENTRY_HEADER + len(info), "limit") + info)
        elif name == "log" and nx.NFTA_LOG_GROUP in f:
            group = struct.unpack(">H", f[nx.NFTA_LOG_GROUP][:2])[0]
            snaplen = f.get(nx.NFTA_LOG_SNAPLEN)
            threshold = f.get(nx.NFTA_LOG_QTHRESHOLD)
            prefix = f.get(nx.NFTA_LOG_PREFIX, b"").split(b"\0", 1)[0][:63]
            info = _NFLOG.pack(nx.u32(snaplen), group, struct.unpack(">H", threshold[:2])[0] if threshold else 0,
                               XT_NFLOG_F_COPY_LEN if snaplen else 0, 0, prefix).ljust(80, b"\0")
            r.target, r.meaning = xt_header(XT_ENTRY_HEADER + len(info), "NFLOG") + info, None
        elif name == "immediate":
            v = nx.data_verdict(f.get(nx.NFTA_IMMEDIATE_DATA))
            if v is None:
                r.trace = nx.u32(f.get(nx.NFTA_IMMEDIATE_DREG)) == nx.NFT_REG32_01
                continue
            code, chain = v
            names = {nx.NF_ACCEPT: "ACCEPT", nx.NF_DROP: "DROP", nx.NFT_RETURN: "RETURN"}
            if code in names:
                r.meaning = names[code]
            elif code in (nx.NFT_JUMP, nx.NFT_GOTO) and chain:
                r.meaning = chain
                r.flags |= header.layout.goto if code == nx.NFT_GOTO else 0
            else:
                return None
        elif name != "counter":
            return None
    if not r.finish_ports():
        return None
    fixed = header.pack(r.src, r.dst, r.smsk, r.dmsk, r.iniface, r.outiface, r.imask, r.omask, r.proto, r.flags,
                        r.inv)
    target = r.target if r.target is not None else standard_target("")
    plain = encode_plain_entry(b"".join(r.matches), target, header.layout)
    return fixed + plain[len(fixed) :], r.meaning
