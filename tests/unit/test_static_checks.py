# SPDX-License-Identifier: MIT
"""The static checks the project keeps: ruff, mypy --strict on the package, and the
import-linter contracts (the planning core never imports the system libraries)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT

BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "ruff").exists() else None


def tool(name: str) -> list[str]:
    return [str(BIN / name)] if BIN else [sys.executable, "-m", name.replace("-", "_")]


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff() -> None:
    result = run(*tool("ruff"), "check", "vnetd", "tests", "bench")
    assert result.returncode == 0, result.stdout[-4000:]


def test_mypy_strict() -> None:
    result = run(*tool("mypy"), "vnetd")
    assert result.returncode == 0, result.stdout[-4000:]


def test_import_layers() -> None:
    lint_imports = str(BIN / "lint-imports") if BIN else "lint-imports"
    result = run(lint_imports)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "2 kept, 0 broken" in result.stdout
