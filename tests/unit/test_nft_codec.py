# SPDX-License-Identifier: MIT
"""The iptables-nft backend's pure parts: canonical fingerprints, user data, and the
mirror following notifications (positions, transactions, generations, overruns).

The kernel side of the same promises is tests/integration/test_nftables.py.
"""

from __future__ import annotations

import itertools
import struct

import pytest

from vnetd.backends import nfnl
from vnetd.backends import nftexpr as nx
from vnetd.backends.nftcache import (
    BACKOFF_MAX,
    RELOAD_BUDGET,
    RELOAD_MIN_TRIES,
    CachedChain,
    CachedTable,
    Mirror,
    rule_tag,
)

# --------------------------------------------------------------------------- fingerprints


def _elem(name: str, *attrs: bytes, nul: bool = True) -> bytes:
    raw_name = name.encode() + (b"\0" if nul else b"")
    return nfnl.nest(nfnl.NFTA_LIST_ELEM, nfnl.nla(nfnl.NFTA_EXPR_NAME, raw_name),
                     nfnl.nest(nfnl.NFTA_EXPR_DATA, *attrs))


def test_fingerprint_ignores_how_the_kernel_spells_a_rule() -> None:
    """Attribute order, NUL-less strings, bitwise's default operation, counter values and
    padding: what a dump may add or reorder does not change the fingerprint."""
    fp = nx.Fingerprinter()
    sent = (nx.meta_load(nx.NFT_META_L4PROTO) + nx.cmp(nx.NFT_CMP_EQ, b"\x06")
            + nx.payload(nx.NFT_PAYLOAD_NETWORK_HEADER, 12, 4) + nx.bitwise(b"\xff\xff\xff\x80")
            + nx.cmp(nx.NFT_CMP_EQ, b"\x0a\x00\x00\x00") + nx.xt("match", "conntrack", 3, bytes(8))
            + nx.counter() + nx.verdict(nx.NFT_JUMP, "GUESTS"))
    dumped = (
        _elem("meta", nfnl.be32(nx.NFTA_META_DREG, 1), nfnl.be32(nx.NFTA_META_KEY, nx.NFT_META_L4PROTO))
        + _elem("cmp", nfnl.be32(nx.NFTA_CMP_OP, 0), nfnl.be32(nx.NFTA_CMP_SREG, 1),
                nfnl.nla(nx.NFTA_CMP_DATA, nfnl.nla(nx.NFTA_DATA_VALUE, b"\x06")))
        + _elem("payload", nfnl.be32(nx.NFTA_PAYLOAD_DREG, 1), nfnl.be32(nx.NFTA_PAYLOAD_BASE, 1),
                nfnl.be32(nx.NFTA_PAYLOAD_OFFSET, 12), nfnl.be32(nx.NFTA_PAYLOAD_LEN, 4))
        + _elem("bitwise", nfnl.be32(nx.NFTA_BITWISE_SREG, 1), nfnl.be32(nx.NFTA_BITWISE_DREG, 1),
                nfnl.be32(nx.NFTA_BITWISE_LEN, 4), nfnl.be32(nx.NFTA_BITWISE_OP, 0),
                nfnl.nla(nx.NFTA_BITWISE_MASK, nfnl.nla(nx.NFTA_DATA_VALUE, b"\xff\xff\xff\x80")),
                nfnl.nla(nx.NFTA_BITWISE_XOR, nfnl.nla(nx.NFTA_DATA_VALUE, bytes(4))))
        + _elem("cmp", nfnl.be32(nx.NFTA_CMP_SREG, 1), nfnl.be32(nx.NFTA_CMP_OP, 0),
                nfnl.nla(nx.NFTA_CMP_DATA, nfnl.nla(nx.NFTA_DATA_VALUE, b"\x0a\x00\x00\x00")))
        + _elem("match", nfnl.nla(nx.NFTA_XT_NAME, b"conntrack"), nfnl.be32(nx.NFTA_XT_REV, 3),
                nfnl.nla(nx.NFTA_XT_INFO, bytes(8)), nul=False)
        + _elem("counter", nfnl.be64(nx.NFTA_COUNTER_BYTES, 12345), nfnl.be64(nx.NFTA_COUNTER_PACKETS, 67))
        + _elem("immediate", nfnl.be32(nx.NFTA_IMMEDIATE_DREG, 0),
                nfnl.nla(nx.NFTA_IMMEDIATE_DATA, nfnl.nla(nx.NFTA_DATA_VERDICT, nfnl.be32(nx.NFTA_VERDICT_CODE,
                                                                                         nx.NFT_JUMP)
                                                          + nfnl.nla(nx.NFTA_VERDICT_CHAIN, b"GUESTS\0\0"))))
    )
    assert fp(sent) == fp(dumped)
    assert fp(dumped) == fp(dumped.replace(struct.pack(">Q", 12345), struct.pack(">Q", 99)))


def test_fingerprint_sees_every_change_of_meaning() -> None:
    fp = nx.Fingerprinter()
    base = nx.meta_load(nx.NFT_META_L4PROTO) + nx.cmp(nx.NFT_CMP_EQ, b"\x06") + nx.counter() + nx.verdict(nx.NF_ACCEPT)
    variants = [
        nx.meta_load(nx.NFT_META_L4PROTO) + nx.cmp(nx.NFT_CMP_NEQ, b"\x06") + nx.counter() + nx.verdict(nx.NF_ACCEPT),
        nx.meta_load(nx.NFT_META_L4PROTO) + nx.cmp(nx.NFT_CMP_EQ, b"\x11") + nx.counter() + nx.verdict(nx.NF_ACCEPT),
        nx.meta_load(nx.NFT_META_L4PROTO) + nx.cmp(nx.NFT_CMP_EQ, b"\x06") + nx.verdict(nx.NF_ACCEPT),
        nx.meta_load(nx.NFT_META_L4PROTO) + nx.cmp(nx.NFT_CMP_EQ, b"\x06") + nx.counter() + nx.verdict(nx.NF_DROP),
        nx.cmp(nx.NFT_CMP_EQ, b"\x06") + nx.meta_load(nx.NFT_META_L4PROTO) + nx.counter() + nx.verdict(nx.NF_ACCEPT),
        nx.meta_load(nx.NFT_META_L4PROTO) + nx.cmp(nx.NFT_CMP_EQ, b"\x06") + nx.counter()
        + nx.verdict(nx.NFT_GOTO, "A"),
    ]
    prints = {fp(v) for v in variants}
    assert fp(base) not in prints and len(prints) == len(variants)
    assert fp(nx.verdict(nx.NFT_JUMP, "A")) != fp(nx.verdict(nx.NFT_JUMP, "B"))


def test_kernel_private_tail_of_a_compat_blob_is_masked_once_known() -> None:
    """nft_compat dumps a match's whole info, state its checkentry wrote included;
    the bytes beyond the usersize learned from the compiled rule do not count."""
    fp = nx.Fingerprinter()
    declared = nx.xt("match", "hashlimit", 3, b"user" + bytes(12))
    kernel = nx.xt("match", "hashlimit", 3, b"user" + bytes(4) + b"\xde\xad\xbe\xef\x00\x00\x80\xff")
    assert fp(declared) != fp(kernel)
    version = fp.version
    fp.learn("match", "hashlimit", 3, 16, 8)
    assert fp.version != version
    assert fp(declared) == fp(kernel)
    assert fp(nx.xt("match", "hashlimit", 3, b"USER" + bytes(12))) != fp(declared)  # what userspace owns counts
    assert fp(nx.xt("target", "hashlimit", 3, b"user" + bytes(12))) != fp(declared)


def test_user_data_comment_as_libnftnl_writes_it() -> None:
    udata = nfnl.udata_comment("vnetd:0123456789abcdef")
    assert udata == b"\x00\x17vnetd:0123456789abcdef\x00"
    assert nfnl.udata_get_comment(udata) == "vnetd:0123456789abcdef"
    assert nfnl.udata_get_comment(b"\x05\x02ab" + udata) == "vnetd:0123456789abcdef"  # other records skipped
    assert nfnl.udata_get_comment(b"\x00\x03abc") is None  # not NUL-terminated: not a comment
    assert nfnl.udata_get_comment(b"\x00\x30abc") is None  # truncated
    assert rule_tag(b"", udata) == "vnetd:0123456789abcdef"
    assert rule_tag(b"", nfnl.udata_comment("web servers")) is None
    tagged_match = nx.xt("match", "comment", 0, b"vnetd:fedcba9876543210".ljust(256, b"\0"))
    assert rule_tag(tagged_match + nx.counter(), None) == "vnetd:fedcba9876543210"


# --------------------------------------------------------------------------- the mirror


class FakeSocket:
    portid = 4242

    def __init__(self) -> None:
        self.gen = 100

    def getgen(self) -> int:
        return self.gen


class FakeEvents:
    def __init__(self) -> None:
        self.queue: list[bytes] = []
        self.overrun = False

    def read(self) -> list[bytes]:
        if self.overrun:
            self.overrun = False
            self.queue.clear()
            raise nfnl.EventOverrun()
        out, self.queue = self.queue, []
        return out

    def wait(self, timeout: float) -> bool:
        return bool(self.queue)


def _note(kind: int, attrs: bytes, *, flags: int = 0, pid: int = 1, family: int = nfnl.NFPROTO_IPV4) -> bytes:
    body = struct.pack("=BBH", family, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), (nfnl.NFNL_SUBSYS_NFTABLES << 8) | kind, flags, 0, pid) + body


def new_rule(chain: str, handle: int, *, position: int | None = None, append: bool = False, pid: int = 1,
             table: str = "filter") -> bytes:
    attrs = nfnl.strz(1, table) + nfnl.strz(2, chain) + nfnl.be64(3, handle)
    if position is not None:
        attrs += nfnl.be64(nfnl.NFTA_RULE_POSITION, position)
    attrs += nfnl.nla(nfnl.NFTA_RULE_EXPRESSIONS, nx.counter() + nx.verdict(nx.NF_ACCEPT))
    attrs += nfnl.nla(nfnl.NFTA_RULE_USERDATA, nfnl.udata_comment(f"vnetd:{handle:016x}"))
    flags = nfnl.NLM_F_CREATE | (nfnl.NLM_F_APPEND if append else 0)
    return _note(nfnl.NFT_MSG_NEWRULE, attrs, flags=flags, pid=pid)


def del_rule(chain: str, handle: int, pid: int = 1) -> bytes:
    return _note(nfnl.NFT_MSG_DELRULE, nfnl.strz(1, "filter") + nfnl.strz(2, chain) + nfnl.be64(3, handle), pid=pid)


def new_gen(gen: int) -> bytes:
    return _note(nfnl.NFT_MSG_NEWGEN, nfnl.be32(nfnl.NFTA_GEN_ID, gen), family=0)


def _mirror(handles: list[int]) -> tuple[Mirror, FakeSocket, FakeEvents]:
    sock, events = FakeSocket(), FakeEvents()
    ticks = itertools.count()
    fps = {4: nx.Fingerprinter(), 6: nx.Fingerprinter()}
    mirror = Mirror(sock, events, fps, lambda: float(next(ticks)))  # type: ignore[arg-type]
    chain = CachedChain("FORWARD", 1, 2, 0, 1, "filter", rules_gen=100)
    for h in handles:
        msg = nfnl.decode_rule(new_rule("FORWARD", h), 0, len(new_rule("FORWARD", h)))
        rule = mirror._rule(msg, 4)
        chain.rules.append(rule)
        chain.by_handle[h] = rule
    mirror.tables = {"filter": CachedTable("filter", {"FORWARD": chain})}
    mirror.struct_gen, mirror.valid = 100, True
    mirror.fp_versions = {family: fp.version for family, fp in fps.items()}
    return mirror, sock, events


def _order(mirror: Mirror) -> list[int]:
    return [r.handle for r in mirror.tables["filter"].chains["FORWARD"].rules]


def _send(events: FakeEvents, sock: FakeSocket, gen: int, *notes: bytes) -> None:
    events.queue.append(b"".join(notes) + new_gen(gen))
    sock.gen = gen


def test_new_rules_are_placed_where_the_kernel_says() -> None:
    mirror, sock, events = _mirror([10, 11])
    _send(events, sock, 101, new_rule("FORWARD", 20))  # no position, no append: first
    _send(events, sock, 102, new_rule("FORWARD", 21, append=True))  # last
    _send(events, sock, 103, new_rule("FORWARD", 22, position=10))  # right after 10
    assert mirror.pump() is True
    assert _order(mirror) == [20, 10, 22, 11, 21]
    assert mirror.gen == 103 and mirror.valid
    assert mirror.sync() == 103  # nothing newer: no re-read
    assert mirror.reloads == 0


def test_a_position_naming_a_rule_of_the_same_transaction_waits_for_it() -> None:
    """Positions are computed at commit, when every rule of the transaction is in the
    chain: a rule may be placed after one whose notification comes later."""
    mirror, sock, events = _mirror([10, 11])
    # the batch inserted 31 after 10, then 30 after 10: the chain is 10, 30, 31, 11
    _send(events, sock, 101, new_rule("FORWARD", 31, position=30), new_rule("FORWARD", 30, position=10))
    mirror.pump()
    assert _order(mirror) == [10, 30, 31, 11] and mirror.valid


def test_a_position_that_never_comes_makes_the_mirror_read_again() -> None:
    mirror, sock, events = _mirror([10])
    _send(events, sock, 101, new_rule("FORWARD", 31, position=99))
    mirror.pump()
    assert not mirror.valid


def test_deleted_rules_and_old_transactions() -> None:
    mirror, sock, events = _mirror([10, 11, 12])
    _send(events, sock, 100, del_rule("FORWARD", 10))  # already in the dump (generation 100): skipped
    _send(events, sock, 101, del_rule("FORWARD", 11))
    mirror.pump()
    assert _order(mirror) == [10, 12] and mirror.gen == 101


def test_own_changes_are_not_foreign_and_overruns_are() -> None:
    mirror, sock, events = _mirror([10])
    _send(events, sock, 101, new_rule("FORWARD", 11, append=True, pid=FakeSocket.portid))
    assert mirror.pump() is False and _order(mirror) == [10, 11]
    assert "filter" in mirror.dirty
    mirror.mark_seen()
    events.overrun = True
    assert mirror.pump() is True
    assert not mirror.valid and mirror.take_foreign() and not mirror.take_foreign()


def test_notifications_of_other_tables_and_families_are_ignored() -> None:
    mirror, sock, events = _mirror([10])
    other_family = _note(nfnl.NFT_MSG_DELRULE, nfnl.strz(1, "filter") + nfnl.strz(2, "FORWARD") + nfnl.be64(3, 10),
                         family=7)  # NFPROTO_BRIDGE: ebtables-nft's "filter"
    other_table = del_rule("FORWARD", 10).replace(b"filter\0", b"firewa\0")
    _send(events, sock, 101, other_family, other_table)
    assert mirror.pump() is False
    assert _order(mirror) == [10] and mirror.gen == 101 and not mirror.dirty


def test_parts_read_at_different_generations_are_brought_together() -> None:
    """The chains were read at generation 100, FORWARD's rules at 102: the transactions
    in between change only what was read before them."""
    mirror, sock, events = _mirror([10, 20])  # the rules as at 102: 20 added (101), 11 deleted (102)
    chain = mirror.tables["filter"].chains["FORWARD"]
    chain.rules_gen = 102
    mirror._note_read(chain)
    chain.policy = 0  # read at 100: DROP; gen 101 set ACCEPT
    policy = _note(nfnl.NFT_MSG_NEWCHAIN, nfnl.strz(1, "filter") + nfnl.be64(2, 1) + nfnl.strz(3, "FORWARD")
                   + nfnl.nest(4, nfnl.be32(1, 2), nfnl.be32(2, 0)) + nfnl.be32(5, 1) + nfnl.strz(7, "filter"))
    _send(events, sock, 101, new_rule("FORWARD", 20, append=True), policy)
    _send(events, sock, 102, del_rule("FORWARD", 11))
    _send(events, sock, 103, new_rule("FORWARD", 21, append=True))
    mirror.pump()
    assert mirror.valid and mirror.gen == 103
    assert chain.policy == 1  # the chains' part was older: the policy change applies
    assert _order(mirror) == [10, 20, 21]  # the rules' part had 101 and 102 already
    assert not mirror._ahead  # caught up: every part at 103


class DumpingSocket(FakeSocket):
    """A kernel of one ``ip filter`` table for Mirror.reload: ``chains`` name -> (hook or
    None, rule handles); ``interrupt`` name -> how many of the next dumps of that chain's
    rules a commit interrupts (-1: all of them)."""

    def __init__(self, chains: dict[str, tuple[int | None, list[int]]]) -> None:
        super().__init__()
        self.chains = chains
        self.interrupt: dict[str, int] = {}
        self.dumped: list[str] = []

    def _reply(self, kind: int, attrs: bytes) -> tuple[bytes, int, int, int]:
        body = struct.pack("=BBH", nfnl.NFPROTO_IPV4, 0, struct.unpack("=H", struct.pack(">H", self.gen & 0xFFFF))[0])
        data = struct.pack("=IHHII", 20 + len(attrs), (nfnl.NFNL_SUBSYS_NFTABLES << 8) | kind, 2, 0, 0) + body + attrs
        return data, kind, 0, len(data)

    def dump(self, request: nfnl.Message) -> tuple[list[tuple[bytes, int, int, int]], bool]:
        if request.mtype == nfnl.NFT_MSG_GETTABLE:
            return [self._reply(nfnl.NFT_MSG_NEWTABLE, nfnl.strz(1, "filter"))], False
        if request.mtype == nfnl.NFT_MSG_GETCHAIN:
            out = []
            for handle, (name, (hook, _rules)) in enumerate(self.chains.items(), 1):
                attrs = nfnl.strz(1, "filter") + nfnl.be64(2, handle) + nfnl.strz(3, name)
                if hook is not None:
                    attrs += nfnl.nest(4, nfnl.be32(1, hook), nfnl.be32(2, 0)) + nfnl.be32(5, 1) + nfnl.strz(7, "filter")
                out.append(self._reply(nfnl.NFT_MSG_NEWCHAIN, attrs))
            return out, False
        assert request.mtype == nfnl.NFT_MSG_GETRULE
        name = nfnl.decode_rule(b"\0" * 16 + struct.pack("=BBH", 2, 0, 0) + request.payload, 0,
                                20 + len(request.payload)).chain
        assert name, "the rules are dumped chain by chain"
        self.dumped.append(name)
        left = self.interrupt.get(name, 0)
        if left:
            self.interrupt[name] = left - 1 if left > 0 else left
            self.gen += 1  # a commit meanwhile
            return [], True
        return [self._reply(nfnl.NFT_MSG_NEWRULE, new_rule(name, h)[20:]) for h in self.chains[name][1]], False


def _reloading(chains: dict[str, tuple[int | None, list[int]]]) -> tuple[Mirror, DumpingSocket, FakeEvents, list[float]]:
    """A mirror whose clock moves when it pauses (``slept``: the pauses), and by 1 ms each
    time it is read."""
    sock, events, slept = DumpingSocket(chains), FakeEvents(), []
    ticks = itertools.count()
    mirror = Mirror(sock, events, {4: nx.Fingerprinter(), 6: nx.Fingerprinter()},  # type: ignore[arg-type]
                    lambda: sum(slept) + next(ticks) / 1000, slept.append)
    return mirror, sock, events, slept


def test_a_chain_interrupted_is_read_again_alone_after_a_pause() -> None:
    mirror, sock, _events, slept = _reloading({"FORWARD": (2, [10, 11]), "GUESTS": (None, [20])})
    sock.interrupt = {"FORWARD": 3}
    mirror.sync()
    assert sock.dumped == ["FORWARD"] * 4 + ["GUESTS"]  # not the whole table again
    assert slept == [0.001, 0.002, 0.004]  # each pause doubles
    assert _order(mirror) == [10, 11] and [r.handle for r in mirror.tables["filter"].chains["GUESTS"].rules] == [20]
    assert mirror.valid and mirror.reloads == 1


def test_a_foreign_chain_that_keeps_changing_is_held_unread_until_needed() -> None:
    """A writer commits faster than one dump of a large foreign chain: the chain is held
    without its rules (their notifications ignored), the rest of the mirror is read and
    kept; ``require`` reads it when vnetd needs it."""
    mirror, sock, events, _slept = _reloading({"FORWARD": (2, [10]), "BULK": (None, [30, 31])})
    sock.interrupt = {"BULK": -1}
    mirror.sync()
    bulk = mirror.tables["filter"].chains["BULK"]
    assert mirror.valid and bulk.unread and bulk.rules == [] and mirror.unread() == [("filter", "BULK")]
    _send(events, sock, sock.gen + 1, new_rule("BULK", 32, append=True), new_rule("FORWARD", 12, append=True))
    mirror.sync()
    assert bulk.unread and bulk.rules == [] and _order(mirror) == [10, 12]
    assert mirror.retry_unread() is False  # still changing
    with pytest.raises(nfnl.NftError, match="kept changing"):
        mirror.require([("filter", "BULK")])  # needed: tried for the whole budget, then refused
    sock.interrupt = {}
    sock.chains["BULK"] = (None, [30, 31, 32])
    assert mirror.require([("filter", "BULK")]) is True
    assert not bulk.unread and [r.handle for r in bulk.rules] == [30, 31, 32]
    _send(events, sock, sock.gen + 1, del_rule("BULK", 31))
    mirror.sync()
    assert [r.handle for r in bulk.rules] == [30, 32] and mirror.reloads == 1


def test_a_built_in_chain_that_keeps_changing_fails_the_read_after_the_budget() -> None:
    mirror, sock, _events, slept = _reloading({"FORWARD": (2, [10])})
    sock.interrupt = {"FORWARD": -1}
    with pytest.raises(nfnl.NftError, match="kept changing while being read"):
        mirror.sync()
    assert len(sock.dumped) >= RELOAD_MIN_TRIES and not mirror.valid
    assert max(slept) == BACKOFF_MAX and sum(slept) <= RELOAD_BUDGET


def test_a_chain_renamed_before_its_rules_were_read_makes_the_mirror_read_again() -> None:
    mirror, sock, events = _mirror([10])
    chain = mirror.tables["filter"].chains["FORWARD"]
    chain.hooknum = None  # a user chain, read by its name at 102
    chain.rules_gen = 102
    mirror._note_read(chain)
    rename = _note(nfnl.NFT_MSG_NEWCHAIN, nfnl.strz(1, "filter") + nfnl.be64(2, 1) + nfnl.strz(3, "OTHER"))
    _send(events, sock, 101, rename)
    mirror.pump()
    assert not mirror.valid


def test_a_generation_without_its_notifications_makes_the_mirror_read_again() -> None:
    mirror, sock, _events = _mirror([10])
    sock.gen = 105  # committed, but nothing arrived (lost without ENOBUFS, or never sent)
    reloaded = []
    mirror.reload = lambda: reloaded.append(True)  # type: ignore[method-assign]
    mirror.sync()
    assert reloaded == [True]


@pytest.mark.parametrize("text", ["x" * 254, "é" * 127])
def test_long_comments_fit_user_data(text: str) -> None:
    assert nfnl.udata_get_comment(nfnl.udata_comment(text)) == text
    with pytest.raises(ValueError, match="longer"):
        nfnl.udata_comment(text + "yy")


@pytest.mark.parametrize("op,data", [(nx.NFT_CMP_EQ, b"\x06"), (nx.NFT_CMP_NEQ, b"\xc0\x00\x02"),
                                     (nx.NFT_CMP_LTE, b"\x04\x00"), (nx.NFT_CMP_EQ, b"eth0\0"),
                                     (nx.NFT_CMP_EQ, b"INVAL/D\0"), (nx.NFT_CMP_EQ, bytes(16))])
def test_packed_cmp_is_the_generic_expression_and_its_noted_canonical_form_is_exact(op: int, data: bytes) -> None:
    generic = nfnl.expr("cmp", nfnl.be32(nx.NFTA_CMP_SREG, 1), nfnl.be32(nx.NFTA_CMP_OP, op),
                        nfnl.nest(nx.NFTA_CMP_DATA, nfnl.nla(nx.NFTA_DATA_VALUE, data)))
    packed = nx.cmp(op, data)
    assert packed == generic
    assert nx._SEEDED[packed] == nx.canonical_expr(packed, {})
