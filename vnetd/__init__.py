# SPDX-License-Identifier: MIT
"""vnetd: keeps a Linux/KVM host's network as its state files declare it."""

__version__ = "0.1.0"
