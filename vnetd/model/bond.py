# SPDX-License-Identifier: MIT
"""Bonds: modes and options by their sysfs names (as nmstate and BONDING_OPTS write
them), with the values the kernel stores (``drivers/net/bonding/bond_options.c``).

The loader turns each written option into the kernel's value (``arp_validate: all``
-> 3) so that the planner compares like with like; the netlink codec
(``vnetd.backends.rtnl``) maps the names to ``IFLA_BOND_*`` attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

MODES: dict[str, int] = {"balance-rr": 0, "active-backup": 1, "balance-xor": 2, "broadcast": 3, "802.3ad": 4,
                         "balance-tlb": 5, "balance-alb": 6}
MODE_NAMES = {number: name for name, number in MODES.items()}


@dataclass(frozen=True, slots=True)
class BondOption:
    """How one option is written and what the kernel keeps of it.

    ``kind``: ``int`` (``lo``-``hi``), ``enum`` (a name of ``choices`` or its number),
    ``bool`` (true/false, 1/0), ``ip-list`` (IPv4 addresses: a list or "a,b"),
    ``mac`` or ``ifname``. ``modes``: the modes the kernel accepts it in (None: all).
    """

    kind: str
    lo: int = 0
    hi: int = 2**32 - 1
    choices: tuple[str, ...] = ()
    modes: frozenset[str] | None = None


_AD = frozenset({"802.3ad"})
_ACTIVE_BACKUP_LIKE = frozenset({"active-backup", "balance-tlb", "balance-alb"})
_NOT_AD_TLB_ALB = frozenset({"balance-rr", "active-backup", "balance-xor", "broadcast"})

OPTIONS: dict[str, BondOption] = {
    "miimon": BondOption("int"),
    "updelay": BondOption("int"),
    "downdelay": BondOption("int"),
    "peer_notif_delay": BondOption("int"),
    "use_carrier": BondOption("bool"),
    "arp_interval": BondOption("int", modes=_NOT_AD_TLB_ALB),
    "arp_ip_target": BondOption("ip-list"),
    "arp_validate": BondOption("enum", choices=("none", "active", "backup", "all", "filter", "filter_active",
                                                "filter_backup"), modes=_NOT_AD_TLB_ALB),
    "arp_all_targets": BondOption("enum", choices=("any", "all")),
    "primary": BondOption("ifname", modes=_ACTIVE_BACKUP_LIKE),
    "primary_reselect": BondOption("enum", choices=("always", "better", "failure")),
    "fail_over_mac": BondOption("enum", choices=("none", "active", "follow")),
    "xmit_hash_policy": BondOption("enum", choices=("layer2", "layer3+4", "layer2+3", "encap2+3", "encap3+4",
                                                    "vlan+srcmac")),
    "resend_igmp": BondOption("int", 0, 255),
    "num_grat_arp": BondOption("int", 0, 255),
    "num_unsol_na": BondOption("int", 0, 255),
    "all_slaves_active": BondOption("enum", choices=("dropped", "delivered")),
    "min_links": BondOption("int"),
    "lp_interval": BondOption("int", 1, 2**31 - 1),
    "packets_per_slave": BondOption("int", 0, 65535, modes=frozenset({"balance-rr"})),
    "lacp_rate": BondOption("enum", choices=("slow", "fast"), modes=_AD),
    "ad_select": BondOption("enum", choices=("stable", "bandwidth", "count"), modes=_AD),
    "ad_actor_sys_prio": BondOption("int", 1, 65535, modes=_AD),
    "ad_user_port_key": BondOption("int", 0, 1023, modes=_AD),
    "ad_actor_system": BondOption("mac", modes=_AD),
    "tlb_dynamic_lb": BondOption("bool", modes=frozenset({"balance-tlb", "balance-alb"})),
}

#: options the kernel keeps in one field: num_grat_arp and num_unsol_na both set
#: IFLA_BOND_NUM_PEER_NOTIF (the kernel reports it once)
ALIASES = {"num_unsol_na": "num_grat_arp"}

#: options the kernel changes only while the bond has no ports (BOND_OPTFLAG_NOSLAVES)
NO_PORTS = frozenset({"fail_over_mac"})


def canonical(name: str) -> str:
    """The option name the kernel reports a value under."""
    return ALIASES.get(name, name)
