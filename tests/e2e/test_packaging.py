# SPDX-License-Identifier: MIT
"""Issue 11: the built wheel is complete, installs, and runs.

The wheel used to carry no examples, so ``pip install .`` then ``vnetd demo`` failed
("the bundled examples are not installed"), and ``license = "MIT"`` needed a newer
setuptools than the one declared. Here the wheel is built from a copy of the tree
with the suite's own setuptools (``--no-build-isolation``: no index needed),
installed with ``--no-deps`` into a fresh venv whose dependencies come from the
suite's site-packages (a ``.pth`` line: not its ``.pth`` files, so the editable
vnetd of the suite stays out), and then: the files are where README.md says, the
installed vnetd validates the installed examples, and ``vnetd demo`` runs on them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, sh

NOT_COPIED = (".venv", ".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
              "build", "dist", "*.egg-info", "results")


class Installed:
    def __init__(self, venv: Path, wheel: Path) -> None:
        self.venv, self.wheel = venv, wheel
        self.data = venv  # a venv's data directory is its prefix

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return subprocess.run(list(args), capture_output=True, text=True, cwd="/", env=env, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    tree = base / "src"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*NOT_COPIED))
    dist = base / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(dist), str(tree)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("vnetd-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    Path(own, "suite-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    yield Installed(venv, wheel)


def test_the_wheel_carries_examples_service_files_docs_and_the_licence(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    data = "vnetd-0.1.0.data/data/"
    for expected in ("share/vnetd/examples/host/10-uplink-br0.yaml", "share/vnetd/examples/gateway/20-firewall.yaml",
                     "share/vnetd/examples/dmz-guest/10-interfaces.yaml", "share/vnetd/systemd/vnetd.service",
                     "share/vnetd/init.d/vnetd", "share/vnetd/logrotate/vnetd", "share/doc/vnetd/OPERATIONS.md",
                     "share/doc/vnetd/README.md", "share/doc/vnetd/SCHEMA.md", "share/man/man8/vnetd.8",
                     "share/man/man5/vnetd.d.5"):
        assert data + expected in names, expected
    assert "vnetd-0.1.0.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]
    metadata = zipfile.ZipFile(installed.wheel).read("vnetd-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata


def test_the_installed_vnetd_is_the_wheels_and_finds_its_examples(installed: Installed) -> None:
    python = str(installed.venv / "bin" / "python")
    where = installed.run(python, "-c", "import vnetd, vnetd.demo; print(vnetd.__file__); "
                                        "print(vnetd.demo.examples_dir())")
    assert where.returncode == 0, where.stderr
    module, examples = where.stdout.split()
    assert module.startswith(str(installed.venv)), module  # not the suite's editable copy
    assert examples == str(installed.data / "share" / "vnetd" / "examples" / "host")
    for args in (("--help",), ("demo", "--help"), ("status", "--help")):
        result = installed.run(str(installed.venv / "bin" / "vnetd"), *args)
        assert result.returncode == 0, result.stderr
    check = installed.run(str(installed.venv / "bin" / "vnetd"), "--state-dir", examples, "check")
    assert check.returncode == 0, check.stderr


def test_files_are_where_the_readme_says(installed: Installed) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Installing", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"`(share/[^`]+)`", section)
    assert len(listed) >= 6, listed
    for path in listed:
        assert (installed.data / path).exists(), f"README says {path}, the wheel did not install it"
    share = installed.data / "share" / "vnetd"
    assert (share / "systemd" / "vnetd.service").read_text() == (ROOT / "contrib/systemd/vnetd.service").read_text()
    assert (share / "logrotate" / "vnetd").read_text() == (ROOT / "contrib/logrotate/vnetd").read_text()
    init = share / "init.d" / "vnetd"
    assert init.read_text() == (ROOT / "contrib/init.d/vnetd").read_text() and os.access(init, os.X_OK)
    for example in sorted((ROOT / "etc").rglob("*.yaml")):
        host = "host" if example.parent.name == "vnetd.d" else example.parent.name
        assert (share / "examples" / host / example.name).read_text() == example.read_text()
    for page in ("man8/vnetd.8", "man5/vnetd.d.5"):
        name = page.split("/")[1]
        assert (installed.data / "share" / "man" / page).read_text() == (ROOT / "docs" / "man" / name).read_text()


@pytest.mark.kernel
def test_vnetd_demo_runs_from_the_installed_wheel(installed: Installed) -> None:
    assert "vnetd-demo" not in sh("ip", "netns", "list").stdout.split()
    result = installed.run(str(installed.venv / "bin" / "vnetd"), "--log-format", "json", "demo", "--duration", "3")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "not installed" not in result.stderr
    assert '"event": "daemon.ready"' in result.stderr
    assert "removed namespaces vnetd-demo and vnetd-demo-switch" in result.stdout
