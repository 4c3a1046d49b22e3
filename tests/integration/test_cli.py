# SPDX-License-Identifier: MIT
"""The command line as an administrator uses it, in a namespace: --help with examples,
global options after the command, ``show NAME`` and ``show --section``, what ``plan``
says about new bridges, rules and addresses, and "did you mean" from check."""

from __future__ import annotations

import pytest
import yaml

from tests.support import ROOT, Netns, StateDir, vnetd

pytestmark = pytest.mark.kernel

HOST = ROOT / "etc" / "vnetd.d"


@pytest.fixture
def host(make_netns, state_dir) -> tuple[Netns, StateDir]:  # type: ignore[no-untyped-def]
    """The article's set-ups 2 and 3, applied: br0 over eth1, brdmz, the physdev rule."""
    ns = make_netns("cli")
    ns.veth("eth1", "eth1peer")
    for name in ("10-uplink-br0.yaml", "20-dmz-brdmz.yaml"):
        state_dir.write(name, (HOST / name).read_text())
    result = vnetd("apply", netns=ns, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    return ns, state_dir


def shown(text: str) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(text) or {}


@pytest.mark.parametrize("command", ["", "check", "plan", "apply", "show", "run", "reload", "import"])
def test_help_describes_and_ends_with_examples(command: str) -> None:
    result = vnetd(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    tail = result.stdout.rstrip().splitlines()
    examples = tail.index("examples:")
    assert [line for line in tail[examples + 1 :] if line.startswith("  vnetd")], result.stdout
    assert len([line for line in tail[examples + 1 :] if line.startswith("  vnetd")]) in (2, 3)


def test_global_options_after_the_command(host: tuple[Netns, StateDir]) -> None:
    ns, state = host
    before = vnetd("--netns", str(ns), "--state-dir", str(state), "plan")
    after = vnetd("plan", "--netns", str(ns), "--state-dir", str(state))
    mixed = vnetd("--netns", str(ns), "plan", "--state-dir", str(state), "--log-level", "error")
    assert before.returncode == after.returncode == mixed.returncode == 0, after.stderr
    assert before.stdout == after.stdout == mixed.stdout
    check = vnetd("check", "--netns", str(ns), "--state-dir", str(state))
    assert check.returncode == 0 and f"{state}: 3 files valid" in check.stdout, check.stderr  # the backend pin too


def test_a_global_option_in_both_places_must_agree(host: tuple[Netns, StateDir]) -> None:
    ns, state = host
    result = vnetd("--netns", str(ns), "check", "--netns", "no-such-namespace", "--state-dir", str(state))
    assert result.returncode == 2
    assert f"--netns is given before the command ({ns}) and after it (no-such-namespace); give it once" \
        in result.stderr


def test_show_names(host: tuple[Netns, StateDir]) -> None:
    ns, state = host
    result = vnetd("show", "br0", "FORWARD", netns=ns, state_dir=state)
    assert result.returncode == 0, result.stderr
    data = shown(result.stdout)
    assert [i["name"] for i in data["interfaces"]] == ["br0"]
    # the backend the files name is shown too: fed back, the output uses the same tables
    assert list(data["firewall"]) == ["backend", "filter"] and list(data["firewall"]["filter"]) == ["FORWARD"]
    assert "sysctl" not in data
    # fed back, what is shown plans nothing
    fed = StateDir(state.path.parent / "fed-back")
    fed.write("10-shown.yaml", result.stdout)
    assert vnetd("plan", netns=ns, state_dir=fed).returncode == 0


def test_show_sections(host: tuple[Netns, StateDir]) -> None:
    ns, state = host
    result = vnetd("show", "--section", "firewall", netns=ns, state_dir=state)
    assert result.returncode == 0, result.stderr
    assert list(shown(result.stdout)) == ["firewall"]
    result = vnetd("show", "--section", "interfaces", "--section", "sysctl", netns=ns, state_dir=state)
    assert list(shown(result.stdout)) == ["interfaces", "sysctl"]
    assert "firewall" not in result.stdout


def test_show_sections_of_ipv6_chains_and_route_rules(host: tuple[Netns, StateDir]) -> None:
    ns, state = host
    state.write("40-v6-rules.yaml", """\
        route-rules:
          config:
          - {ip-from: 192.0.2.0/24, route-table: 100, priority: 1000, iif: br0}
          - {ip-to: 198.51.100.0/24, route-table: 101, priority: 1001}
        firewall6:
          filter:
            INPUT:
              rules:
              - -p ipv6-icmp -j ACCEPT
        """)
    assert vnetd("apply", netns=ns, state_dir=state).returncode == 0
    result = vnetd("show", "--section", "firewall6", "--section", "route-rules", netns=ns, state_dir=state)
    assert result.returncode == 0, result.stderr
    data = shown(result.stdout)
    assert list(data) == ["route-rules", "firewall6"], result.stdout
    assert data["firewall6"]["filter"]["INPUT"]["rules"] == ["-p ipv6-icmp -j ACCEPT"]
    assert [r["priority"] for r in data["route-rules"]["config"]] == [1000, 1001]
    assert "\nfirewall:" not in result.stdout
    # a name narrows the rules to those coming in through it
    named = shown(vnetd("show", "br0", "--section", "route-rules", netns=ns, state_dir=state).stdout)
    assert [r["priority"] for r in named["route-rules"]["config"]] == [1000]


def test_show_a_name_that_is_not_there(host: tuple[Netns, StateDir]) -> None:
    ns, state = host
    result = vnetd("show", "br1", "FORWRD", netns=ns, state_dir=state)
    assert result.returncode == 1 and not result.stdout
    assert "nothing is named br1 (did you mean br0?), FORWRD (did you mean FORWARD?)" in result.stderr


def test_plan_says_what_new_links_rules_and_addresses_will_be(host: tuple[Netns, StateDir]) -> None:
    ns, state = host
    state.write("30-more.yaml", """\
        interfaces:
        - name: br9
          type: linux-bridge
          state: up
          mac-address: "52:54:00:00:00:09"
          ipv4:
            enabled: true
            address: [198.51.100.1/24]
          bridge:
            options:
              stp: {enabled: false, forward-delay: 0}
        firewall:
          filter:
            mine:
              rules: [-j RETURN]
        """)
    assert vnetd("apply", netns=ns, state_dir=state).returncode == 0
    # the files change: br9 goes away and comes back as something else, a rule changes, a chain goes
    state.write("30-more.yaml", """\
        interfaces:
        - name: br9
          type: linux-bridge
          state: up
          ipv4:
            enabled: true
            address: [203.0.113.1/24]
        - name: br8
          type: linux-bridge
          bridge:
            options:
              stp: {enabled: true, priority: 4096}
        """)
    text = (HOST / "20-dmz-brdmz.yaml").read_text().replace("- -m physdev --physdev-is-bridged -j ACCEPT",
                                                          "- -m physdev --physdev-is-bridged -j ACCEPT\n      - -j LOG")
    state.write("20-dmz-brdmz.yaml", text)
    ns.exec("iptables-legacy", "-A", "FORWARD", "-s", "192.0.2.99", "-j", "DROP")
    result = vnetd("plan", netns=ns, state_dir=state)
    assert result.returncode == 2, result.stderr
    lines = result.stdout.splitlines()
    assert ("+ interface/br8: exists want linux-bridge, have (none); created with bridge.options.stp "
            "{enabled: true, priority: 4096}") in lines
    assert "- interface/br9: ipv4.address remove 198.51.100.1/24" in lines
    assert "+ interface/br9: ipv4.address add 203.0.113.1/24" in lines
    forward = lines.index("~ firewall/filter/FORWARD: rules (merge: vnetd's rules first, other tools' rules kept)")
    assert lines[forward + 1 : forward + 4] == [
        "      -m physdev --physdev-is-bridged -j ACCEPT",
        "    + -j LOG",
        "      (foreign) -s 192.0.2.99/32 -j DROP",
    ], result.stdout
    mine = lines.index("- firewall/filter/mine: rules: the chain and vnetd's rules in it are deleted (no longer "
                       "declared)")
    assert lines[mine + 1] == "    - -j RETURN (vnetd's, no longer declared)", result.stdout


def test_check_says_what_would_be_valid(netns: Netns, state_dir: StateDir) -> None:
    state_dir.write("10-keys.yaml", "interfaces:\n- {name: br0, type: linux-brige, mtux: 9000}\n")
    state_dir.write("20-rules.yaml", """\
        firewall:
          filter:
            INPUT:
              rules:
              - -p tcp --dprot 22 -j ACCEPT
              - -j REJECT --reject-with icmp-host-prohibted
              - -j ACCPET
        """)
    state_dir.write("30-yaml.yaml", 'firewall:\n  filter:\n    INPUT:\n      rules:\n'
                                    '      - "-m comment --comment "ssh" -j ACCEPT"\n')
    state_dir.write("40-rules6.yaml", """\
        firewall6:
          filter:
            INPUT:
              rules:
              - -j REJECT --reject-with icmp6-adm-prohibted
              - -p icmpv6 --icmpv6-type echo-requst -j ACCEPT
        """)
    result = vnetd("check", netns=netns, state_dir=state_dir)
    assert result.returncode == 1
    err = result.stderr
    for says in ("interfaces[0].mtux: unknown key in an interface; valid keys: ", "; did you mean mtu?",
                 "'linux-brige' is not valid; expected one of: ", "; did you mean linux-bridge?",
                 'unknown option "--dprot" (did you mean --dport?)',
                 '(did you mean icmp-host-prohibited? --reject-with takes: icmp-net-unreachable',
                 "'-j ACCPET': no such target", "(did you mean ACCEPT?)",
                 "30-yaml.yaml:5: YAML syntax error at line 5, column 9: ",
                 "write a rule that contains \" in single quotes, e.g. - '-m comment --comment \"ssh\" -j ACCEPT'",
                 # firewall6: ip6tables' reject types and ICMPv6 types
                 "firewall6.filter.INPUT.rules[0]: ",
                 "(did you mean icmp6-adm-prohibited? --reject-with takes: icmp6-no-route",
                 "(did you mean echo-request? --icmpv6-type takes: "):
        assert says in err, err
