# SPDX-License-Identifier: MIT
"""Policy routing: nmstate ``route-rules.config`` entries and the kernel's rules
(``ip rule``), reduced to what vnetd compares.

A declared rule is present when the kernel has a rule with exactly its selectors
(``ip-from``, ``ip-to``, ``iif``, ``fwmark``/``fwmask``; one that is not written
means "any", so a rule with more selectors is another rule) and its action (a
table lookup, or ``blackhole``/``unreachable``/``prohibit``); ``priority``, when
written, must match too. An absent rule is a filter, as in nmstate: every field it
writes must match, the others are wildcards.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from vnetd.model.common import Origin

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAIN_TABLE = 254
#: FRA_PROTOCOL of the kernel's own rules (0: lookup local, 32766: main, 32767: default)
KERNEL_PROTOCOL = 2
ALL_BITS = 0xFFFFFFFF


class RuleAction(StrEnum):
    """nmstate's ``action`` values; a rule without one looks up ``route-table``."""

    BLACKHOLE = "blackhole"
    UNREACHABLE = "unreachable"
    PROHIBIT = "prohibit"


#: FR_ACT_* of the kernel (linux/fib_rules.h)
FR_ACT_TO_TBL = 1
ACTION_CODES = {RuleAction.BLACKHOLE: 6, RuleAction.UNREACHABLE: 7, RuleAction.PROHIBIT: 8}
ACTION_NAMES = {code: action for action, code in ACTION_CODES.items()}


@dataclass(frozen=True, slots=True)
class RouteRuleSpec:
    """One entry of ``route-rules.config``; ``None`` fields are not written."""

    family: int  # 4 or 6
    source: IpNetwork | None = None  # ip-from
    destination: IpNetwork | None = None  # ip-to
    priority: int | None = None
    table: int | None = None  # route-table
    fwmark: int | None = None
    fwmask: int | None = None
    iif: str | None = None
    action: RuleAction | None = None
    absent: bool = False
    origin: Origin | None = field(default=None, compare=False)

    @property
    def table_id(self) -> int:
        """The table a present rule looks up: the main table unless written (or 0: an action)."""
        if self.action is not None:
            return 0
        return self.table if self.table is not None else MAIN_TABLE

    @property
    def mark_mask(self) -> int:
        """The mask the kernel gives the mark: all bits unless written (nothing without a mark)."""
        if self.fwmask is not None:
            return self.fwmask
        return ALL_BITS if self.fwmark else 0

    @property
    def action_code(self) -> int:
        return ACTION_CODES[self.action] if self.action is not None else FR_ACT_TO_TBL

    @property
    def resource(self) -> str:
        return f"route-rule/{self.describe()}"

    def describe(self) -> str:
        """The rule as ``ip rule`` would be asked for it."""
        parts = [] if self.family == 4 else ["-6"]
        if self.priority is not None:
            parts.append(f"priority {self.priority}")
        parts.append(f"from {self.source}" if self.source is not None else "from all")
        if self.destination is not None:
            parts.append(f"to {self.destination}")
        if self.iif is not None:
            parts.append(f"iif {self.iif}")
        if self.fwmark is not None:
            parts.append(f"fwmark {self.fwmark:#x}" + (f"/{self.fwmask:#x}" if self.fwmask is not None else ""))
        elif self.fwmask is not None:
            parts.append(f"fwmask {self.fwmask:#x}")
        if self.action is not None:
            parts.append(self.action.value)
        elif self.table is not None or not self.absent:
            parts.append(f"lookup {self.table_id}")
        return " ".join(parts)

    def key(self) -> tuple[object, ...]:
        """Identity for duplicate detection between files."""
        if self.absent:
            return (self.family, self.source, self.destination, self.priority, self.table, self.fwmark,
                    self.fwmask, self.iif, self.action, True)
        return (self.family, self.source, self.destination, self.priority, self.table_id, self.fwmark or 0,
                self.mark_mask, self.iif, self.action_code, False)


@dataclass(frozen=True, slots=True)
class RouteRule:
    """A kernel rule (RTM_NEWRULE). ``other`` names the selectors vnetd does not manage
    (oif, tos, not, uidrange, ...): a rule that has any is never one vnetd declared."""

    family: int
    priority: int
    table: int
    action: int
    source: IpNetwork | None
    destination: IpNetwork | None
    iif: str | None
    fwmark: int
    fwmask: int
    protocol: int
    other: tuple[str, ...] = ()

    @property
    def kernel_default(self) -> bool:
        return self.protocol == KERNEL_PROTOCOL

    def describe(self) -> str:
        parts = [] if self.family == 4 else ["-6"]
        parts.append(f"priority {self.priority}")
        parts.append(f"from {self.source}" if self.source is not None else "from all")
        if self.destination is not None:
            parts.append(f"to {self.destination}")
        if self.iif is not None:
            parts.append(f"iif {self.iif}")
        if self.fwmark or self.fwmask:
            parts.append(f"fwmark {self.fwmark:#x}/{self.fwmask:#x}")
        parts += self.other
        action = ACTION_NAMES.get(self.action)
        if action is not None:
            parts.append(action.value)
        elif self.action == FR_ACT_TO_TBL:
            parts.append(f"lookup {self.table}")
        else:
            parts.append(f"action {self.action}")
        return " ".join(parts)


def matches(spec: RouteRuleSpec, rule: RouteRule) -> bool:
    """Whether a kernel rule is the declared one (present), or one it removes (absent)."""
    if spec.family != rule.family:
        return False
    if spec.absent:
        return ((spec.source is None or spec.source == rule.source)
                and (spec.destination is None or spec.destination == rule.destination)
                and (spec.priority is None or spec.priority == rule.priority)
                and (spec.table is None or (spec.table == rule.table and rule.action == FR_ACT_TO_TBL))
                and (spec.fwmark is None or spec.fwmark == rule.fwmark)
                and (spec.fwmask is None or spec.fwmask == rule.fwmask)
                and (spec.iif is None or spec.iif == rule.iif)
                and (spec.action is None or spec.action_code == rule.action)
                and (not rule.kernel_default or spec.priority is not None))
    return (not rule.other and spec.source == rule.source and spec.destination == rule.destination
            and spec.iif == rule.iif and (spec.fwmark or 0) == rule.fwmark and spec.mark_mask == rule.fwmask
            and spec.action_code == rule.action and (spec.action is not None or spec.table_id == rule.table)
            and (spec.priority is None or spec.priority == rule.priority))
