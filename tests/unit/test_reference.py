# SPDX-License-Identifier: MIT
"""docs/SCHEMA.md, vnetd(8) and vnetd.d(5) are generated from the loader's schema tables
and the command line's parser (vnetd/reference): the committed files must be what the
code generates today, and the man pages must render without a warning."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT
from vnetd import cli
from vnetd.desired import schema
from vnetd.desired.loader import SourceFile, load_sources
from vnetd.reference.__main__ import generated, main
from vnetd.reference.manpages import EXAMPLE

REGENERATE = "regenerate with: python -m vnetd.reference"


@pytest.mark.parametrize("name", sorted(generated()))
def test_the_committed_reference_is_what_the_code_generates(name: str) -> None:
    committed = (ROOT / name).read_text()
    assert committed == generated()[name], f"{name} is out of date; {REGENERATE}"


def test_check_mode_finds_a_stale_file(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert main(["--check", root]) == 1
    assert main([root]) == 0
    assert main(["--check", root]) == 0
    (tmp_path / "docs" / "SCHEMA.md").write_text("edited by hand\n")
    assert main(["--check", root]) == 1


@pytest.mark.parametrize("page", ["docs/man/vnetd.8", "docs/man/vnetd.d.5"])
def test_man_renders_the_pages_without_warnings(page: str) -> None:
    env = dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="", LC_ALL="C.UTF-8")
    result = subprocess.run(["man", "--warnings", "-l", str(ROOT / page)], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "NAME" in result.stdout and "SEE ALSO" in result.stdout
    strict = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(ROOT / page)], capture_output=True,
                            text=True, timeout=60)
    assert strict.returncode == 0 and strict.stderr == "", strict.stderr


def test_the_pages_cover_every_command_option_and_key() -> None:
    pages = generated()
    vnetd_8 = pages["docs/man/vnetd.8"].replace("\\-", "-")
    for command, examples in cli.EXAMPLES.items():
        if command:
            assert f'.SS "vnetd {command}"' in vnetd_8
        for line, _what in examples:
            assert line in vnetd_8
    for flag, _dest, _settings in cli.GLOBAL_OPTIONS:
        assert flag in vnetd_8
    vnetd_d_5 = pages["docs/man/vnetd.d.5"].replace("\\-", "-")
    for table in schema.tables():
        for f in table.fields:
            assert f"\\fB{f.key}\\fR" in vnetd_d_5, f"{table.name}.{f.key}"
            assert f"`{f.key}`" in pages["docs/SCHEMA.md"]


def test_the_man_pages_example_is_a_valid_state_file() -> None:
    state = load_sources([SourceFile("/virtual/10-uplink-br0.yaml", EXAMPLE)])
    assert [i.name for i in state.interfaces] == ["eth1", "br0"] and state.chains
