# SPDX-License-Identifier: MIT
"""Session fixtures of the iptables conformance tests (issue 10): one prepared
namespace with the iptables-legacy oracle and a vnetd worker in it, and the
corpus judged once for every test that reads the verdicts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conformance import Judgement, Lab, load_corpus
from tests.support import NetnsFactory


@pytest.fixture(scope="session")
def xt_lab() -> Iterator[Lab]:
    factory = NetnsFactory()
    lab: Lab | None = None
    try:
        lab = Lab(factory)
        yield lab
    finally:
        if lab is not None:
            lab.close()
        factory.cleanup()


@pytest.fixture(scope="session")
def corpus_verdicts(xt_lab: Lab) -> tuple[list[Judgement], float]:
    """Every corpus rule through iptables and vnetd, and how long that took (seconds)."""
    start = time.monotonic()
    judgements = xt_lab.judge_all(load_corpus())
    return judgements, time.monotonic() - start
