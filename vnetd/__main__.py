# SPDX-License-Identifier: MIT
"""``python -m vnetd``: the same as the ``vnetd`` console script."""

from vnetd.cli import main

raise SystemExit(main())
