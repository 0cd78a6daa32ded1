"""Rendering with Jinja2: one environment, the filters that make log values safe, the CSP.

Everything shown comes from an attacker's logs, so the environment autoescapes every
expression (HTML text, attributes, and the inline SVG, which is parsed as HTML), and values
also pass :func:`show`, which turns control characters into visible escapes (``\\x1b``) and
cuts very long values. No template builds a URL from data: a ``javascript:`` string stays
text. Data for scripts goes into ``<script type="application/json">`` through
:func:`json_script`, which escapes ``<``, ``>``, ``&`` and U+2028/2029 so that neither
``</script>`` nor ``<!--`` in a value can end the block.

The page's Content-Security-Policy (a ``<meta>``, since the file is opened from disk) allows
nothing but the one stylesheet and the one script the page carries, by their sha256 hashes:
``default-src 'none'`` forbids any fetch, so an injected element could neither run nor load.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from scmwatch.escape import no_surrogates, terminal
from scmwatch.sinks.jsonl import json_line

TEMPLATES = Path(__file__).resolve().parent / "templates"
MAX_VALUE = 400


def show(value: Any, limit: int = MAX_VALUE) -> str:
    """A log value as text a person reads: control characters escaped, at most ``limit`` chars."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        text = json_line(value)[:-1].decode()
    else:
        text = str(value)
    text = no_surrogates(terminal(text))
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def ts(value: Any) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC in the case)."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    return show(value, 40)


def json_script(obj: Any) -> Markup:
    """JSON that is safe inside ``<script type="application/json">``."""
    text = json_line(obj)[:-1].decode()
    for a, b in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                 ("\u2029", "\\u2029")):
        text = text.replace(a, b)
    return Markup(text)


def num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else show(value)


def csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(show=show, ts=ts, json_script=json_script, num=num)
    return env


def assets() -> dict[str, Any]:
    """The page's stylesheet and script, with the CSP that allows exactly them."""
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    js = (TEMPLATES / "report.js").read_text(encoding="utf-8")
    csp = (f"default-src 'none'; style-src {csp_hash(css)}; script-src {csp_hash(js)}; "
           "img-src 'none'; font-src 'none'; connect-src 'none'; base-uri 'none'; form-action 'none'")
    return {"css": Markup(css), "js": Markup(js), "csp": csp}


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**assets(), **context)
