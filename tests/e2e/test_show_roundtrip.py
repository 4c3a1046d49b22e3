# SPDX-License-Identifier: MIT
"""Issue 11: ``vnetd show`` round-trips every shipped example, and shows everything.

Each example (the article's host in etc/vnetd.d, its gateway and DMZ guests in
etc/examples) is applied in a namespace of its own; then other tools' rules, a chain
and whole tables are added with ``iptables-legacy`` (and an nf_tables table with
``nft``). ``vnetd show`` must print a state file that ``check`` accepts and that plans
nothing in a new state directory, with every foreign rule, chain and table as a
comment; applying it must leave the foreign rules as they are.

Two ways to run show: with the example's state files (``/etc/vnetd.d`` on a host:
vnetd's rules are printed as declared), and without any (a host being adopted, or
its files lost: every rule is printed from the kernel entry, by
``xtables.render_entry``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT, Netns, StateDir, vnetd

pytestmark = pytest.mark.kernel

NETWORK_XML = """\
<node>
  <network>
    <name>default</name>
    <forward mode='nat'/>
    <bridge name='virbr0'/>
    <ip address='192.168.122.1' netmask='255.255.255.0'/>
  </network>
</node>
"""


@dataclass(frozen=True)
class Example:
    name: str
    directory: Path
    nics: tuple[str, ...]  # the NICs the example expects (veths here, their peers elsewhere)


EXAMPLES = [
    Example("host", ROOT / "etc" / "vnetd.d", ("eth1",)),
    Example("gateway", ROOT / "etc" / "examples" / "gateway", ("eth0", "eth1")),
    Example("dmz-guest", ROOT / "etc" / "examples" / "dmz-guest", ("eth0",)),
]

#: other tools' firewall, added after vnetd applied the example
FOREIGN = [
    ("-A", "FORWARD", "-s", "192.0.2.0/24", "-m", "state", "--state", "NEW", "-j", "DROP"),
    ("-N", "FOREIGN"),
    ("-A", "FOREIGN", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"),
    ("-A", "INPUT", "-s", "198.51.100.0/24", "-j", "FOREIGN"),
    ("-t", "mangle", "-A", "PREROUTING", "-j", "MARK", "--set-mark", "1"),
    ("-t", "nat", "-A", "POSTROUTING", "-s", "203.0.113.0/24", "-j", "RETURN"),
]


def copy_example(example: Example, state: StateDir, tmp: Path) -> None:
    for f in sorted(example.directory.glob("*.yaml")):
        text = f.read_text()
        if "uri: qemu:///system" in text:  # this host's libvirtd is not the test's: libvirt's test driver
            (tmp / "node.xml").write_text(NETWORK_XML)
            text = text.replace("uri: qemu:///system", f"uri: test://{tmp / 'node.xml'}")
        state.write(f.name, text)


@pytest.fixture(params=EXAMPLES, ids=[e.name for e in EXAMPLES])
def applied(request: pytest.FixtureRequest, make_netns: Callable[..., Netns],
            make_state_dir: Callable[[], StateDir], tmp_path: Path) -> tuple[Example, Netns, StateDir]:
    example: Example = request.param
    ns, switch = make_netns(example.name[:8]), make_netns("sw")
    for i, nic in enumerate(example.nics):
        ns.veth(nic, f"port{i}", switch)
        switch.ip("link", "set", f"port{i}", "up")
    if example.name == "host":  # the bridge libvirt made for its NAT network "default"
        ns.ip("link", "add", "virbr0", "type", "bridge")
        ns.ip("link", "set", "virbr0", "up")
    state = make_state_dir()
    copy_example(example, state, tmp_path)
    applied = vnetd("apply", netns=ns, state_dir=state)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    for rule in FOREIGN:
        ns.exec("iptables-legacy", *rule)
    ns.exec("nft", "add", "table", "inet", "firewalld")
    return example, ns, state


@pytest.mark.parametrize("with_state_files", [True, False], ids=["with-state-files", "from-the-kernel"])
def test_show_output_checks_plans_nothing_and_shows_every_foreign_rule(
        applied: tuple[Example, Netns, StateDir], with_state_files: bool,
        make_state_dir: Callable[[], StateDir]) -> None:
    example, ns, state = applied
    shown_from = state if with_state_files else make_state_dir()  # an empty one: nothing declared
    show = vnetd("show", netns=ns, state_dir=shown_from)
    assert show.returncode == 0, show.stderr
    text = show.stdout
    # everything is there, what vnetd does not manage as comments
    assert "-A FORWARD -s 192.0.2.0/24" in text and "-j DROP" in text
    assert "-N FOREIGN" in text and "-A FOREIGN -p tcp -m tcp --dport 22 -j ACCEPT" in text
    assert "-A INPUT -s 198.51.100.0/24 -j FOREIGN" in text
    assert "foreign table (not managed): mangle" in text and "-A PREROUTING -j MARK" in text
    assert "-A POSTROUTING -s 203.0.113.0/24 -j RETURN" in text
    assert "nf_tables table (not managed" in text and "inet firewalld" in text
    for line in text.splitlines():
        if "FOREIGN" in line or "192.0.2.0/24" in line or "MARK" in line or "203.0.113.0" in line:
            assert line.lstrip().startswith("#"), f"a foreign rule outside a comment: {line}"

    # the round trip: a new state directory with only the output of show
    roundtrip = make_state_dir()
    roundtrip.write("50-shown.yaml", text)
    check = vnetd("check", netns=ns, state_dir=roundtrip)
    assert check.returncode == 0, f"check refused the output of show:\n{check.stderr}\n{text}"
    plan = vnetd("plan", "--format", "json", netns=ns, state_dir=roundtrip)
    assert plan.returncode == 0, f"the output of show plans changes:\n{plan.stdout}{plan.stderr}\n{text}"
    assert json.loads(plan.stdout) == {"changes": [], "problems": [], "notes": [], "warnings": []}

    # and applying it touches nothing, the foreign rules least of all
    before = ns.iptables_save()
    apply = vnetd("apply", netns=ns, state_dir=roundtrip)
    assert apply.returncode == 0 and "converged: nothing to do" in apply.stdout, apply.stdout + apply.stderr
    assert ns.iptables_save() == before
