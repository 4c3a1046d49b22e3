# SPDX-License-Identifier: MIT
"""Settings of the daemon written in the state files (the ``daemon:`` section).

They change how ``vnetd run`` acts, not what the network should be: ``check``,
``plan`` and ``apply`` ignore them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vnetd.model.common import Origin


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    #: True: watch, plan and report drift, change nothing (``vnetd run --observe``
    #: wins over it either way); None: not set in any file (enforce)
    observe: bool | None = None
    origin: Origin | None = field(default=None, compare=False)

    @property
    def resource(self) -> str:
        return "daemon/observe"
