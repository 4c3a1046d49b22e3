#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The systemd hardening of contrib/systemd/vnetd.service, as systemd rates it.

Runs `systemd-analyze security --offline=yes` on the unit (no running systemd
needed) and prints the overall exposure and the settings still counted against it.
Usage: bench/systemd_exposure.py
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

UNIT = Path(__file__).resolve().parents[1] / "contrib" / "systemd" / "vnetd.service"


def main() -> None:
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(UNIT)], capture_output=True,
                         text=True).stdout
    overall = re.search(r"Overall exposure level for \S+: (\S+ \S+)", out)
    open_items = [line for line in out.splitlines() if line.startswith("✗")]
    print(f"systemd-analyze security --offline=yes contrib/systemd/vnetd.service: "
          f"overall exposure {overall.group(1) if overall else '?'}")
    print()
    print("Settings still counted against the unit (each needed, or not applicable):")
    for line in open_items:
        print("    " + re.sub(r"\s{2,}", "  ", line.strip()))


if __name__ == "__main__":
    main()
