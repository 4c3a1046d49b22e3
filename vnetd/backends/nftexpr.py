# SPDX-License-Identifier: MIT
"""nf_tables expressions: the builders vnetd needs, a parser, and the canonical form.

A rule in nf_tables is a list of expressions (``payload``, ``meta``, ``cmp``,
``match``...), each a name and nested attributes. vnetd compares rules by a
*fingerprint*: a hash of the canonical form of that list, computed the same way
from the expressions vnetd sends and from the kernel's dump of them. The
canonical form reads each attribute for what it means, so the ways a request and
a dump may differ do not count:

* attribute order; padding attributes; strings with or without their NUL;
* what the kernel adds or owns: the values of ``counter`` expressions (only that
  a counter is there counts), ``bitwise``'s default operation (``NFTA_BITWISE_OP``
  is dumped by kernels >= 5.6, never sent by iptables-nft);
* the kernel-private tail of an nft_compat ``match``/``target`` blob: nft_compat
  dumps the whole info, including state the extension's checkentry wrote there
  (hashlimit's table pointer, for instance); only the first *usersize* bytes
  (what iptables itself compares, learned from the compiled rules) count.

Each distinct expression is canonicalised once: ``Fingerprinter`` remembers
them, so a rule costs a walk over its few expressions and dictionary lookups.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Iterable, Iterator

from vnetd.backends.nfnl import (
    NFTA_EXPR_DATA,
    NFTA_EXPR_NAME,
    NFTA_LIST_ELEM,
    NLA_F_NESTED,
    be32,
    be64,
    expr,
    nest,
    nla,
    strz,
)

# expression attributes (linux/netfilter/nf_tables.h, nf_tables_compat.h)
NFTA_PAYLOAD_DREG, NFTA_PAYLOAD_BASE, NFTA_PAYLOAD_OFFSET, NFTA_PAYLOAD_LEN = 1, 2, 3, 4
NFTA_META_DREG, NFTA_META_KEY, NFTA_META_SREG = 1, 2, 3
NFTA_CMP_SREG, NFTA_CMP_OP, NFTA_CMP_DATA = 1, 2, 3
NFTA_BITWISE_SREG, NFTA_BITWISE_DREG, NFTA_BITWISE_LEN = 1, 2, 3
NFTA_BITWISE_MASK, NFTA_BITWISE_XOR, NFTA_BITWISE_OP, NFTA_BITWISE_DATA = 4, 5, 6, 7
NFTA_RANGE_SREG, NFTA_RANGE_OP, NFTA_RANGE_FROM_DATA, NFTA_RANGE_TO_DATA = 1, 2, 3, 4
NFTA_IMMEDIATE_DREG, NFTA_IMMEDIATE_DATA = 1, 2
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2
NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS, NFTA_COUNTER_PAD = 1, 2, 3
NFTA_LIMIT_RATE, NFTA_LIMIT_UNIT, NFTA_LIMIT_BURST, NFTA_LIMIT_TYPE, NFTA_LIMIT_FLAGS = 1, 2, 3, 4, 5
NFTA_LIMIT_PAD = 6
NFTA_LOG_GROUP, NFTA_LOG_PREFIX, NFTA_LOG_SNAPLEN, NFTA_LOG_QTHRESHOLD = 1, 2, 3, 4
NFTA_XT_NAME, NFTA_XT_REV, NFTA_XT_INFO = 1, 2, 3  # NFTA_MATCH_* and NFTA_TARGET_* alike

NFT_REG_VERDICT, NFT_REG_1, NFT_REG32_01 = 0, 1, 9
NFT_META_MARK, NFT_META_IIFNAME, NFT_META_OIFNAME, NFT_META_NFTRACE, NFT_META_L4PROTO = 3, 6, 7, 12, 16
NFT_PAYLOAD_NETWORK_HEADER, NFT_PAYLOAD_TRANSPORT_HEADER = 1, 2
NFT_CMP_EQ, NFT_CMP_NEQ, NFT_CMP_LT, NFT_CMP_LTE, NFT_CMP_GT, NFT_CMP_GTE = 0, 1, 2, 3, 4, 5
NFT_RANGE_EQ, NFT_RANGE_NEQ = 0, 1
NFT_LIMIT_PKTS = 0
NFT_JUMP, NFT_GOTO, NFT_RETURN = -3, -4, -5
NF_DROP, NF_ACCEPT = 0, 1

_NLA = struct.Struct("=HH")
_BE32 = struct.Struct(">I")
_BE32S = struct.Struct(">i")


# --------------------------------------------------------------------------- builders
# Cached: rules repeat their expressions (``meta l4proto``, ``cmp eq 6``, the counter,
# ``accept``, a conntrack blob), and packing one costs ~10 us in Python.


def _value(atype: int, data: bytes) -> bytes:
    return nest(atype, nla(NFTA_DATA_VALUE, data))


@functools.lru_cache(maxsize=65536)
def payload(base: int, offset: int, length: int, dreg: int = NFT_REG_1) -> bytes:
    return expr("payload", be32(NFTA_PAYLOAD_DREG, dreg), be32(NFTA_PAYLOAD_BASE, base),
                be32(NFTA_PAYLOAD_OFFSET, offset), be32(NFTA_PAYLOAD_LEN, length))


@functools.lru_cache(maxsize=65536)
def meta_load(key: int, dreg: int = NFT_REG_1) -> bytes:
    return expr("meta", be32(NFTA_META_KEY, key), be32(NFTA_META_DREG, dreg))


@functools.lru_cache(maxsize=65536)
def meta_set(key: int, sreg: int) -> bytes:
    return expr("meta", be32(NFTA_META_KEY, key), be32(NFTA_META_SREG, sreg))


@functools.lru_cache(maxsize=256)
def _cmp_head(sreg: int, op: int) -> bytes:
    return be32(NFTA_CMP_SREG, sreg) + be32(NFTA_CMP_OP, op)


_CMP_NAME = nla(NFTA_EXPR_NAME, b"cmp\0")


@functools.lru_cache(maxsize=65536)
def cmp(op: int, data: bytes, sreg: int = NFT_REG_1) -> bytes:
    """``cmp``: the expression of every compared value (addresses, ports: many are unique,
    so it is packed directly, and its canonical form is noted for the fingerprint)."""
    value = _NLA.pack(4 + len(data), NFTA_DATA_VALUE) + data + b"\0" * (-len(data) & 3)
    inner = _cmp_head(sreg, op) + _NLA.pack(4 + len(value), NFTA_CMP_DATA | NLA_F_NESTED) + value
    body = _CMP_NAME + _NLA.pack(4 + len(inner), NFTA_EXPR_DATA | NLA_F_NESTED) + inner
    element = _NLA.pack(4 + len(body), NFTA_LIST_ELEM | NLA_F_NESTED) + body
    if len(_SEEDED) >= 65536:
        _SEEDED.clear()
    _SEEDED[element] = canonical_cmp(_BE32.pack(sreg), _BE32.pack(op), data)
    return element


@functools.lru_cache(maxsize=65536)
def bitwise(mask: bytes, xor: bytes | None = None, sreg: int = NFT_REG_1, dreg: int = NFT_REG_1) -> bytes:
    return expr("bitwise", be32(NFTA_BITWISE_SREG, sreg), be32(NFTA_BITWISE_DREG, dreg),
                be32(NFTA_BITWISE_LEN, len(mask)), _value(NFTA_BITWISE_MASK, mask),
                _value(NFTA_BITWISE_XOR, xor if xor is not None else bytes(len(mask))))


@functools.lru_cache(maxsize=65536)
def range_(op: int, low: bytes, high: bytes, sreg: int = NFT_REG_1) -> bytes:
    return expr("range", be32(NFTA_RANGE_SREG, sreg), be32(NFTA_RANGE_OP, op),
                _value(NFTA_RANGE_FROM_DATA, low), _value(NFTA_RANGE_TO_DATA, high))


@functools.lru_cache(maxsize=65536)
def verdict(code: int, chain: str | None = None) -> bytes:
    inner = be32(NFTA_VERDICT_CODE, code) + (strz(NFTA_VERDICT_CHAIN, chain) if chain else b"")
    return expr("immediate", be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT),
                nest(NFTA_IMMEDIATE_DATA, nest(NFTA_DATA_VERDICT, inner)))


@functools.lru_cache(maxsize=65536)
def immediate_value(dreg: int, data: bytes) -> bytes:
    return expr("immediate", be32(NFTA_IMMEDIATE_DREG, dreg), _value(NFTA_IMMEDIATE_DATA, data))


@functools.lru_cache(maxsize=65536)
def counter() -> bytes:
    return expr("counter", be64(NFTA_COUNTER_BYTES, 0), be64(NFTA_COUNTER_PACKETS, 0))


@functools.lru_cache(maxsize=65536)
def limit(rate: int, unit: int, burst: int) -> bytes:
    return expr("limit", be64(NFTA_LIMIT_RATE, rate), be64(NFTA_LIMIT_UNIT, unit), be32(NFTA_LIMIT_BURST, burst),
                be32(NFTA_LIMIT_TYPE, NFT_LIMIT_PKTS), be32(NFTA_LIMIT_FLAGS, 0))


@functools.lru_cache(maxsize=65536)
def log_group(group: int, prefix: str, snaplen: int | None, qthreshold: int) -> bytes:
    parts = [strz(NFTA_LOG_PREFIX, prefix)] if prefix else []
    parts.append(nla(NFTA_LOG_GROUP, struct.pack(">H", group)))
    if snaplen is not None:
        parts.append(be32(NFTA_LOG_SNAPLEN, snaplen))
    if qthreshold:
        parts.append(nla(NFTA_LOG_QTHRESHOLD, struct.pack(">H", qthreshold)))
    return expr("log", *parts)


@functools.lru_cache(maxsize=65536)
def xt(kind: str, name: str, revision: int, info: bytes) -> bytes:
    """An nft_compat ``match`` or ``target`` expression carrying an xt blob."""
    return expr(kind, strz(NFTA_XT_NAME, name), be32(NFTA_XT_REV, revision), nla(NFTA_XT_INFO, info))


# --------------------------------------------------------------------------- parsing


def _attrs(data: bytes, start: int, end: int) -> Iterator[tuple[int, bool, int, int]]:
    """(type, nested, payload offset, payload length) of each attribute in [start, end)."""
    unpack = _NLA.unpack_from
    while start + 4 <= end:
        alen, atype = unpack(data, start)
        if alen < 4 or start + alen > end:
            return
        yield atype & 0x3FFF, bool(atype & NLA_F_NESTED), start + 4, alen - 4
        start += (alen + 3) & ~3


def split(exprs: bytes) -> list[tuple[str, bytes]]:
    """An NFTA_RULE_EXPRESSIONS payload -> [(expression name, its NFTA_EXPR_DATA payload)]."""
    out = []
    for _t, _n, eoff, elen in _attrs(exprs, 0, len(exprs)):
        name, data = "", b""
        for atype, _nested, aoff, alen in _attrs(exprs, eoff, eoff + elen):
            if atype == 1:  # NFTA_EXPR_NAME
                name = exprs[aoff : aoff + alen].split(b"\0", 1)[0].decode("ascii", "replace")
            elif atype == 2:  # NFTA_EXPR_DATA
                data = exprs[aoff : aoff + alen]
        out.append((name, data))
    return out


def fields(data: bytes) -> dict[int, bytes]:
    """The attributes of an expression's data, by type (raw payloads)."""
    return {atype: data[aoff : aoff + alen] for atype, _n, aoff, alen in _attrs(data, 0, len(data))}


def u32(raw: bytes | None, default: int = 0) -> int:
    return _BE32.unpack(raw[:4])[0] if raw is not None and len(raw) >= 4 else default


def s32(raw: bytes | None, default: int = 0) -> int:
    return _BE32S.unpack(raw[:4])[0] if raw is not None and len(raw) >= 4 else default


def data_value(raw: bytes | None) -> bytes | None:
    """NFTA_DATA_VALUE inside an NFTA_*_DATA attribute."""
    if raw is None:
        return None
    return fields(raw).get(NFTA_DATA_VALUE)


def data_verdict(raw: bytes | None) -> tuple[int, str | None] | None:
    """(verdict code, chain) inside an NFTA_IMMEDIATE_DATA attribute (None: a value)."""
    if raw is None:
        return None
    inner = fields(raw).get(NFTA_DATA_VERDICT)
    if inner is None:
        return None
    f = fields(inner)
    chain = f.get(NFTA_VERDICT_CHAIN)
    return s32(f.get(NFTA_VERDICT_CODE)), (chain.split(b"\0", 1)[0].decode("utf-8", "replace") if chain else None)


# --------------------------------------------------------------------------- canonical form

#: per expression: attributes that are strings, attributes holding nested nft data
_STRINGS = {"match": {NFTA_XT_NAME}, "target": {NFTA_XT_NAME}, "log": {NFTA_LOG_PREFIX}}
_DATA = {"cmp": {NFTA_CMP_DATA}, "bitwise": {NFTA_BITWISE_MASK, NFTA_BITWISE_XOR, NFTA_BITWISE_DATA},
         "range": {NFTA_RANGE_FROM_DATA, NFTA_RANGE_TO_DATA}, "immediate": {NFTA_IMMEDIATE_DATA}}
_PADS = {"limit": {NFTA_LIMIT_PAD}, "counter": {NFTA_COUNTER_PAD}}

#: (kind, name, revision, info size) -> bytes of the info userspace owns
UserSizes = dict[tuple[str, str, int, int], int]


def _canon_data(raw: bytes) -> bytes:
    """nft data (a value, or a verdict with an optional chain) in one canonical spelling."""
    out = []
    for atype, _nested, aoff, alen in _attrs(raw, 0, len(raw)):
        payload_ = raw[aoff : aoff + alen]
        if atype == NFTA_DATA_VERDICT:  # nested, whether the NLA_F_NESTED flag says so or not
            f = fields(payload_)
            chain = f.get(NFTA_VERDICT_CHAIN, b"").split(b"\0", 1)[0]
            payload_ = b"V" + f.get(NFTA_VERDICT_CODE, b"") + b"/" + chain
        out.append(_NLA.pack(len(payload_), atype) + payload_)
    return b"".join(sorted(out))


#: canonical forms of elements vnetd packed itself (see cmp), equal to what canonical_expr
#: computes from them (tests/unit/test_nft_codec.py checks it)
_SEEDED: dict[bytes, bytes] = {}


def canonical_cmp(sreg: bytes, op: bytes, value: bytes) -> bytes:
    """canonical_expr of a ``cmp`` with these raw attributes, without parsing it."""
    data = _NLA.pack(len(value), NFTA_DATA_VALUE) + value
    return (b"cmp{" + _NLA.pack(len(sreg), NFTA_CMP_SREG) + sreg + _NLA.pack(len(op), NFTA_CMP_OP) + op
            + _NLA.pack(len(data), NFTA_CMP_DATA) + data + b"};")


def canonical_expr(element: bytes, usersizes: UserSizes) -> bytes:
    """One NFTA_LIST_ELEM (header included) in its canonical spelling."""
    name = ""
    data = b""
    for atype, _n, aoff, alen in _attrs(element, 4, len(element)):
        if atype == 1:  # NFTA_EXPR_NAME
            name = element[aoff : aoff + alen].split(b"\0", 1)[0].decode("ascii", "replace")
        elif atype == 2:  # NFTA_EXPR_DATA
            data = element[aoff : aoff + alen]
    if name == "counter":
        return b"counter;"
    strings = _STRINGS.get(name, ())
    datas = _DATA.get(name, ())
    pads = _PADS.get(name, ())
    items = []
    for atype, _nested, aoff, alen in _attrs(data, 0, len(data)):
        if atype in pads:
            continue
        value = data[aoff : aoff + alen]
        if atype in strings:
            value = value.split(b"\0", 1)[0]
        elif atype in datas:
            value = _canon_data(value)
        elif name == "bitwise" and atype == NFTA_BITWISE_OP and u32(value) == 0:
            continue  # NFT_BITWISE_BOOL, the default: dumped by newer kernels, never sent
        items.append((atype, value))
    if name in ("match", "target"):
        f = dict(items)
        xt_name = f.get(NFTA_XT_NAME, b"")
        xt_rev = u32(f.get(NFTA_XT_REV))
        items = [(t, _mask_info(name, xt_name, xt_rev, v, usersizes) if t == NFTA_XT_INFO else v)
                 for t, v in items]
    items.sort()
    return name.encode() + b"{" + b"".join(_NLA.pack(len(v), t) + v for t, v in items) + b"};"


def canonical(exprs: bytes, usersizes: UserSizes) -> bytes:
    """The meaning of an expression list, spelled one way (see the module docstring)."""
    return b"".join(canonical_expr(exprs[off - 4 : off + length], usersizes)
                    for _t, _n, off, length in _attrs(exprs, 0, len(exprs)))


def _mask_info(kind: str, name: bytes, revision: int, info: bytes, usersizes: UserSizes) -> bytes:
    keep = usersizes.get((kind, name.decode("ascii", "replace"), revision, len(info)))
    if keep is None or keep >= len(info):
        return info
    return info[:keep] + bytes(len(info) - keep)


def fingerprint_of(canon: bytes) -> bytes:
    # 16 bytes: the daemon keeps two per rule (declared, observed)
    return hashlib.blake2b(canon, digest_size=16).digest()


_COUNTER_NAME = _NLA.pack(12, 1) + b"counter\0"


class Fingerprinter:
    """Fingerprints of expression lists, canonicalised expression by expression.

    Rules share most of their expressions (``meta l4proto``, ``cmp eq 6``, the
    counter, ``accept``, a conntrack blob): each distinct expression is
    canonicalised once and remembered, so a rule costs a walk over its few
    expressions and dictionary lookups. ``usersizes`` grows as rules are compiled
    (``learn``); ``version`` changes when it does and what was remembered is
    dropped, since a newly known usersize changes how a blob is read.
    """

    LIMIT = 500_000

    def __init__(self) -> None:
        self.usersizes: UserSizes = {}
        self.version = 0
        self._memo = _Canonical(self.usersizes, self.LIMIT)
        self._rules: dict[bytes, bytes] = {}

    def learn(self, kind: str, name: str, revision: int, size: int, usersize: int) -> None:
        key = (kind, name, revision, size)
        if self.usersizes.get(key) != usersize:
            self.usersizes[key] = usersize
            self.version += 1
            self._memo.clear()
            self._rules.clear()

    def __call__(self, exprs: bytes) -> bytes:
        """A rule's fingerprint; a rule seen before (counters aside) costs one lookup."""
        key = exprs
        at = exprs.find(_COUNTER_NAME)
        if at >= 4 and exprs.find(_COUNTER_NAME, at + 12) < 0:  # the usual single counter: cut its values
            dlen = _NLA.unpack_from(exprs, at + 12)[0] if at + 16 <= len(exprs) else 0
            key = exprs[: at + 12] + exprs[at + 12 + ((dlen + 3) & ~3) :]
        fp = self._rules.get(key)
        if fp is None:
            fp = self._walk(exprs)
            if len(self._rules) >= self.LIMIT:
                self._rules.clear()
            self._rules[key] = fp
        return fp

    def of_elements(self, elements: Iterable[bytes]) -> bytes:
        """The fingerprint of expressions vnetd built itself, one element each: no parsing
        (and the builders' cached elements hash once)."""
        return hashlib.blake2b(b"".join(map(self._memo.__getitem__, elements)), digest_size=16).digest()

    def _walk(self, exprs: bytes) -> bytes:
        memo = self._memo
        parts = []
        unpack = _NLA.unpack_from
        pos, end = 0, len(exprs)
        while pos + 4 <= end:
            alen = unpack(exprs, pos)[0]
            if alen < 4:
                break
            if exprs.startswith(_COUNTER_NAME, pos + 4):
                parts.append(b"counter;")  # its values change with traffic
            else:
                parts.append(memo[exprs[pos : pos + alen]])
            pos += (alen + 3) & ~3
        return hashlib.blake2b(b"".join(parts), digest_size=16).digest()


class _Canonical(dict[bytes, bytes]):
    """Element -> its canonical spelling, computed on first use (``dict.__missing__``): a
    known element costs one C-level lookup. The elements vnetd packed itself with a
    value of their own (addresses, ports: mostly unique) are answered from their seeded
    form and not kept twice."""

    def __init__(self, usersizes: UserSizes, limit: int) -> None:
        super().__init__()
        self.usersizes = usersizes
        self.limit = limit

    def __missing__(self, element: bytes) -> bytes:
        canon = _SEEDED.get(element)
        if canon is not None:
            return canon
        canon = b"counter;" if element.startswith(_COUNTER_NAME, 4) else canonical_expr(element, self.usersizes)
        if len(self) >= self.limit:
            self.clear()
        self[element] = canon
        return canon


def xt_comments(exprs: bytes) -> Iterator[str]:
    """Texts of the nft_compat ``comment`` matches of a rule (a tag written by iptables-nft-restore)."""
    if b"comment\0" not in exprs:
        return
    for name, data in split(exprs):
        if name != "match":
            continue
        f = fields(data)
        if f.get(NFTA_XT_NAME, b"").split(b"\0", 1)[0] == b"comment":
            yield f.get(NFTA_XT_INFO, b"").split(b"\0", 1)[0].decode("utf-8", "replace")
