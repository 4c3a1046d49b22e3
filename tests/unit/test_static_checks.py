# SPDX-License-Identifier: MIT
"""The static checks the project keeps: ruff, mypy --strict on the package, and the
import-linter contracts (the planning core never imports the system libraries)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from tests.support import ROOT


def tool(name: str) -> list[str]:
    """The tool as installed with the suite's packages, run by the interpreter running
    the tests (not through scripts whose interpreter another user may not reach)."""
    if name == "ruff":  # a native binary, found through its distribution's file list
        files = [f for f in importlib.metadata.distribution("ruff").files or () if f.name == "ruff"]
        return [str(files[0].locate())] if files else [sys.executable, "-m", "ruff"]
    if name == "lint-imports":
        return [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                "sys.exit(lint_imports_command())"]
    return [sys.executable, "-m", name]


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff() -> None:
    result = run(*tool("ruff"), "check", "vnetd", "tests", "bench")
    assert result.returncode == 0, result.stdout[-4000:]


def test_mypy_strict() -> None:
    result = run(*tool("mypy"), "vnetd")
    assert result.returncode == 0, result.stdout[-4000:]


def test_import_layers() -> None:
    result = run(*tool("lint-imports"))
    assert result.returncode == 0, result.stdout[-4000:]
    assert "2 kept, 0 broken" in result.stdout
