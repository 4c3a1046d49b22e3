# SPDX-License-Identifier: MIT
"""Types of the C module vnetd/backends/_xtables.c (see its header comment)."""

from collections.abc import Collection, Sequence

ENTRY_SIZE: int
ENTRY6_SIZE: int
XTABLES_VERSION: str

class CompileError(ValueError): ...

def init() -> None: ...
def compile(
    words: Sequence[str], table: str, chain: str, chains: Collection[str], family: int = 4
) -> tuple[list[bytes], list[int], str, str, bool, str]: ...
def render(entry: bytes, meaning: str | None, family: int = 4) -> str: ...
def extension(kind: str, name: str, help: bool, family: int = 4) -> list[str] | str | None: ...
