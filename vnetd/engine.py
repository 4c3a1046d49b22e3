# SPDX-License-Identifier: MIT
"""One reconcile pass: observe -> plan -> apply -> verify (observe and plan again).

Used by ``vnetd apply`` (a full read each round) and by the daemon (its cached,
event-maintained view). A pass applies the plan's actions in order; an action whose
resource already failed in this pass is skipped (its errors would only repeat the
first one); then the state is observed again and re-planned. Up to ``MAX_ROUNDS``
rounds run while progress is made, so that a step that needs the result of another
(a veth peer that only exists once its pair is created) converges in one pass.
The pass has converged when the final plan is empty and nothing is left unfixable.

A failure on a stale view is not a failure of the resource. The daemon plans from
a cache kept by notifications, and the kernel announces one change in several
messages (deleting a bridge first releases its ports, then deletes it): a pass
woken by the first message can plan "attach eth1 to br0" for a br0 that is already
gone, and the kernel refuses. When the view changed between the plan and the
re-read that follows the round (``view_version``), the failed actions are re-planned
at once in the next round instead of being reported (``on_stale``); only a failure
on a view that did not change, or in the last round, is reported to ``hook`` (and
backed off by the daemon).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vnetd.errors import BackendError, DriftError
from vnetd.model.state import DesiredState
from vnetd.plan.actions import (
    FIREWALL_OPS,
    Action,
    EnsureNetwork,
    Plan,
    SetSysctl,
)
from vnetd.plan.planner import Observed, PlanMemo, plan
from vnetd.plan.render import drift_diff

MAX_ROUNDS = 3


@dataclass
class PassResult:
    first_plan: Plan
    final_plan: Plan
    applied: list[Action] = field(default_factory=list)
    failed: list[tuple[Action, BackendError]] = field(default_factory=list)
    duration_ms: float = 0.0
    rounds: int = 0

    @property
    def converged(self) -> bool:
        """Verified: the state observed after applying needs nothing and has no problem."""
        return self.final_plan.empty and not self.final_plan.problems


class Backends:
    """The system adapters, created on first use so a command imports only what it needs."""

    def __init__(self) -> None:
        self._net: object | None = None
        self._sysctl: object | None = None
        self._firewall: object | None = None
        self._libvirt: object | None = None

    @property
    def net(self):  # type: ignore[no-untyped-def]
        if self._net is None:
            from vnetd.backends.netlink import NetlinkBackend

            self._net = NetlinkBackend()
        return self._net

    @property
    def sysctl(self):  # type: ignore[no-untyped-def]
        if self._sysctl is None:
            from vnetd.backends.sysctl import SysctlBackend

            self._sysctl = SysctlBackend()
        return self._sysctl

    @property
    def firewall(self):  # type: ignore[no-untyped-def]
        """Both families' legacy tables (iptables, ip6tables) behind one backend."""
        if self._firewall is None:
            from vnetd.backends.firewall import FirewallFamilies
            from vnetd.backends.iptables import FirewallBackend

            self._firewall = FirewallFamilies(FirewallBackend)
        return self._firewall

    def libvirt(self, uri: str):  # type: ignore[no-untyped-def]
        """The libvirt connection for ``uri`` (a new one if the URI changed)."""
        current = self._libvirt
        if current is not None and current.uri != uri:  # type: ignore[attr-defined]
            current.close()  # type: ignore[attr-defined]
            current = None
        if current is None:
            from vnetd.backends.libvirt import LibvirtBackend

            current = LibvirtBackend(uri)
            self._libvirt = current
        return current

    @property
    def current_libvirt(self):  # type: ignore[no-untyped-def]
        return self._libvirt

    def close(self) -> None:

        for backend in (self._net, self._firewall, self._libvirt):
            close = getattr(backend, "close", None)
            if close is not None:
                close()


Observer = Callable[[DesiredState], Observed]


def _kind(action: Action) -> str:
    op = action.op
    if isinstance(op, FIREWALL_OPS):
        return "firewall"
    if isinstance(op, SetSysctl | EnsureNetwork):
        return "other"
    return "netlink"  # links, addresses, routes, and guests' taps


def _runs(actions: tuple[Action, ...]) -> list[tuple[str, list[Action]]]:
    """Split actions, in order, into runs that one backend carries out together."""
    runs: list[tuple[str, list[Action]]] = []
    for action in actions:
        kind = _kind(action)
        if runs and runs[-1][0] == kind:
            runs[-1][1].append(action)
        else:
            runs.append((kind, [action]))
    return runs
ActionHook = Callable[[Action, BackendError | None], None]
StaleHook = Callable[[Action, BackendError], None]


class Engine:
    def __init__(self, backends: Backends | None = None) -> None:
        self.backends = backends or Backends()
        self.memo = PlanMemo()

    # -- observe --------------------------------------------------------------------

    def observe(self, desired: DesiredState) -> Observed:
        """A full read of everything the desired state touches."""
        observed = Observed(net=self.backends.net.observe())
        if desired.sysctls:
            observed.sysctls = self.backends.sysctl.read(s.key for s in desired.sysctls)
        if desired.chains or self.backends.firewall.has_vnetd_rules():
            firewall = self.backends.firewall
            observed.firewall = firewall.observe(desired.chains)
            observed.rule_ids = firewall.rule_ids(desired.chains)
        if desired.libvirt is not None:
            self.observe_libvirt(desired, observed)
        return observed

    def observe_libvirt(self, desired: DesiredState, observed: Observed) -> None:
        """Networks and running guests' taps; left None (not planned) while libvirt is unreachable."""
        assert desired.libvirt is not None
        libvirt = self.backends.libvirt(desired.libvirt.uri)
        if not libvirt.connected and not libvirt.connect():
            return
        try:
            observed.networks, observed.guest_taps = libvirt.observe()
        except BackendError:
            observed.networks = None

    def plan(self, desired: DesiredState, observer: Observer | None = None) -> tuple[Plan, Observed]:
        observed = (observer or self.observe)(desired)
        self._read_resolved_sysctls(desired, observed)
        return plan(desired, observed, self.memo), observed

    def _read_resolved_sysctls(self, desired: DesiredState, observed: Observed) -> None:
        """Per-device sysctl keys that name a NIC found by its MAC are read where that NIC
        is (net.ipv4.conf.eth1.x may be net.ipv4.conf.enp3s0.x here: plan.identifiers)."""
        if observed.sysctls is None or not self.memo.identifiers.finds_by_mac(desired):
            return
        from vnetd.plan.identifiers import sysctl_keys

        missing = [k for k in sysctl_keys(desired, observed.net) if k not in observed.sysctls]
        if missing:
            observed.sysctls.update(self.backends.sysctl.read(missing))

    # -- apply ----------------------------------------------------------------------

    def execute(self, actions: tuple[Action, ...], observed: Observed, hook: ActionHook | None = None,
                report_failures: bool = True) -> tuple[list[Action], list[tuple[Action, BackendError]]]:
        """Run actions in order. Consecutive netlink actions go to the kernel together
        (pipelined), consecutive firewall actions in one commit per table; an action
        of a resource that already failed in this pass is skipped. ``hook`` hears of
        every applied action, and of failures when ``report_failures``."""
        applied: list[Action] = []
        failed: list[tuple[Action, BackendError]] = []
        broken: set[str] = set()

        def record(action: Action, error: BackendError | None) -> None:
            if error is None:
                applied.append(action)
            else:
                failed.append((action, error))
                broken.add(action.resource)
            if hook and (error is None or report_failures):
                hook(action, error)

        for kind, group in _runs(actions):
            todo = [a for a in group if a.resource not in broken]
            if kind == "firewall":
                try:
                    results = self.backends.firewall.apply(todo)
                except BackendError as exc:
                    # the whole batch could not start (the xtables lock held by another
                    # tool, a table that cannot be opened): each of its resources failed
                    results = [(action, exc) for action in todo]
                for action, error in results:
                    record(action, error)
            elif kind == "netlink":
                for action, error in self.backends.net.execute_batch(todo, observed.net):
                    record(action, error)
            else:
                for action in todo:
                    try:
                        self._execute_other(action)
                    except BackendError as exc:
                        record(action, exc)
                    else:
                        record(action, None)
        return applied, failed

    def _execute_other(self, action: Action) -> None:
        op = action.op
        if isinstance(op, SetSysctl):
            self.backends.sysctl.write(op.key, op.value, action.resource)
        elif isinstance(op, EnsureNetwork):
            libvirt = self.backends.current_libvirt
            if libvirt is None:
                raise BackendError("libvirt", action.resource, "libvirt is not connected")
            libvirt.execute(op, action.resource)

    def converge(self, desired: DesiredState, observer: Observer | None = None,
                 hook: ActionHook | None = None, plan_filter: Callable[[Plan], Plan] | None = None,
                 view_version: Callable[[], int] | None = None, on_stale: StaleHook | None = None) -> PassResult:
        """Plan, apply, re-observe and re-plan until nothing is left or nothing progresses.

        ``plan_filter`` lets the daemon hold back resources it is backing off from.
        ``view_version`` (the daemon's cache version) tells a failure on a view that
        changed since the plan: re-planned at once and reported to ``on_stale`` instead.
        """
        start = time.perf_counter()
        first, observed = self.plan(desired, observer)
        version = view_version() if view_version else None
        current = plan_filter(first) if plan_filter else first
        result = PassResult(first, current)
        for round_no in range(MAX_ROUNDS):
            if current.empty:
                break
            result.rounds += 1
            applied, failed = self.execute(current.actions, observed, hook, report_failures=view_version is None)
            result.applied += applied
            current, observed = self.plan(desired, observer)
            if plan_filter:
                current = plan_filter(current)
            retried: list[tuple[Action, BackendError]] = []
            if view_version is not None:
                now = view_version()
                changed = now != version and round_no + 1 < MAX_ROUNDS
                version = now
                for action, error in failed:
                    # only the notification cache can be stale; netfilter and libvirt are read fresh
                    if changed and _kind(action) == "netlink":
                        retried.append((action, error))
                        if on_stale is not None:
                            on_stale(action, error)
                    elif hook is not None:
                        hook(action, error)
            result.failed = [f for f in failed if f not in retried]  # earlier rounds' are retried in later ones
            if not applied and not retried:
                break

        result.final_plan = current
        result.duration_ms = (time.perf_counter() - start) * 1000
        return result


def verify(result: PassResult) -> None:
    """After a pass: raise DriftError with the desired/current diff of every resource
    that still differs (the final observation re-planned to something)."""
    remaining = result.final_plan.actions
    if remaining:
        raise DriftError(result.final_plan.resources(), drift_diff(remaining))
