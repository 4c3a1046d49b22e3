# SPDX-License-Identifier: MIT
"""A plan as text (for people) or JSON (for tools)."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence

from vnetd.plan.actions import Action, Plan, jsonable
from vnetd.plan.shadowing import shadowed_note


def plan_text(plan: Plan, shadowed: int = 0) -> str:
    """``~`` a change, ``!`` a problem vnetd cannot fix, ``=`` what is left alone on purpose.
    ``shadowed``: how many chains of others drop what vnetd's rules accept (said on the last line)."""
    notes = [f"= {note.describe()}" for note in plan.notes]
    but = f"; {shadowed_note(shadowed)}" if shadowed else ""
    if plan.empty and not plan.problems:
        return "".join(f"{line}\n" for line in notes) + f"nothing to do: the system matches the state files{but}\n"
    lines = list(notes)
    for action in plan.actions:
        lines.append(f"~ {action.describe()}")
    for problem in plan.problems:
        lines.append(f"! {problem.describe()}")
    n = len(plan.actions)
    summary = f"{n} change{'s' if n != 1 else ''} pending"
    if plan.problems:
        summary += f", {len(plan.problems)} problem{'s' if len(plan.problems) != 1 else ''} vnetd cannot fix"
    lines.append(summary + but)
    return "\n".join(lines) + "\n"


def plan_json(plan: Plan, warnings: Sequence[str] = ()) -> str:
    """``warnings``: ``event: message`` lines about the system the plan cannot change
    (``firewall.shadowed``)."""
    return json.dumps({
        "changes": [a.as_dict() for a in plan.actions],
        "problems": [{"resource": p.resource, "message": p.message} for p in plan.problems],
        "notes": [{"resource": n.resource, "message": n.message} for n in plan.notes],
        "warnings": list(warnings),
    }, indent=2) + "\n"


def _value_lines(field: str, value: object) -> list[str]:
    value = jsonable(value)
    if isinstance(value, list):
        return [f"  {field}:"] + [f"  - {v}" for v in value] if value else [f"  {field}: []"]
    if value is None:
        return [f"  {field}: (none)"]
    return [f"  {field}: {json.dumps(value) if isinstance(value, bool) or value == '' else value}"]


def drift_diff(actions: Sequence[Action]) -> str:
    """What the state files want against what is there, for the resources that still
    differ, as a unified diff (nmstate's verification error): one block per resource,
    one line per field, list values one item a line."""
    desired: list[str] = []
    current: list[str] = []
    seen: set[tuple[str, str]] = set()
    for resource in dict.fromkeys(a.resource for a in actions):
        desired.append(f"{resource}:")
        current.append(f"{resource}:")
        for action in (a for a in actions if a.resource == resource):
            if (resource, action.field) in seen:
                continue
            seen.add((resource, action.field))
            desired += _value_lines(action.field, action.want)
            current += _value_lines(action.field, action.have)
    return "".join(f"{line}\n" for line in difflib.unified_diff(
        desired, current, "desired", "current", n=max(len(desired), len(current)), lineterm=""))
