# SPDX-License-Identifier: MIT
"""Reading the legacy files to import: text only, bounded, never executed.

Every input is read as data. A FIFO, a device or a directory where a file is
expected is refused (a symlink to ``/dev/zero`` would otherwise never end), so is
a file larger than the limit, a binary file (NUL or other control bytes) and a
file that is not UTF-8. Errors name the file and, where there is one, the line.
"""

from __future__ import annotations

import os
import re
import stat

MAX_CONFIG_BYTES = 1 << 20  # an ifcfg-* or sysctl.conf file
MAX_RULES_BYTES = 64 << 20  # an iptables-save file (100,000 rules are ~10 MB)
#: control bytes no text configuration file has (tab, newline and CR are allowed)
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ImportProblem(Exception):
    """An input cannot be translated at all; ``str()`` names file and line."""

    def __init__(self, file: str, line: int, message: str) -> None:
        self.file = file
        self.line = line
        self.message = message
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")


def read_text(path: str, what: str, limit: int = MAX_CONFIG_BYTES) -> str:
    """The text of a regular file, or ImportProblem saying why not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImportProblem(path, 0, "does not exist") from None
    except IsADirectoryError:
        raise ImportProblem(path, 0, f"is a directory, not {what}") from None
    except OSError as exc:
        raise ImportProblem(path, 0, f"cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImportProblem(path, 0, f"is a directory, not {what}")
        if not stat.S_ISREG(st.st_mode):
            raise ImportProblem(path, 0, f"is not a regular file (a device, FIFO or socket), not {what}")
        chunks = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > limit:
                raise ImportProblem(path, 0, f"is larger than {limit // 1024} KiB; {what} is never that big")
            chunks.append(chunk)
    except OSError as exc:
        raise ImportProblem(path, 0, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    return decode(b"".join(chunks), path, what)


def decode(data: bytes, path: str, what: str) -> str:
    """UTF-8 text without control characters, or ImportProblem naming the line."""
    bad = _CONTROL.search(data)
    if bad is not None:
        byte = data[bad.start()]
        line = data[: bad.start()].count(b"\n") + 1
        kind = "a NUL byte" if byte == 0 else f"the control byte 0x{byte:02x}"
        raise ImportProblem(path, line, f"contains {kind}: this is a binary file, not {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportProblem(path, line, f"is not UTF-8 text (byte 0x{data[exc.start]:02x}); if it is "
                            f"Latin-1, convert it first: iconv -f latin1 -t utf-8 {path}") from None
    return text.removeprefix("\ufeff")


def split_lines(text: str) -> list[str]:
    """Lines as a shell or iptables-restore sees them: split at \\n only, a CR before it dropped."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def shown_value(value: str) -> str:
    """A value as it would be written in a shell file: bare when that is unambiguous."""
    if value and all(c.isalnum() or c in "-_.:/,+@%=" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`") + '"'
