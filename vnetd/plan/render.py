# SPDX-License-Identifier: MIT
"""A plan as text (for people) or JSON (for tools)."""

from __future__ import annotations

import json

from vnetd.plan.actions import Plan


def plan_text(plan: Plan) -> str:
    """``~`` a change, ``!`` a problem vnetd cannot fix, ``=`` what is left alone on purpose."""
    notes = [f"= {note.describe()}" for note in plan.notes]
    if plan.empty and not plan.problems:
        return "".join(f"{line}\n" for line in notes) + "nothing to do: the system matches the state files\n"
    lines = list(notes)
    for action in plan.actions:
        lines.append(f"~ {action.describe()}")
    for problem in plan.problems:
        lines.append(f"! {problem.describe()}")
    n = len(plan.actions)
    summary = f"{n} change{'s' if n != 1 else ''} pending"
    if plan.problems:
        summary += f", {len(plan.problems)} problem{'s' if len(plan.problems) != 1 else ''} vnetd cannot fix"
    lines.append(summary)
    return "\n".join(lines) + "\n"


def plan_json(plan: Plan) -> str:
    return json.dumps({
        "changes": [a.as_dict() for a in plan.actions],
        "problems": [{"resource": p.resource, "message": p.message} for p in plan.problems],
        "notes": [{"resource": n.resource, "message": n.message} for n in plan.notes],
    }, indent=2) + "\n"
