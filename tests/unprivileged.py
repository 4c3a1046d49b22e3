# SPDX-License-Identifier: MIT
"""Running the suite's own code as an unprivileged user (``nobody``).

The suite's virtualenv may be built on an interpreter nobody cannot run (pyenv under
/root, mode 0700). Nothing is loosened on the host for it: ``UnprivilegedPython``
picks an interpreter of the same version that ``nobody`` can execute (the venv's own
if it is reachable, else the system's ``/usr/bin/pythonX.Y``), makes a throw-away
venv from it in a world-readable temporary directory, and points that venv at the
suite venv's site-packages with a ``.pth`` file (``site.addsitedir``), so the very
same packages are imported. Only reading is needed, and the suite's files are
world-readable (umask 022).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

NOBODY = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")


def as_nobody(*cmd: str, cwd: str | Path | None = None, env: dict[str, str] | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOBODY, *cmd], cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout)


class UnprivilegedPython:
    """A Python that ``nobody`` can run, importing the suite venv's packages."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vnetd-nobody-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.python = self._make()

    def _candidates(self) -> list[str]:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        found = [sys.executable, f"/usr/bin/python{version}", shutil.which(f"python{version}") or ""]
        return [c for c in dict.fromkeys(found) if c and os.path.exists(c)]

    def _make(self) -> str:
        site_packages = sysconfig.get_paths()["purelib"]
        tried = []
        for candidate in self._candidates():
            if self._works(candidate):
                return candidate  # the suite's own interpreter and venv are reachable as they are
            if as_nobody(candidate, "-c", "pass").returncode != 0:
                tried.append(f"{candidate}: nobody cannot run it")
                continue
            venv = self.dir / f"venv-{len(tried)}"
            made = subprocess.run([candidate, "-m", "venv", "--without-pip", str(venv)], capture_output=True,
                                  text=True)
            if made.returncode != 0:
                tried.append(f"{candidate}: -m venv failed: {made.stderr.strip()[-200:]}")
                continue
            own = subprocess.run([str(venv / "bin" / "python"), "-c",
                                  "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            Path(own, "vnetd-suite.pth").write_text(f"import site; site.addsitedir({site_packages!r})\n")
            python = str(venv / "bin" / "python")
            if self._works(python):
                return python
            tried.append(f"{candidate}: the suite's packages do not import: {self.last_error[-300:]}")
        raise AssertionError("no Python of this version can be run by nobody with the suite's packages:\n"
                             + "\n".join(tried))

    last_error = ""

    def _works(self, python: str) -> bool:
        """``python`` runs as nobody, imports the suite's packages, and can run itself
        again (tests start ``sys.executable``): a first exec may get through where a
        second one, from the process, does not."""
        probe = ("import subprocess, sys\nimport yaml, pytest, pyroute2, structlog\n"
                 "raise SystemExit(subprocess.run([sys.executable, '-c', 'import yaml, pytest']).returncode)")
        result = as_nobody(python, "-c", probe, cwd="/")
        self.last_error = result.stderr.strip()
        return result.returncode == 0

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


#: not copied into nobody's tree: caches, builds and the suite's own virtualenv
NOT_COPIED = (".venv", ".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
              "build", "dist", "*.egg-info", "results")


class NobodyUnitRun:
    """``pytest tests/unit`` as nobody on a copy of the tree, running in the background.

    ``start`` returns at once; ``result`` waits for the end and removes the copy and
    the throw-away Python; ``stop`` ends it early (a run interrupted before the test)."""

    KEY = pytest.StashKey["NobodyUnitRun"]()

    def __init__(self, python: UnprivilegedPython, where: Path, process: subprocess.Popen[str]) -> None:
        self.python, self.where, self.process = python, where, process

    @classmethod
    def start(cls) -> NobodyUnitRun:
        from tests.support import ROOT

        python = UnprivilegedPython()
        where = Path(tempfile.mkdtemp(prefix="vnetd-unit-nobody-", dir="/tmp"))
        try:
            tree = where / ROOT.name
            shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*NOT_COPIED), symlinks=True)
            shared = ROOT.parent / "shared"  # the article's files, which some unit tests read
            if shared.is_dir():
                (where / "shared").symlink_to(shared)
            subprocess.run(["chown", "-R", "nobody:nogroup", str(where)], check=True)
            os.chmod(where, 0o755)
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(where), "LANG": "C.UTF-8", "NO_COLOR": "1"}
            process = subprocess.Popen(
                [*NOBODY, python.python, "-m", "pytest", "tests/unit", "-q", "-rs", "-p", "no:cacheprovider"],
                cwd=tree, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True)
        except BaseException:
            python.cleanup()
            shutil.rmtree(where, ignore_errors=True)
            raise
        return cls(python, where, process)

    def result(self, timeout: float) -> tuple[int, str]:
        try:
            out, _ = self.process.communicate(timeout=timeout)
            return self.process.returncode, out
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.python.cleanup()
        shutil.rmtree(self.where, ignore_errors=True)
