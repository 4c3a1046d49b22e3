# SPDX-License-Identifier: MIT
"""Types shared by every resource kind."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Origin:
    """Where a desired item was written: used in every error and log line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"
