"""Object-store URLs: each scheme's extra installs the implementation fsspec itself names for
that scheme, and a missing one is one line that says which extra to install."""

from __future__ import annotations

import importlib.util
import re
import tomllib

import pytest

pytest.importorskip("fsspec")

from fsspec.registry import known_implementations  # noqa: E402

from paths import ROOT  # noqa: E402
from scmwatch.events import ReadStats, discover  # noqa: E402
from scmwatch.events.read import URL_EXTRAS  # noqa: E402

EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


@pytest.mark.parametrize("scheme", sorted(URL_EXTRAS))
def test_each_schemes_extra_pulls_in_fsspecs_implementation(scheme: str) -> None:
    extra = URL_EXTRAS[scheme]
    assert extra in EXTRAS
    reqs = set(EXTRAS[extra]) | set(EXTRAS["remote"] if "scmwatch[remote]" in EXTRAS[extra] else [])
    module = known_implementations[scheme]["class"].split(".", 1)[0]
    if module == "fsspec":  # http(s): fsspec's own class, on aiohttp
        assert "aiohttp" in _names(list(reqs))
    else:
        assert module in _names(list(reqs)), (scheme, module, reqs)


@pytest.mark.parametrize("url", ["s3://bucket/kape/", "gs://bucket/a.evtx", "az://container/logs/"])
def test_a_missing_implementation_names_its_extra(url: str) -> None:
    scheme = url.split("://", 1)[0]
    if importlib.util.find_spec(known_implementations[scheme]["class"].split(".", 1)[0]):
        pytest.skip(f"the {scheme} implementation is installed here")
    seen = []
    stats = ReadStats(on_error=seen.append)
    assert list(discover([url], stats)) == []
    assert stats.named_failed == 1 and stats.errors["unreadable"] == 1
    (err,) = seen
    assert f"pip install 'scmwatch[{URL_EXTRAS[scheme]}]'" in err.message and "\n" not in err.message
