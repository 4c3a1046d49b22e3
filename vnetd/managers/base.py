# SPDX-License-Identifier: MIT
"""The seam between the engine (and the daemon) and one kind of resource.

A *manager* owns one kind -- links/addresses/routes/route rules, sysctls, the
firewall, libvirt -- and everything the engine and the daemon need of it:

* what it owns: ``handles`` (the ops it carries out), ``owns`` and ``resources``
  (the resource names it manages), ``prunes`` (forgetting one deletes vnetd's
  own objects, as the firewall's tagged rules, rather than leaving them be);
* how it observes: ``observe`` reads the system in full (``vnetd plan``/``apply``,
  every round), ``observe_cached`` plans from what the daemon keeps (notifications,
  the last parsed tables) and re-reads only what is known to have changed;
* "changed since last time?": ``changed`` is the daemon's cheap periodic look at
  what sends no events (netfilter's legacy tables, sysctls, libvirt autostart);
* how it applies: ``apply`` carries out a run of consecutive actions it handles and
  says, for each, whether it failed; it marks its own cache stale as needed
  (``applied`` hears of every run, whoever carried it out);
* its current state: ``show`` (a fragment of ``vnetd show``'s state file) and
  ``status`` (fields of ``vnetd status``);
* its event source: ``event_fileno`` (a descriptor the daemon selects on, or None),
  ``drain_events`` (read it: True if a pass is needed), ``event_source`` (the
  pass's source then), ``needs_pass`` (its cache is known to be stale);
* its health and back-off hooks: ``view_version`` (a view kept by notifications
  may be stale when an action fails: the engine re-plans instead of reporting),
  ``transient_resources`` (resources not declared whose health is kept while they
  exist: a running guest's tap), ``invalidate`` (after a crash: trust nothing),
  ``resync`` (the slow timer), ``on_wake`` (a wake-up another thread posted),
  ``start`` (after READY and after a reload: libvirt's connection and events),
  ``adopt`` (a new desired state).

The engine and the daemon only iterate managers (``managers.Managers``); no
code outside a manager names a kind. ``BaseManager`` gives every optional hook
its do-nothing default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from vnetd.errors import BackendError
from vnetd.model.state import DesiredState
from vnetd.plan.actions import Action, Op
from vnetd.plan.planner import Observed

#: what ``apply`` returns: each action, and its failure or None
Results = list[tuple[Action, BackendError | None]]
#: how another thread asks the daemon's loop for a pass (``daemon.wake.Wakeup.post``)
Post = Callable[[str], None]


class Manager(Protocol):
    """One resource kind, as the engine and the daemon see it (see the module docstring)."""

    #: the kind, as logs and pass sources name it ("netlink", "sysctl", "netfilter", "libvirt");
    #: the reason of a pass its periodic ``changed`` asked for
    name: str
    #: the source of a pass its events asked for (``drain_events``)
    event_source: str
    #: forgetting one of its resources deletes what vnetd made (pruned), not left alone (released)
    prunes: bool

    def handles(self, op: Op) -> bool:
        """Whether this manager carries out ``op``."""
        ...

    def owns(self, resource: str) -> bool:
        """Whether ``resource`` (a resource name) is of this kind."""
        ...

    def resources(self, desired: DesiredState) -> list[str]:
        """The resources ``desired`` declares of this kind."""
        ...

    def adopt(self, desired: DesiredState) -> None:
        """A new desired state is in force: what it invalidates is read again."""
        ...

    def observe(self, desired: DesiredState, observed: Observed) -> None:
        """Read what ``desired`` needs from the system, in full, into ``observed``."""
        ...

    def observe_cached(self, desired: DesiredState, observed: Observed) -> None:
        """The same from the daemon's caches (re-reading only what changed)."""
        ...

    def apply(self, actions: Sequence[Action], observed: Observed) -> Results:
        """Carry out consecutive actions this manager handles, in order."""
        ...

    def applied(self, results: Results) -> None:
        """Every action of a run the engine just carried out, whichever manager did it
        (a guest's tap put on its bridge changes what libvirt reports)."""
        ...

    def view_version(self) -> int | None:
        """The version of a view kept by notifications (None: read fresh, never stale)."""
        ...

    def changed(self, desired: DesiredState) -> bool:
        """The daemon's periodic look: did what sends no events change since the last pass?"""
        ...

    def event_fileno(self) -> int | None:
        """A descriptor readable when this kind changed, for the daemon's select(); None: none."""
        ...

    def drain_events(self) -> bool:
        """Read what the event descriptor holds; True if a pass is needed."""
        ...

    def needs_pass(self) -> bool:
        """The cache is known to be stale (lost notifications, a crash): a pass must read it."""
        ...

    def on_wake(self, reasons: set[str]) -> None:
        """The loop's wake-up reasons (posted by other threads), seen by the owner thread."""
        ...

    def start(self, desired: DesiredState, post: Post) -> bool:
        """After the daemon is READY, and after each reload: connect what must wait for it
        (``post`` wakes the daemon from another thread). True: a pass is needed now."""
        ...

    def invalidate(self) -> None:
        """A pass crashed half-way: trust no cache."""
        ...

    def resync(self) -> None:
        """The slow timer: whatever may have been missed is read again."""
        ...

    def transient_resources(self) -> frozenset[str]:
        """Resources not declared whose health is kept while they exist."""
        ...

    def status(self) -> dict[str, Any]:
        """Fields of ``vnetd status`` this kind adds (none by default)."""
        ...

    def show(self, desired: DesiredState | None) -> str:
        """This kind's part of ``vnetd show`` (YAML text, comments for what is not vnetd's)."""
        ...

    def close(self) -> None:
        """Release sockets and connections."""
        ...


class BaseManager:
    """Do-nothing defaults of the optional hooks."""

    name = ""
    event_source = ""
    prunes = False
    #: resource name prefixes of this kind ("interface/", "route/" ...)
    prefixes: tuple[str, ...] = ()

    def owns(self, resource: str) -> bool:
        return resource.startswith(self.prefixes)

    def adopt(self, desired: DesiredState) -> None:
        return None

    def applied(self, results: Results) -> None:
        return None

    def view_version(self) -> int | None:
        return None

    def changed(self, desired: DesiredState) -> bool:
        return False

    def event_fileno(self) -> int | None:
        return None

    def drain_events(self) -> bool:
        return False

    def needs_pass(self) -> bool:
        return False

    def on_wake(self, reasons: set[str]) -> None:
        return None

    def start(self, desired: DesiredState, post: Post) -> bool:
        return False

    def invalidate(self) -> None:
        return None

    def resync(self) -> None:
        return None

    def transient_resources(self) -> frozenset[str]:
        return frozenset()

    def status(self) -> dict[str, Any]:
        return {}

    def show(self, desired: DesiredState | None) -> str:
        return ""

    def close(self) -> None:
        return None
