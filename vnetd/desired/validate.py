# SPDX-License-Identifier: MIT
"""Validators for names and values taken from state files.

Each returns None when the value is valid, otherwise a message that says what
would be valid. Nothing from a state file reaches the kernel without one of these.
"""

from __future__ import annotations

import ipaddress
import re

IFNAMSIZ = 16  # kernel buffer size including the trailing NUL: names are 1-15 chars

_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}\Z")
_CHAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,27}\Z")  # XT_EXTENSION_MAXNAMELEN-1 = 28


def interface_name(name: str) -> str | None:
    """The kernel's dev_valid_name(): what any interface name must be (in rules too)."""
    if not name:
        return "an interface name must not be empty (1-15 characters)"
    if len(name.encode()) >= IFNAMSIZ:
        return f"interface name {name!r} is {len(name.encode())} bytes long; the kernel allows 1-15"
    if name in (".", ".."):
        return f"{name!r} is not a valid interface name"
    bad = sorted({c for c in name if c in "/:" or c.isspace() or not c.isprintable() or not c.isascii()})
    if bad:
        return f"interface name {name!r} contains {bad!r}; '/', ':', whitespace and non-ASCII are not allowed"
    return None


#: Names the kernel refuses for a new link or that clash with a file beside the links':
#: "all" and "default" are the /proc/sys/net/ipv{4,6}/conf/ directories of every link
#: and of new ones (the kernel answers EINVAL); "bonding_masters" is the file the
#: bonding driver puts in /sys/class/net (a link of that name collides with it).
RESERVED_LINK_NAMES = ("all", "default", "bonding_masters")
VALID_LINK_NAME = ("a valid name has 1-15 printable ASCII characters without '/', ':', '%' or whitespace, "
                   "and is not '.', '..', " + ", ".join(repr(n) for n in RESERVED_LINK_NAMES))


def link_name(name: str) -> str | None:
    """A name vnetd may create, manage or route through: dev_valid_name() and what the
    kernel treats specially when it creates a link.

    '%' is refused: the kernel takes a new link's name with '%d' as a pattern and
    picks the first free number (``hp%d`` becomes hp0, then hp1 on the next create),
    so a declared ``hp%d`` would never exist and would be created again forever.
    """
    problem = interface_name(name)
    if problem is None and name in RESERVED_LINK_NAMES:
        clash = f"/sys/class/net/{name}" if name == "bonding_masters" else f"/proc/sys/net/ipv4/conf/{name}"
        problem = f"interface name {name!r} is reserved: it clashes with {clash}"
    elif problem is None and "%" in name:
        why = (f"the kernel takes '%d' as a pattern and would create {name.replace('%d', '0', 1)!r}, "
               f"{name.replace('%d', '1', 1)!r}, ... instead" if "%d" in name else "the kernel refuses it")
        problem = f"interface name {name!r} contains '%': {why}"
    return None if problem is None else f"{problem}; {VALID_LINK_NAME}"


def mac_address(value: str) -> str | None:
    if not _MAC.match(value):
        return f"{value!r} is not a MAC address; expected six hex pairs like 52:54:00:0a:fa:3e"
    first = int(value[:2], 16)
    if first & 1:
        return f"{value!r} is a multicast address; a device needs a unicast MAC"
    if int(value.replace(":", "").replace("-", ""), 16) == 0:
        return "00:00:00:00:00:00 is not a usable MAC address"
    return None


def normalize_mac(value: str) -> str:
    return value.replace("-", ":").lower()


def _scoped(value: str) -> str | None:
    """ipaddress accepts IPv6 scope ids (fe80::1%eth0), which netlink has no field for."""
    if "%" in value:
        return (f"{value!r} carries a scope id ('%...'); write the plain address and name the "
                "interface separately (the interface the address is listed under, or next-hop-interface)")
    return None


def ip_interface(value: str) -> str | None:
    """An address with prefix, host bits allowed (192.168.10.212/24)."""
    if (problem := _scoped(value)) is not None:
        return problem
    if "/" not in value:
        return f"{value!r} has no prefix length; expected ADDRESS/PREFIX like 192.168.10.212/24"
    try:
        ipaddress.ip_interface(value)
    except ValueError as exc:
        return f"{value!r} is not a valid address/prefix: {exc}"
    return None


def ip_address(value: str) -> str | None:
    if (problem := _scoped(value)) is not None:
        return problem
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IPv4 or IPv6 address"
    return None


def ip_network(value: str) -> str | None:
    """A route destination: a network without host bits (10.0.0.0/24, 0.0.0.0/0)."""
    if (problem := _scoped(value)) is not None:
        return problem
    if "/" not in value:
        return f"{value!r} has no prefix length; expected a network like 10.0.0.0/24 or 0.0.0.0/0"
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not a valid network: {exc}"
        return f"{value!r} has host bits set; did you mean {loose}?"
    return None


def chain_name(name: str) -> str | None:
    if not _CHAIN.match(name):
        return (f"{name!r} is not a valid chain name; use 1-28 letters, digits, '_', '.', '+' "
                "or '-', not starting with '-'")
    if name.upper() in ("ACCEPT", "DROP", "RETURN", "QUEUE") and name != name.upper():
        return f"{name!r} is too close to the built-in target {name.upper()}"
    if name in ("ACCEPT", "DROP", "RETURN", "QUEUE"):
        return f"{name!r} is a built-in target, not a chain"
    return None
