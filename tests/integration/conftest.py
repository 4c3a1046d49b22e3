# SPDX-License-Identifier: MIT
"""Session fixtures of the iptables conformance tests (issue 10), for each family: one
prepared namespace with the iptables-legacy (ip6tables-legacy) oracle and vnetd
workers beside it, and the family's corpus judged once for every test that reads the
verdicts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conformance import SUITES, Judgement, Lab, load_corpus
from tests.support import NetnsFactory


def _lab(family: int) -> Iterator[Lab]:
    factory = NetnsFactory()
    lab: Lab | None = None
    try:
        lab = Lab(factory, family=family)
        yield lab
    finally:
        if lab is not None:
            lab.close()
        factory.cleanup()


@pytest.fixture(scope="session")
def xt_lab() -> Iterator[Lab]:
    yield from _lab(4)


@pytest.fixture(scope="session")
def xt6_lab() -> Iterator[Lab]:
    """The IPv6 lab: ip6tables-legacy, and vnetd with ``firewall6:`` state files."""
    yield from _lab(6)


def _judged(lab: Lab) -> tuple[list[Judgement], float]:
    start = time.monotonic()
    judgements = lab.judge_all(load_corpus(SUITES[lab.family].corpus))
    return judgements, time.monotonic() - start


@pytest.fixture(scope="session")
def corpus_verdicts(xt_lab: Lab) -> tuple[list[Judgement], float]:
    """Every corpus rule through iptables and vnetd, and how long that took (seconds)."""
    return _judged(xt_lab)


@pytest.fixture(scope="session")
def corpus6_verdicts(xt6_lab: Lab) -> tuple[list[Judgement], float]:
    """Every IPv6 corpus rule through ip6tables and vnetd (firewall6:), and how long that took."""
    return _judged(xt6_lab)
