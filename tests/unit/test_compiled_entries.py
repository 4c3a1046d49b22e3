# SPDX-License-Identifier: MIT
"""Compiled entries are clean: what the kernel would zero is zero already.

The fingerprint of a declared rule is taken straight from the compiler's entry (no
``clean_entry`` copy on the hot path), so the C compiler must hand back an entry
exactly as the kernel returns it: bytes after a match's or target's name zeroed,
and its kernel-private tail (beyond the extension's userspacesize) zeroed. Every
rule of both conformance corpora that compiles is checked, in a child process (a
corpus line may abort inside libxtables; the conformance lab is where that is judged).
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT

CHILD = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.conformance import load_corpus
from tests.iptables_oracle import jump_chains, restore_split
from vnetd.backends import xtables as xt

X = xt.libxtables()
compiled = dirty = 0
examples = []
for family, path in ((4, "tests/data/iptables/corpus.txt"), (6, "tests/data/ip6tables/corpus.txt")):
    layout = xt.LAYOUTS[family]
    for rule in load_corpus(Path(sys.argv[1]) / path):
        words = restore_split(rule.rule)
        try:
            entries, usersizes, *_rest = X.compile(words, rule.table, rule.chain,
                                                   set(jump_chains(words, family)), family)
        except X.CompileError:
            continue
        compiled += 1
        for entry in entries:
            if xt.clean_entry(entry, tuple(usersizes), layout) != entry:
                dirty += 1
                examples.append(f"{family} {rule}")
print(json.dumps({"compiled": compiled, "dirty": dirty, "examples": examples[:10]}))
"""


def test_every_compiled_entry_is_as_the_kernel_returns_it() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT)], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["compiled"] > 1500, result  # most of both corpora compile
    assert result["dirty"] == 0, result["examples"]
