"""The case side of ``scmwatch hunt``: ``--case``, ``--keep-events`` and the retro-hunt
(``hunt CASE.duckdb``): which case to write, where events come from, the unit mapper."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from scmwatch.cli.case_deps import EXTRA_HINT, case_modules
from scmwatch.escape import terminal


class CaseRunError(Exception):
    """One line for the user and the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def looks_like_case(path: str) -> bool:
    """A DuckDB file by its header (``DUCK`` at byte 8): read without importing DuckDB."""
    try:
        with open(path, "rb") as fh:
            return fh.read(12)[8:] == b"DUCK"
    except OSError:
        return False


def usage_problem(args: argparse.Namespace) -> str | None:
    """A usage error of the case options, or None."""
    retro = [p for p in args.paths if os.path.isfile(p) and looks_like_case(p)]
    if args.keep_events and not args.case:
        return "--keep-events needs --case CASE.duckdb (the events are kept in the case)"
    if retro and len(args.paths) > 1:
        return f"{retro[0]}: a case is hunted alone (a retro-hunt over its kept events); give only the case"
    if retro and args.keep_events:
        return "--keep-events: a retro-hunt reads events the case already keeps"
    return None


class CaseRun:
    """Everything ``--case`` and the retro-hunt need during one hunt; ``None`` parts are unused."""

    def __init__(self, args: argparse.Namespace, ruleset: Any, rule_paths: list[str]) -> None:
        self.retro = args.paths[0] if len(args.paths) == 1 and looks_like_case(args.paths[0]) else None
        self.writer: Any = None
        self.source: Any = None
        self._source_con: Any = None
        if not args.case and not self.retro:
            return
        if case_modules(quiet=True) is None:
            raise CaseRunError(f"case files need DuckDB ({EXTRA_HINT})", 2)
        import shlex

        from scmwatch.case import CaseError, CaseWriter
        from scmwatch.case.store import LOCK_WAIT

        def waiting(reason: str) -> None:
            print(f"scmwatch: {terminal(args.case)}: {reason}; waiting up to {LOCK_WAIT:g} s for it",
                  file=sys.stderr, flush=True)

        if args.case:
            try:
                self.writer = CaseWriter(
                    args.case, command=shlex.join(["scmwatch", *getattr(args, "argv", [])]), ruleset=ruleset,
                    rule_paths=rule_paths, builtin=not args.rules, keep_events=args.keep_events,
                    kind="retro-hunt" if self.retro else "hunt", wait=LOCK_WAIT, on_wait=waiting)
            except CaseError as exc:
                raise CaseRunError(f"{args.case}: {exc}") from None
        if self.retro:
            self._open_source(args)

    def _open_source(self, args: argparse.Namespace) -> None:
        from scmwatch.case import CaseError
        from scmwatch.case.queries import connect_read_only
        from scmwatch.case.source import CaseSource

        same = self.writer is not None and os.path.realpath(args.case) == os.path.realpath(self.retro)
        try:
            con = self.writer.con.cursor() if same else connect_read_only(self.retro)
        except CaseError as exc:
            self.abort()
            raise CaseRunError(f"{self.retro}: {exc}") from None
        self._source_con = con
        self.source = CaseSource(con)
        if not self.source.files:
            self.abort()
            raise CaseRunError(f"{self.retro}: the case keeps no events (hunt the files with --case and "
                               "--keep-events first)")

    def notes(self) -> list[str]:
        """Lines for stderr before the hunt (files a retro-hunt cannot see)."""
        if self.source is None or not self.source.missing:
            return []
        n = len(self.source.missing)
        return [f"{self.retro}: {n} file(s) of the case without kept events (hunted without --keep-events) "
                f"are not in this retro-hunt, e.g. {self.source.missing[0]}"]

    def expand(self, discover: Callable[..., Any]) -> Callable[..., Any]:
        return self.source.units if self.source is not None else discover

    def map_units(self, local_units: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        if self.source is not None:
            from scmwatch.case.source import retro_units

            return retro_units(self.source, self.writer)
        if self.writer is not None:
            return self.writer.recording(local_units)
        return local_units

    def write(self, alert: Any) -> None:
        if self.writer is not None:
            self.writer.write(alert)

    def close(self, summary: dict[str, Any]) -> None:
        self._close_source()
        if self.writer is not None:
            self.writer.close(summary)

    def abort(self) -> None:
        self._close_source()
        if self.writer is not None:
            self.writer.abort()
            self.writer = None

    def _close_source(self) -> None:
        if self._source_con is not None:
            self._source_con.close()
            self._source_con = None
