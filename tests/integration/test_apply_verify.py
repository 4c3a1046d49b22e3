# SPDX-License-Identifier: MIT
"""Issue 11: ``vnetd apply`` verifies after applying and shows, for what did not
converge, what the state files want against what is there (a desired/current diff,
as nmstate does), in text and in JSON; exit 1."""

from __future__ import annotations

import json

import pytest

from tests.support import Netns, StateDir, vnetd

pytestmark = pytest.mark.kernel

STATE = """\
interfaces:
- name: br3
  type: linux-bridge
  state: up
  mtu: 9000
sysctl:
  net.ipv4.ip_forward: forty-two
"""
DIFF = ("--- desired\n+++ current\n@@ -1,2 +1,2 @@\n"
        " sysctl/net.ipv4.ip_forward:\n-  value: forty-two\n+  value: 0\n")


def test_apply_shows_the_desired_current_diff_of_what_did_not_converge(netns: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-state.yaml", STATE)
    result = vnetd("apply", netns=netns, state_dir=state_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("not converged: 1 resource still differs from the state files after apply: "
            "sysctl/net.ipv4.ip_forward\n" + DIFF) in result.stdout
    assert "interface/br3" not in result.stdout.split("not converged")[1]  # br3 converged
    assert netns.link("br3")["mtu"] == 9000  # type: ignore[index]

    report = json.loads(vnetd("apply", "--format", "json", netns=netns, state_dir=state_dir).stdout)
    assert not report["converged"] and report["diff"] == DIFF
    assert [a["resource"] for a in report["remaining"]] == ["sysctl/net.ipv4.ip_forward"]


def test_a_converged_apply_has_no_diff(netns: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-state.yaml", STATE.replace("forty-two", "1"))
    result = vnetd("apply", "--format", "json", netns=netns, state_dir=state_dir)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["converged"] and report["diff"] == ""
