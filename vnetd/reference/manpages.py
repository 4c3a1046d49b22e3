# SPDX-License-Identifier: MIT
"""vnetd(8) from the command line's parser, vnetd.d(5) from the loader's schema tables."""

from __future__ import annotations

import argparse

from vnetd import __version__, cli
from vnetd.desired import schema
from vnetd.desired.schema import Field, Table
from vnetd.reference.roff import Page, bold, escape, italic
from vnetd.reference.schema_doc import files_text

SOURCE = f"vnetd {__version__}"

#: vnetd.d(5)'s example: the article's host (tests/unit/test_reference.py loads it)
EXAMPLE = """\
# /etc/vnetd.d/10-uplink-br0.yaml: the uplink bridge br0 over the NIC eth1
interfaces:
- name: eth1
  type: ethernet
  mtu: 9000
- name: br0
  type: linux-bridge
  mtu: 9000
  ipv4:
    enabled: true
    address: [192.168.10.212/24]
  bridge:
    options:
      stp: {enabled: false, forward-delay: 0}
    port:
    - name: eth1
routes:
  config:
  - destination: 0.0.0.0/0
    next-hop-address: 192.168.10.1
    next-hop-interface: br0
sysctl:
  net.ipv4.ip_forward: 1
firewall:
  filter:
    FORWARD:
      rules:
      - -m physdev --physdev-is-bridged -j ACCEPT
      - '-m comment --comment "guests to the world" -i br0 -j ACCEPT'
"""


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """An option as its --help shows it (``--format {text,json}``), in roff."""
    text = parser._get_formatter()._format_action_invocation(action)
    return ", ".join(_bold_flags(part) for part in text.split(", "))


def _bold_flags(part: str) -> str:
    flag, _, arg = part.partition(" ")
    if not flag.startswith("-"):
        return italic(part)
    return bold(flag) + (" " + italic(arg) if arg else "")


def _options(page: Page, parser: argparse.ArgumentParser, skip: set[str]) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        if action.dest.startswith(cli._AFTER) or action.dest in skip:
            continue
        page.item(_invocation(parser, action), action.help or "")


def _examples(page: Page, command: str) -> None:
    for line, what in cli.EXAMPLES[command]:
        page.item(bold(line), what[0].upper() + what[1:] + ".")


def vnetd_8() -> str:
    parser = cli.build_parser()
    page = Page("vnetd", 8, SOURCE, "System Administration")
    page.section("name")
    page.raw(escape("vnetd - keep a KVM/libvirt host's network as its state files declare it"))
    page.section("synopsis")
    page.raw(f"{bold('vnetd')} [{italic('global options')}] {italic('command')} [{italic('options')}]")
    page.section("description")
    page.paragraph(cli.DESCRIPTION)
    page.section("global options")
    page.paragraph("Accepted before or after the command; the same option given in both places with different "
                   "values is an error.")
    _options(page, parser, {"command"})
    page.section("commands")
    for name, sub in _subparsers(parser).items():
        page.subsection(f"vnetd {name}")
        usage = " ".join(sub.format_usage().removeprefix("usage: ").split())
        page.raw(escape(usage))
        page.paragraph(sub.description or "")
        _options(page, sub, set())
        page.raw(".PP")
        page.raw("Examples:")
        _examples(page, name)
    page.section("exit status")
    page.paragraph(cli.EPILOG.split("\n\n")[0])
    page.section("environment")
    page.item(bold("VNETD_STATE_DIR"), f"The state directory when --state-dir is not given (default "
                                       f"{cli.DEFAULT_STATE_DIR}).")
    page.section("files")
    page.item(italic(cli.DEFAULT_STATE_DIR), "The state files; see vnetd.d(5).")
    page.item(italic("/run/vnetd/vnetd.sock"), "The daemon's control socket (vnetd status).")
    page.section("examples")
    _examples(page, "")
    page.section("see also")
    page.raw(", ".join(f"{bold(n)}({s})" for n, s in (("vnetd.d", 5), ("ip", 8), ("iptables", 8),
                                                         ("iptables-save", 8), ("virsh", 1))))
    return page.render()


def _field_term(f: Field) -> str:
    return bold(f.key)


def _type(f: Field) -> str:
    """The type, naming the subsection a mapping or a list of mappings is described in."""
    if f.table is not None and f.kind is schema.Kind.MAPPING:
        return f"mapping: {f.table.path}"
    if f.table is not None and f.kind is schema.Kind.LIST:
        return f"list of {f.table.path}" + (f" or {f.item}" if f.item else "")
    return f.type_text


def _field_text(f: Field) -> str:
    facts = [_type(f)]
    if f.required:
        facts.append("required")
    if f.default:
        facts.append(f"default {f.default}")
    facts.append(f.origin)
    text = f"({'; '.join(facts)}) {f.description}"
    if f.example:
        text += f" Example: {f.example}"
    return text


def _table(page: Page, table: Table) -> None:
    page.subsection(table.path or "top level")
    page.paragraph(table.description)
    if table.free is not None:
        takes = f"mapping: {table.free.table.path}" if table.free.table is not None else table.free.kind.value
        page.item(italic(table.free.placeholder), f"({takes}; vnetd) {table.free.description}")
    for f in table.fields:
        page.item(_field_term(f), _field_text(f))


def vnetd_d_5() -> str:
    page = Page("vnetd.d", 5, SOURCE, "File Formats")
    page.section("name")
    page.raw(escape("vnetd.d - vnetd's state files: the network a host should have, in YAML"))
    page.section("synopsis")
    page.raw(italic(f"{cli.DEFAULT_STATE_DIR}/*.yaml"))
    page.section("description")
    page.paragraph(files_text(lambda s: s))
    page.paragraph("Each key below is either nmstate's (the same meaning as in nmstate's schema) or vnetd's "
                   "own. An unknown key is an error that names the valid keys and the closest one; "
                   "`vnetd check` reports every error of every file with FILE:LINE and the key's path.")
    page.section("keys")
    for table in schema.tables():
        _table(page, table)
    page.section("example")
    page.example(EXAMPLE.rstrip("\n").splitlines())
    page.section("see also")
    page.raw(", ".join(f"{bold(n)}({s})" for n, s in (("vnetd", 8), ("nmstatectl", 8), ("iptables-save", 8),
                                                         ("sysctl.conf", 5))))
    page.paragraph("docs/SCHEMA.md (the same reference as Markdown), docs/OPERATIONS.md.")
    return page.render()
