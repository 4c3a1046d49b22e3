# SPDX-License-Identifier: MIT
"""Build of the one C module: iptables' rule language through libxtables (see its header comment)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vnetd.backends._xtables",
            ["vnetd/backends/_xtables.c"],
            libraries=["xtables"],
            extra_compile_args=["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
        )
    ],
)
