# SPDX-License-Identifier: MIT
"""Issue 11: ``vnetd apply`` verifies and raises DriftError with what the state files
want against what is there, for the resources that did not converge (nmstate's
verification error), instead of a DriftError class nothing raised."""

from __future__ import annotations

import pytest

from vnetd.engine import PassResult, verify
from vnetd.errors import DriftError
from vnetd.model.firewall import ChainMode
from vnetd.plan.actions import Action, Phase, Plan, SetMtu, SetSysctl, SyncChain
from vnetd.plan.render import drift_diff


def action(op: object, resource: str, field: str, want: object, have: object) -> Action:
    return Action(op, Phase.MTU_UP, resource, field, want, have)  # type: ignore[arg-type]


BR0_MTU = action(SetMtu("br0", 9000), "interface/br0", "mtu", 9000, 1500)
FORWARD = action(SetSysctl("net.ipv4.ip_forward", "1"), "sysctl/net.ipv4.ip_forward", "value", "1", "0")


def test_a_converged_pass_verifies() -> None:
    verify(PassResult(Plan(), Plan()))


def test_what_did_not_converge_raises_drift_error_with_the_diff() -> None:
    with pytest.raises(DriftError) as info:
        verify(PassResult(Plan(), Plan((BR0_MTU, FORWARD))))
    error = info.value
    assert error.resources == ("interface/br0", "sysctl/net.ipv4.ip_forward")
    assert str(error) == ("2 resources still differ from the state files after apply: "
                          "interface/br0, sysctl/net.ipv4.ip_forward")
    assert error.diff == (
        "--- desired\n+++ current\n@@ -1,4 +1,4 @@\n"
        " interface/br0:\n-  mtu: 9000\n+  mtu: 1500\n"
        " sysctl/net.ipv4.ip_forward:\n-  value: 1\n+  value: 0\n")


def test_lists_are_diffed_item_by_item_and_fields_once() -> None:
    rules = action(SyncChain("filter", "FORWARD", ChainMode.MERGE, (), True), "firewall/filter/FORWARD", "rules",
                   ["-i eth1 -j ACCEPT", "-j DROP"], ["-j DROP"])
    diff = drift_diff([rules, rules, action(SetMtu("br0", 9000), "interface/br0", "mtu", 9000, None)])
    assert diff.splitlines()[3:] == [
        " firewall/filter/FORWARD:", "   rules:", "-  - -i eth1 -j ACCEPT", "   - -j DROP",
        " interface/br0:", "-  mtu: 9000", "+  mtu: (none)"]
