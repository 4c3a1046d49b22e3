# SPDX-License-Identifier: MIT
"""``vnetd import``: legacy network configuration -> a vnetd state file.

Inputs are CentOS/RHEL-style files, read as data and never executed:

* ``ifcfg`` -- a network-scripts directory (``ifcfg-*``, ``route-*``) -> ``interfaces:``
  and ``routes:``;
* ``iptables_save`` -- ``iptables-save`` output (``/etc/sysconfig/iptables``) ->
  ``firewall:``;
* ``sysctl_conf`` -- ``sysctl.conf`` -> ``sysctl:`` (``net.*`` keys only).

``emit`` writes the result as readable YAML with comments (PyYAML cannot write
comments); ``command`` checks the output with the same loader as ``vnetd check``
and turns whatever it still refuses into comments. Everything that is not
translated is a comment starting with ``not translated:`` that says why.
docs/IMPORT.md shows the article's files translated.
"""
