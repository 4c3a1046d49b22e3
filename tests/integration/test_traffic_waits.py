# SPDX-License-Identifier: MIT
"""Issue 11: traffic tests wait on conditions, never on luck.

``test_bridge_deleted_under_guests_is_recreated_with_their_taps_in_one_pass`` once
failed on a loaded machine: it pinged once, right after the taps were re-attached.
The traffic helpers now wait for what forwarding needs (ports on the bridge, up and
forwarding, the bridge with carrier) and then for a reply within a deadline. This
test makes the wait necessary every time: a bridge with STP on holds a new port in
listening/learning for two forward delays (4 s here), during which a ping is lost;
``wait_bridged`` returns only once both ports forward, and ``reachable`` then gets
through. (No assertion here depends on how fast the machine is.)
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support import Netns
from tests.traffic import bridged, ping, reachable, wait_bridged

pytestmark = pytest.mark.kernel


def test_traffic_waits_for_ports_that_are_not_forwarding_yet(make_netns: Callable[..., Netns]) -> None:
    host, a, b = make_netns("host"), make_netns("a"), make_netns("b")
    host.veth("tap-a", "eth0", a)
    host.veth("tap-b", "eth0", b)
    for ns, address in ((a, "192.0.2.1"), (b, "192.0.2.2")):
        ns.ip("addr", "add", f"{address}/24", "dev", "eth0")
        ns.ip("link", "set", "eth0", "up")
    host.ip("link", "add", "br0", "type", "bridge", "stp_state", "1", "forward_delay", "200")  # 2 s
    for link in ("tap-a", "tap-b", "br0"):
        host.ip("link", "set", link, "up")
    host.ip("link", "set", "tap-a", "master", "br0")
    host.ip("link", "set", "tap-b", "master", "br0")
    wait_bridged(host, "br0", ("tap-a", "tap-b"))
    assert bridged(host, "br0", ("tap-a", "tap-b"))
    assert reachable(a, "192.0.2.2")


def test_no_traffic_is_expected_while_a_port_has_no_carrier(make_netns: Callable[..., Netns]) -> None:
    host, a = make_netns("host"), make_netns("a")
    host.veth("tap-a", "eth0", a)
    host.ip("link", "add", "br0", "type", "bridge", "forward_delay", "0")
    host.ip("addr", "add", "192.0.2.254/24", "dev", "br0")
    a.ip("addr", "add", "192.0.2.1/24", "dev", "eth0")
    for link in ("tap-a", "br0"):
        host.ip("link", "set", link, "up")
    host.ip("link", "set", "tap-a", "master", "br0")
    assert not bridged(host, "br0", ("tap-a",))  # the guest's end is down: the tap has no carrier
    assert not ping(host, "192.0.2.1")
    a.ip("link", "set", "eth0", "up")
    wait_bridged(host, "br0", ("tap-a",))
    assert reachable(host, "192.0.2.1")


def test_wait_bridged_says_what_it_saw(make_netns: Callable[..., Netns]) -> None:
    host = make_netns("host")
    host.veth("tap-a", "peer-a")
    host.ip("link", "add", "br0", "type", "bridge")
    with pytest.raises(AssertionError, match=r"br0 never forwarded for \('tap-a',\) .*'tap-a': \(None, None, False\)"):
        wait_bridged(host, "br0", ("tap-a",), timeout=0.2)
