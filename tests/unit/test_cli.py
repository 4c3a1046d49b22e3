# SPDX-License-Identifier: MIT
"""The command line teaches: every command's --help describes each option and ends
with examples that are valid command lines; the global options are accepted before
and after the command, and giving one in both places with different values is an
error, not a silent choice. Pure: the parser only (tests/integration/test_cli.py
runs the commands).
"""

from __future__ import annotations

import argparse
import shlex

import pytest

from vnetd import cli, show


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def example_argv(line: str) -> list[str]:
    words = shlex.split(line)
    assert words[0] == "vnetd", line
    words = words[1:]
    for stop in (">", "|"):
        if stop in words:
            words = words[: words.index(stop)]
    return words


def test_every_command_has_examples_and_a_description() -> None:
    commands = subparsers()
    assert set(commands) == set(cli.EXAMPLES) - {""}
    for name, parser in commands.items():
        assert parser.description and len(parser.description) > 40, name
        assert 2 <= len(cli.EXAMPLES[name]) <= 3, name
        helptext = parser.format_help()
        assert helptext.rstrip().endswith(cli.EXAMPLES[name][-1][1]), f"{name}: --help must end with its examples"
        for line, what in cli.EXAMPLES[name]:
            assert f"  {line}\n      {what}\n" in helptext


def test_top_level_help_ends_with_examples() -> None:
    helptext = cli.build_parser().format_help()
    assert "examples:\n" in helptext
    assert helptext.rstrip().endswith(cli.EXAMPLES[""][-1][1])


def test_every_option_is_described() -> None:
    for name, parser in {"": cli.build_parser(), **subparsers()}.items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, f"vnetd {name} {action.option_strings}"


@pytest.mark.parametrize("line", sorted({line for examples in cli.EXAMPLES.values() for line, _ in examples}))
def test_every_example_is_a_valid_command_line(line: str) -> None:
    args = cli.parse_args(example_argv(line))
    assert args.command == example_argv(line)[0]


@pytest.mark.parametrize("argv", [
    ["--netns", "ns1", "check"],
    ["check", "--netns", "ns1"],
    ["--netns", "ns1", "check", "--netns", "ns1"],  # the same value twice: no conflict
])
def test_global_options_before_or_after_the_command(argv: list[str]) -> None:
    args = cli.parse_args(argv)
    assert args.netns == "ns1" and args.command == "check"


@pytest.mark.parametrize("command", sorted(subparsers()))
def test_every_global_option_is_accepted_after_every_command(command: str) -> None:
    args = cli.parse_args([command, "--state-dir", "/srv/x", "--netns", "n", "--log-format", "json",
                           "--log-level", "debug"])
    assert (args.state_dir, args.netns, args.log_format, args.log_level) == ("/srv/x", "n", "json", "debug")
    assert not [k for k in vars(args) if k.startswith(cli._AFTER)]


def test_a_global_option_given_twice_with_different_values_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--state-dir", "/a", "plan", "--state-dir", "/b"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--state-dir is given before the command (/a) and after it (/b); give it once" in err


def test_the_state_dir_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VNETD_STATE_DIR", raising=False)
    assert cli.parse_args(["check"]).state_dir == "/etc/vnetd.d"
    monkeypatch.setenv("VNETD_STATE_DIR", "/srv/state")
    assert cli.parse_args(["check"]).state_dir == "/srv/state"
    assert cli.parse_args(["check", "--state-dir", "/x"]).state_dir == "/x"


def test_show_takes_names_and_sections() -> None:
    args = cli.parse_args(["show", "br0", "FORWARD", "--section", "interfaces", "--section", "firewall"])
    assert args.names == ["br0", "FORWARD"] and args.section == ["interfaces", "firewall"]
    assert cli.parse_args(["show"]).section is None
    assert cli.SHOW_SECTIONS == show.SECTIONS
    with pytest.raises(SystemExit):
        cli.parse_args(["show", "--section", "firewal"])
