# SPDX-License-Identifier: MIT
"""The ``daemon:`` section: how ``vnetd run`` acts (not what the network should be).

    daemon:
      observe: true     # watch, plan and log drift.detected, change nothing
                        # (`vnetd run --observe` / `--no-observe` win over it)
"""

from __future__ import annotations

import yaml

from vnetd.desired.nodes import FileContext, as_map, line_of
from vnetd.model.common import Origin
from vnetd.model.settings import DaemonSettings

_KEYS = ("observe",)


def parse_daemon(node: yaml.Node, ctx: FileContext) -> DaemonSettings | None:
    """The section, or None when it sets nothing (or only wrong things: each is an issue)."""
    top = as_map(node, "daemon", ctx, _KEYS, "daemon")
    if top is None or "observe" not in top:
        return None
    observe = top.boolean("observe")
    if observe is None:
        return None
    return DaemonSettings(observe=observe, origin=Origin(ctx.file, line_of(top.key_node("observe"))))
