# SPDX-License-Identifier: MIT
"""The reference documentation, generated from the code it describes.

docs/SCHEMA.md and the vnetd.d(5) man page come from the loader's schema tables
(vnetd/desired/schema.py), vnetd(8) from the command line's own parser
(vnetd/cli.py): what they say is what the loader checks and what the parser takes.
``python -m vnetd.reference`` writes them; tests/unit/test_reference.py fails when
the committed files differ from what the code generates.
"""
