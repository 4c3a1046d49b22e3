# SPDX-License-Identifier: MIT
"""A plan as text (for people) or JSON (for tools)."""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Sequence

from vnetd.model.bond import OPTIONS
from vnetd.model.firewall import ChainMode
from vnetd.plan.actions import (
    Action,
    AddAddress,
    AddRoute,
    AddRouteRule,
    CreateLink,
    DeleteLink,
    Plan,
    PruneChain,
    RemoveAddress,
    RemoveRoute,
    RemoveRouteRule,
    SyncChain,
    jsonable,
)
from vnetd.plan.shadowing import shadowed_note


def plan_text(plan: Plan, shadowed: int = 0) -> str:
    """One line per change ('+' adds or creates, '-' removes or deletes, '~' changes), with
    what a new link will be, which address is added or removed, and a chain's rules as a
    diff (the rules' text); ``!`` a problem vnetd cannot fix; ``=`` what is left alone on
    purpose (a DHCP client's addresses); then a summary. ``shadowed``: how many chains of
    others drop what vnetd's rules accept (said on the last line)."""
    notes = [f"= {note.describe()}" for note in plan.notes]
    but = f"; {shadowed_note(shadowed)}" if shadowed else ""
    if plan.empty and not plan.problems:
        return "".join(f"{line}\n" for line in notes) + f"nothing to do: the system matches the state files{but}\n"
    lines = list(notes)
    for action in plan.actions:
        lines += describe_action(action)
    for problem in plan.problems:
        lines.append(f"! {problem.describe()}")
    n = len(plan.actions)
    summary = f"{n} change{'s' if n != 1 else ''} pending"
    if plan.problems:
        summary += f", {len(plan.problems)} problem{'s' if len(plan.problems) != 1 else ''} vnetd cannot fix"
    lines.append(summary + but)
    return "\n".join(lines) + "\n"


def describe_action(action: Action) -> list[str]:
    """An action as plan text: its line, and for a chain the rules it gains and loses.
    A new route or route rule is '+' with what it will be, one removed '-' with what
    the kernel has."""
    op = action.op
    where = f"{action.resource}: "
    if isinstance(op, CreateLink):
        details = _link_details(op)
        return [f"+ {action.describe()}" + (f"; created with {details}" if details else "")]
    if isinstance(op, DeleteLink):
        return [f"- {action.describe()}"]
    if isinstance(op, AddAddress):
        again = str(op.ip) in _texts(action.have)  # its subnet's primary goes: the kernel drops it too
        return [f"+ {where}{action.field} add {op.ip}" + (" again (removing its subnet's primary address "
                                                          "removes it too)" if again else "")]
    if isinstance(op, RemoveAddress):
        return [f"- {where}{action.field} remove {op.ip}"]
    if isinstance(op, AddRoute | AddRouteRule) and action.have is None:
        return [f"+ {action.describe()}"]
    if isinstance(op, RemoveRoute | RemoveRouteRule):
        return [f"- {action.describe()}"]
    if isinstance(op, SyncChain):
        return _chain_lines(action, op)
    if isinstance(op, PruneChain):
        removed = [r for r in _texts(action.have) if not r.startswith(FOREIGN)]
        what = "the chain and vnetd's rules in it are deleted" if op.delete_chain else "vnetd's rules are removed"
        return [f"- {where}{action.field}: {what} (no longer declared)"] + [f"    - {r}" for r in removed]
    return [f"~ {action.describe()}"]


def _link_details(op: CreateLink) -> str:
    parts = []
    if op.veth_peer:
        parts.append(f"veth.peer {op.veth_peer}")
    if op.vlan_base is not None or op.vlan_id is not None:
        parts.append(f"vlan.base-iface {op.vlan_base}, vlan.id {op.vlan_id}")
    if op.vlan is not None:
        parts += [f"vlan.{f.name.replace('_', '-')} {_plain(getattr(op.vlan, f.name))}"
                  for f in dataclasses.fields(op.vlan) if getattr(op.vlan, f.name) is not None]
    if op.vxlan is not None:
        parts.append("vxlan {" + ", ".join(f"{f.name.replace('_', '-')}: {_plain(getattr(op.vxlan, f.name))}"
                                           for f in dataclasses.fields(op.vxlan)
                                           if getattr(op.vxlan, f.name) is not None) + "}")
    if op.bond is not None:
        if op.bond.mode is not None:
            parts.append(f"link-aggregation.mode {op.bond.mode}")
        if op.bond.options:
            shown = ", ".join(f"{k}: {_bond_value(k, v)}" for k, v in op.bond.options)
            parts.append(f"link-aggregation.options {{{shown}}}")
    if op.stp is not None:
        stp = [(f.name.replace("_", "-"), getattr(op.stp, f.name)) for f in dataclasses.fields(op.stp)]
        shown = ", ".join(f"{k}: {json.dumps(v)}" for k, v in stp if v is not None)
        parts.append(f"bridge.options.stp {{{shown}}}" if shown else "STP as the kernel defaults")
    if op.mac:
        parts.append(f"mac-address {op.mac}")
    return ", ".join(parts)


def _bond_value(name: str, value: object) -> str:
    """A bond option's value by its name where it has one (arp_validate: all, not 3)."""
    option = OPTIONS.get(name)
    if option is not None and option.kind == "enum" and isinstance(value, int) and value < len(option.choices):
        return option.choices[value]
    return _plain(value)


def _plain(value: object) -> str:
    """A value as a state file writes it (true, 802.1q, 192.0.2.1, [a, b])."""
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    return str(value)


FOREIGN = "(foreign) "


def _texts(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


def _chain_lines(action: Action, op: SyncChain) -> list[str]:
    """A chain's rules as a diff: '+' a rule vnetd writes, '-' one it removes, '  ' one
    that stays (in a merge chain other tools' rules always stay, below vnetd's)."""
    want, have = _texts(action.want), _texts(action.have)
    merge = op.mode is ChainMode.MERGE
    head = f"{action.resource}: rules"
    if action.have is None:
        lines = [f"+ {head}: new chain ({op.mode.value}) with {len(want)} rule{'s' if len(want) != 1 else ''}"]
        return lines + [f"    + {r}" for r in want]
    how = ("merge: vnetd's rules first, other tools' rules kept" if merge
           else "exclusive: exactly the declared rules")
    lines = [f"~ {head} ({how})"]
    kept = [r for r in have if r.startswith(FOREIGN) or r.startswith("#")] if merge else []
    mine = [r for r in have if r not in kept]
    matcher = difflib.SequenceMatcher(a=mine, b=want, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            lines += [f"      {r}" for r in mine[i1:i2]]
            continue
        lines += [f"    - {r}" for r in mine[i1:i2]]
        lines += [f"    + {r}" for r in want[j1:j2]]
    lines += [f"      {r}" for r in kept]
    return lines


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
