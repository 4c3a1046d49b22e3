# SPDX-License-Identifier: MIT
"""vnetd never starts a shell or another program to change the network.

Two proofs: the source under vnetd/ has no way to start one (AST scan), and a full
`vnetd apply` of the article's host and gateway, traced with strace, executes no
program but the Python interpreter it was started as.
"""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import PY, ROOT, Netns, StateDir

FORBIDDEN_CALLS = {
    ("os", "system"), ("os", "popen"), ("os", "execv"), ("os", "execve"), ("os", "execvp"), ("os", "execvpe"),
    ("os", "execl"), ("os", "execle"), ("os", "execlp"), ("os", "execlpe"), ("os", "spawnv"), ("os", "spawnve"),
    ("os", "spawnvp"), ("os", "spawnl"), ("os", "posix_spawn"), ("os", "posix_spawnp"), ("pty", "spawn"),
    ("subprocess", "run"), ("subprocess", "call"), ("subprocess", "check_call"), ("subprocess", "check_output"),
    ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"), ("subprocess", "Popen"),
    ("asyncio", "create_subprocess_exec"), ("asyncio", "create_subprocess_shell"),
}


def _calls(tree: ast.AST) -> list[tuple[str, str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name):
            found.append((node.func.value.id, node.func.attr, node.lineno))
        if isinstance(node, ast.ImportFrom) and node.module in ("subprocess", "pty", "commands"):
            found.append((node.module, ",".join(a.name for a in node.names), node.lineno))
    return found


def test_no_module_under_vnetd_can_start_a_program() -> None:
    offenders = []
    for path in sorted((ROOT / "vnetd").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for module, name, line in _calls(tree):
            if (module, name) in FORBIDDEN_CALLS or module in ("pty", "commands") or \
                    (module == "subprocess" and "," not in name and name not in ("Popen",)):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {module}.{name}")
            elif module == "subprocess":
                offenders.append(f"{path.relative_to(ROOT)}:{line}: from subprocess import {name}")
    assert not offenders, "vnetd must not start programs:\n" + "\n".join(offenders)


@pytest.mark.kernel
def test_apply_executes_no_program(make_netns, make_state_dir) -> None:  # type: ignore[no-untyped-def]
    host: Netns = make_netns("strace")
    host.veth("eth1", "uplink")
    host.veth("eth0", "peer0")
    state: StateDir = make_state_dir()
    for name in ("10-uplink-br0.yaml", "20-dmz-brdmz.yaml"):
        state.write(name, (ROOT / "etc" / "vnetd.d" / name).read_text())
    gateway = (ROOT / "etc" / "examples" / "gateway" / "20-firewall.yaml").read_text()
    state.write("30-gateway-firewall.yaml", gateway[: gateway.index("    FORWARD:")])  # all but FORWARD (declared above)

    trace = Path(state.path.parent / "trace.txt")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(["strace", "-f", "-e", "trace=execve,execveat,vfork,fork", "-o", str(trace),
                             PY, "-m", "vnetd", "--netns", host.name, "--state-dir", str(state), "apply"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "converged" in result.stdout
    execs = [line for line in trace.read_text().splitlines() if "execve(" in line and "= 0" in line]
    assert len(execs) == 1 and PY in execs[0], execs
