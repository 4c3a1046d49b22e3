# SPDX-License-Identifier: MIT
"""(desired, observed) -> Plan: pure functions, one module per resource kind."""
