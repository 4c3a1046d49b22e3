# SPDX-License-Identifier: MIT
"""How the libvirt backend reads libvirt's XML: which bridge a network has and
whether libvirt makes it, which running guest interfaces sit on a Linux bridge."""

from __future__ import annotations

import pytest

from vnetd.backends.libvirt import domain_taps, network_bridge, parse_xml
from vnetd.model.libvirt import GuestTap


@pytest.mark.parametrize(("xml", "expected"), [
    ("<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/></network>", ("virbr0", True)),
    ("<network><name>n</name><forward/><bridge name='virbr1'/></network>", ("virbr1", True)),
    ("<network><name>iso</name><bridge name='virbr2'/></network>", ("virbr2", True)),
    ("<network><name>r</name><forward mode='route'/><bridge name='virbr3'/></network>", ("virbr3", True)),
    ("<network><name>host</name><forward mode='bridge'/><bridge name='br0'/></network>", ("br0", False)),
    ("<network><name>mv</name><forward mode='bridge'><interface dev='eth0'/></forward></network>", (None, False)),
    ("<network><name>ovs</name><forward mode='bridge'/><bridge name='ovsbr'/>"
     "<virtualport type='openvswitch'/></network>", (None, False)),
])
def test_network_bridge(xml: str, expected: tuple[str | None, bool]) -> None:
    assert network_bridge(parse_xml(xml)) == expected


LIVE = """<domain type='kvm' id='3'><name>gw</name><devices>
  <interface type='bridge'><source bridge='br0'/><target dev='vnet0'/></interface>
  <interface type='network'><source network='dmz' portid='x' bridge='brdmz'/><target dev='vnet1'/></interface>
  <interface type='network'><source network='lan'/><target dev='vnet2'/></interface>
  <interface type='network'><source network='macvtap-net'/><target dev='macvtap0'/></interface>
  <interface type='direct'><source dev='eth0' mode='vepa'/><target dev='macvtap1'/></interface>
  <interface type='bridge'><source bridge='ovsbr'/><virtualport type='openvswitch'/><target dev='vnet5'/></interface>
  <interface type='user'><target dev='tap9'/></interface>
  <interface type='bridge'><source bridge='br0'/></interface>
</devices></domain>"""


def test_domain_taps_from_live_xml() -> None:
    taps = domain_taps("gw", parse_xml(LIVE), {"lan": "virbr7"})
    assert taps == [GuestTap("gw", "vnet0", "br0"), GuestTap("gw", "vnet1", "brdmz"), GuestTap("gw", "vnet2", "virbr7")]


@pytest.mark.parametrize("xml", [
    "<!DOCTYPE network [<!ENTITY x 'y'>]><network><name>&x;</name></network>",
    "<!DOCTYPE network SYSTEM 'file:///etc/passwd'><network/>",
])
def test_dtds_and_entities_are_refused(xml: str) -> None:
    with pytest.raises(ValueError, match="DTD"):
        parse_xml(xml)
