# SPDX-License-Identifier: MIT
"""Network sysctls through /proc/sys/net (per network namespace: the files belong to
the namespace of the process that opens them).

Keys were validated by the loader; the path is checked again here (it must resolve
inside /proc/sys/net) because this is where a key turns into a file name.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

from vnetd.desired.sysctl import key_problem, split_key
from vnetd.errors import BackendError
from vnetd.model.sysctl import missing_hint, normalize_value

PROC_SYS = "/proc/sys"
_ROOT = "/proc/sys/net/"


def key_path(key: str) -> str:
    problem = key_problem(key)
    if problem:
        raise BackendError("sysctl", f"sysctl/{key}", problem, errno.EINVAL)
    path = os.path.join(PROC_SYS, *(split_key(key) or []))
    if not os.path.normpath(path).startswith(_ROOT):
        raise BackendError("sysctl", f"sysctl/{key}", "key resolves outside /proc/sys/net", errno.EINVAL)
    return path


class SysctlBackend:
    def read(self, keys: Iterable[str]) -> dict[str, str | None]:
        """Current values as the kernel prints them; None for keys that do not exist."""
        values: dict[str, str | None] = {}
        for key in keys:
            try:
                with open(key_path(key), encoding="ascii", errors="replace") as f:
                    values[key] = normalize_value(f.read())
            except FileNotFoundError:
                values[key] = None
            except PermissionError:
                values[key] = None  # write-only keys (e.g. route.flush) are never compared
        return values

    def write(self, key: str, value: str, resource: str) -> None:
        path = key_path(key)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BackendError("sysctl", resource, missing_hint(key), errno.ENOENT) from None
        except OSError as exc:
            raise BackendError("sysctl", resource, f"cannot open: {exc.strerror}", exc.errno) from exc
        try:
            os.write(fd, value.encode("ascii") + b"\n")
        except OSError as exc:
            raise BackendError("sysctl", resource, f"the kernel refused {value!r}: {exc.strerror}",
                               exc.errno) from exc
        finally:
            os.close(fd)
