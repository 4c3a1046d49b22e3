# SPDX-License-Identifier: MIT
"""One exception tree for vnetd, classified by what the caller should do.

    VnetdError
    ├── ConfigError        the state files are wrong: report every issue, do not
    │                      retry until the files change (carries ConfigIssue list)
    ├── BackendError       talking to the kernel/libvirt failed: retryable with
    │                      back-off (kind, resource, errno)
    ├── DriftError         verify after apply still sees a difference (carries it)
    ├── NamespaceError     the --netns namespace does not exist or cannot be entered
    └── StartupError       ``vnetd run`` refuses to start: an invalid option, an unsafe
                           path, another vnetd already managing the namespace

Foreign exceptions (OSError from sockets, NetlinkError, IPTCError, libvirtError)
are mapped to these only at the backend boundary, with ``raise ... from exc``.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in one state file: where, which field, what would be valid."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{printable(self.file)}:{self.line}" if self.line else printable(self.file)
        field = f" {printable(self.path)}:" if self.path else ""
        return f"{where}:{field} {self.message}"


def printable(text: str) -> str:
    """``text`` on one line: a key or file name written with a newline or an escape
    sequence in it is shown escaped, so it can neither fake another error line nor
    drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class VnetdError(Exception):
    """Base of every error vnetd raises on purpose."""


class ConfigError(VnetdError):
    """The desired state cannot be loaded; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class BackendError(VnetdError):
    """A system call, netlink request, libiptc commit or libvirt call failed."""

    def __init__(self, kind: str, resource: str, message: str, errno: int | None = None) -> None:
        self.kind = kind
        self.resource = resource
        self.errno = errno
        self.message = message
        code = f" ({_errno.errorcode.get(errno, errno)})" if errno else ""
        super().__init__(f"{resource}: {message}{code}")


class DriftError(VnetdError):
    """Verification after apply still found differences. ``diff`` is what the state
    files want against what is there, for the resources that did not converge (a
    unified diff, as nmstate's verification error); raised by ``Engine.verify``."""

    def __init__(self, resources: Sequence[str], diff: str) -> None:
        self.resources = tuple(resources)
        self.diff = diff
        n = len(self.resources)
        super().__init__(f"{n} resource{'s' if n != 1 else ''} still differ{'s' if n == 1 else ''} from the "
                         f"state files after apply: {', '.join(self.resources)}")


class NamespaceError(VnetdError):
    """The named network namespace is missing or cannot be entered."""


class StartupError(VnetdError):
    """The daemon refuses to start; the message says why and what to do."""
