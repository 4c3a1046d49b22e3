# SPDX-License-Identifier: MIT
"""`vnetd import`: the article's ifcfg, iptables-save and sysctl.conf files as test data.

Every import must load with the loader `vnetd check` uses (and `vnetd check` itself
must accept it), must say in a comment whatever it did not translate, and must
treat hostile input as data. No kernel, no namespaces: import only reads files.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from vnetd.desired.loader import SourceFile, load_sources
from vnetd.desired.rules import parse_rule
from vnetd.importer import emit as E
from vnetd.importer.command import Imported, import_command, read_inputs, translate
from vnetd.importer.ifcfg import lex_value, parse_ifcfg
from vnetd.importer.iptables_save import parse_iptables_save
from vnetd.importer.sources import ImportProblem
from vnetd.importer.sysctl_conf import parse_sysctl_conf
from vnetd.model.firewall import ChainMode
from vnetd.model.interfaces import AdminState, IfType
from vnetd.model.state import DesiredState

ROOT = Path(__file__).resolve().parents[2]
ARTICLE = ROOT.parent / "shared" / "article"
HOST_SCRIPTS = ARTICLE / "host" / "network-scripts"
GATEWAY_SCRIPTS = ARTICLE / "gateway" / "network-scripts"
GATEWAY_IPTABLES = ARTICLE / "gateway" / "iptables"
GATEWAY_SYSCTL = ARTICLE / "gateway" / "sysctl.conf"
STAMP = "2011-08-04 00:00 UTC"


def run_import(ifcfg: Path | str | None = None, iptables: Path | str | None = None,
               sysctl: Path | str | None = None) -> tuple[str, DesiredState]:
    imported = read_inputs(str(ifcfg) if ifcfg else None, str(iptables) if iptables else None,
                           str(sysctl) if sysctl else None)
    return translate(imported, STAMP)


def load(text: str) -> DesiredState:
    return load_sources([SourceFile("imported.yaml", text)])


def comments(text: str) -> str:
    """All comment text of a state file, one comment line per line (continuations joined)."""
    lines = [line.strip()[1:].strip() for line in text.splitlines() if line.strip().startswith("#")]
    return "\n".join(lines)


def untranslated(text: str) -> str:
    """The comments, with wrapped continuation lines joined to their first line."""
    out: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            continue
        body = stripped[1:]
        if body.startswith("   ") and out:  # a wrapped continuation ("#   ...")
            out[-1] += " " + body.strip()
        else:
            out.append(body.strip())
    return "\n".join(out)


def article_rules(path: Path) -> dict[tuple[str, str], list[str]]:
    """(table, chain) -> the rule texts of the -A lines, in file order."""
    rules: dict[tuple[str, str], list[str]] = {}
    table = ""
    for line in path.read_text().splitlines():
        if line.startswith("*"):
            table = line[1:]
        m = re.match(r"^-A (\S+) (.*)$", line)
        if m:
            rules.setdefault((table, m.group(1)), []).append(m.group(2))
    return rules


def vnetd_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1", SOURCE_DATE_EPOCH="1312416000")
    return subprocess.run([sys.executable, "-m", "vnetd", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def state_dir(tmp_path: Path, name: str = "vnetd.d") -> Path:
    d = tmp_path / name
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    return d


def install(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


def ns(**kwargs: object) -> argparse.Namespace:
    base: dict[str, object] = {"ifcfg_dir": None, "iptables": None, "sysctl": None, "output": None}
    base.update(kwargs)
    return argparse.Namespace(**base)


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the article: host


def test_article_fixtures_are_there() -> None:
    for path in (HOST_SCRIPTS / "ifcfg-eth1", HOST_SCRIPTS / "ifcfg-br0", HOST_SCRIPTS / "ifcfg-brdmz",
                 GATEWAY_SCRIPTS / "ifcfg-eth0", GATEWAY_SCRIPTS / "ifcfg-eth1", GATEWAY_IPTABLES, GATEWAY_SYSCTL):
        assert path.is_file(), path


def test_host_ifcfg_translates_to_the_bridges_of_the_article() -> None:
    text, desired = run_import(ifcfg=HOST_SCRIPTS)
    assert desired.interfaces == load(text).interfaces
    by_name = {i.name: i for i in desired.interfaces}
    assert set(by_name) == {"eth1", "br0", "brdmz"}
    eth1, br0, brdmz = by_name["eth1"], by_name["br0"], by_name["brdmz"]
    assert eth1.type is IfType.ETHERNET and eth1.mtu == 9000 and eth1.state is AdminState.UP
    assert eth1.mac is None  # HWADDR names the NIC; it is not a MAC to set
    assert eth1.match_mac == "00:25:90:13:ba:a1"  # ... and identifies it: identifier: mac-address
    assert br0.type is IfType.BRIDGE and br0.state is AdminState.UP
    assert br0.bridge is not None and br0.bridge.ports == ("eth1",)
    assert br0.bridge.stp.forward_delay == 0 and br0.bridge.stp.enabled is False
    assert brdmz.type is IfType.BRIDGE and brdmz.bridge is not None
    assert brdmz.bridge.stp.forward_delay == 0 and not brdmz.bridge.ports
    assert brdmz.ipv4 is None and br0.ipv4 is None  # no IPADDR in those files: not managed
    notes = untranslated(text)
    assert "HWADDR=00:25:90:13:BA:A1 says which NIC this file is for: identifier: mac-address" in notes
    assert "identifier: mac-address\n  mac-address: 00:25:90:13:BA:A1\n" in text
    assert "Django: 2011-08-04 Konfiguration für Bridging-Interface" in notes  # the file's comments stay
    assert "(9000 with the ports listed here)" in notes


def test_host_ifcfg_output_lists_ports_before_bridges_like_the_example() -> None:
    text, _ = run_import(ifcfg=HOST_SCRIPTS)
    names = re.findall(r"^- name: (\S+)$", text, re.M)
    assert names == ["eth1", "br0", "brdmz"]


# --------------------------------------------------------------------------- the article: gateway


def test_gateway_ifcfg_dhcp_and_static() -> None:
    text, desired = run_import(ifcfg=GATEWAY_SCRIPTS)
    by_name = {i.name: i for i in desired.interfaces}
    eth0, eth1 = by_name["eth0"], by_name["eth1"]
    assert eth0.type is IfType.ETHERNET and eth0.ipv4 is not None  # DHCP: left to the client
    assert eth0.ipv4.dhcp and eth0.ipv4.foreign and eth0.ipv4.addresses is None
    assert eth1.ipv4 is not None and [str(a) for a in eth1.ipv4.addresses or ()] == ["10.0.0.10/24"]
    assert not desired.routes  # no GATEWAY in either file
    notes = untranslated(text)
    assert "BOOTPROTO=dhcp: dhcp: true, the address and default route belong to the DHCP client" in notes
    for key, value in (("NM_CONTROLLED", '"yes"'), ("UUID", "5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03"),
                       ("DNS1", "192.168.10.1"), ("DOMAIN", "dmz.nausch.org"), ("PEERDNS", "yes"),
                       ("IPV6INIT", "no"), ("DEFROUTE", "yes"), ("PEERROUTES", "yes"),
                       ("IPV4_FAILURE_FATAL", "yes")):
        assert f"{key}={value}" in notes, key
    assert (eth0.match_mac, eth1.match_mac) == ("52:54:00:c0:15:c4", "52:54:00:0a:fa:3e")
    assert "HWADDR=52:54:00:0A:FA:3E says which NIC this file is for" in notes


def test_gateway_iptables_is_the_articles_firewall() -> None:
    text, desired = run_import(iptables=GATEWAY_IPTABLES)
    chains = {(c.table, c.name): c for c in desired.chains}
    assert set(chains) == {("nat", "POSTROUTING"), ("filter", "INPUT"), ("filter", "FORWARD")}
    post = chains["nat", "POSTROUTING"]
    assert [r.text for r in post.rules] == ["-o eth0 -j MASQUERADE"]
    expected = article_rules(GATEWAY_IPTABLES)
    for name in ("INPUT", "FORWARD"):
        chain = chains["filter", name]
        assert chain.mode is ChainMode.EXCLUSIVE and chain.policy == "ACCEPT"
        assert [r.text for r in chain.rules] == [parse_rule(t).text for t in expected["filter", name]]
        assert chain.rules[-1].text == "-j REJECT --reject-with icmp-host-prohibited"
    assert len(chains["filter", "INPUT"].rules) == 6 and len(chains["filter", "FORWARD"].rules) == 6
    # exact text of the file, not a re-rendering
    assert "      - -m state --state NEW -m tcp -p tcp --dport 22 -j ACCEPT\n" in text
    assert "[0:0]" not in text
    notes = untranslated(text)
    assert "Django : 2011-08-04 Masquerading aktiviert" in notes
    assert "PREROUTING, OUTPUT: no rules and policy ACCEPT in the file: not declared" in notes
    # the article's comments stay around the rules they were written around
    block = text[text.index("Portforwarding aktiviert"): text.index("# Django : end", text.index("Portforwarding"))]
    assert "-i eth0 -o eth1 -m state --state RELATED,ESTABLISHED -j ACCEPT" in block
    assert "-i eth1 -o eth0 -j ACCEPT" in block
    assert "REJECT" not in block


def test_gateway_firewall_round_trip_gives_the_canonical_rules() -> None:
    """The imported firewall, loaded, has the canonical texts of the article's -A lines."""
    text, _ = run_import(iptables=GATEWAY_IPTABLES)
    loaded = load(text)
    got = {(c.table, c.name): [r.text for r in c.rules] for c in loaded.chains}
    want = {key: [parse_rule(t).text for t in texts] for key, texts in article_rules(GATEWAY_IPTABLES).items()}
    assert got == want


def test_gateway_equals_the_bundled_example() -> None:
    """The hand-written etc/examples/gateway firewall and the import declare the same rules."""
    example = load_sources([SourceFile(str(p), p.read_text())
                            for p in sorted((ROOT / "etc" / "examples" / "gateway").glob("*.yaml"))])
    _, imported = run_import(iptables=GATEWAY_IPTABLES, sysctl=GATEWAY_SYSCTL)
    want = {(c.table, c.name): [r.text for r in c.rules] for c in example.chains}
    got = {(c.table, c.name): [r.text for r in c.rules] for c in imported.chains}
    assert got == want
    assert ("net.ipv4.ip_forward", "1") in {(s.key, s.value) for s in imported.sysctls}


def test_gateway_sysctl_net_keys_only() -> None:
    text, desired = run_import(sysctl=GATEWAY_SYSCTL)
    values = {s.key: s.value for s in desired.sysctls}
    assert values == {
        "net.ipv4.ip_forward": "1", "net.ipv4.conf.default.rp_filter": "1",
        "net.ipv4.conf.default.accept_source_route": "0", "net.ipv4.tcp_syncookies": "1",
        "net.bridge.bridge-nf-call-ip6tables": "0", "net.bridge.bridge-nf-call-iptables": "0",
        "net.bridge.bridge-nf-call-arptables": "0",
    }
    notes = untranslated(text)
    assert "not translated: sysctl.conf:18: kernel.sysrq = 0 (vnetd manages net.* only" in notes
    assert "not translated: sysctl.conf:22: kernel.core_uses_pid = 1 (vnetd manages net.* only" in notes
    assert "Controls IP packet forwarding" in notes
    assert "net.ipv4.ip_forward: 1\n" in text


def test_everything_in_the_article_files_appears_in_the_output() -> None:
    """Each ifcfg key, each -A rule and each sysctl.conf line is translated or in a comment."""
    text, _ = run_import(ifcfg=GATEWAY_SCRIPTS, iptables=GATEWAY_IPTABLES, sysctl=GATEWAY_SYSCTL)
    notes = untranslated(text)
    translated = {"DEVICE": "name", "TYPE": "type", "ONBOOT": "state", "NAME": "description", "IPADDR": "ip",
                  "PREFIX": "prefix-length", "BOOTPROTO": None}
    for path in sorted(GATEWAY_SCRIPTS.glob("ifcfg-*")):
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                if key == "BOOTPROTO":
                    assert value in ("none", "dhcp")  # none: static addresses; dhcp: a comment (above)
                elif key in translated:
                    assert f"{translated[key]}: " in text, line
                    assert value.strip('"').lower() in text.lower(), line
                else:
                    assert f"{key}={value}" in notes, line
    for line in GATEWAY_IPTABLES.read_text().splitlines():
        if line.startswith("-A "):
            assert line.split(" ", 2)[2] in text, line
        elif line.startswith("# Django") or line.startswith("# Firewall"):
            assert line[2:] in text, line
    for line in GATEWAY_SYSCTL.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key = line.split("=")[0].strip()
            assert key in text, line


def test_whole_gateway_import_header_and_check(tmp_path: Path) -> None:
    text, desired = run_import(ifcfg=GATEWAY_SCRIPTS, iptables=GATEWAY_IPTABLES, sysctl=GATEWAY_SYSCTL)
    head = text.split("\n\n", 1)[0]
    assert head.startswith("# vnetd state file written by `vnetd import` on 2011-08-04 00:00 UTC from:")
    assert str(GATEWAY_SCRIPTS) in head and str(GATEWAY_IPTABLES) in head and str(GATEWAY_SYSCTL) in head
    assert "ifcfg-eth0, ifcfg-eth1" in head
    assert len(desired.interfaces) == 2 and len(desired.sysctls) == 7 and len(desired.chains) == 3
    assert yaml.safe_load(text)["firewall"]["filter"]["FORWARD"]["mode"] == "exclusive"


# --------------------------------------------------------------------------- the command


def test_cli_writes_a_file_that_vnetd_check_accepts(tmp_path: Path) -> None:
    """`vnetd import -o` then `vnetd check` (which also compiles the rules through python-iptables)."""
    d = state_dir(tmp_path)
    host = d / "10-host.yaml"
    gateway = d / "20-gateway.yaml"
    result = vnetd_cli("import", "--ifcfg-dir", str(HOST_SCRIPTS), "-o", str(host))
    assert result.returncode == 0, result.stderr
    assert "3 interfaces" in result.stderr and "not translated" in result.stderr
    assert stat.S_IMODE(host.stat().st_mode) == 0o644 and host.stat().st_uid == os.geteuid()
    assert "on 2011-08-04 00:00 UTC" in host.read_text()  # SOURCE_DATE_EPOCH
    checked = vnetd_cli("--state-dir", str(d), "check")
    assert checked.returncode == 0, checked.stderr
    assert "3 interfaces" in checked.stdout
    # the gateway is another machine: its own state directory
    g = state_dir(tmp_path, "gateway.d")
    gateway = g / "20-gateway.yaml"
    result = vnetd_cli("import", "--ifcfg-dir", str(GATEWAY_SCRIPTS), "--iptables", str(GATEWAY_IPTABLES),
                       "--sysctl", str(GATEWAY_SYSCTL), "--output", str(gateway))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(gateway.stat().st_mode) == 0o644
    checked = vnetd_cli("--state-dir", str(g), "check")
    assert checked.returncode == 0, checked.stderr
    assert "2 interfaces, 0 routes, 0 route rules, 7 sysctls, 3 chains" in checked.stdout
    assert not list(g.glob(".*"))  # no temporary file left behind


def test_cli_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "out.yaml"
    target.write_text("precious\n")
    result = vnetd_cli("import", "--iptables", str(GATEWAY_IPTABLES), "-o", str(target))
    assert result.returncode == 1
    assert f"{target}: exists already" in result.stderr
    assert target.read_text() == "precious\n"
    link = tmp_path / "dangling.yaml"
    link.symlink_to(tmp_path / "nowhere")
    result = vnetd_cli("import", "--iptables", str(GATEWAY_IPTABLES), "-o", str(link))
    assert result.returncode == 1 and not (tmp_path / "nowhere").exists()


def test_cli_stdout(tmp_path: Path) -> None:
    result = vnetd_cli("import", "--iptables", str(GATEWAY_IPTABLES), "-o", "-")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# vnetd state file written by `vnetd import`")
    assert load(result.stdout).chains
    result = vnetd_cli("import", "--sysctl", str(GATEWAY_SYSCTL))
    assert result.returncode == 0 and "net.ipv4.ip_forward: 1" in result.stdout


def test_nothing_to_import(capsys: pytest.CaptureFixture[str]) -> None:
    assert import_command(ns()) == 1
    assert "nothing to import" in capsys.readouterr().err


def test_errors_name_the_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "iptables", "*filter\n:INPUT ACCEPT [0:0]\nthis is not iptables\nCOMMIT\n")
    assert import_command(ns(iptables=str(bad))) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3: not iptables-save syntax" in err
    assert import_command(ns(iptables=str(tmp_path / "missing"))) == 1
    assert f"{tmp_path / 'missing'}: does not exist" in capsys.readouterr().err
    out = tmp_path / "never.yaml"
    assert import_command(ns(iptables=str(bad), output=str(out))) == 1
    assert not out.exists()


# --------------------------------------------------------------------------- hostile input


def test_shell_code_is_a_literal_value(tmp_path: Path) -> None:
    d = tmp_path / "scripts"
    marker = tmp_path / "ran"
    write(d, "ifcfg-eth0", f"DEVICE=eth0\nIPADDR=$(touch {marker})\nPREFIX=24\nMTU=`touch {marker}`\n"
          f"GATEWAY=\"$(touch {marker})\"\nNAME=x; touch {marker}\n")
    text, desired = run_import(ifcfg=d)
    assert not marker.exists()
    (eth0,) = desired.interfaces
    assert eth0.ipv4 is None and eth0.mtu is None and not desired.routes
    notes = untranslated(text)
    assert f"not translated: IPADDR=$(touch {marker}): not an IPv4 address (taken literally" in notes
    assert f"not translated: MTU=`touch {marker}`: not an MTU" in notes
    assert "not an IPv4 address (taken literally: vnetd import never runs shell code)" in notes
    assert f"not translated: line 6: NAME=x; touch {marker} (the shell operator ';' follows the value)" in notes


def test_lines_without_assignment_become_comments(tmp_path: Path) -> None:
    d = tmp_path / "scripts"
    write(d, "ifcfg-eth0", "DEVICE=eth0\nthis line has no equals sign\nif true; then\nONBOOT = yes\n"
          "QUOTED='unterminated\n")
    text, desired = run_import(ifcfg=d)
    assert [i.name for i in desired.interfaces] == ["eth0"]
    notes = untranslated(text)
    assert "not translated: line 2: this line has no equals sign (not a KEY=value assignment)" in notes
    assert "not translated: line 3: if true; then" in notes
    assert "not translated: line 4: ONBOOT = yes" in notes
    assert "not translated: line 5: QUOTED='unterminated (unbalanced ' quote)" in notes


def test_binary_garbage_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = write(tmp_path, "iptables", "")
    garbage.write_bytes(b"*filter\n\x00\x01\x02\xff\xfe binary")
    assert import_command(ns(iptables=str(garbage))) == 1
    assert f"{garbage}:2: contains a NUL byte: this is a binary file, not an iptables-save file" \
        in capsys.readouterr().err
    d = tmp_path / "scripts"
    write(d, "ifcfg-eth0", "")
    (d / "ifcfg-eth0").write_bytes(bytes(range(256)) * 4)
    assert import_command(ns(ifcfg_dir=str(d))) == 1
    assert "ifcfg-eth0:1: contains a NUL byte" in capsys.readouterr().err
    latin = write(tmp_path, "sysctl.conf", "")
    latin.write_bytes("# Kommentar f\xfcr\nnet.ipv4.ip_forward = 1\n".encode("latin-1"))
    assert import_command(ns(sysctl=str(latin))) == 1
    assert f"{latin}:1: is not UTF-8 text" in capsys.readouterr().err


def test_devices_and_fifos_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert import_command(ns(iptables=str(fifo))) == 1
    assert "is not a regular file" in capsys.readouterr().err
    d = tmp_path / "scripts"
    d.mkdir()
    (d / "ifcfg-eth0").symlink_to("/dev/zero")
    assert import_command(ns(ifcfg_dir=str(d))) == 1
    assert "ifcfg-eth0: is not a regular file" in capsys.readouterr().err


def test_ip6tables_save_is_refused_as_iptables_with_a_hint(tmp_path: Path) -> None:
    v6 = write(tmp_path, "ip6tables", "# Generated by ip6tables-save v1.4.7 on Thu Aug  4 2011\n*filter\n"
               ":INPUT ACCEPT [0:0]\n-A INPUT -p ipv6-icmp -j ACCEPT\nCOMMIT\n")
    with pytest.raises(ImportProblem, match=r"ip6tables:1: this is ip6tables-save output \(IPv6\); import it "
                                            r"with --ip6tables FILE"):
        run_import(iptables=v6)
    bare = write(tmp_path, "v6", "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 2001:db8::/32 -j ACCEPT\nCOMMIT\n")
    with pytest.raises(ImportProblem, match=r"v6:3: an IPv6 rule: this looks like ip6tables-save output; "
                                            r"import it with --ip6tables FILE"):
        run_import(iptables=bare)


# --------------------------------------------------------------------------- ip6tables-save (issue 14)

IP6TABLES = ROOT / "tests" / "data" / "ip6tables" / "rulesets"


def run_import6(ip6tables: Path, iptables: Path | None = None) -> tuple[str, DesiredState]:
    return translate(read_inputs(None, str(iptables) if iptables else None, None, str(ip6tables)), STAMP)


def test_iptables_save_is_refused_as_ip6tables_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ImportProblem, match=r"iptables:\d+: an IPv4 rule: this looks like iptables-save output; "
                                            r"import it with --iptables FILE"):
        run_import6(GATEWAY_IPTABLES)
    v4 = write(tmp_path, "v4", "# Generated by iptables-save v1.4.7 on Thu Aug  4 2011\n*filter\n"
               ":INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n")
    with pytest.raises(ImportProblem, match=r"v4:1: this is iptables-save output \(IPv4\); import it with "
                                            r"--iptables FILE"):
        run_import6(v4)
    for rule in ("-p icmp --icmp-type 8 -j ACCEPT", "-f -j DROP", "-j REJECT --reject-with icmp-host-prohibited",
                 "-d 192.0.2.0/24 -j ACCEPT"):
        bare = write(tmp_path, "bare", f"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT {rule}\nCOMMIT\n")
        with pytest.raises(ImportProblem, match=r"bare:3: an IPv4 rule"):
            run_import6(bare)


def test_centos_default_ip6tables_becomes_the_firewall6_section() -> None:
    """RHEL/CentOS 7's /etc/sysconfig/ip6tables (iptables-services): the same translation as
    for iptables, under firewall6:, and its rules are compiled as ip6tables does."""
    text, desired = run_import6(IP6TABLES / "centos7-default.rules")
    assert "\nfirewall6:\n" in text and "\nfirewall:\n" not in text
    assert "#   ip6tables-save: " in text
    chains = {c.resource: c for c in desired.chains}
    assert set(chains) == {"firewall6/filter/INPUT", "firewall6/filter/FORWARD"}
    inp, fwd = chains["firewall6/filter/INPUT"], chains["firewall6/filter/FORWARD"]
    assert inp.family == fwd.family == 6
    assert inp.mode is ChainMode.EXCLUSIVE and inp.policy == "ACCEPT"
    assert [r.text for r in inp.rules] == [r for (t, c), rules in article_rules(IP6TABLES / "centos7-default.rules")
                                           .items() if (t, c) == ("filter", "INPUT") for r in rules]
    assert [r.text for r in fwd.rules] == ["-j REJECT --reject-with icmp6-adm-prohibited"]
    assert "ip6tables-restore replaces the whole filter table" in comments(text)
    assert "sample configuration for ip6tables service" in comments(text)  # the file's own comments stay


def test_kvm_host_ip6tables_leaves_libvirt_alone_and_keeps_the_rest() -> None:
    text, desired = run_import6(IP6TABLES / "kvm-host.rules")
    chains = {c.resource: c for c in desired.chains}
    assert all(c.family == 6 for c in desired.chains)
    assert not any("LIBVIRT" in r for r in chains)
    notes = untranslated(text)
    assert "not translated: chain LIBVIRT_FWI (line 17): libvirt's own chain" in notes
    assert "-A FORWARD -j LIBVIRT_FWX (libvirt's own rule" in notes
    forward = chains["firewall6/filter/FORWARD"]
    assert forward.mode is ChainMode.MERGE and forward.policy == "DROP"
    assert [r.text for r in forward.tail][-1] == "-j REJECT --reject-with icmp6-adm-prohibited"  # position: append
    inp = chains["firewall6/filter/INPUT"]
    assert "-p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 -j ACCEPT" in [r.text for r in inp.all_rules]
    assert [r.text for r in chains["firewall6/filter/MGMT"].rules][-1] == "-j RETURN"
    assert [" ".join(r.words) for r in chains["firewall6/nat/POSTROUTING"].rules] == [
        "-s fd00:dead:beef::/48 ! -o docker0 -j MASQUERADE"]
    assert chains["firewall6/mangle/FORWARD"].mode is ChainMode.EXCLUSIVE


def test_both_families_in_one_import(tmp_path: Path) -> None:
    text, desired = run_import6(IP6TABLES / "centos7-default.rules", GATEWAY_IPTABLES)
    assert text.index("\nfirewall:\n") < text.index("\nfirewall6:\n")
    families = {c.family for c in desired.chains}
    assert families == {4, 6}
    # the same INPUT chain name in both: two chains, two sets of tags
    inputs = [c for c in desired.chains if (c.table, c.name) == ("filter", "INPUT")]
    assert len(inputs) == 2 and {c.resource for c in inputs} == {"firewall/filter/INPUT", "firewall6/filter/INPUT"}


def test_cli_imports_ip6tables_into_a_file_vnetd_check_accepts(tmp_path: Path) -> None:
    target = state_dir(tmp_path)
    out = target / "20-firewall6.yaml"
    result = vnetd_cli("import", "--ip6tables", str(IP6TABLES / "kvm-host.rules"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "13 chains with 37 rules" in result.stderr
    os.chmod(out, 0o644)
    # firewall6: needs a backend that writes IPv6; ``auto`` on a host whose iptables is the
    # nft variant refuses to guess one (issue 13), so the administrator names it
    install(target, "00-backend.yaml", "firewall:\n  backend: iptables-legacy\n")
    check = vnetd_cli("--state-dir", str(target), "check")
    assert check.returncode == 0, check.stdout + check.stderr
    helped = vnetd_cli("import", "--help")
    assert "--ip6tables FILE" in helped.stdout and "firewall6:" in helped.stdout
    nothing = vnetd_cli("import")
    assert nothing.returncode == 1 and "--ip6tables FILE" in nothing.stderr


def test_unknown_and_unmanaged_tables(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad", "*broute\n:BROUTING ACCEPT\nCOMMIT\n")
    with pytest.raises(ImportProblem, match=r"bad:1: unknown table 'broute'"):
        run_import(iptables=bad)
    security = write(tmp_path, "sec", "*security\n:INPUT ACCEPT [0:0]\n-A INPUT -j SECMARK --selctx x\nCOMMIT\n"
                     "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n")
    text, desired = run_import(iptables=security)
    assert [(c.table, c.name) for c in desired.chains] == [("filter", "INPUT")]
    notes = untranslated(text)
    assert "not translated: table security (line 1)" in notes
    assert "line 3: -A INPUT -j SECMARK --selctx x" in notes


@pytest.mark.parametrize("content, message", [
    ("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n", "is not closed with COMMIT"),
    ("-A INPUT -j ACCEPT\n", "1: not iptables-save syntax outside a table"),
    ("# nothing\n", "no table (*filter ... COMMIT) in this file"),
    ("*filter\nCOMMIT\n*filter\nCOMMIT\n", "3: table filter appears twice"),
    ("*filter\n:INPUT ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\nCOMMIT\n", "3: chain INPUT is declared twice"),
    ("*filter\n:INPUT\nCOMMIT\n", "2: not a chain declaration"),
    ("table inet filter {\n}\n", "1: not iptables-save syntax outside a table"),
])
def test_malformed_iptables_save(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path, "rules", content)
    with pytest.raises(ImportProblem) as exc:
        run_import(iptables=path)
    assert str(exc.value).startswith(str(path)) and message in str(exc.value)


def test_comments_cannot_break_out(tmp_path: Path) -> None:
    """Comment and value text from a file never becomes YAML of its own."""
    d = tmp_path / "scripts"
    write(d, "ifcfg-eth0", "# harmless\u2028interfaces: evil\n# next\x85line: x\nDEVICE=eth0\n"
          "NAME=\"a\u2029b: c # d\"\nUUID='\u2028- name: evil'\n")
    text, desired = run_import(ifcfg=d)
    assert [i.name for i in desired.interfaces] == ["eth0"]
    data = yaml.safe_load(text)
    assert list(data) == ["interfaces"] and len(data["interfaces"]) == 1
    assert data["interfaces"][0]["description"] == "a\u2029b: c # d"
    assert "\u2028" not in text and "\x85" not in text


# --------------------------------------------------------------------------- iptables-save details


def test_user_chains_jumps_duplicates_and_counters(tmp_path: Path) -> None:
    path = write(tmp_path, "iptables", """\
*filter
:INPUT DROP [10:600]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:LOGDROP - [0:0]
:EMPTY - [0:0]
[3:180] -A INPUT -i lo -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -m comment --comment "ssh: admins #1" -j ACCEPT
-A INPUT -j NOSUCHCHAIN
-A INPUT -g EMPTY
-A INPUT -m nosuchmatch -j ACCEPT
-A INPUT -j LOGDROP
-A LOGDROP -j LOG --log-prefix "dropped: "
-A LOGDROP -j DROP
COMMIT
""")
    text, desired = run_import(iptables=path)
    chains = {c.name: c for c in desired.chains}
    assert set(chains) == {"INPUT", "FORWARD", "LOGDROP", "EMPTY"}
    assert "OUTPUT" not in chains  # empty, policy ACCEPT: left alone
    assert chains["FORWARD"].policy == "DROP" and chains["FORWARD"].mode is ChainMode.MERGE
    assert not chains["FORWARD"].rules
    assert chains["INPUT"].policy == "DROP" and chains["INPUT"].mode is ChainMode.EXCLUSIVE
    assert [r.text for r in chains["INPUT"].rules] == [
        "-i lo -j ACCEPT", '-p tcp -m tcp --dport 22 -m comment --comment "ssh: admins #1" -j ACCEPT',
        "-g EMPTY", "-j LOGDROP"]
    assert [r.text for r in chains["LOGDROP"].rules] == ['-j LOG --log-prefix "dropped: "', "-j DROP"]
    assert chains["EMPTY"].rules == () and chains["EMPTY"].mode is ChainMode.EXCLUSIVE
    assert not chains["LOGDROP"].builtin
    notes = untranslated(text)
    assert "not translated: line 8: -A INPUT -i lo -j ACCEPT (the same rule as line 7" in notes
    assert "not translated: line 10: -A INPUT -j NOSUCHCHAIN (jumps to NOSUCHCHAIN, which is neither" in notes
    assert "not translated: line 12: -A INPUT -m nosuchmatch -j ACCEPT (vnetd check refuses it" in notes
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "[3:180]" not in body and "[10:600]" not in body  # counters are dropped


def test_insert_new_chain_policy_and_other_commands(tmp_path: Path) -> None:
    path = write(tmp_path, "iptables", """\
*filter
:INPUT ACCEPT [0:0]
-N MINE
-A INPUT -s 10.0.0.0/8 -j MINE
-A INPUT -j ACCEPT
-I INPUT 2 -s 192.0.2.1 -j DROP
-I INPUT -s 192.0.2.2 -j DROP
-P INPUT DROP
-A MINE -j RETURN
-F INPUT
-A UNDECLARED -j ACCEPT
COMMIT
""")
    text, desired = run_import(iptables=path)
    chains = {c.name: c for c in desired.chains}
    assert chains["INPUT"].policy == "DROP"
    assert [r.text for r in chains["INPUT"].rules] == [parse_rule(t).text for t in (
        "-s 192.0.2.2 -j DROP", "-s 10.0.0.0/8 -j MINE", "-s 192.0.2.1 -j DROP", "-j ACCEPT")]
    assert [r.text for r in chains["MINE"].rules] == ["-j RETURN"]
    notes = untranslated(text)
    assert "not translated: line 10: -F INPUT" in notes
    assert "not translated: line 11: -A UNDECLARED -j ACCEPT (chain UNDECLARED is not declared" in notes


def test_untranslatable_user_chain_takes_its_jumps_along(tmp_path: Path) -> None:
    path = write(tmp_path, "iptables", """\
*filter
:INPUT ACCEPT [0:0]
:PREROUTING - [0:0]
-A INPUT -j PREROUTING
-A INPUT -j ACCEPT
-A PREROUTING -j RETURN
COMMIT
""")
    text, desired = run_import(iptables=path)
    assert [(c.name, [r.text for r in c.rules]) for c in desired.chains] == [("INPUT", ["-j ACCEPT"])]
    notes = untranslated(text)
    assert "not translated: chain PREROUTING (line 3)" in notes
    assert ("not translated: line 4: -A INPUT -j PREROUTING (jumps to the chain PREROUTING, which is not "
            "translated)") in notes


def test_libvirt_rules_are_left_to_libvirt(tmp_path: Path) -> None:
    path = write(tmp_path, "iptables", """\
*nat
:POSTROUTING ACCEPT [0:0]
:LIBVIRT_PRT - [0:0]
-A POSTROUTING -j LIBVIRT_PRT
-A POSTROUTING -o eth0 -j MASQUERADE
-A LIBVIRT_PRT -s 192.168.122.0/24 ! -d 192.168.122.0/24 -j MASQUERADE
COMMIT
*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -i virbr0 -j ACCEPT
-A FORWARD -m physdev --physdev-is-bridged -j ACCEPT
COMMIT
""")
    text, desired = run_import(iptables=path)
    chains = {(c.table, c.name): c for c in desired.chains}
    assert set(chains) == {("nat", "POSTROUTING"), ("filter", "FORWARD")}
    assert chains["nat", "POSTROUTING"].mode is ChainMode.MERGE
    assert [r.text for r in chains["nat", "POSTROUTING"].rules] == ["-o eth0 -j MASQUERADE"]
    assert chains["filter", "FORWARD"].mode is ChainMode.MERGE
    assert [r.text for r in chains["filter", "FORWARD"].rules] == ["-m physdev --physdev-is-bridged -j ACCEPT"]
    notes = untranslated(text)
    assert "not translated: chain LIBVIRT_PRT (line 3): libvirt's own chain" in notes
    assert "line 10: -A FORWARD -i virbr0 -j ACCEPT (libvirt's own rule" in notes
    assert "mode merge, not exclusive: libvirt puts its own rules into this chain" in notes


def test_vnetd_tags_are_removed(tmp_path: Path) -> None:
    path = write(tmp_path, "iptables", """\
*filter
:INPUT ACCEPT [0:0]
:OWNED - [0:0]
-A INPUT -p tcp -m tcp --dport 80 -m comment --comment vnetd:0123456789abcdef -j ACCEPT
-A OWNED -m comment --comment vnetd:owned-chain
-A OWNED -m comment --comment vnetd:fedcba9876543210 -j RETURN
COMMIT
""")
    text, desired = run_import(iptables=path)
    chains = {c.name: c for c in desired.chains}
    assert [r.text for r in chains["INPUT"].rules] == ["-p tcp -m tcp --dport 80 -j ACCEPT"]
    assert [r.text for r in chains["OWNED"].rules] == ["-j RETURN"]
    assert "vnetd's marker of a chain it owns" in untranslated(text)


@pytest.mark.kernel  # the kernel's own checks (root) refuse them
def test_rules_the_loader_refuses_become_comments(tmp_path: Path) -> None:
    """The loader's own checks (target/chain combinations) feed back into comments."""
    path = write(tmp_path, "iptables", """\
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -j MASQUERADE
-A POSTROUTING -o eth0 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j MASQUERADE
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
""")
    text, desired = run_import(iptables=path)
    assert {(c.table, c.name): [r.text for r in c.rules] for c in desired.chains} == {
        ("nat", "POSTROUTING"): ["-o eth0 -j MASQUERADE"], ("filter", "INPUT"): ["-p tcp -m tcp --dport 22 -j ACCEPT"]}
    notes = untranslated(text)
    assert "line 4: -A PREROUTING -j MASQUERADE (vnetd check refuses it" in notes
    assert "line 9: -A INPUT -j MASQUERADE (vnetd check refuses it" in notes
    assert "PREROUTING: none of its rules is translated, so it is not declared" in notes


@pytest.mark.kernel  # the kernel's own checks (root) refuse them
def test_many_refused_rules(tmp_path: Path) -> None:
    """More refusals than the loader reports per file (200) still all end up as comments."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]"]
    lines += [f"-A INPUT -s 10.0.{i // 250}.{i % 250} -j MASQUERADE" for i in range(450)]  # nat only
    lines += ["-A INPUT -j ACCEPT", "COMMIT", ""]
    path = write(tmp_path, "iptables", "\n".join(lines))
    text, desired = run_import(iptables=path)
    assert [r.text for c in desired.chains for r in c.rules] == ["-j ACCEPT"]
    assert untranslated(text).count("not translated: line") == 450


def test_iptables_parse_keeps_comment_positions() -> None:
    parsed = parse_iptables_save(GATEWAY_IPTABLES.read_text(), str(GATEWAY_IPTABLES))
    filter_table = next(t for t in parsed.tables if t.name == "filter")
    forward = filter_table.chains["FORWARD"]
    assert forward.rules[3].before == ["Django : 2011-08-04 Portforwarding aktiviert eth0 = untrusted und eth1 trusted"]
    assert forward.rules[4].after == ["Django : end"]
    assert parsed.comments == ["Firewall configuration written by system-config-firewall",
                               "Manual customization of this file is not recommended."]


# --------------------------------------------------------------------------- ifcfg details


def test_ifcfg_values_and_quoting() -> None:
    f = parse_ifcfg('DEVICE="eth1"\nexport MTU=9000\nNAME=\'System eth1\'\nA=b\\ c # comment\n'
                    'B="x\\"y"\nC=\nD=1\nD=2\n', "ifcfg-eth1")
    assert {k: a.value for k, a in f.values.items()} == {
        "DEVICE": "eth1", "MTU": "9000", "NAME": "System eth1", "A": "b c", "B": 'x"y', "C": "", "D": "2"}
    assert lex_value("$(reboot)") == ("$(reboot)", True, None)
    assert lex_value("${X:-$(id)}") == ("${X:-$(id)}", True, None)
    assert lex_value("a b")[2] is not None


def test_ifcfg_addresses_routes_vlans_aliases(tmp_path: Path) -> None:
    d = tmp_path / "network-scripts"
    write(d, "ifcfg-eth0", "DEVICE=eth0\nTYPE=Ethernet\nIPADDR0=192.168.1.5\nNETMASK0=255.255.255.0\n"
          "IPADDR1=10.1.2.3\nGATEWAY=192.168.1.1\nMACADDR=52:54:00:12:34:56\nONBOOT=no\n")
    write(d, "ifcfg-eth0:1", "DEVICE=eth0:1\nIPADDR=192.168.1.6\nPREFIX=24\n")
    write(d, "ifcfg-eth2", "DEVICE=eth2\nHWADDR=52:54:00:aa:bb:cc\n")
    write(d, "ifcfg-eth2.10", "DEVICE=eth2.10\nVLAN=yes\nBRIDGE=br10\nMTU=1500\n")
    write(d, "ifcfg-br10", "DEVICE=br10\nTYPE=Bridge\nSTP=on\nDELAY=15\nIPADDR=172.16.0.1\nPREFIX=24\n"
          "GATEWAY=172.16.0.254\n")
    write(d, "ifcfg-bond0", "DEVICE=bond0\nTYPE=Bond\nBONDING_OPTS=\"mode=1\"\n")
    write(d, "ifcfg-lo", "DEVICE=lo\nIPADDR=127.0.0.1\n")
    write(d, "ifcfg-eth2.bak", "DEVICE=eth2\n")
    write(d, "route-eth0", "ADDRESS0=10.10.0.0\nNETMASK0=255.255.0.0\nGATEWAY0=192.168.1.254\n")
    write(d, "route-eth2", "172.16.0.0/12 via 192.168.1.253 metric 10\n10.9.0.0/16 via 192.168.1.9 src 1.2.3.4\n")
    write(d, "rule-eth0", "from 10.0.0.0/8 table 5\n")
    write(d, "ifup-eth", "#!/bin/bash\nreboot\n")
    text, desired = run_import(ifcfg=d)
    by_name = {i.name: i for i in desired.interfaces}
    assert set(by_name) == {"eth0", "eth2", "eth2.10", "br10", "bond0"}
    eth0 = by_name["eth0"]
    assert eth0.state is AdminState.DOWN and eth0.mac == "52:54:00:12:34:56"
    assert eth0.ipv4 is not None
    assert [str(a) for a in eth0.ipv4.addresses or ()] == ["192.168.1.5/24", "10.1.2.3/8", "192.168.1.6/24"]
    assert by_name["eth2"].type is IfType.ETHERNET and by_name["eth2"].mac is None
    assert by_name["eth2"].match_mac == "52:54:00:aa:bb:cc"
    assert by_name["bond0"].bond is not None and by_name["bond0"].bond.mode == "active-backup"
    vlan = by_name["eth2.10"]
    assert vlan.type is IfType.VLAN and vlan.vlan_base == "eth2" and vlan.vlan_id == 10
    br10 = by_name["br10"]
    assert br10.bridge is not None and br10.bridge.ports == ("eth2.10",)
    assert br10.bridge.stp.enabled is True and br10.bridge.stp.forward_delay == 15
    routes = {(str(r.destination), str(r.next_hop_address), r.next_hop_interface, r.metric) for r in desired.routes}
    assert routes == {("0.0.0.0/0", "172.16.0.254", "br10", None), ("172.16.0.0/12", "192.168.1.253", "eth2", 10)}
    notes = untranslated(text)
    # eth0 is ONBOOT=no, so kept down: the kernel would refuse a route through it
    assert "goes through 'eth0', which is declared down" in notes
    assert "not translated: ifcfg-lo: the loopback device is set up by the kernel" in notes
    assert "not translated: ifcfg-eth2.bak: backup or package leftovers" in notes
    assert [(str(r.source), r.table) for r in desired.route_rules] == [("10.0.0.0/8", 5)]
    assert "not translated: route-eth2:2: 10.9.0.0/16 via 192.168.1.9 src 1.2.3.4" in notes
    assert "IPADDR1=10.1.2.3 has no PREFIX1= or NETMASK1=: /8, the classful default" in notes
    assert "192.168.1.6/24 from ifcfg-eth0:1" in notes
    assert "not translated: route 0.0.0.0/0 via 192.168.1.1 dev eth0 from ifcfg-eth0: the kernel holds one" in notes
    assert "ONBOOT=no: vnetd keeps the device down" in notes
    assert "reboot" not in text  # initscripts' own scripts are not configuration


def test_ifcfg_invalid_values_are_comments(tmp_path: Path) -> None:
    d = tmp_path / "scripts"
    write(d, "ifcfg-br0", "DEVICE=br0\nTYPE=Bridge\nSTP=on\nDELAY=0\nMTU=100000\nMACADDR=01:00:5e:00:00:01\n"
          "IPADDR=10.0.0.1\nPREFIX=33\n")
    write(d, "ifcfg-evil", "DEVICE=\"../../etc/passwd\"\nIPADDR=10.0.0.2\n")
    write(d, "ifcfg-eth9", "DEVICE=eth9\nBRIDGE=nosuchbridge\nIPADDR=10.0.0.3\n")
    write(d, "ifcfg-eth99", "DEVICE=eth9\n")
    text, desired = run_import(ifcfg=d)
    by_name = {i.name: i for i in desired.interfaces}
    assert set(by_name) == {"br0", "eth9"}
    br0 = by_name["br0"]
    assert br0.mtu is None and br0.mac is None and br0.ipv4 is None
    assert br0.bridge is not None and br0.bridge.stp.enabled is True and br0.bridge.stp.forward_delay is None
    notes = untranslated(text)
    assert "not translated: DELAY=0: with STP on the kernel needs a forward delay of 2-30 seconds" in notes
    assert "not translated: MTU=100000: not an MTU" in notes
    assert "not translated: MACADDR=01:00:5e:00:00:01: '01:00:5e:00:00:01' is a multicast address" in notes
    assert "not translated: IPADDR=10.0.0.1 PREFIX=33: not a prefix length" in notes
    assert "not translated: ifcfg-evil: DEVICE: interface name '../../etc/passwd'" in notes
    assert "not translated: BRIDGE=nosuchbridge: there is no ifcfg file for it" in notes
    assert "not translated: IPADDR=10.0.0.3: eth9 is a bridge port" in notes
    assert "not translated: ifcfg-eth99: ifcfg-eth9 already declares eth9" in notes


def test_sysctl_details(tmp_path: Path) -> None:
    path = write(tmp_path, "sysctl.conf", "; semicolon comment\nnet.ipv4.ip_forward=0\n"
                 "-net.ipv4.conf.all.rp_filter = 2\nnet/ipv4/conf/eth0.10/rp_filter = 1\n"
                 "net.ipv4.tcp_rmem = 4096 87380 6291456\nnet.ipv4.conf.*.rp_filter = 1\n"
                 "vm.swappiness = 10\nnot a setting\nnet.ipv4.ip_forward = 1\nnet.core.somaxconn =\n")
    text, desired = run_import(sysctl=path)
    assert {s.key: s.value for s in desired.sysctls} == {
        "net.ipv4.conf.all.rp_filter": "2", "net/ipv4/conf/eth0.10/rp_filter": "1",
        "net.ipv4.tcp_rmem": "4096 87380 6291456", "net.ipv4.ip_forward": "1"}
    notes = untranslated(text)
    assert "not translated: sysctl.conf:2: net.ipv4.ip_forward=0 (set again at line 9" in notes
    assert "sysctl.conf:6: net.ipv4.conf.*.rp_filter = 1" in notes
    assert "not translated: sysctl.conf:7: vm.swappiness = 10 (vnetd manages net.* only" in notes
    assert "not translated: sysctl.conf:8: not a setting" in notes
    assert "not translated: sysctl.conf:10: net.core.somaxconn =" in notes
    assert "semicolon comment" in notes
    parsed = parse_sysctl_conf("kernel.sysrq = 0\n", "x")
    assert parsed.build().entries[0].text.startswith("not translated: x:1: kernel.sysrq = 0")  # type: ignore[union-attr]


def test_combined_import_of_everything(tmp_path: Path) -> None:
    d = state_dir(tmp_path)
    text, _ = run_import(ifcfg=HOST_SCRIPTS, iptables=GATEWAY_IPTABLES, sysctl=GATEWAY_SYSCTL)
    install(d, "50-imported.yaml", text)
    result = vnetd_cli("--state-dir", str(d), "check")
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- the emitter


TRICKY = ["yes", "no", "on", "off", "~", "null", "", " x", "x ", "-", "- x", "-x", "? x", ": x", "x: y", "x #y",
          "#x", "!tag", "&a", "*a", "|", ">", "'q'", '"q"', "%x", "@x", "`x`", "0x1f", "1_000", "1e3", "0o17",
          "52:54:00:12:34:56", "1:20", "2011-08-04", "=", "<<", ".inf", ".nan", "---", "...", "a\tb",
          "a\nb", "\x85", "\u2028", "\ufeff", "\x00", "é", "[a]", "{a: b}", "a,b", "a]b", "x:", "-1", "+1",
          "! -s 10.0.0.0/8 -j DROP", '-m comment --comment "a b"', "-j LOG --log-prefix 'x: '"]


@pytest.mark.parametrize("value", TRICKY)
def test_scalars_round_trip(value: str) -> None:
    doc = E.Mapping()
    seq = E.Sequence()
    seq.add(value)
    flow = E.Mapping(flow=True)
    flow.add(value or "k", value)
    doc.add("list", seq)
    doc.add("flow", flow)
    doc.add(value or "key", value)
    text = E.emit(doc).text
    data = yaml.safe_load(text)
    assert data["list"] == [value] and data["flow"] == {value or "k": value} and data[value or "key"] == value


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_any_text_round_trips_and_comments_stay_comments(value: str, note: str) -> None:
    doc = E.Mapping()
    doc.note(note)
    seq = E.Sequence()
    seq.note(note, wrap=False)
    seq.add(value, comment=note)
    doc.add("items", seq)
    inner = E.Mapping()
    inner.note(note)
    inner.add("v", value, comment=note)
    doc.add("map", inner)
    text = E.emit(doc, E.Comment(note)).text
    assert yaml.safe_load(text) == {"items": [value], "map": {"v": value}}


def test_plain_scalars_where_safe() -> None:
    assert E.scalar("-o eth0 -j MASQUERADE") == "-o eth0 -j MASQUERADE"
    assert E.scalar("eth1") == "eth1" and E.scalar(9000) == "9000" and E.scalar(False) == "false"
    assert E.scalar("52:54:00:12:34:56") == '"52:54:00:12:34:56"'  # YAML 1.1 base 60
    assert E.scalar("52:54:00:0A:FA:3E") == "52:54:00:0A:FA:3E"
    assert E.scalar("yes") == '"yes"' and E.scalar("! -f -j DROP") == '"! -f -j DROP"'
    assert E.scalar('--comment "a b"') == "'--comment \"a b\"'"


def test_emitted_layout_and_spans() -> None:
    doc = E.Mapping()
    seq = E.Sequence()
    item = E.Mapping()
    item.note("about eth1")
    item.add("name", "eth1")
    stp = E.Mapping(flow=True)
    stp.add("enabled", False)
    stp.add("forward-delay", 0)
    opts = E.Mapping()
    opts.add("stp", stp)
    item.add("bridge", opts)
    ref = object()
    seq.add(item, ref=ref)
    doc.add("interfaces", seq)
    out = E.emit(doc)
    assert out.text == ("interfaces:\n# about eth1\n- name: eth1\n  bridge:\n"
                        "    stp: {enabled: false, forward-delay: 0}\n")
    assert out.ref_at(3) is ref and out.ref_at(5) is ref and out.ref_at(2) is None


def test_imported_type_matches_nothing_unexpected() -> None:
    """Imported(...) with nothing gives an empty but valid document."""
    text, desired = translate(Imported(), STAMP)
    assert desired.interfaces == () and text.startswith("# vnetd state file")


def test_dmz_guest_equals_the_bundled_example(tmp_path: Path) -> None:
    """The article's DMZ guest (10.0.0.20/24, default gateway 10.0.0.10) written as ifcfg-eth0."""
    d = tmp_path / "network-scripts"
    write(d, "ifcfg-eth0", 'DEVICE="eth0"\nONBOOT=yes\nTYPE=Ethernet\nBOOTPROTO=none\nIPADDR=10.0.0.20\n'
          "NETMASK=255.255.255.0\nGATEWAY=10.0.0.10\n")
    _, imported = run_import(ifcfg=d)
    example = load_sources([SourceFile(str(p), p.read_text())
                            for p in sorted((ROOT / "etc" / "examples" / "dmz-guest").glob("*.yaml"))])
    assert imported.interfaces == example.interfaces
    assert imported.routes == example.routes


def test_every_complaint_of_check_about_one_item_is_kept() -> None:
    """A draft the loader refuses for two reasons becomes one comment with both messages."""
    from vnetd.importer.ifcfg import IfcfgImport, InterfaceDraft

    ifcfg = IfcfgImport("/nowhere")
    ifcfg.interfaces.append(InterfaceDraft("eth0", "ethernet", "ifcfg-eth0", 0, mtu=10, mac="01:00:00:00:00:00"))
    text, desired = translate(Imported(ifcfg=ifcfg), STAMP)
    assert desired.interfaces == ()
    notes = untranslated(text)
    assert "not translated: interface eth0 from ifcfg-eth0: vnetd check refuses it: interfaces[0].mtu" in notes
    assert "interfaces[0].mac-address: '01:00:00:00:00:00' is a multicast address" in notes


def test_a_merge_chain_ending_with_a_catch_all_is_appended(tmp_path: Path) -> None:
    """libvirt inserts its DHCP/DNS/NAT rules at the top of INPUT/FORWARD: an imported chain that
    shares them ends with a REJECT that must stay below them (issue 14)."""
    path = write(tmp_path, "iptables", """\
*filter
:INPUT ACCEPT [0:0]
-A INPUT -i virbr0 -p udp -m udp --dport 67 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -j REJECT --reject-with icmp-host-prohibited
COMMIT
""")
    text, desired = run_import(iptables=path)
    (chain,) = desired.chains
    assert chain.mode.value == "merge" and chain.rules == ()
    assert [r.text for r in chain.tail] == ["-p tcp -m tcp --dport 22 -j ACCEPT",
                                            "-j REJECT --reject-with icmp-host-prohibited"]
    assert "position: append" in text and "must stay below the rules libvirt inserts" in untranslated(text)


# --------------------------------------------------------------------------- a modern RHEL host (issue 14)


RHEL_BOND = {
    # as the RHEL 7 networking guide writes them
    "ifcfg-bond0": 'DEVICE=bond0\nNAME=bond0\nTYPE=Bond\nBONDING_MASTER=yes\nONBOOT=yes\nBOOTPROTO=none\n'
                   'BONDING_OPTS="mode=802.3ad miimon=100 lacp_rate=fast xmit_hash_policy=layer3+4 fail_over_mac=1"\n'
                   'MTU=9000\nNM_CONTROLLED=no\n',
    "ifcfg-eth0": 'DEVICE=eth0\nNAME=bond0-slave0\nTYPE=Ethernet\nBOOTPROTO=none\nONBOOT=yes\nMASTER=bond0\n'
                  'SLAVE=yes\nHWADDR=52:54:00:aa:00:01\nMTU=9000\n',
    "ifcfg-eth1": 'DEVICE=eth1\nNAME=bond0-slave1\nTYPE=Ethernet\nBOOTPROTO=none\nONBOOT=yes\nMASTER=bond0\n'
                  'SLAVE=yes\nHWADDR=52:54:00:aa:00:02\nIPADDR=10.9.9.9\n',
    "ifcfg-bond0.100": 'DEVICE=bond0.100\nBOOTPROTO=none\nONBOOT=yes\nVLAN=yes\nBRIDGE=br100\nREORDER_HDR=no\n',
    "ifcfg-vlan200": 'DEVICE=vlan200\nPHYSDEV=bond0\nVLAN=yes\nVLAN_NAME_TYPE=VLAN_PLUS_VID_NO_PAD\n'
                     'BOOTPROTO=none\nONBOOT=yes\nBRIDGE=br200\n',
    "ifcfg-br100": 'DEVICE=br100\nTYPE=Bridge\nONBOOT=yes\nBOOTPROTO=none\nIPADDR=192.168.100.2\nPREFIX=24\n'
                   'IPV6INIT=yes\nIPV6_AUTOCONF=no\nIPV6ADDR=2001:db8:100::2/64\n',
    "ifcfg-br200": 'DEVICE=br200\nTYPE=Bridge\nONBOOT=yes\nBOOTPROTO=none\n',
    "ifcfg-em3": 'DEVICE=em3\nTYPE=Ethernet\nONBOOT=yes\nBOOTPROTO=dhcp\nIPV6INIT=yes\nDHCPV6C=yes\n'
                 'HWADDR=52:54:00:aa:00:03\nPEERDNS=yes\n',
    "route-br100": "default via 192.168.100.1 table 100\n",
    "rule-br100": "from 192.168.100.2 table 100 priority 1000\nto 10.0.0.0/8 table main pref 1001\n"
                  "iif br200 fwmark 0x10/0xff prohibit\nnot from 192.0.2.0/24 table 5\nfrom all lookup mgmt\n",
    "rule6-br100": "from 2001:db8:100::/64 table 100 priority 1000\n",
}


def test_a_bonded_vlan_host_with_policy_routing_and_dhcp(tmp_path: Path) -> None:
    d = tmp_path / "network-scripts"
    for name, text in RHEL_BOND.items():
        write(d, name, text)
    text, desired = run_import(ifcfg=d)
    by_name = {i.name: i for i in desired.interfaces}
    assert set(by_name) == {"eth0", "eth1", "bond0", "bond0.100", "vlan200", "br100", "br200", "em3"}
    bond0 = by_name["bond0"]
    assert bond0.type is IfType.BOND and bond0.mtu == 9000 and bond0.bond is not None
    assert bond0.bond.mode == "802.3ad" and bond0.bond.ports == ("eth0", "eth1")
    assert dict(bond0.bond.options) == {"miimon": 100, "lacp_rate": 1, "xmit_hash_policy": 1, "fail_over_mac": 1}
    for port, mac in (("eth0", "52:54:00:aa:00:01"), ("eth1", "52:54:00:aa:00:02")):
        assert by_name[port].match_mac == mac and by_name[port].ipv4 is None  # a port has no address
    vlan100, vlan200 = by_name["bond0.100"], by_name["vlan200"]
    assert (vlan100.vlan_base, vlan100.vlan_id, vlan200.vlan_base, vlan200.vlan_id) == ("bond0", 100, "bond0", 200)
    assert vlan100.vlan is not None and vlan100.vlan.reorder_headers is False
    br100 = by_name["br100"]
    assert br100.bridge is not None and br100.bridge.ports == ("bond0.100",)
    assert br100.ipv6 is not None and not br100.ipv6.foreign  # IPV6_AUTOCONF=no: static only
    assert [str(a) for a in br100.ipv6.addresses or ()] == ["2001:db8:100::2/64"]
    em3 = by_name["em3"]
    assert em3.ipv4 is not None and em3.ipv4.dhcp and em3.ipv6 is not None and em3.ipv6.dhcp and em3.ipv6.autoconf
    assert [(str(r.destination), r.table_id) for r in desired.routes] == [("0.0.0.0/0", 100)]
    rules = [(r.family, str(r.source), str(r.destination), r.table_id, r.priority, r.iif, r.fwmark, r.fwmask,
              r.action) for r in desired.route_rules]
    assert rules == [
        (4, "192.168.100.2/32", "None", 100, 1000, None, None, None, None),
        (4, "None", "10.0.0.0/8", 254, 1001, None, None, None, None),
        (4, "None", "None", 0, None, "br200", 16, 255, "prohibit"),
        (6, "2001:db8:100::/64", "None", 100, 1000, None, None, None, None)]
    notes = untranslated(text)
    assert "not translated: rule-br100:4: not from 192.0.2.0/24 table 5 ('not' (an inverted selector) has no " \
           "nmstate equivalent)" in notes
    assert "not translated: rule-br100:5: from all lookup mgmt (table 'mgmt': vnetd takes table numbers" in notes
    assert "not translated: IPADDR=10.9.9.9: eth1 is a bond port (MASTER=), which initscripts gives no address" \
        in notes
    assert "a port of bond0 (MASTER=bond0 SLAVE=yes): listed under bond0's link-aggregation.port" in notes
    assert "VLAN_NAME_TYPE=VLAN_PLUS_VID_NO_PAD" in notes
    names = re.findall(r"^- name: (\S+)$", text, re.M)
    assert names.index("eth0") < names.index("bond0") < names.index("bond0.100") < names.index("br100")


@pytest.mark.parametrize(("opts", "mode", "options", "note"), [
    ("mode=1 miimon=100 primary=eth0", "active-backup", {"miimon": 100, "primary": "eth0"}, None),
    ("mode=balance-alb miimon=100 lacp_rate=1", "balance-alb", {"miimon": 100},
     "BONDING_OPTS lacp_rate=1: the kernel takes it in the modes 802.3ad only"),
    ("mode=0 arp_interval=1000 arp_ip_target=+192.0.2.1 arp_ip_target=+192.0.2.2", "balance-rr",
     {"arp_interval": 1000, "arp_ip_target": ("192.0.2.1", "192.0.2.2")}, None),
    ("mode=4 ad_select=bandwidth downdelay=x", "802.3ad", {"ad_select": 1},
     "BONDING_OPTS downdelay=x: not a number"),
    ("mode=4 max_bonds=2", "802.3ad", {}, "BONDING_OPTS max_bonds=2: not an option vnetd manages"),
    ("mode=9", None, {}, "BONDING_OPTS mode=9: not a bond mode"),
], ids=["active-backup", "option-of-another-mode", "arp-targets", "bad-number", "module-option", "bad-mode"])
def test_bonding_opts(tmp_path: Path, opts: str, mode: str | None, options: dict[str, object],
                      note: str | None) -> None:
    d = tmp_path / "scripts"
    write(d, "ifcfg-bond0", f'DEVICE=bond0\nTYPE=Bond\nBONDING_OPTS="{opts}"\n')
    write(d, "ifcfg-eth0", "DEVICE=eth0\nMASTER=bond0\nSLAVE=yes\n")
    text, desired = run_import(ifcfg=d)
    bond0 = next(i for i in desired.interfaces if i.name == "bond0")
    assert bond0.bond is not None and bond0.bond.mode == mode and dict(bond0.bond.options) == options
    assert bond0.bond.ports == ("eth0",)
    if note:
        assert f"not translated: {note}" in untranslated(text)


def test_hwaddr_and_macaddr_together(tmp_path: Path) -> None:
    d = tmp_path / "scripts"
    write(d, "ifcfg-eth0", "DEVICE=eth0\nHWADDR=52:54:00:aa:00:01\nMACADDR=02:00:00:00:00:01\n")
    write(d, "ifcfg-eth9", "DEVICE=eth9\nHWADDR=zz:54:00:aa:00:01\n")
    text, desired = run_import(ifcfg=d)
    eth0, eth9 = desired.interfaces
    assert eth0.match_mac == "52:54:00:aa:00:01" and eth0.mac is None
    assert eth9.match_mac is None
    notes = untranslated(text)
    assert "not translated: MACADDR=02:00:00:00:00:01: with HWADDR the NIC is found by its MAC" in notes
    assert "not translated: HWADDR=zz:54:00:aa:00:01: 'zz:54:00:aa:00:01' is not a MAC address" in notes


@pytest.mark.parametrize("value", ["9" * 5000, "\u00b2", "0x" + "f" * 5000])
def test_huge_or_unicode_numbers_are_comments_not_crashes(tmp_path: Path, value: str) -> None:
    d = tmp_path / "scripts"
    write(d, "ifcfg-bond0", f'DEVICE=bond0\nTYPE=Bond\nMTU={value}\nBONDING_OPTS="mode={value} miimon={value}"\n')
    write(d, "ifcfg-eth0.5", f"DEVICE=eth0.5\nVLAN=yes\nVLAN_ID={value}\nIPADDR=192.0.2.1\nPREFIX={value}\n")
    write(d, "route-bond0", f"10.0.0.0/8 via 192.0.2.254 metric {value} table {value}\n")
    write(d, "rule-bond0", f"from 192.0.2.0/24 table {value} pref {value}\nfwmark {value} table 5\n")
    text, desired = run_import(ifcfg=d)
    assert [i.name for i in desired.interfaces] == ["bond0"] and not desired.routes and not desired.route_rules
    assert text.count("not translated:") >= 6


def test_huge_rule_numbers_and_address_suffixes_are_comments_not_crashes(tmp_path: Path) -> None:
    """int() of more than 4,300 digits raises: a hostile or corrupt file must not kill the import."""
    rules = tmp_path / "iptables"
    rules.write_text("*filter\n:INPUT ACCEPT [0:0]\n"
                     f"-I INPUT {'9' * 5000} -p tcp --dport 22 -j ACCEPT\n"
                     "-I INPUT 1 -p tcp --dport 80 -j ACCEPT\nCOMMIT\n")
    d = tmp_path / "scripts"
    write(d, "ifcfg-eth0", f"DEVICE=eth0\nIPADDR=192.0.2.1\nPREFIX=24\nIPADDR{'1' * 5000}=192.0.2.2\n")
    write(d, "route-eth0", f"ADDRESS{'2' * 5000}=10.0.0.0\nNETMASK{'2' * 5000}=255.0.0.0\n")
    text, desired = run_import(ifcfg=d, iptables=rules)
    (chain,) = desired.chains
    assert [r.text for r in chain.rules] == ["-p tcp --dport 80 -j ACCEPT"]
    assert "rule number 999999999999... is out of range" in comments(text)
    assert [i.name for i in desired.interfaces] == ["eth0"]
