# SPDX-License-Identifier: MIT
""""Did you mean ...?": the valid words closest to a misspelt one (difflib).

Used for unknown keys and values of the state files and for rule options, targets
and values (vnetd.backends.rulehints). Case is ignored when comparing (``mtU``,
``accept``): a candidate that differs only in case comes first, then those the word
begins (``mac`` for ``mac-address``); only when there are none, difflib's closest.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: difflib's similarity ratio a candidate needs (0.6, difflib's own default, lets
#: ``mtux`` find ``mtu`` and keeps ``bond`` from finding ``vlan``)
CUTOFF = 0.6
#: and a ratio at most this much below the best candidate's
RELATIVE = 0.1


def close_matches(word: str, candidates: Iterable[str], n: int = 3, cutoff: float = CUTOFF) -> list[str]:
    """Up to ``n`` candidates close to ``word``, the closest first; never ``word`` itself."""
    by_folded: dict[str, str] = {}
    for candidate in candidates:
        if candidate != word:
            by_folded.setdefault(_fold(candidate), candidate)
    folded = _fold(word)
    if not folded:
        return []
    found = [folded] if folded in by_folded else []
    if len(folded) >= 3:  # "mac" for mac-address, "next-hop" for next-hop-address
        found += sorted((c for c in by_folded if c != folded and c.startswith(folded)), key=len)
    if found:
        return [by_folded[c] for c in found][:n]
    close = difflib.get_close_matches(folded, by_folded, n=n, cutoff=cutoff)  # quick ratios filter first
    if close:  # only the closest few: "activ" is active, not also inactive
        best = difflib.SequenceMatcher(None, folded, close[0]).ratio()
        found = [c for c in close if difflib.SequenceMatcher(None, folded, c).ratio() >= best - RELATIVE]
    return [by_folded[c] for c in found][:n]


def _fold(word: str) -> str:
    """What is compared: no case, no leading dashes (``--`` would make every option look alike)."""
    return word.casefold().lstrip("-")


def alternatives(words: list[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3) -> str:
    """``"did you mean X?"``, or "" when nothing is close."""
    found = close_matches(word, candidates, n)
    return f"did you mean {alternatives(found)}?" if found else ""
