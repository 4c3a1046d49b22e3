# SPDX-License-Identifier: MIT
"""libvirt: networks kept defined/active/autostarted, guests' taps kept on their bridges.

Pure: (desired libvirt section, libvirt's networks and running guests' taps as
observed, the desired state, the kernel's links) -> (actions, problems).

Networks (phase LIBVIRT_NETWORKS, in the order they must run):

* missing: defined from ``xml:`` when given (else a problem: vnetd cannot invent
  a definition), then started / autostarted as declared;
* ``state: active`` and inactive -> start; ``inactive`` and active -> stop;
  ``absent`` -> stop (if active) and undefine (if persistent);
* active, but the bridge libvirt made for it is gone from the kernel -> restart
  (destroy + create): libvirt does not notice a deleted bridge by itself;
* ``autostart`` when written and different.

Guests' taps (phase GUEST_TAPS, after links are created; only with
``guests.reattach``): every tap of a running guest that exists in the kernel and is
not a port of its bridge is attached to it, with the bridge's MTU (the declared MTU
if the state files give one, else the bridge's current MTU). A bridge that does not
exist is waited for — vnetd creates it in this plan if it is declared (the tap is
attached in the same pass), libvirt's restart re-creates a network's bridge (the
tap follows in the next round) — and a bridge declared ``absent`` is left gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from vnetd.model.interfaces import AdminState, IfType, Interface
from vnetd.model.libvirt import GuestTap, LibvirtSpec, NetworkSpec, NetworkState, ObservedNetwork
from vnetd.model.netstate import NetState
from vnetd.model.state import DesiredState
from vnetd.plan.actions import Action, AttachTap, EnsureNetwork, Phase, Problem

Section = tuple[list[Action], list[Problem]]


def plan_libvirt(spec: LibvirtSpec, networks: Mapping[str, ObservedNetwork], taps: Iterable[GuestTap],
                 desired: DesiredState, net: NetState) -> Section:
    actions: list[Action] = []
    problems: list[Problem] = []
    for network in spec.networks:
        plan_network(network, networks.get(network.name), net, actions, problems)
    if spec.reattach:
        plan_taps(taps, desired, net, actions, problems)
    return actions, problems


# --------------------------------------------------------------------------- networks


def _network_action(spec: NetworkSpec, operation: str, field: str, want: object, have: object) -> Action:
    xml = spec.xml if operation == "define" else None
    return Action(EnsureNetwork(spec.name, operation, xml), Phase.LIBVIRT_NETWORKS, spec.resource, field, want, have)


def _state_of(have: ObservedNetwork | None) -> str:
    if have is None:
        return "absent"
    return "active" if have.active else "inactive"


def plan_network(spec: NetworkSpec, have: ObservedNetwork | None, net: NetState,
                 actions: list[Action], problems: list[Problem]) -> None:
    if spec.state is NetworkState.ABSENT:
        if have is None:
            return
        if have.active:
            actions.append(_network_action(spec, "stop", "state", "absent", "active"))
        if have.persistent:
            actions.append(_network_action(spec, "undefine", "exists", False, True))
        return

    if have is None:
        if spec.xml is None:
            problems.append(Problem(spec.resource, f"libvirt has no network {spec.name!r} and the state files "
                                                   "give no xml: to define it from"))
            return
        actions.append(_network_action(spec, "define", "exists", True, False))
        active, autostart, persistent = False, False, True
    else:
        active, autostart, persistent = have.active, have.autostart, have.persistent
        if not persistent and (spec.state is NetworkState.INACTIVE or spec.autostart):
            # a transient network vanishes when stopped and cannot autostart
            if spec.xml is None:
                wanted = "inactive" if spec.state is NetworkState.INACTIVE else "autostarted"
                problems.append(Problem(spec.resource, f"network {spec.name!r} is transient (not defined): it "
                                                       f"cannot be {wanted}; give xml: to define it"))
                return
            actions.append(_network_action(spec, "define", "persistent", True, False))
            persistent = True

    if spec.state is NetworkState.ACTIVE and not active:
        actions.append(_network_action(spec, "start", "state", "active", _state_of(have)))
    elif spec.state is NetworkState.INACTIVE and active:
        actions.append(_network_action(spec, "stop", "state", "inactive", "active"))
    elif (spec.state is NetworkState.ACTIVE and have is not None and have.bridge is not None
          and net.link(have.bridge) is None):
        actions.append(_network_action(spec, "restart", "bridge", have.bridge, None))

    if spec.autostart is not None and spec.autostart != autostart:
        operation = "autostart-on" if spec.autostart else "autostart-off"
        actions.append(_network_action(spec, operation, "autostart", spec.autostart, autostart))


# --------------------------------------------------------------------------- guests' taps


def plan_taps(taps: Iterable[GuestTap], desired: DesiredState, net: NetState,
              actions: list[Action], problems: list[Problem]) -> None:
    declared: dict[str, Interface] = {i.name: i for i in desired.interfaces}
    seen: dict[str, GuestTap] = {}
    for tap in taps:
        other = seen.setdefault(tap.tap, tap)
        if other is not tap:
            if other.bridge != tap.bridge:
                problems.append(Problem(tap.resource, f"tap {tap.tap} is also {other.resource} on bridge "
                                                      f"{other.bridge}; not attaching it to either"))
                actions[:] = [a for a in actions if a.resource != other.resource]
            continue
        action = plan_tap(tap, declared.get(tap.bridge), net, problems)
        if action is not None:
            actions.append(action)


def plan_tap(tap: GuestTap, bridge_spec: Interface | None, net: NetState, problems: list[Problem]) -> Action | None:
    link = net.link(tap.tap)
    if link is None:
        return None  # the guest's tap is not there (yet): nothing to attach
    if bridge_spec is not None and bridge_spec.state is AdminState.ABSENT:
        return None  # the files want this bridge gone
    declared_bridge = (bridge_spec is not None and bridge_spec.type is IfType.BRIDGE)
    bridge = net.link(tap.bridge)
    have = net.name_of(link.master)
    if bridge is None:
        if not declared_bridge:
            return None  # a libvirt network's bridge comes back with the network's restart
        assert bridge_spec is not None
        return Action(AttachTap(tap.domain, tap.tap, tap.bridge, bridge_spec.mtu), Phase.GUEST_TAPS,
                      tap.resource, "controller", tap.bridge, have)
    if link.master == bridge.index:
        return None
    if bridge.kind != "bridge":
        problems.append(Problem(tap.resource, f"{tap.bridge} is not a Linux bridge (kind {bridge.kind or 'none'})"))
        return None
    mtu = bridge_spec.mtu if bridge_spec is not None and bridge_spec.mtu is not None else bridge.mtu
    return Action(AttachTap(tap.domain, tap.tap, tap.bridge, mtu), Phase.GUEST_TAPS, tap.resource,
                  "controller", tap.bridge, have)
