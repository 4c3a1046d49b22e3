# SPDX-License-Identifier: MIT
"""Helpers shared by the benchmarks: namespaces, timing, tables.

Benchmarks measure; they assert nothing. Every figure in docs/BENCHMARKS.md is
printed by one of these scripts (``bench/run_all.py`` regenerates the file).
"""

from __future__ import annotations

import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PREFIX = f"vb{os.getpid() % 100000}"

# a benchmark stopped with SIGTERM (a timeout, kill) unwinds its ``with Namespace``
# blocks like Ctrl-C does, instead of leaving its namespaces behind
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def sh(*cmd: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), input=input, text=True, capture_output=True)
    if check and result.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def _busy_and_total() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def _tearing_down_namespaces() -> bool:
    """Whether the kernel is dismantling deleted network namespaces now (a workqueue
    worker running netns work is named ``kworker/...+netns``). It holds the rtnl lock
    in turns for seconds to minutes after 2,000 veth pairs: every netlink change waits."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().rstrip().endswith("+netns"):
                return True
        except OSError:
            continue
    return False


def quiet(threshold: float = 0.1, interval: float = 0.25, timeout: float = 300.0) -> bool:
    """Wait until the machine is quiet: no namespace being dismantled, and under
    ``threshold`` of its CPUs busy over ``interval``, so that a timed step does not share
    it with the tail of the last one; False if it did not get quiet within ``timeout``
    (a busy machine: measured anyway)."""
    deadline = time.monotonic() + timeout
    busy0, total0 = _busy_and_total()
    while time.monotonic() < deadline:
        time.sleep(interval)
        busy1, total1 = _busy_and_total()
        if total1 > total0 and (busy1 - busy0) / (total1 - total0) < threshold and not _tearing_down_namespaces():
            return True
        busy0, total0 = busy1, total1
    return False


class Namespace:
    _n = 0

    def __init__(self, label: str) -> None:
        Namespace._n += 1
        self.name = f"{PREFIX}-{Namespace._n}-{label}"
        sh("ip", "netns", "add", self.name)
        sh("ip", "-n", self.name, "link", "set", "lo", "up")

    def batch(self, text: str) -> None:
        sh("ip", "-n", self.name, "-batch", "-", input=text)

    def delete(self) -> None:
        for pid in sh("ip", "netns", "pids", self.name, check=False).stdout.split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        sh("ip", "netns", "del", self.name, check=False)

    def __enter__(self) -> Namespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def stats(values: Sequence[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 10 else f"{value:.1f} s"


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} cpus ({cpu}), kernel {platform.release()}, Python {platform.python_version()}"


def state_dir(files: dict[str, str], backend: str = "iptables-legacy") -> str:
    """A state directory of ``files``, its firewall backend pinned (``auto`` would follow
    this machine's iptables command; each bench compares with one variant's tools)."""
    import atexit
    import shutil
    import tempfile

    directory = tempfile.mkdtemp(prefix="vnetd-bench-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)  # a bench leaves nothing in /tmp
    os.chmod(directory, 0o755)
    files = {"00-firewall-backend.yaml": f"firewall:\n  backend: {backend}\n", **files}
    for name, text in files.items():
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
    return directory


def vnetd(*args: str, netns: str, state: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([PY, "-m", "vnetd", "--netns", netns, "--state-dir", state, *args], text=True,
                          capture_output=True, env=env)


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))
