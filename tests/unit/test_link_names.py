# SPDX-License-Identifier: MIT
"""Issue 11: interface names the kernel expands, refuses or treats specially are refused
by the loader wherever a name enters (interfaces, bridge ports, veth peers, VLAN
parents, routes' next-hop-interface, a libvirt network's bridge), each with FILE:LINE,
the field path and what a valid name is.

``hp%d`` is the case that hurt: ``check`` passed, and every ``apply`` created one more
bridge (hp0, hp1, ...) because the kernel takes '%d' as a pattern.
``tests/integration/test_link_names_kernel.py`` checks the list against the kernel.
"""

from __future__ import annotations

import pytest

from tests.support import StateDir
from vnetd.desired import validate
from vnetd.desired.loader import load_state_dir
from vnetd.errors import ConfigError, ConfigIssue

BAD_NAMES = ["hp%d", "br%s", "a%%d", "all", "default", "bonding_masters", ".", "..", "a/b", "eth1:0",
             "eth 1", "tab\tx", "", "abcdefghijklmnop"]
GOOD_NAMES = ["eth1", "br0", "eth0.100", "vnet-1_a", "x" * 15, "allx", "defaults", "lo"]

#: one template per entry point: (file text with {name}, line of the name, field path)
ENTRY_POINTS = {
    "interface": ("interfaces:\n- name: '{name}'\n  type: linux-bridge\n", 2, "interfaces[0].name"),
    "bridge port": ("interfaces:\n- name: brx\n  type: linux-bridge\n  bridge:\n    port:\n    - name: '{name}'\n",
                    6, "interfaces[0].bridge.port[0].name"),
    "bridge port shorthand": ("interfaces:\n- name: brx\n  type: linux-bridge\n  bridge:\n    port:\n    - '{name}'\n",
                              6, "interfaces[0].bridge.port[0]"),
    "veth peer": ("interfaces:\n- name: v0\n  type: veth\n  veth:\n    peer: '{name}'\n", 5, "interfaces[0].veth.peer"),
    "vlan parent": ("interfaces:\n- name: v10\n  type: vlan\n  vlan:\n    base-iface: '{name}'\n    id: 10\n",
                    5, "interfaces[0].vlan.base-iface"),
    "route next-hop-interface": ("routes:\n  config:\n  - destination: 10.0.0.0/24\n"
                                 "    next-hop-interface: '{name}'\n", 4, "routes.config[0].next-hop-interface"),
}


def only_issue(state_dir: StateDir) -> ConfigIssue:
    with pytest.raises(ConfigError) as info:
        load_state_dir(str(state_dir))
    assert len(info.value.issues) == 1, "\n".join(map(str, info.value.issues))
    return info.value.issues[0]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_bad_names_are_refused_at_every_entry_point(entry: str, name: str, state_dir: StateDir) -> None:
    template, line, path = ENTRY_POINTS[entry]
    written = state_dir.write("10-x.yaml", template.format(name=name.replace("'", "''")))
    issue = only_issue(state_dir)
    assert (issue.file, issue.line, issue.path) == (str(written), line, path), str(issue)
    if name and len(name) < 16:
        assert repr(name) in issue.message or name in ("", ".", ".."), issue.message
    if name not in ("", "abcdefghijklmnop", ".", "..") and "/" not in name and ":" not in name \
            and not any(c.isspace() for c in name):
        # the names dev_valid_name() lets through: the message says what a valid name is
        assert validate.VALID_LINK_NAME in issue.message, issue.message


@pytest.mark.parametrize("name", GOOD_NAMES)
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_good_names_are_accepted_at_every_entry_point(entry: str, name: str, state_dir: StateDir) -> None:
    template, _line, _path = ENTRY_POINTS[entry]
    state_dir.write("10-x.yaml", template.format(name=name))
    load_state_dir(str(state_dir))


def test_percent_d_message_says_what_the_kernel_would_do() -> None:
    message = validate.link_name("hp%d")
    assert message is not None
    assert "'hp0', 'hp1', ... instead" in message
    assert message.endswith(validate.VALID_LINK_NAME)


@pytest.mark.parametrize(("name", "clash"), [("all", "/proc/sys/net/ipv4/conf/all"),
                                             ("default", "/proc/sys/net/ipv4/conf/default"),
                                             ("bonding_masters", "/sys/class/net/bonding_masters")])
def test_reserved_names_say_what_they_clash_with(name: str, clash: str) -> None:
    message = validate.link_name(name)
    assert message is not None and f"it clashes with {clash}" in message


def test_firewall_rules_still_match_any_name_the_kernel_allows() -> None:
    """`-i all` or `-o x%d` in a rule only match; nothing is created from them."""
    assert validate.interface_name("all") is None and validate.interface_name("x%d") is None


NETWORK = """\
libvirt:
  uri: test:///default
  networks:
  - name: lan
    xml: "<network><name>lan</name><bridge name='{bridge}'/></network>"
"""


@pytest.mark.parametrize("bridge", ["all", "default", "hp%s", "a/b", "virbr%d%d", "abcdefghijklmno%d"])
def test_libvirt_network_bridge_names_are_checked(bridge: str, state_dir: StateDir) -> None:
    written = state_dir.write("30-libvirt.yaml", NETWORK.format(bridge=bridge))
    issue = only_issue(state_dir)
    assert (issue.file, issue.line, issue.path) == (str(written), 5, "libvirt.networks[0].xml"), str(issue)
    assert f"<bridge name='{bridge}'/>" in issue.message and "libvirt expands one '%d' itself" in issue.message


@pytest.mark.parametrize("bridge", ["virbr%d", "br-lan", "virbr0"])
def test_libvirt_expands_its_own_bridge_template(bridge: str, state_dir: StateDir) -> None:
    state_dir.write("30-libvirt.yaml", NETWORK.format(bridge=bridge))
    assert load_state_dir(str(state_dir)).libvirt is not None


@pytest.mark.parametrize(("xml", "says"), [
    ("<network><name>lan</name><bridge name='br0'></network>", "not well-formed"),
    ("<network><name>wan</name></network>", "must define <name>lan</name>"),
    ("<network><!DOCTYPE x [<!ENTITY a 'b'>]><name>lan</name></network>", "DTD or entity"),
])
def test_libvirt_network_xml_is_parsed_safely(xml: str, says: str, state_dir: StateDir) -> None:
    state_dir.write("30-libvirt.yaml", NETWORK.replace(
        "\"<network><name>lan</name><bridge name='{bridge}'/></network>\"", f'"{xml}"'))
    assert says in only_issue(state_dir).message
