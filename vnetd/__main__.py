# SPDX-License-Identifier: MIT
"""The program's entry point: ``python -m vnetd`` and the ``vnetd`` console script."""

from __future__ import annotations

import sys


def run() -> int:
    """Run the command line. vnetd prints through its own renderers and never uses
    rich; structlog imports it whenever it is installed (a dependency of some tools),
    which was a fifth of every start (~100 ms of a `vnetd status`). The program
    therefore starts without it; a library user importing vnetd is not affected."""
    if "rich" not in sys.modules:
        sys.modules["rich"] = None  # type: ignore[assignment]  # "import rich" raises ImportError
    from vnetd.cli import main

    return main()


if __name__ == "__main__":
    raise SystemExit(run())
