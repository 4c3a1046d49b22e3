# SPDX-License-Identifier: MIT
"""The only modules that talk to the system: netlink, netfilter, /proc/sys, libvirt."""
