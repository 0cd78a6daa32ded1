"""Build script for the one optional C extension; all metadata lives in pyproject.toml.

``scmwatch.events._flatten`` speeds up EVTX normalization (see the C file for why). It is
optional: if it cannot be compiled, installation still succeeds and the identical Python
implementation in ``scmwatch.events.normalize`` is used.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "scmwatch.events._flatten",
            ["src/scmwatch/events/_flatten.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
