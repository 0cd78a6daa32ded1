"""Build script for the optional C extensions; all metadata lives in pyproject.toml.

``scmwatch.events._evtx`` decodes EVTX chunks straight from binary XML, ``scmwatch.events._flatten``
speeds up EVTX parsing and normalization, ``scmwatch.events._xml`` the reading of Windows event XML,
``scmwatch.events._lines`` the counting of a split NDJSON file's lines, ``scmwatch.sigma._text``
builds the engine's prefilter text, ``scmwatch.sigma._stat`` stats the rule files for the rule cache
and a hunt's log files with the GIL released (see each C file for why). All are optional: if they
cannot be compiled, installation still succeeds and the identical Python code is used.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "scmwatch.events._flatten",
            ["src/scmwatch/events/_flatten.c"],
            depends=["src/scmwatch/events/_event.h"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "scmwatch.events._evtx",
            ["src/scmwatch/events/_evtx.c"],
            depends=["src/scmwatch/events/_event.h"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "scmwatch.events._xml",
            ["src/scmwatch/events/_xml.c"],
            depends=["src/scmwatch/events/_event.h"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "scmwatch.events._lines",
            ["src/scmwatch/events/_lines.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "scmwatch.sigma._text",
            ["src/scmwatch/sigma/_text.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "scmwatch.sigma._prog",
            ["src/scmwatch/sigma/_prog.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "scmwatch.sigma._stat",
            ["src/scmwatch/sigma/_stat.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
    ]
)
