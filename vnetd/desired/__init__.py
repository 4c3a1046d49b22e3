# SPDX-License-Identifier: MIT
"""From drop-in YAML files to a validated DesiredState, with FILE:LINE errors."""
