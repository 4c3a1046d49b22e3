# SPDX-License-Identifier: MIT
"""Unit tests pin no firewall backend in their state directories (tests.support.StateDir)."""

from __future__ import annotations

import pytest

import tests.support


@pytest.fixture(autouse=True)
def _no_backend_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tests.support, "DEFAULT_BACKEND", None)
