"""The rules a hunt ran, kept in the case (``rules`` view) so an alert's page can show its rule
as written: title, description, references, false positives and the YAML document.

Each run replaces the rows of the rules it loaded (the latest text of a rule id wins) and keeps
the others. The YAML is the rule's own document from its file: a file with several documents
(a correlation beside its base rules) is split on ``---`` lines and the document naming the
rule's id (else its title) is kept, at most ``MAX_YAML`` characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import duckdb

from scmwatch.case.stage import Stager
from scmwatch.correlate.spec import rule_key

MAX_YAML = 64 << 10
_DOC_SPLIT = re.compile(r"^---[ \t]*$", re.MULTILINE)
_COLS = {
    "rule_id": "VARCHAR", "run_id": "INTEGER", "kind": "VARCHAR", "title": "VARCHAR",
    "level": "VARCHAR", "description": "VARCHAR", "refs": "VARCHAR[]",
    "falsepositives": "VARCHAR[]", "tags": "VARCHAR[]", "path": "VARCHAR", "yaml": "VARCHAR",
}


def _strings(values: Any) -> list[str]:
    return [str(v) for v in (values or [])]


def _source_path(rule: Any) -> str | None:
    src = getattr(rule, "source", None)
    path = getattr(src, "path", None) if src is not None else None
    return str(path) if path else None


class _Texts:
    """File texts, each read once per run (a pack keeps many rules in one file)."""

    def __init__(self) -> None:
        self.files: dict[str, list[str] | None] = {}

    def document(self, path: str | None, *needles: str) -> str | None:
        if not path:
            return None
        if path not in self.files:
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    self.files[path] = [d.strip("\n") for d in _DOC_SPLIT.split(fh.read()) if d.strip()]
            except OSError:
                self.files[path] = None
        docs = self.files[path]
        if not docs:
            return None
        chosen = docs[0]
        if len(docs) > 1:
            for needle in needles:
                hit = next((d for d in docs if needle and needle in d), None)
                if hit is not None:
                    chosen = hit
                    break
        return chosen if len(chosen) <= MAX_YAML else chosen[:MAX_YAML] + "\n# [cut by scmwatch]"


def rule_rows(ruleset: Any, run_id: int) -> Iterator[dict[str, Any]]:
    """One row per loaded rule and correlation, keyed as alerts carry ``rule_id``."""
    texts = _Texts()
    for r in getattr(ruleset, "rules", []) or []:
        sigma = r.sigma
        yield {"rule_id": r.id, "run_id": run_id, "kind": "rule", "title": r.title, "level": r.level,
               "description": r.description, "refs": _strings(sigma.references),
               "falsepositives": _strings(sigma.falsepositives), "tags": list(r.tags), "path": r.path,
               "yaml": texts.document(r.path, str(sigma.id or ""), f"title: {r.title}")}
    for c in getattr(ruleset, "correlations", []) or []:
        path = _source_path(c)
        level = str(c.level).lower() if getattr(c, "level", None) else None
        yield {"rule_id": rule_key(c), "run_id": run_id, "kind": "correlation",
               "title": str(c.title or ""), "level": level,
               "description": str(c.description or "").strip(),
               "refs": _strings(c.references), "falsepositives": _strings(c.falsepositives),
               "tags": [f"{t.namespace}.{t.name}" for t in (c.tags or [])], "path": path,
               "yaml": texts.document(path, str(c.id or ""), f"title: {c.title}")}


def store_rules(con: duckdb.DuckDBPyConnection, ruleset: Any, run_id: int, tmpdir: str | None = None) -> int:
    """Replace the stored rows of the rules in ``ruleset`` (inside the run's transaction)."""
    rows = {row["rule_id"]: row for row in rule_rows(ruleset, run_id)}
    if not rows:
        return 0
    con.execute("DELETE FROM rule_rows WHERE rule_id IN (SELECT unnest(?::VARCHAR[]))", [sorted(rows)])
    stager = Stager(con, "INSERT INTO rule_rows SELECT rule_id, run_id, kind, title, level, description, "
                    'refs, falsepositives, tags, path, yaml', _COLS, 1 << 30, tmpdir)
    for row in rows.values():
        stager.add(row)
    stager.close()
    return len(rows)
