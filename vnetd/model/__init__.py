# SPDX-License-Identifier: MIT
"""Frozen value types for desired and observed state; no I/O, no system imports."""
