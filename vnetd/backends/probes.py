# SPDX-License-Identifier: MIT
"""Running health probes: ICMP echo, TCP connect, an address present. No program is run.

ICMP uses a raw socket (root) with its own identifier, and waits for the echo reply
that carries it; TCP is a non-blocking connect that must complete; the address
probe reads the link's addresses over rtnetlink. Every probe is bounded by its
timeout, and the probes of one round run concurrently (a round takes as long as
its slowest probe).
"""

from __future__ import annotations

import errno
import os
import random
import select
import socket
import struct
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from vnetd.model.health import ProbeKind, ProbeResult, ProbeSpec

ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY = 128, 129


def run_probes(probes: Sequence[ProbeSpec]) -> list[ProbeResult]:
    """One round: every probe, concurrently; results in the probes' order."""
    if not probes:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(probes))) as pool:
        return list(pool.map(run_probe, probes))


def run_probe(probe: ProbeSpec) -> ProbeResult:
    start = time.monotonic()
    try:
        if probe.kind is ProbeKind.ICMP:
            detail = _icmp(probe)
        elif probe.kind is ProbeKind.TCP:
            detail = _tcp(probe)
        else:
            detail = _address(probe)
        ok = detail is None
    except OSError as exc:
        ok, detail = False, f"{exc.strerror or exc}"
    return ProbeResult(probe, ok, detail or "ok", (time.monotonic() - start) * 1000)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def _icmp(probe: ProbeSpec) -> str | None:
    assert probe.address is not None
    v6 = probe.address.version == 6
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    ident = random.getrandbits(16)
    deadline = time.monotonic() + probe.timeout
    with socket.socket(family, socket.SOCK_RAW | socket.SOCK_CLOEXEC, proto) as sock:
        payload = b"vnetd-probe" + struct.pack("!d", time.time())
        kind = ICMPV6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST
        header = struct.pack("!BBHHH", kind, 0, 0, ident, 1)
        packet = header + payload
        if not v6:  # the kernel computes the ICMPv6 checksum itself
            packet = struct.pack("!BBHHH", kind, 0, _checksum(packet), ident, 1) + payload
        sock.sendto(packet, (str(probe.address), 0))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return f"no echo reply within {probe.timeout:g} s"
            readable, _, _ = select.select([sock], [], [], left)
            if not readable:
                continue
            data, source = sock.recvfrom(2048)
            if source[0] != str(probe.address):
                continue
            if not v6:
                data = data[(data[0] & 0x0F) * 4 :]  # a raw IPv4 socket hands over the IP header too
            if len(data) >= 8:
                rtype, _code, _sum, rid, _seq = struct.unpack("!BBHHH", data[:8])
                if rtype == (ICMPV6_ECHO_REPLY if v6 else ICMP_ECHO_REPLY) and rid == ident:
                    return None


def _tcp(probe: ProbeSpec) -> str | None:
    assert probe.address is not None and probe.port is not None
    family = socket.AF_INET6 if probe.address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
        code = sock.connect_ex((str(probe.address), probe.port))
        if code not in (0, errno.EINPROGRESS):
            return f"connect: {os.strerror(code)}"
        _, writable, _ = select.select([], [sock], [], probe.timeout)
        if not writable:
            return f"no connection within {probe.timeout:g} s"
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return None if code == 0 else f"connect: {os.strerror(code)}"


def _address(probe: ProbeSpec) -> str | None:
    from vnetd.backends.netlink import NetlinkBackend

    assert probe.interface is not None and probe.interface_address is not None
    try:
        index = socket.if_nametoindex(probe.interface)
    except OSError:
        return f"no link {probe.interface}"
    backend = NetlinkBackend()
    try:
        for address in backend.dump_addresses():
            if address.index == index and address.ip == probe.interface_address:
                return None
    finally:
        backend.close()
    return f"{probe.interface_address} is not on {probe.interface}"
