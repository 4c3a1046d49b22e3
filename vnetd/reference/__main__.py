# SPDX-License-Identifier: MIT
"""``python -m vnetd.reference [--check] [ROOT]``: write (or compare) docs/SCHEMA.md,
docs/man/vnetd.8 and docs/man/vnetd.d.5 under ROOT (default: the source tree)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vnetd.reference.manpages import vnetd_8, vnetd_d_5
from vnetd.reference.schema_doc import schema_markdown


def generated() -> dict[str, str]:
    """Path under the source tree -> its generated text."""
    return {"docs/SCHEMA.md": schema_markdown(), "docs/man/vnetd.8": vnetd_8(), "docs/man/vnetd.d.5": vnetd_d_5()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vnetd.reference", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a file differs")
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[2]))
    args = parser.parse_args(argv)
    stale = []
    for name, text in generated().items():
        path = Path(args.root, name)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for name in stale:
        print(f"{'differs' if args.check else 'written'}: {name}", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
