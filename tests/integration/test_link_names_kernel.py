# SPDX-License-Identifier: MIT
"""Issue 11: the link names vnetd refuses, checked against the kernel, and refused by
``vnetd check`` and ``apply`` before anything is created.

Before the fix, ``hp%d`` passed ``check`` and every ``apply`` created another bridge:
the kernel takes '%d' in a new link's name as a pattern (hp0, hp1, ...).
"""

from __future__ import annotations

import pytest

from tests.support import Netns, StateDir, vnetd
from vnetd.desired import validate

pytestmark = pytest.mark.kernel


def test_the_kernel_expands_percent_d_and_refuses_the_reserved_names(netns: Netns) -> None:
    """Why the loader refuses them: the oracle is `ip link add` in a namespace."""
    netns.ip("link", "add", "hp%d", "type", "bridge")
    assert netns.link("hp0") is not None and netns.link("hp%d") is None
    for name in ("all", "default", "a%s"):
        added = netns.ip("link", "add", name, "type", "bridge", check=False)
        assert netns.link(name) is None, (name, added)
        assert validate.link_name(name) is not None
    assert validate.link_name("hp%d") is not None


def test_check_and_apply_refuse_a_percent_name_and_create_nothing(netns: Netns, state_dir: StateDir) -> None:
    written = state_dir.write("10-hp.yaml", """\
        interfaces:
        - name: hp%d
          type: linux-bridge
          state: up
        """)
    before = netns.snapshot()
    check = vnetd("check", netns=netns, state_dir=state_dir)
    assert check.returncode == 1
    assert f"error: {written}:2: interfaces[0].name: interface name 'hp%d' contains '%'" in check.stderr
    assert validate.VALID_LINK_NAME in check.stderr
    for _ in range(2):
        applied = vnetd("apply", netns=netns, state_dir=state_dir)
        assert applied.returncode == 1 and "hp%d" in applied.stderr
    assert netns.link("hp0") is None and netns.snapshot() == before
