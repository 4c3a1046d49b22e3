# SPDX-License-Identifier: MIT
"""The ``vnetd`` command line (SPEC section 3).

Each command imports only what it uses: ``check`` never loads pyroute2 or
python-iptables, ``plan`` loads python-iptables only when firewall rules are
declared or vnetd's tagged rules are in the kernel.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from vnetd import __version__
from vnetd.errors import BackendError, ConfigError, DriftError, NamespaceError, VnetdError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_NOT_RUNNING = 3
EXIT_ROLLED_BACK = 4
#: the event of the warnings ``plan`` and ``apply`` print themselves (``vnetd.plan.shadowing.SHADOWED``)
SHADOWED = "firewall.shadowed:"

DESCRIPTION = """\
vnetd keeps a host's network as its state files declare it: links, bridges and
their ports, MTUs, addresses, routes, network sysctls, iptables and ip6tables rules
and libvirt networks. State files are YAML drop-ins in the state directory (nmstate
schema for interfaces, routes and route-rules, plus sysctl:, firewall:, firewall6:
and libvirt: sections; the reference is docs/SCHEMA.md and vnetd.d(5)).
"""

EPILOG = """\
exit status: check 0 valid / 1 invalid; plan 0 nothing to do / 2 changes pending /
1 error; apply 0 converged and verified / 1 not (with --confirm: 0 confirmed /
4 rolled back / 1 error); confirm, rollback 0 done / 1 no trial; status 0 ok /
1 running but degraded (last load failed, resources failing or backed off,
other tools' firewall rules override vnetd's: firewall.shadowed) /
3 not running / 4 unknown; reload 0 reloaded / 1 invalid files (the last
valid state stays) / 3 not running; run 0 after SIGTERM / 1 refused to start.

A state file that disappears (or is emptied) while the daemon runs is not a
decision: what it declared stays enforced (logged as config.file_removed) until
`vnetd reload`, SIGHUP or `vnetd apply` confirms the removal. Write state files
atomically (write a temporary file, then rename it into place).

The global options may also be given after the command (vnetd check --netns x).
`vnetd COMMAND --help` describes a command, its options and examples.
"""

#: (command line, what it does): two or three per command, shown at the end of its
#: --help and in vnetd(8); tests/unit/test_cli.py parses every one
EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "": (
        ("vnetd check", "validate the state files in /etc/vnetd.d"),
        ("vnetd plan", "show what apply would change, changing nothing"),
        ("vnetd apply --confirm 120", "apply, and restore what was there unless `vnetd confirm` comes within "
                                      "2 minutes"),
    ),
    "check": (
        ("vnetd check", "validate the state files in /etc/vnetd.d"),
        ("vnetd check --state-dir ./staging", "validate a copy before installing it"),
        ("vnetd check --netns guest1", "also check the rules against the chains and kernel of namespace guest1"),
    ),
    "plan": (
        ("vnetd plan", "what apply would change here"),
        ("vnetd plan --state-dir ./staging", "what new files would change, before installing them"),
        ("vnetd plan --format json", "the same as JSON, for tools"),
    ),
    "apply": (
        ("vnetd apply", "reconcile once and verify"),
        ("vnetd apply --confirm 120", "a trial: restored after 120 s unless `vnetd confirm` (or Enter) comes"),
        ("vnetd apply --format json", "what was applied, failed and still differs, as JSON"),
    ),
    "confirm": (
        ("vnetd confirm", "keep the change of the pending `apply --confirm`"),
        ("vnetd confirm --netns guest1", "keep a trial that runs in namespace guest1"),
    ),
    "rollback": (
        ("vnetd rollback", "undo the change of the pending `apply --confirm` now"),
        ("vnetd rollback --netns guest1", "undo a trial that runs in namespace guest1"),
    ),
    "run": (
        ("vnetd run", "the daemon in the foreground (systemd)"),
        ("vnetd run --daemon --pidfile /run/vnetd.pid --log-file /var/log/vnetd.log", "detached (SysV init)"),
        ("vnetd run --netns guest1 --socket /run/vnetd/guest1.sock", "a daemon for namespace guest1"),
    ),
    "show": (
        ("vnetd show > current.yaml", "the whole current state, as a state file"),
        ("vnetd show br0 FORWARD", "only interface br0 (and its routes) and the FORWARD chains"),
        ("vnetd show --section firewall", "only the firewall section"),
    ),
    "status": (
        ("vnetd status", "what the daemon manages and how each resource stands"),
        ("vnetd status --json", "the same as JSON"),
        ("vnetd status --prometheus", "metrics in Prometheus text format"),
    ),
    "reload": (
        ("vnetd reload", "re-read the state files now and confirm the removal of files that disappeared"),
        ("vnetd reload --socket /run/vnetd/guest1.sock", "the same for the daemon of namespace guest1"),
    ),
    "import": (
        ("vnetd import --ifcfg-dir /etc/sysconfig/network-scripts -o 50-network.yaml",
         "translate ifcfg-* files into a state file"),
        ("vnetd import --iptables /etc/sysconfig/iptables --sysctl /etc/sysctl.conf",
         "translate the firewall and the net.* sysctls"),
        ("vnetd import --ip6tables /etc/sysconfig/ip6tables", "translate the IPv6 firewall (firewall6:)"),
    ),
    "demo": (
        ("vnetd demo", "the daemon on the bundled examples in a throw-away namespace, until Ctrl-C"),
        ("vnetd demo --duration 60", "the same for one minute"),
    ),
}

#: the options every command takes, before or after it: (flags, dest, settings)
GLOBAL_OPTIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--state-dir", "state_dir", {"metavar": "DIR", "help": "directory of *.yaml state files (default: "
                                  "$VNETD_STATE_DIR or /etc/vnetd.d)"}),
    ("--netns", "netns", {"metavar": "NAME", "help": "operate inside the named network namespace (as created by "
                          "`ip netns add NAME`)"}),
    ("--log-format", "log_format", {"choices": ("json", "console"),
                                    "help": "log format (default: console on a terminal, json otherwise)"}),
    ("--log-level", "log_level", {"choices": ("debug", "info", "warning", "error"),
                                  "help": "log level (default: info for run and demo, warning for the other "
                                          "commands)"}),
)
DEFAULT_STATE_DIR = "/etc/vnetd.d"
_AFTER = "_after_command_"

#: what `vnetd show --section` can print (vnetd.show.SECTIONS: tests/unit/test_cli.py keeps them equal)
SHOW_SECTIONS = ("interfaces", "routes", "route-rules", "sysctl", "firewall", "firewall6", "libvirt")


def paragraphs(text: str, width: int = 79) -> str:
    """Each blank-line-separated paragraph filled to ``width`` (help is read on terminals)."""
    return "\n\n".join(textwrap.fill(" ".join(p.split()), width) for p in text.split("\n\n"))


def examples_epilog(command: str) -> str:
    lines = ["examples:"]
    for line, what in EXAMPLES[command]:
        lines += [f"  {line}", f"      {what}"]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vnetd", description=DESCRIPTION,
                                epilog=EPILOG + "\n" + examples_epilog(""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"vnetd {__version__}")
    for flag, dest, settings in GLOBAL_OPTIONS:
        p.add_argument(flag, dest=dest, **settings)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=paragraphs(description), epilog=examples_epilog(name),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    command("check", "validate the state files and print every error",
            "Validate the state files: every error of every file, with FILE:LINE, the field and what would be\n"
            "valid; rules are compiled as iptables would and tried in a throw-away namespace for what only\n"
            "the kernel checks. Nothing is changed. Exit status 0 valid, 1 invalid.")

    plan = command("plan", "print what would change; nothing is changed",
                   "Compare the state files with the system and print each change apply would make (new\n"
                   "links with their settings, the rules a chain gets and loses, the addresses added and\n"
                   "removed) and the problems vnetd cannot fix. Nothing is changed. Exit status 0 nothing\n"
                   "to do, 2 changes pending, 1 error.")
    plan.add_argument("--format", choices=("text", "json"), default="text",
                      help="text for people (default), json for tools")

    apply = command("apply", "reconcile once, verify, print what changed",
                    "Make the system match the state files, read it back and verify: what still differs\n"
                    "is printed as a desired/current diff. Exit status 0 converged and verified, 1 not;\n"
                    "with --confirm 0 confirmed, 4 rolled back, 1 error.")
    apply.add_argument("--format", choices=("text", "json"), default="text",
                       help="text for people (default), json for tools")
    apply.add_argument("--confirm", type=float, metavar="SECONDS",
                       help="try the change: keep it only if `vnetd confirm` (or Enter) comes within SECONDS; "
                            "a timeout, Ctrl-C, a lost terminal or a failed health probe restores what was "
                            "there before; a daemon running in the namespace pauses until the trial ends")

    command("confirm", "keep the change of a pending `apply --confirm` trial",
            "Keep the change of the pending `vnetd apply --confirm` trial. Exit status 0 done, 1 no trial.")
    command("rollback", "undo the change of a pending `apply --confirm` trial now",
            "Undo the change of the pending `vnetd apply --confirm` trial now: what the trial's checkpoint\n"
            "recorded is put back. Exit status 0 done, 1 no trial.")

    run = command("run", "run the daemon (foreground unless --daemon); one per network namespace",
                  "Run the daemon: it applies the state files, then repairs every drift (netlink events,\n"
                  "a periodic check of what sends none) and re-reads the files when they change, until\n"
                  "SIGTERM. SIGHUP (or `vnetd reload`) re-reads the files.\n\n"
                  "Only one vnetd runs per network namespace (a lock in /run/vnetd names the pid holding\n"
                  "it). The pidfile, log file and socket are never opened through a symlink, and only in\n"
                  "directories only root can write. Exit status 0 after SIGTERM, 1 refused to start.")
    run.add_argument("--pidfile", metavar="PATH", help="write the daemon's pid here (locked while it runs)")
    run.add_argument("--daemon", action="store_true", help="detach from the terminal (for SysV init)")
    run.add_argument("--log-file", metavar="PATH", help="log to this file (reopened after logrotate)")
    run.add_argument("--socket", metavar="PATH", default="/run/vnetd/vnetd.sock",
                     help="control socket for `vnetd status` and `vnetd reload` (default "
                          "/run/vnetd/vnetd.sock); an existing path is replaced only if it is a stale socket")
    run.add_argument("--check-interval", type=float, default=1.0, metavar="SECONDS",
                     help="how often what sends no events is checked: the legacy netfilter tables, "
                     "sysctls, libvirt's autostart (the iptables-nft backend sends events) (default 1)")
    run.add_argument("--resync-interval", type=float, default=60.0, metavar="SECONDS",
                     help="how often everything is read in full (default 60)")
    run.add_argument("--metrics-listen", metavar="ADDR:PORT",
                     help="serve Prometheus metrics on this loopback address, e.g. 127.0.0.1:9714 or "
                          "localhost:9714 (off by default)")
    run.add_argument("--conflict-repairs", type=int, default=5, metavar="N",
                     help="a resource repaired more than N times in 60 s is being fought over: back off "
                          "(default 5; 0 never backs off)")
    run.add_argument("--observe", action=argparse.BooleanOptionalAction, default=None,
                     help="observe only: load, watch, plan and log drift.detected with what would be done, "
                          "change nothing (--no-observe: enforce even if a state file sets "
                          "`daemon: {observe: true}`; without either, that setting decides)")

    show = command("show", "print the current state as a valid state file",
                   "Print the current state as a state file: fed back, it plans nothing. Other tools'\n"
                   "rules, chains and tables are shown as comments. NAMEs narrow it down to those\n"
                   "interfaces (with the routes through them), chains (CHAIN or TABLE/CHAIN), sysctl keys\n"
                   "and libvirt networks.")
    show.add_argument("names", nargs="*", metavar="NAME",
                      help="only these interfaces, chains, sysctl keys or libvirt networks")
    show.add_argument("--section", action="append", choices=SHOW_SECTIONS, metavar="SECTION",
                      help=f"only this section ({', '.join(SHOW_SECTIONS)}); may be repeated")

    status = command("status", "ask the running daemon what it manages and how it stands",
                     "Ask the running daemon (root only) what it manages and how each resource stands,\n"
                     "whether it only observes, whether an `apply --confirm` trial is pending (who, since\n"
                     "when, until when, what it changes) and whether state files were refused after a\n"
                     "rollback.\n"
                     "Exit status: 0 ok; 1 running but degraded (the last load of the state files failed,\n"
                     "resources are failing or backed off, or firewall chains or rules of other tools\n"
                     "override vnetd's rules (firewall.shadowed): the reasons go to stderr); 3 not running;\n"
                     "4 status unknown (permission denied). --prometheus exits 0 whenever the daemon\n"
                     "answers (the metrics carry the state).")
    status.add_argument("--socket", metavar="PATH", default="/run/vnetd/vnetd.sock",
                        help="the daemon's control socket (default /run/vnetd/vnetd.sock)")
    fmt = status.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable status")
    fmt.add_argument("--prometheus", action="store_true", help="metrics in Prometheus text format")

    reload = command("reload", "ask the running daemon to re-read the state files (as SIGHUP), "
                               "confirming the removal of files that disappeared",
                     "Ask the running daemon to re-read the state files now, as SIGHUP does, and wait for\n"
                     "the answer. A state file that disappeared (or was emptied) stays enforced until this:\n"
                     "reload confirms its removal. Exit status 0 reloaded, 1 invalid files (the last valid\n"
                     "state stays), 3 not running.")
    reload.add_argument("--socket", metavar="PATH", default="/run/vnetd/vnetd.sock",
                        help="the daemon's control socket (default /run/vnetd/vnetd.sock)")

    imp = command("import", "translate ifcfg-* files and iptables-save / ip6tables-save output into a state "
                            "file",
                  "Translate a CentOS/RHEL host's ifcfg-* (and route-*, rule-*) files, iptables-save and\n"
                  "ip6tables-save output and sysctl.conf into one state file, checked as `vnetd check`\n"
                  "would; what cannot be translated becomes a comment saying why (docs/IMPORT.md).")
    imp.add_argument("--ifcfg-dir", metavar="DIR", help="a network-scripts directory with ifcfg-* files")
    imp.add_argument("--iptables", metavar="FILE", help="an iptables-save file (e.g. /etc/sysconfig/iptables): "
                                                        "the firewall: section")
    imp.add_argument("--ip6tables", metavar="FILE", help="an ip6tables-save file (e.g. /etc/sysconfig/ip6tables): "
                                                         "the firewall6: section")
    imp.add_argument("--sysctl", metavar="FILE", help="a sysctl.conf file (net.* keys are translated)")
    imp.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output "
                                                            "(an existing file is never overwritten)")

    demo = command("demo", "run the daemon on the bundled examples in a throw-away namespace",
                   "Run the daemon on the bundled host examples inside the throw-away namespace\n"
                   "vnetd-demo, print its log and the commands that break something; the namespaces\n"
                   "are removed when it stops. Nothing on the host changes.")
    demo.add_argument("--duration", type=float, default=0, metavar="SECONDS",
                      help="stop after this many seconds (default: run until Ctrl-C)")

    for parser in dict.fromkeys(sub.choices.values()):
        add_global_options_after(parser)
    return p


def add_global_options_after(parser: argparse.ArgumentParser) -> None:
    """The global options, accepted after the command too (kept apart until
    ``resolve_global_options`` so that giving one twice is caught, not overridden)."""
    group = parser.add_argument_group("global options (also accepted before the command)")
    for flag, dest, settings in GLOBAL_OPTIONS:
        group.add_argument(flag, dest=_AFTER + dest, default=argparse.SUPPRESS, **settings)


def resolve_global_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One value per global option, wherever it was given; the same option given before
    and after the command with different values is an error, never a silent choice."""
    for flag, dest, _settings in GLOBAL_OPTIONS:
        before = getattr(args, dest, None)
        after = getattr(args, _AFTER + dest, None)
        if hasattr(args, _AFTER + dest):
            delattr(args, _AFTER + dest)
        if before is not None and after is not None and before != after:
            parser.error(f"{flag} is given before the command ({before}) and after it ({after}); give it once")
        setattr(args, dest, before if before is not None else after)
    if args.state_dir is None:
        args.state_dir = os.environ.get("VNETD_STATE_DIR", DEFAULT_STATE_DIR)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_global_options(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    level = args.log_level or ("info" if args.command in ("run", "demo") else "warning")
    if args.command not in ("run", "demo"):
        from vnetd import log

        log.configure(args.log_format, level)
    try:
        handler = COMMANDS[args.command]
        return handler(args)
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_ERROR
    except (NamespaceError, BackendError) as exc:
        print(f"vnetd: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except VnetdError as exc:
        print(f"vnetd: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def print_config_error(exc: ConfigError) -> None:
    for issue in exc.issues:
        print(f"error: {issue}", file=sys.stderr)
    n = len(exc.issues)
    print(f"{n} error{'s' if n != 1 else ''} in the state files", file=sys.stderr)


def enter_netns(args: argparse.Namespace) -> None:
    if args.netns:
        from vnetd import netns

        netns.enter(args.netns)


def load_checked(args: argparse.Namespace, shadowing: bool = True) -> Any:
    """The state files, loaded and checked against this machine (inside --netns).

    The files are read before entering the namespace (a path does not depend on
    it); the rules are checked inside it (its chains, its kernel). Every problem
    of both steps comes in one ConfigError; warnings are printed (``shadowing``:
    the ``firewall.shadowed`` ones too; ``plan`` and ``apply`` print those themselves).
    """
    from vnetd.checks import finish
    from vnetd.desired.loader import load_state_dir_partial, unloaded_files, unloaded_warning

    for name in unloaded_files(args.state_dir):
        print(f"warning: {unloaded_warning(args.state_dir, name)}", file=sys.stderr)
    desired, issues = load_state_dir_partial(args.state_dir)
    enter_netns(args)
    for warning in finish(desired, issues):
        if shadowing or not warning.startswith(SHADOWED):
            print(f"warning: {warning}", file=sys.stderr)
    note_backend(desired)
    return desired


def note_backend(desired: Any) -> None:
    """Which firewall backend is used, in one short line on stderr, when the state has a
    firewall (chains declared, a backend named, or vnetd's rules found to prune)."""
    from vnetd.backends.firewall import BackendRefused
    from vnetd.firewall_checks import firewall_selection

    try:
        selection = firewall_selection(desired)
    except BackendRefused:
        return  # (check_state refused the state already, unless its checks were skipped)
    if selection is not None:
        print(selection.line, file=sys.stderr)


def shadowed(desired: Any, engine: Any) -> tuple[list[str], int]:
    """``firewall.shadowed`` warnings (printed on stderr) and how many chains they name:
    chains of other tables, backends or tools that drop what vnetd's rules accept, and
    rules of others that vnetd's ``position: append`` rules are never reached past, for
    the backend the engine writes."""
    if not desired.chains:
        return [], 0
    from vnetd.backends.shadowing import findings
    from vnetd.plan.shadowing import warning_lines

    firewall = engine.managers.firewall.backend
    found = findings(desired.chains, firewall.name, lambda: firewall.show(desired.chains))
    lines = warning_lines(found)
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)
    return lines, len(found)


# --------------------------------------------------------------------------- commands


def cmd_check(args: argparse.Namespace) -> int:
    desired = load_checked(args)
    n_files = len(desired.files)
    print(f"{args.state_dir}: {n_files} file{'s' if n_files != 1 else ''} valid "
          f"({len(desired.interfaces)} interfaces, {len(desired.routes)} routes, "
          f"{len(desired.route_rules)} route rules, {len(desired.sysctls)} sysctls, "
          f"{len(desired.chains)} chains, {len(desired.libvirt.networks) if desired.libvirt else 0} libvirt networks)")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from vnetd.engine import Engine
    from vnetd.plan.render import plan_json, plan_text

    desired = load_checked(args, shadowing=False)
    engine = Engine()
    try:
        plan, _observed = engine.plan(desired)
        warnings, n_shadowed = shadowed(desired, engine)
    finally:
        engine.managers.close()
    sys.stdout.write(plan_json(plan, warnings) if args.format == "json" else plan_text(plan, n_shadowed))
    if plan.problems:
        return EXIT_ERROR
    return EXIT_CHANGES if plan.actions else EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    import json
    import logging

    from vnetd import log
    from vnetd.engine import Engine, verify
    from vnetd.plan.actions import Action

    desired = load_checked(args, shadowing=args.confirm is not None)
    if args.confirm is not None:
        return cmd_apply_confirm(args, desired)
    refuse_during_trial()
    confirm_with_daemon(args.state_dir)
    logger = log.get_logger()
    text = args.format == "text"

    out = sys.stdout
    log_applied = logger.is_enabled_for(logging.INFO) if hasattr(logger, "is_enabled_for") else True

    def report(action: Action, error: BackendError | None) -> None:
        if error is None:
            if log_applied:
                logger.info("action.applied", resource=action.resource, field=action.field,
                            want=str(action.want), have=str(action.have))
            if text:
                out.write(f"applied: {action.describe()}\n")
        else:
            logger.error("action.failed", error=str(error), resource=action.resource, field=action.field,
                         want=str(action.want), have=str(action.have))
            if text:
                out.write(f"failed: {action.describe()}: {error}\n")

    engine = Engine()
    try:
        result = engine.converge(desired, hook=report)
        warnings, n_shadowed = shadowed(desired, engine)  # of what is left after applying: said with the outcome
    finally:
        engine.managers.close()
    remaining = result.final_plan
    drift: DriftError | None = None
    try:
        verify(result)
    except DriftError as exc:
        drift = exc
    if args.format == "json":
        print(json.dumps({
            "converged": result.converged,
            "applied": [a.as_dict() for a in result.applied],
            "failed": [dict(a.as_dict(), error=str(e)) for a, e in result.failed],
            "remaining": [a.as_dict() for a in remaining.actions],
            "diff": drift.diff if drift else "",
            "problems": [{"resource": p.resource, "message": p.message} for p in remaining.problems],
            "duration_ms": round(result.duration_ms, 1),
            "warnings": warnings,
        }, indent=2))
    else:
        for problem in remaining.problems:
            print(f"problem: {problem.describe()}")
        if result.converged:
            n = len(result.applied)
            done = f"converged: {n} change{'s' if n != 1 else ''} applied and verified" if n \
                else "converged: nothing to do"
            if n_shadowed:  # never a bare "converged" over traffic another chain drops
                from vnetd.plan.shadowing import shadowed_note

                done += f"; {shadowed_note(n_shadowed)}"
            print(done)
        elif drift is not None:
            print(f"not converged: {drift}")
            out.write(drift.diff)
        else:
            print("not converged")
    return EXIT_OK if result.converged else EXIT_ERROR


def refuse_during_trial() -> None:
    """A plain apply during a trial would change what the trial's checkpoint records."""
    from vnetd.trial import TrialPaths, read_record

    try:
        record = read_record(TrialPaths.here())
    except (OSError, ValueError, VnetdError):
        return
    if record is not None:
        raise SystemExit(f"vnetd: a trial is pending (pid {record.pid}); end it first with `vnetd confirm` "
                         "or `vnetd rollback`")


def cmd_apply_confirm(args: argparse.Namespace, desired: Any) -> int:
    """``apply --confirm SECONDS``: a trial (vnetd.trial)."""
    from vnetd.engine import Engine
    from vnetd.plan.actions import Action
    from vnetd.trial import Trial

    if not 1 <= args.confirm <= 86400:
        raise SystemExit("vnetd: --confirm wants 1-86400 seconds")
    # No reload of a daemon on this directory first (a plain apply asks for one): it would
    # apply the files at once, untried. The daemon pauses while the trial is pending and
    # re-reads the files once the change is confirmed (vnetd.daemon.trials).

    def report(action: Action, error: BackendError | None) -> None:
        state = "applied" if error is None else "failed"
        print(f"{state}: {action.describe()}" + (f": {error}" if error else ""), flush=True)

    terminal = sys.stdin if sys.stdin is not None and sys.stdin.isatty() else None
    engine = Engine()
    try:
        outcome = Trial(engine, desired, args.confirm, terminal=terminal, state_dir=args.state_dir).run(hook=report)
    finally:
        engine.managers.close()
    if outcome.confirmed:
        print(outcome.reason)
        if outcome.restore is None and outcome.reason.startswith("nothing to change"):
            daemon_applies_these_files(args.state_dir)
        return EXIT_OK
    return EXIT_ROLLED_BACK if outcome.restore is not None and outcome.restore.restored else EXIT_ERROR


def cmd_end_trial(args: argparse.Namespace) -> int:
    from vnetd.engine import Engine
    from vnetd.trial import end_trial

    enter_netns(args)
    engine = Engine()
    try:
        return end_trial(engine, args.command, print)
    finally:
        engine.managers.close()


def daemon_applies_these_files(state_dir: str) -> None:
    """After "nothing to change": if this namespace's daemon runs on the same directory,
    it has applied the edit already (as soon as the file changed), so there was nothing
    left to try. Say how to try a change on such a host."""
    from vnetd.daemon.instance import running_daemon

    try:
        owner = running_daemon()
    except OSError:
        return
    if not owner or not owner.get("state_dir"):
        return
    if os.path.realpath(str(owner["state_dir"])) == os.path.realpath(state_dir):
        print(f"note: the daemon of this namespace (pid {owner.get('pid')}) applies {state_dir} itself as soon as "
              "a file changes; to try a change first, edit a copy of the directory and run `vnetd --state-dir "
              "COPY apply --confirm SECONDS`, then install the files before confirming (docs/OPERATIONS.md, "
              "\"Changing a remote host safely\")", file=sys.stderr)


def confirm_with_daemon(state_dir: str) -> None:
    """``vnetd apply`` is the administrator's decision on the files as they are: a daemon
    running in this namespace on the same state directory re-reads them first, which
    confirms the removal of files it was still holding (otherwise it would put back
    what apply removes). Best effort: no daemon, another directory, no answer: nothing."""
    import json

    from vnetd.daemon.instance import running_daemon
    from vnetd.daemon.status import query

    try:
        owner = running_daemon()
    except OSError:
        return
    if not owner or not owner.get("socket") or not owner.get("state_dir"):
        return
    if os.path.realpath(str(owner["state_dir"])) != os.path.realpath(state_dir):
        return
    try:
        before = json.loads(query(str(owner["socket"]), "status"))
        after = json.loads(query(str(owner["socket"]), "reload", timeout=65))
    except (OSError, ValueError):
        return
    held = [h.get("file") for h in before.get("held_files", []) if isinstance(h, dict)]
    if held and after.get("config_valid"):
        print(f"vnetd: the running daemon (pid {owner.get('pid')}) re-read the state files: removal of "
              f"{', '.join(map(str, held))} confirmed", file=sys.stderr)


def cmd_show(args: argparse.Namespace) -> int:
    from vnetd.show import show_state

    enter_netns(args)
    sys.stdout.write(show_state(args.state_dir, args.netns, args.section, args.names))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from vnetd.daemon.main import run_daemon

    return run_daemon(args)


def cmd_status(args: argparse.Namespace) -> int:
    from vnetd.daemon.status import status_command

    return status_command(args)


def cmd_reload(args: argparse.Namespace) -> int:
    from vnetd.daemon.status import reload_command

    return reload_command(args)


def cmd_import(args: argparse.Namespace) -> int:
    from vnetd.importer.command import import_command

    return import_command(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from vnetd.demo import run_demo

    return run_demo(args)


COMMANDS = {
    "check": cmd_check,
    "plan": cmd_plan,
    "apply": cmd_apply,
    "confirm": cmd_end_trial,
    "rollback": cmd_end_trial,
    "run": cmd_run,
    "show": cmd_show,
    "status": cmd_status,
    "reload": cmd_reload,
    "import": cmd_import,
    "demo": cmd_demo,
}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
